"""What the benchmark scripts share: a span provider that exports nowhere, and timing a burst of calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class _Discard(SpanExporter):
    """Exports nowhere, so the batch processor's queue drains and we measure span creation, not I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def discarding_provider() -> TracerProvider:
    """An SDK TracerProvider with a BatchSpanProcessor, as an application would configure one."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1 << 16))
    return provider


def per_call_ns(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls
