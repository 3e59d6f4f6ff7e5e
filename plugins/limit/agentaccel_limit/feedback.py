"""What a call's outcome teaches a rule: whether the provider answered 429 (and how long it asked us to wait),
and the AIMD policy an ``adaptive`` rule follows to find a provider's unknown concurrency limit."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any


def rate_limited(error: BaseException | None) -> tuple[bool, float | None]:
    """``(is_rate_limited, retry_after_seconds)`` for an exception from any client, duck-typed: openai's
    ``RateLimitError``/``APIStatusError``, ``httpx.HTTPStatusError``, or anything with ``status_code == 429``
    or ``response.status_code == 429``; the wait comes from ``retry-after-ms`` or ``Retry-After`` (seconds or
    an HTTP date). Follows ``__cause__`` so a framework's wrapper around the client's error is seen through."""
    seen = 0
    while error is not None and seen < 4:
        response = getattr(error, "response", None)
        status = getattr(error, "status_code", None)
        if status is None:
            status = getattr(response, "status_code", None)
        if status == 429 or type(error).__name__ == "RateLimitError":
            return True, retry_after(getattr(response, "headers", None))
        error = error.__cause__
        seen += 1
    return False, None


#: The longest pause a Retry-After can ask for. Providers ask for seconds, at most a minute or two; a longer wait is
#: a misconfigured proxy or a date far off, and the rule would admit no call of any caller meanwhile.
MAX_RETRY_AFTER = 300.0


def retry_after(headers: Any) -> float | None:
    if not isinstance(headers, Mapping) and not hasattr(headers, "get"):
        return None
    seconds = _seconds(_header(headers, "retry-after-ms"), 1000)
    if seconds is None:
        seconds = _seconds(_header(headers, "retry-after"), 1)
    return None if seconds is None else min(MAX_RETRY_AFTER, max(0.0, seconds))


def _seconds(value: Any, per_second: int) -> float | None:
    """A header's wait in seconds: a number of ``1/per_second`` units, or (for Retry-After) an HTTP date; None
    for what is not one, and for "inf", "nan" or "1e999", which are no wait we could honour."""
    if value is None:
        return None
    try:
        seconds = float(value) / per_second
    except (TypeError, ValueError):
        if per_second != 1:
            return None
        try:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return seconds if math.isfinite(seconds) else None


def _header(headers: Any, name: str) -> Any:
    value = headers.get(name)  # case-insensitive in httpx's, requests' and aiohttp's header types
    if value is None and isinstance(headers, dict):  # a plain dict keeps the server's spelling ("Retry-After")
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    return value


class Aimd:
    """Additive increase, multiplicative decrease of a concurrency limit, TCP-style.

    Until the first 429 the limit grows by one per success (it doubles every round trip: slow start). A 429
    from a call that ran at concurrency ``level`` (the limiter passes the larger of the calls in flight when it
    was admitted and when its 429 came back) says the provider's cap is below it, and that level is remembered
    as the ceiling. The first 429 ends slow start and halves ``min(limit, level - 1)``: the limit doubled in the
    last round trip, so half of it was safe a round trip ago (a 10 % cut would need several more round trips of
    429s to come down from the overshoot). Every later 429 cuts it to ``BETA * min(limit, level - 1)``. Below
    ``ceiling - 1`` the limit grows by about one per round trip (``1/limit`` per success); at the ceiling it
    probes ``PROBE`` times slower, so a provider whose cap is steady answers 429 about once in ``PROBE`` round
    trips. Calls started before the last decrease (an older ``epoch``) were admitted under the old limit, and
    their 429s do not lower it again."""

    SLOW_START_BETA = 0.5
    BETA = 0.9
    PROBE = 64

    def __init__(self, start: float, maximum: int | None) -> None:
        self.limit = float(start)
        self.maximum = maximum
        self.ceiling: float | None = None
        self.epoch = 0

    @property
    def capacity(self) -> int:
        return max(1, int(self.limit))

    def succeeded(self) -> None:
        if self.ceiling is None:
            step = 1.0
        elif self.limit + 1 < self.ceiling:
            step = 1 / self.limit
        else:
            step = 1 / (self.PROBE * self.limit)
        self.limit += step
        if self.maximum is not None:
            self.limit = min(self.limit, float(self.maximum))

    def rate_limited(self, epoch: int, level: int) -> bool:
        """Lower the limit for a 429 of a call admitted in ``epoch`` that ran at concurrency ``level``; False
        when the call predates the last decrease."""
        if epoch != self.epoch:
            return False
        beta = self.SLOW_START_BETA if self.ceiling is None else self.BETA
        self.ceiling = float(level)
        self.limit = max(1.0, beta * min(self.limit, level - 1))
        self.epoch += 1
        return True
