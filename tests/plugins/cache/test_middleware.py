"""L1 behaviour through the real pipeline: hits and misses, fresh results, policy, options, what is never stored,
streaming replay, spans and metrics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cache_helpers import cache, results

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def make_chat(calls: list[str], name: str = "gpt-test") -> Any:
    @agentaccel.accelerate(operation=agentaccel.CHAT, name=name, provider="openai")
    def chat(messages: list[dict[str, str]], temperature: float = 0.0, tools: list[Any] | None = None) -> Any:
        calls.append("chat")
        return {"choices": [{"message": {"role": "assistant", "content": f"answer {len(calls)}"}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3}}

    return chat


def test_hit_miss_l1_and_span_attributes(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []
    chat = make_chat(calls)
    first = chat(MESSAGES)
    second = chat(MESSAGES)
    assert first == second and calls == ["chat"]
    miss, hit = agentaccel_spans.spans()
    assert miss.attributes["agentaccel.cache.result"] == "miss"
    assert hit.attributes["agentaccel.cache.result"] == "hit"
    assert hit.attributes["agentaccel.cache.layer"] == "l1"
    assert hit.attributes["agentaccel.cache.key"] == miss.attributes["agentaccel.cache.key"]
    assert len(str(hit.attributes["agentaccel.cache.key"])) == 64


def test_answer_relevant_parameters_change_the_key(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []
    chat = make_chat(calls)
    chat(MESSAGES)
    chat(MESSAGES, temperature=0.5)
    chat(MESSAGES, tools=[{"type": "function", "function": {"name": "search"}}])
    chat(MESSAGES, tools=[{"type": "function", "function": {"name": "lookup"}}])
    assert len(calls) == 4
    chat(messages=MESSAGES, temperature=0.5)  # same request spelled differently: a hit
    assert len(calls) == 4


def test_hit_returns_a_fresh_object_the_caller_may_mutate(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []
    chat = make_chat(calls)
    first = chat(MESSAGES)
    first["choices"].clear()
    second = chat(MESSAGES)
    second["choices"][0]["message"]["content"] = "mutated"
    third = chat(MESSAGES)
    assert third["choices"][0]["message"]["content"] == "answer 1"
    assert second is not third


def test_async_and_sync_share_behaviour(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="async-model")
    async def achat(q: str) -> dict[str, str]:
        calls.append(q)
        return {"q": q}

    async def main() -> list[dict[str, str]]:
        return [await achat("a"), await achat("a"), await achat("b")]

    assert asyncio.run(main()) == [{"q": "a"}, {"q": "a"}, {"q": "b"}]
    assert calls == ["a", "b"]
    assert results(agentaccel_spans.spans()) == ["miss", "hit", "miss"]


def test_policy_defaults(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []

    @agentaccel.accelerate(name="impure")
    def impure(x: int) -> int:
        calls.append("impure")
        return x

    @agentaccel.accelerate(name="pure", pure=True)
    def pure(x: int) -> int:
        calls.append("pure")
        return x

    @agentaccel.accelerate(operation=agentaccel.INVOKE_AGENT, name="agent")
    def agent(x: int) -> int:
        calls.append("agent")
        return x

    @agentaccel.accelerate(operation=agentaccel.EMBEDDINGS, name="embed")
    def embed(x: str) -> list[float]:
        calls.append("embed")
        return [0.5, 0.25]

    for _ in range(2):
        impure(1), pure(1), agent(1), embed("x")
    assert sorted(calls) == ["agent", "agent", "embed", "impure", "impure", "pure"]
    assert results(agentaccel_spans.spans())[:4] == ["bypass", "miss", "bypass", "miss"]


def test_rules_enable_tools_by_glob_and_disable_by_name(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache={"rules": [
        {"operation": "execute_tool", "name": "search_*", "enabled": True},
        {"operation": "chat", "name": "no-cache-*", "enabled": False},
        {"operation": "invoke_agent", "enabled": True, "ttl": 30},
    ]})
    calls: list[str] = []

    @agentaccel.accelerate(name="search_web")
    def search_web(q: str) -> list[str]:
        calls.append("search")
        return [q]

    @agentaccel.accelerate(operation=agentaccel.INVOKE_AGENT, name="planner")
    def planner(goal: str) -> str:
        calls.append("planner")
        return goal

    chat = make_chat(calls, name="no-cache-model")
    for _ in range(2):
        search_web("q"), planner("g"), chat(MESSAGES)
    assert sorted(calls) == ["chat", "chat", "planner", "search"]


def test_per_call_options(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []
    chat = make_chat(calls)
    with agentaccel.options(cache=False):
        chat(MESSAGES)
        chat(MESSAGES)
    assert len(calls) == 2
    chat(MESSAGES)
    assert len(calls) == 3
    assert chat(MESSAGES)["choices"][0]["message"]["content"] == "answer 3"
    with agentaccel.options(refresh=True):
        assert chat(MESSAGES)["choices"][0]["message"]["content"] == "answer 4"
    assert chat(MESSAGES)["choices"][0]["message"]["content"] == "answer 4"  # refresh replaced the entry

    @agentaccel.accelerate(operation=agentaccel.INVOKE_WORKFLOW, name="flow")
    def workflow(x: int) -> int:
        calls.append("workflow")
        return x

    with agentaccel.options(cache=True):
        workflow(1), workflow(1)
    assert calls.count("workflow") == 1


def test_ttl_expiry_rule_and_option(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []
    chat = make_chat(calls)
    with agentaccel.options(ttl=0.2):
        chat(MESSAGES)
    chat(MESSAGES)
    assert len(calls) == 1
    time.sleep(0.3)
    chat(MESSAGES)
    assert len(calls) == 2


def test_errors_cancellations_and_unfinished_streams_are_not_stored(agentaccel_spans: SpanRecorder) -> None:
    attempts: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="flaky")
    def flaky(q: str) -> str:
        attempts.append(q)
        if len(attempts) == 1:
            raise RuntimeError("provider down")
        return "ok"

    with pytest.raises(RuntimeError):
        flaky("q")
    assert flaky("q") == "ok"
    assert flaky("q") == "ok"
    assert len(attempts) == 2

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="cancelled")
    async def slow(q: str) -> str:
        attempts.append("slow")
        await asyncio.sleep(10)
        return "late"

    async def cancel_one() -> None:
        task = asyncio.ensure_future(slow("q"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    asyncio.run(cancel_one())
    assert attempts.count("slow") == 2

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="tokens")
    def tokens(q: str) -> Any:
        attempts.append("tokens")
        yield from ["a", "b", "c"]

    stream = tokens("q")
    assert next(stream) == "a"
    stream.close()  # abandoned after one chunk: truncated, not stored
    assert list(tokens("q")) == ["a", "b", "c"]
    assert list(tokens("q")) == ["a", "b", "c"]
    assert attempts.count("tokens") == 2


def test_stream_replay_keeps_chunks_and_boundaries(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []
    chunks = [{"delta": "Hel"}, {"delta": "lo"}, {"delta": ""}, {"delta": " world", "usage": {"total": 3}}]

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="streamer")
    def stream(q: str) -> Any:
        calls.append(q)
        yield from chunks

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="astreamer")
    async def astream(q: str) -> Any:
        calls.append(q)
        for chunk in chunks:
            yield chunk

    first, second = list(stream("q")), list(stream("q"))
    assert first == second == chunks and calls == ["q"]

    async def consume() -> list[Any]:
        return [c async for c in astream("q")]

    assert asyncio.run(consume()) == asyncio.run(consume()) == chunks
    assert calls == ["q", "q"]
    assert results(agentaccel_spans.spans()) == ["miss", "hit", "miss", "hit"]
    replay = agentaccel_spans.spans()[1]
    assert replay.attributes["agentaccel.stream.chunks"] == 4


def test_a_stream_is_stored_as_it_came_though_its_consumer_changed_the_chunks(
        agentaccel_spans: SpanRecorder) -> None:
    # The consumer gets each chunk before the stream ends (when the entry is made): what it does to a chunk is
    # its own business, and must not become what later calls are answered with.
    agentaccel_spans.enable()

    def fresh() -> list[dict[str, str]]:
        return [{"delta": "Hel"}, {"delta": "lo"}]

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="mutated")
    def stream(q: str) -> Any:
        yield from fresh()

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="amutated")
    async def astream(q: str) -> Any:
        for chunk in fresh():
            yield chunk

    for chunk in stream("q"):
        chunk["delta"] = "CHANGED"

    async def change() -> None:
        async for chunk in astream("q"):
            chunk["delta"] = "CHANGED"

    async def read() -> list[Any]:
        return [chunk async for chunk in astream("q")]

    asyncio.run(change())
    assert list(stream("q")) == fresh()
    assert asyncio.run(read()) == fresh()
    assert results(agentaccel_spans.spans()) == ["miss", "miss", "hit", "hit"]


class Reply:
    """A framework's own result type, encoded by its codec."""

    def __init__(self, text: str) -> None:
        self.text = text


class ReplyCodec:
    def encode(self, value: Reply) -> Any:
        return {"text": value.text}

    def decode(self, data: Any) -> Reply:
        return Reply(data["text"])


def test_stream_hit_replays_the_frameworks_own_chunk_type(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(operation=agentaccel.CHAT, name="typed", codec=ReplyCodec())
    def typed(q: str) -> Any:
        yield from [Reply("a"), Reply("b")]

    list(typed("q"))
    replay = list(typed("q"))
    assert [type(c) for c in replay] == [Reply, Reply] and [c.text for c in replay] == ["a", "b"]


def test_unkeyable_and_unencodable_calls_pass_through(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="odd")
    def odd(q: Any) -> Any:
        calls.append("odd")
        return q

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="answer")
    def answer(kind: str) -> Any:
        calls.append(kind)
        return {"object": object(), "nan": [float("nan")], "big": [2**70], "when": [datetime.now(UTC), None],
                "tuple": {"pair": (1, 2)}}[kind]

    odd({1, 2}), odd({1, 2})  # a set in the request: no stable key
    odd({1: "a"}), odd({1: "a"})  # a key that is not a string (JSON would make it "1", another request's key)
    odd([2**64]), odd([2**64])  # an integer beyond 64 bits: the canonical encoder cannot write it exactly
    assert calls == ["odd"] * 6
    assert results(agentaccel_spans.spans()) == ["bypass"] * 6
    for kind in ("object", "nan", "big", "when", "tuple"):  # would not read back unchanged: never stored
        answer(kind)
        assert answer(kind) is not None
    assert calls[6:] == ["object", "object", "nan", "nan", "big", "big", "when", "when", "tuple", "tuple"]
    assert answer("tuple") == {"pair": (1, 2)}  # a hit would have made the tuple a list
    assert agentaccel.plugin_failures().get("cache") is None


def test_a_refreshed_result_too_large_for_l1_is_not_answered_by_the_one_it_replaced(
        agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache={"max_bytes": 5000})
    size = [10]

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="growing")
    def growing(q: str) -> str:
        return "x" * size[0]

    growing("q")
    size[0] = 6000  # the answer outgrew the whole bound
    with agentaccel.options(refresh=True):
        assert len(growing("q")) == 6000
    assert len(growing("q")) == 6000  # a miss that calls again, not the small answer refresh replaced


def test_byte_bound_evicts_least_recently_used(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache={"max_bytes": 20_000})
    calls: list[int] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="big")
    def big(i: int) -> str:
        calls.append(i)
        return "x" * 2000

    for i in range(30):
        big(i)
    l1 = cache().l1
    assert l1.bytes <= 20_000
    assert l1.evictions > 0 and 0 < l1.entries < 30
    big(29)  # most recent: still there
    assert calls.count(29) == 1
    big(0)  # oldest: evicted
    assert calls.count(0) == 2


def test_metrics_count_hits_and_savings(agentaccel_spans: SpanRecorder) -> None:
    calls: list[str] = []

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="metered",
                           describe=lambda r: {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 4})
    def metered(q: str) -> str:
        calls.append(q)
        return q

    metered("a"), metered("a"), metered("a")
    data = agentaccel_spans.metric_reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    hits = [p.value for p in points["agentaccel.cache.requests"]
            if p.attributes == {"agentaccel.cache.result": "hit", "agentaccel.cache.layer": "l1"}]
    assert hits == [2]
    saved = {p.attributes["gen_ai.token.type"]: p.value for p in points["agentaccel.cache.tokens_saved"]}
    assert saved == {"input": 20, "output": 8}
    assert points["agentaccel.cache.time_saved"][0].value >= 0
    assert points["agentaccel.cache.l1.bytes"][0].value > 0


def test_cache_disabled_by_config_adds_no_middleware(agentaccel_spans: SpanRecorder) -> None:
    runtime = agentaccel_spans.enable(cache={"enabled": False})
    assert "cache" not in [m.name for m in runtime.middleware]
