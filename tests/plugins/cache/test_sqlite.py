"""L2 in a real SQLite file: persistence across enable() and processes, WAL, async, expiry."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cache_helpers import cache, results

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder


def model(calls: list[str]) -> Any:
    @agentaccel.accelerate(operation=agentaccel.CHAT, name="sqlite-model",
                           request=lambda call: {"q": call.args[0]})
    def chat(q: str) -> dict[str, str]:
        calls.append(q)
        return {"answer": q}

    return chat


def test_entries_persist_in_the_file(agentaccel_spans: SpanRecorder, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cache.db"
    agentaccel_spans.enable(cache={"backend": url})
    calls: list[str] = []
    chat = model(calls)
    chat("a")
    agentaccel.disable()
    agentaccel_spans.enable(cache={"backend": url})  # a fresh L1, the same file
    assert chat("a") == {"answer": "a"} and chat("a") == {"answer": "a"}
    assert calls == ["a"]
    spans = agentaccel_spans.spans()
    assert results(spans) == ["miss", "hit", "hit"]
    assert [s.attributes.get("agentaccel.cache.layer") for s in spans] == [None, "l2", "l1"]
    with sqlite3.connect(tmp_path / "cache.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_async_calls_and_expiry(agentaccel_spans: SpanRecorder, tmp_path: Path) -> None:
    agentaccel_spans.enable(cache={"backend": f"sqlite:///{tmp_path}/cache.db", "max_bytes": 0})
    calls: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="async-sqlite")
    async def achat(q: str) -> list[str]:
        calls.append(q)
        return [q]

    async def twice() -> list[Any]:
        with agentaccel.options(ttl=0.3):
            return [await achat("x"), await achat("x")]

    assert asyncio.run(twice()) == [["x"], ["x"]] and calls == ["x"]
    time.sleep(0.4)
    assert asyncio.run(achat("x")) == ["x"] and calls == ["x", "x"]


def test_shared_between_processes(agentaccel_spans: SpanRecorder, tmp_path: Path,
                                  subprocess_env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    child = f"""
import agentaccel
agentaccel.enable(cache={{"backend": {url!r}}})
@agentaccel.accelerate(operation="chat", name="sqlite-model", request=lambda call: {{"q": call.args[0]}})
def chat(q):
    return {{"answer": "from child"}}
print(chat("a"))
"""
    subprocess.run([sys.executable, "-c", child], env=subprocess_env, check=True, capture_output=True)
    agentaccel_spans.enable(cache={"backend": url})
    calls: list[str] = []
    assert model(calls)("a") == {"answer": "from child"} and calls == []
    assert cache().backend is not None


def test_corrupt_row_is_a_miss(agentaccel_spans: SpanRecorder, tmp_path: Path) -> None:
    agentaccel_spans.enable(cache={"backend": f"sqlite:///{tmp_path}/cache.db", "max_bytes": 0, "secret": "k"})
    calls: list[str] = []
    chat = model(calls)
    chat("a")
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute("UPDATE entries SET value = CAST(replace(CAST(value AS TEXT), 'a', 'b') AS BLOB)")
    assert chat("a") == {"answer": "a"} and calls == ["a", "a"]
    assert cache().stats.invalid_entries == 1
