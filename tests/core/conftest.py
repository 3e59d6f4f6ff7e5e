"""Fixtures for the core tests: agentaccel is disabled after every test, and plugins registered through
``register`` are unregistered."""

from __future__ import annotations

import contextlib
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
        names.append(name)  # first: register_plugin() keeps the plugin even when the re-enable it does fails
        agentaccel.register_plugin(plugin, name)

    try:
        yield add
    finally:
        agentaccel.disable()
        for name in reversed(names):
            with contextlib.suppress(ValueError):  # a test may have unregistered it already
                agentaccel.unregister_plugin(name)
