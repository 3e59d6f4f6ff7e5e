"""Which rules a call matches. What a target fixes (framework, operation, and provider or tool name when the
adapter knows them up front) is matched once per target; the model, and identities derived per call, per call."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import translate

from agentaccel import EXECUTE_TOOL, Call, Target
from agentaccel_limit.config import RuleConfig


def _glob(pattern: str | None) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(translate(pattern))


def _ok(pattern: re.Pattern[str] | None, value: str | None) -> bool:
    return pattern is None or (value is not None and pattern.match(value) is not None)


class Rule:
    """A rule's matching part; ``order`` is its place in the configuration, the one global order in which a
    call takes its permits (every call acquires in the same order, so two calls can never wait on each
    other)."""

    __slots__ = ("config", "framework", "model", "name", "operation", "order", "provider", "tool")

    def __init__(self, config: RuleConfig, order: int) -> None:
        self.config = config
        self.name = config.name
        self.order = order
        self.framework = _glob(config.framework)
        self.operation = _glob(config.operation)
        self.provider = _glob(config.provider)
        self.model = _glob(config.model)
        self.tool = _glob(config.tool)

    def may_match(self, target: Target) -> bool:
        """False when no call of ``target`` can match (decided once per target)."""
        if not (_ok(self.framework, target.framework) and _ok(self.operation, target.operation)):
            return False
        if self.tool is not None and target.operation != EXECUTE_TOOL:
            return False
        if target.identify is not None:
            return True  # name and provider are known per call
        return _ok(self.provider, target.provider) and _ok(self.tool, target.name)

    def matches(self, call: Call) -> bool:
        """For a call of a target :meth:`may_match` accepted."""
        if call.target.identify is not None and not (_ok(self.provider, call.provider) and _ok(self.tool, call.name)):
            return False
        if self.model is None:
            return True
        model = call.request.get("model")
        return _ok(self.model, model if isinstance(model, str) else None)

    def __repr__(self) -> str:
        return f"<Rule {self.name!r}>"


def candidates(rules: Sequence[Rule], target: Target) -> tuple[Rule, ...]:
    """The rules calls of ``target`` might match, in the global order."""
    return tuple(sorted((r for r in rules if r.may_match(target)), key=lambda r: r.order))
