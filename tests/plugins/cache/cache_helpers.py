"""Helpers shared by the cache tests (a plain module: the test folders are not packages)."""

from __future__ import annotations

from typing import Any

from agentaccel_cache.cache import Cache
from agentaccel_cache.plugin import active


def cache() -> Cache:
    """The cache of the current enable()."""
    found = active()
    assert found is not None, "the cache plugin is not active"
    return found


def results(spans: list[Any]) -> list[Any]:
    """agentaccel.cache.result of each finished span, in order."""
    return [s.attributes.get("agentaccel.cache.result") for s in spans]
