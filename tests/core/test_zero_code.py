"""Enabling without code changes, and exporting over OTLP to a real receiver process: `agentaccel run`,
`opentelemetry-instrument`, and enable() configuring the SDK from the OTEL_* variables (HTTP and gRPC)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import agentaccel
from agentaccel.cli import main
from agentaccel.testing.otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

# An application that never mentions enable(): it only marks its functions.
APP = textwrap.dedent("""
    import sys
    import agentaccel

    @agentaccel.accelerate(name="lookup")
    def lookup(q):
        return q * 2

    @agentaccel.accelerate(operation="invoke_agent", name="helper")
    def helper(q):
        return lookup(q)

    print("enabled" if agentaccel.runtime() is not None else "not enabled", helper("ab"))
    print("guard", "agentaccel.testing.netguard" in sys.modules)
""")


def _write_app(tmp_path: Path, code: str = APP) -> Path:
    app = tmp_path / "app.py"
    app.write_text(code)
    return app


def _otlp_env(env: dict[str, str], receiver: OTLPReceiver, protocol: str) -> dict[str, str]:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    return {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "zero-code-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    return result


def _assert_trace(receiver: OTLPReceiver, protocol: str) -> None:
    spans = {s.name: s for s in receiver.wait_for_spans(2)}
    agent, tool = spans["invoke_agent helper"], spans["execute_tool lookup"]
    assert tool.parent_span_id == agent.span_id and tool.trace_id == agent.trace_id
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert agent.attributes["gen_ai.agent.name"] == "helper"
    assert tool.resource["service.name"] == "zero-code-test"
    assert tool.scope == "agentaccel.python"
    assert {s.protocol for s in spans.values()} == {"grpc" if protocol == "grpc" else "http"}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_agentaccel_run_exports_spans(protocol: str, otlp_receiver: OTLPReceiver, subprocess_env: dict[str, str],
                                      tmp_path: Path) -> None:
    app = _write_app(tmp_path)
    result = _run([str(BIN / "agentaccel"), "run", "--", sys.executable, str(app)],
                  _otlp_env(subprocess_env, otlp_receiver, protocol), tmp_path)
    assert result.stdout.splitlines() == ["enabled abab", "guard True"]  # the guard's sitecustomize still ran
    _assert_trace(otlp_receiver, protocol)
    assert "gen_ai.client.operation.duration" in otlp_receiver.metric_names()


def test_agentaccel_run_without_dashes_and_with_program_arguments(otlp_receiver: OTLPReceiver,
                                                                  subprocess_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    app = _write_app(tmp_path, APP + "print(sys.argv[1:])\n")
    result = _run([str(BIN / "agentaccel"), "run", sys.executable, str(app), "--flag", "x"],
                  _otlp_env(subprocess_env, otlp_receiver, "http/protobuf"), tmp_path)
    assert result.stdout.splitlines()[-1] == "['--flag', 'x']"
    _assert_trace(otlp_receiver, "http/protobuf")


def test_opentelemetry_instrument_enables_agentaccel(otlp_receiver: OTLPReceiver, subprocess_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    app = _write_app(tmp_path)
    env = {**_otlp_env(subprocess_env, otlp_receiver, "http/protobuf"), "OTEL_TRACES_EXPORTER": "otlp",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    result = _run([str(BIN / "opentelemetry-instrument"), sys.executable, str(app)], env, tmp_path)
    assert result.stdout.splitlines()[0] == "enabled abab"
    _assert_trace(otlp_receiver, "http/protobuf")


def test_enable_in_code_configures_the_sdk_from_otel_variables(otlp_receiver: OTLPReceiver,
                                                               subprocess_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    app = _write_app(tmp_path, "import agentaccel\nagentaccel.enable()\n" + APP)
    _run([sys.executable, str(app)], _otlp_env(subprocess_env, otlp_receiver, "grpc"), tmp_path)
    _assert_trace(otlp_receiver, "grpc")


def test_no_export_without_otel_variables(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    app = _write_app(tmp_path, "import agentaccel\nagentaccel.enable()\n" + APP + textwrap.dedent("""
        from opentelemetry import trace
        print(type(trace.get_tracer_provider()).__name__)
    """))
    result = _run([sys.executable, str(app)], subprocess_env, tmp_path)
    assert result.stdout.splitlines()[-1] == "ProxyTracerProvider"  # nothing configured, nothing replaced


def test_agentaccel_run_reports_a_config_error_before_starting(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    app = _write_app(tmp_path, "print('the program ran')\n")
    (tmp_path / "agentaccel.toml").write_text('[tracing]\nexprot = "otlp"\n')
    result = subprocess.run([str(BIN / "agentaccel"), "run", "--", sys.executable, str(app)], env=subprocess_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "the program ran" not in result.stdout
    assert "unknown key 'exprot' in section 'tracing' (did you mean 'export'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_agentaccel_run_needs_a_program(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "agentaccel"), "run"], env=subprocess_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "agentaccel run -- python app.py" in result.stderr
    missing = subprocess.run([str(BIN / "agentaccel"), "run", "--", "no-such-program-xyz"], env=subprocess_env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 127 and "not found" in missing.stderr


def test_agentaccel_run_reports_an_exporter_mistake_before_starting(subprocess_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    app = _write_app(tmp_path, "print('the program ran')\n")
    env = {**subprocess_env, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    result = subprocess.run([str(BIN / "agentaccel"), "run", "--", sys.executable, str(app)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "the program ran" not in result.stdout
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported; use http/protobuf or grpc" in result.stderr


class _Named(agentaccel.Middleware):
    def __init__(self, name: str, before: tuple[str, ...]) -> None:
        self.name, self.before = name, before


class _CyclicOrder:
    """Two middleware that each ask to run outside the other: enable() raises a PluginError."""

    @agentaccel.hookimpl
    def agentaccel_register_middleware(self, register: Any) -> None:
        register(_Named("first", ("second",)))
        register(_Named("second", ("first",)))


def test_agentaccel_run_reports_a_plugin_error_before_starting(register: Any,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # In this process, as the command runs: a program that does not exist would only be reached (status 127) if
    # enable() succeeded, so nothing is executed either way.
    register(_CyclicOrder(), "cyclic")
    assert main(["run", "--", "no-such-program-xyz"]) == 2
    assert capsys.readouterr().err == ("agentaccel run: middleware order has a cycle among: first, second; check "
                                       "their before/after\n")
