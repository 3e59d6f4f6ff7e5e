"""A circuit breaker for plugins that talk to a backend (Redis): an unreachable server should cost one short
timeout now and then, not one per call, and calls should fall back to what the process can do alone."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("agentaccel")


class CircuitBreaker:
    """Closed: calls go to the backend. ``failures`` consecutive failures open it for ``reset`` seconds, during
    which :meth:`allow` says no. Then one caller is let through as a probe (half-open): its success closes the
    breaker, its failure opens it for another ``reset`` seconds. Thread-safe; ``allow()`` takes no lock while
    closed, so the healthy path costs one attribute read."""

    def __init__(self, name: str, failures: int = 3, reset: float = 5.0) -> None:
        if failures < 1 or reset <= 0:
            raise ValueError(f"circuit breaker {name!r}: failures must be >= 1 and reset > 0")
        self.name = name
        self.threshold = failures
        self.reset = reset
        #: How many times it has opened since it was made (for stats and tests).
        self.opened = 0
        self._failures = 0
        self._open_until = 0.0  # 0.0: closed
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if not self._open_until:
            return "closed"
        return "open" if time.monotonic() < self._open_until else "half-open"

    def allow(self) -> bool:
        """Whether this call may use the backend. Once the open period is over only the first caller probes;
        the others keep falling back until the probe's outcome is known."""
        if not self._open_until:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                return False
            self._open_until = now + self.reset
            return True

    def success(self) -> None:
        if not (self._failures or self._open_until):
            return
        with self._lock:
            if self._open_until:
                log.warning("agentaccel: %s answers again; circuit breaker closed", self.name)
            self._failures, self._open_until = 0, 0.0

    def failure(self, exc: BaseException | None = None) -> None:
        with self._lock:
            self._failures += 1
            if self._open_until:  # a probe, or a call begun before it opened, failed: another open period
                self._open_until = time.monotonic() + self.reset
            elif self._failures >= self.threshold:
                self.opened += 1
                self._open_until = time.monotonic() + self.reset
                log.warning("agentaccel: %s failing (%s); circuit breaker open for %.1fs", self.name,
                            f"{type(exc).__name__}: {exc}" if exc is not None else "error", self.reset)
