"""The in-process level: LRU bounded in bytes (cachetools' LRUCache), each entry with its own expiry.

Expiry is checked on read: an expired entry is a miss and is dropped then; one never read again ages out of the LRU
order like any cold entry, and counts against the byte bound until it does, so memory stays bounded. (cachetools'
TLRUCache would drop expired entries eagerly, but its lookup costs 1.1 us against LRUCache's 0.2 us, on every hit.)

Keys are the canonical encodings of the requests (see keys.py), charged against the byte bound with the entry.

One lock, shared with the counters (a hit is looked up and counted in one hold of it), guards it, held only for
dict-speed operations and never across an await, so it is safe for threads and asyncio alike.
"""

from __future__ import annotations

import sys
import time

from cachetools import LRUCache

from agentaccel_cache.stats import L1_HIT, Stats
from agentaccel_cache.values import OVERHEAD_BYTES, Entry


class _Store(LRUCache[bytes, Entry]):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, getsizeof=_size)
        self.evictions = 0

    def popitem(self) -> tuple[bytes, Entry]:
        # Called only when a new entry needs room: each call is one eviction.
        item = super().popitem()
        self.evictions += 1
        return item


def _size(entry: Entry) -> int:
    return entry.size


class L1:
    def __init__(self, max_bytes: int, stats: Stats) -> None:
        self.max_bytes = max_bytes
        self._store = _Store(max_bytes) if max_bytes > 0 else None
        self._stats = stats
        self._lock = stats.lock

    def hit(self, key: bytes) -> Entry | None:
        """The live entry under ``key``, counted as an L1 hit; None (not counted) when there is none."""
        store = self._store
        if store is None:
            return None
        with self._lock:
            try:
                entry = store[key]
            except KeyError:
                return None
            if entry.expires_at <= time.time():
                del store[key]
                return None
            self._stats.served_locked(L1_HIT, entry)
            return entry

    def put(self, key: bytes, digest: str, entry: Entry) -> None:
        """Keep ``entry`` under ``key`` (the request's encoding), recording its ``digest`` for its hits' spans."""
        store = self._store
        if store is None:
            return
        key = memoryview(key).tobytes()  # of exact size: orjson's bytes keep their growth buffer (see make_entry)
        entry.digest = digest
        entry.size = sys.getsizeof(key) + sys.getsizeof(entry.text) + OVERHEAD_BYTES
        with self._lock:
            if entry.size > self.max_bytes:
                # Larger than the whole bound (cachetools would raise): not kept, and an older entry under the
                # key goes too, so that a refreshed call is never answered with what it replaced.
                store.pop(key, None)
            else:
                store[key] = entry

    def clear(self) -> None:
        if self._store is not None:
            with self._lock:
                self._store.clear()

    @property
    def bytes(self) -> int:
        return int(self._store.currsize) if self._store is not None else 0

    @property
    def entries(self) -> int:
        return len(self._store) if self._store is not None else 0

    @property
    def evictions(self) -> int:
        return self._store.evictions if self._store is not None else 0
