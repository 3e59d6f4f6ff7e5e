"""Per-call cost of agentaccel with no middleware but its span, against a bare call and a bare OTel SDK span,
and the cost of ``import agentaccel; agentaccel.enable()`` over a bare interpreter.

    uv run python tests/benchmarks/bench_overhead.py

Each variant runs in interleaved rounds in one process and the medians are compared, so a noisy neighbour
shifts all of them alike. Targets (issue 2): accelerated <= 1.2x the bare span; import+enable <= 150 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import agentaccel


class _Discard(SpanExporter):
    """Exports nowhere, so the batch processor's queue drains and we measure span creation, not I/O."""

    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _per_call_ns(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls


def per_call(rounds: int, calls: int) -> dict[str, float]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1 << 16))
    tracer = provider.get_tracer("bench")

    def tool(q: str) -> str:
        return q

    def bare() -> object:
        return tool("q")

    def bare_span() -> object:
        with tracer.start_as_current_span("execute_tool search"):
            return tool("q")

    accelerated_tool = agentaccel.wrap(tool, name="search")
    agentaccel.enable(tracer_provider=provider)

    def accelerated() -> object:
        return accelerated_tool("q")

    variants = {"bare call": bare, "bare OTel SDK span": bare_span, "accelerated (span only)": accelerated}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        _per_call_ns(fn, calls // 10)  # warm up
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_per_call_ns(fn, calls))
    agentaccel.disable()
    provider.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


def _run_ms(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - start) * 1000


def startup(rounds: int) -> tuple[float, float]:
    bare, enabled = [], []
    for _ in range(rounds):
        bare.append(_run_ms("pass"))
        enabled.append(_run_ms("import agentaccel; agentaccel.enable()"))
    return statistics.median(bare), statistics.median(enabled)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    results = per_call(args.rounds, args.calls)
    span = results["bare OTel SDK span"]
    print(f"per-call cost, median of {args.rounds} interleaved rounds of {args.calls} calls")
    for name, ns in results.items():
        print(f"  {name:<26} {ns / 1000:8.2f} us   {ns / span:5.2f}x bare span")
    ratio = results["accelerated (span only)"] / span
    print(f"accelerated / bare span = {ratio:.2f}x (target <= 1.20x): {'PASS' if ratio <= 1.2 else 'FAIL'}")
    bare_ms, enabled_ms = startup(max(5, args.rounds // 2))
    extra = enabled_ms - bare_ms
    print(f"interpreter start {bare_ms:.0f} ms; with import agentaccel + enable() {enabled_ms:.0f} ms")
    print(f"import+enable cost = {extra:.0f} ms (target <= 150 ms): {'PASS' if extra <= 150 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
