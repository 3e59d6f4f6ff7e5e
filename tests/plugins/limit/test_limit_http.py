"""Rules that hold their permits per HTTP request: the built-in ``http`` plugin admits each request a call sends
through the OpenAI client (httpx2 underneath), against the real mock provider over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import openai
import pytest
import redis
from agentaccel_limit import LimitExceeded, snapshot

import agentaccel
from agentaccel.mockllm import MockLLM
from agentaccel.testing.pytest_plugin import SpanRecorder
from agentaccel.testing.redis_server import RedisServer

RULE = {"name": "provider", "max_concurrency": 1}


def in_flight() -> int | None:
    return snapshot()["provider"]["in_flight"]


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client(server: MockLLM, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="test", max_retries=retries)


def aclient(server: MockLLM) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0)


def attributes(recorder: SpanRecorder) -> list[dict[str, Any]]:
    return [dict(span.attributes or {}) for span in recorder.spans()]


@pytest.mark.parametrize(("hold", "disabled", "per_request"), [
    ("request", "cache", True),
    ("call", "cache", False),  # the rule asks for the whole call
    ("request", "cache,http", False),  # nobody sees the requests: the call is held as a whole
])
def test_a_call_holds_the_permit_only_while_its_request_is_upstream(
        agentaccel_spans: SpanRecorder, mock_llm: MockLLM, monkeypatch: pytest.MonkeyPatch,
        hold: str, disabled: str, per_request: bool) -> None:
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", disabled)
    agentaccel_spans.enable(limit={"rules": [{**RULE, "hold": hold}]})
    assert one_answered_then_another(client(mock_llm), per_request) == {
        "held after the answer": 0 if per_request else 1, "other request meanwhile": per_request}
    assert in_flight() == 0
    for span in attributes(agentaccel_spans):
        assert span["agentaccel.limit.rule"] == "provider"
        assert span.get("agentaccel.limit.requests") == (1 if per_request else None)


def test_a_permit_shared_through_redis_is_held_per_request(agentaccel_spans: SpanRecorder, mock_llm: MockLLM,
                                                           redis_server: RedisServer) -> None:
    agentaccel_spans.enable(limit={"backend": redis_server.url, "rules": [RULE]})
    # the lease goes back on the backend's thread when the answer is read, and the next request is told at once
    assert one_answered_then_another(client(mock_llm), True) == {"held after the answer": 0,
                                                                 "other request meanwhile": True}
    assert in_flight() == 0
    leases, deadline = redis.Redis.from_url(redis_server.url), time.monotonic() + 5
    while leases.zcard("agentaccel:limit:{provider}:leases") and time.monotonic() < deadline:
        time.sleep(0.01)  # the last lease goes back on the backend's thread
    assert leases.zcard("agentaccel:limit:{provider}:leases") == 0


def one_answered_then_another(api: openai.OpenAI, per_request: bool) -> dict[str, Any]:
    """Two calls in two threads: the second sends its request once the first has its answer, while the first
    goes on with the work after it (where a framework parses the answer); what the first saw."""
    answered, second_answered = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    @agentaccel.accelerate(operation="chat", http=True)
    def first() -> None:
        api.chat.completions.create(model="m", messages=messages("first"))
        seen["held after the answer"] = in_flight()
        answered.set()
        seen["other request meanwhile"] = second_answered.wait(5 if per_request else 0.3)

    @agentaccel.accelerate(operation="chat", http=True)
    def second() -> None:
        answered.wait(5)
        api.chat.completions.create(model="m", messages=messages("second"))
        second_answered.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_async_calls_hold_the_permit_per_request(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    agentaccel_spans.enable(limit={"rules": [RULE]})
    asyncio.run(_two_async_calls(mock_llm))
    assert in_flight() == 0
    assert [span["agentaccel.limit.requests"] for span in attributes(agentaccel_spans)] == [1, 1]


async def _two_async_calls(mock_llm: MockLLM) -> None:
    api = aclient(mock_llm)
    answered, second_answered = asyncio.Event(), asyncio.Event()
    seen: dict[str, Any] = {}

    @agentaccel.accelerate(operation="chat", http=True)
    async def first() -> None:
        await api.chat.completions.create(model="m", messages=messages("first"))
        seen["held after the answer"] = in_flight()
        answered.set()
        await asyncio.wait_for(second_answered.wait(), 5)

    @agentaccel.accelerate(operation="chat", http=True)
    async def second() -> None:
        await answered.wait()
        await api.chat.completions.create(model="m", messages=messages("second"))
        second_answered.set()

    await asyncio.gather(first(), second())
    assert seen == {"held after the answer": 0}


@pytest.mark.parametrize("read", ["to the end", "one chunk, then closed"])
def test_a_streamed_answer_holds_the_permit_until_its_body_is_closed(
        agentaccel_spans: SpanRecorder, mock_llm: MockLLM, read: str) -> None:
    agentaccel_spans.enable(limit={"rules": [RULE]})
    api = client(mock_llm)

    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> tuple[int | None, int, int | None]:
        stream = api.chat.completions.create(model="m", messages=messages("tell me a long story"), stream=True)
        chunks = iter(stream)
        next(chunks)
        held = in_flight()
        rest = sum(1 for _ in chunks) if read == "to the end" else 0
        stream.close()
        return held, rest, in_flight()

    held, rest, after = ask()
    assert (held, after) == (1, 0)
    assert (rest > 0) == (read == "to the end")
    assert attributes(agentaccel_spans)[0]["agentaccel.limit.requests"] == 1


def test_an_async_stream_holds_the_permit_until_its_body_is_closed(
        agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    agentaccel_spans.enable(limit={"rules": [RULE]})
    api = aclient(mock_llm)

    @agentaccel.accelerate(operation="chat", http=True)
    async def ask() -> tuple[int | None, int | None]:
        stream = await api.chat.completions.create(model="m", messages=messages("tell me a story"), stream=True)
        async for _ in stream:
            break
        held = in_flight()
        await stream.close()
        return held, in_flight()

    assert asyncio.run(ask()) == (1, 0)


def test_each_429_the_client_retries_by_itself_teaches_the_rule(agentaccel_spans: SpanRecorder,
                                                                 mock_llm: MockLLM) -> None:
    mock_llm.configure(script=[{"match": "busy", "status": 429, "times": 1}], retry_after=0.05)
    agentaccel_spans.enable(limit={"rules": [{"name": "provider", "max_concurrency": 4, "adaptive": True}]})
    api = client(mock_llm, retries=2)

    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> str | None:
        return api.chat.completions.create(model="m", messages=messages("busy")).choices[0].message.content

    assert ask()  # the client retried the 429 and got its answer: the call succeeded
    assert mock_llm.counters()["rate_limited"] == 1
    span = attributes(agentaccel_spans)[0]
    assert span["agentaccel.limit.requests"] == 2
    assert span["agentaccel.limit.rate_limited"] is True
    assert snapshot()["provider"]["capacity"] == 1  # the adaptive rule shrank on the 429 a call-level rule never sees
    assert in_flight() == 0


def test_a_refused_request_raises_limit_exceeded_through_the_client(agentaccel_spans: SpanRecorder,
                                                                    mock_llm: MockLLM) -> None:
    mock_llm.configure(latency=0.5)
    agentaccel_spans.enable(limit={"rules": [{**RULE, "queue_timeout": 0}]})
    api = client(mock_llm, retries=2)

    @agentaccel.accelerate(operation="chat", http=True)
    def ask(text: str) -> Any:
        return api.chat.completions.create(model="m", messages=messages(text))

    holder = threading.Thread(target=ask, args=("first",))
    holder.start()
    while in_flight() != 1:
        time.sleep(0.001)
    with pytest.raises(LimitExceeded, match=r"limit rule 'provider'.*queue_timeout"):
        ask("second")  # not wrapped in the client's APIConnectionError, and not retried by it
    holder.join()
    assert mock_llm.counters()["chat_requests"] == 1
    assert in_flight() == 0


def test_a_request_that_fails_without_an_answer_gives_its_permit_back(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(limit={"rules": [{"name": "provider", "max_concurrency": 1, "adaptive": True}]})
    api = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="test", max_retries=0)  # nothing listens there

    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> Any:
        return api.chat.completions.create(model="m", messages=messages("hello"))

    with pytest.raises(openai.APIConnectionError):
        ask()
    assert in_flight() == 0
    span = attributes(agentaccel_spans)[0]
    assert span["agentaccel.limit.requests"] == 1
    assert "agentaccel.limit.rate_limited" not in span


def test_usage_replaces_the_token_estimate_of_the_request(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    # Each call is estimated at about 250 tokens (max_tokens) and uses a few dozen: the second fits in the budget
    # only once the first one's estimate has been replaced by its usage, after its permit came back.
    agentaccel_spans.enable(limit={"rules": [{"name": "provider", "tokens_per_minute": 400, "queue_timeout": 1}]})
    api = client(mock_llm)

    @agentaccel.accelerate(operation="chat", http=True, request=lambda call: {"messages": call.args[0],
                                                                               "max_tokens": 250})
    def ask(history: list[dict[str, str]]) -> Any:
        return api.chat.completions.create(model="m", messages=history, max_tokens=250)

    first = ask(messages("first"))
    assert first.usage.total_tokens < 150
    ask(messages("second"))  # would wait a minute, and time out after one second, with the estimate left in place
    assert [span["agentaccel.limit.queued"] for span in attributes(agentaccel_spans)] == [False, False]


def test_a_call_of_several_requests_is_charged_its_estimate_once(agentaccel_spans: SpanRecorder,
                                                                   mock_llm: MockLLM) -> None:
    # Three requests in one call (an embeddings call in chunks): charged per request, the third would need three
    # estimates of about 250 tokens in a budget of 600, and wait a minute (refused after one second).
    agentaccel_spans.enable(limit={"rules": [{"name": "provider", "tokens_per_minute": 600, "queue_timeout": 1}]})
    api = client(mock_llm)

    @agentaccel.accelerate(operation="chat", http=True, request=lambda call: {"messages": "x", "max_tokens": 250})
    def in_chunks() -> list[Any]:
        return [api.chat.completions.create(model="m", messages=messages(f"part {i}"), max_tokens=250)
                for i in range(3)]

    assert len(in_chunks()) == 3
    span = attributes(agentaccel_spans)[0]
    assert span["agentaccel.limit.requests"] == 3
    assert span["agentaccel.limit.queued"] is False


def test_a_call_retried_after_a_429_is_charged_its_usage_once(agentaccel_spans: SpanRecorder,
                                                              mock_llm: MockLLM) -> None:
    # The refused request and its retry are one call, charged one estimate, which its usage replaces: a second
    # call then fits a budget that two estimates would not (it would wait, and be refused after one second).
    mock_llm.configure(script=[{"match": "busy", "status": 429, "times": 1}], retry_after=0)
    agentaccel_spans.enable(limit={"rules": [{"name": "provider", "tokens_per_minute": 400, "queue_timeout": 1}]})
    api = client(mock_llm, retries=1)

    @agentaccel.accelerate(operation="chat", http=True, request=lambda call: {"messages": "x", "max_tokens": 250})
    def ask(text: str) -> Any:
        return api.chat.completions.create(model="m", messages=messages(text), max_tokens=250)

    ask("busy")
    ask("calm")
    assert [span["agentaccel.limit.requests"] for span in attributes(agentaccel_spans)] == [2, 1]
    assert [span["agentaccel.limit.queued"] for span in attributes(agentaccel_spans)] == [False, False]


def test_a_call_that_sends_nothing_through_httpx_is_reported(agentaccel_spans: SpanRecorder,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    agentaccel_spans.enable(limit={"rules": [RULE]})

    @agentaccel.accelerate(operation="chat", http=True)
    def offline() -> str:
        return "answered without a request"

    with caplog.at_level(logging.WARNING, logger="agentaccel"):
        assert offline() == "answered without a request"
        offline()
    warnings = [r.getMessage() for r in caplog.records if "sent no request through httpx" in r.getMessage()]
    assert len(warnings) == 1 and 'hold = "call"' in warnings[0]
    assert in_flight() == 0


def test_hold_must_be_request_or_call() -> None:
    with pytest.raises(agentaccel.ConfigError, match="hold"):
        agentaccel.enable(limit={"rules": [{**RULE, "hold": "forever"}]})
