"""The hooks a plugin can implement. Each runs at configuration time, never per call: hooks hand agentaccel
objects (config sections, middleware, adapters, commands) and the pipeline built from them runs as plain calls.

Implement a hook with ``@agentaccel.hookimpl`` on a function or method of the same name; an implementation may
accept fewer arguments than the spec, so new arguments can be added without breaking plugins. Publish the module
under the entry-point group ``agentaccel`` and it is found with no code change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from agentaccel._adapter import Adapter
    from agentaccel._call import Call, Outcome
    from agentaccel._config import Config, ConfigSpec
    from agentaccel._pipeline import Middleware

hookspec = pluggy.HookspecMarker("agentaccel")

# --- configuration --------------------------------------------------------------------------------------------------


@hookspec
def agentaccel_add_config(spec: ConfigSpec) -> None:
    """Declare this plugin's config section and the per-call options it reads.

    :param spec: ``spec.add_section(name, dataclass)`` declares ``[tool.agentaccel.<name>]`` (and the
        ``AGENTACCEL_<NAME>__<KEY>`` variables, and ``enable(<name>={...})``); ``spec.add_option(name, type, help)``
        declares a key accepted by ``agentaccel.options(...)``.

    Called once per ``enable()``, before the configuration is read. Example::

        @dataclass
        class AuditConfig:
            path: str = "audit.log"

        @hookimpl
        def agentaccel_add_config(spec):
            spec.add_section("audit", AuditConfig)
            spec.add_option("audit", bool, "False skips the audit log for these calls")
    """


@hookspec
def agentaccel_configure(config: Config) -> None:
    """Set up with the resolved configuration (open clients, start threads).

    :param config: ``config.section("audit")`` is the plugin's dataclass instance; ``config.extra`` holds the
        non-section arguments given to ``enable()`` (``tracer_provider``, ``meter_provider``).

    Called once per ``enable()`` after all sections are validated, in plugin registration order. Raise
    :class:`agentaccel.ConfigError` for a setting that cannot work; enable() then undoes what it did and re-raises.
    """


@hookspec
def agentaccel_unconfigure(config: Config) -> None:
    """Release what :func:`agentaccel_configure` acquired; called only for plugins whose ``agentaccel_configure``
    ran. Called by ``disable()`` in reverse order; exceptions are logged and the others still run."""


# --- the pipeline ---------------------------------------------------------------------------------------------------


@hookspec
def agentaccel_register_middleware(register: Callable[[Middleware], None], config: Config) -> None:
    """Contribute middleware to the call pipeline.

    :param register: call it with a :class:`agentaccel.Middleware` instance; its ``before``/``after`` names place it.
    :param config: the resolved configuration.

    Called once per ``enable()``; the pipeline is composed from everything registered and does not change until
    the next ``enable()``. Example::

        class Audit(agentaccel.Middleware):
            name = "audit"
            after = ("tracing",)

            def flow(self, call):
                outcome = yield agentaccel.PROCEED
                log.info("%s %s ok=%s", call.operation, call.name, outcome.error is None)

        @hookimpl
        def agentaccel_register_middleware(register):
            register(Audit())
    """


@hookspec
def agentaccel_register_adapters(register: Callable[[Adapter], None], config: Config) -> None:
    """Contribute framework adapters (:class:`agentaccel.Adapter` instances).

    Called once per ``enable()``; each adapter is instrumented right away (its patches apply when the framework
    module is imported, or at once if it already is) and uninstrumented by ``disable()``.
    """


@hookspec
def agentaccel_call_finished(call: Call, outcome: Outcome, duration_s: float) -> None:
    """Observe every finished call (after its span ended).

    :param call: the call; ``call.attributes`` holds what middleware annotated.
    :param outcome: ``outcome.value`` or ``outcome.error``; for streams ``outcome.completed`` and ``chunks``.
    :param duration_s: wall time the caller waited, streams included.

    Runs on the caller's thread for every call, so keep it cheap; when no plugin implements it, it costs nothing.
    An exception is logged once and counted, and never reaches the caller.
    """


# --- command line ---------------------------------------------------------------------------------------------------


@hookspec
def agentaccel_register_commands(
    register: Callable[[str, str, Callable[[argparse.ArgumentParser], None], Callable[[Any], int]], None],
) -> None:
    """Add ``agentaccel <name>`` subcommands.

    :param register: ``register(name, help, add_arguments, run)``: ``add_arguments(parser)`` declares the
        arguments, ``run(args) -> int`` runs the command and returns the exit code.

    Example::

        @hookimpl
        def agentaccel_register_commands(register):
            register("audit", "show the audit log", lambda p: p.add_argument("--tail", type=int), show_audit)
    """


@hookspec
def agentaccel_doctor(register: Callable[[str, Callable[[], tuple[bool, str]]], None], config: Config) -> None:
    """Add checks to ``agentaccel doctor``.

    :param register: ``register(title, check)``: ``check() -> (ok, message)``; an exception counts as a failure
        and its text is shown.

    String settings holding a ``redis://`` or ``rediss://`` URL are checked for reachability by the core, so a
    plugin only adds checks of its own.
    """
