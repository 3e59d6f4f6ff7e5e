"""The `agentaccel` command: plugins, doctor (config, exporter, Redis reachability), demo and mock-llm."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agentaccel
from agentaccel.cli import main
from agentaccel.testing.otlp_receiver import OTLPReceiver
from agentaccel.testing.redis_server import RedisServer

AGENTACCEL = str(Path(sys.executable).parent / "agentaccel")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTACCEL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_plugins_lists_builtins_pipeline_and_adapters(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    result = _cli(["plugins"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  tracing          enabled   built-in" in lines
    assert "  threads          enabled   built-in" in lines
    assert "pipeline (outermost first): tracing" in lines
    assert any(line.startswith("  threads          instrumented") for line in lines)
    as_json = json.loads(_cli(["plugins", "--json"], subprocess_env, tmp_path).stdout)
    assert {p["name"] for p in as_json["plugins"]} >= {"tracing", "threads"}


def test_plugins_shows_a_config_error_and_exits_2(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    env = {**subprocess_env, "AGENTACCEL_TRACING__EXPORT": "sometimes"}
    result = _cli(["plugins"], env, tmp_path)
    assert result.returncode == 2
    assert "configuration error (nothing was enabled):" in result.stdout
    assert "expected one of 'auto', 'otlp', 'console', 'none', got 'sometimes'" in result.stdout
    assert "  tracing          enabled   built-in" in result.stdout.splitlines()  # the report is still there
    as_json = _cli(["plugins", "--json"], env, tmp_path)
    assert as_json.returncode == 2
    assert "got 'sometimes'" in json.loads(as_json.stdout)["config_error"]


def test_doctor_checks_redis_urls_in_any_section(redis_server: RedisServer, subprocess_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    # No plugin with a Redis setting exists in the core, so declare one through a config file's section of a
    # plugin registered in code is not possible from a subprocess: use the sample-like inline module instead.
    plugin = tmp_path / "redisplugin.py"
    plugin.write_text(
        "import dataclasses, agentaccel\n"
        "@dataclasses.dataclass\n"
        "class C:\n"
        "    backend: str = ''\n"
        "    replicas: list[str] = dataclasses.field(default_factory=list)\n"
        "@agentaccel.hookimpl\n"
        "def agentaccel_add_config(spec):\n"
        "    spec.add_section('store', C)\n"
        "agentaccel.register_plugin(__import__(__name__), 'store')\n"
        "from agentaccel.cli import main\n"
        "raise SystemExit(main(['doctor']))\n")
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    env = {**subprocess_env, "AGENTACCEL_STORE__BACKEND": redis_server.url,
           "AGENTACCEL_STORE__REPLICAS": json.dumps([dead])}
    result = subprocess.run([sys.executable, str(plugin)], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f"[ok] redis (store.backend): redis://127.0.0.1:{redis_server.port}: PONG" in out
    assert f"[FAIL] redis (store.replicas[0]): redis://127.0.0.1:{dead.split(':')[2].split('/')[0]}: unreachable" in out
    assert out.splitlines()[-1] == "1 problem(s) found"


def test_doctor_checks_redis_auth(subprocess_env: dict[str, str]) -> None:
    from agentaccel._doctor import check_redis
    from agentaccel.testing.redis_server import redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(password="s3cret") as server:
        assert check_redis(server.url) == (True, f"redis://127.0.0.1:{server.port}: PONG")
        ok, message = check_redis(f"redis://:wrong@127.0.0.1:{server.port}/0")
        assert not ok and "AUTH refused" in message
        ok, message = check_redis(f"redis://127.0.0.1:{server.port}/0")
        assert not ok and "NOAUTH" in message


def test_doctor_checks_the_otlp_endpoint(otlp_receiver: OTLPReceiver, subprocess_env: dict[str, str],
                                         tmp_path: Path) -> None:
    env = {**subprocess_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_endpoint}
    reachable = _cli(["doctor"], env, tmp_path)
    assert reachable.returncode == 0, reachable.stdout
    assert f"[ok] exporter: OTLP http/protobuf endpoint {otlp_receiver.http_endpoint} accepts connections" in (
        reachable.stdout)
    dead = f"http://127.0.0.1:{_free_port()}"
    unreachable = _cli(["doctor"], {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": dead}, tmp_path)
    assert unreachable.returncode == 1
    assert f"[FAIL] exporter: OTLP http/protobuf endpoint {dead} unreachable" in unreachable.stdout


def test_doctor_reports_config_errors(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.agentaccel.tracing]\nexport = 3\n')
    result = _cli(["doctor"], subprocess_env, tmp_path)
    assert result.returncode == 1
    assert "[FAIL] configuration: " in result.stdout
    assert "key tracing.export: expected one of 'auto', 'otlp', 'console', 'none', got 3" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 problem(s) found"


def test_demo_runs_an_agent_and_prints_the_trace(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    result = _cli(["demo", "--questions", "2", "--latency", "0.01"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Q: weather in Paris?" in out and "A: tool results: get_weather: Paris" in out
    assert "agentaccel recorded 9 spans:" in out
    lines = out.splitlines()
    assert "invoke_workflow trip-planner" in lines[lines.index("agentaccel recorded 9 spans:") + 1]
    assert "spans by operation: chat=4, execute_tool=2, invoke_agent=2, invoke_workflow=1" in out
    assert "mock LLM served 4 chat requests" in out
    assert "the cache answered" not in out


def test_demo_says_which_calls_the_cache_answered(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    # A stand-in for the cache plugin (which the core tests do not install): it answers every tool call and
    # marks it as the cache does; the chat calls it lets through are misses, which do not count.
    script = tmp_path / "fakecache.py"
    script.write_text(
        "import agentaccel\n"
        "class Cache(agentaccel.Middleware):\n"
        "    name = 'fakecache'\n"
        "    after = ('tracing',)\n"
        "    def flow(self, call):\n"
        "        if call.operation == 'execute_tool':\n"
        "            call.annotate('agentaccel.cache.result', 'hit')\n"
        "            yield agentaccel.Return('from the cache')\n"
        "            return\n"
        "        call.annotate('agentaccel.cache.result', 'miss')\n"
        "        yield agentaccel.PROCEED\n"
        "@agentaccel.hookimpl\n"
        "def agentaccel_register_middleware(register):\n"
        "    register(Cache())\n"
        "agentaccel.register_plugin(__import__(__name__), 'fakecache')\n"
        "from agentaccel.cli import main\n"
        "raise SystemExit(main(['demo', '--questions', '2', '--latency', '0']))\n")
    result = subprocess.run([sys.executable, str(script)], env=subprocess_env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "spans by operation: chat=4, execute_tool=2, invoke_agent=2, invoke_workflow=1" in lines
    assert lines[-2:] == ["mock LLM served 4 chat requests over 4 connections",
                          "the cache answered (hit or coalesced): execute_tool=2"]


@pytest.mark.parametrize(("args", "message"), [
    (["--questions", "0"], "argument --questions: must be a whole number >= 1, got '0'"),
    (["--questions", "-1"], "argument --questions: must be a whole number >= 1, got '-1'"),
    (["--latency", "-1"], "argument --latency: must be a number of seconds >= 0, got '-1'"),
    (["--latency", "nan"], "argument --latency: must be a number of seconds >= 0, got 'nan'"),
])
def test_demo_rejects_bad_values(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: agentaccel demo ") and f"agentaccel demo: error: {message}\n" in err


class NestedCommand:
    @agentaccel.hookimpl
    def agentaccel_register_commands(self, register: Callable[..., None]) -> None:
        def arguments(parser: argparse.ArgumentParser) -> None:
            actions = parser.add_subparsers(dest="action", required=True)
            actions.add_parser("stats").add_argument("--json", action="store_true")

        register("widget", "inspect widgets", arguments, lambda args: 0)


@pytest.mark.parametrize("args", [["run", "--bogus"], ["mock-llm", "--bogus"], ["widget", "stats", "--bogus"],
                                  ["plugins", "--bogus"]])
def test_an_unknown_flag_shows_the_subcommands_usage(args: list[str], register: Callable[[Any, str], None],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    register(NestedCommand(), "widget")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    command = " ".join(args[:-1])
    err = capsys.readouterr().err
    assert err.startswith(f"usage: agentaccel {command} ")
    assert err.endswith(f"agentaccel {command}: error: unrecognized arguments: --bogus\n")


def test_run_still_passes_unknown_flags_to_the_program(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    show = [sys.executable, "-c", "import sys; print(sys.argv[1:])", "--bogus"]
    for args in (["run", *show], ["run", "--", *show], ["run", "--plugins", "tracing", *show]):
        result = _cli(args, subprocess_env, tmp_path)
        assert (result.returncode, result.stdout) == (0, "['--bogus']\n"), (args, result.stderr)


def test_mock_llm_command_serves_until_terminated(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen([AGENTACCEL, "mock-llm", "--port", "0", "--latency", "0"], env=subprocess_env,
                            cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        import urllib.request

        with urllib.request.urlopen(f"{url}/models", timeout=10) as response:
            assert json.loads(response.read())["object"] == "list"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_version_and_unknown_command(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    import agentaccel

    assert _cli(["--version"], subprocess_env, tmp_path).stdout.strip() == f"agentaccel {agentaccel.__version__}"
    unknown = _cli(["frobnicate"], subprocess_env, tmp_path)
    assert unknown.returncode == 2 and "invalid choice: 'frobnicate'" in unknown.stderr


def test_doctor_reports_exporter_settings_it_cannot_set_up(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    console = _cli(["doctor"], {**subprocess_env, "AGENTACCEL_TRACING__EXPORT": "console"}, tmp_path)
    assert console.returncode == 0, console.stdout
    assert "[ok] exporter: spans go to: console" in console.stdout
    zipkin = _cli(["doctor"], {**subprocess_env, "OTEL_TRACES_EXPORTER": "zipkin"}, tmp_path)
    assert zipkin.returncode == 1
    assert "[FAIL] exporter: OTEL_TRACES_EXPORTER='zipkin' is not supported by agentaccel's setup" in zipkin.stdout


@pytest.mark.parametrize(("variable", "reason"), [
    ("OTEL_TRACES_EXPORTER", "export turned off by OTEL_TRACES_EXPORTER=none"),
    ("AGENTACCEL_TRACING__EXPORT", "export turned off by tracing.export = 'none'"),
])
def test_doctor_says_what_turned_export_off(variable: str, reason: str, subprocess_env: dict[str, str],
                                            tmp_path: Path) -> None:
    env = {**subprocess_env, variable: "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    result = _cli(["doctor"], env, tmp_path)
    assert result.returncode == 0, result.stdout
    assert f"[ok] exporter: {reason}: spans go to a TracerProvider the application sets up" in result.stdout
    assert "set OTEL_EXPORTER_OTLP_ENDPOINT" not in result.stdout
