"""The LangChain adapter against LangChain's own best setup, measured side by side in one run.

    UV_PROJECT_ENVIRONMENT=.nox/langchain-env uv run --locked --exact --package agentaccel-langchain \\
        --group test python tests/benchmarks/bench_langchain.py

(a) Hit latency of ``ChatOpenAI.invoke(messages)`` (2 messages, ~1.2 KB): agentaccel's cache against LangChain's
    InMemoryCache, interleaved rounds, median of per-round ratios; spans go to an SDK provider that exports
    nowhere. Targets: <= 0.5x with no callback handler, <= 1.1x with one attached.
(b) 200 tasks for a LangGraph tool-using agent (create_agent, two tools), half of them repeats, against the mock
    provider in its own process capped at 8 concurrent with 50 ms latency: plain; LangChain's native setup
    (InMemoryCache + InMemoryRateLimiter tuned to the cap + batch max_concurrency 8); agentaccel (cache + limit
    rule max_concurrency 8, batch max_concurrency 32). Targets for agentaccel: upstream calls = distinct requests,
    zero 429s, wall time <= 0.8x native.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
os.environ["LANGSMITH_TRACING"] = "false"
os.environ.pop("LANGCHAIN_TRACING_V2", None)

from benchutil import discarding_provider, per_call_ns
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import set_llm_cache
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import agentaccel
from agentaccel.mockllm import MockLLMProcess

LATENCY, CAP = 0.05, 8
PROVIDER = discarding_provider()


class Handler(BaseCallbackHandler):
    """A handler that does nothing: what it costs LangChain to tell one is all that is measured."""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def hit_latency(url: str, rounds: int, calls: int) -> None:
    messages = [SystemMessage("You are a careful assistant. " * 20), HumanMessage("Summarise the plan. " * 30)]
    size = sum(len(str(m.content)) for m in messages)
    model = ChatOpenAI(base_url=url, api_key="bench", model="gpt-4o-mini")
    config: Any = {"callbacks": [Handler()]}
    ratios: dict[str, list[float]] = {"no handler": [], "handler": []}
    for _ in range(rounds):
        for label, cfg in (("no handler", None), ("handler", config)):
            agentaccel.disable()
            set_llm_cache(InMemoryCache())
            model.invoke(messages, config=cfg)  # prime
            native = per_call_ns(lambda cfg=cfg: model.invoke(messages, config=cfg), calls)
            set_llm_cache(None)
            agentaccel.enable(tracer_provider=PROVIDER)
            model.invoke(messages, config=cfg)  # prime
            ours = per_call_ns(lambda cfg=cfg: model.invoke(messages, config=cfg), calls)
            agentaccel.disable()
            ratios[label].append(ours / native)
    print(f"(a) hit latency, {size} chars in 2 messages, {rounds} rounds x {calls} calls")
    for label, target in (("no handler", 0.5), ("handler", 1.1)):
        median = statistics.median(ratios[label])
        print(f"    {label:10s}: agentaccel / InMemoryCache = {median:.2f}x (target <= {target}x) "
              f"{verdict(median <= target)}")


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def population(city: str) -> int:
    """How many people live in a city."""
    return 1000 + len(city)


SCRIPT = [{"match": "weather", "response": {"tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]}}]


def agent_workload(tasks: int) -> None:
    from langchain.agents import create_agent

    distinct = [f"weather report number {i}" for i in range(tasks // 2)]
    inputs = distinct + distinct
    random.Random(7).shuffle(inputs)
    results: dict[str, dict[str, float]] = {}
    with MockLLMProcess(latency=LATENCY, max_concurrency=CAP, retry_after=0.05, script=SCRIPT) as server:
        for setup in ("plain", "native", "agentaccel"):
            agentaccel.disable()
            set_llm_cache(None)
            kwargs: dict[str, Any] = {}
            concurrency = 32
            if setup == "native":
                set_llm_cache(InMemoryCache())
                kwargs["rate_limiter"] = InMemoryRateLimiter(requests_per_second=CAP / LATENCY,
                                                             check_every_n_seconds=0.01, max_bucket_size=CAP)
                concurrency = CAP
            elif setup == "agentaccel":
                agentaccel.enable(tracer_provider=PROVIDER, limit={"rules": [
                    {"name": "provider", "provider": "openai", "max_concurrency": CAP}]})
            model = ChatOpenAI(base_url=server.url, api_key="bench", model="gpt-4o-mini", max_retries=8, **kwargs)
            agent = create_agent(model, [weather, population], name="bench_agent")
            server.reset_counters()
            start = time.perf_counter()
            outputs = agent.batch([{"messages": [HumanMessage(q)]} for q in inputs],
                                  config={"max_concurrency": concurrency}, return_exceptions=True)
            wall = time.perf_counter() - start
            counters = server.counters()
            failed = sum(isinstance(o, BaseException) for o in outputs)
            results[setup] = {"wall": wall, "upstream": counters["admitted"], "429s": counters["rate_limited"],
                              "retries": counters["chat_requests"] - counters["admitted"], "failed": failed}
        agentaccel.disable()
        set_llm_cache(None)
    print(f"(b) agent workload: {tasks} tasks ({tasks // 2} distinct), server cap {CAP}, latency {LATENCY * 1000:.0f}"
          " ms; distinct upstream requests = " + str(tasks))  # two model calls per distinct task
    for setup, r in results.items():
        print(f"    {setup:10s}: wall {r['wall']:.2f} s, upstream LLM calls {r['upstream']:.0f}, "
              f"429s {r['429s']:.0f}, retries {r['retries']:.0f}, failed tasks {r['failed']:.0f}")
    ours, native = results["agentaccel"], results["native"]
    print(f"    agentaccel upstream calls = distinct requests ({ours['upstream']:.0f} = {tasks}): "
          f"{verdict(ours['upstream'] == tasks)}")
    print(f"    agentaccel 429s = 0 ({ours['429s']:.0f}): {verdict(ours['429s'] == 0)}")
    ratio = ours["wall"] / native["wall"]
    print(f"    agentaccel wall / native wall = {ratio:.2f}x (target <= 0.8x): {verdict(ratio <= 0.8)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    with MockLLMProcess() as server:
        hit_latency(server.url, args.rounds, args.calls)
    agent_workload(args.tasks)


if __name__ == "__main__":
    main()
