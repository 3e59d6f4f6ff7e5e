"""Process-wide counters, bumped on the hot path with plain arithmetic under a lock and read by OpenTelemetry's
observable instruments at collection time (an SDK ``Counter.add`` per call would cost more than an L1 hit)."""

from __future__ import annotations

import threading

from agentaccel_cache.values import Entry

#: The (result, layer) an L1 hit counts under, made once: a hit would otherwise build and hash the pair.
L1_HIT = ("hit", "l1")
#: Every (result, layer) the cache counts (see the middleware's HIT, MISS ...), each from zero.
COUNTED = (L1_HIT, ("hit", "l2"), ("coalesced", "l1"), ("coalesced", "l2"), ("miss", ""), ("bypass", ""),
           ("error", ""))


class Stats:
    """``lock`` is shared with L1, which counts its hits while it holds it."""

    def __init__(self) -> None:
        # (result, layer) -> calls: a plain dict holding every key, where a Counter's += costs twice as much
        self.results: dict[tuple[str, str], int] = dict.fromkeys(COUNTED, 0)
        self.time_saved = 0.0
        self.input_tokens_saved = 0
        self.output_tokens_saved = 0
        self.invalid_entries = 0
        self.backend_errors = 0
        self.lock = threading.Lock()

    def count(self, result: str, layer: str = "") -> None:
        with self.lock:
            self.results[(result, layer)] += 1

    def served(self, result: str, layer: str, entry: Entry) -> None:
        """A call answered from the cache: it saved the original call's time and tokens."""
        with self.lock:
            self.served_locked((result, layer), entry)

    def served_locked(self, counted: tuple[str, str], entry: Entry) -> None:
        """:meth:`served` of ``counted`` = (result, layer), for a caller that holds ``lock``."""
        self.results[counted] += 1
        self.time_saved += entry.duration
        self.input_tokens_saved += entry.input_tokens
        self.output_tokens_saved += entry.output_tokens

    def invalid(self) -> None:
        with self.lock:
            self.invalid_entries += 1

    def backend_error(self) -> None:
        with self.lock:
            self.backend_errors += 1
