"""One process of the distributed limit benchmark (run by bench_limit.py): enables agentaccel with a Redis rule,
prints "ready", waits for a line on stdin, makes its share of calls from its threads, prints a JSON summary."""

from __future__ import annotations

import json
import sys
import threading

import openai

import agentaccel


def main() -> None:
    redis_url, llm_url, cap, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(
        sys.argv[5])
    # "none": no Redis, the reference row (each process limits itself to its share of the cap)
    agentaccel.enable(limit={"backend": None if redis_url == "none" else redis_url, "rules": [
        {"name": "provider", "provider": "openai", "max_concurrency": cap}]})
    api = openai.OpenAI(base_url=llm_url, api_key="bench", max_retries=0)
    create = agentaccel.wrap(lambda: api.chat.completions.create(
        model="mock-llm", messages=[{"role": "user", "content": "hi"}], max_tokens=8),
        operation="chat", name="create", provider="openai")
    create()  # warm the connection pool and Redis scripts outside the timed part
    left = [calls - 1]
    lock = threading.Lock()
    errors = [0]

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                create()
            except openai.RateLimitError:
                with lock:
                    errors[0] += 1

    print("ready", flush=True)
    sys.stdin.readline()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"rate_limited": errors[0]}), flush=True)
    agentaccel.disable()


if __name__ == "__main__":
    main()
