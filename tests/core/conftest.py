"""Fixtures for the core tests: agentaccel is disabled after every test, and plugins registered through
``register`` are unregistered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agentaccel


@pytest.fixture(autouse=True)
def _agentaccel_disabled_after() -> Iterator[None]:
    yield
    agentaccel.disable()


@pytest.fixture
def register() -> Iterator[Callable[[Any, str], None]]:
    """``register(plugin, name)``: ``agentaccel.register_plugin``, undone (after ``disable()``) when the test
    ends."""
    names: list[str] = []

    def add(plugin: Any, name: str) -> None:
        agentaccel.register_plugin(plugin, name)
        names.append(name)

    try:
        yield add
    finally:
        agentaccel.disable()
        for name in reversed(names):
            agentaccel.unregister_plugin(name)
