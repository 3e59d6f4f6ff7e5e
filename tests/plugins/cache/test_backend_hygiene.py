"""L2 backends keep bounded resources and select what they say: connections of finished event loops and dead
threads are closed, a relative SQLite path is fixed at enable(), tag sets expire, and ``clear --match`` deletes the
same entries on Redis and SQLite. All on a real redis-server and real SQLite files."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

import agentaccel
from agentaccel.cli import main
from agentaccel.testing.pytest_plugin import SpanRecorder
from agentaccel.testing.redis_server import RedisServer

ROUNDS = 40
#: fds a round may legitimately leave behind at the end (a pooled socket, the selector of a loop not yet
#: collected); a leak leaves at least one per round.
SLACK = 6


def sync_model(calls: list[str], name: str = "hygiene") -> Any:
    @agentaccel.accelerate(operation=agentaccel.CHAT, name=name)
    def chat(q: str) -> str:
        calls.append(q)
        return q

    return chat


def async_model(calls: list[str]) -> Any:
    @agentaccel.accelerate(operation=agentaccel.CHAT, name="hygiene-async")
    async def achat(q: str) -> str:
        calls.append(q)
        return q

    return achat


def open_fds() -> int:
    gc.collect()  # only what is still referenced counts
    count: int = psutil.Process().num_fds()
    return count


def live_loops() -> int:
    gc.collect()
    return sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())


def test_redis_clients_of_finished_event_loops_are_closed(agentaccel_spans: SpanRecorder,
                                                          redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "hyg-a", "max_bytes": 0})
    calls: list[str] = []
    achat = async_model(calls)
    server = redis.Redis.from_url(redis_server.url)
    asyncio.run(achat("x"))  # warm up: the sync client, imports
    fds, loops = open_fds(), live_loops()
    for _ in range(ROUNDS):
        assert asyncio.run(achat("x")) == "x"  # every run reads L2 (L1 is off) through its own asyncio client
    assert calls == ["x"]
    assert open_fds() <= fds + SLACK
    assert live_loops() <= loops + 1
    assert server.info("clients")["connected_clients"] <= 3  # ours (sync pool), this checker, maybe one more


# Such a loop's owner left its connections open: asyncio warns of each as the collector reclaims it.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_redis_clients_of_loops_closed_without_shutdown_are_dropped(agentaccel_spans: SpanRecorder,
                                                                     redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "hyg-a2", "max_bytes": 0})
    achat = async_model([])
    loops = live_loops()
    for _ in range(ROUNDS):  # a bare loop closed without shutdown_asyncgens (not what asyncio.run does)
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(achat("x")) == "x"
        loop.close()
    assert live_loops() <= loops + 2


def test_sqlite_connections_of_dead_threads_are_closed(agentaccel_spans: SpanRecorder, tmp_path: Path) -> None:
    agentaccel_spans.enable(cache={"backend": f"sqlite:///{tmp_path}/cache.db", "max_bytes": 0})
    calls: list[str] = []
    chat, achat = sync_model(calls), async_model(calls)
    chat("x"), asyncio.run(achat("x"))  # warm up: the main thread's connection, the executor
    fds = open_fds()
    for _ in range(ROUNDS):
        thread = threading.Thread(target=chat, args=("x",))  # a short-lived thread: its own connection
        thread.start()
        thread.join()
        assert asyncio.run(achat("x")) == "x"  # a new executor thread: another connection
    assert calls == ["x", "x"]
    assert open_fds() <= fds + SLACK


def test_relative_sqlite_path_is_fixed_at_enable(agentaccel_spans: SpanRecorder, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    agentaccel_spans.enable(cache={"backend": "sqlite:///cache.db", "max_bytes": 0})
    calls: list[str] = []
    chat = sync_model(calls)
    chat("x")
    monkeypatch.chdir(second)
    thread = threading.Thread(target=chat, args=("x",))  # a new thread: a new connection, the same file
    thread.start()
    thread.join()
    assert calls == ["x"]
    assert (first / "cache.db").exists() and not (second / "cache.db").exists()


@pytest.mark.parametrize("action", ["stats", "clear"])
def test_cli_on_a_missing_sqlite_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              action: str) -> None:
    missing = tmp_path / "typo" / "dir" / "c.db"
    assert main(["cache", action, "--backend", f"sqlite:///{missing}"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_redis_tag_sets_expire_after_their_last_entry(agentaccel_spans: SpanRecorder,
                                                      redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "hyg-d", "max_bytes": 0})
    chat = sync_model([])
    client = redis.Redis.from_url(redis_server.url)
    tag_set = "hyg-d:t:docs"
    with agentaccel.options(cache_tags=["docs"], ttl=0.3):
        for i in range(20):
            chat(f"q{i}")
    assert client.scard(tag_set) == 20 and 0 < client.pttl(tag_set) <= 300
    with agentaccel.options(cache_tags=["docs"], ttl=30):
        chat("long")
    assert client.pttl(tag_set) > 29_000  # extended to the longest-lived entry
    with agentaccel.options(cache_tags=["docs"], ttl=0.3):
        chat("short again")
    assert client.pttl(tag_set) > 29_000  # never shortened: "long" is still listed
    with agentaccel.options(cache_tags=["brief"], ttl=0.3):
        chat("only short")
    time.sleep(0.4)
    assert not client.exists("hyg-d:t:brief")  # gone with its last entry


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_clear_match_selects_the_same_entries_on_both_backends(agentaccel_spans: SpanRecorder,
                                                               redis_server: RedisServer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               backend: str) -> None:
    url = redis_server.url if backend == "redis" else f"sqlite:///{tmp_path}/cli.db"
    agentaccel_spans.enable(cache={"backend": url, "namespace": "hyg-e"})
    for name in ("gpt", "gpt:4", "gpt:4:mini", "gpt-x", "gpt.x"):
        sync_model([], name)("q")
    agentaccel.disable()

    def clear(match: str) -> int:
        assert main(["cache", "clear", "--backend", url, "--namespace", "hyg-e", "--match", match, "--json"]) == 0
        deleted: int = json.loads(capsys.readouterr().out)["deleted"]
        return deleted

    assert clear("python/chat/gpt[!:]x") == 2  # gpt-x, gpt.x: one glob syntax ([!...] negates) on both
    assert clear("python/chat/gpt") == 1  # not gpt:4, although its key goes on with ':'
    assert clear("python/chat/gpt:4") == 1
    assert clear("python/chat/*") == 1  # gpt:4:mini

