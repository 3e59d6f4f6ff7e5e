"""The ``cache`` config section (``[tool.agentaccel.cache]``) and the checks the dataclass types cannot express."""

from __future__ import annotations

import dataclasses
import math
import re
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from agentaccel import OPERATIONS, ConfigError

MiB = 1 << 20


@dataclasses.dataclass
class Rule:
    """Turns caching on or off, or sets the TTL and tags, for the calls whose framework, operation and name match
    these globs. Rules apply in order and each sets only the fields it gives, so a later rule wins."""

    framework: str = "*"
    operation: str = "*"
    name: str = "*"
    #: None leaves the default: model calls on, tools only when pure, agent and workflow runs off.
    enabled: bool | None = None
    ttl: float | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CacheConfig:
    enabled: bool = True
    #: "" keeps entries in process only (L1); "redis://host:6379/0", "rediss://..." or "sqlite:///path/cache.db"
    #: adds a shared second level (L2).
    backend: str = ""
    #: Prefix of every L2 key and part of every cache key: caches with different namespaces never share entries.
    namespace: str = "agentaccel"
    #: Bound of the in-process level in bytes of stored data; 0 turns L1 off (every lookup goes to L2).
    max_bytes: int = 64 * MiB
    #: Seconds an entry lives unless a rule or ``agentaccel.options(ttl=...)`` says otherwise.
    ttl: float = 3600.0
    #: When set, L2 entries are signed with HMAC-SHA256 bound to their key, and unsigned or forged ones are misses.
    secret: str = ""
    #: Redis connect and command timeouts in seconds: a slow Redis costs at most this per call, then the breaker
    #: opens.
    connect_timeout: float = 0.25
    timeout: float = 0.25
    #: Consecutive L2 failures that open the circuit breaker, and seconds it stays open before one probe.
    breaker_failures: int = 3
    breaker_reset: float = 5.0
    #: Seconds a single-flight leader may hold its key (a Redis lease) before waiters call upstream themselves.
    lease: float = 60.0
    rules: list[Rule] = dataclasses.field(default_factory=list)


_SCHEMES = ("redis", "rediss", "sqlite")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-/]+")


def seconds(value: Any) -> None:
    """Raise ValueError unless ``value`` is a finite positive number of seconds (an infinite one cannot be stored
    as an expiry, nor given to Redis or a socket as a timeout)."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be a positive, finite number of seconds, got {value!r}")


def check(config: CacheConfig) -> None:
    """Raise ConfigError naming the key and the fix for a setting the types allow but that cannot work."""
    if config.backend:
        _check_backend(config.backend)
    if not _NAMESPACE.fullmatch(config.namespace):
        raise ConfigError(f"cache.namespace: {config.namespace!r} must be non-empty letters, digits, '_', '-', '.' "
                          "or '/' (it prefixes Redis keys)")
    positive = {"ttl": config.ttl, "connect_timeout": config.connect_timeout, "timeout": config.timeout,
                "breaker_reset": config.breaker_reset, "lease": config.lease}
    for key, value in positive.items():
        try:
            seconds(value)
        except ValueError as exc:
            raise ConfigError(f"cache.{key}: {exc}") from None
    if config.max_bytes < 0:
        raise ConfigError(f"cache.max_bytes: must be >= 0 (0 turns the in-process cache off), got {config.max_bytes}")
    if config.breaker_failures < 1:
        raise ConfigError(f"cache.breaker_failures: must be >= 1, got {config.breaker_failures}")
    for index, rule in enumerate(config.rules):
        if not any(fnmatchcase(operation, rule.operation) for operation in OPERATIONS):
            # A glob, but over six names: one that matches none of them is a typo, and would match no call.
            raise ConfigError(f"cache.rules[{index}].operation: {rule.operation!r} matches no operation; use one "
                              f"of {', '.join(sorted(OPERATIONS))}, or a glob of them")
        if rule.ttl is not None:
            try:
                seconds(rule.ttl)
            except ValueError as exc:
                raise ConfigError(f"cache.rules[{index}].ttl: {exc}; use enabled = false to stop caching") from None


def _check_backend(url: str) -> None:
    parts = urlsplit(url)
    # urlsplit lowercases the scheme; redis-py and the backends compare it as written.
    scheme = url.partition(":")[0]
    if scheme not in _SCHEMES:
        raise ConfigError(f"cache.backend: {redact(url)!r} has scheme {scheme if parts.scheme else 'none'!r}; "
                          "use redis://host:6379/0, rediss://host:6380/0 or sqlite:///path/to/cache.db (lower "
                          "case), or leave it empty for the in-process cache only")
    if scheme == "sqlite" and not parts.path.strip("/"):
        raise ConfigError(f"cache.backend: {url!r} names no file; use sqlite:///path/to/cache.db "
                          "(three slashes, then the path)")
    try:
        parts.port  # noqa: B018  # parsed lazily: a port that is not a number raises here
    except ValueError as exc:
        raise ConfigError(f"cache.backend: {redact(url)!r}: {exc}; use redis://host:6379/0") from None


def redact(url: str) -> str:
    """The URL without its password, for messages and `agentaccel cache stats`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()

