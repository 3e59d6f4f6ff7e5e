"""``sqlite:///path``: the embedded persistent L2 for development loops (stdlib sqlite3, WAL, safe across
processes). One connection per thread, closed once that thread has ended; async calls run the statements in a
worker thread.

The URL follows SQLAlchemy: ``sqlite:///cache.db`` is relative to the working directory when the backend is made
(it stays that file after a ``chdir``), ``sqlite:////tmp/c.db`` is absolute. It has no cross-process single
flight (concurrent misses in different processes each call upstream; within a process they are still coalesced).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentaccel import Io
from agentaccel_cache.backends import in_thread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    label TEXT NOT NULL,
    tags TEXT NOT NULL,
    expires REAL NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires);
"""
#: Expired rows are deleted on one write in this many, keeping writes cheap and the file bounded by use.
_PURGE_EVERY = 256
#: How long a statement waits for another process's write lock; SQLite writes are short, so this is rare.
_BUSY_SECONDS = 2.0


class SQLiteBackend:
    locks = False
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)

    def __init__(self, url: str, namespace: str, timeout: float, create: bool = True) -> None:
        """``create``: make the file (and its directory) on first use, as enable() wants; without it a missing
        file is an error, so that inspecting a mistyped path does not leave an empty cache there."""
        self.url = url
        self.namespace = namespace
        # SQLAlchemy's form: the third slash ends the authority. Resolved now, once: every thread's connection
        # opens this file even if the working directory changes later.
        self.path = Path(urlsplit(url).path[1:]).resolve()
        self._create = create
        self._local = threading.local()
        self._all: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.exists():
                raise FileNotFoundError(f"the SQLite cache file {self.path} does not exist; check the path (the "
                                        "cache creates it when enabled with this backend)")
            db = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.create_function("fnmatchcase", 2, fnmatchcase, deterministic=True)  # --match, as on Redis
            self._local.db = db
            # Threads come and go (each asyncio.run has its own executor): a new connection is the moment to
            # close those of threads that have ended, so their number stays that of the live threads.
            with self._lock:
                ended = [thread for thread in self._all if not thread.is_alive()]
                stale = [self._all.pop(thread) for thread in ended]
                self._all[threading.current_thread()] = db
            for old in stale:
                old.close()
        return db

    def entry_key(self, label: str, digest: str) -> str:
        return f"{self.namespace}:e:{label}:{digest}"

    def get(self, key: str) -> Io:
        return in_thread(lambda: self._get(key))

    def _get(self, key: str) -> bytes | None:
        row = self._db().execute("SELECT value FROM entries WHERE key = ? AND expires > ?",
                                 (key, time.time())).fetchone()
        return bytes(row[0]) if row is not None else None

    def store(self, key: str, digest: str, blob: bytes | None, ttl: float, tags: Sequence[str],
              token: str | None) -> Io:
        return in_thread(lambda: self._store(key, blob, ttl, tags))

    def _store(self, key: str, blob: bytes | None, ttl: float, tags: Sequence[str]) -> None:
        if blob is None:
            return
        db = self._db()
        now = time.time()
        label = key[len(self.namespace) + 3:].rpartition(":")[0]
        db.execute("INSERT OR REPLACE INTO entries (key, namespace, label, tags, expires, value) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (key, self.namespace, label, json.dumps(list(tags)), now + ttl, blob))
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            db.execute("DELETE FROM entries WHERE expires <= ?", (now,))

    def acquire(self, key: str, digest: str, lease: float, entry: bool) -> Io:
        raise NotImplementedError("sqlite backend has no cross-process locks")  # `locks` is False: never asked

    def wait(self, key: str, digest: str, timeout: float) -> Io:
        raise NotImplementedError("sqlite backend has no cross-process locks")

    def stats(self, namespace: str) -> dict[str, Any]:
        count, size = self._db().execute(
            "SELECT count(*), coalesce(sum(length(value)), 0) FROM entries WHERE namespace = ? AND expires > ?",
            (namespace, time.time())).fetchone()
        return {"entries": count, "bytes": size, "file": str(self.path)}

    def clear(self, namespace: str, match: str | None, tag: str | None) -> int:
        sql = "DELETE FROM entries WHERE namespace = ?"
        params: list[Any] = [namespace]
        if match is not None:
            sql += " AND fnmatchcase(label, ?)"  # not GLOB, whose [^...] differs: the same glob as on Redis
            params.append(match)
        if tag is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(entries.tags) WHERE json_each.value = ?)"
            params.append(tag)
        return self._db().execute(sql, params).rowcount

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, {}
        for db in connections.values():
            db.close()
        self._local = threading.local()
