"""Waking a waiter that may be a thread or a coroutine on any event loop, from any thread, without polling; and
one timer thread for the waits that end at a known time (a rate window sliding, a pause running out)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("agentaccel")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have been cancelled or timed out meanwhile
        future.set_result(None)


class Wakeup:
    """A one-shot signal: one thread (``wait``) or one coroutine (``wait_async``) waits, any thread ``fire``\\ s.

    The thread blocks on a ``threading.Event``; the coroutine awaits a future of its own loop, resolved through
    ``loop.call_soon_threadsafe``, so one limiter serves threads and any number of loops alike."""

    __slots__ = ("_event", "_fired", "_future", "_lock", "_loop")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired = False
        self._event: threading.Event | None = None
        self._future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def fire(self) -> bool:
        """Wake the waiter (now, or as soon as it starts waiting). False when its event loop is closed: nobody
        will ever resume it, so the caller must take back what it handed over."""
        with self._lock:
            self._fired = True
            event, future, loop = self._event, self._future, self._loop
        if event is not None:
            event.set()
        elif future is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop is closed
                return False
        return True

    @property
    def fired(self) -> bool:
        return self._fired

    def wait(self, timeout: float | None) -> bool:
        """Block the thread until fired (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            if self._fired:
                return True
            event = self._event = threading.Event()
        return event.wait(timeout)

    async def wait_async(self, timeout: float | None) -> bool:
        """Await until fired (True) or ``timeout`` seconds pass (False); cancellation propagates."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._fired:
                return True
            future = self._future = loop.create_future()
            self._loop = loop
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        return True


class Alarm:
    """Runs callbacks at given ``time.monotonic()`` instants on one daemon thread, which sleeps until the
    earliest one (it is woken early only when an earlier one is scheduled). Callbacks must be quick."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # ties: never compare callbacks
        self._thread: threading.Thread | None = None

    def at(self, when: float, callback: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentaccel-limit-alarm", daemon=True)
                self._thread.start()
            elif self._heap[0][0] == when:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    delay = self._heap[0][0] - time.monotonic() if self._heap else None
                    if delay is not None and delay <= 0:
                        break
                    self._cond.wait(delay)
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # a failing callback must not stop every later alarm
                log.exception("agentaccel-limit: alarm callback failed")


#: Shared by every limiter of the process.
ALARM = Alarm()
