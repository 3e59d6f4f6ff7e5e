"""The in-process server: lifecycle, provider limits and exact counters."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Unpack

from .config import Config, MockLLMSettings, Script, check_port
from .handler import MockHTTPServer

COUNTER_NAMES = (
    "requests",  # every request outside /_mock/, including rejected ones
    "chat_requests",
    "embedding_requests",
    "admitted",  # chat/embedding requests that passed the limits
    "rate_limited",  # 429s sent, by the limits or by a script rule
    "errors",  # other 4xx/5xx answers
    "connections",  # TCP connections that carried API requests, so keep-alive reuse is visible
    "streamed",
)
_RPM_WINDOW = 60.0


class Rejection(NamedTuple):
    wait: float
    message: str


class MockLLM:
    """An OpenAI-compatible LLM provider on a real local socket, for tests and benchmarks."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        retry_after: float = 1.0,
        script: Sequence[Mapping[str, Any]] | Script | None = None,
        stream_chunk_delay: float = 0.0,
        embedding_dims: int = 16,
        chunk_words: int = 1,
    ) -> None:
        self.host = host
        self._requested_port = check_port(port)
        settings: dict[str, object] = {
            "latency": latency,
            "max_concurrency": max_concurrency,
            "rpm": rpm,
            "retry_after": retry_after,
            "script": script,
            "stream_chunk_delay": stream_chunk_delay,
            "embedding_dims": embedding_dims,
            "chunk_words": chunk_words,
        }
        self._config = Config().updated(settings)
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._in_flight = 0
        self._peak = 0
        self._window: deque[float] = deque()  # admission times inside the rpm window
        self._httpd: MockHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MockLLM:
        if self._httpd is not None:
            raise RuntimeError("MockLLM is already running")
        httpd = MockHTTPServer((self.host, self._requested_port), self)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
            name=f"mockllm-{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = None
        httpd.shutdown()
        httpd.server_close()
        # Pooled keep-alive connections would otherwise keep their handler threads blocked in a read.
        httpd.close_connections()
        thread.join(timeout=5)

    def __enter__(self) -> MockLLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("MockLLM is not running; call start() first")
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """The base_url for an OpenAI client, ending in /v1."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # -- settings and counters ---------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    def configure(self, **changes: Unpack[MockLLMSettings]) -> None:
        self._configure(changes)

    def _configure(self, changes: Mapping[str, object]) -> None:
        with self._lock:
            self._config = self._config.updated(changes)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {**self._counters, "in_flight": self._in_flight, "in_flight_peak": self._peak}

    def reset_counters(self) -> None:
        """Zero the counters and start a fresh rpm window and script, as for a new scenario."""
        with self._lock:
            self._counters = dict.fromkeys(COUNTER_NAMES, 0)
            self._peak = self._in_flight
            self._window.clear()
            script = self._config.script
        if script is not None:
            script.reset()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def _admit(self, config: Config) -> Rejection | None:
        now = time.monotonic()
        with self._lock:
            if config.max_concurrency is not None and self._in_flight >= config.max_concurrency:
                self._counters["rate_limited"] += 1
                message = (
                    f"Rate limit reached: {self._in_flight} requests in flight "
                    f"(max_concurrency={config.max_concurrency}). "
                    f"Please try again in {config.retry_after:g}s."
                )
                return Rejection(config.retry_after, message)
            if config.rpm is not None:
                window = self._window
                while window and window[0] <= now - _RPM_WINDOW:
                    window.popleft()
                if len(window) >= config.rpm:
                    self._counters["rate_limited"] += 1
                    # After a runtime lowering of rpm several requests must age out, not just the oldest.
                    wait = window[len(window) - config.rpm] + _RPM_WINDOW - now
                    message = (
                        f"Rate limit reached: {config.rpm} requests per minute. Try again in {wait:.3f}s."
                    )
                    return Rejection(wait, message)
                window.append(now)
            self._counters["admitted"] += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        return None

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
