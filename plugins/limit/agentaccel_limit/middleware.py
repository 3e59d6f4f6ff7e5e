"""The ``limit`` middleware: a call takes a permit from every rule it matches, in the rules' global order,
waits in Io effects (a blocked thread, or an awaited future) and gives the permits back however it ends."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from agentaccel import PROCEED, Call, Io, Middleware, Outcome, Proceed, Target
from agentaccel_limit.errors import LimitExceeded
from agentaccel_limit.feedback import rate_limited
from agentaccel_limit.local import Limiter, Permit, Waiter
from agentaccel_limit.rules import Rule, candidates
from agentaccel_limit.telemetry import Instruments
from agentaccel_limit.tokens import estimate, used

if TYPE_CHECKING:  # the redis client is imported only when a backend is configured (see plugin.py)
    from agentaccel_limit.redis_backend import Lease, RedisBackend

Flow = Generator[Io | Proceed, Any, None]


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
        return self._limited(call, rules)

    def _limited(self, call: Call, rules: list[Rule]) -> Flow:
        names = ", ".join(rule.name for rule in rules)
        call.annotate("agentaccel.limit.rule", names)
        tokens = estimate(call) if any(rule.config.tokens_per_minute for rule in rules) else 0
        permits: list[Permit] = []
        leases: list[Lease] = []
        start = time.perf_counter()
        call.annotate("agentaccel.limit.queued", False)  # until it waits, here or in the backend's queue
        queued = partial(call.annotate, "agentaccel.limit.queued", True)
        try:
            try:
                for rule in rules:
                    limiter = self.limiters[rule.name]
                    got = limiter.acquire(tokens)
                    if isinstance(got, Waiter):
                        queued()
                        timeout = rule.config.queue_timeout
                        got = yield Io(partial(got.wait, timeout), partial(got.wait_async, timeout))
                    permits.append(got)
                    # counted as it is taken, as the finally below uncounts it even if a later rule refuses
                    self.instruments.in_flight.add(1, {"agentaccel.limit.rule": limiter.name})
                    if self.backend is not None:
                        lease = yield from self.backend.acquire(rule, limiter.capacity, start, queued)
                        if lease is not None:
                            leases.append(lease)
            except LimitExceeded as exc:
                self.instruments.rejections.add(1, {"agentaccel.limit.rule": exc.rule, "reason": exc.reason})
                raise
            finally:
                waited = time.perf_counter() - start
                call.annotate("agentaccel.limit.wait_ms", round(waited * 1000, 3))
                self.instruments.wait.record(waited, {"agentaccel.limit.rule": names})
            outcome: Outcome = yield PROCEED
            if self.backend is not None:
                for lease in reversed(leases):
                    yield from self.backend.give_back(lease)
            self._learn(call, outcome, permits)
        finally:
            # Every way out (return, error, cancellation, an abandoned stream, a refused later rule) comes
            # through here; releasing twice is harmless. Here a flow may be unable to yield, so leases not
            # given back above go back on the backend's own thread.
            for lease in reversed(leases):
                self.backend.release(lease)  # type: ignore[union-attr]
            for permit in reversed(permits):
                if not permit.released:
                    permit.release()
                    self.instruments.in_flight.add(-1, {"agentaccel.limit.rule": permit.limiter.name})

    def _learn(self, call: Call, outcome: Outcome, permits: list[Permit]) -> None:
        limited, retry_after = rate_limited(outcome.error)
        tokens = used(call, outcome) if any(p.limiter.rule.tokens_per_minute for p in permits) else None
        for permit in reversed(permits):
            if limited:
                self.instruments.rate_limited.add(1, {"agentaccel.limit.rule": permit.limiter.name})
            permit.finish(outcome.error is None, limited, retry_after, tokens)
            self.instruments.in_flight.add(-1, {"agentaccel.limit.rule": permit.limiter.name})
        if limited:
            call.annotate("agentaccel.limit.rate_limited", True)
            if self.backend is not None and retry_after:
                for permit in permits:
                    self.backend.pause(permit.limiter.name, retry_after)
