"""The benchmark's HTTP clients, and one process of the distributed limit benchmark (run by bench_limit.py).

As a script: enables agentaccel with a Redis rule (or, with "none", an in-process rule), prints "ready", waits for
a line on stdin, makes its share of calls from its threads, prints a JSON summary."""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Callable
from email.message import Message
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import agentaccel

#: The request every call of the workload sends (max_tokens keeps the answer short).
REQUEST = {"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
CLIENTS = ("http", "openai")


class Response(NamedTuple):
    status_code: int
    headers: Message  # case-insensitive .get(), like httpx.Headers


class HTTPStatusError(Exception):
    """A non-2xx answer, shaped like ``httpx.HTTPStatusError`` (``.response.status_code``,
    ``.response.headers``): the limit plugin's feedback recognizes its 429 and Retry-After by that shape, exactly
    as it recognizes a provider SDK's error."""

    def __init__(self, response: Response, body: bytes) -> None:
        super().__init__(f"HTTP {response.status_code}: {body[:200]!r}")
        self.response = response
        self.status_code = response.status_code


class ChatClient:
    """POSTs the OpenAI chat completion JSON over pooled keep-alive ``http.client`` connections and parses the
    JSON answer: what the openai SDK does on the wire, at a fraction of its CPU per call (the SDK's pydantic
    models and httpx's machinery cost 1-2 ms of CPU per call), so on a 2-core machine the figures measure the
    limiter rather than the client."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        assert url.hostname is not None and url.port is not None
        self.host, self.port = url.hostname, url.port
        self.path = url.path.rstrip("/") + "/chat/completions"
        self.body = json.dumps(REQUEST).encode()
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
        self._idle: list[http.client.HTTPConnection] = []  # LIFO: the most recently used connection is warmest

    def warm(self, connections: int) -> None:
        """Open ``connections`` connections now, so no timed call pays for a TCP handshake."""
        for _ in range(connections):
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            conn.connect()
            self._idle.append(conn)

    def create(self) -> Any:
        try:
            conn = self._idle.pop()  # list.pop and list.append are atomic: no lock needed
        except IndexError:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("POST", self.path, self.body, self.headers)
            answer = conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # a broken connection is dropped; the next call opens a fresh one
            raise
        self._idle.append(conn)  # the answer was read to the end, so the connection is reusable
        if answer.status != 200:
            raise HTTPStatusError(Response(answer.status, answer.headers), data)
        return json.loads(data)


def make_call(kind: str, base_url: str, connections: int) -> tuple[Callable[[], Any], type[Exception]]:
    """The workload's call through ``agentaccel.wrap`` (operation chat, provider openai: tracing and the limit
    middleware run), and the exception a 429 raises: ``kind`` "http" is :class:`ChatClient` with ``connections``
    connections opened up front, "openai" the SDK (whose pool opens them on demand)."""
    if kind == "openai":
        import openai

        api = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)

        def sdk() -> Any:
            return api.chat.completions.create(model="mock-llm", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=8)

        return agentaccel.wrap(sdk, operation="chat", name="create", provider="openai"), openai.RateLimitError
    client = ChatClient(base_url)
    client.warm(connections)
    return agentaccel.wrap(client.create, operation="chat", name="create", provider="openai"), HTTPStatusError


def is_429(error: Exception) -> bool:
    return getattr(error, "status_code", None) == 429


def main() -> None:
    redis_url, llm_url, cap, threads, calls, kind = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                                     int(sys.argv[5]), sys.argv[6])
    # "none": no Redis, the reference row (each process limits itself to its share of the cap)
    agentaccel.enable(limit={"backend": None if redis_url == "none" else redis_url, "rules": [
        {"name": "provider", "provider": "openai", "max_concurrency": cap}]})
    create, failure = make_call(kind, llm_url, threads)
    create()  # warm the connection pool, the Redis connection and scripts outside the timed part
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
            except failure as exc:
                if not is_429(exc):
                    raise
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
