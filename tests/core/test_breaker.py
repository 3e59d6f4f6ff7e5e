"""The circuit breaker plugins put in front of Redis."""

from __future__ import annotations

import threading
import time

import pytest

from agentaccel import CircuitBreaker


def test_opens_after_consecutive_failures_and_probes_once_after_reset() -> None:
    breaker = CircuitBreaker("redis test", failures=2, reset=0.05)
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure(ConnectionError("refused"))
    breaker.success()  # a success in between resets the count
    breaker.failure(ConnectionError("refused"))
    assert breaker.allow()
    breaker.failure(ConnectionError("refused"))
    assert (breaker.state, breaker.opened, breaker.allow()) == ("open", 1, False)
    time.sleep(0.06)
    assert breaker.state == "half-open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for the probe's outcome
    breaker.failure(TimeoutError())
    assert breaker.state == "open" and breaker.opened == 1  # re-opened, not counted as a new opening
    time.sleep(0.06)
    assert breaker.allow()
    breaker.success()
    assert (breaker.state, breaker.allow()) == ("closed", True)


def test_only_one_probe_among_many_threads() -> None:
    breaker = CircuitBreaker("redis test", failures=1, reset=0.02)
    breaker.failure()
    time.sleep(0.03)
    allowed: list[bool] = []
    barrier = threading.Barrier(16)

    def ask() -> None:
        barrier.wait()
        allowed.append(breaker.allow())

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failures must be >= 1"):
        CircuitBreaker("x", failures=0)
