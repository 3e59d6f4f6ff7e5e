"""enable() and disable(): load plugins, resolve configuration, compose the pipeline once, instrument adapters;
and :func:`interceptor`, the hot path every intercepted call goes through."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pluggy

from agentaccel._adapter import Adapter
from agentaccel._call import Call, Mode, Outcome, Target
from agentaccel._config import Config, ConfigSpec, load
from agentaccel._errors import ConfigError
from agentaccel._pipeline import (
    _ACTIVE,
    Finish,
    Middleware,
    isolate,
    order,
    owned_by_outer,
    run_async,
    run_async_stream,
    run_sync,
    run_sync_stream,
)
from agentaccel._plugins import PluginInfo, build_manager, discover

log = logging.getLogger("agentaccel")


class Runtime:
    """What one ``enable()`` set up; ``agentaccel.runtime()`` returns the one in force."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo], spec: ConfigSpec,
                 config: Config, middleware: tuple[Middleware, ...], adapters: list[Adapter]) -> None:
        self.pm = pm
        self.plugins = plugins
        self.spec = spec
        self.config = config
        self.middleware = middleware
        self.adapters = adapters
        self._chains: dict[Target, tuple[Middleware, ...]] = {}

    def chain(self, target: Target) -> tuple[Middleware, ...]:
        """The middleware that accept ``target``, asked once per target."""
        chain = self._chains.get(target)
        if chain is None:
            chain = tuple(mw for mw in self.middleware if _accepts(mw, target))
            for i, mw in enumerate(chain):
                try:
                    mw.chained(target, chain[i + 1:])
                except Exception as exc:
                    isolate(mw.name, exc)
            self._chains[target] = chain
        return chain


def _accepts(mw: Middleware, target: Target) -> bool:
    try:
        return mw.accepts(target)
    except Exception as exc:
        isolate(mw.name, exc)
        return False


_lock = threading.RLock()
_current: Runtime | None = None
_arguments: tuple[Any, ...] | None = None


def runtime() -> Runtime | None:
    """The runtime in force, or None when agentaccel is not enabled."""
    return _current


def enable(*, tracer_provider: Any = None, meter_provider: Any = None, **sections: Mapping[str, Any]) -> Runtime:
    """Turn agentaccel on in this process: load plugins, read configuration, compose the pipeline, instrument the
    frameworks' adapters. Calling it again with the same arguments does nothing; with other arguments it
    re-enables with those. ``disable()`` undoes all of it.

    :param sections: one mapping per config section, e.g. ``cache={"ttl": 60}``; overrides env and file.
    :param tracer_provider: an OpenTelemetry TracerProvider to use instead of the global one.
    :param meter_provider: likewise for the ``gen_ai.client.operation.duration`` histogram.
    """
    global _current, _arguments
    _check_provider("tracer_provider", tracer_provider, "get_tracer", "opentelemetry.sdk.trace.TracerProvider")
    _check_provider("meter_provider", meter_provider, "get_meter", "opentelemetry.sdk.metrics.MeterProvider")
    # Each section's mapping as it is now: a caller may change the dict it passed and call enable() again with it,
    # and that is other arguments (and a later re-enable must not pick up a change nobody passed).
    arguments = (tracer_provider, meter_provider,
                 {name: dict(values) if isinstance(values, Mapping) else values for name, values in sections.items()})
    with _lock:
        if _current is not None:
            if _same(arguments, _arguments):
                return _current
            disable()
        try:
            rt = _build(sections, {"tracer_provider": tracer_provider, "meter_provider": meter_provider})
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None  # the message says it all; the deep traceback would not help
        _current, _arguments = rt, arguments
        return rt


def _check_provider(name: str, value: Any, method: str, example: str) -> None:
    # Checked here, not where a plugin first uses it: there a wrong object (a Tracer for a TracerProvider) would
    # fail that plugin's configure, which is logged and skipped, and agentaccel would run with no spans.
    if value is not None and not callable(getattr(value, method, None)):
        raise ConfigError(f"enable({name}=...) expects an OpenTelemetry provider with {method}() (such as "
                          f"{example}), got {type(value).__name__}; pass the provider, not one of its products")


def _same(a: tuple[Any, ...], b: tuple[Any, ...] | None) -> bool:
    return b is not None and a[0] is b[0] and a[1] is b[1] and a[2] == b[2]


def load_configuration(sections: Mapping[str, Any], extra: Mapping[str, Any] | None = None
                       ) -> tuple[pluggy.PluginManager, list[PluginInfo], ConfigSpec, Config]:
    """Find plugins and read the configuration they declare, without configuring anything. Raises ConfigError."""
    infos = discover()
    pm = build_manager(infos)
    spec = ConfigSpec()
    _call_each(pm, {info.name: info for info in infos}, "agentaccel_add_config", spec=spec)
    ignored = frozenset(info.name for info in infos if info.status != "enabled")
    return pm, infos, spec, load(spec, sections, ignored_sections=ignored, extra=extra)


def load_config(**sections: Mapping[str, Any]) -> Config:
    """The configuration ``enable(**sections)`` would use, read and validated without enabling anything (for a
    plugin's command-line tools). Raises ConfigError."""
    return load_configuration(sections)[3]


def _build(sections: Mapping[str, Any], extra: Mapping[str, Any]) -> Runtime:
    pm, infos, spec, config = load_configuration(sections, extra)
    by_name = {info.name: info for info in infos}
    configured: list[str] = []
    try:
        _call_each(pm, by_name, "agentaccel_configure", succeeded=configured, config=config)
        middleware: list[Middleware] = []
        _call_each(pm, by_name, "agentaccel_register_middleware", collect=middleware, configured=configured,
                   config=config)
        observers = pm.hook.agentaccel_call_finished.get_hookimpls()
        if observers:
            middleware.insert(0, _Observe(observers))
        adapters: list[Adapter] = []
        _call_each(pm, by_name, "agentaccel_register_adapters", collect=adapters, configured=configured,
                   config=config)
        rt = Runtime(pm, infos, spec, config, order(middleware), adapters)
    except BaseException:
        _unconfigure(pm, config, configured)
        raise
    for adapter in adapters:
        try:
            adapter.instrument()
        except Exception as exc:  # an adapter bug leaves that framework uninstrumented, not the process broken
            adapter.uninstrument()
            adapter.problems.append(f"instrument() raised {type(exc).__name__}: {exc}")
            log.error("agentaccel adapter %r failed to instrument and is inactive", adapter.name, exc_info=exc)
    return rt


def _call_each(pm: pluggy.PluginManager, infos: Mapping[str, PluginInfo], hook: str, *,
               collect: list[Any] | None = None, configured: list[str] | None = None,
               succeeded: list[str] | None = None, **kwargs: Any) -> list[str]:
    """Call each implementation of ``hook`` in registration order; return (and add to ``succeeded``) the names
    of the plugins whose implementation returned normally.

    A plugin whose hook raises (other than a ConfigError, which is the user's to fix) is marked failed, loses
    what it registered in this hook (with ``collect`` each implementation gets its own ``register``), is
    unconfigured if it had been configured (``configured``), and is unregistered; the others go on.
    """
    succeeded = [] if succeeded is None else succeeded
    for impl in getattr(pm.hook, hook).get_hookimpls():
        items: list[Any] = []
        arguments = kwargs if collect is None else {**kwargs, "register": _collector(items)}
        try:
            impl.function(*(arguments[name] for name in impl.argnames))
        except ConfigError:
            raise
        except Exception as exc:
            info = infos.get(impl.plugin_name)
            if info is not None:
                info.status, info.reason = "failed", f"{hook} raised {type(exc).__name__}: {exc}"
            log.error("agentaccel plugin %r failed in %s and is skipped", impl.plugin_name, hook, exc_info=exc)
            if configured is not None and impl.plugin_name in configured:
                configured.remove(impl.plugin_name)
                _unconfigure(pm, kwargs["config"], [impl.plugin_name])
            pm.unregister(name=impl.plugin_name)
            continue
        if collect is not None:
            collect.extend(items)
        succeeded.append(impl.plugin_name)
    return succeeded


def _collector(items: list[Any]) -> Callable[..., None]:
    """``register(x)`` collects x; ``register(a, b, ...)`` — commands, doctor checks — collects the tuple."""

    def register(*item: Any) -> None:
        items.append(item[0] if len(item) == 1 else item)

    return register


def _unconfigure(pm: pluggy.PluginManager, config: Config, configured: list[str]) -> None:
    for impl in reversed(pm.hook.agentaccel_unconfigure.get_hookimpls()):
        if impl.plugin_name not in configured:
            continue
        try:
            impl.function(*(config for _ in impl.argnames))
        except Exception as exc:
            log.error("agentaccel plugin %r failed in agentaccel_unconfigure", impl.plugin_name, exc_info=exc)


def disable() -> None:
    """Undo everything ``enable()`` did: restore every patched attribute, release plugin resources. Calls already
    running finish through the pipeline they started in; new calls go straight to the original."""
    global _current, _arguments
    with _lock:
        rt, _current, _arguments = _current, None, None
        if rt is None:
            return
        for adapter in reversed(rt.adapters):
            adapter.uninstrument()
        _unconfigure(rt.pm, rt.config, [impl.plugin_name for impl in
                                        rt.pm.hook.agentaccel_configure.get_hookimpls()])


def check_options(overrides: Mapping[str, Any]) -> None:
    rt = _current
    if rt is not None:
        rt.spec.check_options(overrides)


class _Observe(Middleware):
    """Calls ``agentaccel_call_finished`` implementations; present only when some plugin implements it."""

    name = "observe"
    before = ("tracing",)

    def __init__(self, impls: list[pluggy.HookImpl]) -> None:
        self.impls = impls

    def flow(self, call: Call) -> Finish:
        return partial(self._finished, call, time.perf_counter())

    def _finished(self, call: Call, start: float, outcome: Outcome) -> None:
        values = {"call": call, "outcome": outcome, "duration_s": time.perf_counter() - start}
        for impl in self.impls:
            try:
                impl.function(*(values[name] for name in impl.argnames))
            except Exception as exc:
                isolate(f"{impl.plugin_name}.agentaccel_call_finished", exc)


# --- the hot path -------------------------------------------------------------------------------------------------


def interceptor(target: Target) -> Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]:
    """A wrapt-style wrapper ``(wrapped, instance, args, kwargs)`` running calls of ``target`` through the
    pipeline, or straight through when agentaccel is disabled or an enclosing frame already owns the call."""
    mode = target.mode
    driver = {Mode.SYNC: run_sync, Mode.ASYNC: run_async, Mode.SYNC_STREAM: run_sync_stream,
              Mode.ASYNC_STREAM: run_async_stream}[mode]

    def intercept(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        rt = _current
        if rt is None or (_ACTIVE.get() is not None and owned_by_outer(target, instance)):
            return wrapped(*args, **kwargs)
        chain = rt._chains.get(target)
        if chain is None:
            chain = rt.chain(target)
        if not chain:
            return wrapped(*args, **kwargs)
        return driver(chain, Call(target, instance, args, kwargs), wrapped)

    return intercept


def reenable() -> None:
    """Rebuild the runtime with the arguments of the last ``enable()`` (after plugins were added or removed)."""
    with _lock:
        if _current is None or _arguments is None:
            return
        tracer, meter, sections = _arguments
        disable()
        enable(tracer_provider=tracer, meter_provider=meter, **sections)
