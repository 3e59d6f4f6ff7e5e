"""The same server in a child process, so a benchmark's client threads do not share its GIL."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

from .config import Config, MockLLMSettings, check_port


class MockLLMProcess:
    """Runs ``python -m agentaccel.mockllm`` with this interpreter; controlled over HTTP, stopped by PID."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        retry_after: float = 1.0,
        script: Sequence[Mapping[str, Any]] | None = None,
        stream_chunk_delay: float = 0.0,
        embedding_dims: int = 16,
        chunk_words: int = 1,
        *,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        # Validate here so a bad setting fails in the caller, not as a child that never prints its port.
        self._config = Config().updated(
            {
                "latency": latency,
                "max_concurrency": max_concurrency,
                "rpm": rpm,
                "retry_after": retry_after,
                "script": script,
                "stream_chunk_delay": stream_chunk_delay,
                "embedding_dims": embedding_dims,
                "chunk_words": chunk_words,
            }
        )
        self._script = list(script) if script is not None else None
        self.host = host
        self._requested_port = check_port(port)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._url: str | None = None
        # Loopback control traffic must never go through an HTTP proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def command(self) -> list[str]:
        c = self._config
        argv = [sys.executable, "-m", "agentaccel.mockllm", "--host", self.host]
        argv += ["--port", str(self._requested_port), "--latency", repr(c.latency)]
        argv += ["--retry-after", repr(c.retry_after), "--stream-chunk-delay", repr(c.stream_chunk_delay)]
        argv += ["--embedding-dims", str(c.embedding_dims), "--chunk-words", str(c.chunk_words)]
        if c.max_concurrency is not None:
            argv += ["--max-concurrency", str(c.max_concurrency)]
        if c.rpm is not None:
            argv += ["--rpm", str(c.rpm)]
        return [*argv, "--exit-on-stdin-eof"]

    def start(self) -> MockLLMProcess:
        if self._proc is not None:
            raise RuntimeError("MockLLMProcess is already running")
        proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._proc = proc
        line = _read_line(proc, self.startup_timeout)
        try:
            info = json.loads(line)
            self._port = int(info["port"])
            self._url = str(info["url"])
        except (ValueError, KeyError, TypeError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)  # a child that closed stdout is usually a moment from exiting
            code = proc.poll()
            self.stop()
            why = "timed out" if code is None else f"exited with code {code}"
            raise RuntimeError(
                f"mock LLM process did not report its port ({why}; first line {line!r}; "
                f"startup_timeout={self.startup_timeout}s, see its stderr)"
            ) from None
        if self._script is not None:
            # The script travels over HTTP rather than a temp file that would need cleaning up.
            self._control("POST", "config", {"script": self._script})
        return self

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> MockLLMProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def port(self) -> int:
        self._running()
        assert self._port is not None
        return self._port

    @property
    def url(self) -> str:
        self._running()
        assert self._url is not None
        return self._url

    def counters(self) -> dict[str, int]:
        counters = self._control("GET", "counters")
        return {str(k): int(v) for k, v in counters.items()}

    def reset_counters(self) -> None:
        self._control("POST", "reset", {})

    def configure(self, **changes: Unpack[MockLLMSettings]) -> None:
        self._config = self._config.updated(changes)  # fail fast, with the same messages as in-process
        self._control("POST", "config", dict(changes))

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("MockLLMProcess is not running; call start() first")
        return self._proc

    def _control(self, method: str, name: str, payload: object = None) -> dict[str, Any]:
        self._running()
        root = self.url.removesuffix("/v1")
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{root}/_mock/{name}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=10) as response:
                result: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"mock LLM control request {name} failed: HTTP {exc.code} {detail}") from exc
        return result


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    # A reader thread, because a pipe read cannot time out portably.
    lines: list[bytes] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].decode(errors="replace").strip() if lines else ""
