"""The in-process level: TTL + LRU (cachetools' TLRUCache, each entry with its own expiry), bounded in bytes.

One lock guards it, held only for dict-speed operations and never across an await, so it is safe for threads and
asyncio alike.
"""

from __future__ import annotations

import threading
import time

from cachetools import TLRUCache

from agentaccel_cache.values import Entry


class _Store(TLRUCache[str, Entry]):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, _expiry, timer=time.time, getsizeof=_size)
        self.evictions = 0

    def popitem(self) -> tuple[str, Entry]:
        # Called only when a new entry needs room: each call is one eviction (expired entries go in expire()).
        item = super().popitem()
        self.evictions += 1
        return item


def _expiry(key: str, entry: Entry, now: float) -> float:
    return entry.expires_at


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
            return store.get(key)

    def put(self, key: str, entry: Entry) -> None:
        store = self._store
        if store is None or entry.size > self.max_bytes:
            return  # larger than the whole bound: cachetools would raise, and it could only evict everything
        with self._lock:
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
