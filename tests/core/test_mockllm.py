"""The mock LLM server, exercised over real sockets with the official openai client."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from agentaccel.mockllm import MockLLM, MockLLMProcess
from agentaccel.mockllm.cli import add_arguments, main

USER: Any = [{"role": "user", "content": "hello there"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
SEARCH: Any = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def server() -> Iterator[MockLLM]:
    mock = MockLLM(host="127.0.0.1", port=0)
    mock.start()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture
def client(server: MockLLM) -> Iterator[openai.OpenAI]:
    oa = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
    try:
        yield oa
    finally:
        oa.close()


def control(server_url: str, name: str, payload: object = None) -> Any:
    root = server_url.removesuffix("/v1")
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{root}/_mock/{name}", data=data, method="POST" if data else "GET")
    with NO_PROXY.open(request, timeout=10) as response:
        return json.loads(response.read())


def raw_request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    return response.status, dict(response.getheaders()), json.loads(data)


def first_call(response: Any) -> Any:
    calls = response.choices[0].message.tool_calls
    assert calls, "expected a tool call"
    return calls[0]


def read_line(stream: Any, timeout: float = 30.0) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines, "no output from the child process"
    return lines[0]


# -- chat ---------------------------------------------------------------------------------------------


def test_chat_text_answer_echoes_and_counts(server: MockLLM, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="gpt-test", messages=USER)
    choice = response.choices[0]
    assert choice.message.content is not None
    assert choice.message.content.startswith("echo: hello there")
    assert choice.finish_reason == "stop"
    assert response.model == "gpt-test"
    assert response.id.startswith("chatcmpl-")
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    counters = server.counters()
    assert counters["requests"] == counters["chat_requests"] == counters["admitted"] == 1
    assert counters["in_flight"] == 0 and counters["in_flight_peak"] == 1
    assert counters["rate_limited"] == counters["errors"] == counters["streamed"] == 0


def test_async_client_plain_and_streamed(server: MockLLM) -> None:
    async def run() -> tuple[str | None, str]:
        async with openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0) as oa:
            response = await oa.chat.completions.create(model="m", messages=USER)
            stream = await oa.chat.completions.create(model="m", messages=USER, stream=True)
            parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
            return response.choices[0].message.content, "".join(parts)

    content, streamed = asyncio.run(run())
    assert content is not None and content.startswith("echo: hello there")
    assert streamed == content
    assert server.counters()["streamed"] == 1


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What does get_weather say for Paris?"}]
    first = client.chat.completions.create(model="m", messages=messages, tools=[SEARCH, WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # the tool named in the user message, not the first one
    assert json.loads(call.function.arguments) == {"city": messages[0]["content"], "days": 1}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    second = client.chat.completions.create(model="m", messages=messages, tools=[SEARCH, WEATHER])
    answer = second.choices[0]
    assert answer.finish_reason == "stop" and not answer.message.tool_calls
    assert answer.message.content is not None
    assert "sunny, 21C" in answer.message.content and "get_weather" in answer.message.content


def test_tool_selection_respects_tool_choice(client: openai.OpenAI) -> None:
    tools: Any = [SEARCH, WEATHER]
    plain = client.chat.completions.create(model="m", messages=USER, tools=tools)
    assert plain.choices[0].message.tool_calls is not None
    assert first_call(plain).function.name == "search"  # nothing named: the first tool

    forced = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "search for cats"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls is not None
    assert first_call(forced).function.name == "get_weather"

    none = client.chat.completions.create(model="m", messages=USER, tools=tools, tool_choice="none")
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.content

    with pytest.raises(openai.BadRequestError, match="not_a_tool"):
        client.chat.completions.create(
            model="m",
            messages=USER,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "not_a_tool"}},
        )


def test_tool_arguments_follow_the_json_schema(client: openai.OpenAI) -> None:
    parameters = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "items": {"type": "array", "items": {"type": "string"}},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "nested": {"$ref": "#/$defs/Nested"},
        },
        "required": ["text", "extra"],
        "$defs": {"Nested": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    tool: Any = {"type": "function", "function": {"name": "do_it", "parameters": parameters}}
    messages: Any = [{"role": "user", "content": "please do_it"}]
    response = client.chat.completions.create(model="m", messages=messages, tools=[tool])
    assert response.choices[0].message.tool_calls is not None
    arguments = json.loads(first_call(response).function.arguments)
    assert arguments == {
        "text": "please do_it",
        "count": 1,
        "ratio": 1,
        "flag": True,
        "items": [],
        "unit": "celsius",
        "maybe": 1,
        "nested": {"ok": True},
        "extra": "please do_it",
    }


def test_structured_output_is_parseable_json(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "population"],
        "additionalProperties": False,
    }
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": schema, "strict": True},
    }
    messages: Any = [{"role": "user", "content": "describe Paris"}]
    response = client.chat.completions.create(model="m", messages=messages, response_format=response_format)
    assert json.loads(response.choices[0].message.content or "") == {
        "name": "describe Paris",
        "population": 1,
    }
    json_mode = client.chat.completions.create(
        model="m", messages=messages, response_format={"type": "json_object"}
    )
    assert "describe Paris" in json.loads(json_mode.choices[0].message.content or "")["answer"]


# -- streaming ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_words", [1, 3])
def test_stream_concatenates_to_the_non_stream_answer(
    server: MockLLM, client: openai.OpenAI, chunk_words: int
) -> None:
    server.configure(chunk_words=chunk_words)
    messages: Any = [{"role": "user", "content": "the quick  brown fox jumps over the lazy dog"}]
    full = client.chat.completions.create(model="m", messages=messages)
    content = full.choices[0].message.content
    assert content is not None
    chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == content
    assert len(pieces) == math.ceil(len(content.split()) / chunk_words)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in chunks} == {full.id}
    assert all(c.object == "chat.completion.chunk" and c.model == "m" for c in chunks)
    assert server.counters()["streamed"] == 1


def test_streamed_tool_call_reassembles(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "weather in Paris and London please"}]
    tools: Any = [WEATHER]
    plain = client.chat.completions.create(model="m", messages=messages, tools=tools)
    assert plain.choices[0].message.tool_calls is not None
    expected = first_call(plain)

    raw = list(client.chat.completions.create(model="m", messages=messages, tools=tools, stream=True))
    fragments = [
        tc.function.arguments
        for c in raw
        if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
        if tc.function and tc.function.arguments
    ]
    assert len(fragments) > 1  # really streamed in pieces
    assert "".join(fragments) == expected.function.arguments
    assert raw[-1].choices[0].finish_reason == "tool_calls"

    with client.chat.completions.stream(model="m", messages=messages, tools=tools) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert (calls[0].id, calls[0].function.name) == (expected.id, "get_weather")
    assert json.loads(calls[0].function.arguments) == json.loads(expected.function.arguments)
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_include_usage_sends_a_final_usage_chunk(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="m", messages=USER)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and plain.usage is not None
    assert last.usage.model_dump() == plain.usage.model_dump()
    assert all(c.usage is None and c.choices for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"

    without = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(c.choices for c in without)


# -- embeddings, models, determinism ------------------------------------------------------------------


def test_embeddings_float_and_base64_agree(server: MockLLM, client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])  # base64
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    alpha, beta = (d.embedding for d in floats.data)
    assert len(alpha) == 16 and alpha != beta
    assert math.isclose(math.fsum(v * v for v in alpha), 1.0, rel_tol=1e-5)
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0

    single = client.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=8)
    assert len(single.data) == 1 and len(single.data[0].embedding) == 8
    server.configure(embedding_dims=32)
    assert len(client.embeddings.create(model="e", input="alpha").data[0].embedding) == 32
    assert server.counters()["embedding_requests"] == 4


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids and "gpt-4o-mini" in ids


def test_answers_are_deterministic(client: openai.OpenAI) -> None:
    def ask(messages: Any, **kwargs: Any) -> tuple[str, str | None]:
        response = client.chat.completions.create(model="m", messages=messages, **kwargs)
        return response.id, response.choices[0].message.content

    assert ask(USER) == ask(USER)
    assert ask(USER)[1] != ask([{"role": "user", "content": "something else"}])[1]
    with_system = [{"role": "system", "content": "be terse"}, *USER]
    assert ask(with_system)[1] != ask(USER)[1]
    assert ask(USER, temperature=0.5) != ask(USER)
    assert ask(USER, tools=[WEATHER])[0] == ask(USER, tools=[WEATHER])[0]


# -- limits -------------------------------------------------------------------------------------------


def test_max_concurrency_answers_429_with_retry_after(server: MockLLM, client: openai.OpenAI) -> None:
    server.configure(latency=0.3, max_concurrency=2, retry_after=1.5)
    barrier = threading.Barrier(8)

    def call(_: int) -> openai.RateLimitError | None:
        barrier.wait()
        try:
            client.chat.completions.create(model="m", messages=USER)
        except openai.RateLimitError as exc:
            return exc
        return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    limited = [r for r in results if r is not None]
    assert 1 <= len(limited) <= 6
    for exc in limited:
        assert exc.status_code == 429
        assert exc.response.headers["Retry-After"] == "2"
        assert exc.response.headers["retry-after-ms"] == "1500"
        assert exc.response.json()["error"]["type"] == "rate_limit_exceeded"
    counters = server.counters()
    assert counters["chat_requests"] == 8
    assert counters["rate_limited"] == len(limited)
    assert counters["admitted"] == 8 - len(limited)
    assert counters["in_flight_peak"] == 2
    assert counters["in_flight"] == 0


def test_benchmark_shape_counts_stay_exact(server: MockLLM) -> None:
    server.configure(latency=0.05, max_concurrency=8)
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0) as oa:

        def call(i: int) -> bool:
            try:
                oa.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            except openai.RateLimitError:
                return False
            return True

        with ThreadPoolExecutor(64) as pool:
            ok = sum(pool.map(call, range(192)))
    counters = server.counters()
    assert counters["chat_requests"] == 192
    assert counters["admitted"] == ok and counters["rate_limited"] == 192 - ok
    assert 1 <= counters["in_flight_peak"] <= 8
    assert counters["in_flight"] == 0
    assert counters["connections"] <= 64  # pooled: at most one per client thread, not one per request


def test_rpm_answers_429_until_the_window_frees(server: MockLLM, client: openai.OpenAI) -> None:
    server.configure(rpm=2)
    client.chat.completions.create(model="m", messages=USER)
    client.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=USER)
    headers = caught.value.response.headers
    assert 59 <= int(headers["Retry-After"]) <= 60
    assert 50_000 < int(headers["retry-after-ms"]) <= 60_000
    counters = server.counters()
    assert (counters["admitted"], counters["rate_limited"]) == (2, 1)
    server.reset_counters()  # a fresh scenario gets a fresh window
    client.chat.completions.create(model="m", messages=USER)


def test_client_retries_succeed_after_retry_after(server: MockLLM) -> None:
    server.configure(retry_after=0.2, script=[{"match": "flaky", "status": 429, "times": 1}])
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=2) as oa:
        response = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "flaky one"}])
        assert response.choices[0].message.content is not None
        counters = server.counters()
        assert (counters["chat_requests"], counters["rate_limited"], counters["admitted"]) == (2, 1, 2)

        # The real limit: one slow request holds the only slot, the second is told to come back later.
        server.configure(script=None, max_concurrency=1, latency=0.4, retry_after=0.5)
        server.reset_counters()
        holder = threading.Thread(
            target=lambda: oa.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "slow"}]
            )
        )
        holder.start()
        deadline = time.monotonic() + 5
        while server.counters()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        oa.chat.completions.create(model="m", messages=USER)
        holder.join()
    counters = server.counters()
    assert (counters["rate_limited"], counters["admitted"], counters["in_flight_peak"]) == (1, 2, 1)


# -- control plane, connections, scripts, errors ------------------------------------------------------


def test_counters_reset_and_config_over_http(server: MockLLM, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="m", messages=USER)
    over_http = control(server.url, "counters")
    assert over_http == server.counters()
    assert over_http["chat_requests"] == 1

    answer = control(server.url, "config", {"max_concurrency": 3, "latency": 0.01})
    assert answer["config"]["max_concurrency"] == 3
    assert server.config.max_concurrency == 3 and server.config.latency == 0.01
    with pytest.raises(urllib.error.HTTPError) as caught:
        control(server.url, "config", {"no_such_setting": 1})
    assert caught.value.code == 400

    assert control(server.url, "reset", {}) == {"ok": True}
    assert all(value == 0 for value in server.counters().values())  # control traffic is not counted


def test_keep_alive_reuses_connections(server: MockLLM, client: openai.OpenAI) -> None:
    for _ in range(5):
        client.chat.completions.create(model="m", messages=USER)
    client.embeddings.create(model="e", input="x")
    assert server.counters()["connections"] == 1
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0) as other:
        other.models.list()
    assert server.counters()["connections"] == 2

    # A streamed answer ends cleanly, so the same connection can carry the next request.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events = response.read().decode()
        assert events.endswith("data: [DONE]\n\n") and events.startswith("data: {")
        status, _, _ = raw_request(conn, "GET", "/v1/models")
        assert status == 200
    finally:
        conn.close()
    assert server.counters()["connections"] == 3


def test_script_rules(server: MockLLM, client: openai.OpenAI) -> None:
    server.configure(
        script=[
            {"match": "exact", "response": {"content": "An exact answer."}},
            {"match": "boom", "status": 500, "error": "kaboom"},
            {"match": "lookup", "response": {"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}},
            {"match": "once", "response": {"content": "first time"}, "times": 1},
        ]
    )

    def ask(text: str, **kwargs: Any) -> Any:
        messages: Any = [{"role": "user", "content": text}]
        return client.chat.completions.create(model="m", messages=messages, **kwargs)

    assert ask("give the exact text").choices[0].message.content == "An exact answer."
    streamed = "".join(
        c.choices[0].delta.content or "" for c in ask("exact please", stream=True) if c.choices
    )
    assert streamed == "An exact answer."

    with pytest.raises(openai.InternalServerError, match="kaboom") as caught:
        ask("boom")
    assert caught.value.status_code == 500

    call = ask("lookup something").choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("lookup", {"q": "x"})
    follow_up: Any = [
        {"role": "user", "content": "lookup something"},
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "found it"},
    ]
    after = client.chat.completions.create(model="m", messages=follow_up)
    assert after.choices[0].message.content is not None and "found it" in after.choices[0].message.content

    assert ask("once").choices[0].message.content == "first time"
    assert ask("once").choices[0].message.content != "first time"
    assert server.counters()["errors"] == 1

    with pytest.raises(ValueError, match="rule 0"):
        server.configure(script=[{"match": "x", "reponse": {"content": "typo"}}])


def test_malformed_requests_get_openai_style_errors(server: MockLLM) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        status, _, body = raw_request(conn, "POST", "/v1/chat/completions", b'{"model": "m", "messages": [')
        assert status == 400
        assert body["error"]["type"] == "invalid_request_error"
        assert "JSON" in body["error"]["message"]

        # Same connection: an error does not break keep-alive.
        status, _, body = raw_request(conn, "POST", "/v1/chat/completions", b'{"model": "m"}')
        assert (status, body["error"]["param"]) == (400, "messages")

        status, _, body = raw_request(conn, "POST", "/v1/embeddings", b'{"model": "e", "input": 5}')
        assert (status, body["error"]["param"]) == (400, "input")

        status, _, body = raw_request(conn, "GET", "/v1/nope")
        assert status == 404
        assert set(body["error"]) == {"message", "type", "param", "code"}

        status, headers, _ = raw_request(conn, "GET", "/v1/chat/completions")
        assert (status, headers["Allow"]) == (405, "POST")
    finally:
        conn.close()
    counters = server.counters()
    assert (counters["errors"], counters["connections"], counters["admitted"]) == (5, 1, 0)


def test_stop_is_prompt_with_idle_keep_alive_connections() -> None:
    mock = MockLLM().start()
    try:
        with openai.OpenAI(base_url=mock.url, api_key="test", max_retries=0) as oa:
            oa.chat.completions.create(model="m", messages=USER)
            port = mock.port
            started = time.monotonic()
            mock.stop()
            assert time.monotonic() - started < 2.0
            with pytest.raises(ConnectionRefusedError):
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
    finally:
        mock.stop()


# -- processes ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mock_llm_process_runs_out_of_process() -> None:
    script = [{"match": "ping", "response": {"content": "pong"}}]
    proc = MockLLMProcess(max_concurrency=4, script=script)
    with proc:
        pid = proc.pid
        assert pid != os.getpid()
        with openai.OpenAI(base_url=proc.url, api_key="test", max_retries=0) as oa:
            response = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping"}])
        assert response.choices[0].message.content == "pong"
        counters = proc.counters()
        assert (counters["chat_requests"], counters["admitted"], counters["in_flight"]) == (1, 1, 0)
        proc.reset_counters()
        assert proc.counters()["chat_requests"] == 0
        proc.configure(latency=0.01)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped, not merely signalled
    proc.stop()  # idempotent


@pytest.mark.slow
def test_cli_prints_its_address_and_stops_on_sigterm() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "agentaccel.mockllm", "--port", "0", "--max-concurrency", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(read_line(child.stdout))
        assert info == {"url": f"http://127.0.0.1:{info['port']}/v1", "port": info["port"]}
        assert control(info["url"], "counters")["requests"] == 0
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_cli_arguments_and_bad_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.latency, args.max_concurrency, args.rpm) == (
        "127.0.0.1",
        8000,
        0.0,
        None,
        None,
    )
    bad = tmp_path / "script.json"
    bad.write_text(json.dumps([{"match": "x"}]))
    assert main(["--port", "0", "--script", str(bad)]) == 2
    assert "rule 0" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_cli_rejects_a_port_out_of_range(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    import agentaccel.cli

    # socket.bind() raises OverflowError for these, which is not an OSError: checked before binding.
    assert agentaccel.cli.main(["mock-llm", "--port", port]) == 2
    assert capsys.readouterr().err == (
        f"mock-llm: port must be an integer from 0 to 65535 (0 picks a free one), got {port}\n"
    )
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        MockLLMProcess(port=70000)  # before a child is started that could never report its port
