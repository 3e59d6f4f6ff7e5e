"""Which OpenTelemetry providers agentaccel records into. The application's own provider always wins; only when
it configured none and export is asked for does agentaccel set up the SDK, from the standard OTEL_* variables."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Literal

from opentelemetry import metrics, trace

from agentaccel._errors import ConfigError

Export = Literal["auto", "otlp", "console", "none"]


def export_requested(export: Export) -> bool:
    if export != "auto":
        return export != "none"
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracer_provider(export: Export, explicit: Any = None) -> trace.TracerProvider:
    """``explicit``, else the global provider; when that is unset and export is asked for, an SDK provider
    configured from OTEL_* that is installed as the global one (there was none to replace)."""
    if explicit is not None:
        return explicit  # type: ignore[no-any-return]
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider) or not export_requested(export):
        return current
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_names, metric_names = exporter_names(export)
    provider = TracerProvider(resource=Resource.create())
    for name in span_names:
        exporter = ConsoleSpanExporter() if name == "console" else _otlp("TRACES", "trace_exporter", "OTLPSpanExporter")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if metric_names:
        _install_meter_provider(provider.resource, metric_names)
    return provider


def meter_provider(explicit: Any = None) -> metrics.MeterProvider | None:
    """The provider to record the duration histogram into, or None when no SDK MeterProvider is configured
    (recording into the API's no-op would only cost time)."""
    if explicit is not None:
        return explicit  # type: ignore[no-any-return]
    if "opentelemetry.sdk.metrics" not in sys.modules:
        return None  # nobody can have made an SDK MeterProvider; importing the SDK to check costs ~80 ms
    from opentelemetry.sdk.metrics import MeterProvider

    current = metrics.get_meter_provider()
    return current if isinstance(current, MeterProvider) else None


def _names(var: str, default: str) -> list[str]:
    return [part.strip().lower() for part in os.environ.get(var, default).split(",") if part.strip()]


def _protocol(kind: str) -> str:
    return _protocol_setting(kind)[1]


def _protocol_setting(kind: str) -> tuple[str, str]:
    """(the variable that chose it, the protocol): the signal's own variable wins over the general one."""
    for var in (f"OTEL_EXPORTER_OTLP_{kind}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(var)
        if value:
            return var, value.strip().lower()
    return "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"


def exporter_names(export: Export) -> tuple[list[str], list[str]]:
    """The span and metric exporters agentaccel's setup would create (``otlp``/``console``), checked: an unknown
    exporter, protocol or a missing gRPC exporter is a ConfigError here, before anything is set up.

    Metrics follow OTEL_METRICS_EXPORTER when it is set, else go where spans go over OTLP (a console-only setup
    does not start sending metrics to a collector nobody named)."""
    span_names = [export] if export in ("otlp", "console") else _names("OTEL_TRACES_EXPORTER", "otlp")
    metric_names = _names("OTEL_METRICS_EXPORTER", "otlp" if "otlp" in span_names else "none")
    for var, names in (("OTEL_TRACES_EXPORTER", span_names), ("OTEL_METRICS_EXPORTER", metric_names)):
        for name in names:
            if name not in ("otlp", "console", "none"):
                raise ConfigError(f"{var}={name!r} is not supported by agentaccel's setup; use otlp, console or "
                                  "none, or configure the provider yourself before agentaccel.enable()")
    for kind, names in (("TRACES", span_names), ("METRICS", metric_names)):
        if "otlp" in names:
            _otlp_module(kind, "trace_exporter" if kind == "TRACES" else "metric_exporter")
    return [n for n in span_names if n != "none"], [n for n in metric_names if n != "none"]


def otlp_endpoint(kind: str) -> str:
    """Where the OTLP exporter for ``kind`` (TRACES, METRICS) sends, by the OTEL_* variables and defaults."""
    protocol = _protocol(kind)
    default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    return (os.environ.get(f"OTEL_EXPORTER_OTLP_{kind}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or default)


def _otlp_module(kind: str, module: str) -> Any:
    var, protocol = _protocol_setting(kind)
    if protocol == "grpc":
        try:
            return importlib.import_module(f"opentelemetry.exporter.otlp.proto.grpc.{module}")
        except ImportError:
            raise ConfigError(f"OTLP over gRPC was asked for ({var}=grpc) but its exporter is not installed: pip "
                              "install 'agentaccel[grpc]', or use http/protobuf") from None
    if protocol == "http/protobuf":
        return importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}")
    raise ConfigError(f"{var}={protocol!r} is not supported; use http/protobuf or grpc")


def _otlp(kind: str, module: str, cls: str) -> Any:
    return getattr(_otlp_module(kind, module), cls)()


def _install_meter_provider(resource: Any, names: list[str]) -> None:
    if not type(metrics.get_meter_provider()).__name__.startswith("_Proxy"):
        return  # the application set one: never replace it
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    readers = [PeriodicExportingMetricReader(
        ConsoleMetricExporter() if name == "console" else _otlp("METRICS", "metric_exporter", "OTLPMetricExporter"))
        for name in names]
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
