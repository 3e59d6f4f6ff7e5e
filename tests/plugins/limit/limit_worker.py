"""A child process for the distributed tests: enables agentaccel with one Redis rule shared with the test and
its other children. ``calls REDIS_URL LLM_URL THREADS CALLS`` makes chat calls to the mock provider and prints
a JSON summary; ``hold REDIS_URL LEASE PERMITS`` takes PERMITS permits, prints "holding" and never returns."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import openai

import agentaccel


def rule(redis_url: str, lease: float = 10.0, **limits: Any) -> dict[str, Any]:
    return {"backend": redis_url, "lease_seconds": lease,
            "rules": [{"name": "shared", "provider": "openai", **limits}]}


def calls(redis_url: str, llm_url: str, threads: int, per_thread: int) -> None:
    agentaccel.enable(limit=rule(redis_url, max_concurrency=2))
    api = openai.OpenAI(base_url=llm_url, api_key="test", max_retries=0)
    create = agentaccel.wrap(lambda **kw: api.chat.completions.create(**kw), operation="chat", name="create",
                             provider="openai")
    errors: list[str] = []

    def work() -> None:
        for _ in range(per_thread):
            try:
                create(model="mock-llm", messages=[{"role": "user", "content": "hi"}])
            except Exception as exc:
                errors.append(repr(exc))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"errors": errors, "elapsed": time.perf_counter() - start}), flush=True)


def hold(redis_url: str, lease: float, permits: int) -> None:
    agentaccel.enable(limit=rule(redis_url, lease=lease, max_concurrency=permits))
    forever = threading.Event()
    held = threading.Semaphore(0)

    def call() -> None:
        held.release()
        forever.wait()

    blocked = agentaccel.wrap(call, operation="chat", name="hold", provider="openai")
    for _ in range(permits):
        threading.Thread(target=blocked, daemon=True).start()
    for _ in range(permits):
        held.acquire()
    print("holding", flush=True)
    forever.wait()


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "calls":
        calls(url, rest[0], int(rest[1]), int(rest[2]))
    else:
        hold(url, float(rest[0]), int(rest[1]))
