"""Every hook in agentaccel.hookspecs, plugin failures, the allow/deny lists, and enable()/register_plugin()
behaviour a plugin author relies on."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentaccel
import agentaccel.cli
from agentaccel import hookspecs
from agentaccel.testing.pytest_plugin import SpanRecorder

Register = Callable[[Any, str], None]
SOURCE = Path(__file__).read_text(encoding="utf-8")


def test_every_hook_is_exercised_in_this_module() -> None:
    hooks = sorted(name for name, obj in vars(hookspecs).items()
                   if name.startswith("agentaccel_") and hasattr(obj, "agentaccel_spec"))
    assert len(hooks) >= 8
    missing = [hook for hook in hooks if not re.search(rf"def {hook}\(", SOURCE)]
    assert missing == [], f"hooks without a test implementing them here: {missing}"


# --- helpers -------------------------------------------------------------------------------------------------------


class Recorder(agentaccel.Middleware):
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        self.calls.append(call.name)
        yield agentaccel.PROCEED


class Lifecycle:
    """Records configure/unconfigure; optionally contributes a middleware."""

    def __init__(self, name: str, log: list[str], middleware: agentaccel.Middleware | None = None) -> None:
        self.name = name
        self.log = log
        self.middleware = middleware

    @agentaccel.hookimpl
    def agentaccel_configure(self, config: agentaccel.Config) -> None:
        self.log.append(f"configure {self.name}")

    @agentaccel.hookimpl
    def agentaccel_unconfigure(self, config: agentaccel.Config) -> None:
        self.log.append(f"unconfigure {self.name}")

    @agentaccel.hookimpl
    def agentaccel_register_middleware(self, register: Callable[[agentaccel.Middleware], None]) -> None:
        if self.middleware is not None:
            register(self.middleware)


def status(rt: agentaccel.Runtime | None, name: str) -> tuple[str, str]:
    assert rt is not None
    info = {p.name: p for p in rt.plugins}[name]
    return info.status, info.reason


@agentaccel.accelerate(name="lookup")
def lookup(x: int) -> int:
    return x


# --- configure / unconfigure / add_config --------------------------------------------------------------------------


def test_configure_and_unconfigure_run_once_per_enable_and_disable_in_order(register: Register) -> None:
    log: list[str] = []
    register(Lifecycle("a", log), "a")
    register(Lifecycle("b", log), "b")

    agentaccel.enable()
    agentaccel.enable()  # same arguments: nothing happens
    assert log == ["configure a", "configure b"]
    agentaccel.disable()
    agentaccel.disable()
    assert log == ["configure a", "configure b", "unconfigure b", "unconfigure a"]

    log.clear()
    agentaccel.enable()
    agentaccel.disable()
    assert log == ["configure a", "configure b", "unconfigure b", "unconfigure a"]


@dataclasses.dataclass
class AuditConfig:
    path: str = "audit.log"
    verbose: bool = False


class Audit:
    """A plugin with a config section, per-call option and a middleware reading both."""

    def __init__(self) -> None:
        self.config: AuditConfig | None = None
        self.extra: dict[str, Any] = {}
        self.seen: list[tuple[str, Any]] = []

    @agentaccel.hookimpl
    def agentaccel_add_config(self, spec: agentaccel.ConfigSpec) -> None:
        spec.add_section("audit", AuditConfig)
        spec.add_option("audit", bool, "False skips the audit log for these calls")

    @agentaccel.hookimpl
    def agentaccel_configure(self, config: agentaccel.Config) -> None:
        self.config = config.section("audit")
        self.extra = dict(config.extra)

    @agentaccel.hookimpl
    def agentaccel_register_middleware(self, register: Callable[[agentaccel.Middleware], None],
                                       config: agentaccel.Config) -> None:
        plugin = self

        class AuditMiddleware(agentaccel.Middleware):
            name = "audit"

            def flow(self, call: agentaccel.Call) -> Iterator[Any]:
                yield agentaccel.PROCEED
                if call.options.get("audit", True):
                    plugin.seen.append((call.name, config.section("audit").path))

        register(AuditMiddleware())


def test_a_plugin_declares_its_section_and_options_and_configures_from_them(
    agentaccel_spans: SpanRecorder, register: Register
) -> None:
    audit = Audit()
    register(audit, "audit")
    recorder = agentaccel_spans

    recorder.enable(audit={"path": "/var/log/agent.log", "verbose": True})
    assert audit.config == AuditConfig(path="/var/log/agent.log", verbose=True)
    assert audit.extra == {"tracer_provider": recorder.tracer_provider, "meter_provider": recorder.meter_provider}

    lookup(1)
    with agentaccel.options(audit=False):
        lookup(2)
    assert audit.seen == [("lookup", "/var/log/agent.log")]


def test_a_config_error_in_configure_undoes_enable(register: Register) -> None:
    log: list[str] = []

    class Strict(Lifecycle):
        @agentaccel.hookimpl
        def agentaccel_configure(self, config: agentaccel.Config) -> None:
            raise agentaccel.ConfigError("strict.url: redis://nowhere cannot work")

    register(Lifecycle("first", log), "first")
    register(Strict("strict", log), "strict")

    with pytest.raises(agentaccel.ConfigError, match=r"strict\.url") as caught:
        agentaccel.enable()

    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert log == ["configure first", "unconfigure first"]
    assert agentaccel.runtime() is None


# --- plugin failures -------------------------------------------------------------------------------------------


def test_a_plugin_whose_configure_raises_is_failed_and_the_others_still_work(
    agentaccel_spans: SpanRecorder, register: Register
) -> None:
    log: list[str] = []
    broken_mw, good_mw = Recorder("broken-mw"), Recorder("good-mw")

    class Broken(Lifecycle):
        @agentaccel.hookimpl
        def agentaccel_configure(self, config: agentaccel.Config) -> None:
            raise RuntimeError("no database")

    register(Broken("broken", log, broken_mw), "broken")
    register(Lifecycle("good", log, good_mw), "good")
    rt = agentaccel.runtime()

    assert status(rt, "broken") == ("failed", "agentaccel_configure raised RuntimeError: no database")
    assert status(rt, "good") == ("enabled", "")
    assert rt is not None
    assert [mw.name for mw in rt.middleware] == ["tracing", "good-mw"]
    assert lookup(3) == 3
    assert good_mw.calls == ["lookup"]
    assert broken_mw.calls == []
    assert [s.name for s in agentaccel_spans.spans()] == ["execute_tool lookup"]
    agentaccel.disable()
    assert log == ["configure good", "unconfigure good"]  # the failed plugin is not unconfigured


def test_a_plugin_that_fails_after_configuring_is_still_unconfigured(register: Register) -> None:
    # configure succeeded (it may have opened a connection pool); a later hook failed: disable() must still let
    # the plugin release what configure acquired.
    log: list[str] = []

    class FailsLater(Lifecycle):
        @agentaccel.hookimpl
        def agentaccel_register_middleware(self, register: Callable[[agentaccel.Middleware], None]) -> None:
            raise RuntimeError("middleware setup failed")

    register(FailsLater("late", log), "late")
    rt = agentaccel.enable()
    assert status(rt, "late") == ("failed", "agentaccel_register_middleware raised RuntimeError: middleware "
                                            "setup failed")
    agentaccel.disable()

    assert log == ["configure late", "unconfigure late"]


def test_a_plugin_with_an_unknown_hook_is_failed(register: Register) -> None:
    typo_mw, good_mw = Recorder("typo-mw"), Recorder("good-mw")

    class Typo:
        @agentaccel.hookimpl
        def agentaccel_foo(self) -> None:
            """Not a hook."""

        @agentaccel.hookimpl
        def agentaccel_register_middleware(self, register: Callable[[agentaccel.Middleware], None]) -> None:
            register(typo_mw)

    register(Typo(), "typo")
    register(Lifecycle("good", [], good_mw), "good")
    rt = agentaccel.enable()

    state, reason = status(rt, "typo")
    assert state == "failed"
    assert "agentaccel_foo" in reason
    assert status(rt, "good") == ("enabled", "")
    lookup(1)
    assert typo_mw.calls == []
    assert good_mw.calls == ["lookup"]


def test_a_plugin_whose_hook_wants_an_argument_the_spec_lacks_is_failed(register: Register) -> None:
    class WrongSignature:
        @agentaccel.hookimpl
        def agentaccel_configure(self, config: agentaccel.Config, tracer: Any) -> None:
            """``tracer`` is not an argument of this hook."""

    register(WrongSignature(), "wrong")
    state, reason = status(agentaccel.enable(), "wrong")
    assert state == "failed"
    assert "tracer" in reason


FAILED_BUILT_IN_SCRIPT = textwrap.dedent("""
    import json

    import agentaccel


    class Broken:
        def get_meter(self, *args, **kwargs):
            raise RuntimeError("broken")  # tracing's agentaccel_register_middleware raises with this


    agentaccel.enable(meter_provider=Broken())
    first = {p.name: p.status for p in agentaccel.runtime().plugins}["tracing"]
    rt = agentaccel.enable()  # fixed: other arguments, so enable() starts over
    print(json.dumps({"first": first, "then": {p.name: p.status for p in rt.plugins}["tracing"],
                      "middleware": [mw.name for mw in rt.middleware]}))
""")


@pytest.mark.slow
def test_a_built_in_plugin_that_failed_in_a_hook_is_retried_by_the_next_enable(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    # in a child process: the failure would otherwise outlive this test
    script = tmp_path / "app.py"
    script.write_text(FAILED_BUILT_IN_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=subprocess_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    assert json.loads(done.stdout) == {"first": "failed", "then": "enabled", "middleware": ["tracing"]}


# --- agentaccel_call_finished ----------------------------------------------------------------------------------


class Observer:
    def __init__(self, recorder: SpanRecorder | None = None, *, fail: bool = False) -> None:
        self.recorder = recorder
        self.fail = fail
        self.seen: list[tuple[agentaccel.Call, agentaccel.Outcome, float, list[str]]] = []

    @agentaccel.hookimpl
    def agentaccel_call_finished(self, call: agentaccel.Call, outcome: agentaccel.Outcome,
                                 duration_s: float) -> None:
        ended = [s.name for s in self.recorder.spans()] if self.recorder is not None else []
        self.seen.append((call, outcome, duration_s, ended))
        if self.fail:
            raise RuntimeError("observer bug")


def test_call_finished_observers_see_call_outcome_and_duration_after_the_span_ended(
    agentaccel_spans: SpanRecorder, register: Register
) -> None:
    observer = Observer(agentaccel_spans)
    register(observer, "observer")
    assert [mw.name for mw in agentaccel.runtime().middleware][:2] == ["observe", "tracing"]  # type: ignore[union-attr]

    @agentaccel.accelerate(name="fails")
    def fails() -> None:
        raise KeyError("missing")

    @agentaccel.accelerate(name="chunks")
    def chunks() -> Iterator[int]:
        yield from (1, 2)

    assert lookup(5) == 5
    with pytest.raises(KeyError):
        fails()
    assert list(chunks()) == [1, 2]

    (call, outcome, duration, ended), (fcall, foutcome, _, _), (scall, soutcome, _, _) = observer.seen
    assert (call.name, call.operation, call.args) == ("lookup", "execute_tool", (5,))
    assert outcome.value == 5
    assert outcome.completed
    assert isinstance(duration, float)
    assert duration >= 0
    assert ended == ["execute_tool lookup"]  # the span had ended when the observer ran
    assert fcall.name == "fails"
    assert isinstance(foutcome.error, KeyError)
    assert not foutcome.completed
    assert scall.name == "chunks"
    assert soutcome.completed
    assert soutcome.chunks == 2  # type: ignore[attr-defined]


def test_an_observers_exception_never_reaches_the_caller(register: Register) -> None:
    before = agentaccel.plugin_failures().get("broken-observer.agentaccel_call_finished", 0)
    good = Observer()
    register(Observer(fail=True), "broken-observer")
    register(good, "good-observer")
    agentaccel.enable()

    assert lookup(1) == 1
    assert lookup(2) == 2

    assert [call.args for call, *_ in good.seen] == [(1,), (2,)]
    assert agentaccel.plugin_failures()["broken-observer.agentaccel_call_finished"] == before + 2


# --- agentaccel_register_adapters --------------------------------------------------------------------------------


class NothingToPatch(agentaccel.Adapter):
    name = "nothing"


class AdapterPlugin:
    def __init__(self, adapter: agentaccel.Adapter) -> None:
        self.adapter = adapter

    @agentaccel.hookimpl
    def agentaccel_register_adapters(self, register: Callable[[agentaccel.Adapter], None],
                                     config: agentaccel.Config) -> None:
        register(self.adapter)


def test_registered_adapters_are_instrumented_by_enable_and_uninstrumented_by_disable(register: Register) -> None:
    adapter = NothingToPatch()
    register(AdapterPlugin(adapter), "nothing")

    rt = agentaccel.enable()
    assert adapter in rt.adapters
    assert adapter.instrumented
    agentaccel.disable()
    assert not adapter.instrumented


# --- agentaccel_register_commands and agentaccel_doctor ----------------------------------------------------------


class Commands:
    @agentaccel.hookimpl
    def agentaccel_register_commands(self, register: Callable[..., None]) -> None:
        def arguments(parser: Any) -> None:
            parser.add_argument("--who", default="world")

        def run(args: Any) -> int:
            print(f"hello {args.who}")
            return 3

        register("greet", "say hello", arguments, run)


def test_a_plugin_adds_a_command(register: Register, capsys: pytest.CaptureFixture[str]) -> None:
    register(Commands(), "commands")

    assert agentaccel.cli.main(["greet", "--who", "plugin author"]) == 3
    assert capsys.readouterr().out == "hello plugin author\n"


class Doctor:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    @agentaccel.hookimpl
    def agentaccel_doctor(self, register: Callable[[str, Callable[[], tuple[bool, str]]], None],
                          config: agentaccel.Config) -> None:
        register("widget store", lambda: (self.ok, "reachable" if self.ok else "refused"))

        def broken() -> tuple[bool, str]:
            raise RuntimeError("check crashed")

        if not self.ok:
            register("widget cache", broken)


def test_a_plugin_adds_doctor_checks(register: Register, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    doctor = Doctor(ok=True)
    register(doctor, "doctor-checks")

    assert agentaccel.cli.main(["doctor"]) == 0
    assert "[ok] widget store: reachable" in capsys.readouterr().out

    doctor.ok = False
    assert agentaccel.cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] widget store: refused" in out
    assert "[FAIL] widget cache: RuntimeError: check crashed" in out


# --- allow and deny lists ------------------------------------------------------------------------------------------


def test_deny_listing_tracing_means_no_spans(agentaccel_spans: SpanRecorder,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "threads, tracing")
    agentaccel.disable()
    rt = agentaccel_spans.enable()

    assert status(rt, "tracing") == ("disabled", "in AGENTACCEL_DISABLE_PLUGINS")
    assert status(rt, "threads") == ("disabled", "in AGENTACCEL_DISABLE_PLUGINS")
    assert lookup(1) == 1
    assert agentaccel_spans.spans() == []


def test_deny_listing_a_plugin_registered_in_code(register: Register, monkeypatch: pytest.MonkeyPatch) -> None:
    mw = Recorder("denied-mw")
    register(Lifecycle("denied", [], mw), "denied")
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "denied")

    rt = agentaccel.enable()

    assert status(rt, "denied")[0] == "disabled"
    lookup(1)
    assert mw.calls == []


def test_a_list_naming_no_plugin_is_warned_about_once(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # A typo in the deny list leaves the plugin on: the user must hear of it.
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "threads,tracng-typo")
    agentaccel.disable()
    with caplog.at_level("WARNING", logger="agentaccel"):
        rt = agentaccel.enable()
        agentaccel.disable()
        agentaccel.enable()

    warnings = [r.getMessage() for r in caplog.records if "tracng-typo" in r.getMessage()]
    assert len(warnings) == 1
    assert "AGENTACCEL_DISABLE_PLUGINS names 'tracng-typo', which is no plugin here (did you mean 'tracing'?)" \
        in warnings[0]
    assert status(rt, "tracing")[0] == "enabled"
    assert status(rt, "threads")[0] == "disabled"


def test_the_allow_list_is_for_entry_point_plugins_only(register: Register,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mw = Recorder("mine-mw")
    register(Lifecycle("mine", [], mw), "mine")
    monkeypatch.setenv("AGENTACCEL_PLUGINS", "some-entry-point-plugin")

    rt = agentaccel.enable()

    assert status(rt, "tracing")[0] == "enabled"
    assert status(rt, "threads")[0] == "enabled"
    assert status(rt, "mine")[0] == "enabled"
    lookup(1)
    assert mw.calls == ["lookup"]


# --- enable() and register_plugin() ------------------------------------------------------------------------------


def test_enable_is_idempotent_for_the_same_arguments(register: Register) -> None:
    log: list[str] = []
    register(Lifecycle("counted", log), "counted")

    first = agentaccel.enable(tracing={"export": "none"})
    assert agentaccel.enable(tracing={"export": "none"}) is first
    assert agentaccel.runtime() is first
    assert log == ["configure counted"]

    second = agentaccel.enable()
    assert second is not first
    assert agentaccel.runtime() is second
    assert log == ["configure counted", "unconfigure counted", "configure counted"]
    assert agentaccel.enable() is second


def test_enable_again_with_a_mapping_changed_since_applies_the_change(register: Register) -> None:
    audit = Audit()
    register(audit, "audit")
    settings = {"path": "first.log"}
    agentaccel.enable(audit=settings)

    settings["path"] = "second.log"  # the same dict object, with other contents: other arguments
    agentaccel.enable(audit=settings)
    assert audit.config == AuditConfig(path="second.log")

    settings["path"] = "third.log"  # not passed again: a re-enable keeps what enable() was given
    agentaccel.register_plugin(Lifecycle("late", []), "late")
    try:
        assert audit.config == AuditConfig(path="second.log")
    finally:
        agentaccel.unregister_plugin("late")


@pytest.mark.parametrize("argument", ["tracer_provider", "meter_provider"])
def test_enable_with_something_else_than_a_provider_says_so_and_enables_nothing(argument: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    products = {"tracer_provider": TracerProvider().get_tracer("app"),  # the easy mistake: a product of one
                "meter_provider": MeterProvider().get_meter("app")}
    with pytest.raises(agentaccel.ConfigError, match=rf"enable\({argument}=\.\.\.\) expects an OpenTelemetry "
                       rf"provider with get_(tracer|meter)\(\).*got (Tracer|Meter)"):
        agentaccel.enable(**{argument: products[argument]})
    assert agentaccel.runtime() is None


def test_register_plugin_while_enabled_takes_effect_at_once() -> None:
    agentaccel.enable()
    mw = Recorder("late-mw")
    agentaccel.register_plugin(Lifecycle("late", [], mw), "late")
    try:
        lookup(1)
        assert mw.calls == ["lookup"]
    finally:
        agentaccel.unregister_plugin("late")
    lookup(2)
    assert mw.calls == ["lookup"]  # unregistering took effect at once too
    assert agentaccel.runtime() is not None


def test_unregister_plugin_while_enabled_with_its_section_configured(register: Register) -> None:
    audit = Audit()
    agentaccel.register_plugin(audit, "audit")
    try:
        agentaccel.enable(audit={"path": "audit.jsonl"})
        agentaccel.unregister_plugin("audit")  # re-enables at once, without the plugin

        rt = agentaccel.runtime()
        assert rt is not None
        assert {p.name: p.status for p in rt.plugins}.get("audit", "absent") != "enabled"
        assert "audit" not in [mw.name for mw in rt.middleware]
        assert "audit" not in rt.config.as_dict()
        lookup(1)
        assert audit.seen == []
    finally:
        agentaccel.disable()
        with contextlib.suppress(ValueError):
            agentaccel.unregister_plugin("audit")


def test_plugin_names_are_unique(register: Register) -> None:
    register(Lifecycle("one", []), "one")
    with pytest.raises(ValueError, match="already registered"):
        agentaccel.register_plugin(Lifecycle("one", []), "one")
    with pytest.raises(ValueError, match="already registered"):
        agentaccel.register_plugin(Lifecycle("tracing", []), "tracing")
    with pytest.raises(ValueError, match="no plugin named 'never'"):
        agentaccel.unregister_plugin("never")
