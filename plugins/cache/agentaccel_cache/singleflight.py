"""In-process single flight: of concurrent identical misses one (the leader) calls upstream, the others wait for
its entry. Waiters may be threads (blocking on an Event) or asyncio tasks on any loop (woken through
``call_soon_threadsafe``), and one flight serves both kinds at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from agentaccel_cache.values import Entry


class _Timeout:
    __slots__ = ()


#: What a wait returns when the leader took longer than the lease: the waiter calls upstream itself.
TIMEOUT = _Timeout()


class Flight:
    """One leader's call in progress. Its Event is made by the first thread that waits (under the lock), so a
    flight nobody joins (the common case) costs no Event."""

    __slots__ = ("_done", "_event", "_loops", "entry")

    def __init__(self) -> None:
        self._done = False
        self._event: threading.Event | None = None
        self._loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.entry: Entry | None = None

    def wait(self, timeout: float) -> Entry | _Timeout | None:
        """Block until the leader finishes: its entry, None when it stored nothing (failed), or TIMEOUT.

        A sync call made on a thread that runs an event loop (sync code inside a coroutine) must not block: the
        leader may be a task on that very loop, which could then never finish. It gets TIMEOUT at once and calls
        upstream itself."""
        with _lock:
            if self._done:
                return self.entry
            if on_event_loop():
                return TIMEOUT
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        if not event.wait(timeout):
            return TIMEOUT
        return self.entry

    async def wait_async(self, timeout: float) -> Entry | _Timeout | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with _lock:
            if self._done:
                return self.entry
            self._loops.append((loop, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return TIMEOUT
        return self.entry


_lock = threading.Lock()


class Flights:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (and must :meth:`finish` it)."""
        with _lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def finish(self, key: str, flight: Flight, entry: Entry | None) -> None:
        """Wake the waiters with ``entry`` (None: they try again). Idempotent."""
        with _lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if flight._done:
                return
            flight.entry = entry
            flight._done = True
            event, loops, flight._loops = flight._event, flight._loops, []
        if event is not None:
            event.set()
        for loop, future in loops:
            with contextlib.suppress(RuntimeError):  # that loop was closed: its waiter is gone with it
                loop.call_soon_threadsafe(_wake, future)


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
