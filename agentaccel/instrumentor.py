"""``opentelemetry-instrument python app.py`` enables agentaccel through this ``opentelemetry_instrumentor``
entry point, with the TracerProvider that opentelemetry-instrument's distro configured (or, with no distro, the
one agentaccel sets up from the OTEL_* variables)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

import agentaccel


class AgentAccelInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # frameworks are optional: each adapter checks its own versions

    def _instrument(self, **kwargs: Any) -> None:
        agentaccel.enable(tracer_provider=kwargs.get("tracer_provider"), meter_provider=kwargs.get("meter_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        agentaccel.disable()
