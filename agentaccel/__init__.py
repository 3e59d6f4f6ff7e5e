"""agentaccel: caching, limits, pooling and OpenTelemetry spans around the LLM, tool, agent and workflow calls
of the agent frameworks you already use.

    import agentaccel
    agentaccel.enable()
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import Any

from agentaccel._accelerate import accelerate, wrap
from agentaccel._adapter import Adapter, Patch
from agentaccel._breaker import CircuitBreaker
from agentaccel._call import (
    CHAT,
    EMBEDDINGS,
    EXECUTE_TOOL,
    INVOKE_AGENT,
    INVOKE_WORKFLOW,
    JSON_CODEC,
    OPERATIONS,
    TEXT_COMPLETION,
    Call,
    Codec,
    CodecError,
    Mode,
    Outcome,
    StreamOutcome,
    Target,
)
from agentaccel._config import Config, ConfigSpec
from agentaccel._context import current_options, current_scope, options, scope
from agentaccel._errors import AgentAccelError, ConfigError, PluginError
from agentaccel._pipeline import PROCEED, Io, Middleware, Proceed, Return, plugin_failures
from agentaccel._plugins import hookimpl
from agentaccel._runtime import Runtime, disable, enable, load_config, runtime

#: Names the standard plugins provide under ``agentaccel.``, imported on first use so the core does not depend on
#: them: name -> (module, distribution).
_FROM_PLUGINS = {
    "map": ("agentaccel_limit", "agentaccel-limit"),
    "amap": ("agentaccel_limit", "agentaccel-limit"),
    "LimitExceeded": ("agentaccel_limit", "agentaccel-limit"),
}


def __getattr__(name: str) -> Any:
    if name not in _FROM_PLUGINS:
        raise AttributeError(f"module 'agentaccel' has no attribute {name!r}")
    module, distribution = _FROM_PLUGINS[name]
    try:
        imported = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"agentaccel.{name} needs the {distribution} plugin: pip install {distribution}") from None
    return getattr(imported, name)


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object (module or instance with ``@hookimpl`` methods) from code; it is used from the
    next ``enable()`` on, and at once if agentaccel is already enabled (it is re-enabled with the same
    arguments)."""
    from agentaccel import _plugins, _runtime

    _plugins.register_in_code(plugin, name)
    _runtime.reenable()


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`; re-enables at once if agentaccel is enabled."""
    from agentaccel import _plugins, _runtime

    _plugins.unregister_in_code(name)
    _runtime.reenable()


__all__ = [
    "CHAT",
    "EMBEDDINGS",
    "EXECUTE_TOOL",
    "INVOKE_AGENT",
    "INVOKE_WORKFLOW",
    "JSON_CODEC",
    "OPERATIONS",
    "PROCEED",
    "TEXT_COMPLETION",
    "Adapter",
    "AgentAccelError",
    "Call",
    "CircuitBreaker",
    "Codec",
    "CodecError",
    "Config",
    "ConfigError",
    "ConfigSpec",
    "Io",
    "Middleware",
    "Mode",
    "Outcome",
    "Patch",
    "PluginError",
    "Proceed",
    "Return",
    "Runtime",
    "StreamOutcome",
    "Target",
    "__version__",
    "accelerate",
    "current_options",
    "current_scope",
    "disable",
    "enable",
    "hookimpl",
    "load_config",
    "options",
    "plugin_failures",
    "register_plugin",
    "runtime",
    "scope",
    "unregister_plugin",
    "wrap",
]
