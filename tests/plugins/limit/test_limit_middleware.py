"""The ``limit`` middleware in the real pipeline: matching, spans, metrics, release on every path."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from agentaccel_limit import LimitExceeded, snapshot

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder


def in_flight(rule: str) -> int | None:
    return snapshot()[rule]["in_flight"]


def chat(model: str = "gpt-4o-mini", provider: str = "openai") -> Any:
    """A model call whose normalized request carries ``model``."""

    def request(call: agentaccel.Call) -> dict[str, Any]:
        return {"model": call.kwargs.get("model", model), "messages": [{"role": "user", "content": "hi"}]}

    def complete(**kwargs: Any) -> str:
        return "ok"

    return agentaccel.wrap(complete, operation="chat", name="complete", provider=provider, request=request,
                           framework="demo")


@contextlib.contextmanager
def one_held(rule: str) -> Iterator[Any]:
    """A thread holding one permit of ``rule`` (through the tool ``hold``) until the block ends; yields ``hold``."""
    release = threading.Event()

    @agentaccel.accelerate
    def hold() -> None:
        release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    while in_flight(rule) != 1:
        time.sleep(0.001)
    try:
        yield hold
    finally:
        release.set()
        holder.join()


def test_span_attributes_name_the_rule_and_the_wait(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "tools", "tool": "search", "max_concurrency": 1}]})
    release = threading.Event()

    @agentaccel.accelerate
    def search(q: str) -> str:
        release.wait(5)
        return q

    first = threading.Thread(target=search, args=("a",))
    first.start()
    while in_flight("tools") != 1:
        time.sleep(0.001)
    second = threading.Thread(target=search, args=("b",))
    second.start()
    while snapshot()["tools"]["queued"] != 1:
        time.sleep(0.001)
    release.set()
    first.join()
    second.join()
    spans = agentaccel_spans.spans()
    assert [s.attributes["agentaccel.limit.rule"] for s in spans] == ["tools", "tools"]
    queued = sorted(bool(s.attributes["agentaccel.limit.queued"]) for s in spans)
    assert queued == [False, True]
    waited = max(spans, key=lambda s: s.attributes["agentaccel.limit.wait_ms"])  # type: ignore[arg-type,return-value]
    assert waited.attributes["agentaccel.limit.queued"] is True
    assert in_flight("tools") == 0


def test_rules_match_by_framework_operation_provider_model_and_tool(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [
        {"name": "mini", "model": "gpt-4o-mini*", "max_concurrency": 5},
        {"name": "anthropic", "provider": "anthropic", "max_concurrency": 5},
        {"name": "demo-chat", "framework": "demo", "operation": "chat", "max_concurrency": 5},
        {"name": "tool", "tool": "sea*", "max_concurrency": 5},
    ]})
    chat()(model="gpt-4o-mini-2024")
    chat(provider="anthropic")(model="claude")

    @agentaccel.accelerate
    def search() -> None:
        return None

    @agentaccel.accelerate
    def fetch() -> None:
        return None

    search()
    fetch()
    rules = {s.name: s.attributes.get("agentaccel.limit.rule") for s in agentaccel_spans.spans()}
    assert rules == {"chat gpt-4o-mini-2024": "mini, demo-chat", "chat claude": "anthropic, demo-chat",
                     "execute_tool search": "tool", "execute_tool fetch": None}


def test_targets_no_rule_can_match_do_not_get_the_middleware(agentaccel_spans: SpanRecorder) -> None:
    rt = agentaccel_spans.enable(limit={"rules": [{"name": "llm", "operation": "chat", "max_concurrency": 1}]})
    tool = agentaccel.Target(framework="python", operation="execute_tool", name="t", mode=agentaccel.Mode.SYNC)
    model = agentaccel.Target(framework="python", operation="chat", name="m", mode=agentaccel.Mode.SYNC)
    assert "limit" not in [mw.name for mw in rt.chain(tool)]
    assert [mw.name for mw in rt.chain(model)] == ["tracing", "limit"]


def test_no_rules_means_no_middleware(agentaccel_spans: SpanRecorder) -> None:
    rt = agentaccel_spans.enable()
    assert "limit" not in [mw.name for mw in rt.middleware]


def test_a_call_matching_two_rules_takes_both_permits_in_the_global_order(agentaccel_spans: SpanRecorder) -> None:
    # Two rules of one permit each, matched by overlapping sets of calls: acquiring in one global order means
    # no two calls can each hold one permit while waiting for the other.
    agentaccel_spans.enable(limit={"rules": [{"name": "a", "tool": "*", "max_concurrency": 1},
                                             {"name": "b", "tool": "both", "max_concurrency": 1}]})
    gauge = {"now": 0, "peak": 0}
    lock = threading.Lock()

    @agentaccel.accelerate
    def both() -> None:
        with lock:
            gauge["now"] += 1
            gauge["peak"] = max(gauge["peak"], gauge["now"])
        time.sleep(0.0005)
        with lock:
            gauge["now"] -= 1

    @agentaccel.accelerate
    def one() -> None:
        time.sleep(0.0005)

    def work(i: int) -> None:
        for _ in range(25):
            (both if i % 2 else one)()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert gauge["peak"] == 1
    assert snapshot() == {"a": {"in_flight": 0, "queued": 0, "capacity": 1},
                          "b": {"in_flight": 0, "queued": 0, "capacity": 1}}


def test_limit_exceeded_reaches_the_caller_and_the_span(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "slow", "tool": "hold", "max_concurrency": 1,
                                              "queue_timeout": 0.05}]})
    with one_held("slow") as hold, pytest.raises(
            LimitExceeded, match=r"limit rule 'slow' \(max_concurrency=1\): no permit after waiting"):
        hold()
    refused = [s for s in agentaccel_spans.spans() if s.attributes.get("error.type")]
    assert [s.attributes["error.type"] for s in refused] == ["LimitExceeded"]
    assert refused[0].attributes["agentaccel.limit.queued"] is True
    assert in_flight("slow") == 0
    metrics = agentaccel_spans.metric_reader.get_metrics_data()
    points = {m.name: list(m.data.data_points) for rm in metrics.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics}
    assert [(dict(p.attributes), p.value) for p in points["agentaccel.limit.rejections"]] == [
        ({"agentaccel.limit.rule": "slow", "reason": "queue_timeout"}, 1)]
    assert sum(p.value for p in points["agentaccel.limit.in_flight"]) == 0
    assert sum(p.count for p in points["agentaccel.limit.wait"]) == 2
    assert not agentaccel.plugin_failures()


def test_permits_come_back_on_return_exception_and_cancellation(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "r", "tool": "*", "max_concurrency": 2}]})

    @agentaccel.accelerate
    def fails() -> None:
        raise ValueError("boom")

    @agentaccel.accelerate
    async def sleeps() -> None:
        await asyncio.sleep(10)

    with pytest.raises(ValueError):
        fails()
    assert in_flight("r") == 0

    async def cancel() -> None:
        task = asyncio.create_task(sleeps())
        await asyncio.sleep(0.01)
        assert in_flight("r") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    assert in_flight("r") == 0


def test_a_stream_holds_its_permit_until_it_ends_or_is_abandoned(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "s", "tool": "*", "max_concurrency": 3}]})

    @agentaccel.accelerate
    def chunks() -> Iterator[int]:
        yield from range(3)

    assert list(chunks()) == [0, 1, 2]
    assert in_flight("s") == 0
    closed = chunks()
    next(closed)
    assert in_flight("s") == 1
    closed.close()
    assert in_flight("s") == 0
    abandoned = chunks()
    next(abandoned)
    del abandoned
    gc.collect()
    assert in_flight("s") == 0


def test_an_async_stream_releases_when_exhausted_closed_or_abandoned(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "s", "tool": "*", "max_concurrency": 3}]})

    @agentaccel.accelerate
    async def chunks() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async def scenario() -> None:
        assert [c async for c in chunks()] == [0, 1, 2]
        assert in_flight("s") == 0
        closed = chunks()
        await closed.__anext__()
        assert in_flight("s") == 1
        await closed.aclose()
        assert in_flight("s") == 0
        abandoned = chunks()
        await abandoned.__anext__()
        del abandoned
        gc.collect()
        for _ in range(5):  # the loop's async-generator finalizer schedules the aclose()
            await asyncio.sleep(0)
        assert in_flight("s") == 0

    asyncio.run(scenario())


def test_ten_thousand_calls_with_errors_and_cancellations_leave_nothing_in_flight(
    agentaccel_spans: SpanRecorder,
) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "noop", "tool": "*", "max_concurrency": 4},
                                             {"name": "odd", "tool": "*", "rate": 1_000_000}]})
    gauge = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def enter() -> None:
        with lock:
            gauge["now"] += 1
            gauge["peak"] = max(gauge["peak"], gauge["now"])

    def leave() -> None:
        with lock:
            gauge["now"] -= 1

    @agentaccel.accelerate
    def noop(fail: bool) -> None:
        enter()
        leave()
        if fail:
            raise RuntimeError("random failure")

    @agentaccel.accelerate
    async def anoop(fail: bool) -> None:
        enter()
        try:
            await asyncio.sleep(0)
        finally:
            leave()
        if fail:
            raise RuntimeError("random failure")

    def threads(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1250):
            with contextlib.suppress(RuntimeError):
                noop(rng.random() < 0.2)

    async def tasks(seed: int) -> None:
        rng = random.Random(seed)
        pending = [asyncio.create_task(anoop(rng.random() < 0.2)) for _ in range(1250)]
        await asyncio.sleep(0)
        for task in pending:
            if rng.random() < 0.2:
                task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    workers = [threading.Thread(target=threads, args=(i,)) for i in range(4)]
    workers += [threading.Thread(target=lambda i=i: asyncio.run(tasks(i))) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not any(w.is_alive() for w in workers)
    assert gauge["peak"] <= 4
    assert snapshot()["noop"] == {"in_flight": 0, "queued": 0, "capacity": 4}
    assert snapshot()["odd"]["in_flight"] == 0
    assert not agentaccel.plugin_failures()


@pytest.mark.parametrize(("rules", "message"), [
    ([{"name": "x"}], "limit.rules[0] ('x'): sets no limit"),
    ([{"name": "x", "max_concurrency": 0}], "limit.rules[0] ('x').max_concurrency: must be at least 1"),
    ([{"name": "x", "rate": 5, "interval": 0}], "limit.rules[0] ('x').interval: must be a positive"),
    ([{"name": "x", "rate": 1}, {"name": "x", "rate": 2}], "limit.rules[1] ('x'): name is also used"),
    ([{"rate": 1, "on_backend_error": "maybe"}], "expected one of 'open', 'closed'"),
])
def test_config_mistakes_name_the_rule_and_key(agentaccel_spans: SpanRecorder, rules: Any, message: str) -> None:
    with pytest.raises(agentaccel.ConfigError) as info:
        agentaccel_spans.enable(limit={"rules": rules})
    assert message in str(info.value)


def test_a_bad_backend_url_is_a_config_error(agentaccel_spans: SpanRecorder) -> None:
    with pytest.raises(agentaccel.ConfigError, match=r"limit\.backend: expected a redis://"):
        agentaccel_spans.enable(limit={"backend": "http://example", "rules": [{"rate": 1}]})


def test_in_flight_metric_stays_balanced_when_a_later_rule_refuses(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "first", "tool": "*", "max_concurrency": 5},
                                             {"name": "second", "tool": "*", "max_concurrency": 1,
                                              "max_queue": 0}]})
    with one_held("second") as hold, pytest.raises(LimitExceeded):  # took a permit of "first"; "second" refused
        hold()
    metrics = agentaccel_spans.metric_reader.get_metrics_data()
    points = [p for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == "agentaccel.limit.in_flight" for p in m.data.data_points]
    assert {p.attributes["agentaccel.limit.rule"]: p.value for p in points} == {"first": 0, "second": 0}


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_queue_timeout_that_is_not_a_number_of_seconds_is_a_config_error(agentaccel_spans: SpanRecorder,
                                                                           value: float) -> None:
    # inf made every waiting call fail inside the limiter and go on unlimited; unset is how to wait forever
    with pytest.raises(agentaccel.ConfigError, match=r"limit\.rules\[0\] \('x'\)\.queue_timeout"):
        agentaccel_spans.enable(limit={"rules": [{"name": "x", "max_concurrency": 1, "queue_timeout": value}]})


def test_an_operation_that_matches_no_operation_is_a_config_error(agentaccel_spans: SpanRecorder) -> None:
    with pytest.raises(agentaccel.ConfigError, match=r"limit\.rules\[0\] \('x'\)\.operation: 'chatt' matches no "
                       r"operation; use one of chat, embeddings"):
        agentaccel_spans.enable(limit={"rules": [{"name": "x", "operation": "chatt", "max_concurrency": 1}]})
    agentaccel_spans.enable(limit={"rules": [{"name": "x", "operation": "invoke_*", "max_concurrency": 1}]})
