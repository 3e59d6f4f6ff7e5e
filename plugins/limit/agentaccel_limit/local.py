"""The in-process limiter of one rule: concurrency, a sliding request window, a sliding token window and pauses,
shared by every thread and event loop of the process.

Waiters queue in arrival order and are served strictly first come, first served. Nobody polls: a release
hands its permit to the head of the queue under the lock and wakes it (:class:`~agentaccel_limit.wakeup.Wakeup`),
and when the head waits for time rather than for a release (the rate window, the token window, a pause) the
:data:`~agentaccel_limit.wakeup.ALARM` thread dispatches at exactly that instant.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from agentaccel_limit.config import ADAPTIVE_START, RuleConfig
from agentaccel_limit.errors import LimitExceeded
from agentaccel_limit.feedback import Aimd
from agentaccel_limit.wakeup import ALARM, Alarm, Wakeup

TOKEN_WINDOW = 60.0
NOW = 0.0  # _ready()'s answer for "admissible now"


class Permit:
    """What a granted call holds; :meth:`finish` or :meth:`release` gives it back (once; later calls do
    nothing)."""

    __slots__ = ("_spent", "epoch", "level", "limiter", "released")

    def __init__(self, limiter: Limiter, spent: list[float] | None, epoch: int, level: int) -> None:
        self.limiter = limiter
        self._spent = spent  # [start time, tokens] in the token window
        self.epoch = epoch
        self.level = level  # calls in flight, this one included, when it was admitted
        self.released = False

    def release(self) -> None:
        self.limiter._finish(self, None, None, None)

    def finish(self, ok: bool, rate_limited: bool, retry_after: float | None, tokens: int | None) -> None:
        """Release, teaching the rule what happened: ``ok`` (an adaptive rule grows), a 429 with the
        advertised ``retry_after`` (the rule pauses; an adaptive one shrinks), the ``tokens`` really used."""
        self.limiter._finish(self, ok and not rate_limited, (rate_limited, retry_after), tokens)


class Waiter:
    """A call queued on a limiter. ``wait``/``wait_async`` return its :class:`Permit` or raise
    :class:`LimitExceeded` after ``timeout`` seconds; cancelled or interrupted, it leaves the queue (or gives
    back the permit it was handed in the meantime)."""

    __slots__ = ("_wakeup", "limiter", "permit", "tokens")

    def __init__(self, limiter: Limiter, tokens: float) -> None:
        self.limiter = limiter
        self.tokens = tokens
        self.permit: Permit | None = None
        self._wakeup = Wakeup()

    def wait(self, timeout: float | None) -> Permit:
        try:
            self._wakeup.wait(timeout)
        except BaseException:
            self.limiter._abandon(self)
            raise
        return self.limiter._settle(self, timeout)

    async def wait_async(self, timeout: float | None) -> Permit:
        try:
            await self._wakeup.wait_async(timeout)
        except BaseException:
            self.limiter._abandon(self)
            raise
        return self.limiter._settle(self, timeout)


class Limiter:
    """One rule's limits in this process."""

    def __init__(self, rule: RuleConfig, alarm: Alarm = ALARM) -> None:
        self.rule = rule
        self.name = rule.name
        self._alarm = alarm
        self._lock = threading.Lock()
        self._queue: deque[Waiter] = deque()
        self.in_flight = 0
        self.aimd = Aimd(rule.max_concurrency or ADAPTIVE_START, rule.max_concurrency) if rule.adaptive else None
        self._starts: deque[float] = deque()  # admission times inside the rate window
        self._spent: deque[list[float]] = deque()  # [admission time, tokens] inside the token window
        self._spent_total = 0.0
        self._paused_until = 0.0
        self._alarm_at = math.inf  # when the pending alarm fires, if one is pending

    # --- what callers use --------------------------------------------------------------------------------------

    def acquire(self, tokens: float = 0.0) -> Permit | Waiter:
        """A permit at once, or a :class:`Waiter` in the queue; raises LimitExceeded when the queue is full."""
        if self.rule.tokens_per_minute is not None:
            tokens = min(tokens, self.rule.tokens_per_minute)  # a bigger call could never start otherwise
        with self._lock:
            now = time.monotonic()
            head = not self._queue  # behind others it waits its turn, even if it could start now
            wait = self._ready(tokens, now) if head else math.inf
            if wait == NOW:
                return self._grant(tokens, now)
            max_queue = self.rule.max_queue
            if max_queue is not None and len(self._queue) >= max_queue:
                raise self._error("queue_full")
            waiter = Waiter(self, tokens)
            self._queue.append(waiter)
            self._wake_at(wait, now)
            return waiter

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a provider's Retry-After)."""
        with self._lock:
            now = time.monotonic()
            self._paused_until = max(self._paused_until, now + seconds)
            self._wake_at(self._paused_until - now, now)

    @property
    def capacity(self) -> int | None:
        """The concurrency limit in force (an adaptive rule's current one)."""
        return self.aimd.capacity if self.aimd is not None else self.rule.max_concurrency

    @property
    def queued(self) -> int:
        return len(self._queue)

    def describe(self) -> str:
        """The rule's limits as a user would write them."""
        rule, parts = self.rule, []
        if rule.max_concurrency is not None:
            parts.append(f"max_concurrency={rule.max_concurrency}")
        if rule.adaptive:
            parts.append(f"adaptive, now {self.capacity}")
        if rule.rate is not None:
            parts.append(f"rate={rule.rate} per {rule.interval:g}s")
        if rule.tokens_per_minute is not None:
            parts.append(f"tokens_per_minute={rule.tokens_per_minute}")
        return ", ".join(parts)

    # --- under the lock ----------------------------------------------------------------------------------------

    def _ready(self, tokens: float, now: float) -> float:
        """NOW when a call of ``tokens`` may start; else seconds until time alone could allow it, or inf when
        it needs a release."""
        capacity = self.capacity
        if capacity is not None and self.in_flight >= capacity:
            return math.inf
        wait = max(NOW, self._paused_until - now)
        rate = self.rule.rate
        if rate is not None:
            starts, horizon = self._starts, now - self.rule.interval
            while starts and starts[0] <= horizon:
                starts.popleft()
            if len(starts) >= rate:
                wait = max(wait, starts[len(starts) - rate] - horizon)
        budget = self.rule.tokens_per_minute
        if budget is not None:
            spent, horizon = self._spent, now - TOKEN_WINDOW
            while spent and spent[0][0] <= horizon:
                self._spent_total -= spent.popleft()[1]
            excess = self._spent_total + tokens - budget
            for start, used in spent:  # the window frees what the oldest calls used, in order
                if excess <= 0:
                    break
                excess -= used
                wait = max(wait, start - horizon)
        return wait

    def _grant(self, tokens: float, now: float) -> Permit:
        self.in_flight += 1
        if self.rule.rate is not None:
            self._starts.append(now)
        entry = None
        if self.rule.tokens_per_minute is not None:
            entry = [now, tokens]
            self._spent.append(entry)
            self._spent_total += tokens
        return Permit(self, entry, self.aimd.epoch if self.aimd is not None else 0, self.in_flight)

    def _wake_at(self, wait: float, now: float) -> None:
        """Have the alarm dispatch when the head's time-based wait ends (a release dispatches anyway)."""
        if wait == math.inf or wait == NOW:
            return
        when = now + wait
        if when < self._alarm_at:
            self._alarm_at = when
            self._alarm.at(when, self._on_alarm)

    def _dispatch(self) -> list[Waiter]:
        """Grant permits to the head of the queue while it is admissible; the caller wakes them unlocked."""
        granted: list[Waiter] = []
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            wait = self._ready(head.tokens, now)
            if wait != NOW:
                self._wake_at(wait, now)
                break
            self._queue.popleft()
            head.permit = self._grant(head.tokens, now)
            granted.append(head)
        return granted

    # --- entry points that change state, each one lock and one dispatch ----------------------------------------

    def _wake(self, granted: list[Waiter]) -> None:
        for waiter in granted:
            if not waiter._wakeup.fire():  # its event loop is gone: nobody can use or return this permit
                assert waiter.permit is not None
                waiter.permit.release()

    def _on_alarm(self) -> None:
        with self._lock:
            self._alarm_at = math.inf
            granted = self._dispatch()
        self._wake(granted)

    def _finish(self, permit: Permit, ok: bool | None, limited: tuple[bool, float | None] | None,
                tokens: int | None) -> None:
        with self._lock:
            if permit.released:
                return
            permit.released = True
            # The concurrency a 429 speaks of: calls admitted together reach the provider in any order, so the one
            # refused may have been admitted at a low level while later ones filled the provider; the calls still
            # in flight when its 429 came back (a 429 comes back at once) count them.
            level = max(permit.level, self.in_flight)
            self.in_flight -= 1
            now = time.monotonic()
            if tokens is not None:
                self._correct(permit, tokens, now)
            if limited is not None and limited[0]:
                if limited[1]:
                    self._paused_until = max(self._paused_until, now + limited[1])
                if self.aimd is not None:
                    self.aimd.rate_limited(permit.epoch, level)
            elif ok and self.aimd is not None:
                self.aimd.succeeded()
            granted = self._dispatch()
        self._wake(granted)

    def correct(self, permit: Permit, tokens: int) -> None:
        """Replace the estimate a given-back permit put in the token window with the ``tokens`` its call reports
        having used (known only once the framework has parsed the answer, after the request's permit is back)."""
        with self._lock:
            self._correct(permit, tokens, time.monotonic())
            granted = self._dispatch()
        self._wake(granted)

    def _correct(self, permit: Permit, tokens: int, now: float) -> None:
        entry = permit._spent
        if entry is not None and entry[0] > now - TOKEN_WINDOW:
            self._spent_total += tokens - entry[1]
            entry[1] = tokens

    def _settle(self, waiter: Waiter, timeout: float | None) -> Permit:
        """After a wait ended: the permit, or (the wait timed out) leave the queue and raise."""
        with self._lock:
            if waiter.permit is not None:
                return waiter.permit
            self._queue.remove(waiter)
            granted = self._dispatch()  # the next one may need fewer tokens than the one that left
            error = self._error("queue_timeout", timeout)
        self._wake(granted)
        raise error

    def _abandon(self, waiter: Waiter) -> None:
        granted: list[Waiter] = []
        with self._lock:
            permit = waiter.permit
            if permit is None:
                self._queue.remove(waiter)
                granted = self._dispatch()
        self._wake(granted)
        if permit is not None:
            permit.release()  # it was handed over while the waiter was being cancelled

    def _error(self, reason: str, timeout: float | None = None) -> LimitExceeded:
        limits = self.describe()
        state = f"{self.in_flight} calls in flight and {len(self._queue)} waiting"
        where = f"[tool.agentaccel.limit] rule {self.name!r}"
        if reason == "queue_full":
            message = (f"limit rule {self.name!r} ({limits}): {state}, its queue is full (max_queue="
                       f"{self.rule.max_queue}); raise max_queue in {where}, send fewer calls at once (e.g. "
                       "agentaccel.map(..., concurrency=N)), or raise the rule's limits if the provider allows")
            return LimitExceeded(message, rule=self.name, limit=limits, reason="queue_full")
        message = (f"limit rule {self.name!r} ({limits}): no permit after waiting {timeout:g}s (queue_timeout="
                   f"{timeout:g}), {state}; raise queue_timeout in {where}, send fewer calls at once (e.g. "
                   "agentaccel.map(..., concurrency=N)), or raise the rule's limits if the provider allows")
        return LimitExceeded(message, rule=self.name, limit=limits, reason="queue_timeout")
