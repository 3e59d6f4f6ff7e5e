"""A real OTLP receiver (HTTP/protobuf and gRPC) running as a separate process, for tests.

Exporters under test talk to a genuine network endpoint, exactly as they would to a collector, instead
of a mocked exporter. The child process (``python -m agentaccel.testing.otlp_receiver --out DIR``)
listens on free 127.0.0.1 ports and stores every accepted export request verbatim as an OTLP protobuf
file in DIR, written before the export is acknowledged: once an exporter's export() has returned, the
data is on disk. The parent (:class:`OTLPReceiver`) decodes those files into plain Python data.

The child imports only the standard library, ``opentelemetry-proto`` and, for gRPC, ``grpcio``. It is
launched by file path with ``-P`` so that it does not import the ``agentaccel`` package (and whatever
that pulls in) at all. Without grpcio it still serves OTLP/HTTP and reports gRPC as unavailable.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OTLPReceiver", "ReceivedSpan"]

_HOST = "127.0.0.1"
_READY_FILE = "ready.json"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0

# kind -> (request class, response class, gRPC service name); the kind doubles as the HTTP path suffix.
_SIGNALS: dict[str, tuple[Any, Any, str]] = {
    "traces": (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
        "opentelemetry.proto.collector.trace.v1.TraceService",
    ),
    "metrics": (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
    ),
    "logs": (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
        "opentelemetry.proto.collector.logs.v1.LogsService",
    ),
}


# ============================================================================================ child ==


class _Store:
    """Writes each accepted request as ``<seq>.<protocol>.<kind>.pb``, atomically (write + rename)."""

    def __init__(self, out: Path) -> None:
        self._out = out
        self._seq = 0
        self._lock = threading.Lock()

    def save(self, protocol: str, kind: str, payload: bytes) -> None:
        with self._lock:
            self._seq += 1
            name = f"{self._seq:010d}.{protocol}.{kind}.pb"
        tmp = self._out / f".{name}.tmp"
        tmp.write_bytes(payload)
        # The parent ignores dot-files, so it never sees a half-written request.
        os.replace(tmp, self._out / name)


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _hex_ids_to_base64(node: object) -> object:
    """OTLP/JSON spells trace and span ids in hex, protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        return {
            key: (
                base64.b64encode(bytes.fromhex(value)).decode()
                if key in _ID_KEYS and isinstance(value, str)
                else _hex_ids_to_base64(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def _make_http_handler(store: _Store) -> type[BaseHTTPRequestHandler]:
    # No protobuf stubs in our dev deps; the second code keeps mypy quiet once types-protobuf appears.
    from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]

    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as the exporters' HTTP sessions expect; every reply carries Content-Length.
        protocol_version = "HTTP/1.1"

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            kind = path.removeprefix("/v1/") if path.startswith("/v1/") else ""
            if kind not in _SIGNALS:
                self._reply(404, b"unknown OTLP path\n", "text/plain")
                return
            request_cls, response_cls, _ = _SIGNALS[kind]
            is_json = "json" in (self.headers.get("Content-Type") or "").lower()
            try:
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                message = request_cls()
                if is_json:
                    json_format.ParseDict(
                        _hex_ids_to_base64(json.loads(body)), message, ignore_unknown_fields=True
                    )
                else:
                    message.ParseFromString(body)
            except Exception as exc:  # any decode failure is the client's fault: answer 400
                self._reply(400, f"cannot decode OTLP {kind}: {exc}\n".encode(), "text/plain")
                return
            store.save("http", kind, message.SerializeToString())
            if is_json:
                self._reply(200, b"{}", "application/json")
            else:
                self._reply(200, response_cls().SerializeToString(), "application/x-protobuf")

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # a line per export would bury real errors, which still go to the log via log_error

    return Handler


def _start_grpc(store: _Store) -> tuple[Any, int]:
    # Imported here, not at module level: without grpcio the receiver still serves OTLP/HTTP.
    import grpc  # type: ignore[import-untyped, unused-ignore]  # grpcio ships no type information

    def make_export(kind: str) -> Callable[[bytes, Any], bytes]:
        request_cls, response_cls, _ = _SIGNALS[kind]

        def export(payload: bytes, context: Any) -> bytes:
            try:
                request_cls().ParseFromString(payload)
            except Exception as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode OTLP {kind}: {exc}")
            store.save("grpc", kind, payload)
            return bytes(response_cls().SerializeToString())

        return export

    # Generic handlers without (de)serializers hand us the raw request bytes, which is what we store.
    handlers = [
        grpc.method_handlers_generic_handler(
            service, {"Export": grpc.unary_unary_rpc_method_handler(make_export(kind))}
        )
        for kind, (_, _, service) in _SIGNALS.items()
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=handlers)
    port = int(server.add_insecure_port(f"{_HOST}:0"))
    if port == 0:
        raise OSError(f"gRPC server could not bind {_HOST}")
    server.start()
    return server, port


def _serve(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    store = _Store(out)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    httpd = ThreadingHTTPServer((_HOST, 0), _make_http_handler(store))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="otlp-http", daemon=True).start()

    grpc_server: Any = None
    grpc_port: int | None = None
    grpc_error: str | None = None
    try:
        grpc_server, grpc_port = _start_grpc(store)
    except Exception as exc:  # ImportError without grpcio; anything else is reported the same way
        grpc_error = f"{type(exc).__name__}: {exc}"
        print(f"otlp_receiver: gRPC unavailable ({grpc_error}); serving OTLP/HTTP only", file=sys.stderr)

    ready = {
        "pid": os.getpid(),
        "http_port": httpd.server_address[1],
        "grpc_port": grpc_port,
        "grpc_error": grpc_error,
    }
    (out / f".{_READY_FILE}.tmp").write_text(json.dumps(ready))
    os.replace(out / f".{_READY_FILE}.tmp", out / _READY_FILE)
    print(f"otlp_receiver: ready {ready}", file=sys.stderr, flush=True)

    while not stopping.wait(0.5):
        pass
    if grpc_server is not None:
        grpc_server.stop(grace=1.0).wait()
    httpd.shutdown()
    httpd.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OTLP/HTTP + OTLP/gRPC receiver that stores requests.")
    parser.add_argument("--out", required=True, type=Path, help="directory for the received requests")
    args = parser.parse_args(argv)
    return _serve(args.out)


# =========================================================================================== parent ==


@dataclass(frozen=True)
class ReceivedSpan:
    """One received span as plain data. ``kind`` and ``status_code`` are the OTLP enum values
    (kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer; status: 0 unset, 1 ok, 2 error)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int
    attributes: dict[str, object]
    status_code: int
    status_message: str
    events: list[str]
    resource: dict[str, object]
    scope: str
    protocol: str


@dataclass(frozen=True)
class _Request:
    protocol: str
    kind: str
    spans: tuple[ReceivedSpan, ...] = ()
    metric_names: tuple[str, ...] = ()


def _any_value(value: AnyValue) -> object:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    result: object = getattr(value, which)
    return result


def _attributes(pairs: Any) -> dict[str, object]:
    items: list[KeyValue] = list(pairs)
    return {kv.key: _any_value(kv.value) for kv in items}


def _decode(protocol: str, kind: str, payload: bytes) -> _Request:
    if kind == "traces":
        traces = ExportTraceServiceRequest()
        traces.ParseFromString(payload)
        spans = []
        for resource_spans in traces.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            kind=int(span.kind),
                            attributes=_attributes(span.attributes),
                            status_code=int(span.status.code),
                            status_message=span.status.message,
                            events=[event.name for event in span.events],
                            resource=dict(resource),  # a copy each: spans are independent values
                            scope=scope_spans.scope.name,
                            protocol=protocol,
                        )
                    )
        return _Request(protocol, kind, spans=tuple(spans))
    if kind == "metrics":
        metrics = ExportMetricsServiceRequest()
        metrics.ParseFromString(payload)
        names = [
            metric.name
            for resource_metrics in metrics.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        ]
        return _Request(protocol, kind, metric_names=tuple(names))
    return _Request(protocol, kind)


def _port_listens(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


class OTLPReceiver:
    """An OTLP receiver child process; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._http_port: int | None = None
        self._grpc_port: int | None = None
        self._grpc_error: str | None = None
        self._requests: list[_Request] = []
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._cleanup()
        self._requests = []
        tmp = Path(tempfile.mkdtemp(prefix="agentaccel-otlp-"))
        self._tmp = tmp
        out = tmp / "requests"
        log_path = tmp / "receiver.log"
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", os.path.abspath(__file__), "--out", str(out)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        atexit.register(self._stop_at_exit)
        deadline = time.monotonic() + _START_TIMEOUT
        ready_path = out / _READY_FILE
        while not ready_path.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                problem = (
                    f"exited with code {self._proc.returncode}"
                    if self._proc.poll() is not None
                    else f"was not ready within {_START_TIMEOUT:.0f}s"
                )
                output = self._log()
                self.stop()
                raise RuntimeError(f"OTLP receiver {problem}:\n{output}")
            time.sleep(0.02)
        ready = json.loads(ready_path.read_text())
        ready_path.unlink()
        self._http_port = int(ready["http_port"])
        self._grpc_port = ready["grpc_port"]
        self._grpc_error = ready["grpc_error"]
        # The child writes the ready file only after binding, so this is a cheap sanity check.
        for port in (self._http_port, self._grpc_port):
            if port is not None and not _port_listens(port):
                output = self._log()
                self.stop()
                raise RuntimeError(f"OTLP receiver reported port {port} but it does not listen:\n{output}")
        return self

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after a timeout; keeps what was received readable. Idempotent."""
        atexit.unregister(self._stop_at_exit)
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._proc = None
        self._collect()  # anything stored before the shutdown stays available via spans()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _stop_at_exit(self) -> None:
        # Safety net: a forgotten receiver must not outlive the test run.
        with contextlib.suppress(Exception):
            self.stop()

    def _log(self) -> str:
        if self._tmp is None:
            return "(no log)"
        try:
            return (self._tmp / "receiver.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- endpoints -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP (append /v1/traces for a trace exporter's ``endpoint=``)."""
        if self._http_port is None:
            raise RuntimeError("OTLPReceiver is not started")
        return f"http://{_HOST}:{self._http_port}"

    @property
    def grpc_available(self) -> bool:
        return self._grpc_port is not None

    @property
    def grpc_endpoint(self) -> str:
        """Endpoint for OTLP/gRPC exporters (use with ``insecure=True``)."""
        if self._grpc_port is None:
            reason = self._grpc_error or "the receiver is not started"
            raise RuntimeError(f"OTLP/gRPC is unavailable: {reason}")
        return f"http://{_HOST}:{self._grpc_port}"

    # -- received data -------------------------------------------------------------------------------

    def _collect(self) -> list[_Request]:
        """Decode and consume the request files the child has written since the last call."""
        with self._lock:
            out = self._tmp / "requests" if self._tmp is not None else None
            if out is not None and out.is_dir():
                for path in sorted(out.glob("[0-9]*.pb")):
                    _, protocol, kind, _ = path.name.split(".")
                    self._requests.append(_decode(protocol, kind, path.read_bytes()))
                    path.unlink()
            return list(self._requests)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far over both protocols, in arrival order."""
        return [span for request in self._collect() for span in request.spans]

    def wait_for_spans(
        self, count: int = 1, timeout: float = 10.0, name: str | None = None
    ) -> list[ReceivedSpan]:
        """Poll until at least ``count`` spans (named ``name``, if given) arrived; return those spans."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.spans()
            matching = [span for span in received if name is None or span.name == name]
            if len(matching) >= count:
                return matching
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"OTLP receiver died (exit code {self._proc.returncode}):\n{self._log()}")
            if time.monotonic() > deadline:
                what = f"spans named {name!r}" if name is not None else "spans"
                arrived = ", ".join(f"{span.name!r} ({span.protocol})" for span in received) or "nothing"
                raise AssertionError(
                    f"expected at least {count} {what} within {timeout}s, got {len(matching)}; "
                    f"received: {arrived}"
                )
            time.sleep(0.05)

    def metric_names(self) -> set[str]:
        return {name for request in self._collect() for name in request.metric_names}

    def request_count(self, kind: str | None = None, protocol: str | None = None) -> int:
        """Number of export requests received, optionally only one kind (traces/metrics/logs)
        and/or protocol (http/grpc)."""
        return sum(
            1
            for request in self._collect()
            if (kind is None or request.kind == kind) and (protocol is None or request.protocol == protocol)
        )

    def clear(self) -> None:
        """Forget everything received so far (e.g. between tests sharing one receiver)."""
        self._collect()
        with self._lock:
            self._requests.clear()

    def __repr__(self) -> str:
        if self._http_port is None:
            return "<OTLPReceiver not started>"
        grpc = f"grpc:{self._grpc_port}" if self._grpc_port is not None else "grpc unavailable"
        return f"<OTLPReceiver http:{self._http_port} {grpc} pid={self.pid}>"


if __name__ == "__main__":
    sys.exit(main())
