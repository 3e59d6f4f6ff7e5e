"""``agentaccel demo``: a small tool-using agent in plain Python, talking over real HTTP to the built-in mock
LLM, run with agentaccel enabled; prints the span tree agentaccel recorded and a summary.

The agent is what a user would write without any framework: a chat function, two tools and a loop, each
accelerated with one decorator. Questions are answered on a thread pool, so the tree also shows that spans keep
their parents across threads.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import agentaccel
from agentaccel._otel import export_requested, tracer_provider

CITIES = ["Paris", "Lima", "Oslo", "Kyoto", "Accra", "Perth", "Quito", "Turin"]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
]


def _chat_request(call: agentaccel.Call) -> Mapping[str, Any]:
    return {"model": call.kwargs.get("model", "mock-gpt"), "messages": call.args[1], "tools": TOOLS,
            "temperature": 0.0}


def _chat_usage(response: Mapping[str, Any]) -> Mapping[str, Any]:
    usage = response.get("usage", {})
    return {"gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
            "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
            "gen_ai.response.model": response.get("model"), "gen_ai.response.id": response.get("id")}


@agentaccel.accelerate(operation="chat", name="mock-gpt", provider="openai", request=_chat_request,
                       describe=_chat_usage)
def chat(base_url: str, messages: list[dict[str, Any]], model: str = "mock-gpt") -> dict[str, Any]:
    body = json.dumps({"model": model, "messages": messages, "tools": TOOLS, "temperature": 0.0}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@agentaccel.accelerate(name="get_weather", pure=True)
def get_weather(city: str) -> str:
    return f"{city}: {12 + len(city)} C, light wind"


@agentaccel.accelerate(name="get_time")
def get_time(city: str) -> str:
    return f"{city}: {(len(city) * 5) % 24:02d}:00"


TOOL_FUNCTIONS = {"get_weather": get_weather, "get_time": get_time}


@agentaccel.accelerate(operation="invoke_agent", name="travel-agent")
def agent(base_url: str, question: str) -> str:
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for _ in range(4):
        message = chat(base_url, messages)["choices"][0]["message"]
        messages.append(message)
        if not message.get("tool_calls"):
            return str(message["content"])
        for tool_call in message["tool_calls"]:
            function = tool_call["function"]
            result = TOOL_FUNCTIONS[function["name"]](**json.loads(function["arguments"]))
            messages.append({"role": "tool", "tool_call_id": tool_call["id"], "content": result})
    return "gave up"


@agentaccel.accelerate(operation="invoke_workflow", name="trip-planner")
def plan_trip(base_url: str, questions: list[str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda q: agent(base_url, q), questions))


def run_demo(questions: int = 6, latency: float = 0.05) -> int:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentaccel.mockllm import MockLLM

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    if export_requested("auto"):  # also send them where the OTEL_* variables say
        exporting = tracer_provider("auto")
        print(f"spans are also exported as configured by OTEL_* ({type(exporting).__name__})")
        assert isinstance(exporting, TracerProvider)
        provider = exporting
        provider.add_span_processor(SimpleSpanProcessor(memory))
    # The mock LLM fills a tool's string arguments with the user's message, so the question is just the city.
    asked = [CITIES[i % len(CITIES)] for i in range(questions)]
    with MockLLM(latency=latency) as llm:
        agentaccel.enable(tracer_provider=provider)
        try:
            with agentaccel.scope(tenant="demo"):
                answers = plan_trip(llm.url, asked)
        finally:
            agentaccel.disable()
        counters = llm.counters()
    for question, answer in zip(asked, answers, strict=True):
        print(f"Q: weather in {question}?\nA: {answer}")
    spans: list[ReadableSpan] = list(memory.get_finished_spans())
    print(f"\nagentaccel recorded {len(spans)} spans:")
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)

    def show(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        tokens = ""
        if "gen_ai.usage.input_tokens" in attributes:
            tokens = (f"  tokens in/out {attributes['gen_ai.usage.input_tokens']!s}/"
                      f"{attributes['gen_ai.usage.output_tokens']!s}")
        print(f"{'  ' * depth}{span.name:<{40 - 2 * depth}} {ms:8.1f} ms{tokens}")
        for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    by_operation: dict[str, int] = {}
    answered: dict[str, int] = {}  # calls a cache plugin answered without running them
    for span in spans:
        operation = str((span.attributes or {}).get("gen_ai.operation.name"))
        by_operation[operation] = by_operation.get(operation, 0) + 1
        # The attribute the cache plugin sets; read by name, as that plugin need not be installed.
        if (span.attributes or {}).get("agentaccel.cache.result") in ("hit", "coalesced"):
            answered[operation] = answered.get(operation, 0) + 1
    print("\nspans by operation: " + ", ".join(f"{k}={v}" for k, v in sorted(by_operation.items())))
    print(f"mock LLM served {counters['chat_requests']} chat requests over {counters['connections']} connections")
    if answered:  # otherwise more chat spans than requests served looks like lost requests
        print("the cache answered (hit or coalesced): " + ", ".join(f"{k}={v}" for k, v in sorted(answered.items())))
    return 0
