"""What ``agentaccel plugins`` shows: plugins, the composed pipeline, adapters and their state, the agent
frameworks installed in this environment, and plugin failures counted so far."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from agentaccel._errors import ConfigError

#: Agent framework distributions and the adapter distribution that covers each.
FRAMEWORKS = {
    "langchain-core": "agentaccel-langchain",
    "langgraph": "agentaccel-langchain",
    "llama-index-core": "agentaccel-llamaindex",
    "openai-agents": "agentaccel-openai-agents",
    "crewai": "agentaccel-crewai",
    "autogen-agentchat": "agentaccel-autogen",
    "smolagents": "agentaccel-smolagents",
    "pydantic-ai-slim": "agentaccel-pydantic-ai",
    "haystack-ai": "agentaccel-haystack",
    "dspy": "agentaccel-dspy",
    "agentmap": "agentaccel-agentmap",
}


def plugins_report() -> dict[str, Any]:
    """The report for the runtime in force, or for a throwaway ``enable()`` when agentaccel is not enabled."""
    import agentaccel
    from agentaccel._pipeline import plugin_failures

    rt = agentaccel.runtime()
    temporary = rt is None
    error = None
    if temporary:
        try:
            rt = agentaccel.enable()
        except ConfigError as exc:
            error = str(exc)
    try:
        report: dict[str, Any] = {"config_error": error, "failures": plugin_failures()}
        from agentaccel._plugins import discover

        report["plugins"] = [{"name": i.name, "origin": i.origin, "status": i.status, "reason": i.reason}
                             for i in (rt.plugins if rt is not None else discover())]
        report["middleware"] = [mw.name for mw in rt.middleware] if rt is not None else []
        report["adapters"] = [{
            "name": a.name,
            "requires": list(a.requires),
            "installed": a.versions(),
            "state": "instrumented" if a.instrumented else "inactive",
            "problems": list(a.problems),
            "patched": a.patched(),
        } for a in (rt.adapters if rt is not None else [])]
        report["frameworks"] = _frameworks()
    finally:
        if temporary and rt is not None:
            agentaccel.disable()
    return report


def _frameworks() -> list[dict[str, Any]]:
    found = []
    for distribution, adapter in FRAMEWORKS.items():
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        try:
            importlib.metadata.version(adapter)
            has_adapter = True
        except importlib.metadata.PackageNotFoundError:
            has_adapter = False
        found.append({"distribution": distribution, "version": version, "adapter": adapter,
                      "adapter_installed": has_adapter})
    return found


def format_report(report: dict[str, Any]) -> str:
    lines = []
    if report["config_error"]:
        lines += ["configuration error (nothing was enabled):", f"  {report['config_error']}", ""]
    lines.append("plugins:")
    for p in report["plugins"]:
        why = f"  ({p['reason']})" if p["reason"] else ""
        lines.append(f"  {p['name']:<16} {p['status']:<9} {p['origin']}{why}")
    lines.append("pipeline (outermost first): " + (" -> ".join(report["middleware"]) or "empty"))
    lines.append("adapters:")
    for a in report["adapters"]:
        state = a["state"] if not a["problems"] else "inactive: " + "; ".join(a["problems"])
        lines.append(f"  {a['name']:<16} {state}")
        if a["patched"]:
            lines.append(f"  {'':<16} patched now: {', '.join(a['patched'])}")
        elif a["state"] == "instrumented":
            lines.append(f"  {'':<16} patches apply when {', '.join(a['requires']) or 'its modules'} is imported")
    lines.append("agent frameworks installed:")
    if not report["frameworks"]:
        lines.append("  none detected")
    for f in report["frameworks"]:
        hint = "adapter installed" if f["adapter_installed"] else f"no adapter: pip install {f['adapter']}"
        lines.append(f"  {f['distribution']} {f['version']}: {hint}")
    if report["failures"]:
        lines.append("plugin failures so far: " + ", ".join(f"{k}={v}" for k, v in report["failures"].items()))
    return "\n".join(lines)
