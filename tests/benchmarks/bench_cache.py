"""Cost of a cache hit, against the work it replaces, and the memory bound of the in-process level.

    uv run python tests/benchmarks/bench_cache.py

- L1 hit: a 2-message (~1.2 KB) chat request through the generic adapter (``agentaccel.wrap``), span included,
  against a bare OTel SDK span around the bare function. Target <= 1.6x.
- L2 hit: the same call answered from a real redis-server (L1 off, span included), against a raw redis-py GET
  plus the same decode of the same bytes. Target <= 1.5x.
- RSS: growth after filling L1 (``max_bytes`` = 64 MiB) with varied entries, in a fresh child process.
  Target: within 10 % of the bound.

Variants run in interleaved rounds in one process; the ratio is taken within each round and the median reported.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from benchutil import discarding_provider, per_call_ns

import agentaccel

MESSAGES = [
    {"role": "system", "content": "You are a meticulous assistant for a travel agency. " * 10},
    {"role": "user", "content": "Find me three quiet hotels near the old town, under 150 EUR a night. " * 8},
]
RESULT = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Here are three hotels: A, B and C."}}],
          "usage": {"prompt_tokens": 310, "completion_tokens": 12, "total_tokens": 322}}


def _rounds(variants: dict[str, Callable[[], object]], numerator: str, denominator: str, rounds: int,
            calls: int) -> tuple[dict[str, float], float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        per_call_ns(fn, max(1, calls // 10))
    ratios = []
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(per_call_ns(fn, calls))
        ratios.append(samples[numerator][-1] / samples[denominator][-1])
    return {name: statistics.median(v) for name, v in samples.items()}, statistics.median(ratios)


def chat(model: str, messages: list[dict[str, str]], temperature: float = 0.0) -> dict[str, Any]:
    return RESULT


def l1_hit(rounds: int, calls: int) -> tuple[dict[str, float], float]:
    provider = discarding_provider()
    tracer = provider.get_tracer("bench")

    def bare_span() -> object:
        with tracer.start_as_current_span("chat gpt-4o-mini"):
            return chat("gpt-4o-mini", MESSAGES)

    cached = agentaccel.wrap(chat, operation=agentaccel.CHAT, name="chat", provider="openai")
    agentaccel.enable(tracer_provider=provider, cache={"backend": ""})
    cached("gpt-4o-mini", MESSAGES)  # the miss that fills L1
    assert len(json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})) > 1100

    def hit() -> object:
        return cached("gpt-4o-mini", MESSAGES)

    try:
        return _rounds({"bare OTel SDK span": bare_span, "accelerated L1 hit (span incl.)": hit},
                       "accelerated L1 hit (span incl.)", "bare OTel SDK span", rounds, calls)
    finally:
        agentaccel.disable()
        provider.shutdown()


def l2_hit(rounds: int, calls: int) -> tuple[dict[str, float], float] | None:
    from agentaccel.testing.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        print("L2 benchmark skipped: redis-server is not installed")
        return None
    import redis
    from agentaccel_cache.values import load, to_result

    provider = discarding_provider()
    with RedisServer() as server:
        cached = agentaccel.wrap(chat, operation=agentaccel.CHAT, name="chat", provider="openai")
        agentaccel.enable(tracer_provider=provider, cache={"backend": server.url, "max_bytes": 0, "namespace": "b"})
        cached("gpt-4o-mini", MESSAGES)
        client = redis.Redis.from_url(server.url)
        (key,) = [k.decode() for k in client.scan_iter(match="b:e:*")]

        def raw_get_decode() -> object:
            entry, data = load(client.get(key), key, None)
            return to_result(agentaccel.JSON_CODEC, entry.stream, data)

        def hit() -> object:
            return cached("gpt-4o-mini", MESSAGES)

        assert hit() == raw_get_decode() == RESULT
        try:
            return _rounds({"raw redis-py GET + decode": raw_get_decode, "accelerated L2 hit (span incl.)": hit},
                           "accelerated L2 hit (span incl.)", "raw redis-py GET + decode", rounds, calls)
        finally:
            agentaccel.disable()
            provider.shutdown()
            client.close()


def _release_free_heap() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc), so that neither RSS reading counts memory
    that is free: otherwise the fill reuses pages the imports left resident and the growth reads low."""
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: the reading is a little less exact
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_child() -> None:
    """Fill L1 to its 64 MiB bound with varied entries; print the RSS growth in bytes and the bound."""
    import psutil

    bound = 64 << 20
    agentaccel.enable(cache={"max_bytes": bound})
    filler = agentaccel.wrap(lambda i, size: {"i": i, "text": "x" * size, "items": list(range(size % 40))},
                             operation=agentaccel.CHAT, name="fill")
    from agentaccel_cache.plugin import active

    cache = active()
    assert cache is not None
    _release_free_heap()
    before = psutil.Process().memory_info().rss
    i = 0
    while cache.l1.evictions < 2000:  # well past full: the bound, not the fill, decides what stays
        filler(i, 200 + (i * 7919) % 4000)
        i += 1
    _release_free_heap()
    growth = psutil.Process().memory_info().rss - before
    print(json.dumps({"growth": growth, "bound": bound, "entries": cache.l1.entries, "l1_bytes": cache.l1.bytes,
                      "calls": i}))


def main() -> int:
    parser = argparse.ArgumentParser(description="Cost of cache hits and the memory bound of L1.")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child()
        return 0

    results, ratio = l1_hit(args.rounds, args.calls)
    print(f"L1 hit, median of {args.rounds} interleaved rounds of {args.calls} calls")
    for name, ns in results.items():
        print(f"  {name:<34} {ns / 1000:8.2f} us")
    print(f"L1 hit / bare span = {ratio:.3f}x (target <= 1.60x): {'PASS' if ratio <= 1.6 else 'FAIL'}")

    l2 = l2_hit(args.rounds, max(1, args.calls // 5))
    if l2 is not None:
        results, ratio = l2
        print(f"L2 hit, median of {args.rounds} interleaved rounds of {max(1, args.calls // 5)} calls")
        for name, ns in results.items():
            print(f"  {name:<34} {ns / 1000:8.2f} us")
        print(f"L2 hit / raw GET + decode = {ratio:.3f}x (target <= 1.50x): {'PASS' if ratio <= 1.5 else 'FAIL'}")

    out = subprocess.run([sys.executable, __file__, "--rss-child"], capture_output=True, text=True, check=True)
    rss = json.loads(out.stdout)
    share = rss["growth"] / rss["bound"]
    print(f"RSS growth after filling L1 (max_bytes = 64 MiB, {rss['entries']} entries, {rss['calls']} calls): "
          f"{rss['growth'] / (1 << 20):.1f} MiB = {share:.3f}x the bound (target within 10 %): "
          f"{'PASS' if abs(share - 1) <= 0.10 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
