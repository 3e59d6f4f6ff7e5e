"""Fixtures for the cache tests: agentaccel is disabled after every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import agentaccel


@pytest.fixture(autouse=True)
def _agentaccel_disabled_after() -> Iterator[None]:
    yield
    agentaccel.disable()
