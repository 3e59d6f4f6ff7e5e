"""Limits shared through Redis: a semaphore of leases in a sorted set and a sliding rate window, both in Lua on
Redis' own clock (so machines' clocks never matter).

A call's lease expires ``lease_seconds`` after it was last renewed. A keeper thread renews the leases of the
calls still running and sends releases, so a process that dies (or hangs) gives its permits back within the
lease time, and a release never blocks the caller. A waiting call sleeps until a release is published on the
rule's channel, or until the earliest lease or rate slot expires (the script says when): nothing polls.

Every round trip has a short timeout and goes through a circuit breaker; when Redis fails, a rule with
``on_backend_error = "open"`` keeps only its in-process limit and one with ``"closed"`` refuses the call.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from agentaccel import CircuitBreaker, Io
from agentaccel_limit.config import LimitConfig
from agentaccel_limit.errors import LimitExceeded
from agentaccel_limit.rules import Rule
from agentaccel_limit.wakeup import Wakeup

log = logging.getLogger("agentaccel")
T = TypeVar("T")
#: Failures that mean "Redis is not answering", as opposed to a bug.
BACKEND_ERRORS = (redis.RedisError, OSError)


def _script(name: str) -> str:
    return resources.files("agentaccel_limit").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class Lease:
    __slots__ = ("key", "member", "rule")

    def __init__(self, rule: str, key: str | None, member: str) -> None:
        self.rule = rule
        self.key = key  # the leases key; None for a rule with a rate but no concurrency limit
        self.member = member


class RedisBackend:
    def __init__(self, config: LimitConfig) -> None:
        assert config.backend is not None
        self.url = config.backend
        self.prefix = config.key_prefix
        self.lease_ms = int(config.lease_seconds * 1000)
        self.channel = f"{self.prefix}:released"
        no_retries = Retry(NoBackoff(), 0)  # the breaker decides when to try again, not the client
        timeout = config.backend_timeout
        self.client = redis.Redis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           retry=no_retries)
        # The subscriber blocks in reads between messages, so it has no read timeout.
        self._subscriber = redis.Redis.from_url(self.url, socket_connect_timeout=timeout, retry=no_retries)
        self._acquire = self.client.register_script(_script("acquire"))
        self._renew = self.client.register_script(_script("renew"))
        self._release = self.client.register_script(_script("release"))
        self._pause = self.client.register_script(_script("pause"))
        self.breaker = CircuitBreaker("agentaccel limit Redis backend", config.breaker_failures,
                                      config.breaker_reset_seconds)
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}  # member -> lease of calls running in this process
        # rule -> calls waiting for one of its releases, in arrival order (a dict is an ordered set)
        self._waiting: dict[str, dict[Wakeup, None]] = {}
        self._jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._stopped = threading.Event()
        self._warned: set[str] = set()
        # Async round trips run here so the event loop never blocks on a socket; waits do not take a worker.
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agentaccel-limit-redis")
        self._threads = [threading.Thread(target=self._keep, name="agentaccel-limit-keeper", daemon=True),
                         threading.Thread(target=self._listen, name="agentaccel-limit-listener", daemon=True)]
        for thread in self._threads:
            thread.start()
        atexit.register(self.close)

    def keys(self, rule: str) -> tuple[str, str, str]:
        # The {hash tag} keeps a rule's keys in one slot, as a Redis Cluster requires of one script's keys.
        base = f"{self.prefix}:{{{rule}}}"
        return f"{base}:leases", f"{base}:starts", f"{base}:pause"

    # --- called from the middleware's flow ---------------------------------------------------------------------

    def acquire(self, rule: Rule, capacity: int | None, start: float) -> Generator[Io, Any, Lease | None]:
        """Yield the Io effects that take the rule's distributed permit; the lease, or None when the rule has
        nothing to share or Redis failed and the rule falls back to its in-process limit."""
        config = rule.config
        if capacity is None and config.rate is None:
            return None  # tokens_per_minute alone is counted per process
        member = uuid.uuid4().hex
        leases, starts, pause = self.keys(rule.name)
        args: list[str | int] = [member, -1 if capacity is None else capacity, self.lease_ms,
                -1 if config.rate is None else config.rate, int(config.interval * 1000)]
        attempt = partial(self._acquire, keys=[leases, starts, pause], args=args)
        deadline = None if config.queue_timeout is None else start + config.queue_timeout
        while True:
            if not self.breaker.allow():
                self._unavailable(rule, "the circuit breaker is open after repeated failures")
                return None
            wakeup = Wakeup()
            self._watch(rule.name, wakeup, True)  # before trying, so a release right after is not missed
            lease = None
            try:
                try:
                    granted, wait_ms = yield Io(attempt, partial(self._in_thread, attempt))
                except BACKEND_ERRORS as exc:
                    self.breaker.failure(exc)
                    self._unavailable(rule, f"{type(exc).__name__}: {exc}")
                    return None
                self.breaker.success()
                if granted:
                    lease = Lease(rule.name, None if capacity is None else leases, member)
                    if lease.key is not None:
                        with self._lock:
                            self._held[member] = lease
                    return lease
                timeout = wait_ms / 1000
                if deadline is not None:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        raise self._timeout(rule, capacity)
                    timeout = min(timeout, left)
                yield Io(partial(wakeup.wait, timeout), partial(wakeup.wait_async, timeout))
            finally:
                self._watch(rule.name, wakeup, False)
                if wakeup.fired and lease is None and not self._stopped.is_set():
                    self._wake(rule.name)  # a release woke us but we are leaving (timeout, cancel): pass it on

    def give_back(self, lease: Lease) -> Generator[Io, Any, None]:
        """Yield the Io that releases the lease at once (the next holder waits for it); if Redis fails, the
        keeper thread tries again and the lease expires regardless."""
        if not self._forget(lease) or not self.breaker.allow():
            return
        release = self._releaser(lease)
        try:
            yield Io(release, partial(self._in_thread, release))
        except BACKEND_ERRORS as exc:
            self.breaker.failure(exc)
            self._jobs.put(release)
        else:
            self.breaker.success()

    def release(self, lease: Lease) -> None:
        """Give the lease back on the keeper thread: never blocks, so it is safe where a flow cannot yield (a
        stream abandoned to the garbage collector)."""
        if self._forget(lease):
            self._jobs.put(self._releaser(lease))

    def _forget(self, lease: Lease) -> bool:
        """Stop renewing ``lease``; False when there is nothing (left) to release."""
        with self._lock:
            return lease.key is not None and self._held.pop(lease.member, None) is not None

    def _releaser(self, lease: Lease) -> Callable[[], Any]:
        assert lease.key is not None  # _forget() said there is a lease to release
        return partial(self._release, keys=[lease.key], args=[lease.member, self.channel, lease.rule])

    def pause(self, rule: str, seconds: float) -> None:
        """Tell every process to admit no call of ``rule`` for ``seconds`` (on the keeper thread)."""
        self._jobs.put(partial(self._pause, keys=[self.keys(rule)[2]], args=[max(1, int(seconds * 1000))]))

    def close(self) -> None:
        """Send the releases already queued (a process that exits without them would hold its permits until
        their leases expire), then stop. Leases of calls still running are left to expire."""
        atexit.unregister(self.close)
        self._jobs.put(None)
        self._threads[0].join(timeout=2)
        self._stopped.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- helpers -----------------------------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _watch(self, rule: str, wakeup: Wakeup, on: bool) -> None:
        with self._lock:
            if on:
                self._waiting.setdefault(rule, {})[wakeup] = None
            else:
                self._waiting.get(rule, {}).pop(wakeup, None)

    def _wake(self, rule: str | None) -> None:
        """One release frees one place: wake the longest-waiting call of ``rule`` in this process (one per
        process, not every waiter: a herd of retries would cost more than the call). None wakes every waiter
        of every rule, after releases may have been missed."""
        with self._lock:
            if rule is None:
                waiting = [w for ws in self._waiting.values() for w in ws]
            else:
                queue_ = self._waiting.get(rule)
                waiting = [next(iter(queue_))] if queue_ else []
            for wakeup in waiting:
                self._waiting.get(rule or "", {}).pop(wakeup, None)
        for wakeup in waiting:
            wakeup.fire()

    def _unavailable(self, rule: Rule, why: str) -> None:
        """Raise for an ``on_backend_error = "closed"`` rule; warn once for an ``"open"`` one."""
        if rule.config.on_backend_error == "closed":
            raise LimitExceeded(
                f"limit rule {rule.name!r}: the Redis backend {self.url} is unavailable ({why}) and the rule has "
                f"on_backend_error = \"closed\", so the call is refused; start or fix Redis (limit.backend), or set "
                f"on_backend_error = \"open\" in [tool.agentaccel.limit] rule {rule.name!r} to fall back to the "
                "in-process limit while Redis is down",
                rule=rule.name, limit=f"backend {self.url}", reason="backend")
        if rule.name not in self._warned:
            self._warned.add(rule.name)
            log.warning("agentaccel-limit: Redis backend %s unavailable (%s); rule %r falls back to its in-process "
                        "limit (on_backend_error = \"open\")", self.url, why, rule.name)

    def _timeout(self, rule: Rule, capacity: int | None) -> LimitExceeded:
        limits = ", ".join(part for part in (
            f"max_concurrency={capacity}" if capacity is not None else "",
            f"rate={rule.config.rate} per {rule.config.interval:g}s" if rule.config.rate is not None else "") if part)
        return LimitExceeded(
            f"limit rule {rule.name!r} ({limits}, shared through {self.url}): no permit after waiting "
            f"{rule.config.queue_timeout:g}s (queue_timeout={rule.config.queue_timeout:g}); raise queue_timeout in "
            f"[tool.agentaccel.limit] rule {rule.name!r}, send fewer calls at once (e.g. agentaccel.map(..., "
            "concurrency=N)), or raise the rule's limits if the provider allows",
            rule=rule.name, limit=limits, reason="queue_timeout")

    # --- background threads ------------------------------------------------------------------------------------

    def _keep(self) -> None:
        """Send releases and pauses as they come; renew held leases every third of the lease time."""
        period = self.lease_ms / 3000
        renew_at = time.monotonic() + period
        while True:
            try:
                job = self._jobs.get(timeout=max(0.0, renew_at - time.monotonic()))
            except queue.Empty:
                job = self._renew_all
                renew_at = time.monotonic() + period
            if job is None:
                return
            try:
                job()
            except BACKEND_ERRORS as exc:  # an unsent release expires with its lease; keep going
                self.breaker.failure(exc)
                log.debug("agentaccel-limit: Redis job failed: %s", exc)

    def _renew_all(self) -> None:
        with self._lock:
            by_key: dict[str, list[str]] = {}
            for lease in self._held.values():
                by_key.setdefault(lease.key or "", []).append(lease.member)
        for key, members in by_key.items():
            missing = self._renew(keys=[key], args=[self.lease_ms, *members])
            with self._lock:  # a lease released since we looked is not lost
                lost = [m for m in missing if (m.decode() if isinstance(m, bytes) else m) in self._held]
            if lost:
                log.warning("agentaccel-limit: %d lease(s) of %s expired before they were renewed (was the process "
                            "stalled longer than lease_seconds?)", len(lost), key)

    def _listen(self) -> None:
        while not self._stopped.is_set():
            try:
                pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                self._wake(None)  # releases published while we were not subscribed were missed: everyone retries
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
                pubsub.close()
            except BACKEND_ERRORS:
                self._stopped.wait(min(1.0, self.breaker.reset))  # Redis is down: try again shortly
