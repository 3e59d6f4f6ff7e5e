"""Built-in plugin ``tracing``: one OpenTelemetry span per intercepted call, named and attributed per the GenAI
semantic conventions, and the ``gen_ai.client.operation.duration`` histogram."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from agentaccel import __version__
from agentaccel._call import (
    EXECUTE_TOOL,
    INVOKE_AGENT,
    INVOKE_WORKFLOW,
    MODEL_OPERATIONS,
    Call,
    Mode,
    Outcome,
    StreamOutcome,
    Target,
)
from agentaccel._config import Config, ConfigSpec
from agentaccel._errors import ConfigError
from agentaccel._otel import (
    Export,
    _protocol,
    export_requested,
    exporter_names,
    meter_provider,
    otlp_endpoint,
    tracer_provider,
)
from agentaccel._pipeline import Finish, Middleware, isolate
from agentaccel._plugins import hookimpl


@dataclasses.dataclass
class TracingConfig:
    #: "auto": when the application configured no TracerProvider, set up the SDK from the OTEL_* variables if
    #: OTEL_TRACES_EXPORTER or an OTLP endpoint is set. "otlp"/"console": set it up regardless. "none": never.
    export: Export = "auto"


#: Normalized request keys that become ``gen_ai.request.*`` attributes.
REQUEST_ATTRIBUTES = {
    "model": "gen_ai.request.model",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "n": "gen_ai.request.choice.count",
}
REQUEST_KEYS = frozenset(REQUEST_ATTRIBUTES)
#: Where the call's name goes, by operation.
NAME_ATTRIBUTE = {EXECUTE_TOOL: "gen_ai.tool.name", INVOKE_AGENT: "gen_ai.agent.name",
                  INVOKE_WORKFLOW: "agentaccel.workflow.name"}
#: The context key LLM instrumentations (OpenLLMetry and others) check before recording a model call of their own.
SUPPRESS_MODEL_INSTRUMENTATION = "suppress_language_model_instrumentation"
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


class _Static:
    """What a target's spans share, worked out once per target."""

    __slots__ = ("attributes", "defer", "described", "kind", "model", "name", "per_call", "stream", "timed",
                 "tracer")

    def __init__(self, tracer: trace.Tracer, target: Target, timed: bool) -> None:
        self.tracer = tracer
        self.kind = SpanKind.CLIENT if target.operation in MODEL_OPERATIONS else SpanKind.INTERNAL
        self.attributes: dict[str, Any] = {"gen_ai.operation.name": target.operation}
        if target.mode is not Mode.SYNC:
            self.attributes["agentaccel.mode"] = target.mode.value
        if target.identify is None:
            _identity(self.attributes, target.operation, target.name, target.provider)
        self.name = f"{target.operation} {target.name}"
        # Model calls are named after the requested model and tagged with its parameters; a name or provider
        # that depends on the instance is known only per call.
        self.per_call = target.identify is not None or target.operation in MODEL_OPERATIONS
        self.timed = timed or target.mode.is_stream
        self.described = target.describe is not None
        self.stream = target.mode.is_stream
        self.model = target.operation in MODEL_OPERATIONS
        self.defer = False  # see Tracing.chained


class Tracing(Middleware):
    name = "tracing"
    before = ("profile", "cache", "limit", "pool")

    def __init__(self, provider: trace.TracerProvider, record_duration: Callable[..., None] | None) -> None:
        self.provider = provider
        self.record_duration = record_duration
        self._static: dict[Target, _Static] = {}

    def accepts(self, target: Target) -> bool:
        # One instrumentation scope per framework ("agentaccel.langchain"): the scope names the framework for
        # free, where a per-span attribute would cost about a microsecond on every call.
        tracer = self.provider.get_tracer(f"agentaccel.{target.framework}", __version__,
                                          schema_url="https://opentelemetry.io/schemas/1.28.0")
        self._static[target] = _Static(tracer, target, self.record_duration is not None)
        return True

    def chained(self, target: Target, inner: tuple[Middleware, ...]) -> None:
        # When a middleware runs inside this one it may answer the call (a cache hit): the span then starts only
        # when the original (or a replay of the answer) is about to run, or at the end with everything known. The
        # SDK checks the attributes of each call to it in a pass of its own, and that second pass is a tenth of an
        # L1 hit.
        self._static[target].defer = bool(inner)

    def flow(self, call: Call) -> Finish:
        # A finisher, not a generator (see Middleware.flow): every call passes through here.
        static = self._static[call.target]
        start = time.perf_counter_ns() if static.timed else 0
        began = None
        started: list[trace.Span] = []
        if static.defer:
            began = time.time_ns()
            # Started by the pipeline, if at all, when the original or a replay is about to run (see chained()),
            # into ``started`` (a partial: cheaper to make than a closure over these names). Its name and
            # attributes are worked out then, or at the end: a call answered before that needs them only once.
            call.context = partial(_begin, started, call, static, began)
        else:
            name, attributes = _span_of(call, static, None)
            span = static.tracer.start_span(name, None, static.kind, attributes)
            started.append(span)
            call.context = _span_context(span, static.model)
        return partial(self._end, call, static, started, began, start)

    def _end(self, call: Call, static: _Static, started: list[trace.Span], began: int | None, start: int,
             outcome: Outcome) -> None:
        error = outcome.error
        if began is not None:
            call.context = None  # the starter holds the call: without this the two wait for the cycle collector
            if not started and outcome.served and error is None and self.record_duration is None:
                # Answered before anything ran (a cache hit: not a stream, whose span starts with its first
                # chunk), the hot path: one start with every attribute, and its end.
                name, attributes = _span_of(call, static, call.attributes)
                static.tracer.start_span(name, None, static.kind, attributes, None, began).end()
                return
        span = started[0] if started else None
        error_type = None if error is None else _error_type(error)
        # describe() tells what the original call's response says (its usage above all); a call a middleware
        # answered (a cache hit) used no tokens, and a backend that sums gen_ai.usage.* must not count it twice.
        ends = error_type is not None or static.stream or (static.described and not outcome.served)
        recording = span is None or span.is_recording()  # an unstarted span may still be sampled
        ending = _ending(call, outcome, start, error_type) if ends and recording else None
        annotated = call.attributes
        merged = {**ending, **annotated} if ending else annotated  # middleware have the last word
        try:
            if span is None:  # a middleware answered before the original ran: one start with every attribute
                name, attributes = _span_of(call, static, merged)
                span = static.tracer.start_span(name, None, static.kind, attributes, None, began)
            elif merged and recording:
                span.set_attributes(merged)  # one pass for everything known at the end (see chained())
            if error_type is not None:
                _failed(span, error, error_type)
        finally:
            if span is not None:
                span.end()
        if self.record_duration is not None:
            self.record_duration((time.perf_counter_ns() - start) / 1e9, _metric_attributes(call, error_type))


def _begin(started: list[trace.Span], call: Call, static: _Static, began: int) -> Context:
    name, attributes = _span_of(call, static, None)
    span = static.tracer.start_span(name, None, static.kind, attributes, None, began)
    started.append(span)
    return _span_context(span, static.model)


def _span_of(call: Call, static: _Static, extra: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The span's name and its attributes at start: the target's, the call's own (its name and provider, a model
    call's model and parameters, the scope), then ``extra``, which has the last word."""
    if not (static.per_call or call.scope):
        return static.name, {**static.attributes, **extra} if extra else static.attributes  # the SDK copies them
    target = call.target
    attributes = dict(static.attributes)
    if target.identify is not None:
        _identity(attributes, target.operation, call.name, call.provider)
    subject = call.name
    if static.model:
        request = call.request
        if not REQUEST_KEYS.isdisjoint(request):
            for key in REQUEST_KEYS.intersection(request):
                value = request[key]
                if value is not None:
                    attributes[REQUEST_ATTRIBUTES[key]] = [value] if key == "stop" and isinstance(value, str) else value
        subject = request.get("model") or subject
    if call.scope:
        for key, value in call.scope.items():
            attributes[f"agentaccel.scope.{key}"] = value
    if extra:
        attributes.update(extra)
    return static.name if subject == target.name else f"{target.operation} {subject}", attributes


def _metric_attributes(call: Call, error_type: str | None) -> dict[str, Any]:
    """The duration histogram's attributes: operation, provider, requested model and error type, those known."""
    target = call.target
    attributes: dict[str, Any] = {"gen_ai.operation.name": target.operation}
    if call.provider:
        attributes["gen_ai.provider.name"] = call.provider
    model = call.request.get("model") if target.operation in MODEL_OPERATIONS else None
    if model is not None:
        attributes["gen_ai.request.model"] = model
    if error_type is not None:
        attributes["error.type"] = error_type
    return attributes


def _span_context(span: trace.Span, model: bool) -> Context:
    context = set_span_in_context(span)
    # A model call's client library may be instrumented too (OpenLLMetry's openai instrumentation under a
    # LangChain model): the key those instrumentations honour tells them this span already records the call.
    return set_value(SUPPRESS_MODEL_INSTRUMENTATION, True, context) if model else context


def _failed(span: trace.Span, error: BaseException | None, error_type: str) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error) or error_type))


def _identity(attributes: dict[str, Any], operation: str, name: str, provider: str | None) -> None:
    if provider:
        attributes["gen_ai.provider.name"] = provider
    name_key = NAME_ATTRIBUTE.get(operation)
    if name_key is not None:
        attributes[name_key] = name


def _error_type(error: BaseException) -> str | None:
    if isinstance(error, GeneratorExit):
        return None  # the consumer stopped reading: not a failure of the call
    return type(error).__qualname__


def _ending(call: Call, outcome: Outcome, start_ns: int, error_type: str | None) -> dict[str, Any]:
    """The attributes known when the call ends: a stream's counts, the error's type, or what the adapter's
    ``describe()`` reads from the result (usage, response model) when the original call produced it."""
    attributes: dict[str, Any] = {}
    if isinstance(outcome, StreamOutcome):
        attributes["agentaccel.stream.chunks"] = outcome.chunks
        attributes["agentaccel.stream.completed"] = outcome.completed
        if outcome.chunks:
            attributes["agentaccel.stream.first_chunk_ms"] = (outcome.first_chunk_ns - start_ns) / 1e6
        if isinstance(outcome.error, GeneratorExit):
            attributes["agentaccel.stream.abandoned"] = True
    target = call.target
    if error_type is not None:
        attributes["error.type"] = error_type
    elif target.describe is not None and not outcome.served:
        result = outcome.last if isinstance(outcome, StreamOutcome) else outcome.value
        if result is not None:
            try:
                described = target.describe(result)
            except Exception as exc:  # the adapter's bug: the span still ends, the call still returns
                isolate(f"{target.framework} adapter's describe() for {target.operation}", exc)
            else:
                attributes.update((k, v) for k, v in described.items() if v is not None)
    return attributes


@hookimpl
def agentaccel_add_config(spec: ConfigSpec) -> None:
    spec.add_section("tracing", TracingConfig)


@hookimpl
def agentaccel_register_middleware(register: Callable[[Middleware], None], config: Config) -> None:
    section: TracingConfig = config.section("tracing")
    provider = tracer_provider(section.export, config.extra.get("tracer_provider"))
    meters = meter_provider(config.extra.get("meter_provider"))
    record = None
    if meters is not None:
        histogram = meters.get_meter("agentaccel", __version__).create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        record = histogram.record
    register(Tracing(provider, record))


@hookimpl
def agentaccel_doctor(register: Callable[[str, Callable[[], tuple[bool, str]]], None], config: Config) -> None:
    register("exporter", lambda: check_exporter(config.section("tracing").export))


def check_exporter(export: Export) -> tuple[bool, str]:
    """Where agentaccel's own setup would send spans, and whether an OTLP endpoint accepts connections."""
    from agentaccel._doctor import check_endpoint

    if not export_requested(export):
        # Say what turned export off: when an endpoint is set, "set OTEL_EXPORTER_OTLP_ENDPOINT" would mislead.
        if export == "none":
            reason = "export turned off by tracing.export = 'none'"  # the configuration check says where from
        elif os.environ.get("OTEL_TRACES_EXPORTER", "").strip():
            reason = "export turned off by OTEL_TRACES_EXPORTER=none"
        else:
            return True, ("no exporter configured: spans go to a TracerProvider the application sets up; set "
                          "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER) to have agentaccel export them")
        return True, f"{reason}: spans go to a TracerProvider the application sets up"
    try:
        spans, _ = exporter_names(export)
    except ConfigError as exc:
        return False, str(exc)
    if "otlp" not in spans:
        return True, f"spans go to: {', '.join(spans) or 'nowhere (none)'}"
    ok, message = check_endpoint(otlp_endpoint("TRACES"))
    protocol = _protocol("TRACES")
    return ok, f"OTLP {protocol} endpoint {message}" + ("" if ok else "; spans would be dropped")

