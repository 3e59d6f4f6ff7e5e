"""Limits shared through Redis: a semaphore of leases in a sorted set with a queue of waiting calls, and a
sliding rate window, all in Lua on Redis' own clock (so machines' clocks never matter).

A call's lease expires ``lease_seconds`` after it was last renewed. A keeper thread renews the leases of the
calls still running (and the queue places of the calls still waiting) and sends releases, so a process that dies
(or hangs) gives its permits and its places back within the lease time, and a release never blocks the caller.

A call that finds no free place joins the rule's queue in Redis. A release hands its place to the head of that
queue inside the same script and tells that one waiter, which already holds its lease: a thread blocked in BLPOP
on a list of its own is woken by Redis directly; a coroutine is woken through its process's pub/sub channel. One
round trip and one wake-up per handoff, served in arrival order across every process, with no herd of retries.
A waiter also wakes when the earliest lease or rate slot expires (the script says when), so a missed message
costs time, never a permit: nothing polls.

Every round trip has a short timeout and goes through a circuit breaker; when Redis fails, a rule with
``on_backend_error = "open"`` keeps only its in-process limit and one with ``"closed"`` refuses the call.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
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


def _script(name: str, common: bool = False) -> str:
    lua = resources.files("agentaccel_limit").joinpath("lua")
    text = lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return lua.joinpath("common.lua").read_text(encoding="utf-8") + text if common else text


class Lease:
    """A call's place in a rule's distributed semaphore (``keys`` is None for a rule with a rate but no
    concurrency limit: then there is nothing to give back)."""

    __slots__ = ("args", "keys", "member", "rule")

    def __init__(self, rule: str, keys: list[str] | None, member: str, args: list[str | int]) -> None:
        self.rule = rule
        self.keys = keys
        self.member = member
        self.args = args  # release.lua's ARGV


class _Queued:
    """A call of this process waiting in a rule's Redis queue (renewed by the keeper). For a coroutine, the
    listener fires ``wakeup`` when a release granted it a lease (``granted``) or when it should try again."""

    __slots__ = ("granted", "left", "rule", "wakeup")

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.granted = False
        self.left = False  # its call gave up: see _attempt_async
        self.wakeup = Wakeup()


class RedisBackend:
    def __init__(self, config: LimitConfig) -> None:
        assert config.backend is not None
        self.url = config.backend
        self.prefix = config.key_prefix
        self.lease_ms = int(config.lease_seconds * 1000)
        self.channel = f"{self.prefix}:granted:{uuid.uuid4().hex}"  # this process's: only its grants arrive here
        no_retries = Retry(NoBackoff(), 0)  # the breaker decides when to try again, not the client
        timeout = config.backend_timeout
        self.client = redis.Redis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           retry=no_retries)
        # Threads wait in BLPOP for at most a renewal period, so a lost connection is noticed that soon.
        self._block_max = self.lease_ms / 3000
        self._blocking = redis.Redis.from_url(self.url, socket_timeout=self._block_max + timeout,
                                              socket_connect_timeout=timeout, retry=no_retries)
        # The subscriber blocks in reads between messages, so it has no read timeout.
        self._subscriber = redis.Redis.from_url(self.url, socket_connect_timeout=timeout, retry=no_retries)
        self._acquire = self.client.register_script(_script("acquire", common=True))
        self._renew = self.client.register_script(_script("renew"))
        self._release = self.client.register_script(_script("release", common=True))
        self._pause = self.client.register_script(_script("pause"))
        self.breaker = CircuitBreaker("agentaccel limit Redis backend", config.breaker_failures,
                                      config.breaker_reset_seconds)
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}  # member -> lease of calls running in this process
        self._queued: dict[str, _Queued] = {}  # member -> calls of this process waiting in a Redis queue
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

    def keys(self, rule: str) -> list[str]:
        """leases, starts, pause, queue, waiting (see lua/common.lua)."""
        # The {hash tag} keeps a rule's keys in one slot, as a Redis Cluster requires of one script's keys.
        base = f"{self.prefix}:{{{rule}}}"
        return [f"{base}:{name}" for name in ("leases", "starts", "pause", "queue", "waiting")]

    # --- called from the middleware's flow ---------------------------------------------------------------------

    def acquire(self, rule: Rule, capacity: int | None, start: float,
                waiting: Callable[[], None] | None = None) -> Generator[Io, Any, Lease | None]:
        """Yield the Io effects that take the rule's distributed permit; the lease, or None when the rule has
        nothing to share or Redis failed and the rule falls back to its in-process limit. ``waiting`` is called
        when the call has to wait."""
        config = rule.config
        if capacity is None and config.rate is None:
            return None  # tokens_per_minute alone is counted per process
        member = uuid.uuid4().hex
        keys = self.keys(rule.name)
        rate, interval = -1 if config.rate is None else config.rate, int(config.interval * 1000)
        args: list[str | int] = [member, -1 if capacity is None else capacity, self.lease_ms, rate, interval]
        lease = Lease(rule.name, None if capacity is None else keys, member,
                      [member, self.lease_ms, rate, interval, rule.name])
        queued = _Queued(rule.name) if capacity is not None else None
        # A thread is told of its grant in its own list (it blocks there), a coroutine on this process's channel.
        sync = partial(self._acquire, keys=keys, args=[*args, "", rule.name])
        attempt = Io(sync, partial(self._in_thread, partial(self._attempt_async, queued, lease, keys,
                                                           [*args, self.channel, rule.name])))
        deadline = None if config.queue_timeout is None else start + config.queue_timeout
        granted = tried = False
        try:
            while True:
                if not self.breaker.allow():
                    self._unavailable(rule, "the circuit breaker is open after repeated failures")
                    return None
                if queued is not None:
                    # registered before the attempt, so a grant published right after it is not missed
                    queued.wakeup = Wakeup()
                    with self._lock:
                        self._queued[member] = queued
                try:
                    tried = True  # from here Redis may hold a place for it, whether or not its reply arrives
                    got, wait_ms, *timed = yield attempt
                    self.breaker.success()  # before returning a grant: a half-open probe's success closes it
                    granted = bool(got) or (queued is not None and queued.granted)
                    if granted:
                        return self._hold(lease)
                    timeout = wait_ms / 1000
                    if deadline is not None:
                        left = deadline - time.perf_counter()
                        if left <= 0:
                            raise self._timeout(rule, capacity)
                        timeout = min(timeout, left)
                    if waiting is not None:
                        waiting()
                    if queued is None or timed[0]:  # waiting for time alone (a rate window, a pause)
                        wakeup = queued.wakeup if queued is not None else Wakeup()
                        yield Io(partial(wakeup.wait, timeout), partial(wakeup.wait_async, timeout))
                        granted = queued is not None and queued.granted
                    else:
                        granted = yield Io(partial(self._blpop, f"{keys[3]}:{member}", timeout),
                                           partial(self._granted_async, queued, timeout))
                except BACKEND_ERRORS as exc:
                    self.breaker.failure(exc)
                    self._unavailable(rule, f"{type(exc).__name__}: {exc}")
                    return None
                self.breaker.success()
                if granted:
                    return self._hold(lease)
        finally:
            if queued is not None:
                with self._lock:
                    self._queued.pop(member, None)
                if tried and not granted and not self._stopped.is_set():
                    # timed out, cancelled, refused or cut off while queued: leave the queue on the keeper thread
                    # (giving back a lease a release may have granted meanwhile), never blocking this exit
                    queued.left = True
                    self._jobs.put(self._releaser(lease))

    def _attempt_async(self, queued: _Queued | None, lease: Lease, keys: list[str], args: list[str | int]) -> Any:
        """acquire.lua for a coroutine, in the executor. A cancelled coroutine does not wait for this round trip,
        so the release its exit sent may reach Redis before it: then leave the queue again, after it."""
        got = self._acquire(keys=keys, args=args)
        if queued is not None and queued.left:
            self._jobs.put(self._releaser(lease))
        return got

    def _blpop(self, key: str, timeout: float) -> bool:
        """Block this thread until a release tells it (True: granted) or ``timeout`` passes (False: try again)."""
        # Redis reads a timeout below 1 ms as 0, which blocks forever.
        seconds = max(0.001, math.ceil(min(timeout, self._block_max) * 1000) / 1000)
        told = self._blocking.blpop([key], seconds)
        return told is not None and told[1] == b"1"

    @staticmethod
    async def _granted_async(queued: _Queued, timeout: float) -> bool:
        await queued.wakeup.wait_async(timeout)
        return queued.granted

    def _hold(self, lease: Lease) -> Lease:
        if lease.keys is not None:
            with self._lock:
                self._held[lease.member] = lease
        return lease

    def give_back(self, lease: Lease) -> Generator[Io, Any, None]:
        """Yield the Io that releases the lease at once (the next holder waits for it); if Redis fails, or the
        breaker is open, the keeper thread sends it (else the place stays taken until the lease expires)."""
        if not self._forget(lease):
            return
        release = self._releaser(lease)
        if not self.breaker.allow():
            self._jobs.put(release)
            return
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
            return lease.keys is not None and self._held.pop(lease.member, None) is not None

    def _releaser(self, lease: Lease) -> Callable[[], Any]:
        return partial(self._release, keys=lease.keys, args=lease.args)

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
        self._blocking.close()

    # --- helpers -----------------------------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _notified(self, message: str) -> None:
        """A script published "rule\nmember\n1" (the member was granted its lease) or "...\n0" (it should try
        again): wake that member's call if it waits in this process."""
        _, _, rest = message.partition("\n")
        member, _, flag = rest.partition("\n")
        with self._lock:
            queued = self._queued.get(member)
        if queued is not None:
            if flag == "1":
                queued.granted = True
            queued.wakeup.fire()

    def _wake_all(self) -> None:
        """After publications may have been missed: every waiting call tries again (and finds a lease it was
        granted meanwhile)."""
        with self._lock:
            waiting = list(self._queued.values())
        for queued in waiting:
            queued.wakeup.fire()

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
            job: Callable[[], Any] | None
            now = time.monotonic()
            if now >= renew_at:  # due even while jobs keep coming: a backlog must not let live leases expire
                job = self._renew_all
                renew_at = now + period
            else:
                try:
                    job = self._jobs.get(timeout=renew_at - now)
                except queue.Empty:
                    continue
            if job is None:
                return
            try:
                job()
            except BACKEND_ERRORS as exc:  # an unsent release expires with its lease; keep going
                self.breaker.failure(exc)
                log.debug("agentaccel-limit: Redis job failed: %s", exc)

    def _renew_all(self) -> None:
        with self._lock:
            by_rule: dict[str, list[str]] = {}
            for lease in self._held.values():
                by_rule.setdefault(lease.rule, []).append(lease.member)
            for member, queued in self._queued.items():
                by_rule.setdefault(queued.rule, []).append(member)
        for rule, members in by_rule.items():
            keys = self.keys(rule)
            missing = self._renew(keys=[keys[0], keys[4]], args=[self.lease_ms, *members])
            with self._lock:  # a lease released since we looked is not lost
                lost = [m for m in missing if (m.decode() if isinstance(m, bytes) else m) in self._held]
            if lost:
                log.warning("agentaccel-limit: %d lease(s) of %s expired before they were renewed (was the process "
                            "stalled longer than lease_seconds?)", len(lost), keys[0])

    def _listen(self) -> None:
        while not self._stopped.is_set():
            try:
                pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                self._wake_all()  # grants published while we were not subscribed were missed: everyone retries
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        data = message["data"]
                        self._notified(data.decode() if isinstance(data, bytes) else str(data))
                pubsub.close()
            except BACKEND_ERRORS:
                self._stopped.wait(min(1.0, self.breaker.reset))  # Redis is down: try again shortly
