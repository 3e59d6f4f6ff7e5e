"""The LangChain adapter against LangChain's own best setup, measured side by side in one run.

    UV_PROJECT_ENVIRONMENT=.nox/langchain-env uv run --locked --exact --package agentaccel-langchain \\
        --group test python tests/benchmarks/bench_langchain.py

(a) Hit latency of ``ChatOpenAI.invoke(messages)`` (2 messages, ~1.2 KB): agentaccel's cache against LangChain's
    InMemoryCache; spans go to an SDK provider with a BatchSpanProcessor that exports nowhere. Targets: <= 0.5x
    with no callback handler, <= 1.1x with one attached. Many short windows (--calls, 100 calls, about 25 ms)
    in interleaved rounds (--rounds), each round's order reversed in the next: on a shared machine the speed of
    the CPU drifts by up to a third from one quarter second to the next, and short alternating windows see the same
    machine. Each window ends with the provider's force_flush(), so it pays for exporting its own spans and
    leaves none to the next; each round starts after a full collection. Printed for each variant: the median of
    its per-round ratios to InMemoryCache's hit and a 95% bootstrap interval of that median. Beside the targets,
    in the same rounds: InMemoryCache's hit timed again (what the method's noise alone makes of a ratio); the
    agentaccel hit with spans off (a NoOpTracerProvider); that same hit inside a bare SDK span with the hit's
    name, kind and attributes (what recording the span costs in place, with none of agentaccel's tracing code);
    and that span alone, around nothing. Before them, that span's own cost called in a loop and right after an
    8 MB copy: what the CPU's caches cost it.
(b) 200 tasks for a LangGraph tool-using agent (create_agent, two tools), half of them repeats, against the mock
    provider in its own process capped at 8 concurrent with 50 ms latency: plain; LangChain's native setup
    (InMemoryCache + InMemoryRateLimiter tuned to the cap + batch max_concurrency 8); agentaccel (cache + limit
    rule max_concurrency 8, batch max_concurrency 32). Targets for agentaccel: upstream calls = distinct requests,
    zero 429s, wall time <= 0.8x native. The three setups run in interleaved rounds (--workload-rounds), each
    round's order reversed in the next, with the same batch mode (--mode: batch() on a thread pool or abatch() on
    one event loop); medians are printed, with a 95% interval of the wall-time ratio's, and the process CPU time
    of each run, because the workload is CPU-bound in the framework on a small machine, with the garbage
    collector's part of it: spans wait in the BatchSpanProcessor's queue until exported, so each run with spans
    makes more young collections. Each run starts after a full collection, so that a full collection the runs
    before it made due falls in none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
os.environ["LANGSMITH_TRACING"] = "false"
os.environ.pop("LANGCHAIN_TRACING_V2", None)

from benchutil import (
    GcClock,
    discarding_provider,
    in_span,
    in_turn,
    median_interval,
    per_call_ns,
    recorded_span,
    span_after_cache_pollution,
)
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import set_llm_cache
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from opentelemetry.trace import NoOpTracerProvider

import agentaccel
from agentaccel.mockllm import MockLLMProcess

LATENCY, CAP = 0.05, 8
PROVIDER = discarding_provider()


class Handler(BaseCallbackHandler):
    """A handler that does nothing: what it costs LangChain to tell one is all that is measured."""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


#: What (a) times against LangChain's InMemoryCache hit in the same round: that hit again (the ratio noise alone makes),
#: agentaccel's hit, the same with spans off, that inside a bare SDK span like the hit's, and that span around nothing.
VARIANTS = ("native", "native again", "agentaccel", "spans off", "in place", "span alone")


def hit_latency(url: str, rounds: int, calls: int) -> None:
    messages = [SystemMessage("You are a careful assistant. " * 20), HumanMessage("Summarise the plan. " * 30)]
    size = sum(len(str(m.content)) for m in messages)
    model = ChatOpenAI(base_url=url, api_key="bench", model="gpt-4o-mini")
    configs: dict[str, Any] = {"no handler": None, "handler": {"callbacks": [Handler()]}}

    def record(provider: Any, cfg: Any) -> None:
        agentaccel.enable(tracer_provider=provider)
        model.invoke(messages, config=cfg)
        model.invoke(messages, config=cfg)
        agentaccel.disable()

    spans = {label: recorded_span(lambda provider, cfg=cfg: record(provider, cfg)) for label, cfg in configs.items()}
    tracer = PROVIDER.get_tracer("bench")

    def window(label: str, variant: str) -> float:
        cfg = configs[label]

        def invoke() -> object:
            return model.invoke(messages, config=cfg)

        if variant.startswith("native"):
            set_llm_cache(InMemoryCache())
        elif variant != "span alone":
            agentaccel.enable(tracer_provider=PROVIDER if variant == "agentaccel" else NoOpTracerProvider())
        fn = in_span(tracer, spans[label], invoke if variant == "in place" else lambda: None) \
            if variant in ("in place", "span alone") else invoke
        try:
            fn()  # the miss that fills the cache, outside the window
            return per_call_ns(fn, calls, collect=False, flush=PROVIDER)
        finally:
            agentaccel.disable()
            set_llm_cache(None)

    ratios: dict[tuple[str, str], list[float]] = {}
    for turn in range(rounds):
        gc.collect()  # once a round: its windows pay for their own spans' young collections, none for a full one
        order = [(label, variant) for label in configs for variant in VARIANTS]
        times = {key: window(*key) for key in in_turn(order, turn)}
        for label, variant in order:
            ratios.setdefault((label, variant), []).append(times[label, variant] / times[label, "native"])
    cold, hot = span_after_cache_pollution(tracer, spans["handler"], calls)
    print(f"(a) hit latency, {size} chars in 2 messages, {rounds} interleaved rounds of {calls}-call windows (each "
          f"ending with its spans' export); ratios to InMemoryCache's hit in the same round: median [95% interval]")
    print(f"    the hit's bare SDK span costs {hot / 1000:.1f} us called in a loop, {cold / 1000:.1f} us right after "
          f"an 8 MB copy (the CPU's caches emptied of its code and data, as work between two spans can empty them)")

    def shown(label: str, variant: str) -> str:
        median, low, high = median_interval(ratios[label, variant])
        return f"{median:.2f}x [{low:.2f}-{high:.2f}]"

    for label, target in (("no handler", 0.5), ("handler", 1.1)):
        median = statistics.median(ratios[label, "agentaccel"])
        print(f"    {label:10s}: agentaccel / InMemoryCache = {shown(label, 'agentaccel')} (target <= {target}x) "
              f"{verdict(median <= target)}; InMemoryCache against itself {shown(label, 'native again')}; with "
              f"spans off {shown(label, 'spans off')}, and that inside a bare SDK span with the hit's "
              f"{len(spans[label].attributes or {})} attributes {shown(label, 'in place')}; the span alone "
              f"{shown(label, 'span alone')}")


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def population(city: str) -> int:
    """How many people live in a city."""
    return 1000 + len(city)


SCRIPT = [{"match": "weather", "response": {"tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]}}]


SETUPS = ("plain", "native", "agentaccel")


def _agent(url: str, setup: str) -> Any:
    """A fresh agent for one run of ``setup``, with LangChain's global cache and agentaccel set up for it."""
    from langchain.agents import create_agent

    agentaccel.disable()
    set_llm_cache(None)
    kwargs: dict[str, Any] = {}
    if setup == "native":
        set_llm_cache(InMemoryCache())
        # The cap as a rate: CAP requests per LATENCY seconds, bursts of at most CAP.
        kwargs["rate_limiter"] = InMemoryRateLimiter(requests_per_second=CAP / LATENCY, check_every_n_seconds=0.01,
                                                     max_bucket_size=CAP)
    elif setup == "agentaccel":
        agentaccel.enable(tracer_provider=PROVIDER, limit={"rules": [
            {"name": "provider", "provider": "openai", "max_concurrency": CAP}]})
    model = ChatOpenAI(base_url=url, api_key="bench", model="gpt-4o-mini", max_retries=8, **kwargs)
    return create_agent(model, [weather, population], name="bench_agent")


def _concurrency(setup: str, agentaccel_concurrency: int) -> int:
    # LangChain's native setup bounds the batch at the server's cap (the "max_concurrency 8"); plain runs
    # as wide as agentaccel. agentaccel's limit bounds the upstream calls, so the batch can run wider and let
    # cached steps, tools and the framework's own work proceed while up to CAP calls are upstream.
    return CAP if setup == "native" else agentaccel_concurrency


@contextlib.contextmanager
def _measured(server: Any) -> Iterator[dict[str, float]]:
    """Wall and CPU time of the block, the garbage collector's share, and the server's counts, into the dict it
    yields. From a full collection, as per_call_ns: each run pays for its own garbage, not for the run before."""
    server.reset_counters()
    gc.collect()
    result: dict[str, float] = {}
    with GcClock() as clock:
        start, cpu = time.perf_counter(), time.process_time()
        yield result
        result.update(wall=time.perf_counter() - start, cpu=time.process_time() - cpu)
    counters = server.counters()
    result.update(gc=clock.seconds, young=clock.collections[0], full=clock.collections[2],
                  upstream=counters["admitted"], retries=counters["chat_requests"] - counters["admitted"])
    result["429s"] = counters["rate_limited"]


def _failed(outputs: list[Any]) -> int:
    return sum(isinstance(o, BaseException) for o in outputs)


def _run_sync(server: Any, setup: str, inputs: list[Any], concurrency: int) -> dict[str, float]:
    agent = _agent(server.url, setup)
    with _measured(server) as result:
        outputs = agent.batch(inputs, config={"max_concurrency": concurrency}, return_exceptions=True)
    return {**result, "failed": _failed(outputs)}


async def _run_async(server: Any, setup: str, inputs: list[Any], concurrency: int) -> dict[str, float]:
    agent = _agent(server.url, setup)
    with _measured(server) as result:
        outputs = await agent.abatch(inputs, config={"max_concurrency": concurrency}, return_exceptions=True)
    return {**result, "failed": _failed(outputs)}


def agent_workload(tasks: int, rounds: int, mode: str, concurrency: int) -> None:
    distinct = [f"weather report number {i}" for i in range(tasks // 2)]
    questions = distinct + distinct
    random.Random(7).shuffle(questions)
    inputs = [{"messages": [HumanMessage(q)]} for q in questions]
    runs: dict[str, list[dict[str, float]]] = {setup: [] for setup in SETUPS}
    with MockLLMProcess(latency=LATENCY, max_concurrency=CAP, retry_after=0.05, script=SCRIPT) as server:

        async def all_async() -> None:
            # One event loop for every run: langchain-openai keeps its async HTTP client per base URL, and a
            # client made on a closed loop fails ("Event loop is closed").
            for turn in range(rounds):
                for setup in in_turn(SETUPS, turn):
                    runs[setup].append(await _run_async(server, setup, inputs, _concurrency(setup, concurrency)))

        if mode == "async":
            asyncio.run(all_async())
        else:
            for turn in range(rounds):  # interleaved, so a noisy neighbour slows every setup alike
                for setup in in_turn(SETUPS, turn):
                    runs[setup].append(_run_sync(server, setup, inputs, _concurrency(setup, concurrency)))
        agentaccel.disable()
        set_llm_cache(None)
    print(f"(b) agent workload: {tasks} tasks ({tasks // 2} distinct), server cap {CAP}, latency "
          f"{LATENCY * 1000:.0f} ms; distinct upstream requests = {tasks}; {mode} batch, {rounds} interleaved "
          f"rounds, medians (batch max_concurrency: native {CAP}, plain and agentaccel {concurrency})")
    for setup, results in runs.items():
        r = {key: statistics.median(run[key] for run in results) for key in results[0]}
        walls = " ".join(f"{run['wall']:.2f}" for run in results)
        print(f"    {setup:10s}: wall {r['wall']:.2f} s ({walls}), cpu {r['cpu']:.2f} s (gc {r['gc']:.2f} s: "
              f"{r['young']:.0f} young, {r['full']:.0f} full collections), upstream LLM calls {r['upstream']:.0f}, "
              f"429s {r['429s']:.0f}, retries {r['retries']:.0f}, failed tasks {r['failed']:.0f}")
    ours = runs["agentaccel"]
    upstream = max(run["upstream"] for run in ours)
    limited = max(run["429s"] for run in ours)
    print(f"    agentaccel upstream calls = distinct requests (max over rounds {upstream:.0f} = {tasks}): "
          f"{verdict(all(run['upstream'] == tasks for run in ours))}")
    print(f"    agentaccel 429s = 0 (max over rounds {limited:.0f}): {verdict(limited == 0)}")
    ratio, low, high = median_interval([a["wall"] / n["wall"] for a, n in zip(ours, runs["native"], strict=True)])
    print(f"    agentaccel wall / native wall = {ratio:.2f}x [95% interval {low:.2f}-{high:.2f}], median of per-round "
          f"ratios (target <= 0.8x): {verdict(ratio <= 0.8)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds of (a)")
    parser.add_argument("--calls", type=int, default=100, help="calls in each timing window of (a)")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workload-rounds", type=int, default=6, help="interleaved rounds of (b)")
    parser.add_argument("--mode", choices=("sync", "async"), default="sync",
                        help="(b) runs the agents with batch() (a thread pool) or abatch() (one event loop)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="(b) batch max_concurrency of plain and agentaccel (native uses the cap)")
    parser.add_argument("--only", choices=("a", "b"), help="run one of the two benchmarks")
    args = parser.parse_args()
    if args.only != "b":
        with MockLLMProcess() as server:
            hit_latency(server.url, args.rounds, args.calls)
    if args.only != "a":
        agent_workload(args.tasks, args.workload_rounds, args.mode, args.concurrency)


if __name__ == "__main__":
    main()
