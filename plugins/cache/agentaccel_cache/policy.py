"""Which calls are cached, for how long and with which tags: the defaults, the config rules, the per-call options.

Defaults: model calls (chat, text_completion, embeddings) are cached, because the same request to the same model
is the expensive repeat worth saving; a tool only when it is marked pure (its result depends only on its
arguments); agent and workflow runs never unless a rule or ``options(cache=True)`` opts in, because they act on
the world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from agentaccel import CHAT, EMBEDDINGS, EXECUTE_TOOL, TEXT_COMPLETION, Call, Target
from agentaccel_cache.config import Rule

MODEL_OPERATIONS = frozenset({CHAT, TEXT_COMPLETION, EMBEDDINGS})


class Policy:
    """What applies to one call: ``ttl`` seconds and ``tags``; a call that is not cached has no Policy."""

    __slots__ = ("tags", "ttl")

    def __init__(self, ttl: float, tags: tuple[str, ...]) -> None:
        self.ttl = ttl
        self.tags = tags


class Policies:
    """Resolves rules once per (target, name) and keeps the answer: the per-call cost is a dict lookup."""

    def __init__(self, rules: Sequence[Rule], ttl: float) -> None:
        self.rules = tuple(rules)
        self.ttl = ttl
        self._resolved: dict[tuple[Target, str], tuple[bool, Policy]] = {}

    def resolve(self, target: Target, name: str) -> tuple[bool, Policy]:
        """(cached by default, the policy to use when cached) for calls of ``target`` named ``name``."""
        found = self._resolved.get((target, name))
        if found is None:
            found = self._resolved[(target, name)] = self._compute(target, name)
        return found

    def _compute(self, target: Target, name: str) -> tuple[bool, Policy]:
        if target.operation in MODEL_OPERATIONS:
            enabled = True
        elif target.operation == EXECUTE_TOOL:
            enabled = bool(target.hints.get("pure"))
        else:
            enabled = False
        ttl, tags = self.ttl, list[str]()
        for rule in self.rules:
            if (fnmatchcase(target.framework, rule.framework) and fnmatchcase(target.operation, rule.operation)
                    and fnmatchcase(name, rule.name)):
                if rule.enabled is not None:
                    enabled = rule.enabled
                if rule.ttl is not None:
                    ttl = rule.ttl
                tags.extend(t for t in rule.tags if t not in tags)
        return enabled, Policy(ttl, tuple(tags))

    def for_call(self, call: Call) -> Policy | None:
        """The policy for ``call`` with its ``agentaccel.options`` applied; None when it is not to be cached."""
        found = self._resolved.get((call.target, call.name))  # resolve()'s first step, inline: every call asks
        enabled, policy = found if found is not None else self.resolve(call.target, call.name)
        options: Mapping[str, Any] = call.options
        if not options:
            return policy if enabled else None
        enabled = options.get("cache", enabled)
        if not enabled:
            return None
        ttl = options.get("ttl")
        extra = options.get("cache_tags")
        if ttl is None and not extra:
            return policy
        return Policy(float(ttl) if ttl is not None else policy.ttl,
                      policy.tags + tuple(t for t in extra or () if t not in policy.tags))
