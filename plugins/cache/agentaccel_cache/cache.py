"""The cache one ``enable()`` builds from the ``cache`` section: both levels, the breaker, the flights, the policy
and the counters. The middleware decides; this holds the parts."""

from __future__ import annotations

import logging

from agentaccel import CircuitBreaker, Codec
from agentaccel_cache.backends import Backend, open_backend
from agentaccel_cache.config import CacheConfig
from agentaccel_cache.l1 import L1
from agentaccel_cache.policy import Policies
from agentaccel_cache.singleflight import Flights
from agentaccel_cache.stats import Stats
from agentaccel_cache.values import Entry, dump, load, to_result

log = logging.getLogger("agentaccel.cache")


class Cache:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.namespace = config.namespace
        self.lease = config.lease
        self.stats = Stats()
        self.l1 = L1(config.max_bytes, self.stats)
        self.backend: Backend | None = (
            open_backend(config.backend, config.namespace, config.connect_timeout, config.timeout)
            if config.backend else None)
        self.breaker = CircuitBreaker("agentaccel cache L2 backend", config.breaker_failures, config.breaker_reset)
        self.flights = Flights()
        self.policies = Policies(config.rules, config.ttl)
        self._secret = config.secret.encode() if config.secret else None

    def dump(self, key: str, entry: Entry) -> bytes:
        return dump(entry, key, self._secret)

    def load(self, key: str, blob: bytes, codec: Codec) -> tuple[Entry, object] | None:
        """The entry in ``blob`` and the result it holds, decoded by ``codec``; None for an entry that is not
        valid or does not decode (counted and logged, never run). Only a decoded entry may go on to L1, where
        hits skip validation."""
        try:
            entry, data = load(blob, key, self._secret)
            return entry, to_result(codec, entry.stream, data)
        except Exception as exc:  # InvalidEntry, or whatever the adapter's decode raised on data it did not make
            self.stats.invalid()
            log.warning("agentaccel cache: ignored the L2 entry %s (%s); treated as a miss", key, exc)
            return None

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
