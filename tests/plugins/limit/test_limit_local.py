"""The in-process limiter: real threads and real event loops in several threads share one limiter."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from agentaccel_limit import LimitExceeded, RuleConfig
from agentaccel_limit.feedback import Aimd
from agentaccel_limit.local import Limiter, Permit, Waiter


class Gauge:
    """Counts calls inside a section and remembers the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.total = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def take(limiter: Limiter, timeout: float | None = None, tokens: float = 0) -> Permit:
    got = limiter.acquire(tokens)
    return got.wait(timeout) if isinstance(got, Waiter) else got


async def atake(limiter: Limiter, timeout: float | None = None, tokens: float = 0) -> Permit:
    got = limiter.acquire(tokens)
    return await got.wait_async(timeout) if isinstance(got, Waiter) else got


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def test_threads_never_exceed_max_concurrency() -> None:
    limiter = Limiter(RuleConfig(name="c", max_concurrency=3))
    gauge = Gauge()

    def work(_: int) -> None:
        for _ in range(20):
            permit = take(limiter)
            gauge.enter()
            time.sleep(0.0005)
            gauge.leave()
            permit.release()

    run_threads(16, work)
    assert gauge.total == 320
    assert gauge.peak == 3
    assert limiter.in_flight == 0 and limiter.queued == 0


def test_threads_and_several_event_loops_share_one_limiter() -> None:
    limiter = Limiter(RuleConfig(name="mixed", max_concurrency=4))
    gauge = Gauge()

    async def one() -> None:
        permit = await atake(limiter)
        gauge.enter()
        await asyncio.sleep(0.001)
        gauge.leave()
        permit.release()

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(40)))

    def loop_thread(_: int) -> None:
        asyncio.run(many())

    def sync_thread(_: int) -> None:
        for _ in range(20):
            permit = take(limiter)
            gauge.enter()
            time.sleep(0.001)
            gauge.leave()
            permit.release()

    threads = [threading.Thread(target=loop_thread, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=sync_thread, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert gauge.total == 3 * 40 + 4 * 20
    assert gauge.peak == 4
    assert limiter.in_flight == 0 and limiter.queued == 0


def test_waiters_are_served_in_arrival_order() -> None:
    limiter = Limiter(RuleConfig(name="fifo", max_concurrency=1))
    first = take(limiter)
    served: list[int] = []
    waiters = [limiter.acquire() for _ in range(8)]  # queued in this order, from one thread
    assert all(isinstance(w, Waiter) for w in waiters)

    def wait(i: int) -> None:
        waiter = waiters[7 - i]  # the threads start waiting in reverse order: arrival order still wins
        assert isinstance(waiter, Waiter)
        permit = waiter.wait(10)
        served.append(waiters.index(waiter))
        permit.release()

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    first.release()
    for thread in threads:
        thread.join(10)
    assert served == list(range(8))


def test_a_waiter_is_not_overtaken_by_a_later_arrival() -> None:
    limiter = Limiter(RuleConfig(name="fair", max_concurrency=1))
    held = take(limiter)
    queued = limiter.acquire()
    held.release()  # hands the permit to the waiter, so a newcomer must queue behind
    assert isinstance(queued, Waiter) and queued.permit is not None
    late = limiter.acquire()
    assert isinstance(late, Waiter) and late.permit is None
    queued.wait(0).release()
    late.wait(1).release()


def test_queue_timeout_raises_limit_exceeded_naming_rule_limit_and_fix() -> None:
    limiter = Limiter(RuleConfig(name="openai", max_concurrency=2, queue_timeout=0.05))
    held = [take(limiter), take(limiter)]
    with pytest.raises(LimitExceeded) as info:
        take(limiter, timeout=0.05)
    error = info.value
    assert (error.rule, error.reason, error.limit) == ("openai", "queue_timeout", "max_concurrency=2")
    message = str(error)
    assert "limit rule 'openai' (max_concurrency=2)" in message
    assert "queue_timeout=0.05" in message
    assert "raise queue_timeout in [tool.agentaccel.limit] rule 'openai'" in message
    assert limiter.queued == 0
    for permit in held:
        permit.release()
    assert limiter.in_flight == 0


def test_a_full_queue_raises_at_once() -> None:
    limiter = Limiter(RuleConfig(name="q", max_concurrency=1, max_queue=2))
    held = take(limiter)
    waiting = [limiter.acquire(), limiter.acquire()]
    with pytest.raises(LimitExceeded) as info:
        limiter.acquire()
    assert info.value.reason == "queue_full"
    assert "max_queue=2" in str(info.value) and "raise max_queue" in str(info.value)
    held.release()
    for waiter in waiting:
        assert isinstance(waiter, Waiter)
        waiter.wait(1).release()


def test_a_cancelled_async_waiter_leaves_the_queue() -> None:
    limiter = Limiter(RuleConfig(name="cancel", max_concurrency=1))

    async def scenario() -> None:
        held = await atake(limiter)
        task = asyncio.create_task(atake(limiter))
        await asyncio.sleep(0.01)
        assert limiter.queued == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert limiter.queued == 0
        held.release()

    asyncio.run(scenario())
    assert limiter.in_flight == 0


def test_a_permit_handed_to_a_waiter_being_cancelled_comes_back() -> None:
    limiter = Limiter(RuleConfig(name="race", max_concurrency=1))

    async def scenario() -> None:
        held = await atake(limiter)
        task = asyncio.create_task(atake(limiter))
        await asyncio.sleep(0.01)
        held.release()  # granted to the task (woken, not yet run) ...
        task.cancel()  # ... and cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert limiter.in_flight == 0 and limiter.queued == 0


def test_rate_never_admits_more_than_rate_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = Limiter(RuleConfig(name="r", rate=5, interval=0.2))
    starts: list[float] = []
    grant = limiter._grant

    def record(tokens: float, now: float) -> Permit:
        # the admission instant itself (under the limiter's lock): a clock read by the caller after take()
        # returns can be late by however long a busy machine keeps that thread from running
        starts.append(now)
        return grant(tokens, now)

    monkeypatch.setattr(limiter, "_grant", record)

    def work(_: int) -> None:
        for _ in range(3):
            take(limiter).release()

    run_threads(5, work)
    assert len(starts) == 15
    # any 6 consecutive admissions span at least one interval
    assert all(starts[i + 5] - starts[i] >= 0.2 - 1e-9 for i in range(len(starts) - 5))


def test_tokens_per_minute_weighs_calls_and_takes_the_reported_usage() -> None:
    limiter = Limiter(RuleConfig(name="tpm", tokens_per_minute=1000))
    first = take(limiter, tokens=600)
    assert isinstance(limiter.acquire(500), Waiter)  # 1100 > 1000: waits for the window
    limiter2 = Limiter(RuleConfig(name="tpm2", tokens_per_minute=1000))
    estimate = take(limiter2, tokens=900)
    estimate.finish(True, False, None, 100)  # it really used 100
    assert isinstance(limiter2.acquire(800), Permit)
    first.release()


def test_a_call_bigger_than_the_token_budget_still_runs_alone() -> None:
    limiter = Limiter(RuleConfig(name="big", tokens_per_minute=100))
    assert isinstance(limiter.acquire(5000), Permit)


def test_a_429_pauses_the_rule_for_the_advertised_time() -> None:
    limiter = Limiter(RuleConfig(name="p", max_concurrency=4))
    permit = take(limiter)
    permit.finish(False, True, 0.2, None)
    waiter = limiter.acquire()
    assert isinstance(waiter, Waiter)  # paused, though nothing is in flight
    start = time.monotonic()
    waiter.wait(5).release()
    assert time.monotonic() - start >= 0.15  # woken by the alarm when the pause ends, not by a poll


def test_adaptive_rule_grows_while_calls_succeed_and_shrinks_on_429() -> None:
    limiter = Limiter(RuleConfig(name="a", adaptive=True))
    assert limiter.capacity == 4
    for _ in range(4):
        take(limiter).finish(True, False, None, None)
    assert limiter.capacity == 8  # slow start: one more per success
    permits = [take(limiter) for _ in range(8)]
    permits[-1].finish(False, True, None, None)  # the 8th concurrent call was refused
    assert limiter.capacity == 3  # the end of slow start: 0.5 * (8 - 1)
    permits[-2].finish(False, True, None, None)  # admitted before the decrease: no second cut
    assert limiter.capacity == 3
    for permit in permits[:-2]:
        permit.release()
    while limiter.capacity < 6:  # additive growth: about one per round trip
        take(limiter).finish(True, False, None, None)
    permits = [take(limiter) for _ in range(6)]
    permits[-1].finish(False, True, None, None)  # later 429s cut by 10 %
    assert limiter.capacity == 4 and limiter.aimd is not None and limiter.aimd.limit == 0.9 * 5
    for permit in permits[:-1]:
        permit.release()


def test_a_429_counts_the_calls_still_in_flight_not_only_the_admission_level() -> None:
    # Calls admitted together reach the provider in any order: here the first one admitted (level 1) is the one
    # refused, because the three admitted after it filled the provider first. Its 429 speaks of 4 calls.
    limiter = Limiter(RuleConfig(name="a", adaptive=True))
    permits = [take(limiter) for _ in range(4)]
    assert [p.level for p in permits] == [1, 2, 3, 4]
    permits[0].finish(False, True, None, None)
    assert limiter.aimd is not None and limiter.aimd.ceiling == 4
    assert limiter.aimd.limit == 0.5 * 3  # slow start ends at half of 4 - 1, not at the floor level 1 would give
    for permit in permits[1:]:
        permit.release()
    assert limiter.in_flight == 0


def test_aimd_probes_slowly_near_the_ceiling() -> None:
    aimd = Aimd(8, None)
    aimd.rate_limited(0, 9)  # ends slow start
    assert aimd.capacity == 4
    aimd.limit = 8.0
    aimd.rate_limited(1, 9)
    assert aimd.capacity == 7
    successes = 0
    while aimd.capacity < 9:
        aimd.succeeded()
        successes += 1
    assert successes > Aimd.PROBE * 7  # past ceiling - 1, about PROBE round trips (of ~8 calls) per step
    assert aimd.maximum is None


def test_adaptive_respects_max_concurrency() -> None:
    aimd = Aimd(3, 3)
    for _ in range(10):
        aimd.succeeded()
    assert aimd.capacity == 3
