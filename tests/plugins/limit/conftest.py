"""Fixtures for the limit plugin's tests: agentaccel disabled after each test, the cache plugin off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import agentaccel


@pytest.fixture(autouse=True)
def _disabled_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Every workspace plugin is installed where these tests run; a cache hit takes no permit, so the cache
    # plugin would make what these tests count depend on its defaults.
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "cache")
    yield
    agentaccel.disable()
