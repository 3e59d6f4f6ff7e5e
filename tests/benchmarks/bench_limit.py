"""The limit plugin against the OpenAI-compatible mock provider (its own process, real HTTP), with the targets of
the limit issue. Every figure is a ratio to the ideal computed from the configured latency and cap (calls x
latency / cap), so a busy machine shows up as a worse ratio, never as a false pass. Each part also prints what
one call takes alone with the same client: the floor no limiter can beat on this machine.

    uv run --all-packages --group dev --with langchain-core python tests/benchmarks/bench_limit.py [--client openai]

(a) Server capped at 8 concurrent, 50 ms latency; 400 calls from 64 threads. Interleaved rounds of: no limiter,
    a hand-written threading.Semaphore(8), agentaccel (rule max_concurrency = 8), LangChain's InMemoryRateLimiter
    tuned to the cap (8 / 50 ms = 160 req/s, bucket 8, checked every 10 ms; skipped when langchain_core is not
    importable). Target for agentaccel: zero 429s and wall time <= 1.05x ideal.
(b) 4 processes sharing one Redis rule of 8 (a real redis-server), 100 calls each from 16 threads, beside the same
    processes limiting themselves to 2 each without Redis. The wall time runs from "go" until the last process
    reports its last call done (not until the processes have exited: interpreter teardown is no part of the
    workload). Target: server in-flight peak <= 8 and wall time <= 1.10x ideal.
(c) adaptive = true with the cap (8) unknown to the client; 64 threads for --adaptive-seconds. Target: >= 85 % of
    ideal throughput after the first second and < 2 % of calls answered 429.

The client. Every row of every part uses the same one: by default (--client http) a pool of keep-alive
http.client connections posting the OpenAI chat completion JSON and parsing the JSON answer
(bench_limit_worker.ChatClient). The openai SDK (--client openai) spends 1-3 ms of CPU per call in pydantic and
httpx; on a 2-core machine, with 64 threads (or 4 processes of 16) in one GIL, that CPU and not the limiter set
the pace, so the SDK measured the client. Either way the agentaccel rows make real intercepted calls
(agentaccel.wrap with operation "chat" and provider "openai": the tracing and limit middleware run), and a 429
reaches the limit plugin as an exception carrying the response's status and Retry-After headers, the shape its
feedback recognizes in httpx's and the SDK's errors (checked against agentaccel_limit.rate_limited on the first
429 each run sees).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentaccel_limit import rate_limited
from bench_limit_worker import CLIENTS, is_429, make_call

import agentaccel
from agentaccel.mockllm import MockLLMProcess
from agentaccel.testing.redis_server import RedisServer

# Every call of the workload is the same request: the cache plugin (when installed) would answer or coalesce them,
# and this measures limiting, not caching. Children inherit the setting.
os.environ["AGENTACCEL_DISABLE_PLUGINS"] = "cache"
LATENCY = 0.05
CAP = 8
WORKER = str(Path(__file__).with_name("bench_limit_worker.py"))
#: The client every row uses; set from --client.
CLIENT = "http"


def client(server: MockLLMProcess, connections: int) -> tuple[Callable[[], Any], type[Exception]]:
    return make_call(CLIENT, server.url, connections)


def floor(call: Callable[[], Any]) -> float:
    """Seconds one call takes alone (median of 30, after 5 to warm up): client + server + the latency."""
    times = []
    for i in range(35):
        start = time.perf_counter()
        call()
        if i >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(call: Callable[[], Any], failure: type[Exception], calls: int | None, threads: int,
        seconds: float | None = None, before: Callable[[], None] | None = None) -> tuple[float, int, list[float]]:
    """``calls`` calls (or as many as fit in ``seconds``) from ``threads`` threads: wall time, 429s, and the
    completion times (since start) of the calls that succeeded. Checks that the limit plugin's feedback reads
    the first 429 as a 429 with the server's Retry-After, as it would a provider SDK's error."""
    lock = threading.Lock()
    state = {"left": calls if calls is not None else 1 << 62, "limited": 0}
    done: list[float] = []
    seen: list[Exception] = []
    start = time.perf_counter()

    def work() -> None:
        while True:
            with lock:
                if state["left"] <= 0 or (seconds is not None and time.perf_counter() - start >= seconds):
                    return
                state["left"] -= 1
            if before is not None:
                before()
            try:
                call()
            except failure as exc:
                if not is_429(exc):
                    raise
                with lock:
                    state["limited"] += 1
                    seen[:] = seen or [exc]
                continue
            with lock:
                done.append(time.perf_counter() - start)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    if seen and rate_limited(seen[0]) != (True, LATENCY):
        raise AssertionError(f"the limit plugin reads {seen[0]!r} as {rate_limited(seen[0])}, not a 429 with "
                             f"Retry-After {LATENCY}s")
    return wall, state["limited"], done


def langchain_limiter() -> Callable[[], None] | None:
    try:
        from langchain_core.rate_limiters import InMemoryRateLimiter
    except ImportError:
        return None
    limiter = InMemoryRateLimiter(requests_per_second=CAP / LATENCY, check_every_n_seconds=0.01,
                                  max_bucket_size=CAP)
    return lambda: limiter.acquire(blocking=True) and None


def bench_single(rounds: int, calls: int, threads: int) -> bool:
    ideal = calls * LATENCY / CAP
    print(f"(a) one process: server cap {CAP}, latency {LATENCY * 1000:.0f} ms, {calls} calls from {threads} threads; "
          f"ideal {ideal:.2f}s; median of {rounds} interleaved rounds")
    rows: dict[str, list[tuple[float, int, int]]] = {"no limiter": [], "hand-written Semaphore(8)": [],
                                                    "agentaccel limit": [], "langchain InMemoryRateLimiter": []}
    has_langchain = langchain_limiter() is not None
    with MockLLMProcess(latency=LATENCY, max_concurrency=CAP, retry_after=LATENCY) as server:
        call, failure = client(server, threads)
        run(call, failure, 16, 4)  # warm the code paths
        single = floor(call)
        print(f"    one call alone takes {single * 1000:.2f} ms ({CLIENT} client + server + {LATENCY * 1000:.0f} ms "
              f"latency): the floor is {single / LATENCY:.3f}x ideal")
        semaphore = threading.Semaphore(CAP)

        def guarded() -> Any:
            with semaphore:
                return call()

        for _ in range(rounds):
            for name in rows:
                server.reset_counters()
                if name == "agentaccel limit":
                    agentaccel.enable(limit={"rules": [{"name": "provider", "provider": "openai",
                                                        "max_concurrency": CAP}]})
                if name.startswith("langchain"):
                    before = langchain_limiter()
                    if before is None:
                        continue
                    wall, limited, _ = run(call, failure, calls, threads, before=before)
                else:
                    wall, limited, _ = run(guarded if name.startswith("hand") else call, failure, calls, threads)
                agentaccel.disable()
                rows[name].append((wall, limited, server.counters()["in_flight_peak"]))
    for name, results in rows.items():
        if not results:
            print(f"    {name:<32} skipped: langchain_core is not importable (run with --with langchain-core)")
            continue
        wall = statistics.median(r[0] for r in results)
        median_429s = statistics.median(r[1] for r in results)
        peak = max(r[2] for r in results)
        print(f"    {name:<32} wall {wall:6.2f}s = {wall / ideal:5.2f}x ideal   429s {median_429s:5.0f} of {calls}   "
              f"server in-flight peak {peak}")
    ours = rows["agentaccel limit"]
    ratio = statistics.median(r[0] for r in ours) / ideal
    versus = statistics.median(a[0] / b[0] for a, b in zip(ours, rows["hand-written Semaphore(8)"], strict=True))
    print(f"    agentaccel / hand-written semaphore, median of per-round ratios: {versus:.3f}x")
    ok = ratio <= 1.05 and all(r[1] == 0 for r in ours)
    print(f"    target: agentaccel zero 429s and <= 1.05x ideal: {ratio:.3f}x, "
          f"{sum(r[1] for r in ours)} 429s -> {'PASS' if ok else 'FAIL'}"
          + ("" if has_langchain else " (langchain row skipped)"))
    return ok


def bench_processes(rounds: int, processes: int, calls: int, threads: int) -> bool:
    total = processes * calls
    ideal = total * LATENCY / CAP
    print(f"(b) {processes} processes sharing a Redis rule of {CAP}: {calls} calls each from {threads} threads; "
          f"ideal {ideal:.2f}s; median of {rounds} rounds")
    share = f"in-process rule of {CAP // processes} each (no Redis)"
    rows: dict[str, list[tuple[float, int, int]]] = {"Redis rule of 8": [], share: []}
    with RedisServer() as redis, MockLLMProcess(latency=LATENCY, max_concurrency=CAP, retry_after=LATENCY) as server:
        single = floor(client(server, 1)[0])
        print(f"    one call alone takes {single * 1000:.2f} ms ({CLIENT} client + server + {LATENCY * 1000:.0f} ms "
              f"latency): the floor is {single / LATENCY:.3f}x ideal")
        for _ in range(rounds):
            for name in rows:
                url, cap = (redis.url, CAP) if name.startswith("Redis") else ("none", CAP // processes)
                argv = [sys.executable, WORKER, url, server.url, str(cap), str(threads), str(calls), CLIENT]
                children = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                            for _ in range(processes)]
                for child in children:
                    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
                server.reset_counters()
                start = time.perf_counter()
                for child in children:
                    assert child.stdin is not None
                    child.stdin.write("go\n")
                    child.stdin.flush()
                # The wall time ends when the last child reports its last call done, not when the children have
                # exited: tearing an interpreter down is no part of the workload (nor of (a)'s wall time).
                summaries = [json.loads(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
                wall = time.perf_counter() - start
                for child in children:
                    child.communicate(timeout=60)
                rows[name].append((wall, sum(s["rate_limited"] for s in summaries),
                                   server.counters()["in_flight_peak"]))
    for name, results in rows.items():
        wall = statistics.median(r[0] for r in results)
        print(f"    {name:<40} wall {wall:6.2f}s = {wall / ideal:5.2f}x ideal   429s {sum(r[1] for r in results):4d}"
              f"   server in-flight peak {max(r[2] for r in results)}")
    ours = rows["Redis rule of 8"]
    ratio = statistics.median(r[0] for r in ours) / ideal
    versus = statistics.median(a[0] / b[0] for a, b in zip(ours, rows[share], strict=True))
    print(f"    Redis / {share}, median of per-round ratios: {versus:.3f}x")
    ok = max(r[2] for r in ours) <= CAP and ratio <= 1.10 and all(r[1] == 0 for r in ours)
    print(f"    target: peak <= {CAP} and <= 1.10x ideal: {ratio:.3f}x -> {'PASS' if ok else 'FAIL'}")
    return ok


def bench_adaptive(seconds: float, threads: int) -> bool:
    ideal_rate = CAP / LATENCY
    print(f"(c) adaptive, the cap ({CAP}) unknown to the client: {threads} threads for {seconds:g}s; ideal "
          f"{ideal_rate:.0f} calls/s; server answers 429 with Retry-After {LATENCY * 1000:.0f} ms")
    with MockLLMProcess(latency=LATENCY, max_concurrency=CAP, retry_after=LATENCY) as server:
        call, failure = client(server, threads)
        run(call, failure, 16, 4)
        server.reset_counters()
        agentaccel.enable(limit={"rules": [{"name": "provider", "provider": "openai", "adaptive": True}]})
        try:
            _, limited, done = run(call, failure, None, threads, seconds=seconds)
        finally:
            agentaccel.disable()
        counters = server.counters()
    after = [t for t in done if t >= 1.0]
    rate = len(after) / (max(done) - 1.0) if after else 0.0
    attempted = len(done) + limited
    share = limited / attempted if attempted else 0.0
    ok = rate >= 0.85 * ideal_rate and share < 0.02
    print(f"    adaptive agentaccel limit        {rate:6.1f} calls/s after 1s = {rate / ideal_rate:5.1%} of ideal   "
          f"429s {limited} of {attempted} = {share:.2%}   server in-flight peak {counters['in_flight_peak']}")
    print(f"    target: >= 85% of ideal and < 2% 429s: {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="agentaccel-limit against the mock provider.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--adaptive-seconds", type=float, default=8.0)
    parser.add_argument("--only", choices=["a", "b", "c"], action="append")
    parser.add_argument("--client", choices=CLIENTS, default="http",
                        help="http: a keep-alive http.client pool posting the OpenAI JSON (default); openai: the SDK")
    args = parser.parse_args()
    global CLIENT
    CLIENT = args.client
    only = set(args.only or "abc")
    results = []
    if "a" in only:
        results.append(bench_single(args.rounds, args.calls, args.threads))
    if "b" in only:
        results.append(bench_processes(args.rounds, args.processes, args.calls // args.processes, 16))
    if "c" in only:
        results.append(bench_adaptive(args.adaptive_seconds, args.threads))
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
