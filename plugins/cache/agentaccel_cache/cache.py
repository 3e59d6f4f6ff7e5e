"""The cache one ``enable()`` builds from the ``cache`` section: both levels, the breaker, the flights, the policy
and the counters. The middleware decides; this holds the parts."""

from __future__ import annotations

import logging

from agentaccel import CircuitBreaker
from agentaccel_cache.backends import Backend, open_backend
from agentaccel_cache.config import CacheConfig
from agentaccel_cache.l1 import L1
from agentaccel_cache.policy import Policies
from agentaccel_cache.singleflight import Flights
from agentaccel_cache.stats import Stats
from agentaccel_cache.values import Entry, InvalidEntry, dump, load

log = logging.getLogger("agentaccel.cache")


class Cache:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.namespace = config.namespace
        self.lease = config.lease
        self.l1 = L1(config.max_bytes)
        self.backend: Backend | None = (
            open_backend(config.backend, config.namespace, config.connect_timeout, config.timeout)
            if config.backend else None)
        self.breaker = CircuitBreaker("agentaccel cache L2 backend", config.breaker_failures, config.breaker_reset)
        self.flights = Flights()
        self.policies = Policies(config.rules, config.ttl)
        self.stats = Stats()
        self._secret = config.secret.encode() if config.secret else None

    def dump(self, key: str, entry: Entry) -> bytes:
        return dump(entry, key, self._secret)

    def load(self, key: str, blob: bytes) -> tuple[Entry, object] | None:
        """The entry in ``blob`` and its data, or None for an invalid one (counted and logged, never run)."""
        try:
            return load(blob, key, self._secret)
        except InvalidEntry as exc:
            self.stats.invalid()
            log.warning("agentaccel cache: ignored the L2 entry %s (%s); treated as a miss", key, exc)
            return None

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
