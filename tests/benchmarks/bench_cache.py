"""Cost of a cache hit, against the work it replaces, and the memory bound of the in-process level.

    uv run python tests/benchmarks/bench_cache.py

- L1 hit: a 2-message (~1.2 KB) chat request through the generic adapter (``agentaccel.wrap``), span included,
  against a bare OTel SDK span around the bare function. Target <= 1.6x.
- L2 hit: the same call answered from a real redis-server (L1 off, span included), against a raw redis-py GET
  plus the same decode of the same bytes. Target <= 1.5x. The hit's GET skips redis-py's per-command pool checks
  (see the Redis backend's ``_Free``); it is also timed alone, so that the printout says how much of the ratio
  that GET makes.
- Floors, in the same rounds: the span each hit records (its name, kind and attributes), as a bare SDK span
  around the same work (for L2, with the hit's own GET) with none of agentaccel's code. What a hit costs beyond
  that is agentaccel's.
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

from benchutil import discarding_provider, in_span, per_call_ns, recorded_span

import agentaccel

MESSAGES = [
    {"role": "system", "content": "You are a meticulous assistant for a travel agency. " * 10},
    {"role": "user", "content": "Find me three quiet hotels near the old town, under 150 EUR a night. " * 8},
]
RESULT = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Here are three hotels: A, B and C."}}],
          "usage": {"prompt_tokens": 310, "completion_tokens": 12, "total_tokens": 322}}


Rows = dict[str, tuple[float, float]]  # variant -> (median ns per call, median per-round ratio to the first)


def _rounds(variants: dict[str, Callable[[], object]], rounds: int, calls: int) -> Rows:
    """Each variant against the first, measured in interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    base = next(iter(variants))
    for fn in variants.values():
        per_call_ns(fn, max(1, calls // 10))
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(per_call_ns(fn, calls))
        for name in variants:
            ratios[name].append(samples[name][-1] / samples[base][-1])
    return {name: (statistics.median(samples[name]), statistics.median(ratios[name])) for name in variants}


def _print(title: str, rows: Rows, target: float) -> None:
    print(title)
    for name, (ns, ratio) in rows.items():
        print(f"  {name:<58} {ns / 1000:8.2f} us {ratio:7.3f}x")
    *_, (hit, (_, ratio)) = rows.items()
    base, floor = list(rows)[:2]
    print(f"{hit} / {base} = {ratio:.3f}x (target <= {target:.2f}x): {'PASS' if ratio <= target else 'FAIL'}; "
          f"the floor, {floor}, is {rows[floor][1]:.3f}x")


def chat(model: str, messages: list[dict[str, str]], temperature: float = 0.0) -> dict[str, Any]:
    return RESULT


def l1_hit(rounds: int, calls: int) -> Rows:
    provider = discarding_provider()
    tracer = provider.get_tracer("bench")

    def bare_span() -> object:
        with tracer.start_as_current_span("chat gpt-4o-mini"):
            return chat("gpt-4o-mini", MESSAGES)

    cached = agentaccel.wrap(chat, operation=agentaccel.CHAT, name="chat", provider="openai")
    assert len(json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})) > 1100

    def hit() -> object:
        return cached("gpt-4o-mini", MESSAGES)

    def record(capture: object) -> None:
        agentaccel.enable(tracer_provider=capture, cache={"backend": ""})
        hit()
        hit()
        agentaccel.disable()

    span = recorded_span(record)
    agentaccel.enable(tracer_provider=provider, cache={"backend": ""})
    hit()  # the miss that fills L1
    try:
        return _rounds({"bare OTel SDK span": bare_span,
                        f"SDK span with the hit's {len(span.attributes or {})} attributes":
                            in_span(tracer, span, lambda: chat("gpt-4o-mini", MESSAGES)),
                        "accelerated L1 hit (span incl.)": hit}, rounds, calls)
    finally:
        agentaccel.disable()
        provider.shutdown()


def l2_hit(rounds: int, calls: int) -> Rows | None:
    from agentaccel.testing.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        print("L2 benchmark skipped: redis-server is not installed")
        return None
    import redis
    from agentaccel_cache.plugin import active
    from agentaccel_cache.values import load, to_result

    provider = discarding_provider()
    with RedisServer() as server:
        cached = agentaccel.wrap(chat, operation=agentaccel.CHAT, name="chat", provider="openai")
        config = {"backend": server.url, "max_bytes": 0, "namespace": "b"}

        def record(capture: object) -> None:
            agentaccel.enable(tracer_provider=capture, cache=config)
            cached("gpt-4o-mini", MESSAGES)  # the miss that fills L2
            cached("gpt-4o-mini", MESSAGES)
            agentaccel.disable()

        span = recorded_span(record)
        agentaccel.enable(tracer_provider=provider, cache=config)
        client = redis.Redis.from_url(server.url)
        (key,) = [k.decode() for k in client.scan_iter(match="b:e:*")]

        def decoded(blob: bytes) -> object:
            entry, data = load(blob, key, None)
            return to_result(agentaccel.JSON_CODEC, entry.stream, data)

        def raw_get_decode() -> object:
            return decoded(client.get(key))

        backend = active().backend  # type: ignore[union-attr]
        assert backend is not None

        def direct_get_decode() -> object:  # the hit's own GET: a connection without the pool's checks
            return decoded(backend.get(key).run())

        def hit() -> object:
            return cached("gpt-4o-mini", MESSAGES)

        assert hit() == raw_get_decode() == direct_get_decode() == RESULT
        try:
            return _rounds({"raw redis-py GET + decode": raw_get_decode,
                            f"the hit's GET + decode in an SDK span with its {len(span.attributes or {})} "
                            "attributes": in_span(provider.get_tracer("bench"), span, direct_get_decode),
                            "the hit's GET + decode": direct_get_decode,
                            "accelerated L2 hit (span incl.)": hit}, rounds, calls)
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

    _print(f"L1 hit, median of {args.rounds} interleaved rounds of {args.calls} calls",
           l1_hit(args.rounds, args.calls), 1.6)
    l2 = l2_hit(args.rounds, max(1, args.calls // 5))
    if l2 is not None:
        _print(f"L2 hit, median of {args.rounds} interleaved rounds of {max(1, args.calls // 5)} calls", l2, 1.5)

    out = subprocess.run([sys.executable, __file__, "--rss-child"], capture_output=True, text=True, check=True)
    rss = json.loads(out.stdout)
    share = rss["growth"] / rss["bound"]
    print(f"RSS growth after filling L1 (max_bytes = 64 MiB, {rss['entries']} entries, {rss['calls']} calls): "
          f"{rss['growth'] / (1 << 20):.1f} MiB = {share:.3f}x the bound (target within 10 %): "
          f"{'PASS' if abs(share - 1) <= 0.10 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
