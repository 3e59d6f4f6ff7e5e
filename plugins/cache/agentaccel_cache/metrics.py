"""OpenTelemetry instruments for the cache, all observable: they read the active cache's counters when the
metric reader collects, so the hot path never calls into the metrics SDK."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from agentaccel import __version__
from agentaccel_cache.cache import Cache

#: Meter providers already given the instruments: a provider outlives enable(), and instruments cannot be removed.
_installed: weakref.WeakSet[MeterProvider] = weakref.WeakSet()


def install(provider: MeterProvider, active: Callable[[], Cache | None]) -> None:
    """Create the instruments on ``provider`` once; they report whichever cache ``active()`` returns."""
    if provider in _installed:
        return
    _installed.add(provider)
    meter = provider.get_meter("agentaccel.cache", __version__)

    def observe(read: Callable[[Cache], Iterable[Observation]]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            cache = active()
            return list(read(cache)) if cache is not None else []

        return callback

    meter.create_observable_counter(
        "agentaccel.cache.requests", [observe(lambda c: (
            Observation(n, {"agentaccel.cache.result": result, **({"agentaccel.cache.layer": layer} if layer else {})})
            for (result, layer), n in list(c.stats.results.items()) if n))],
        unit="{call}", description="Cached-eligible calls by result (hit, miss, coalesced, bypass, error) and layer")
    meter.create_observable_gauge(
        "agentaccel.cache.l1.bytes", [observe(lambda c: [Observation(c.l1.bytes)])], unit="By",
        description="Bytes held by the in-process cache (data plus bookkeeping estimate)")
    meter.create_observable_gauge(
        "agentaccel.cache.l1.entries", [observe(lambda c: [Observation(c.l1.entries)])], unit="{entry}",
        description="Entries in the in-process cache")
    meter.create_observable_counter(
        "agentaccel.cache.evictions", [observe(lambda c: [Observation(c.l1.evictions)])], unit="{entry}",
        description="Entries evicted from the in-process cache to stay within max_bytes")
    meter.create_observable_counter(
        "agentaccel.cache.time_saved", [observe(lambda c: [Observation(c.stats.time_saved)])], unit="s",
        description="Duration of the original calls that hits answered instead")
    meter.create_observable_counter(
        "agentaccel.cache.tokens_saved", [observe(lambda c: [
            Observation(c.stats.input_tokens_saved, {"gen_ai.token.type": "input"}),
            Observation(c.stats.output_tokens_saved, {"gen_ai.token.type": "output"})])], unit="{token}",
        description="Tokens of the original calls that hits answered instead")
    meter.create_observable_counter(
        "agentaccel.cache.invalid_entries", [observe(lambda c: [Observation(c.stats.invalid_entries)])],
        unit="{entry}", description="L2 entries rejected as malformed, unsigned or forged (served as misses)")
    meter.create_observable_counter(
        "agentaccel.cache.backend_errors", [observe(lambda c: [Observation(c.stats.backend_errors)])],
        unit="{error}", description="Failed L2 operations (the calls went on without L2)")
