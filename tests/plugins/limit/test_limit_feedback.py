"""429s and Retry-After from real clients against the real mock provider, and what they do to a rule."""

from __future__ import annotations

import importlib
import importlib.util
import threading
from types import SimpleNamespace
from typing import Any, ClassVar

import openai
import pytest
from agentaccel_limit import rate_limited, snapshot
from agentaccel_limit.feedback import MAX_RETRY_AFTER

import agentaccel
from agentaccel.mockllm import MockLLM
from agentaccel.testing.pytest_plugin import SpanRecorder


def client(server: MockLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)


def test_openai_rate_limit_error_with_retry_after_ms(mock_llm: MockLLM) -> None:
    mock_llm.configure(script=[{"match": "slow down", "status": 429}], retry_after=0.25)
    with pytest.raises(openai.RateLimitError) as info:
        client(mock_llm).chat.completions.create(model="mock-llm", messages=[{"role": "user", "content": "slow down"}])
    assert rate_limited(info.value) == (True, 0.25)


def test_httpx_status_error(mock_llm: MockLLM) -> None:
    # openai 3 ships httpx as ``httpx2``; older clients use ``httpx``: the same HTTPStatusError either way
    httpx = pytest.importorskip("httpx2") if importlib.util.find_spec("httpx") is None else importlib.import_module(
        "httpx")
    mock_llm.configure(script=[{"match": "x", "status": 429}], retry_after=2.0)
    response = httpx.post(f"{mock_llm.url}/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(httpx.HTTPStatusError) as info:
        response.raise_for_status()
    assert rate_limited(info.value) == (True, 2.0)


class Wrapped(Exception):
    pass


def test_duck_typed_errors_and_causes() -> None:
    class Response:
        status_code = 429
        headers: ClassVar = {"retry-after": "3"}

    class ClientError(Exception):
        response = Response()

    class StatusOnly(Exception):
        status_code = 429

    assert rate_limited(ClientError()) == (True, 3.0)
    assert rate_limited(StatusOnly()) == (True, None)
    try:
        try:
            raise ClientError()
        except ClientError as exc:
            raise Wrapped("framework wrapper") from exc
    except Wrapped as wrapped:
        assert rate_limited(wrapped) == (True, 3.0)
    assert rate_limited(ValueError("no")) == (False, None)
    assert rate_limited(None) == (False, None)


def chat_through(server: MockLLM) -> Any:
    api = client(server)

    def request(call: agentaccel.Call) -> dict[str, Any]:
        return {"model": call.kwargs["model"], "messages": call.kwargs["messages"]}

    def create(**kwargs: Any) -> Any:
        return api.chat.completions.create(**kwargs)

    return agentaccel.wrap(create, operation="chat", name="create", provider="openai", request=request)


def test_the_provider_never_sees_more_than_the_limit(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    mock_llm.configure(max_concurrency=3, latency=0.01)
    agentaccel_spans.enable(limit={"rules": [{"name": "openai", "provider": "openai", "max_concurrency": 3}]})
    create = chat_through(mock_llm)
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(4):
            try:
                create(model="mock-llm", messages=[{"role": "user", "content": "hi"}])
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    counters = mock_llm.counters()
    assert errors == []
    assert counters["rate_limited"] == 0
    assert counters["admitted"] == 64
    assert counters["in_flight_peak"] == 3
    assert snapshot()["openai"]["in_flight"] == 0


def test_a_429_pauses_the_rule_and_is_counted(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    mock_llm.configure(script=[{"match": "first", "status": 429, "times": 1}], retry_after=0.2)
    agentaccel_spans.enable(limit={"rules": [{"name": "openai", "provider": "openai", "max_concurrency": 8}]})
    create = chat_through(mock_llm)
    with pytest.raises(openai.RateLimitError):
        create(model="mock-llm", messages=[{"role": "user", "content": "first"}])
    create(model="mock-llm", messages=[{"role": "user", "content": "second"}])
    first, second = agentaccel_spans.spans()
    assert first.attributes["agentaccel.limit.rate_limited"] is True
    assert second.attributes["agentaccel.limit.queued"] is True  # held back by the pause, not sent into a 429
    assert second.attributes["agentaccel.limit.wait_ms"] >= 150  # type: ignore[operator]
    assert mock_llm.counters()["rate_limited"] == 1
    metrics = agentaccel_spans.metric_reader.get_metrics_data()
    seen = [p.value for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == "agentaccel.limit.rate_limited" for p in m.data.data_points]
    assert seen == [1]


def rate_limit_error(headers: dict[str, str]) -> Exception:
    """An exception as a duck-typed client raises one: a 429 response carrying ``headers``."""
    error = Exception("429 Too Many Requests")
    error.response = SimpleNamespace(status_code=429, headers=headers)  # type: ignore[attr-defined]
    return error


def test_retry_after_in_a_plain_dict_is_found_whatever_its_capitalisation() -> None:
    # HTTP header names are case-insensitive; a duck-typed response's plain dict keeps the server's spelling
    class MsError(Exception):
        status_code = 429
        response: ClassVar = type("R", (), {"headers": {"Retry-After-Ms": "250", "Retry-After": "9"}})()

    assert rate_limited(rate_limit_error({"Retry-After": "3"})) == (True, 3.0)
    assert rate_limited(MsError()) == (True, 0.25)


@pytest.mark.parametrize(("headers", "wait"), [
    ({"retry-after": "inf"}, None),  # no wait we could honour: the rule is not paused for ever
    ({"retry-after": "nan"}, None),
    ({"retry-after": "1e999"}, None),
    ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),  # an unusable retry-after-ms leaves Retry-After
    ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
    ({"retry-after": "86400"}, MAX_RETRY_AFTER),  # a day: a misconfigured proxy, capped
    ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX_RETRY_AFTER),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # an HTTP date in the past: no wait
    ({"retry-after": "-5"}, 0.0),
    ({"retry-after": "tomorrow"}, None),
])
def test_a_retry_after_is_read_as_a_wait_the_rule_can_honour(headers: dict[str, str], wait: float | None) -> None:
    assert rate_limited(rate_limit_error(headers)) == (True, wait)
