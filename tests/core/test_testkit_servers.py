"""The test kit's real server processes: RedisServer and OTLPReceiver (no mocks, real sockets)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentaccel.testing.otlp_receiver import OTLPReceiver, ReceivedSpan
from agentaccel.testing.redis_server import RedisServer, RedisServerNotFound, redis_server_binary

# --------------------------------------------------------------------------------------- helpers --


def _process_gone(pid: int) -> bool:
    if not psutil.pid_exists(pid):
        return True
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


class _Resp:
    """Minimal raw RESP2 client: the point is to talk to redis-server without any client library."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._file = self._sock.makefile("rb")

    def __call__(self, *args: str) -> object:
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            raw = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
        self._sock.sendall(payload)
        return self._reply()

    def _reply(self) -> object:
        line = self._file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2].decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise ValueError(f"unexpected RESP line {line!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


@pytest.fixture
def need_redis() -> None:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server)")


# ----------------------------------------------------------------------------------- RedisServer --


@pytest.mark.usefixtures("need_redis")
def test_redis_server_starts_as_a_foreground_child_and_answers_raw_ping() -> None:
    with RedisServer() as server:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        pid = server.pid
        assert pid is not None
        # Not daemonized: the server is our direct child.
        assert psutil.Process(pid).ppid() == os.getpid()
        client = _Resp(server.port)
        try:
            assert client("PING") == "PONG"
            assert client("SET", "k", "v") == "OK"
            assert client("GET", "k") == "v"
            assert client("CONFIG", "GET", "bind") == ["bind", "127.0.0.1"]
            assert client("CONFIG", "GET", "save") == ["save", ""]
            assert client("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
            workdir = client("CONFIG", "GET", "dir")
        finally:
            client.close()
        assert server.ping()
        assert isinstance(workdir, list)
        assert Path(workdir[1]).is_dir()
    assert _process_gone(pid)
    assert server.pid is None
    assert not server.ping()
    assert not Path(workdir[1]).exists(), "the per-server temp dir is removed on stop"


@pytest.mark.usefixtures("need_redis")
def test_redis_server_with_password_requires_auth() -> None:
    with RedisServer(password="s3cret/pw") as server:
        assert server.url == f"redis://:s3cret%2Fpw@127.0.0.1:{server.port}/0"
        assert server.ping()
        client = _Resp(server.port)
        try:
            denied = client("GET", "k")
            assert isinstance(denied, RuntimeError)
            assert str(denied).startswith("NOAUTH")
            wrong = client("AUTH", "nope")
            assert isinstance(wrong, RuntimeError)
            assert client("AUTH", "s3cret/pw") == "OK"
            assert client("PING") == "PONG"
        finally:
            client.close()


@pytest.mark.usefixtures("need_redis")
def test_redis_server_restart_keeps_port_and_replaces_process() -> None:
    server = RedisServer().start()
    try:
        port, first_pid = server.port, server.pid
        assert first_pid is not None
        client = _Resp(port)
        assert client("SET", "k", "v") == "OK"
        client.close()

        server.restart()
        assert server.port == port
        assert server.pid is not None
        assert server.pid != first_pid
        assert _process_gone(first_pid)
        client = _Resp(port)
        try:
            assert client("GET", "k") is None, "no persistence: a restarted server starts empty"
        finally:
            client.close()
    finally:
        server.stop()


@pytest.mark.usefixtures("need_redis")
def test_redis_server_kill_then_recover_and_stop_is_idempotent() -> None:
    server = RedisServer().start()
    try:
        port, pid = server.port, server.pid
        assert pid is not None
        server.kill()
        assert _process_gone(pid)
        assert server.pid is None
        assert not server.ping()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

        server.restart()  # recovery after a crash, same port
        assert server.port == port
        assert server.ping()
        second = server.pid
        assert second is not None
    finally:
        server.stop()
    assert _process_gone(second)
    server.stop()
    server.kill()
    assert server.pid is None


@pytest.mark.usefixtures("need_redis")
def test_redis_server_user_dir_is_kept(tmp_path: Path) -> None:
    with RedisServer(dir=str(tmp_path)) as server:
        client = _Resp(server.port)
        try:
            assert client("CONFIG", "GET", "dir") == ["dir", str(tmp_path)]
        finally:
            client.close()
    assert tmp_path.is_dir()


@pytest.mark.usefixtures("need_redis")
def test_redis_server_port_in_use_fails_with_server_log() -> None:
    with RedisServer() as first:
        with pytest.raises(RuntimeError, match="exited early") as excinfo:
            RedisServer(port=first.port).start()
        assert "Address already in use" in str(excinfo.value)
        assert first.ping()


def test_missing_redis_binary_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RedisServerNotFound, match=r"apt-get install -y redis-server"):
        RedisServer(binary="/nonexistent").start()
    monkeypatch.setenv("AGENTACCEL_REDIS_SERVER", "/nonexistent/redis-server")
    assert redis_server_binary() is None
    with pytest.raises(RedisServerNotFound, match=r"apt-get install -y redis-server"):
        RedisServer().start()


# ---------------------------------------------------------------------------------- OTLPReceiver --


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def receiver(shared_receiver: OTLPReceiver) -> OTLPReceiver:
    shared_receiver.clear()
    return shared_receiver


# Every attribute value type the SDK exports: str, int, float, bool and homogeneous sequences.
_CHILD_ATTRIBUTES: dict[str, AttributeValue] = {
    "llm.model": "gpt-test",
    "llm.tokens": 42,
    "llm.temperature": 0.25,
    "cache.hit": False,
    "tags": ("a", "b"),
    "sizes": (1, 2, 3),
}


def _emit_parent_and_child(exporter: SpanExporter, *, batch: bool) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "testkit-svc", "deployment": 3}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("agentaccel.tests", "1.0")
    with (
        tracer.start_as_current_span("agent.run", kind=SpanKind.SERVER),
        tracer.start_as_current_span("llm.call", kind=SpanKind.CLIENT, attributes=_CHILD_ATTRIBUTES) as child,
    ):
        child.add_event("retry")
        child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()  # flushes the processor and shuts down the exporter


def _check_parent_and_child(spans: list[ReceivedSpan], protocol: str) -> None:
    by_name = {span.name: span for span in spans if span.protocol == protocol}
    parent, child = by_name["agent.run"], by_name["llm.call"]
    assert parent.parent_span_id is None
    assert child.parent_span_id == parent.span_id
    assert child.trace_id == parent.trace_id
    assert len(child.trace_id) == 32 and int(child.trace_id, 16)
    assert len(child.span_id) == 16 and int(child.span_id, 16)
    assert parent.kind == 2  # OTLP SPAN_KIND_SERVER
    assert child.kind == 3  # OTLP SPAN_KIND_CLIENT
    # Sequences come back as lists (OTLP ArrayValue); everything else unchanged.
    assert child.attributes == {**_CHILD_ATTRIBUTES, "tags": ["a", "b"], "sizes": [1, 2, 3]}
    assert child.status_code == 2 and child.status_message == "boom"
    assert parent.status_code == 0
    assert child.events == ["retry"]
    assert child.resource["service.name"] == "testkit-svc"
    assert child.resource["deployment"] == 3
    assert child.scope == "agentaccel.tests"
    assert child.protocol == protocol


def test_receiver_decodes_spans_sent_over_http(receiver: OTLPReceiver) -> None:
    assert receiver.http_endpoint.startswith("http://127.0.0.1:")
    _emit_parent_and_child(HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"), batch=False)
    spans = receiver.wait_for_spans(2)
    assert len(spans) == 2
    _check_parent_and_child(spans, "http")


def test_receiver_decodes_spans_sent_over_grpc(receiver: OTLPReceiver) -> None:
    assert receiver.grpc_endpoint.startswith("http://127.0.0.1:")
    _emit_parent_and_child(GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True), batch=True)
    spans = receiver.wait_for_spans(2)
    assert len(spans) == 2
    _check_parent_and_child(spans, "grpc")


def test_receiver_collects_both_protocols_and_gzip(receiver: OTLPReceiver) -> None:
    _emit_parent_and_child(
        HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces", compression=Compression.Gzip),
        batch=True,
    )
    _emit_parent_and_child(GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True), batch=False)
    assert len(receiver.wait_for_spans(2, name="llm.call")) == 2
    _check_parent_and_child(receiver.spans(), "http")
    _check_parent_and_child(receiver.spans(), "grpc")
    assert receiver.request_count("traces", "http") >= 1
    assert receiver.request_count("traces", "grpc") >= 1
    receiver.clear()
    assert receiver.spans() == []


def test_wait_for_spans_timeout_lists_what_arrived(receiver: OTLPReceiver) -> None:
    _emit_parent_and_child(HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"), batch=False)
    with pytest.raises(AssertionError, match=r"'missing'.*got 0.*'llm\.call' \(http\)"):
        receiver.wait_for_spans(1, timeout=0.2, name="missing")


def test_receiver_records_metrics_over_both_protocols(receiver: OTLPReceiver) -> None:
    exporters: list[MetricExporter] = [
        HttpMetricExporter(endpoint=receiver.http_endpoint + "/v1/metrics"),
        GrpcMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True),
    ]
    for exporter, name in zip(exporters, ["testkit.http.counter", "testkit.grpc.histogram"], strict=True):
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
        provider = MeterProvider(metric_readers=[reader])
        meter = provider.get_meter("agentaccel.tests")
        if "counter" in name:
            meter.create_counter(name).add(3)
        else:
            meter.create_histogram(name).record(1.5)
        provider.shutdown()  # final collection + export
    assert {"testkit.http.counter", "testkit.grpc.histogram"} <= receiver.metric_names()
    assert receiver.request_count("metrics", "http") >= 1
    assert receiver.request_count("metrics", "grpc") >= 1


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def test_receiver_http_logs_json_and_errors(receiver: OTLPReceiver) -> None:
    proto = {"Content-Type": "application/x-protobuf"}
    status, _, content_type = _post(
        receiver.http_endpoint + "/v1/logs", ExportLogsServiceRequest().SerializeToString(), proto
    )
    assert (status, content_type) == (200, "application/x-protobuf")
    assert receiver.request_count("logs", "http") == 1

    # OTLP/JSON spells ids in hex (not protobuf-JSON base64); gzip on top.
    trace_id, span_id, parent_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "json-scope"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": parent_id,
                                "name": "json.span",
                                "kind": 2,
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, body, _ = _post(
        receiver.http_endpoint + "/v1/traces",
        gzip.compress(json.dumps(document).encode()),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert status == 200, body
    (span,) = receiver.wait_for_spans(1, name="json.span")
    assert (span.trace_id, span.span_id, span.parent_span_id) == (trace_id, span_id, parent_id)
    assert span.attributes == {"n": 7}
    assert span.resource == {"service.name": "json-svc"}
    assert (span.scope, span.kind, span.status_code, span.protocol) == ("json-scope", 2, 1, "http")

    assert _post(receiver.http_endpoint + "/v1/nothing", b"", proto)[0] == 404
    assert _post(receiver.http_endpoint + "/v1/traces", b"\xff\xff not protobuf", proto)[0] == 400
    assert receiver.request_count("traces") == 1


def test_receiver_stop_ends_child_process_and_keeps_data() -> None:
    receiver = OTLPReceiver().start()
    pid = receiver.pid
    assert pid is not None
    assert psutil.Process(pid).ppid() == os.getpid()
    http_port = int(receiver.http_endpoint.rsplit(":", 1)[1])
    _emit_parent_and_child(HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"), batch=False)
    receiver.stop()
    assert _process_gone(pid)
    assert receiver.pid is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
    assert sorted(span.name for span in receiver.spans()) == ["agent.run", "llm.call"]
    receiver.stop()  # idempotent


def test_receiver_serves_http_when_grpcio_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shadow grpcio in the child only: the parent keeps its real grpc, the receiver process cannot import it.
    fake = tmp_path / "grpc"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('grpcio hidden by test')\n")
    pythonpath = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(pythonpath))
    with OTLPReceiver() as receiver:
        assert not receiver.grpc_available
        with pytest.raises(RuntimeError, match=r"gRPC is unavailable.*grpcio hidden by test"):
            _ = receiver.grpc_endpoint
        _emit_parent_and_child(HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"), batch=False)
        _check_parent_and_child(receiver.wait_for_spans(2), "http")
