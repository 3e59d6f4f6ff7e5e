"""``redis://`` / ``rediss://``: the shared L2, and single flight across processes.

Short connect and command timeouts and no client-side retries: a slow or absent Redis costs a call at most one
timeout before the circuit breaker takes it out. The sync client (a thread-safe pool) serves sync calls; each
event loop gets its own asyncio client, because an asyncio connection pool belongs to the loop it was made in.

Keys, all under the namespace: ``<ns>:e:<framework/operation/name>:<digest>`` an entry, ``<ns>:l:<digest>`` the
single-flight lease, ``<ns>:c:<digest>`` the channel its release is published on, ``<ns>:t:<tag>`` the set of
entry keys carrying a tag.

Single flight: the leader takes the lease with ``SET NX PX`` (expiry on Redis' own clock, so a holder that dies
frees it without anyone's clock mattering); it stores the entry, then deletes the lease and publishes in one
script. A waiter subscribes, then checks the lease: gone means look again; held means sleep on the subscription
until the release message or the lease's remaining time (``PTTL``), whichever comes first. Nobody polls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.retry import Retry

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
# Slack past the lease's PTTL, so a waiter that wakes on expiry finds the key gone.
_SLACK = 0.005


class RedisBackend:
    locks = True
    errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def __init__(self, url: str, namespace: str, connect_timeout: float, timeout: float) -> None:
        self.url = url
        self.namespace = namespace
        self.timeout = timeout
        self._options: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": timeout,
                                         "retry": Retry(NoBackoff(), 0)}
        self.sync = redis.Redis.from_url(url, **self._options)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
            weakref.WeakKeyDictionary())

    def _aclient(self) -> aredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = aredis.Redis.from_url(self.url, **self._options)
        return client

    def entry_key(self, label: str, digest: str) -> str:
        return f"{self.namespace}:e:{label}:{digest}"

    def _lease(self, digest: str) -> tuple[str, str]:
        return f"{self.namespace}:l:{digest}", f"{self.namespace}:c:{digest}"

    def get(self, key: str) -> Io:
        return Io(lambda: self.sync.get(key), lambda: self._aclient().get(key))

    def acquire(self, key: str, digest: str, lease: float, entry: bool) -> Io:
        """-> the entry's bytes (it appeared; only asked when ``entry``), a token (the lease is ours) or None
        (another holds it)."""
        token = uuid.uuid4().hex
        lock, _ = self._lease(digest)
        args = (_ACQUIRE, 2, key, lock, token, max(1, int(lease * 1000)), "1" if entry else "0")

        def decide(reply: Any) -> bytes | str | None:
            return reply if isinstance(reply, bytes) else token if reply == 1 else None

        async def arun() -> bytes | str | None:
            return decide(await self._aclient().eval(*args))

        return Io(lambda: decide(self.sync.eval(*args)), arun)

    def store(self, key: str, digest: str, blob: bytes | None, ttl: float, tags: Sequence[str],
              token: str | None) -> Io:
        lock, channel = self._lease(digest)
        tag_keys = [f"{self.namespace}:t:{tag}" for tag in tags]

        def queue(pipe: Any) -> Any:
            if blob is not None:
                pipe.set(key, blob, px=max(1, int(ttl * 1000)))
                for tag_key in tag_keys:
                    pipe.sadd(tag_key, key)
            if token is not None:
                pipe.eval(_RELEASE, 2, lock, channel, token)
            return pipe

        async def arun() -> None:
            await queue(self._aclient().pipeline(transaction=False)).execute()

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
            client = self._aclient()
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
        else:
            keys = list(self.sync.scan_iter(match=f"{prefix}{match or '*'}:*", count=1000))
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
        self._async = weakref.WeakKeyDictionary()  # their loops close them; awaiting here is impossible


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
