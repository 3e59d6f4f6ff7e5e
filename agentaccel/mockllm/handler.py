"""HTTP/1.1 keep-alive transport and routing for MockLLM, on the standard library's threading server."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .config import Config, ScriptRule
from .embeddings import embeddings_body, model_body, models_body
from .responses import (
    ChatRequest,
    RequestError,
    build_reply,
    completion_body,
    error_body,
    parse_chat_request,
    stream_chunks,
)

if TYPE_CHECKING:
    from .server import MockLLM

_SERVER_NAME = "MockLLM/0.1"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}

Headers = list[tuple[str, str]]
_PR_SET_TIMERSLACK = 29


def _precise_timers() -> None:
    """Make this thread's sleeps end on time: Linux lets a sleep overrun by the thread's timer slack (50 us by
    default) to batch wake-ups; 1 ns keeps the configured latency exact to within the scheduler's own delay."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def retry_headers(wait: float) -> Headers:
    # Retry-After must be a whole number of seconds; retry-after-ms carries the exact wait,
    # and the openai client prefers it, so clients do not over-wait by up to a second.
    return [
        ("Retry-After", str(max(1, math.ceil(wait)))),
        ("retry-after-ms", str(max(1, math.ceil(wait * 1000)))),
    ]


class MockHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # benchmarks open 64+ connections at once

    def __init__(self, address: tuple[str, int], mock: MockLLM) -> None:
        self.mock = mock
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # http.server.HTTPServer.server_bind resolves the FQDN of the host, which can stall on a DNS lookup.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0] if isinstance(self.server_address[0], str) else ""
        self.server_port = int(self.server_address[1])

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client hanging up mid-request is routine, not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = _SERVER_NAME
    disable_nagle_algorithm = True  # small SSE writes must not wait for delayed ACKs
    server: MockHTTPServer
    _connection_counted = False  # one handler instance serves one connection
    _received = 0.0  # time.monotonic() when the current request arrived

    def setup(self) -> None:
        super().setup()
        _precise_timers()  # one handler thread serves one connection

    def parse_request(self) -> bool:
        # The request line has just been read: the configured latency runs from here, so the server's own
        # parsing, admission and serializing happen inside the latency instead of adding to it.
        self._received = time.monotonic()
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # thousands of benchmark requests would drown the test output

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path
        self._sent = False
        self._holding = False
        # Control-plane traffic (MockLLMProcess polling counters) must not show up in the counters.
        self._counted = not path.startswith("/_mock/")
        if self._counted and not self._connection_counted:
            self._connection_counted = True
            self.server.mock._count("connections")
        try:
            body = self._read_body()
            self._route(method, path, body)
        except RequestError as exc:
            self._error(400, exc.message, param=exc.param)
        except OSError:
            self.close_connection = True
        except Exception as exc:
            if self._sent:
                self.close_connection = True
            else:
                self._error(500, f"mock server error: {exc!r}", code="server_error")
        finally:
            self._free_slot()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            self.close_connection = True  # the body's extent is unknown, so the stream cannot be reused
            raise RequestError(f"Invalid Content-Length header: {length!r}.")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True  # lost framing: the rest of the stream is unusable
                raise RequestError(f"Invalid chunk size line in chunked request body: {line!r}.") from None
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def _route(self, method: str, path: str, body: bytes) -> None:
        if path.startswith("/_mock/"):
            self._control(method, path, body)
            return
        mock = self.server.mock
        mock._count("requests")
        route = (path[3:] if path == "/v1" or path.startswith("/v1/") else path).rstrip("/")
        allowed = "POST"
        if route == "/chat/completions":
            mock._count("chat_requests")
            if method == "POST":
                self._chat(parse_chat_request(_json(body)))
                return
        elif route == "/embeddings":
            mock._count("embedding_requests")
            if method == "POST":
                self._embeddings(_json(body))
                return
        elif route == "/models" or route.startswith("/models/"):
            allowed = "GET"
            if method == "GET":
                name = route[len("/models/") :]
                self._send_json(200, model_body(name) if name else models_body())
                return
        else:
            self._error(404, f"Invalid URL ({method} {path})", status_type="invalid_request_error")
            return
        self._error(
            405, f"Method {method} is not allowed on {path}; use {allowed}.", headers=[("Allow", allowed)]
        )

    def _chat(self, req: ChatRequest) -> None:
        mock = self.server.mock
        config = mock.config
        if not self._admit(config):
            return
        rule = config.script.select(req.last_user, bool(req.tool_results)) if config.script else None
        latency = rule.latency if rule is not None and rule.latency is not None else config.latency
        deadline = self._received + latency
        if rule is not None and rule.status != 200:
            _sleep_until(deadline)
            self._scripted_error(rule, config)
            return
        reply = build_reply(req, rule)
        if not req.stream:
            data = _dumps(completion_body(req, reply))  # made before the wait, so it does not add to it
            _sleep_until(deadline)
            self._send_data(200, data)
            return
        _sleep_until(deadline)
        chunks = stream_chunks(req, reply, config.chunk_words)
        headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
        self._respond(200, [*headers, ("Transfer-Encoding", "chunked")], b"", final=False)
        mock._count("streamed")
        events = [_http_chunk(b"data: " + _dumps(chunk) + b"\n\n") for chunk in chunks]
        tail = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        if config.stream_chunk_delay > 0:
            for i, event in enumerate(events):
                if i:
                    time.sleep(config.stream_chunk_delay)
                self.wfile.write(event)
            events = []
        self._free_slot()
        self.wfile.write(b"".join(events) + tail)

    def _embeddings(self, body: object) -> None:
        mock = self.server.mock
        config = mock.config
        response = embeddings_body(body, config.embedding_dims)  # validate before admission, like chat
        if not self._admit(config):
            return
        data = _dumps(response)
        _sleep_until(self._received + config.latency)
        self._send_data(200, data)

    def _admit(self, config: Config) -> bool:
        rejection = self.server.mock._admit(config)
        if rejection is None:
            self._holding = True
            return True
        body = error_body(rejection.message, "rate_limit_exceeded", code="rate_limit_exceeded")
        self._send_json(429, body, retry_headers(rejection.wait))
        return False

    def _scripted_error(self, rule: ScriptRule, config: Config) -> None:
        status = rule.status
        headers: Headers = []
        if status == 429:
            self.server.mock._count("rate_limited")
            headers = retry_headers(config.retry_after)
        message = rule.error or f"Scripted error: HTTP {status} for a message matching {rule.match!r}."
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self._error(status, message, headers=headers, status_type=kind, already_counted=status == 429)

    def _control(self, method: str, path: str, body: bytes) -> None:
        mock = self.server.mock
        if path == "/_mock/counters" and method == "GET":
            self._send_json(200, mock.counters())
        elif path == "/_mock/reset" and method == "POST":
            mock.reset_counters()
            self._send_json(200, {"ok": True})
        elif path == "/_mock/config" and method in ("GET", "POST"):
            if method == "POST":
                changes = _json(body)
                if not isinstance(changes, dict):
                    raise RequestError("The config body must be a JSON object of settings.")
                try:
                    mock._configure(changes)
                except ValueError as exc:
                    raise RequestError(str(exc)) from exc
            self._send_json(200, {"ok": True, "config": mock.config.to_json()})
        else:
            self._error(404, f"Invalid URL ({method} {path})")

    # -- writing -----------------------------------------------------------------------------------

    def _error(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Headers | None = None,
        status_type: str | None = None,
        already_counted: bool = False,
    ) -> None:
        if self._counted and not already_counted:
            self.server.mock._count("errors")
        kind = status_type or _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self._send_json(status, error_body(message, kind, param, code), headers or [])

    def _send_json(self, status: int, obj: object, headers: Headers | None = None) -> None:
        self._send_data(status, _dumps(obj), headers)

    def _send_data(self, status: int, data: bytes, headers: Headers | None = None) -> None:
        base = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        self._respond(status, base + (headers or []), data)

    def _free_slot(self) -> None:
        # Freed just before the final write: a client that has seen the whole response must find the
        # slot free, or a client holding itself exactly to max_concurrency would race into a 429.
        if self._holding:
            self._holding = False
            self.server.mock._release()

    def _respond(self, status: int, headers: Headers, body: bytes, final: bool = True) -> None:
        # One write for head and body: fewer syscalls and no small-packet stalls under load.
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}", f"Server: {_SERVER_NAME}", f"Date: {self.date_time_string()}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        self._sent = True
        if final:
            self._free_slot()
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _json(body: bytes) -> object:
    if not body.strip():
        raise RequestError("The request body is empty; expected a JSON object.")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"We could not parse the JSON body of your request: {exc}.") from exc


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
