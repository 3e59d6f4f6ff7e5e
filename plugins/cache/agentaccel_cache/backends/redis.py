"""``redis://`` / ``rediss://``: the shared L2, and single flight across processes.

Short connect and command timeouts, never retried: a slow or absent Redis costs a call at most one timeout
before the circuit breaker takes it out (a connection refused or closed, as by a restart, is tried once more).
The sync client (a thread-safe pool) serves sync calls; each event loop gets its own asyncio client, because an
asyncio connection pool belongs to the loop it was made in, and that client is closed when its loop shuts down
(see ``_aclient``). The lookup every cached call makes, a GET, goes to connections of its own without the pool's
per-command checks (see ``_Free``).

Keys, all under the namespace: ``<ns>:e:<framework/operation/name>:<digest>`` an entry, ``<ns>:l:<digest>`` the
single-flight lease, ``<ns>:c:<digest>`` the channel its release is published on, ``<ns>:t:<tag>`` the set of
entry keys carrying a tag, which expires with the longest-lived entry it lists.

Single flight: the leader takes the lease with ``SET NX PX`` (expiry on Redis' own clock, so a holder that dies
frees it without anyone's clock mattering); it stores the entry, then deletes the lease and publishes in one
script. A waiter subscribes, then checks the lease: gone means look again; held means sleep on the subscription
until the release message or the lease's remaining time (``PTTL``), whichever comes first. Nobody polls.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress
from fnmatch import fnmatchcase
from functools import partial
from typing import Any, NamedTuple

import redis
import redis.asyncio as aredis
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from agentaccel import Io

# Atomic "the entry, else the lease": a waiter woken between the leader's store and its release cannot slip in
# and call upstream a second time. Returns the entry, 1 (lease taken) or 0 (someone holds it). ARGV[3] = '0' skips
# the entry: the caller found it invalid and must not be handed it again.
_ACQUIRE = """
if ARGV[3] == '1' then
    local value = redis.call('GET', KEYS[1])
    if value then return value end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# Release only our own lease (an expired one may have passed to another leader), and wake the waiters either way.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', KEYS[2], '1')
return 1
"""
# Index the entry under each tag, and keep each tag set alive as long as its longest-lived entry: extend its expiry,
# never shorten it (PTTL is -1 for a set with none yet). Unlike PEXPIRE's GT/NX flags, this needs no Redis 7.
_TAG = """
for _, tag in ipairs(KEYS) do
    redis.call('SADD', tag, ARGV[1])
    if redis.call('PTTL', tag) < tonumber(ARGV[2]) then redis.call('PEXPIRE', tag, ARGV[2]) end
end
return 1
"""
# Slack past the lease's PTTL, so a waiter that wakes on expiry finds the key gone.
_SLACK = 0.005


class _Free:
    """Idle connections for GETs, taken and given back without the pool's per-command checks.

    On every command redis-py's pool asks the process id twice and peeks the socket for unread data: five system
    calls beside the round trip's own four, and on this host 40 us of a 130 us GET, paid on every L2 hit. They
    guard against a fork and against a connection given back with its reply unread. Here a connection is used by
    the one caller that popped it (list pop and append are atomic), goes back only after a whole reply, and on any
    error is dropped (redis-py has disconnected it), so no reply is ever left unread on one; a forked child forgets
    its parent's connections (``_forget_in_children``) instead of asking its pid on every call. What the peek also
    catches, a connection the server closed while it sat idle (a restart, its idle timeout), shows here as a
    ConnectionError, and the GET is tried once more on a new connection, as the clients retry (see RedisBackend).
    """

    __slots__ = ("__weakref__", "_connections", "_make")

    def __init__(self, pool: Any) -> None:
        self._make = partial(pool.connection_class, **pool.connection_kwargs)  # the client's auth, TLS, db
        self._connections: list[Any] = []
        _EVERY_FREE.add(self)

    def take(self) -> Any:
        try:
            return self._connections.pop()
        except IndexError:
            return self._make()

    def new(self) -> Any:
        return self._make()

    def give(self, connection: Any) -> None:
        self._connections.append(connection)

    def drain(self) -> list[Any]:
        """Every idle connection, now no longer here (to be closed)."""
        connections, self._connections = self._connections, []
        return connections


_EVERY_FREE: weakref.WeakSet[_Free] = weakref.WeakSet()


def _forget_in_children() -> None:
    # The child shares its parent's sockets: both sending on one would mix their replies. Dropped, not closed:
    # redis-py's disconnect() leaves the socket of another process alone, and closing our copy is harmless.
    for free in list(_EVERY_FREE):
        free.drain()


os.register_at_fork(after_in_child=_forget_in_children)


class _LoopClient(NamedTuple):
    client: aredis.Redis
    free: _Free
    closer: AsyncGenerator[None, None]


class RedisBackend:
    locks = True
    errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def __init__(self, url: str, namespace: str, connect_timeout: float, timeout: float) -> None:
        self.url = url
        self.namespace = namespace
        self.timeout = timeout
        # A ConnectionError (refused, reset, closed by the server: a restart) is tried once more on a new
        # connection, which the restarted server accepts; a timeout is not, so a slow Redis costs one timeout.
        self._options: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": timeout}
        self.sync = redis.Redis.from_url(url, retry=redis.retry.Retry(NoBackoff(), 1, (redis.ConnectionError,)),
                                         **self._options)
        self._free = _Free(self.sync.connection_pool)
        # Each loop's client, its GET connections, and the async generator that closes them (see _aclient). A
        # plain dict: the client references its loop, so weak keys would never die; entries leave when their loop
        # shuts down.
        self._async: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._async_lock = threading.Lock()  # loops in several threads share the dict

    async def _aclient(self) -> _LoopClient:
        """The running loop's client, made on first use.

        asyncio has no hook for a loop's end, but the loop closes the async generators it knows of before it
        closes itself (``shutdown_asyncgens``, called by ``asyncio.run`` and ``asyncio.Runner``). So each client
        comes with a generator, started here and thereby known to the loop, whose ``finally`` forgets the client and
        closes it while the loop still runs: its sockets are closed and nothing outlives the loop.
        """
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)  # every async L2 step asks: a dict read needs no lock
        if found is not None:
            return found
        with self._async_lock:
            stale = [each.closer for other, each in self._async.items() if other.is_closed()]
        for closer in stale:  # a loop closed without shutdown_asyncgens: its client can only be dropped
            _finish(closer)
        client = aredis.Redis.from_url(
            self.url, retry=redis.asyncio.retry.Retry(NoBackoff(), 1, (redis.ConnectionError,)), **self._options)
        free = _Free(client.connection_pool)
        closer = self._closer(loop, client, free)
        found = _LoopClient(client, free, closer)
        with self._async_lock:
            self._async[loop] = found
        await anext(closer)  # to its yield: from here the loop closes it when it shuts down
        return found

    async def _closer(self, loop: asyncio.AbstractEventLoop, client: aredis.Redis,
                      free: _Free) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._async_lock:
                self._async.pop(loop, None)
            if not loop.is_closed():  # closed: _finish runs this with no loop to close the client on
                for connection in free.drain():
                    await connection.disconnect()  # drops its socket, whatever the server does
                with suppress(*self.errors):  # an unreachable server has nothing to close
                    await client.aclose()

    def entry_key(self, label: str, digest: str) -> str:
        return f"{self.namespace}:e:{label}:{digest}"

    def _lease(self, digest: str) -> tuple[str, str]:
        return f"{self.namespace}:l:{digest}", f"{self.namespace}:c:{digest}"

    def get(self, key: str) -> Io:
        """-> the entry's bytes or None, on a connection of ``_Free``'s (see there)."""

        def run() -> Any:
            connection = self._free.take()
            try:
                connection.send_command("GET", key)
                value = connection.read_response()
            except redis.ConnectionError:  # as the clients' Retry does (see __init__)
                connection = self._free.new()
                connection.send_command("GET", key)
                value = connection.read_response()
            self._free.give(connection)
            return value

        async def arun() -> Any:
            free = (await self._aclient()).free
            connection = free.take()
            try:
                await connection.send_command("GET", key)
                value = await connection.read_response()
            except redis.ConnectionError:
                connection = free.new()
                await connection.send_command("GET", key)
                value = await connection.read_response()
            free.give(connection)
            return value

        return Io(run, arun)

    def acquire(self, key: str, digest: str, lease: float, entry: bool) -> Io:
        """-> the entry's bytes (it appeared; only asked when ``entry``), a token (the lease is ours) or None
        (another holds it)."""
        token = uuid.uuid4().hex
        lock, _ = self._lease(digest)
        args = (_ACQUIRE, 2, key, lock, token, max(1, int(lease * 1000)), "1" if entry else "0")

        def decide(reply: Any) -> bytes | str | None:
            return reply if isinstance(reply, bytes) else token if reply == 1 else None

        async def arun() -> bytes | str | None:
            return decide(await (await self._aclient()).client.eval(*args))

        return Io(lambda: decide(self.sync.eval(*args)), arun)

    def store(self, key: str, digest: str, blob: bytes | None, ttl: float, tags: Sequence[str],
              token: str | None) -> Io:
        lock, channel = self._lease(digest)
        tag_keys = [f"{self.namespace}:t:{tag}" for tag in tags]
        ttl_ms = max(1, int(ttl * 1000))

        def queue(pipe: Any) -> Any:
            if blob is not None:
                pipe.set(key, blob, px=ttl_ms)
                if tag_keys:
                    pipe.eval(_TAG, len(tag_keys), *tag_keys, key, ttl_ms)
            if token is not None:
                pipe.eval(_RELEASE, 2, lock, channel, token)
            return pipe

        async def arun() -> None:
            await queue((await self._aclient()).client.pipeline(transaction=False)).execute()

        return Io(lambda: queue(self.sync.pipeline(transaction=False)).execute(), arun)

    def wait(self, key: str, digest: str, timeout: float) -> Io:
        """-> the entry's bytes, or None: the lease was released without an entry, expired, or ``timeout``."""
        lock, channel = self._lease(digest)

        def run() -> bytes | None:
            with self.sync.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
                pubsub.subscribe(channel)
                pubsub.get_message(timeout=self.timeout)  # the confirmation: from here no release is missed
                deadline = _deadline(self.sync.pttl(lock), timeout)
                while deadline is not None and (left := deadline - time.monotonic()) > 0:
                    if pubsub.get_message(timeout=left) is not None:
                        break
            return _bytes(self.sync.get(key))

        async def arun() -> bytes | None:
            client = (await self._aclient()).client
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.timeout)
                deadline = _deadline(await client.pttl(lock), timeout)
                while deadline is not None and (left := deadline - time.monotonic()) > 0:
                    if await pubsub.get_message(ignore_subscribe_messages=True, timeout=left) is not None:
                        break
            return _bytes(await client.get(key))

        return Io(run, arun)

    def stats(self, namespace: str) -> dict[str, Any]:
        entries = size = 0
        keys = list(self.sync.scan_iter(match=f"{namespace}:e:*", count=1000))
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            pipe = self.sync.pipeline(transaction=False)
            for key in batch:
                pipe.strlen(key)
            lengths = pipe.execute()
            entries += sum(1 for n in lengths if n)
            size += sum(lengths)
        info = self.sync.info("memory")
        return {"entries": entries, "bytes": size, "server_used_memory": info.get("used_memory_human")}

    def clear(self, namespace: str, match: str | None, tag: str | None) -> int:
        prefix = f"{namespace}:e:"
        if tag is not None:
            members = self.sync.smembers(f"{namespace}:t:{tag}")
            keys = [k for k in members if match is None or fnmatchcase(_label(k, prefix), match)]
        else:  # a SCAN pattern cannot say "the label matches": its '*' would run on across the ':' ending it
            keys = [k for k in self.sync.scan_iter(match=f"{prefix}*", count=1000)
                    if match is None or fnmatchcase(_label(k, prefix), match)]
        deleted = 0
        for start in range(0, len(keys), 1000):
            deleted += int(self.sync.delete(*keys[start:start + 1000]))
        if match is None:  # the tag sets only index entries; with every entry of the selection gone, drop them
            tag_sets = [f"{namespace}:t:{tag}"] if tag is not None else list(
                self.sync.scan_iter(match=f"{namespace}:t:*", count=1000))
            if tag_sets:
                self.sync.delete(*tag_sets)
        return deleted

    def close(self) -> None:
        self.sync.close()
        for connection in self._free.drain():
            connection.disconnect()
        with self._async_lock:
            clients, self._async = self._async, {}
        for loop, each in clients.items():
            # Awaiting is impossible here. A closed loop's closer is finished now; any other, once dropped, goes to
            # its loop's asyncgen finalizer, which runs it (closing the client) on that loop.
            if loop.is_closed():
                _finish(each.closer)


def _finish(closer: AsyncGenerator[None, None]) -> None:
    """Close ``closer`` of a closed loop here and now: its ``finally`` awaits nothing then, so one step ends it.
    Left to the garbage collector, the generator would be handed to its dead loop's finalizer, which fails."""
    with suppress(StopIteration):
        closer.aclose().send(None)


def _deadline(pttl: int, timeout: float) -> float | None:
    """When to stop waiting for the lease's release: None when there is no lease (look again now)."""
    if pttl < 0:  # -2: no lease; -1 (no expiry) cannot happen for ours
        return None
    return time.monotonic() + min(pttl / 1000 + _SLACK, timeout)


def _label(key: bytes | str, prefix: str) -> str:
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    return text[len(prefix):].rpartition(":")[0]


def _bytes(value: object) -> bytes | None:
    # The clients are made without decode_responses, so replies are bytes; this narrows their loose typing.
    return value if isinstance(value, bytes) else None
