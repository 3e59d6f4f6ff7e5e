"""The ``[tool.agentaccel.limit]`` section: typed by the core's config loader, checked for meaning here."""

from __future__ import annotations

import dataclasses
import math
from fnmatch import fnmatchcase
from typing import Literal
from urllib.parse import urlsplit

from agentaccel import OPERATIONS, ConfigError

OnBackendError = Literal["open", "closed"]
HoldFor = Literal["request", "call"]


@dataclasses.dataclass
class RuleConfig:
    """One rule: which calls it matches (globs; unset matches anything) and the limits they share."""

    name: str = ""
    framework: str | None = None
    operation: str | None = None
    provider: str | None = None
    model: str | None = None
    #: Matches a tool call's name; a rule with ``tool`` set matches only ``execute_tool`` calls.
    tool: str | None = None
    max_concurrency: int | None = None
    #: ``rate`` calls may start in any ``interval`` seconds (a sliding window).
    rate: int | None = None
    interval: float = 1.0
    #: Estimated from the request (prompt size + max_tokens), corrected with the usage the call reports.
    tokens_per_minute: int | None = None
    #: Seconds a call may wait for its permits before LimitExceeded; unset waits as long as it takes.
    queue_timeout: float | None = None
    #: Calls that may wait at once before the next one is refused with LimitExceeded; unset is unbounded.
    max_queue: int | None = None
    #: Lower the concurrency on 429s and raise it again while calls succeed (up to max_concurrency if set).
    adaptive: bool = False
    #: "request": a model call whose requests agentaccel sees (sent through httpx or httpx2, as OpenAI's and
    #: Anthropic's clients do) holds a permit only while each request is upstream; other calls hold theirs for the
    #: whole call, as "call" makes every call do.
    hold: HoldFor = "request"
    #: With a Redis backend: "open" falls back to the in-process limit when Redis fails, "closed" refuses calls.
    on_backend_error: OnBackendError = "open"


@dataclasses.dataclass
class LimitConfig:
    rules: list[RuleConfig] = dataclasses.field(default_factory=list)
    #: ``redis://host:port/db`` (or ``rediss://``) shares the rules' limits across processes; unset: in-process.
    backend: str | None = None
    #: A holder's permit is renewed while its call runs and comes back this long after the holder dies.
    lease_seconds: float = 10.0
    #: Connect and read timeout of each Redis round trip.
    backend_timeout: float = 0.25
    #: Consecutive Redis failures that open the circuit breaker, and seconds until it tries Redis again.
    breaker_failures: int = 3
    breaker_reset_seconds: float = 5.0
    #: Prefix of the Redis keys; processes sharing limits must use the same one.
    key_prefix: str = "agentaccel:limit"


#: Starting concurrency of an adaptive rule without max_concurrency; it grows from there while calls succeed.
ADAPTIVE_START = 4


def check(section: LimitConfig) -> None:
    """Raise ConfigError naming the rule and key for settings that type-check but cannot work."""
    if section.backend is not None:
        url = urlsplit(section.backend)
        if url.scheme not in ("redis", "rediss", "unix") or not (url.hostname or url.path):
            raise ConfigError(f"limit.backend: expected a redis://host:port/db URL, got {section.backend!r}")
    for key in ("lease_seconds", "backend_timeout", "breaker_reset_seconds"):
        _positive(f"limit.{key}", getattr(section, key))
    if section.breaker_failures < 1:
        raise ConfigError(f"limit.breaker_failures: must be at least 1, got {section.breaker_failures}")
    if section.backend_timeout >= section.lease_seconds:
        raise ConfigError("limit.backend_timeout must be shorter than limit.lease_seconds, or a slow Redis "
                          "would let leases expire while they are being renewed")
    seen: dict[str, int] = {}
    for index, rule in enumerate(section.rules):
        if not rule.name:
            rule.name = f"rules[{index}]"
        where = f"limit.rules[{index}] ({rule.name!r})"
        if rule.name in seen:
            raise ConfigError(f"{where}: name is also used by limit.rules[{seen[rule.name]}]; rule names must "
                              "be unique (they key the limits shared through Redis)")
        seen[rule.name] = index
        for key in ("max_concurrency", "rate", "tokens_per_minute", "max_queue"):
            value = getattr(rule, key)
            if value is not None and value < (0 if key == "max_queue" else 1):
                raise ConfigError(f"{where}.{key}: must be at least {0 if key == 'max_queue' else 1}, got {value}")
        _positive(f"{where}.interval", rule.interval)
        if rule.operation is not None and not any(fnmatchcase(op, rule.operation) for op in OPERATIONS):
            raise ConfigError(f"{where}.operation: {rule.operation!r} matches no operation; use one of "
                              f"{', '.join(sorted(OPERATIONS))}, or a glob of them")
        if rule.max_concurrency is None and rule.rate is None and rule.tokens_per_minute is None and not rule.adaptive:
            raise ConfigError(f"{where}: sets no limit; give it max_concurrency, rate (with interval), "
                              "tokens_per_minute or adaptive = true")
        if rule.queue_timeout is not None and not (rule.queue_timeout >= 0 and math.isfinite(rule.queue_timeout)):
            raise ConfigError(f"{where}.queue_timeout: must be a finite number of seconds >= 0 (leave it unset to "
                              f"wait as long as it takes), got {rule.queue_timeout}")


def _positive(where: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{where}: must be a positive number of seconds, got {value}")
