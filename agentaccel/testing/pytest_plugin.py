"""pytest fixtures for testing agentaccel and plugins built on it.

- ``agentaccel_spans``: agentaccel enabled with an in-memory span exporter; ``.spans()``, ``.clear()``,
  ``.enable(**sections)`` to re-enable with other configuration.
- ``redis_server``: a real redis-server on a free loopback port (skips with the install hint if it is missing).
- ``mock_llm``: the OpenAI-compatible test server on loopback.
- ``otlp_receiver``: a real OTLP receiver process (HTTP and gRPC).
- ``subprocess_env``: environment for child processes with the network guard installed in them.
- The network guard: any non-loopback connection fails the test. On for every test when the ini option
  ``agentaccel_network_guard = true`` is set, or per test with ``@pytest.mark.agentaccel_network_guard``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from agentaccel.mockllm import MockLLM
    from agentaccel.testing.otlp_receiver import OTLPReceiver
    from agentaccel.testing.redis_server import RedisServer

GUARD_SITE = str(Path(__file__).parent / "guard_site")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("agentaccel_network_guard", "fail every test that connects beyond loopback", type="bool",
                  default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "agentaccel_network_guard: fail this test on a non-loopback connection")


@pytest.fixture(autouse=True)
def _agentaccel_network_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    wanted = request.config.getini("agentaccel_network_guard") or request.node.get_closest_marker(
        "agentaccel_network_guard") is not None
    if not wanted:
        yield
        return
    from agentaccel.testing.netguard import network_guard

    with network_guard() as guard:
        yield
    if guard.attempts:
        pytest.fail("non-loopback network access: " + "; ".join(guard.attempts), pytrace=False)


class SpanRecorder:
    """agentaccel enabled with an in-memory exporter (``SimpleSpanProcessor``: spans are there when the call
    returns)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def enable(self, **sections: Any) -> Any:
        import agentaccel

        return agentaccel.enable(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
                                 **sections)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``; fails listing what there is otherwise."""
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture
def agentaccel_spans() -> Iterator[SpanRecorder]:
    import agentaccel

    recorder = SpanRecorder()
    recorder.enable()
    try:
        yield recorder
    finally:
        agentaccel.disable()
        recorder.tracer_provider.shutdown()
        recorder.meter_provider.shutdown()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    from agentaccel.testing.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None and not os.environ.get("CI"):
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    with RedisServer() as server:  # in CI a missing binary is an error, with the install hint
        yield server


@pytest.fixture
def mock_llm() -> Iterator[MockLLM]:
    from agentaccel.mockllm import MockLLM

    with MockLLM() as server:
        yield server


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    from agentaccel.testing.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """os.environ for a child process: the network guard installed, a throwaway HOME, frameworks' telemetry
    off, and no inherited OTEL_*/AGENTACCEL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTACCEL_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [GUARD_SITE, env.get("PYTHONPATH")])),
        HOME=str(tmp_path),
        CREWAI_DISABLE_TELEMETRY="true",
        CREWAI_TRACING_ENABLED="false",
        HAYSTACK_TELEMETRY_ENABLED="False",
        OPENAI_AGENTS_DISABLE_TRACING="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    return env
