"""A circuit breaker for the L2 backend: after ``failures`` consecutive errors it opens for ``reset`` seconds
(calls use L1 only and pay no timeout), then lets one call probe; a success closes it."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("agentaccel.cache")


class Breaker:
    def __init__(self, failures: int, reset: float) -> None:
        self.threshold = failures
        self.reset = reset
        self.failures = 0
        self.opened = 0  # times it opened, for stats and tests
        self._open_until = 0.0  # 0: closed
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if not self._open_until:
            return "closed"
        return "open" if time.monotonic() < self._open_until else "half-open"

    def allow(self) -> bool:
        """Whether this call may use L2; when the open period is over, only the first caller probes."""
        if not self._open_until:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                return False
            self._open_until = now + self.reset  # the probe's window: the others stay on L1 meanwhile
            return True

    def success(self) -> None:
        if self.failures or self._open_until:
            with self._lock:
                if self._open_until:
                    log.warning("agentaccel cache: L2 backend answers again; circuit breaker closed")
                self.failures = 0
                self._open_until = 0.0

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self._open_until:  # a probe (or a call begun before it opened) failed: another open period
                self._open_until = time.monotonic() + self.reset
            elif self.failures >= self.threshold:
                self.opened += 1
                self._open_until = time.monotonic() + self.reset
                log.warning("agentaccel cache: L2 backend failing (%s: %s); circuit breaker open for %.1fs, "
                            "calls use the in-process cache only", type(exc).__name__, exc, self.reset)
