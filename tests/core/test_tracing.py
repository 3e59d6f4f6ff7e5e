"""The built-in tracing plugin: span names and attributes per the GenAI semantic conventions, errors, parent/child
across nesting, threads and asyncio tasks, de-duplication of calls an enclosing frame owns, the duration histogram,
and the application's own TracerProvider left in place."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder

DURATION = "gen_ai.client.operation.duration"


def chat_request(call: agentaccel.Call) -> Mapping[str, Any]:
    return {"model": "gpt-x", "temperature": 0.2, "stop": "END", "messages": [{"role": "user", "content": "hi"}]}


def usage(result: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"gen_ai.usage.input_tokens": result["usage"]["in"], "gen_ai.usage.output_tokens": result["usage"]["out"],
            "gen_ai.response.model": result.get("model")}


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None, f"{child.name} has no parent"
    assert parent.context is not None and child.context is not None
    return (child.parent.span_id == parent.context.span_id
            and child.context.trace_id == parent.context.trace_id)


def duration_points(recorder: SpanRecorder) -> list[tuple[dict[str, Any], int]]:
    """(attributes, count) of each point of the duration histogram."""
    data = recorder.metric_reader.get_metrics_data()
    points = []
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == DURATION:
                    assert metric.unit == "s"
                    points.extend((dict(p.attributes), p.count) for p in metric.data.data_points)
    return points


# --- names and attributes ----------------------------------------------------------------------------------------


def test_a_tool_call_is_an_internal_execute_tool_span(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="search")
    def search(query: str) -> list[str]:
        return [query]

    assert search("otel") == ["otel"]

    span = agentaccel_spans.span("execute_tool search")
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert span.attributes["gen_ai.tool.name"] == "search"
    assert "gen_ai.provider.name" not in span.attributes
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "agentaccel.python"
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


def test_a_chat_call_is_a_client_span_named_after_the_model(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(operation="chat", provider="openai", request=chat_request, describe=usage)
    def complete(prompt: str) -> dict[str, Any]:
        return {"text": "hello", "usage": {"in": 12, "out": 3}}

    complete("hi")

    span = agentaccel_spans.span("chat gpt-x")
    assert span.kind is SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.request.model"] == "gpt-x"
    assert span.attributes["gen_ai.request.temperature"] == 0.2
    assert tuple(span.attributes["gen_ai.request.stop_sequences"]) == ("END",)  # type: ignore[arg-type]
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert span.attributes["gen_ai.usage.input_tokens"] == 12
    assert span.attributes["gen_ai.usage.output_tokens"] == 3
    assert "gen_ai.response.model" not in span.attributes  # None values are left out
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "agentaccel.python"


class Annotating(agentaccel.Middleware):
    """Annotates while deciding, may answer without running the original (as a cache hit), and annotates again
    after the outcome (as a cache storing a miss)."""

    name = "cache"

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer

    def flow(self, call: agentaccel.Call) -> Any:
        call.annotate("agentaccel.test.decided", "before")
        if self.answer is not None:
            yield agentaccel.Return(self.answer)
            return
        yield agentaccel.PROCEED
        call.annotate("agentaccel.test.decided", "after")  # changed after the span started
        call.annotate("agentaccel.test.stored", True)


class AnnotatingPlugin:
    def __init__(self, middleware: agentaccel.Middleware) -> None:
        self.middleware = middleware

    @agentaccel.hookimpl
    def agentaccel_register_middleware(self, register: Any) -> None:
        register(self.middleware)


@pytest.mark.parametrize("answered", [False, True], ids=["ran", "answered"])
def test_annotations_and_the_description_reach_the_span_in_one_piece(agentaccel_spans: SpanRecorder,
                                                                          register: Any, answered: bool) -> None:
    result = {"text": "hello", "usage": {"in": 12, "out": 3}, "model": "gpt-x-1"}
    register(AnnotatingPlugin(Annotating(result if answered else None)), "annotating")
    agentaccel_spans.enable()
    inner: list[Any] = []

    @agentaccel.accelerate(operation="chat", provider="openai", request=chat_request, describe=usage)
    def complete(prompt: str) -> dict[str, Any]:
        time.sleep(0.01)
        inner.append(trace.get_current_span().get_span_context().span_id)
        return result

    before = time.time_ns()
    assert complete("hi") == result
    span = agentaccel_spans.span("chat gpt-x")
    assert span.attributes is not None and span.start_time is not None and span.end_time is not None
    assert before <= span.start_time <= span.end_time
    assert span.attributes["gen_ai.request.model"] == "gpt-x"
    if answered:  # nothing ran inside it, and nothing was used: no usage to count, no response to describe
        assert span.attributes["agentaccel.test.decided"] == "before" and inner == []
        assert "gen_ai.usage.input_tokens" not in span.attributes and "gen_ai.response.model" not in span.attributes
    else:  # the original ran inside it; the last value of an annotation wins
        assert span.context is not None and inner == [span.context.span_id]
        assert span.attributes["agentaccel.test.decided"] == "after"
        assert span.attributes["agentaccel.test.stored"] is True
        assert span.end_time - span.start_time >= 10_000_000
        assert span.attributes["gen_ai.usage.input_tokens"] == 12
        assert span.attributes["gen_ai.response.model"] == "gpt-x-1"


class SlowAnswer(agentaccel.Middleware):
    """Waits through an Io effect (as an L2 lookup does), then answers, or refuses the call on purpose."""

    name = "cache"

    def __init__(self, answer: Any, refuse: bool = False) -> None:
        self.answer = answer
        self.refuse = refuse

    def accepts(self, target: agentaccel.Target) -> bool:
        return target.operation == "chat"

    def flow(self, call: agentaccel.Call) -> Any:
        yield agentaccel.Io(lambda: time.sleep(0.02), lambda: asyncio.sleep(0.02))
        call.annotate("agentaccel.test.waited", True)
        if self.refuse:
            raise agentaccel.AgentAccelError("refused on purpose")
        yield agentaccel.Return(self.answer)


@pytest.mark.parametrize("mode", ["sync", "async", "sync_stream", "async_stream"])
@pytest.mark.parametrize("refuse", [False, True], ids=["answered", "refused"])
def test_a_call_answered_inside_tracing_is_one_span_from_its_start_under_its_parent(
        agentaccel_spans: SpanRecorder, register: Any, mode: str, refuse: bool) -> None:
    # The span of a call a middleware answers starts only at the end, with every attribute at once: it must
    # still say when the call began, sit under the caller's span, and carry a refusal as an error.
    answer = [{"text": "hi"}]
    register(AnnotatingPlugin(SlowAnswer(answer, refuse)), "slow")
    agentaccel_spans.enable()

    def never() -> Any:
        raise AssertionError("answered by the middleware")

    async def anever() -> Any:
        raise AssertionError("answered by the middleware")

    def gnever() -> Any:
        raise AssertionError("answered by the middleware")
        yield

    async def agnever() -> Any:
        raise AssertionError("answered by the middleware")
        yield

    async def read(stream: Any) -> list[Any]:
        return [chunk async for chunk in stream]

    original = {"sync": never, "async": anever, "sync_stream": gnever, "async_stream": agnever}[mode]
    complete = agentaccel.wrap(original, operation="chat", name="complete", provider="openai", request=chat_request)

    @agentaccel.accelerate(operation="invoke_agent", name="caller")
    def caller() -> Any:
        result = complete()
        if mode == "async":
            return asyncio.run(result)
        if mode == "async_stream":
            return asyncio.run(read(result))
        return list(result) if mode == "sync_stream" else result

    before = time.time_ns()
    if refuse:
        with pytest.raises(agentaccel.AgentAccelError, match="refused on purpose"):
            caller()
    else:
        assert caller() == answer
    span = agentaccel_spans.span("chat gpt-x")
    assert span.attributes is not None and span.start_time is not None and span.end_time is not None
    assert is_child(span, agentaccel_spans.span("invoke_agent caller"))
    assert before <= span.start_time and span.end_time - span.start_time >= 20_000_000
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert span.attributes["gen_ai.request.model"] == "gpt-x"
    assert span.attributes["agentaccel.test.waited"] is True
    if refuse:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "AgentAccelError"
        assert [e.name for e in span.events] == ["exception"]
    else:
        assert span.status.status_code is StatusCode.UNSET
    if mode.endswith("stream") and not refuse:
        assert span.attributes["agentaccel.stream.chunks"] == 1


def test_a_streamed_chat_is_described_from_its_last_chunk(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(operation="chat", request=chat_request, describe=usage)
    async def stream(prompt: str) -> Any:
        yield {"text": "hel", "usage": {"in": 0, "out": 0}}
        yield {"text": "lo", "usage": {"in": 7, "out": 2}, "model": "gpt-x-2025"}

    async def read() -> list[Any]:
        return [chunk async for chunk in stream("hi")]

    assert len(asyncio.run(read())) == 2

    span = agentaccel_spans.span("chat gpt-x")
    assert span.attributes is not None
    assert span.attributes["gen_ai.usage.input_tokens"] == 7
    assert span.attributes["gen_ai.response.model"] == "gpt-x-2025"
    assert span.attributes["agentaccel.stream.chunks"] == 2
    assert span.attributes["agentaccel.stream.completed"] is True
    assert span.attributes["agentaccel.mode"] == "async_stream"


def test_a_replayed_stream_has_its_counts_but_no_usage(agentaccel_spans: SpanRecorder, register: Any) -> None:
    chunks = [{"text": "hel", "usage": {"in": 0, "out": 0}}, {"text": "lo", "usage": {"in": 7, "out": 2}}]
    register(AnnotatingPlugin(Annotating(chunks)), "annotating")
    agentaccel_spans.enable()

    @agentaccel.accelerate(operation="chat", request=chat_request, describe=usage)
    def stream(prompt: str) -> Any:
        raise AssertionError("answered by the middleware")
        yield

    assert list(stream("hi")) == chunks
    span = agentaccel_spans.span("chat gpt-x")
    assert span.attributes is not None
    assert span.attributes["agentaccel.stream.chunks"] == 2
    assert span.attributes["agentaccel.stream.completed"] is True
    assert "gen_ai.usage.input_tokens" not in span.attributes


def test_agent_and_workflow_spans(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(operation="invoke_agent", name="researcher", provider="acme-ai")
    def agent(task: str) -> str:
        return task

    @agentaccel.accelerate(operation="invoke_workflow", name="triage")
    async def workflow(task: str) -> str:
        return task

    agent("t")
    asyncio.run(workflow("t"))

    agent_span = agentaccel_spans.span("invoke_agent researcher")
    assert agent_span.kind is SpanKind.INTERNAL
    assert agent_span.attributes is not None
    assert agent_span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent_span.attributes["gen_ai.agent.name"] == "researcher"
    assert agent_span.attributes["gen_ai.provider.name"] == "acme-ai"
    workflow_span = agentaccel_spans.span("invoke_workflow triage")
    assert workflow_span.kind is SpanKind.INTERNAL
    assert workflow_span.attributes is not None
    assert workflow_span.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert workflow_span.parent is None


def test_the_scope_tags_spans(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="lookup")
    def lookup() -> int:
        return 1

    @agentaccel.accelerate(operation="chat", request=chat_request)
    def chat() -> str:
        return "ok"

    with agentaccel.scope(tenant="acme", user="u1"):
        lookup()
        chat()
    lookup()

    tagged = [s for s in agentaccel_spans.spans() if s.attributes and "agentaccel.scope.tenant" in s.attributes]
    assert sorted(s.name for s in tagged) == ["chat gpt-x", "execute_tool lookup"]
    for span in tagged:
        assert span.attributes is not None
        assert span.attributes["agentaccel.scope.tenant"] == "acme"
        assert span.attributes["agentaccel.scope.user"] == "u1"
    assert len(agentaccel_spans.spans()) == 3


def test_a_failed_call_is_an_error_span_with_an_exception_event(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="flaky")
    def flaky() -> None:
        raise ValueError("upstream said no")

    with pytest.raises(ValueError, match="upstream said no"):
        flaky()

    span = agentaccel_spans.span("execute_tool flaky")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "upstream said no"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert events[0].attributes is not None
    assert events[0].attributes["exception.type"] == "ValueError"
    assert events[0].attributes["exception.message"] == "upstream said no"


def test_no_spans_once_disabled(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="lookup")
    def lookup() -> int:
        return 1

    agentaccel.disable()
    assert lookup() == 1
    assert agentaccel_spans.spans() == []


# --- parent and child ----------------------------------------------------------------------------------------------


def test_nested_accelerated_calls_are_parent_and_child(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="search")
    def search(query: str) -> str:
        return query

    @agentaccel.accelerate(operation="invoke_agent", name="researcher")
    def agent(task: str) -> str:
        return search(task)

    agent("t")

    assert is_child(agentaccel_spans.span("execute_tool search"), agentaccel_spans.span("invoke_agent researcher"))


def _fan_out_to_threads() -> None:
    @agentaccel.accelerate(name="leaf")
    def leaf(i: int) -> int:
        return i

    class Worker(threading.Thread):
        def run(self) -> None:  # overrides run: the context must still get in
            leaf(2)

    @agentaccel.accelerate(operation="invoke_agent", name="fanout")
    def fanout() -> None:
        thread = threading.Thread(target=leaf, args=(1,))
        thread.start()
        thread.join()
        worker = Worker()
        worker.start()
        worker.join()
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert pool.submit(leaf, 3).result() == 3
            assert list(pool.map(leaf, [4, 5])) == [4, 5]

    fanout()


def test_calls_in_threads_and_thread_pools_are_children(agentaccel_spans: SpanRecorder) -> None:
    _fan_out_to_threads()

    parent = agentaccel_spans.span("invoke_agent fanout")
    leaves = [s for s in agentaccel_spans.spans() if s.name == "execute_tool leaf"]
    assert len(leaves) == 5
    for leaf in leaves:
        assert is_child(leaf, parent)


def test_without_the_threads_plugin_a_threads_span_is_not_a_child(
    agentaccel_spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "threads")
    agentaccel.disable()
    rt = agentaccel_spans.enable()
    assert {p.name: p.status for p in rt.plugins}["threads"] == "disabled"

    @agentaccel.accelerate(name="leaf")
    def leaf() -> None:
        pass

    @agentaccel.accelerate(operation="invoke_agent", name="spawner")
    def spawner() -> None:
        thread = threading.Thread(target=leaf)
        thread.start()
        thread.join()

    spawner()

    agentaccel_spans.span("invoke_agent spawner")
    assert agentaccel_spans.span("execute_tool leaf").parent is None


def test_asyncio_tasks_are_children(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="fetch")
    async def fetch(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @agentaccel.accelerate(operation="invoke_agent", name="gatherer")
    async def gatherer() -> list[int]:
        return list(await asyncio.gather(fetch(1), fetch(2), asyncio.create_task(fetch(3))))

    assert asyncio.run(gatherer()) == [1, 2, 3]

    parent = agentaccel_spans.span("invoke_agent gatherer")
    children = [s for s in agentaccel_spans.spans() if s.name == "execute_tool fetch"]
    assert len(children) == 3
    for child in children:
        assert is_child(child, parent)


# --- de-duplication: one span per call an enclosing frame does not already own -------------------------------------


def test_a_method_accelerated_on_a_base_class_and_a_subclass_calling_super_is_one_span(
    agentaccel_spans: SpanRecorder,
) -> None:
    class Agent:
        @agentaccel.accelerate(operation="invoke_agent", name="agent")
        def run(self, task: str) -> str:
            return f"base:{task}"

    class Special(Agent):
        @agentaccel.accelerate(operation="invoke_agent", name="agent")
        def run(self, task: str) -> str:
            return "special+" + super().run(task)

    assert Special().run("t") == "special+base:t"
    assert [s.name for s in agentaccel_spans.spans()] == ["invoke_agent agent"]

    # another instance is another call, even of the same method
    agentaccel_spans.clear()

    class Manager(Agent):
        @agentaccel.accelerate(operation="invoke_agent", name="agent")
        def run(self, task: str) -> str:
            return Agent().run(task)

    Manager().run("t")
    outer, inner = sorted(agentaccel_spans.spans(), key=lambda s: s.start_time or 0)
    assert is_child(inner, outer)


def test_a_chat_inside_a_chat_is_one_span(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(operation="chat", name="client", provider="openai",
                           request=lambda call: {"model": "gpt-inner"})
    def client_chat(prompt: str) -> str:
        return "answer"

    @agentaccel.accelerate(operation="chat", name="framework", request=lambda call: {"model": "gpt-outer"})
    def framework_chat(prompt: str) -> str:
        return client_chat(prompt)

    assert framework_chat("hi") == "answer"

    assert [s.name for s in agentaccel_spans.spans()] == ["chat gpt-outer"]


def test_a_tool_inside_an_agent_is_two_nested_spans(agentaccel_spans: SpanRecorder) -> None:
    class Agent:
        @agentaccel.accelerate(name="calculator")
        def tool(self, x: int) -> int:
            return x + 1

        @agentaccel.accelerate(operation="invoke_agent", name="math")
        def run(self, x: int) -> int:
            return self.tool(x)

    assert Agent().run(1) == 2

    assert is_child(agentaccel_spans.span("execute_tool calculator"), agentaccel_spans.span("invoke_agent math"))


def test_a_recursive_function_is_nested_spans(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="countdown")
    def countdown(n: int) -> int:
        return 0 if n == 0 else countdown(n - 1)

    countdown(2)

    spans = sorted(agentaccel_spans.spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in spans] == ["execute_tool countdown"] * 3
    assert spans[0].parent is None
    assert is_child(spans[1], spans[0])
    assert is_child(spans[2], spans[1])


# --- the duration histogram ------------------------------------------------------------------------------------


def test_the_duration_histogram_is_recorded_with_error_type_on_failures(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(name="maybe")
    def maybe(fail: bool) -> None:
        if fail:
            raise TimeoutError("slow upstream")

    @agentaccel.accelerate(operation="chat", provider="openai", request=chat_request)
    def chat() -> str:
        return "ok"

    maybe(False)
    maybe(False)
    with pytest.raises(TimeoutError):
        maybe(True)
    chat()

    points = duration_points(agentaccel_spans)
    assert sorted(points, key=lambda p: sorted(p[0].items())) == sorted([
        ({"gen_ai.operation.name": "execute_tool"}, 2),
        ({"gen_ai.operation.name": "execute_tool", "error.type": "TimeoutError"}, 1),
        ({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-x"}, 1),
    ], key=lambda p: sorted(p[0].items()))


# --- the application's TracerProvider -----------------------------------------------------------------------------

USER_PROVIDER_SCRIPT = textwrap.dedent("""
    import json
    import sys

    from opentelemetry import trace

    if sys.argv[1] == "user-provider":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

    import agentaccel

    agentaccel.enable()

    @agentaccel.accelerate
    def lookup():
        return 1

    lookup()
    if sys.argv[1] == "user-provider":
        print(json.dumps({"kept": trace.get_tracer_provider() is provider,
                          "spans": [s.name for s in exporter.get_finished_spans()]}))
""")


@pytest.mark.slow
def test_an_application_tracer_provider_is_never_replaced(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    script = tmp_path / "app.py"
    script.write_text(USER_PROVIDER_SCRIPT)
    env = {**subprocess_env, "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}

    def run(variant: str) -> str:
        done = subprocess.run([sys.executable, str(script), variant], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    # the control: with no provider of the application's, OTEL_TRACES_EXPORTER=console does set one up
    assert '"name": "execute_tool lookup"' in run("no-provider")
    # with the application's provider, agentaccel records into it and sets up nothing of its own
    out = run("user-provider")
    assert json.loads(out) == {"kept": True, "spans": ["execute_tool lookup"]}


def test_a_streamed_chat_inside_a_streamed_chat_is_one_span(agentaccel_spans: SpanRecorder) -> None:
    @agentaccel.accelerate(operation="chat", request=lambda call: {"model": "gpt-inner"})
    async def client_stream() -> Any:
        yield "a"
        yield "b"

    @agentaccel.accelerate(operation="chat", request=lambda call: {"model": "gpt-outer"})
    async def framework_stream() -> Any:
        async for chunk in client_stream():
            yield chunk

    async def read() -> list[str]:
        return [chunk async for chunk in framework_stream()]

    assert asyncio.run(read()) == ["a", "b"]
    assert [s.name for s in agentaccel_spans.spans()] == ["chat gpt-outer"]


def test_llm_instrumentations_underneath_a_model_call_are_told_it_is_recorded(agentaccel_spans: SpanRecorder) -> None:
    # An OpenLLMetry-style instrumentation of a client library: it records its own span for a model call unless
    # the context carries the suppression key those instrumentations honour.
    from opentelemetry import context, trace

    tracer = agentaccel_spans.tracer_provider.get_tracer("openllmetry-style")

    def instrumented_client_create(prompt: str) -> str:
        if context.get_value("suppress_language_model_instrumentation"):
            return prompt.upper()
        with tracer.start_as_current_span("openai.chat"):
            return prompt.upper()

    @agentaccel.accelerate(operation="chat", name="framework-model", request=lambda call: {"model": "m"})
    def framework_chat(prompt: str) -> str:
        return instrumented_client_create(prompt)

    @agentaccel.accelerate(name="tool")
    def tool(prompt: str) -> str:
        return instrumented_client_create(prompt)

    assert framework_chat("hi") == "HI"
    assert [s.name for s in agentaccel_spans.spans()] == ["chat m"]  # one span for the one request
    agentaccel_spans.clear()
    assert tool("hi") == "HI"  # only model calls suppress: a tool's client call is its own operation
    assert sorted(s.name for s in agentaccel_spans.spans()) == ["execute_tool tool", "openai.chat"]
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize("grpc_installed", [True, False])
def test_an_otlp_protocol_mistake_names_the_variable_that_was_set(grpc_installed: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from agentaccel._otel import exporter_names

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")  # the general one, overridden for traces
    if grpc_installed:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
        expected = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json' is not supported"
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
        # None in sys.modules makes the import fail as it does where the gRPC exporter is not installed
        monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
        expected = "OTLP over gRPC was asked for (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc) but its exporter is not"
    with pytest.raises(agentaccel.ConfigError) as caught:
        exporter_names("auto")
    assert str(caught.value).startswith(expected)
