"""Validated runtime settings and scripted answers for the mock LLM server."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict


class MockLLMSettings(TypedDict, total=False):
    """Keyword arguments accepted by ``configure()`` (and the constructors, besides host/port)."""

    latency: float
    max_concurrency: int | None
    rpm: int | None
    retry_after: float
    script: Sequence[Mapping[str, Any]] | None
    stream_chunk_delay: float
    embedding_dims: int
    chunk_words: int


SETTING_NAMES: frozenset[str] = frozenset(MockLLMSettings.__annotations__)

_RULE_KEYS = frozenset({"match", "response", "status", "error", "times", "latency"})


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    arguments: str  # JSON text, exactly as it will be sent


@dataclass(frozen=True)
class ScriptRule:
    match: str
    content: str | None
    tool_calls: tuple[ToolCallSpec, ...]
    status: int
    error: str | None
    times: int | None
    latency: float | None


@dataclass(eq=False)
class Script:
    """Ordered rules; the first rule whose ``match`` occurs in the last user message wins.

    A rule with ``times`` stops matching after that many hits, which lets a test script
    "fail twice, then succeed". Tool-call rules are skipped once tool results follow the
    last user message, otherwise an agent loop would be told to call the tool forever.
    """

    rules: tuple[ScriptRule, ...]
    _hits: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._hits = [0] * len(self.rules)

    def select(self, last_user: str, has_tool_results: bool) -> ScriptRule | None:
        with self._lock:
            for index, rule in enumerate(self.rules):
                if rule.match not in last_user:
                    continue
                if rule.tool_calls and has_tool_results:
                    continue
                if rule.times is not None and self._hits[index] >= rule.times:
                    continue
                self._hits[index] += 1
                return rule
        return None

    def reset(self) -> None:
        with self._lock:
            self._hits = [0] * len(self.rules)

    def to_json(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for rule in self.rules:
            item: dict[str, Any] = {"match": rule.match, "status": rule.status}
            if rule.tool_calls:
                calls = [{"name": c.name, "arguments": _json_or_text(c.arguments)} for c in rule.tool_calls]
                item["response"] = {"tool_calls": calls}
            elif rule.content is not None:
                item["response"] = {"content": rule.content}
            for key in ("error", "times", "latency"):
                if getattr(rule, key) is not None:
                    item[key] = getattr(rule, key)
            out.append(item)
        return out


def parse_script(raw: object) -> Script:
    """Validate a script given as JSON-like data; raises ValueError naming the bad rule."""
    if isinstance(raw, Mapping) and "rules" in raw:
        raw = raw["rules"]
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise ValueError("script must be a list of rules")
    return Script(tuple(_parse_rule(i, rule) for i, rule in enumerate(raw)))


def load_script(path: str | Path) -> Script:
    with open(path, encoding="utf-8") as fh:
        return parse_script(json.load(fh))


def _parse_rule(index: int, raw: object) -> ScriptRule:
    where = f"script rule {index}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be an object")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    match = raw.get("match", "")
    if not isinstance(match, str):
        raise ValueError(f"{where}: match must be a string")
    status = raw.get("status", 200)
    if not _is_int(status) or not 200 <= status <= 599:
        raise ValueError(f"{where}: status must be an HTTP status code")
    content: str | None = None
    calls: tuple[ToolCallSpec, ...] = ()
    response = raw.get("response")
    if response is not None:
        if not isinstance(response, Mapping) or not ({"content", "tool_calls"} & set(response)):
            raise ValueError(f"{where}: response must be {{'content': ...}} or {{'tool_calls': [...]}}")
        if "tool_calls" in response:
            calls = _parse_calls(where, response["tool_calls"])
        else:
            if not isinstance(response["content"], str):
                raise ValueError(f"{where}: response content must be a string")
            content = response["content"]
    elif status == 200:
        raise ValueError(f"{where} needs a response or an error status")
    error = raw.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"{where}: error must be a string message")
    times = raw.get("times")
    if times is not None and (not _is_int(times) or times < 1):
        raise ValueError(f"{where}: times must be a positive integer")
    latency = raw.get("latency")
    if latency is not None:
        latency = _seconds(f"{where}: latency", latency)
    return ScriptRule(match, content, calls, status, error, times, latency)


def _parse_calls(where: str, raw: object) -> tuple[ToolCallSpec, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise ValueError(f"{where}: tool_calls must be a non-empty list")
    calls: list[ToolCallSpec] = []
    for call in raw:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError(f"{where}: each tool call needs a string name")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCallSpec(call["name"], arguments))
    return tuple(calls)


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `true` as a count is always a mistake in a config.
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_port(port: object) -> int:
    """A TCP port to bind, checked up front: socket.bind() would raise OverflowError, not an OSError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535 (0 picks a free one), got {port!r}")
    return port


def _positive_int(name: str, value: object, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class Config:
    """Immutable snapshot; a request reads one snapshot so a concurrent configure() never tears it."""

    latency: float = 0.0
    max_concurrency: int | None = None
    rpm: int | None = None
    retry_after: float = 1.0
    script: Script | None = None
    stream_chunk_delay: float = 0.0
    embedding_dims: int = 16
    chunk_words: int = 1

    def updated(self, changes: Mapping[str, object]) -> Config:
        unknown = set(changes) - SETTING_NAMES
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; allowed: {sorted(SETTING_NAMES)}")
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("latency", "retry_after", "stream_chunk_delay"):
                values[name] = _seconds(name, value)
            elif name in ("max_concurrency", "rpm"):
                values[name] = _positive_int(name, value, optional=True)
            elif name in ("embedding_dims", "chunk_words"):
                values[name] = _positive_int(name, value, optional=False)
            elif name == "script":
                values[name] = None if value is None or isinstance(value, Script) else parse_script(value)
        return replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "max_concurrency": self.max_concurrency,
            "rpm": self.rpm,
            "retry_after": self.retry_after,
            "script": self.script.to_json() if self.script is not None else None,
            "stream_chunk_delay": self.stream_chunk_delay,
            "embedding_dims": self.embedding_dims,
            "chunk_words": self.chunk_words,
        }
