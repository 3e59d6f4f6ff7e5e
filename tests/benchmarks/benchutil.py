"""What the benchmark scripts share: a span provider that exports nowhere, and timing a burst of calls."""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

T = TypeVar("T")


class _Discard(SpanExporter):
    """Exports nowhere, so the batch processor's queue drains and we measure span creation, not I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def discarding_provider() -> TracerProvider:
    """An SDK TracerProvider with a BatchSpanProcessor, as an application would configure one."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1 << 16))
    return provider


def recorded_span(run: Callable[[TracerProvider], object]) -> ReadableSpan:
    """The last span ``run`` records on a provider it is given (``run`` enables agentaccel on it and makes a call)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    run(provider)
    provider.shutdown()
    return exporter.get_finished_spans()[-1]


def in_span(tracer: Tracer, span: ReadableSpan, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` inside an SDK span like ``span`` (name, kind, every attribute given at start): what recording that
    span costs with none of agentaccel's code, the floor of any implementation that records it."""
    attributes = dict(span.attributes or {})

    def floor() -> object:
        recorded = tracer.start_span(span.name, None, span.kind, attributes)
        try:
            return fn()
        finally:
            recorded.end()

    return floor


class GcClock:
    """Seconds the garbage collector ran, and its collections by generation, while installed (``with``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._began = 0.0

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._tick)


def per_call_ns(fn: Callable[[], object], calls: int, *, collect: bool = True,
                flush: TracerProvider | None = None) -> float:
    """Mean ns per call of ``fn`` over ``calls`` calls, after a full garbage collection unless ``collect`` is
    false. Spans wait in the BatchSpanProcessor's queue until exported, so each one pushes objects into the oldest
    generation, and in a large heap (LangChain's) a full collection then costs about 100 ms: collecting first
    makes each window pay for its own garbage, not for what the variant before it left. With ``flush``, the window
    ends with that provider's ``force_flush()``, which exports the batch processor's queue in this thread: each
    window pays for exporting its own spans, and none is left for the next window's variant to pay for."""
    if collect:
        gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    if flush is not None:
        flush.force_flush()
    return (time.perf_counter_ns() - start) / calls


def in_turn(items: Sequence[T], turn: int) -> Sequence[T]:
    """``items`` in round ``turn``'s order: forwards, then backwards, so that a drift of the machine's speed over a
    round favours none of them."""
    return items if turn % 2 == 0 else items[::-1]


def median_interval(samples: Sequence[float], resamples: int = 2000) -> tuple[float, float, float]:
    """The median of ``samples`` and a 95% bootstrap interval of it (seeded: the same samples give the same
    interval), printed beside a median so that one near its target says how near."""
    draw = random.Random(7)
    medians = sorted(statistics.median(draw.choices(samples, k=len(samples))) for _ in range(resamples))
    return statistics.median(samples), medians[resamples // 40], medians[resamples - 1 - resamples // 40]


def span_after_cache_pollution(tracer: Tracer, span: ReadableSpan, calls: int) -> tuple[float, float]:
    """ns per call of a bare SDK span like ``span`` right after copying 8 MB, and in a loop of nothing else: the
    copy leaves the CPU's caches without the SDK's code and data, as a framework's work between two spans can.
    Each is the median of 7 windows' means; the copy's own time is measured in its own window and subtracted."""
    buffer = bytearray(8 << 20)

    def pollute() -> None:
        bytes(buffer)

    spanned = in_span(tracer, span, lambda: None)

    def both() -> None:
        pollute()
        spanned()

    cold = statistics.median(per_call_ns(both, calls) - per_call_ns(pollute, calls) for _ in range(7))
    hot = statistics.median(per_call_ns(spanned, calls) for _ in range(7))
    return cold, hot
