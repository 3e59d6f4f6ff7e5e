"""The limit plugin's metrics (span attributes are set by the middleware through ``call.annotate``)."""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics

from agentaccel import __version__

WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class Instruments:
    """``agentaccel.limit.in_flight`` (calls holding a rule's permit), ``agentaccel.limit.wait`` (seconds a call
    waited for its permits), ``agentaccel.limit.rejections`` (LimitExceeded, by rule and reason) and
    ``agentaccel.limit.rate_limited`` (429s seen, by rule); every point carries ``agentaccel.limit.rule``."""

    def __init__(self, provider: Any = None) -> None:
        meter = (provider or metrics.get_meter_provider()).get_meter("agentaccel.limit", __version__)
        self.in_flight = meter.create_up_down_counter(
            "agentaccel.limit.in_flight", unit="{call}", description="Calls holding a permit of the rule")
        self.wait = meter.create_histogram(
            "agentaccel.limit.wait", unit="s", description="Time a call waited for its permits",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS)
        self.rejections = meter.create_counter(
            "agentaccel.limit.rejections", unit="{call}", description="Calls refused with LimitExceeded")
        self.rate_limited = meter.create_counter(
            "agentaccel.limit.rate_limited", unit="{call}", description="Calls the provider answered with 429")
