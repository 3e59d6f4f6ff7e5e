"""The agentaccel-cache plugin's hook implementations (entry point ``cache``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics

from agentaccel import Config, ConfigSpec, Middleware, hookimpl
from agentaccel_cache import config as cache_config
from agentaccel_cache.cache import Cache
from agentaccel_cache.config import CacheConfig

_active: Cache | None = None


def active() -> Cache | None:
    """The cache of the current ``enable()``, or None when agentaccel (or the cache) is off."""
    return _active


@hookimpl
def agentaccel_add_config(spec: ConfigSpec) -> None:
    spec.add_section("cache", CacheConfig)
    spec.add_option("cache", bool, "False: neither read nor write the cache for these calls; True: cache them "
                    "even where the policy would not (agent and workflow runs, impure tools)")
    spec.add_option("ttl", float, "seconds the entries stored by these calls live", check=cache_config.seconds)
    spec.add_option("refresh", bool, "True: call upstream even on a hit and replace the entry")
    spec.add_option("cache_tags", list[str], "tags for the entries stored by these calls "
                    "(agentaccel cache clear --tag)")


@hookimpl
def agentaccel_configure(config: Config) -> None:
    global _active
    section: CacheConfig = config.section("cache")
    cache_config.check(section)
    if not section.enabled:
        return
    _active = Cache(section)
    from agentaccel_cache import metrics as cache_metrics

    provider = config.extra.get("meter_provider") or metrics.get_meter_provider()
    cache_metrics.install(provider, active)


@hookimpl
def agentaccel_unconfigure() -> None:
    global _active
    cache, _active = _active, None
    if cache is not None:
        cache.close()


@hookimpl
def agentaccel_register_middleware(register: Callable[[Middleware], None]) -> None:
    if _active is not None:
        from agentaccel_cache.middleware import CacheMiddleware

        register(CacheMiddleware(_active))


@hookimpl
def agentaccel_register_commands(
    register: Callable[[str, str, Callable[[argparse.ArgumentParser], None], Callable[[Any], int]], None],
) -> None:
    from agentaccel_cache import cli

    register("cache", "inspect and clear the cache: agentaccel cache stats | clear", cli.add_arguments, cli.run)
