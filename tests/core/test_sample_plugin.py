"""A third-party plugin distribution (tests/core/sample_plugin) built and pip-installed into a fresh virtual
environment is found through its entry point, with no code change and no patched metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).parent / "sample_plugin"
pytestmark = pytest.mark.slow

APP = """
import json
import agentaccel
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import agentaccel_sample

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))

@agentaccel.accelerate(name="lookup")
def lookup(q):
    return q.upper()

@agentaccel.accelerate(operation="invoke_agent", name="agent")
def agent(q):
    return lookup(q)

agentaccel.enable(tracer_provider=provider, **json.loads(SECTIONS))
with agentaccel.options(sample_tag="t1"):
    agent("a")
lookup("b")
try:
    agentaccel.options(sampel_tag="x").__enter__()
    option_error = None
except agentaccel.ConfigError as exc:
    option_error = str(exc)
spans = [[s.name, dict(s.attributes)] for s in exporter.get_finished_spans()]
print(json.dumps({"spans": spans, "counts": dict(agentaccel_sample.counts), "option_error": option_error,
                  "middleware": [m.name for m in agentaccel.runtime().middleware]}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment: agentaccel built as a wheel and installed from this checkout with its locked
    dependencies, then the sample plugin built and installed into it. Offline: every distribution comes from uv's
    cache, which installing the test environment filled."""
    env_dir = tmp_path_factory.mktemp("plugin-venv") / "venv"
    uv = [sys.executable, "-m", "uv"]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(env_dir)}
    env.pop("VIRTUAL_ENV", None)
    steps = [
        [*uv, "sync", "--offline", "--locked", "--no-dev", "--no-editable", "--python", sys.executable],
        [*uv, "pip", "install", "--offline", "--no-deps", "--python", str(env_dir / "bin" / "python"), str(SAMPLE)],
    ]
    for step in steps:
        done = subprocess.run(step, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert done.returncode == 0, f"{' '.join(step)}:\n{done.stdout}"
    yield env_dir


def _python(venv: Path, code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _cli(venv: Path, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "agentaccel"), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_plugin_is_not_importable_from_the_test_environment(venv: Path) -> None:
    # Proves the discovery below comes from the fresh environment's metadata, not from this one.
    with pytest.raises(ImportError):
        __import__("agentaccel_sample")
    assert not (venv / "lib" / "python3.11" / "site-packages" / "_agentaccel.pth").exists()  # not editable


def test_discovered_through_its_entry_point(venv: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    result = _cli(venv, ["plugins", "--json"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    sample = next(p for p in report["plugins"] if p["name"] == "sample")
    assert sample == {"name": "sample", "origin": "agentaccel-sample-plugin 0.1.0", "status": "enabled", "reason": ""}
    assert report["middleware"] == ["tracing", "sample"]


def test_its_middleware_config_and_option_work(venv: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    env = {**subprocess_env, "AGENTACCEL_SAMPLE__OPERATIONS": "execute_tool"}
    result = _python(venv, f"SECTIONS = {json.dumps(json.dumps({'sample': {'greeting': 'hey'}}))}\n{APP}", env,
                     tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["middleware"] == ["tracing", "sample"]
    # enable(sample={"greeting": ...}) and the env variable both applied; invoke_agent was not counted.
    assert out["counts"] == {"execute_tool:ok": 2}
    spans = out["spans"]
    assert [name for name, _ in spans] == ["execute_tool lookup", "invoke_agent agent", "execute_tool lookup"]
    assert [attributes.get("sample.greeting") for _, attributes in spans] == ["hey", None, "hey"]
    assert [attributes.get("sample.tag") for _, attributes in spans] == ["t1", None, None]
    assert "sampel_tag" in out["option_error"] and "sample_tag" in out["option_error"]


def test_deny_and_allow_lists(venv: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "agentaccel.toml").write_text('[sample]\ngreeting = "from file"\n')
    denied = _cli(venv, ["plugins", "--json"], {**subprocess_env, "AGENTACCEL_DISABLE_PLUGINS": "sample"}, tmp_path)
    assert denied.returncode == 0, denied.stderr
    report = json.loads(denied.stdout)
    assert report["config_error"] is None  # the disabled plugin's section is ignored, not an error
    assert next(p for p in report["plugins"] if p["name"] == "sample")["status"] == "disabled"
    assert report["middleware"] == ["tracing"]
    allowed = _cli(venv, ["plugins", "--json"], {**subprocess_env, "AGENTACCEL_PLUGINS": "other"}, tmp_path)
    sample = next(p for p in json.loads(allowed.stdout)["plugins"] if p["name"] == "sample")
    assert (sample["status"], sample["reason"]) == ("disabled", "not in AGENTACCEL_PLUGINS")


def test_its_command_and_doctor_check(venv: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    command = _cli(venv, ["sample-stats", "--greeting", "hi"], subprocess_env, tmp_path)
    assert (command.returncode, command.stdout.strip()) == (0, "sample plugin: greeting='hi'")
    doctor = _cli(venv, ["doctor"], {**subprocess_env, "AGENTACCEL_SAMPLE__GREETING": "yo"}, tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "[ok] sample greeting: greeting is 'yo'" in doctor.stdout


def test_a_typo_in_its_section_is_reported(venv: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    doctor = _cli(venv, ["doctor"], {**subprocess_env, "AGENTACCEL_SAMPLE__GRETING": "yo"}, tmp_path)
    assert doctor.returncode == 1
    assert ("[FAIL] configuration: environment variable AGENTACCEL_SAMPLE__GRETING (sample.greting): unknown key "
            "'greting' in section 'sample' (did you mean 'greeting'?)") in doctor.stdout
