"""What the current ``enable()`` built: the rules, their in-process limiters and the Redis backend."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from agentaccel_limit.local import Limiter
from agentaccel_limit.rules import Rule

if TYPE_CHECKING:
    from agentaccel_limit.redis_backend import RedisBackend


@dataclasses.dataclass
class Engine:
    rules: list[Rule]
    limiters: dict[str, Limiter]
    backend: RedisBackend | None


_current: Engine | None = None


def install(engine: Engine) -> None:
    global _current
    _current = engine


def uninstall() -> None:
    global _current
    engine, _current = _current, None
    if engine is not None and engine.backend is not None:
        engine.backend.close()


def current() -> Engine | None:
    return _current


def snapshot() -> dict[str, dict[str, int | None]]:
    """Per rule: calls holding a permit in this process, calls waiting, and the concurrency limit in force."""
    engine = _current
    if engine is None:
        return {}
    return {name: {"in_flight": limiter.in_flight, "queued": limiter.queued, "capacity": limiter.capacity}
            for name, limiter in engine.limiters.items()}
