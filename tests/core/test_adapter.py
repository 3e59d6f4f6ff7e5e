"""The adapter contract, against the fake framework in tests/core/fakeframework: patches applied on import (or at
once), idempotent instrument(), disable() putting back exactly what was there, version requirements, and patches
that cannot apply."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentaccel
from agentaccel import Adapter, Mode, Patch, Target
from agentaccel.testing.pytest_plugin import SpanRecorder

Register = Callable[[Any, str], None]
MODELS = "fakeframework.models"


@pytest.fixture(autouse=True)
def _fakeframework_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def target(name: str, operation: str = "invoke_agent") -> Target:
    return Target(framework="fake", operation=operation, name=name, mode=Mode.SYNC)


class FakeAdapter(Adapter):
    name = "fake"

    def __init__(self, patches: Iterable[Patch], requires: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._patches = tuple(patches)
        self.requires = requires

    def patches(self) -> Iterable[Patch]:
        return self._patches


class AdapterPlugin:
    def __init__(self, *adapters: Adapter) -> None:
        self.adapters = adapters

    @agentaccel.hookimpl
    def agentaccel_register_adapters(self, register: Callable[[Adapter], None]) -> None:
        for adapter in self.adapters:
            register(adapter)


def models() -> Any:
    return importlib.import_module(MODELS)


def span_names(recorder: SpanRecorder) -> list[str]:
    return [s.name for s in recorder.spans()]


@pytest.fixture
def forget_modules() -> Iterator[Callable[[str], None]]:
    """``forget(name)``: make sure module ``name`` is not imported now, and not left imported after the test."""
    names: list[str] = []

    def forget(name: str) -> None:
        names.append(name)
        sys.modules.pop(name, None)

    try:
        yield forget
    finally:
        agentaccel.disable()
        for name in names:
            sys.modules.pop(name, None)


# --- when patches apply -----------------------------------------------------------------------------------------


def test_enable_before_the_framework_is_imported_patches_it_on_import(
    agentaccel_spans: SpanRecorder, register: Register, forget_modules: Callable[[str], None]
) -> None:
    forget_modules("fakeframework.lazy")
    adapter = FakeAdapter([Patch("fakeframework.lazy", "Lazy.run", target=target("Lazy.run"))])
    register(AdapterPlugin(adapter), "fake")
    assert adapter.instrumented
    assert adapter.patched() == []  # nothing to patch yet
    assert "fakeframework.lazy" not in sys.modules

    lazy = importlib.import_module("fakeframework.lazy")

    assert adapter.patched() == ["fakeframework.lazy.Lazy.run"]
    assert lazy.Lazy().run(21) == 42
    span = agentaccel_spans.span("invoke_agent Lazy.run")
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "agentaccel.fake"


def test_patches_reach_classes_imported_later(
    agentaccel_spans: SpanRecorder, register: Register, forget_modules: Callable[[str], None]
) -> None:
    forget_modules("fakeframework.extensions")
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.run", target=target("Base.run"))])), "fake")

    from fakeframework.extensions import Extension  # type: ignore[import-not-found]
    from fakeframework.models import Base  # type: ignore[import-not-found]

    class DefinedLater(Base):  # type: ignore[misc]
        pass

    assert Extension().run(1) == "run:1"
    assert DefinedLater().run(2) == "run:2"
    assert span_names(agentaccel_spans) == ["invoke_agent Base.run"] * 2


def test_instrument_twice_is_idempotent(agentaccel_spans: SpanRecorder, register: Register) -> None:
    base = models().Base
    original = base.__dict__["run"]
    adapter = FakeAdapter([Patch(MODELS, "Base.run", target=target("Base.run"))])
    register(AdapterPlugin(adapter), "fake")
    wrapper = base.__dict__["run"]

    adapter.instrument()
    adapter.instrument()

    assert base.__dict__["run"] is wrapper
    assert wrapper is not original
    assert wrapper.__wrapped__ is original  # one wrapper around the original, not a wrapper of a wrapper
    assert adapter.patched() == [f"{MODELS}.Base.run"]
    base().run(1)
    assert span_names(agentaccel_spans) == ["invoke_agent Base.run"]


# --- disable() restores exactly -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("attribute", "call", "expected"), [
    ("run", lambda base: base().run(1), "run:1"),
    ("create", lambda base: base.create(2), "create:Base:2"),
    ("helper", lambda base: base.helper(3), "helper:3"),
])
def test_disable_restores_the_exact_original_and_enable_patches_again(
    agentaccel_spans: SpanRecorder, register: Register, attribute: str, call: Callable[[Any], Any], expected: str
) -> None:
    base = models().Base
    original = base.__dict__[attribute]
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, f"Base.{attribute}", target=target(attribute))])), "fake")

    assert base.__dict__[attribute] is not original
    assert call(base) == expected
    assert span_names(agentaccel_spans) == [f"invoke_agent {attribute}"]

    agentaccel.disable()
    assert base.__dict__[attribute] is original
    assert call(base) == expected
    assert len(agentaccel_spans.spans()) == 1

    agentaccel_spans.enable()
    assert base.__dict__[attribute] is not original
    assert call(base) == expected
    assert span_names(agentaccel_spans) == [f"invoke_agent {attribute}"] * 2

    agentaccel.disable()
    assert base.__dict__[attribute] is original


def test_static_and_class_methods_keep_working_through_instances_and_subclasses(
    agentaccel_spans: SpanRecorder, register: Register
) -> None:
    mod = models()
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.create", target=target("create")),
                                        Patch(MODELS, "Base.helper", target=target("helper"))])), "fake")

    assert mod.Base().create(1) == "create:Base:1"
    assert mod.Special.create(2) == "create:Special:2"
    assert mod.Base().helper(3) == "helper:3"
    assert mod.Special.helper(4) == "helper:4"
    assert sorted(span_names(agentaccel_spans)) == ["invoke_agent create"] * 2 + ["invoke_agent helper"] * 2


def test_a_replacement_made_after_agentaccel_is_left_in_place(register: Register) -> None:
    base = models().Base
    original = base.__dict__["run"]
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.run", target=target("Base.run"))])), "fake")
    wrapper = base.__dict__["run"]

    def someone_elses(self: Any, x: int) -> str:
        return "theirs:" + wrapper.__get__(self, type(self))(x)

    base.run = someone_elses
    try:
        agentaccel.disable()
        assert base.__dict__["run"] is someone_elses  # not clobbered by the restore
        assert base().run(1) == "theirs:run:1"  # agentaccel's wrapper inside passes calls through
    finally:
        base.run = original


# --- de-duplication through patches -------------------------------------------------------------------------------


def test_a_patched_base_method_called_through_super_is_one_span(agentaccel_spans: SpanRecorder,
                                                                register: Register) -> None:
    mod = models()
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.run", target=target("agent.run")),
                                        Patch(MODELS, "Special.run", target=target("agent.run"))])), "fake")

    assert mod.Special().run(1) == "special:run:1"
    assert span_names(agentaccel_spans) == ["invoke_agent agent.run"]


# --- what cannot be instrumented ----------------------------------------------------------------------------------


def test_a_required_distribution_that_is_not_installed(register: Register) -> None:
    base = models().Base
    original = base.__dict__["run"]
    adapter = FakeAdapter([Patch(MODELS, "Base.run", target=target("Base.run"))],
                          requires=("agentaccel-no-such-framework>=1",))
    register(AdapterPlugin(adapter), "fake")
    agentaccel.enable()

    assert not adapter.instrumented
    assert adapter.problems == ["agentaccel-no-such-framework is not installed"]
    assert adapter.unsupported() == adapter.problems
    assert adapter.versions() == {"agentaccel-no-such-framework": None}
    assert adapter.patched() == []
    assert base.__dict__["run"] is original


def test_an_installed_version_out_of_range(register: Register) -> None:
    base = models().Base
    original = base.__dict__["run"]
    adapter = FakeAdapter([Patch(MODELS, "Base.run", target=target("Base.run"))], requires=("pluggy<0.1",))
    register(AdapterPlugin(adapter), "fake")
    agentaccel.enable()

    version = importlib.metadata.version("pluggy")
    assert not adapter.instrumented
    assert adapter.problems == [f"pluggy {version} is installed; this adapter supports pluggy<0.1"]
    assert adapter.unsupported() == adapter.problems
    assert base.__dict__["run"] is original


def test_an_installed_version_in_range_is_instrumented(register: Register) -> None:
    adapter = FakeAdapter([Patch(MODELS, "Base.run", target=target("Base.run"))], requires=("pluggy>=1",))
    register(AdapterPlugin(adapter), "fake")
    agentaccel.enable()

    assert adapter.instrumented
    assert adapter.problems == []
    assert adapter.versions() == {"pluggy": importlib.metadata.version("pluggy")}
    assert adapter.patched() == [f"{MODELS}.Base.run"]


def test_a_patch_naming_a_missing_attribute_is_skipped_and_the_rest_applied(
    agentaccel_spans: SpanRecorder, register: Register
) -> None:
    mod = models()
    adapter = FakeAdapter([Patch(MODELS, "Base.renamed", target=target("renamed")),
                           Patch(MODELS, "Gone.run", target=target("gone")),
                           Patch(MODELS, "Base.run", target=target("Base.run"))])
    register(AdapterPlugin(adapter), "fake")

    assert adapter.instrumented
    assert adapter.problems == [f"{MODELS}.Base.renamed not found; the framework changed its layout",
                                f"{MODELS}.Gone.run not found; the framework changed its layout"]
    assert adapter.patched() == [f"{MODELS}.Base.run"]
    assert mod.Base().run(1) == "run:1"
    assert span_names(agentaccel_spans) == ["invoke_agent Base.run"]


def test_a_patch_that_cannot_be_set_is_skipped_and_the_rest_applied(
    agentaccel_spans: SpanRecorder, register: Register
) -> None:
    mod = models()
    adapter = FakeAdapter([Patch(MODELS, "Number.bit_length", target=target("bit_length")),
                           Patch(MODELS, "Base.run", target=target("Base.run"))])
    register(AdapterPlugin(adapter), "fake")

    assert adapter.instrumented
    assert len(adapter.problems) == 1
    assert f"{MODELS}.Number.bit_length" in adapter.problems[0]
    assert adapter.patched() == [f"{MODELS}.Base.run"]
    assert mod.Base().run(1) == "run:1"
    assert span_names(agentaccel_spans) == ["invoke_agent Base.run"]


def test_a_patch_that_fails_when_the_framework_is_imported_never_breaks_the_import(
    agentaccel_spans: SpanRecorder, register: Register, forget_modules: Callable[[str], None], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frameworks resolve some attributes lazily, and an optional dependency that is missing raises ImportError
    # there. The user's `import` must still work, and the adapter's other patches still apply.
    (tmp_path / "lazyframework.py").write_text(textwrap.dedent("""
        class Model:
            def run(self, x):
                return f"run:{x}"


        def __getattr__(name):
            raise ImportError(f"{name} needs an optional dependency")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_modules("lazyframework")
    adapter = FakeAdapter([Patch("lazyframework", "Optional.run", target=target("Optional.run")),
                           Patch("lazyframework", "Model.run", target=target("Model.run"))])
    register(AdapterPlugin(adapter), "fake")

    lazyframework = importlib.import_module("lazyframework")

    assert adapter.patched() == ["lazyframework.Model.run"]
    assert len(adapter.problems) == 1
    assert "lazyframework.Optional.run" in adapter.problems[0]
    assert "Optional needs an optional dependency" in adapter.problems[0]
    assert lazyframework.Model().run(1) == "run:1"
    assert span_names(agentaccel_spans) == ["invoke_agent Model.run"]


BROKEN_ADAPTER_SCRIPT = """
import contextlib
import json
import os
import signal
import threading

import fakeframework.models as models

import agentaccel
from agentaccel import Adapter, Mode, Patch, Target

original_run = models.Base.__dict__["run"]
original_start = threading.Thread.__dict__["start"]
log = []


class FakeAdapter(Adapter):
    name = "fake"

    def __init__(self, patches, requires=()):
        super().__init__()
        self._patches = patches
        self.requires = requires

    def patches(self):
        return self._patches


target = Target(framework="fake", operation="invoke_agent", name="run", mode=Mode.SYNC)
good = FakeAdapter([Patch("fakeframework.models", "Base.run", target=target)])
bad = FakeAdapter([Patch("fakeframework.models", "Base.create", target=target)], requires=("not a requirement!",))


class Plugin:
    @agentaccel.hookimpl
    def agentaccel_configure(self):
        log.append("configure")

    @agentaccel.hookimpl
    def agentaccel_unconfigure(self):
        log.append("unconfigure")

    @agentaccel.hookimpl
    def agentaccel_register_adapters(self, register):
        register(good)
        register(bad)


agentaccel.register_plugin(Plugin(), "broken-adapter")
with contextlib.suppress(ValueError):
    agentaccel.enable()
agentaccel.disable()
state = {"run_restored": models.Base.__dict__["run"] is original_run,
         "thread_start_restored": threading.Thread.__dict__["start"] is original_start, "log": log}

# and agentaccel still works afterwards: threads start, and carry the context
agentaccel.unregister_plugin("broken-adapter")
agentaccel.enable()
ran = []


def hung(*_):
    raise TimeoutError


signal.signal(signal.SIGALRM, hung)
signal.alarm(10)
try:
    thread = threading.Thread(target=ran.append, args=(1,), daemon=True)
    thread.start()
    thread.join()
    state["thread_ran"] = ran == [1]
except TimeoutError:
    state["thread_ran"] = False
signal.alarm(0)
print(json.dumps(state), flush=True)
os._exit(0)  # a thread that never started must not keep this process alive
"""


@pytest.mark.slow
def test_an_adapter_that_cannot_instrument_leaves_nothing_patched(tmp_path: Path,
                                                                   subprocess_env: dict[str, str]) -> None:
    # The second adapter's requirement cannot even be parsed. Whether enable() reports that or goes on without
    # it, nothing may stay patched once agentaccel is disabled (a leaked threading patch, wrapped again by the
    # next enable(), makes every Thread.start() hang), and configured plugins must be unconfigured. In a child
    # process, so that a leak cannot break the tests that follow.
    script = tmp_path / "app.py"
    script.write_text(BROKEN_ADAPTER_SCRIPT)
    env = {**subprocess_env,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), subprocess_env["PYTHONPATH"]])}
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr

    state = json.loads(done.stdout)
    assert state.pop("log") in ([], ["configure", "unconfigure"])
    assert state == {"run_restored": True, "thread_start_restored": True, "thread_ran": True}


def test_a_wrapper_patch_runs_the_wrapper(register: Register) -> None:
    mod = models()
    seen: list[tuple[Any, tuple[Any, ...]]] = []

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seen.append((instance, args))
        return "wrapped:" + wrapped(*args, **kwargs)

    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.run", wrapper=wrapper)])), "fake")
    agentaccel.enable()
    instance = mod.Base()

    assert instance.run(5) == "wrapped:run:5"
    assert seen == [(instance, (5,))]


def test_a_patch_needs_exactly_one_of_target_and_wrapper() -> None:
    with pytest.raises(ValueError, match="exactly one of target= and wrapper="):
        Patch(MODELS, "Base.run")
    with pytest.raises(ValueError, match="exactly one of target= and wrapper="):
        Patch(MODELS, "Base.run", target=target("Base.run"), wrapper=lambda wrapped, instance, args, kwargs: None)


# --- functions and coroutines -------------------------------------------------------------------------------------


def test_a_module_level_function_is_patched_and_restored(agentaccel_spans: SpanRecorder, register: Register) -> None:
    mod = models()
    original = mod.__dict__["tool"]
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "tool", target=target("tool", "execute_tool"))])), "fake")

    assert mod.tool(1) == "tool:1"
    assert span_names(agentaccel_spans) == ["execute_tool tool"]
    assert mod.tool.__name__ == "tool"

    agentaccel.disable()
    assert mod.__dict__["tool"] is original


def test_disable_restores_a_re_export_of_the_wrapper_made_after_enable(register: Register,
                                                                       forget_modules: Callable[[str], None]) -> None:
    # `from models import tool` after enable() binds agentaccel's wrapper in another module: disable() must find
    # it there too, or the framework is not left as it was.
    mod = models()
    original = mod.__dict__["tool"]
    forget_modules("fakeframework.reexport")
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "tool", target=target("tool", "execute_tool"))])), "fake")
    agentaccel.enable()
    reexport = importlib.import_module("fakeframework.reexport")
    assert reexport.tool is mod.tool is not original

    agentaccel.disable()

    assert reexport.tool is original and mod.__dict__["tool"] is original


def test_rebind_patches_a_function_a_module_imported_before_enable(agentaccel_spans: SpanRecorder, register: Register,
                                                                   forget_modules: Callable[[str], None]) -> None:
    mod = models()
    original = mod.__dict__["tool"]
    forget_modules("fakeframework.reexport")
    reexport = importlib.import_module("fakeframework.reexport")  # holds the original, as an early import does
    adapter = FakeAdapter([Patch(MODELS, "tool", target=target("tool", "execute_tool"), rebind=True)])
    register(AdapterPlugin(adapter), "fake")
    agentaccel_spans.enable()

    assert reexport.tool(2) == "tool:2"
    assert span_names(agentaccel_spans) == ["execute_tool tool"]
    assert "fakeframework.reexport.tool" in adapter.patched()

    agentaccel.disable()
    assert reexport.tool is original and mod.__dict__["tool"] is original


def test_a_patched_coroutine_method_stays_a_coroutine_function(agentaccel_spans: SpanRecorder,
                                                               register: Register) -> None:
    mod = models()
    agent_target = Target(framework="fake", operation="invoke_agent", name="arun", mode=Mode.ASYNC)
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.arun", target=agent_target)])), "fake")

    # frameworks look before they await: inspect must still see a coroutine function
    assert inspect.iscoroutinefunction(mod.Base.arun)
    assert inspect.iscoroutinefunction(mod.Base().arun)
    assert asyncio.run(mod.Base().arun(1)) == "arun:1"
    assert span_names(agentaccel_spans) == ["invoke_agent arun"]


def test_a_wrapper_patch_of_a_coroutine_method_keeps_it_a_coroutine_function(register: Register) -> None:
    mod = models()
    calls: list[tuple[Any, ...]] = []

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        calls.append(args)
        return wrapped(*args, **kwargs)

    assert inspect.iscoroutinefunction(mod.Base.arun)
    register(AdapterPlugin(FakeAdapter([Patch(MODELS, "Base.arun", wrapper=wrapper)])), "fake")
    agentaccel.enable()

    assert asyncio.run(mod.Base().arun(2)) == "arun:2"
    assert calls == [(2,)]
    assert inspect.iscoroutinefunction(mod.Base.arun)
    assert inspect.iscoroutinefunction(mod.Base().arun)
