"""Concurrent identical misses make one upstream call, for threads and for asyncio tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cache_helpers import cache, results

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder


def test_100_threads_make_one_upstream_call(agentaccel_spans: SpanRecorder) -> None:
    upstream: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(100)

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="slow")
    def slow(q: str) -> dict[str, str]:
        with lock:
            upstream.append(1)
        time.sleep(0.2)
        return {"answer": q}

    def call() -> Any:
        start.wait()
        return slow("same")

    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda _: call(), range(100)))
    assert len(upstream) == 1
    assert answers == [{"answer": "same"}] * 100
    assert len({id(a) for a in answers}) == 100  # each caller got its own object
    seen = results(agentaccel_spans.spans())
    assert seen.count("miss") == 1 and seen.count("coalesced") + seen.count("hit") == 99


def test_a_call_that_missed_l1_as_the_leader_finished_makes_no_second_call(agentaccel_spans: SpanRecorder) -> None:
    # The window: this call's L1 lookup misses, then the leader stores its entry and leaves the flight, then this
    # call joins and leads a flight of its own. Simulated by hiding the entry from the first lookup only.
    upstream: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="late")
    def late(q: str) -> dict[str, str]:
        upstream.append(q)
        return {"answer": q}

    late("same")
    l1 = cache().l1
    lookups: list[bool] = []

    def first_lookup_misses(key: bytes) -> Any:
        lookups.append(True)
        return None if len(lookups) == 1 else type(l1).hit(l1, key)

    l1.hit = first_lookup_misses  # type: ignore[method-assign]
    assert late("same") == {"answer": "same"}
    assert upstream == ["same"] and len(lookups) == 2
    assert results(agentaccel_spans.spans()) == ["miss", "hit"]


def test_100_tasks_make_one_upstream_call(agentaccel_spans: SpanRecorder) -> None:
    upstream: list[int] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="aslow")
    async def aslow(q: str) -> dict[str, str]:
        upstream.append(1)
        await asyncio.sleep(0.1)
        return {"answer": q}

    async def main() -> list[Any]:
        return await asyncio.gather(*(aslow("same") for _ in range(100)))

    answers = asyncio.run(main())
    assert len(upstream) == 1 and answers == [{"answer": "same"}] * 100
    assert results(agentaccel_spans.spans()).count("coalesced") == 99


def test_threads_and_tasks_share_one_flight(agentaccel_spans: SpanRecorder) -> None:
    upstream: list[str] = []
    entered = threading.Event()

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="shared", request=same_request)
    def sync_model(q: str) -> str:
        upstream.append("sync")
        entered.set()
        time.sleep(0.2)
        return q

    async_model = agentaccel.wrap(_async_twin, operation=agentaccel.CHAT, name="shared", request=same_request)

    with ThreadPoolExecutor(1) as pool:
        leader = pool.submit(sync_model, "q")
        entered.wait()

        async def main() -> list[str]:
            return await asyncio.gather(*(async_model("q") for _ in range(10)))

        assert asyncio.run(main()) == ["q"] * 10
        assert leader.result() == "q"
    assert upstream == ["sync"]


def same_request(call: agentaccel.Call) -> dict[str, Any]:
    return {"q": call.args[0]}  # the sync and the async function are the same model call


async def _async_twin(q: str) -> str:
    raise AssertionError("the waiting tasks never call upstream")


def test_waiters_try_again_when_the_leader_fails(agentaccel_spans: SpanRecorder) -> None:
    upstream: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="fails-once")
    def flaky(q: str) -> str:
        with lock:
            upstream.append(1)
            first = len(upstream) == 1
        time.sleep(0.1)
        if first:
            raise RuntimeError("provider error")
        return q

    def call() -> str:
        start.wait()
        try:
            return flaky("q")
        except RuntimeError:
            return "error"

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: call(), range(20)))
    assert answers.count("error") == 1 and answers.count("q") == 19
    assert len(upstream) == 2  # the failure is not shared, and the retry is not a stampede


def test_a_sync_call_on_the_leaders_event_loop_does_not_wait_for_it(agentaccel_spans: SpanRecorder) -> None:
    # The async leader cannot finish until the sync call made on its own loop returns; waiting would deadlock the
    # loop until the lease ran out. The sync call must call upstream itself instead.
    upstream: list[str] = []
    release = asyncio.Event()

    async def leader_model(q: str) -> str:
        upstream.append("async")
        await release.wait()
        return q

    def sync_model(q: str) -> str:
        upstream.append("sync")
        return q

    async_model = agentaccel.wrap(leader_model, operation=agentaccel.CHAT, name="loop", request=same_request)
    sync_on_loop = agentaccel.wrap(sync_model, operation=agentaccel.CHAT, name="loop", request=same_request)

    async def main() -> tuple[str, str]:
        leading = asyncio.ensure_future(async_model("q"))
        await asyncio.sleep(0)  # the leader has joined the flight and is waiting on `release`
        answer = sync_on_loop("q")  # sync code running on the loop's thread
        release.set()
        return answer, await leading

    outcome: list[tuple[str, str]] = []
    runner = threading.Thread(target=lambda: outcome.append(asyncio.run(main())), daemon=True)
    runner.start()
    runner.join(30)  # a regression deadlocks the loop until the cache's lease (60 s) runs out
    assert not runner.is_alive(), "the sync call blocked its own event loop waiting for the async leader"
    assert outcome == [("q", "q")]
    assert upstream == ["async", "sync"]
