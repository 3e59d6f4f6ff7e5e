"""The Redis backend against a real redis-server: leases, renewal, rate windows, outages, and real processes
sharing one rule."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from agentaccel_limit import LimitConfig, LimitExceeded, RuleConfig, snapshot
from agentaccel_limit.redis_backend import Lease, RedisBackend
from agentaccel_limit.rules import Rule
from limit_drive import adrive, drive

import agentaccel
from agentaccel.mockllm import MockLLM
from agentaccel.testing.pytest_plugin import SpanRecorder
from agentaccel.testing.redis_server import RedisServer

WORKER = str(Path(__file__).with_name("limit_worker.py"))


def backend(server: RedisServer, **settings: Any) -> RedisBackend:
    return RedisBackend(LimitConfig(backend=server.url, **settings))


def rule(**config: Any) -> Rule:
    return Rule(RuleConfig(**{"name": "shared", **config}), 0)


def acquire(b: RedisBackend, r: Rule) -> Lease | None:
    return drive(b.acquire(r, r.config.max_concurrency, time.perf_counter()))  # type: ignore[no-any-return]


def test_two_backends_share_one_semaphore(redis_server: RedisServer) -> None:
    one, two = backend(redis_server), backend(redis_server)
    r = rule(max_concurrency=2, queue_timeout=0.1)
    try:
        first, second = acquire(one, r), acquire(two, r)
        assert first is not None and second is not None
        with pytest.raises(LimitExceeded, match="shared through redis://"):
            acquire(one, r)
        two.release(second)
        assert acquire(one, r) is not None  # granted by the release, which tells the queued call
    finally:
        one.close()
        two.close()


def test_a_waiter_is_woken_by_a_release_from_another_process_view(redis_server: RedisServer) -> None:
    one, two = backend(redis_server), backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=5)
    try:
        held = acquire(one, r)
        assert held is not None
        got: list[Lease | None] = []
        waiter = threading.Thread(target=lambda: got.append(acquire(two, r)))
        waiter.start()
        time.sleep(0.05)
        assert got == []
        one.release(held)
        waiter.join(5)
        assert got and got[0] is not None
    finally:
        one.close()
        two.close()


def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_release_hands_its_place_to_the_longest_waiting_call(redis_server: RedisServer) -> None:
    import asyncio

    one, two = backend(redis_server), backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=10)
    leases, _, _, queue, _ = one.keys("shared")
    order: list[tuple[str, Lease | None]] = []
    pubsub = one.client.pubsub()  # type: ignore[no-untyped-call]
    try:
        held = acquire(one, r)
        assert held is not None
        # a thread waits through two (told in its own list), then a coroutine through one (told on one's channel)
        first = threading.Thread(target=lambda: order.append(("thread", acquire(two, r))))
        first.start()
        until(lambda: one.client.zcard(queue) == 1)
        second = threading.Thread(target=lambda: order.append(
            ("coroutine", asyncio.run(adrive(one.acquire(r, 1, time.perf_counter()))))))
        second.start()
        until(lambda: one.client.zcard(queue) == 2)
        pubsub.subscribe(one.channel)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        drive(one.give_back(held))
        # the release script itself granted the head of the queue, whatever its process was doing meanwhile
        granted = [bytes(m).decode() for m in cast(list[bytes], one.client.zrange(leases, 0, -1))]
        assert len(granted) == 1 and granted[0] != held.member and one.client.zcard(queue) == 1
        first.join(10)
        assert [(name, lease.member if lease else None) for name, lease in order] == [("thread", granted[0])]
        lease = order[0][1]
        assert lease is not None
        drive(two.give_back(lease))
        second.join(10)
        assert [name for name, _ in order] == ["thread", "coroutine"]
        last = order[1][1]
        assert last is not None and one.client.zscore(leases, last.member) is not None
        assert pubsub.get_message(timeout=5)["data"] == f"shared\n{last.member}\n1".encode()
        drive(one.give_back(last))
        assert one.client.zcard(leases) == 0 and one.client.zcard(queue) == 0
    finally:
        pubsub.close()
        one.close()
        two.close()


def test_queue_places_of_a_dead_process_come_back_within_its_lease(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=5)
    keys = b.keys("shared")
    try:
        held = acquire(b, r)
        assert held is not None
        # two calls of a process that then died: queued with 0.3 s places that nobody renews
        for ghost in ("ghost-1", "ghost-2"):
            assert b._acquire(keys=keys, args=[ghost, 1, 300, -1, 60000, b.channel, "shared"])[0] == 0
        drive(b.give_back(held))
        assert b.client.zscore(keys[0], "ghost-1") is not None  # its place had not expired yet: granted
        # ghost-1's lease runs out with its place (a lease from the grant would hold it for 10 s, past this
        # queue_timeout), and ghost-2's expired place is skipped
        assert acquire(b, r) is not None
        assert b.client.zcard(keys[3]) == 0 and b.client.hlen(keys[4]) == 0
    finally:
        b.close()


def test_a_waiter_that_gives_up_leaves_the_queue(redis_server: RedisServer) -> None:
    import asyncio

    one, two = backend(redis_server), backend(redis_server)
    leases, _, _, queue, _ = one.keys("shared")
    try:
        held = acquire(one, rule(max_concurrency=1))
        assert held is not None
        with pytest.raises(LimitExceeded):  # queued, then timed out
            acquire(two, rule(max_concurrency=1, queue_timeout=0.1))

        async def cancelled() -> None:
            task = asyncio.ensure_future(adrive(two.acquire(rule(max_concurrency=1), 1, time.perf_counter())))
            while not one.client.zcard(queue):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        until(lambda: one.client.zcard(queue) == 0)  # both left on the keeper thread
        drive(one.give_back(held))
        assert one.client.zcard(leases) == 0  # nobody who left was granted the place
        # a call that leaves after a release granted it its place gives that place back
        assert one._acquire(keys=one.keys("shared"), args=["late", 1, 10000, -1, 60000, one.channel, "shared"])[0] == 1
        assert one._acquire(keys=one.keys("shared"), args=["gone", 1, 10000, -1, 60000, one.channel, "shared"])[0] == 0
        one._release(keys=one.keys("shared"), args=["late", 10000, -1, 60000, "shared"])
        assert one.client.zscore(leases, "gone") is not None
        one._release(keys=one.keys("shared"), args=["gone", 10000, -1, 60000, "shared"])
        assert one.client.zcard(leases) == 0 and one.client.zcard(queue) == 0
    finally:
        one.close()
        two.close()


def test_async_acquire_on_several_loops(redis_server: RedisServer) -> None:
    import asyncio

    b = backend(redis_server)
    r = rule(max_concurrency=3, queue_timeout=5)
    gauge = {"now": 0, "peak": 0}
    lock = threading.Lock()

    async def one() -> None:
        lease = await adrive(b.acquire(r, 3, time.perf_counter()))
        with lock:
            gauge["now"] += 1
            gauge["peak"] = max(gauge["peak"], gauge["now"])
        await asyncio.sleep(0.002)
        with lock:
            gauge["now"] -= 1
        b.release(lease)

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(10)))

    try:
        loops = [threading.Thread(target=lambda: asyncio.run(many())) for _ in range(3)]
        for thread in loops:
            thread.start()
        for thread in loops:
            thread.join(30)
        assert gauge["peak"] <= 3
    finally:
        b.close()


def test_leases_are_renewed_while_the_call_runs(redis_server: RedisServer) -> None:
    one, two = backend(redis_server, lease_seconds=0.3, backend_timeout=0.1), backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=0.5)
    try:
        held = acquire(one, r)
        assert held is not None
        with pytest.raises(LimitExceeded):  # 0.5 s > the lease: only renewal keeps the permit taken
            acquire(two, r)
        one.release(held)
    finally:
        one.close()
        two.close()


def test_a_dead_holders_permits_come_back_after_the_lease(redis_server: RedisServer) -> None:
    dead, alive = backend(redis_server, lease_seconds=0.5, backend_timeout=0.1), backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=5)
    try:
        assert acquire(dead, r) is not None
        dead.close()  # stops renewing, as if the process had died
        assert acquire(alive, r) is not None  # within queue_timeout: the lease expired
    finally:
        alive.close()


def test_rate_window_is_shared(redis_server: RedisServer) -> None:
    one, two = backend(redis_server), backend(redis_server)
    r = rule(rate=3, interval=60, queue_timeout=0.05)
    try:
        for b in (one, two, one):
            assert acquire(b, r) is not None
        with pytest.raises(LimitExceeded):
            acquire(two, r)
    finally:
        one.close()
        two.close()


def test_a_retry_after_pauses_every_process(redis_server: RedisServer) -> None:
    one, two = backend(redis_server), backend(redis_server)
    r = rule(max_concurrency=5, queue_timeout=0.1)
    try:
        one.pause("shared", 30)
        time.sleep(0.1)  # the keeper thread sends it
        with pytest.raises(LimitExceeded):
            acquire(two, r)
    finally:
        one.close()
        two.close()


def test_backend_down_open_falls_back_and_closed_refuses(redis_server: RedisServer) -> None:
    agentaccel.enable(limit={"backend": redis_server.url, "breaker_failures": 1, "breaker_reset_seconds": 0.1,
                             "rules": [{"name": "lenient", "tool": "open_*", "max_concurrency": 2},
                                       {"name": "strict", "tool": "closed_*", "max_concurrency": 2,
                                        "on_backend_error": "closed"}]})

    @agentaccel.accelerate
    def open_tool() -> str:
        return "ok"

    @agentaccel.accelerate
    def closed_tool() -> str:
        return "ok"

    assert (open_tool(), closed_tool()) == ("ok", "ok")
    redis_server.stop()
    assert open_tool() == "ok"
    with pytest.raises(LimitExceeded) as info:
        closed_tool()
    assert info.value.reason == "backend" and info.value.rule == "strict"
    assert "on_backend_error = \"open\"" in str(info.value) and redis_server.url in str(info.value)
    assert snapshot()["strict"]["in_flight"] == 0
    redis_server.start()
    deadline = time.monotonic() + 10
    while True:  # the breaker lets a trial through after breaker_reset_seconds
        try:
            assert closed_tool() == "ok"
            break
        except LimitExceeded:
            assert time.monotonic() < deadline, "the breaker never closed again"
            time.sleep(0.05)


def test_processes_sharing_a_rule_never_exceed_it(redis_server: RedisServer, mock_llm: MockLLM,
                                                  subprocess_env: dict[str, str]) -> None:
    mock_llm.configure(max_concurrency=2, latency=0.01)
    env = {**subprocess_env, "AGENTACCEL_DISABLE_PLUGINS": "cache"}
    children = [subprocess.Popen([sys.executable, WORKER, "calls", redis_server.url, mock_llm.url, "6", "4"],
                                 env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    summaries = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0]
    assert [s["errors"] for s in summaries] == [[], [], []]
    counters = mock_llm.counters()
    assert counters["admitted"] == 72
    assert counters["rate_limited"] == 0
    assert counters["in_flight_peak"] == 2


def test_a_killed_process_gives_its_permits_back_within_the_lease(redis_server: RedisServer,
                                                                  subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "AGENTACCEL_DISABLE_PLUGINS": "cache"}
    child = subprocess.Popen([sys.executable, WORKER, "hold", redis_server.url, "1.0", "2"], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        agentaccel.enable(limit={"backend": redis_server.url, "lease_seconds": 1.0, "rules": [
            {"name": "shared", "provider": "openai", "max_concurrency": 2, "queue_timeout": 1.5}]})
        call = agentaccel.wrap(lambda: "ok", operation="chat", name="probe", provider="openai")
        with pytest.raises(LimitExceeded):  # renewed leases: the live child keeps both permits
            call()
        child.kill()
        child.wait()
        assert call() == "ok"  # the dead child's leases expired within queue_timeout
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_the_probe_that_finds_redis_back_closes_the_breaker(redis_server: RedisServer) -> None:
    # A call granted at once by the half-open probe must close the breaker: otherwise every call but one per
    # breaker_reset_seconds keeps being refused (closed rules) or unshared (open rules) with Redis back up.
    b = backend(redis_server, breaker_failures=1, breaker_reset_seconds=0.05)
    r = rule(max_concurrency=2, on_backend_error="closed")
    try:
        redis_server.stop()
        with pytest.raises(LimitExceeded):
            acquire(b, r)
        redis_server.start()
        until(lambda: b.breaker.state == "half-open")
        lease = acquire(b, r)
        assert lease is not None
        assert b.breaker.state == "closed"
        second = acquire(b, r)  # not refused as if Redis were still down
        assert second is not None
        for held in (lease, second):
            drive(b.give_back(held))
        assert b.client.zcard(b.keys("shared")[0]) == 0
    finally:
        b.close()


def test_a_lease_given_back_while_the_breaker_is_open_is_still_released(redis_server: RedisServer) -> None:
    b = backend(redis_server, breaker_failures=1, breaker_reset_seconds=60)
    r = rule(max_concurrency=1)
    leases = b.keys("shared")[0]
    try:
        lease = acquire(b, r)
        assert lease is not None
        b.breaker.failure()  # another call's round trip failed meanwhile: the breaker is open for a minute
        drive(b.give_back(lease))
        until(lambda: b.client.zcard(leases) == 0)  # not left to block the rule until the lease expires
    finally:
        b.close()


def test_a_coroutine_cancelled_during_its_first_round_trip_leaves_no_place_behind(redis_server: RedisServer) -> None:
    import asyncio

    b = backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=3)
    leases, _, _, queue, waiting = b.keys("shared")
    script = b._acquire
    sent, reply, ran = threading.Event(), threading.Event(), threading.Event()

    def slow(**kwargs: Any) -> Any:  # a round trip still on its way when the coroutine is cancelled
        sent.set()
        reply.wait(5)
        try:
            return script(**kwargs)
        finally:
            ran.set()

    try:
        held = acquire(b, r)
        assert held is not None

        async def cancelled() -> None:
            b._acquire = slow  # type: ignore[method-assign]
            task = asyncio.ensure_future(adrive(b.acquire(r, 1, time.perf_counter())))
            while not sent.is_set():
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            b._acquire = script  # type: ignore[method-assign]
            reply.set()  # the script runs now, after the call is gone: it joins the queue nonetheless

        asyncio.run(cancelled())
        assert ran.wait(5)  # the late script has run (in the executor): only now is the queue's state final
        until(lambda: b.client.zcard(queue) == 0 and b.client.hlen(waiting) == 0)
        drive(b.give_back(held))
        assert b.client.zcard(leases) == 0  # the place was not granted to the call that left
        assert acquire(b, r) is not None
    finally:
        reply.set()
        b.close()


def test_a_round_trip_whose_reply_is_lost_leaves_no_place_behind(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    r = rule(max_concurrency=1, queue_timeout=1)
    leases, _, _, queue, _ = b.keys("shared")
    script = b._acquire

    def lost(**kwargs: Any) -> Any:  # the script ran, then the connection failed before its reply came back
        script(**kwargs)
        raise redis.TimeoutError("Timeout reading from socket")

    try:
        held = acquire(b, r)
        assert held is not None
        b._acquire = lost  # type: ignore[method-assign]
        assert acquire(b, r) is None  # on_backend_error = "open": it goes on under the in-process limit
        b._acquire = script  # type: ignore[method-assign]
        until(lambda: b.client.zcard(queue) == 0)
        drive(b.give_back(held))
        assert b.client.zcard(leases) == 0  # not granted to that call, which will never give it back
    finally:
        b.close()


def test_leases_are_renewed_while_the_keeper_has_a_backlog(redis_server: RedisServer) -> None:
    # Releases and pauses queue up on the keeper (many calls timing out, a slow Redis): they must not starve the
    # renewals, or a live holder's permit expires and another process takes it.
    one, two = backend(redis_server, lease_seconds=1.5, backend_timeout=0.1), backend(redis_server)
    try:
        held = acquire(one, rule(max_concurrency=1))
        assert held is not None
        for _ in range(150):  # 3 s of slow jobs, always one waiting
            one._jobs.put(partial(time.sleep, 0.02))
        with pytest.raises(LimitExceeded):
            acquire(two, rule(max_concurrency=1, queue_timeout=2.5))
        one.release(held)
    finally:
        one.close()
        two.close()


def test_a_call_that_waited_for_a_shared_permit_is_marked_queued(agentaccel_spans: SpanRecorder,
                                                                 redis_server: RedisServer) -> None:
    agentaccel_spans.enable(limit={"backend": redis_server.url, "rules": [
        {"name": "shared", "tool": "probe", "max_concurrency": 1, "queue_timeout": 5}]})
    other = backend(redis_server)  # another process holds the only shared permit
    queue = other.keys("shared")[3]
    try:
        held = acquire(other, rule(max_concurrency=1))
        assert held is not None

        @agentaccel.accelerate
        def probe() -> str:
            return "ok"

        waiter = threading.Thread(target=probe)
        waiter.start()
        until(lambda: other.client.zcard(queue) == 1)
        drive(other.give_back(held))
        waiter.join(5)
    finally:
        other.close()
    (span,) = agentaccel_spans.spans()
    assert span.attributes["agentaccel.limit.queued"] is True  # it waited in Redis' queue, not in the process
