"""Which OpenTelemetry providers agentaccel records into. The application's own provider always wins; only when
it configured none and export is asked for does agentaccel set up the SDK, from the standard OTEL_* variables."""

from __future__ import annotations

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
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    for exporter in _span_exporters(export):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if _metrics_wanted():
        _install_meter_provider(provider.resource)
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
    return (os.environ.get(f"OTEL_EXPORTER_OTLP_{kind}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf").strip().lower()


def _span_exporters(export: Export) -> list[Any]:
    names = [export] if export in ("otlp", "console") else _names("OTEL_TRACES_EXPORTER", "otlp")
    exporters: list[Any] = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp("TRACES", "trace_exporter", "OTLPSpanExporter"))
        elif name != "none":
            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not supported by agentaccel's setup; use otlp, "
                              "console or none, or configure a TracerProvider yourself before agentaccel.enable()")
    return exporters


def _otlp(kind: str, module: str, cls: str) -> Any:
    protocol = _protocol(kind)
    if protocol == "grpc":
        try:
            mod = __import__(f"opentelemetry.exporter.otlp.proto.grpc.{module}", fromlist=[cls])
        except ImportError:
            raise ConfigError("OTLP over gRPC was asked for (OTEL_EXPORTER_OTLP_PROTOCOL=grpc) but its exporter is "
                              "not installed: pip install 'agentaccel[grpc]', or use http/protobuf") from None
    elif protocol == "http/protobuf":
        mod = __import__(f"opentelemetry.exporter.otlp.proto.http.{module}", fromlist=[cls])
    else:
        raise ConfigError(f"OTLP protocol {protocol!r} is not supported; use http/protobuf or grpc")
    return getattr(mod, cls)()


def _metrics_wanted() -> bool:
    return _names("OTEL_METRICS_EXPORTER", "otlp") != ["none"]


def _install_meter_provider(resource: Any) -> None:
    if not type(metrics.get_meter_provider()).__name__.startswith("_Proxy"):
        return  # the application set one: never replace it
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    readers = []
    for name in _names("OTEL_METRICS_EXPORTER", "otlp"):
        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "otlp":
            readers.append(PeriodicExportingMetricReader(_otlp("METRICS", "metric_exporter", "OTLPMetricExporter")))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
