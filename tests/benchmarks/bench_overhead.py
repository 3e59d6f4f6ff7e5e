"""Per-call cost of agentaccel with no middleware but its span, against a bare call and a bare OTel SDK span,
and the cost of ``import agentaccel; agentaccel.enable()`` over a bare interpreter.

    uv run python tests/benchmarks/bench_overhead.py

Each variant runs in interleaved rounds in one process; the ratio is taken within each round and the median
ratio reported, so a noisy neighbour shifts the variants of a round alike. Start-up is the fastest of several
interleaved runs of each command (noise only ever adds). Targets (issue 2): accelerated <= 1.2x the bare span;
import+enable <= 150 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from benchutil import discarding_provider, per_call_ns

import agentaccel


def per_call(rounds: int, calls: int) -> tuple[dict[str, float], float]:
    provider = discarding_provider()
    tracer = provider.get_tracer("bench")

    def tool(q: str) -> str:
        return q

    def bare() -> object:
        return tool("q")

    def bare_span() -> object:
        with tracer.start_as_current_span("execute_tool search"):
            return tool("q")

    same_attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}

    def bare_span_attributes() -> object:
        with tracer.start_as_current_span("execute_tool search", attributes=same_attributes):
            return tool("q")

    accelerated_tool = agentaccel.wrap(tool, name="search")
    agentaccel.enable(tracer_provider=provider)

    def accelerated() -> object:
        return accelerated_tool("q")

    variants = {"bare call": bare, "bare OTel SDK span": bare_span,
                "bare span + our 2 attributes": bare_span_attributes, "accelerated (span only)": accelerated}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        per_call_ns(fn, calls // 10)  # warm up
    ratios = []
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(per_call_ns(fn, calls))
        ratios.append(samples["accelerated (span only)"][-1] / samples["bare OTel SDK span"][-1])
    agentaccel.disable()
    provider.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}, statistics.median(ratios)


def _run_ms(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - start) * 1000


def startup(rounds: int) -> tuple[float, float]:
    bare, enabled = [], []
    for _ in range(rounds):
        bare.append(_run_ms("pass"))
        enabled.append(_run_ms("import agentaccel; agentaccel.enable()"))
    return min(bare), min(enabled)


def main() -> int:
    parser = argparse.ArgumentParser(description="Per-call and start-up overhead of agentaccel.")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    results, ratio = per_call(args.rounds, args.calls)
    span = results["bare OTel SDK span"]
    print(f"per-call cost, median of {args.rounds} interleaved rounds of {args.calls} calls")
    for name, ns in results.items():
        print(f"  {name:<30} {ns / 1000:8.2f} us   {ns / span:5.2f}x bare span")
    print(f"accelerated / bare span = {ratio:.3f}x, median of per-round ratios (target <= 1.20x): "
          f"{'PASS' if ratio <= 1.2 else 'FAIL'}")
    bare_ms, enabled_ms = startup(max(7, args.rounds // 3))
    extra = enabled_ms - bare_ms
    print(f"interpreter start {bare_ms:.0f} ms; with import agentaccel + enable() {enabled_ms:.0f} ms (fastest runs)")
    print(f"import+enable cost = {extra:.0f} ms (target <= 150 ms): {'PASS' if extra <= 150 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
