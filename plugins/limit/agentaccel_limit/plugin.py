"""The agentaccel-limit plugin's hook implementations: the ``limit`` config section, the limiters and Redis
backend a configuration asks for, the ``limit`` middleware, and a doctor check."""

from __future__ import annotations

from collections.abc import Callable

import agentaccel
from agentaccel_limit import state
from agentaccel_limit.config import LimitConfig, check
from agentaccel_limit.local import Limiter
from agentaccel_limit.middleware import Limit
from agentaccel_limit.rules import Rule
from agentaccel_limit.telemetry import Instruments


@agentaccel.hookimpl
def agentaccel_add_config(spec: agentaccel.ConfigSpec) -> None:
    spec.add_section("limit", LimitConfig)


@agentaccel.hookimpl
def agentaccel_configure(config: agentaccel.Config) -> None:
    section: LimitConfig = config.section("limit")
    check(section)
    backend = None
    if section.backend is not None and section.rules:
        # Imported here: the redis client takes about 0.4 s to import, which no in-process limit should pay.
        from agentaccel_limit.redis_backend import RedisBackend

        backend = RedisBackend(section)
    state.install(state.Engine(
        rules=[Rule(rule, index) for index, rule in enumerate(section.rules)],
        limiters={rule.name: Limiter(rule) for rule in section.rules},
        backend=backend,
    ))


@agentaccel.hookimpl
def agentaccel_unconfigure() -> None:
    state.uninstall()


@agentaccel.hookimpl
def agentaccel_register_middleware(register: Callable[[agentaccel.Middleware], None],
                                   config: agentaccel.Config) -> None:
    engine = state.current()
    if engine is None or not engine.rules:
        return  # no rules: no middleware, so no call pays anything
    register(Limit(engine.rules, engine.limiters, engine.backend, Instruments(config.extra.get("meter_provider"))))


@agentaccel.hookimpl
def agentaccel_doctor(register: Callable[[str, Callable[[], tuple[bool, str]]], None],
                      config: agentaccel.Config) -> None:
    section: LimitConfig = config.section("limit")
    register("limit rules", lambda: _describe(section))


def _describe(section: LimitConfig) -> tuple[bool, str]:
    check(section)
    if not section.rules:
        return True, "no limit rules configured ([tool.agentaccel.limit] rules = [...])"
    names = ", ".join(rule.name for rule in section.rules)
    where = f"shared through {section.backend}" if section.backend else "in this process"
    return True, f"{len(section.rules)} rule(s), {where}: {names}"
