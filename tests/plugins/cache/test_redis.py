"""L2 on a real redis-server: hits per layer, promotion, planted and tampered entries, outages and recovery."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from agentaccel_cache.values import MAGIC
from cache_helpers import cache, results

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder
from agentaccel.testing.redis_server import RedisServer


def model(calls: list[str], name: str = "redis-model") -> Any:
    @agentaccel.accelerate(operation=agentaccel.CHAT, name=name)
    def chat(q: str) -> dict[str, str]:
        calls.append(q)
        return {"answer": q.upper()}

    return chat


def entry_keys(client: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{namespace}:e:*"))


def test_l2_hit_promotion_and_layers(agentaccel_spans: SpanRecorder, redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t1"})
    calls: list[str] = []
    chat = model(calls)
    assert chat("a") == {"answer": "A"}
    client = redis.Redis.from_url(redis_server.url)
    assert [k.split(b":")[:2] for k in entry_keys(client, "t1")] == [[b"t1", b"e"]]  # prefix = namespace
    cache().l1.clear()  # as in another process: only L2 has it
    assert chat("a") == {"answer": "A"}
    assert chat("a") == {"answer": "A"}  # promoted: served by L1 now
    assert calls == ["a"]
    spans = agentaccel_spans.spans()
    assert results(spans) == ["miss", "hit", "hit"]
    assert [s.attributes.get("agentaccel.cache.layer") for s in spans] == [None, "l2", "l1"]


def test_async_l2_hit(agentaccel_spans: SpanRecorder, redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t2"})
    calls: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="async-redis")
    async def achat(q: str) -> list[str]:
        calls.append(q)
        return [q]

    assert asyncio.run(achat("x")) == ["x"]
    cache().l1.clear()
    assert asyncio.run(achat("x")) == ["x"]  # a new event loop: its own asyncio client
    assert calls == ["x"]
    assert agentaccel_spans.spans()[-1].attributes["agentaccel.cache.layer"] == "l2"


def test_l2_ttl_expiry(agentaccel_spans: SpanRecorder, redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t3", "max_bytes": 0})
    calls: list[str] = []
    chat = model(calls)
    with agentaccel.options(ttl=0.3):
        chat("a")
    chat("a")
    assert calls == ["a"]
    client = redis.Redis.from_url(redis_server.url)
    assert 0 < client.pttl(entry_keys(client, "t3")[0]) <= 300
    time.sleep(0.4)
    chat("a")
    assert calls == ["a", "a"]


class Exploit:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_planted_pickle_payload_is_a_miss_and_runs_nothing(agentaccel_spans: SpanRecorder,
                                                           redis_server: RedisServer, tmp_path: Path) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t4"})
    calls: list[str] = []
    chat = model(calls)
    chat("a")
    client = redis.Redis.from_url(redis_server.url)
    (key,) = entry_keys(client, "t4")
    marker = tmp_path / "pwned"
    client.set(key, pickle.dumps(Exploit(marker)))
    cache().l1.clear()
    assert chat("a") == {"answer": "A"}
    assert calls == ["a", "a"] and not marker.exists()
    assert cache().stats.invalid_entries == 1
    assert client.get(key).startswith(MAGIC)  # the miss stored a good entry over it


@pytest.mark.parametrize("planted", [
    MAGIC + b"u",  # no head
    MAGIC + b"u" + b"\0" * 20,  # a head cut short
    MAGIC + b"u" + struct.pack("<BdQQd", 2, 0.1, 0, 0, 1e12) + b"{}",  # stream flag neither 0 nor 1
    MAGIC + b"u" + struct.pack("<BdQQd", 0, 0.1, 0, 0, math.inf) + b"{}",  # an expiry that never comes
    MAGIC + b"u" + struct.pack("<BdQQd", 0, math.nan, 0, 0, 1e12) + b"{}",  # a duration that is no number
    MAGIC + b"u" + struct.pack("<BdQQd", 1, 0.1, 0, 0, 1e12) + b"{}",  # a stream whose chunks are no list
    MAGIC + b"u" + struct.pack("<BdQQd", 0, 0.1, 0, 0, 1e12) + b"{not json",
    b"aac1u{}\n{}",  # the earlier stored form: read as not ours, replaced
], ids=["empty", "short-head", "stream-flag", "inf-expiry", "nan-duration", "stream-not-list", "bad-json", "aac1"])
def test_malformed_entries_are_counted_misses_and_replaced(agentaccel_spans: SpanRecorder,
                                                          redis_server: RedisServer, planted: bytes) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t4m", "max_bytes": 0})
    calls: list[str] = []
    chat = model(calls)
    chat("a")
    client = redis.Redis.from_url(redis_server.url)
    (key,) = entry_keys(client, "t4m")
    client.set(key, planted)
    assert chat("a") == {"answer": "A"}
    assert calls == ["a", "a"]
    assert cache().stats.invalid_entries == 1
    assert chat("a") == {"answer": "A"} and calls == ["a", "a"]  # the good entry stored over it serves


class StrictCodec:
    """A codec whose decode validates (as an adapter's must for data from a shared store) and whose rebuild
    does not; it records which one served."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, data: Any) -> Any:
        self.used.append("decode")
        if not isinstance(data, dict) or not isinstance(data.get("answer"), str):
            raise agentaccel.CodecError(f"not an answer: {data!r}")
        return data

    def rebuild(self, data: Any) -> Any:
        self.used.append("rebuild")
        return data


def test_l2_entries_decode_with_validation_before_l1_hits_skip_it(agentaccel_spans: SpanRecorder,
                                                                   redis_server: RedisServer) -> None:
    codec = StrictCodec()
    calls: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="strict", codec=codec)
    def chat(q: str) -> dict[str, Any]:
        calls.append(q)
        return {"answer": q.upper()}

    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t9"})
    chat("a"), chat("a")
    assert codec.used == ["rebuild"]  # the L1 hit: data this codec made
    cache().l1.clear()
    codec.used.clear()
    chat("a"), chat("a")
    assert codec.used == ["decode", "rebuild"]  # from L2 through decode, then from L1
    # An entry in the right format whose data the codec rejects: a miss, counted, and never reaches L1.
    client = redis.Redis.from_url(redis_server.url)
    (key,) = entry_keys(client, "t9")
    client.set(key, client.get(key).replace(b'"answer":"A"', b'"answer":7'))
    cache().l1.clear()
    assert chat("a") == {"answer": "A"} and calls == ["a", "a"]
    assert cache().stats.invalid_entries == 1
    assert chat("a") == {"answer": "A"} and calls == ["a", "a"]  # the fresh answer, from L1


def test_tampered_and_unsigned_entries_are_misses_when_signing(agentaccel_spans: SpanRecorder,
                                                               redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t5"})
    calls: list[str] = []
    chat = model(calls)
    chat("unsigned")
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t5", "secret": "s3cret"})
    assert chat("unsigned") == {"answer": "UNSIGNED"} and calls == ["unsigned", "unsigned"]
    assert cache().stats.invalid_entries == 1

    chat("signed")
    keys_now = entry_keys(client, "t5")
    signed = {k: client.get(k) for k in keys_now}
    target = next(k for k, v in signed.items() if b"SIGNED" in v and b"UNSIGNED" not in v)
    client.set(target, signed[target].replace(b"SIGNED", b"HACKED"))
    cache().l1.clear()
    assert chat("signed") == {"answer": "SIGNED"}
    assert calls.count("signed") == 2
    assert cache().stats.invalid_entries == 2

    # A valid entry copied under another key (say, another tenant's) fails too: the MAC covers the key.
    with agentaccel.scope(tenant="victim"):
        chat("signed")
    victim = next(k for k in entry_keys(client, "t5") if k not in signed)
    client.set(victim, client.get(target))
    cache().l1.clear()
    with agentaccel.scope(tenant="victim"):
        chat("signed")
    assert cache().stats.invalid_entries == 3


def test_redis_outage_never_fails_a_call_and_recovery(agentaccel_spans: SpanRecorder,
                                                      redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t6", "breaker_failures": 2,
                                   "breaker_reset": 0.3})
    calls: list[str] = []
    chat = model(calls)
    chat("before")
    redis_server.stop()
    for i in range(20):
        assert chat(f"q{i % 5}") == {"answer": f"Q{i % 5}"}  # L1 still serves what it holds
    assert calls.count("q0") == 1
    breaker = cache().breaker
    assert breaker.opened >= 1 and breaker.state != "closed"
    assert cache().stats.backend_errors >= 2

    async def during_outage() -> Any:
        return await asyncio.gather(*(_async_model(str(i)) for i in range(5)))

    assert asyncio.run(during_outage()) == [[str(i)] for i in range(5)]

    redis_server.start()  # same port
    time.sleep(0.35)  # the breaker's open period
    chat("after")  # the probe succeeds: L2 is used again
    assert breaker.state == "closed"
    client = redis.Redis.from_url(redis_server.url)
    assert len(entry_keys(client, "t6")) == 1
    cache().l1.clear()
    chat("after")
    assert agentaccel_spans.spans()[-1].attributes["agentaccel.cache.layer"] == "l2"
    assert calls.count("after") == 1


@agentaccel.accelerate(operation=agentaccel.CHAT, name="async-outage")
async def _async_model(q: str) -> list[str]:
    return [q]


def test_killed_redis_mid_run(agentaccel_spans: SpanRecorder, redis_server: RedisServer) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t7"})
    chat = model([])
    chat("a")
    redis_server.kill()
    assert [chat(q) for q in "abcdef"] == [{"answer": q.upper()} for q in "abcdef"]
    assert "error" in results(agentaccel_spans.spans())


def test_unreachable_redis_at_enable_is_not_an_error(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache={"backend": "redis://127.0.0.1:1/0", "namespace": "t8"})
    calls: list[str] = []
    chat = model(calls)
    assert chat("a") == chat("a") == {"answer": "A"}
    assert calls == ["a"]


@pytest.mark.parametrize("stream_kind", ["sync", "async"])
def test_stream_replay_from_l2(agentaccel_spans: SpanRecorder, redis_server: RedisServer, stream_kind: str) -> None:
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t9", "max_bytes": 0})
    chunks = [{"delta": "a"}, {"delta": "b"}, {"delta": "c", "finish_reason": "stop"}]
    calls: list[int] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="sync-stream")
    def stream(q: str) -> Any:
        calls.append(1)
        yield from chunks

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="async-stream")
    async def astream(q: str) -> Any:
        calls.append(1)
        for chunk in chunks:
            yield chunk

    async def consume() -> list[Any]:
        return [c async for c in astream("q")]

    def read() -> list[Any]:
        return list(stream("q")) if stream_kind == "sync" else asyncio.run(consume())

    assert read() == read() == chunks
    assert calls == [1]
    assert agentaccel_spans.spans()[-1].attributes["agentaccel.cache.layer"] == "l2"


def test_a_sync_call_on_an_event_loops_thread_does_not_wait_for_a_lease_held_by_that_loop(
        agentaccel_spans: SpanRecorder, redis_server: RedisServer) -> None:
    # Sync code inside a coroutine, asking what a task of the same loop is asking: waiting for that task's Redis
    # lease would block the loop the task needs to finish, for the whole lease.
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t10", "lease": 20})
    events: list[str] = []

    def same_request(call: agentaccel.Call) -> dict[str, Any]:
        return {"q": call.args[0]}

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="shared", request=same_request)
    async def leader(q: str) -> str:
        events.append("leader upstream")
        await asyncio.sleep(0.2)
        return q

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="shared", request=same_request)
    def sync_on_loop(q: str) -> str:
        events.append("sync upstream")
        return q

    async def main() -> float:
        leading = asyncio.ensure_future(leader("q"))
        await asyncio.sleep(0.05)  # the leader holds the in-process flight and the Redis lease
        start = time.monotonic()
        assert sync_on_loop("q") == "q"
        elapsed = time.monotonic() - start
        assert await leading == "q"
        return elapsed

    elapsed = asyncio.run(main())
    assert events == ["leader upstream", "sync upstream"]
    assert elapsed < 10  # not the 20 s lease: the sync call went upstream at once


def test_a_silent_redis_costs_a_miss_one_failed_operation(agentaccel_spans: SpanRecorder) -> None:
    # A server that accepts connections and never answers: each Redis operation waits out `timeout`. After the
    # lookup failed, storing the result would wait out another.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        agentaccel_spans.enable(cache={"backend": f"redis://127.0.0.1:{port}/0", "namespace": "t11",
                                       "timeout": 0.2, "breaker_failures": 10})
        calls: list[str] = []
        chat = model(calls)
        assert chat("a") == {"answer": "A"}
        assert cache().stats.backend_errors == 1
        assert chat("b") == {"answer": "B"}
        assert cache().stats.backend_errors == 2
        assert calls == ["a", "b"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_redis_restart_costs_no_failed_lookup(agentaccel_spans: SpanRecorder, redis_server: RedisServer,
                                                kind: str) -> None:
    # The lookup's connections skip the pool's check for a closed connection: one the restarted server closed
    # must cost a reconnect, not an L2 error (a breaker failure, a lost hit).
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": f"t12{kind}", "max_bytes": 0})
    calls: list[str] = []
    chat = model(calls, name=f"restart-{kind}")

    @agentaccel.accelerate(operation=agentaccel.CHAT, name=f"restart-{kind}")
    async def achat(q: str) -> dict[str, str]:
        calls.append(q)
        return {"answer": q.upper()}

    with asyncio.Runner() as runner:  # one loop throughout: its connections outlive the old server
        def ask(q: str) -> Any:
            return chat(q) if kind == "sync" else runner.run(achat(q))

        assert [ask(q) for q in "aab"] == [{"answer": q} for q in "AAB"]
        redis_server.restart()  # the data is gone with the old server, and the connections to it are closed
        assert [ask(q) for q in "aa"] == [{"answer": "A"}] * 2
    assert cache().stats.backend_errors == 0
    assert results(agentaccel_spans.spans()) == ["miss", "hit", "miss", "miss", "hit"]
    assert calls == ["a", "b", "a"]


def test_a_forked_child_gets_connections_of_its_own(agentaccel_spans: SpanRecorder,
                                                    redis_server: RedisServer) -> None:
    # Parent and child asking L2 at once on a shared socket would read each other's replies.
    agentaccel_spans.enable(cache={"backend": redis_server.url, "namespace": "t13", "max_bytes": 0})
    chat = model([])
    for q in ("parent", "child"):
        chat(q)  # stored in L2; the parent keeps an idle connection
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if every answer was its own and L2 never failed
        ok = all(chat("child") == {"answer": "CHILD"} for _ in range(300))
        os._exit(0 if ok and cache().stats.backend_errors == 0 else 1)
    answers = [chat("parent") for _ in range(300)]
    deadline = time.monotonic() + 60  # a child stuck on a lock another thread held at the fork must not hang CI
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if ended[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish in 60 s")
    assert os.waitstatus_to_exitcode(ended[1]) == 0
    assert answers == [{"answer": "PARENT"}] * 300
    assert cache().stats.backend_errors == 0
    assert results(agentaccel_spans.spans())[-300:] == ["hit"] * 300
