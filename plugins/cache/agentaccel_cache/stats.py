"""Process-wide counters, bumped on the hot path with plain arithmetic under a lock and read by OpenTelemetry's
observable instruments at collection time (an SDK ``Counter.add`` per call would cost more than an L1 hit)."""

from __future__ import annotations

import threading
from collections import Counter

from agentaccel_cache.values import Entry


class Stats:
    """``lock`` is shared with L1, which counts its hits while it holds it."""

    def __init__(self) -> None:
        self.results: Counter[tuple[str, str]] = Counter()  # (result, layer) -> calls
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
            self.served_locked(result, layer, entry)

    def served_locked(self, result: str, layer: str, entry: Entry) -> None:
        """:meth:`served`, for a caller that holds ``lock``."""
        self.results[(result, layer)] += 1
        self.time_saved += entry.duration
        self.input_tokens_saved += entry.input_tokens
        self.output_tokens_saved += entry.output_tokens

    def invalid(self) -> None:
        with self.lock:
            self.invalid_entries += 1

    def backend_error(self) -> None:
        with self.lock:
            self.backend_errors += 1
