"""Patch.select (a target chosen per call, or straight through) and Patch.overrides (every subclass that defines
the method, including subclasses created after instrument()), which the LangChain adapter needs: abstract
embedding methods that every subclass implements, and agents that are graphs."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import agentaccel
from agentaccel import Adapter, Mode, Patch, Target
from agentaccel.testing.pytest_plugin import SpanRecorder

MODULE = "agentaccel_test_overrides_fw"
WORKFLOW = Target(framework="fake", operation="invoke_workflow", name="graph", mode=Mode.SYNC)
AGENT = Target(framework="fake", operation="invoke_agent", name="agent", mode=Mode.SYNC)
EMBED = Target(framework="fake", operation="embeddings", name="embed", mode=Mode.SYNC)


class _Adapter(Adapter):
    name = "fake-overrides"

    def __init__(self, patches: Iterable[Patch]) -> None:
        super().__init__()
        self._patches = tuple(patches)

    def patches(self) -> Iterable[Patch]:
        return self._patches


class _Plugin:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    @agentaccel.hookimpl
    def agentaccel_register_adapters(self, register: Callable[[Adapter], None]) -> None:
        register(self.adapter)


@pytest.fixture
def framework() -> Iterator[types.ModuleType]:
    module = types.ModuleType(MODULE)
    exec(
        "class Base:\n"
        "    def embed(self, text):\n"
        "        raise NotImplementedError\n"
        "class Early(Base):\n"
        "    def embed(self, text):\n"
        "        return [1.0]\n"
        "class Inherits(Early):\n"
        "    pass\n"
        "class Graph:\n"
        "    def __init__(self, agent=False):\n"
        "        self.agent = agent\n"
        "    def run(self, x):\n"
        "        return x\n",
        module.__dict__,
    )
    sys.modules[MODULE] = module
    try:
        yield module
    finally:
        del sys.modules[MODULE]


def _enable(recorder: SpanRecorder, adapter: Adapter) -> None:
    agentaccel.register_plugin(_Plugin(adapter), "fake-overrides")
    recorder.enable()


@pytest.fixture
def recorder() -> Iterator[SpanRecorder]:
    rec = SpanRecorder()
    try:
        yield rec
    finally:
        agentaccel.disable()
        agentaccel.unregister_plugin("fake-overrides")


def test_overrides_patches_existing_and_later_subclasses_and_restores(framework: Any, recorder: SpanRecorder) -> None:
    base_embed, early_embed = framework.Base.__dict__["embed"], framework.Early.__dict__["embed"]
    _enable(recorder, _Adapter([Patch(MODULE, "Base.embed", target=EMBED, overrides=True)]))
    assert framework.Base.__dict__["embed"] is base_embed  # the class itself is left alone
    assert "embed" not in framework.Inherits.__dict__

    class Late(framework.Base):  # created after instrument(): patched by the __init_subclass__ hook
        def embed(self, text: str) -> list[float]:
            return [2.0]

    assert framework.Early().embed("a") == [1.0]
    assert framework.Inherits().embed("b") == [1.0]
    assert Late().embed("c") == [2.0]
    assert [s.name for s in recorder.spans()] == ["embeddings embed"] * 3
    late_wrapper = Late.__dict__["embed"]

    agentaccel.disable()
    assert framework.Early.__dict__["embed"] is early_embed
    assert Late.__dict__["embed"] is not late_wrapper
    assert "__init_subclass__" not in framework.Base.__dict__

    class AfterDisable(framework.Base):
        def embed(self, text: str) -> list[float]:
            return [3.0]

    recorder.clear()
    assert AfterDisable().embed("d") == [3.0]
    assert recorder.spans() == []


def test_select_picks_a_target_per_call_or_calls_straight_through(framework: Any, recorder: SpanRecorder) -> None:
    def select(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target | None:
        if args and args[0] == "skip":
            return None
        return AGENT if instance.agent else WORKFLOW

    _enable(recorder, _Adapter([Patch(MODULE, "Graph.run", target=WORKFLOW, select=select)]))
    assert framework.Graph().run(1) == 1
    assert framework.Graph(agent=True).run(2) == 2
    assert framework.Graph().run("skip") == "skip"
    assert [s.name for s in recorder.spans()] == ["invoke_workflow graph", "invoke_agent agent"]


def test_a_failing_select_falls_back_to_the_patch_target(framework: Any, recorder: SpanRecorder) -> None:
    def select(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target | None:
        raise RuntimeError("adapter bug")

    _enable(recorder, _Adapter([Patch(MODULE, "Graph.run", target=WORKFLOW, select=select)]))
    assert framework.Graph().run(1) == 1
    assert [s.name for s in recorder.spans()] == ["invoke_workflow graph"]
    assert agentaccel.plugin_failures()[f"select() of {MODULE}.Graph.run"] >= 1


def test_select_needs_a_target() -> None:
    with pytest.raises(ValueError, match="select= needs a target="):
        Patch(MODULE, "Graph.run", wrapper=lambda w, i, a, k: w(*a, **k), select=lambda i, a, k: None)
