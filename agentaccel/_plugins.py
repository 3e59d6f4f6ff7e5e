"""Finding plugins: the built-in ones in :data:`DEFAULT_PLUGINS`, the entry points of group ``agentaccel``, and
those registered in code. Built-ins are registered exactly like a stranger's plugin; entry points are read and
imported once per process, on the first ``enable()``."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from agentaccel import hookspecs
from agentaccel._config import _closest

log = logging.getLogger("agentaccel")

hookimpl = pluggy.HookimplMarker("agentaccel")

#: Built-in plugins: (name, module). Deny-listable like any other by ``AGENTACCEL_DISABLE_PLUGINS``.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("tracing", "agentaccel.builtin.tracing"),
    ("threads", "agentaccel.builtin.threads"),
    ("http", "agentaccel.builtin.http"),
)


@dataclasses.dataclass
class PluginInfo:
    """One plugin as ``agentaccel plugins`` shows it."""

    name: str
    origin: str  # "built-in", "<distribution> <version>" or "registered in code"
    status: str  # "enabled", "disabled", "failed"
    reason: str = ""
    plugin: Any = None


_entry_points: list[importlib.metadata.EntryPoint] | None = None
_imported: dict[str, PluginInfo] = {}
_in_code: dict[str, Any] = {}
_unregistered: set[str] = set()  # listed as disabled, so their config sections are ignored like a deny-listed one's


def _names(var: str) -> set[str] | None:
    text = os.environ.get(var)
    if text is None:
        return None
    return {part.strip() for part in text.split(",") if part.strip()}


def _import(name: str, origin: str, load: Callable[[], Any]) -> PluginInfo:
    """Import a plugin module once; an import failure is remembered with its reason and never retried. Each
    call returns a fresh record, so a failure in one enable()'s hooks does not stick to the next."""
    info = _imported.get(name)
    if info is None:
        try:
            info = PluginInfo(name, origin, "enabled", plugin=load())
        except Exception as exc:
            info = PluginInfo(name, origin, "failed", reason=f"import failed: {type(exc).__name__}: {exc}")
            log.warning("agentaccel plugin %r (%s) failed to load and is skipped: %s", name, origin, info.reason)
        _imported[name] = info
    return dataclasses.replace(info)


def discover() -> list[PluginInfo]:
    """Every plugin with its status under the current allow/deny lists; imports what is enabled."""
    global _entry_points
    deny = _names("AGENTACCEL_DISABLE_PLUGINS") or set()
    allow = _names("AGENTACCEL_PLUGINS")
    found: list[PluginInfo] = []
    for name, module in DEFAULT_PLUGINS:
        if name in deny:
            found.append(PluginInfo(name, "built-in", "disabled", "in AGENTACCEL_DISABLE_PLUGINS"))
        else:
            found.append(_import(name, "built-in", lambda m=module: importlib.import_module(m)))  # type: ignore[misc]
    if _entry_points is None:
        _entry_points = sorted(importlib.metadata.entry_points(group="agentaccel"), key=lambda ep: ep.name)
    for ep in _entry_points:
        origin = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else ep.value
        if ep.name in deny:
            found.append(PluginInfo(ep.name, origin, "disabled", "in AGENTACCEL_DISABLE_PLUGINS"))
        elif allow is not None and ep.name not in allow:
            found.append(PluginInfo(ep.name, origin, "disabled", "not in AGENTACCEL_PLUGINS"))
        else:
            found.append(_import(ep.name, origin, ep.load))
    for name, plugin in _in_code.items():
        status = "disabled" if name in deny else "enabled"
        found.append(PluginInfo(name, "registered in code", status, plugin=plugin))
    found.extend(PluginInfo(name, "registered in code", "disabled", "unregistered") for name in sorted(_unregistered))
    _warn_unknown(found, {"AGENTACCEL_PLUGINS": allow or set(), "AGENTACCEL_DISABLE_PLUGINS": deny})
    return found


_warned: set[tuple[str, str]] = set()


def _warn_unknown(found: list[PluginInfo], lists: dict[str, set[str]]) -> None:
    """Say so (once per name) when an allow or deny list names no plugin there is: a typo in it would otherwise
    leave a plugin on that was meant to be off, or off that was meant to be on, without a word. A warning, not an
    error: one setting is often shared by services that do not all have every plugin installed."""
    known = {info.name: info for info in found}
    for var, names in lists.items():
        for name in sorted(names - known.keys()):
            if (var, name) not in _warned:
                _warned.add((var, name))
                log.warning("agentaccel: %s names %r, which is no plugin here%s; plugins: %s", var, name,
                            _closest(name, known), ", ".join(sorted(known)))


def build_manager(infos: Iterable[PluginInfo]) -> pluggy.PluginManager:
    """A fresh manager with every enabled plugin; one whose hooks break the contract is marked failed."""
    pm = pluggy.PluginManager("agentaccel")
    pm.add_hookspecs(hookspecs)
    specs = {name for name in dir(hookspecs) if name.startswith("agentaccel_")}
    for info in infos:
        if info.status != "enabled":
            continue
        try:
            pm.register(info.plugin, name=info.name)
            unknown = [impl for impl in _hook_names(info.plugin) if impl not in specs]
            if unknown:
                raise pluggy.PluginValidationError(info.plugin, f"unknown hook(s) {', '.join(unknown)}; the hooks "
                                                   "are listed in agentaccel.hookspecs")
        except (pluggy.PluginValidationError, ValueError) as exc:
            if pm.is_registered(info.plugin):
                pm.unregister(info.plugin)
            info.status, info.reason = "failed", f"invalid: {exc}"
            log.warning("agentaccel plugin %r is skipped: %s", info.name, info.reason)
    return pm


def _hook_names(plugin: Any) -> list[str]:
    return [name for name in dir(plugin) if name.startswith("agentaccel_")]


def register_in_code(plugin: Any, name: str) -> None:
    if name in _in_code or any(n == name for n, _ in DEFAULT_PLUGINS):
        raise ValueError(f"a plugin named {name!r} is already registered; unregister it first")
    _in_code[name] = plugin
    _unregistered.discard(name)


def unregister_in_code(name: str) -> None:
    if _in_code.pop(name, None) is None:
        raise ValueError(f"no plugin named {name!r} was registered in code")
    _unregistered.add(name)

