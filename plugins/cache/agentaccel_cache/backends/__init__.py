"""Second-level (L2) backends, chosen by the URL in ``cache.backend``.

A backend hands the middleware :class:`agentaccel.Io` effects (each with a sync and an async form) and does no
deciding: what to do with a miss, a lock that is held or a failure is the middleware's, written once.

Every backend offers ``get``, ``store``, and for the CLI ``stats`` and ``clear``; one with ``locks`` (Redis) also
offers ``acquire`` and ``wait`` for single flight across processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from agentaccel import Io

T = TypeVar("T")


class Backend(Protocol):
    url: str
    namespace: str
    #: Whether acquire/wait exist: single flight across processes.
    locks: bool
    #: Exceptions that mean "the backend is unavailable": they feed the circuit breaker, never the caller.
    errors: tuple[type[BaseException], ...]

    def entry_key(self, label: str, digest: str) -> str: ...

    def get(self, key: str) -> Io: ...

    def store(self, key: str, digest: str, blob: bytes | None, ttl: float, tags: Sequence[str],
              token: str | None) -> Io: ...

    def acquire(self, key: str, digest: str, lease: float, entry: bool) -> Io: ...

    def wait(self, key: str, digest: str, timeout: float) -> Io: ...

    def stats(self, namespace: str) -> dict[str, Any]: ...

    def clear(self, namespace: str, match: str | None, tag: str | None) -> int: ...

    def close(self) -> None: ...


def open_backend(url: str, namespace: str, connect_timeout: float, timeout: float, create: bool = True) -> Backend:
    """The backend for ``url`` (already checked by config.check). ``create=False`` (the CLI, which inspects) makes
    a missing SQLite file an error instead of a new empty cache; a Redis server has nothing to create."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from agentaccel_cache.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url, namespace, timeout, create)
    from agentaccel_cache.backends.redis import RedisBackend

    return RedisBackend(url, namespace, connect_timeout, timeout)


def in_thread(fn: Callable[[], T]) -> Io:
    """An Io for blocking work without an async client: called directly from sync code, in a worker thread
    from async code so the event loop never blocks."""
    return Io(fn, lambda: asyncio.to_thread(fn))
