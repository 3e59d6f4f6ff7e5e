"""One admission by a call's rules: the permits and Redis leases it took, taken in the rules' global order and
given back once, whatever happens. A call holds one for its whole length, or (see ``Gate``) one per HTTP request
it sends."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from agentaccel import Call, Io
from agentaccel_limit.errors import LimitExceeded
from agentaccel_limit.feedback import retry_after
from agentaccel_limit.local import Permit, Waiter
from agentaccel_limit.rules import Rule

if TYPE_CHECKING:
    from agentaccel_limit.middleware import Limit
    from agentaccel_limit.redis_backend import Lease

RULE = "agentaccel.limit.rule"
WAIT_MS = "agentaccel.limit.wait_ms"


class Hold:
    __slots__ = ("call", "leases", "limit", "permits", "rules", "tokens")

    def __init__(self, limit: Limit, call: Call, rules: list[Rule], tokens: int) -> None:
        self.limit = limit
        self.call = call
        self.rules = rules
        self.tokens = tokens
        self.permits: list[Permit] = []
        self.leases: list[Lease] = []

    def take(self) -> Generator[Io, Any, None]:
        """Wait for a permit of every rule (and its Redis lease); on any way out without them all, give back
        what was taken. The wait is added to the call's ``agentaccel.limit.wait_ms``."""
        limit, call = self.limit, self.call
        start = time.perf_counter()
        queued = partial(call.annotate, "agentaccel.limit.queued", True)
        try:
            for rule in self.rules:
                limiter = limit.limiters[rule.name]
                got = limiter.acquire(self.tokens)
                if isinstance(got, Waiter):
                    queued()
                    timeout = rule.config.queue_timeout
                    got = yield Io(partial(got.wait, timeout), partial(got.wait_async, timeout))
                self.permits.append(got)
                # counted as it is taken, as release() uncounts it even if a later rule refuses
                limit.instruments.in_flight.add(1, {RULE: limiter.name})
                if limit.backend is not None:
                    lease = yield from limit.backend.acquire(rule, limiter.capacity, start, queued)
                    if lease is not None:
                        self.leases.append(lease)
        except BaseException as exc:
            if isinstance(exc, LimitExceeded):
                limit.instruments.rejections.add(1, {RULE: exc.rule, "reason": exc.reason})
            self.release()
            raise
        finally:
            waited = time.perf_counter() - start
            call.annotate(WAIT_MS, round(call.attributes.get(WAIT_MS, 0) + waited * 1000, 3))
            limit.instruments.wait.record(waited, {RULE: call.attributes[RULE]})  # the names, as the flow joined them

    def give_back(self) -> Generator[Io, Any, None]:
        """Give the Redis leases back, waiting for Redis (where the flow can wait: a call's end)."""
        backend = self.limit.backend
        for lease in reversed(self.leases):
            yield from backend.give_back(lease)  # type: ignore[union-attr]

    def finish(self, ok: bool, limited: bool, wait: float | None, tokens: int | None) -> None:
        """Give the permits back, teaching their rules what happened (see Permit.finish)."""
        limit = self.limit
        for permit in reversed(self.permits):
            if permit.released:
                continue
            if limited:
                limit.instruments.rate_limited.add(1, {RULE: permit.limiter.name})
            permit.finish(ok, limited, wait, tokens)
            limit.instruments.in_flight.add(-1, {RULE: permit.limiter.name})
        if limited:
            self.call.annotate("agentaccel.limit.rate_limited", True)
            if limit.backend is not None and wait:
                for permit in self.permits:
                    limit.backend.pause(permit.limiter.name, wait)

    def done(self, status: int | None, headers: Mapping[str, str] | None) -> None:
        """The provider is done with the request this hold admitted (see agentaccel.builtin.http.Admission):
        give everything back, at once, from wherever that happens (a stream's close cannot wait for Redis)."""
        limited = status == 429
        self.release_leases()
        # The call's token estimate, if this request carries it, stays until the call reports its usage.
        self.finish(status is not None and status < 400, limited, retry_after(headers) if limited else None, None)

    def release_leases(self) -> None:
        """Give the Redis leases back on the backend's own thread: here nothing may wait."""
        while self.leases:
            self.limit.backend.release(self.leases.pop())  # type: ignore[union-attr]

    def release(self) -> None:
        """Give back whatever is still held, teaching nothing. Any number of times."""
        self.release_leases()
        for permit in reversed(self.permits):
            if not permit.released:
                permit.release()
                self.limit.instruments.in_flight.add(-1, {RULE: permit.limiter.name})
