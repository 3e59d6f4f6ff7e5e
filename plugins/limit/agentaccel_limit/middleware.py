"""The ``limit`` middleware: a call takes a permit from every rule it matches, in the rules' global order,
waits in Io effects (a blocked thread, or an awaited future) and gives the permits back however it ends.

A model call whose requests agentaccel sees (its adapter's ``hints["http"]``, and the built-in ``http`` plugin
enabled) takes its permits per request instead (:class:`Gate`): from just before each request is sent until the
provider is done with it. The framework's work around the request (building it, parsing the answer, callbacks)
then holds no permit, so a rule's permits are upstream most of the time they are held, and each response's 429
and Retry-After teach the rule, including those the client retries by itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from agentaccel import PROCEED, Call, Io, Middleware, Outcome, Proceed, Target
from agentaccel.builtin import http
from agentaccel_limit.feedback import rate_limited
from agentaccel_limit.hold import RULE, Hold
from agentaccel_limit.local import Limiter
from agentaccel_limit.rules import Rule, candidates
from agentaccel_limit.telemetry import Instruments
from agentaccel_limit.tokens import estimate, used

if TYPE_CHECKING:  # the redis client is imported only when a backend is configured (see plugin.py)
    from agentaccel_limit.redis_backend import RedisBackend

Flow = Generator[Io | Proceed, Any, None]
log = logging.getLogger("agentaccel")


class Limit(Middleware):
    name = "limit"
    # Inside the span (so its attributes and waits show there) and inside the cache (a hit takes no permit).
    after = ("tracing", "profile", "cache")
    before = ("pool",)

    def __init__(self, rules: Sequence[Rule], limiters: dict[str, Limiter], backend: RedisBackend | None,
                 instruments: Instruments) -> None:
        self.rules = rules
        self.limiters = limiters
        self.backend = backend
        self.instruments = instruments
        self._candidates: dict[Target, tuple[Rule, ...]] = {}

    def accepts(self, target: Target) -> bool:
        found = candidates(self.rules, target)
        self._candidates[target] = found
        return bool(found)

    def flow(self, call: Call) -> Flow | Proceed:
        rules = [rule for rule in self._candidates[call.target] if rule.matches(call)]
        if not rules:
            return PROCEED  # nothing to take or give back: no generator
        call.annotate(RULE, ", ".join(rule.name for rule in rules))
        call.annotate("agentaccel.limit.queued", False)  # until it waits, here or in the backend's queue
        tokens = estimate(call) if any(rule.config.tokens_per_minute for rule in rules) else 0
        if _by_request(call, rules):
            return self._per_request(call, rules, tokens)
        return self._per_call(call, rules, tokens)

    def _per_call(self, call: Call, rules: list[Rule], tokens: int) -> Flow:
        hold = Hold(self, call, rules, tokens)
        try:
            yield from hold.take()
            outcome: Outcome = yield PROCEED
            yield from hold.give_back()
            limited, wait = rate_limited(outcome.error)
            counted = any(p.limiter.rule.tokens_per_minute for p in hold.permits)
            hold.finish(outcome.error is None, limited, wait, used(call, outcome) if counted else None)
        finally:
            # Every way out (return, error, cancellation, an abandoned stream, a refused later rule) comes
            # through here; releasing twice is harmless. Here a flow may be unable to yield, so leases not
            # given back above go back on the backend's own thread.
            hold.release()

    def _per_request(self, call: Call, rules: list[Rule], tokens: int) -> Flow:
        gate = call.upstream = Gate(partial(Hold, self, call, rules), tokens)
        try:
            outcome: Outcome = yield PROCEED
            gate.ended(call, outcome)
        finally:
            call.upstream = None
            for hold in gate.holds:  # a stream abandoned before its body was closed, a send cancelled
                hold.release()


def _by_request(call: Call, rules: list[Rule]) -> bool:
    return http.sees(call) and not any(rule.config.hold == "call" for rule in rules)


class Gate:
    """A call's :class:`agentaccel.builtin.http.Upstream`: a :class:`Hold`, made by ``make(tokens)``, for each
    request it sends. The call's token estimate is charged once, to its first admitted request, and replaced with
    the call's usage when it ends: a call that sends several requests (an embeddings call in chunks, a client's
    retries) is estimated as a whole."""

    __slots__ = ("carrier", "holds", "make", "tokens")

    def __init__(self, make: Callable[[int], Hold], tokens: int) -> None:
        self.make = make
        self.tokens = tokens
        self.holds: list[Hold] = []
        self.carrier: Hold | None = None  # the request charged with the call's estimate

    def admit(self) -> Generator[Io, Any, Hold]:
        charge = self.tokens if self.carrier is None else 0
        hold = self.make(charge)
        self.holds.append(hold)
        yield from hold.take()
        if charge:
            self.carrier = hold  # once admitted: a refused admission was charged nothing
        return hold

    def ended(self, call: Call, outcome: Outcome) -> None:
        """The call is over: its usage replaces the estimate it was charged, and a call that should have sent its
        requests through httpx but sent none past the gate is reported (it ran unlimited)."""
        call.annotate("agentaccel.limit.requests", len(self.holds))
        if not self.holds:
            if outcome.error is None and not outcome.served:
                _unseen(call)
            return
        counted = [p for p in self.carrier.permits if p.limiter.rule.tokens_per_minute] if self.carrier else []
        tokens = used(call, outcome) if counted else None
        if tokens is not None:
            for permit in counted:
                permit.limiter.correct(permit, tokens)


_warned: set[tuple[str, str]] = set()


def _unseen(call: Call) -> None:
    key = (call.framework, call.name if call.instance is None else type(call.instance).__qualname__)
    if key in _warned:
        return
    _warned.add(key)
    log.warning("agentaccel limit: a %s call of %s sent no request through httpx or httpx2, so its rules (%s) "
                "admitted none of its requests; set hold = \"call\" on those rules to limit such calls as a whole",
                call.framework, key[1], call.attributes.get(RULE))
