"""The in-process level: LRU bounded in bytes (cachetools' LRUCache), each entry with its own expiry.

Expiry is checked on read: an expired entry is a miss and is dropped then; one never read again ages out of the LRU
order like any cold entry, and counts against the byte bound until it does, so memory stays bounded. (cachetools'
TLRUCache would drop expired entries eagerly, but its lookup costs 1.1 us against LRUCache's 0.2 us, on every hit.)

One lock guards it, held only for dict-speed operations and never across an await, so it is safe for threads and
asyncio alike.
"""

from __future__ import annotations

import threading
import time

from cachetools import LRUCache

from agentaccel_cache.values import Entry


class _Store(LRUCache[str, Entry]):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, getsizeof=_size)
        self.evictions = 0

    def popitem(self) -> tuple[str, Entry]:
        # Called only when a new entry needs room: each call is one eviction.
        item = super().popitem()
        self.evictions += 1
        return item


def _size(entry: Entry) -> int:
    return entry.size


class L1:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._store = _Store(max_bytes) if max_bytes > 0 else None
        self._lock = threading.Lock()

    def get(self, key: str) -> Entry | None:
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
            return entry

    def put(self, key: str, entry: Entry) -> None:
        store = self._store
        if store is None:
            return
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
