"""Per-call scope and options, carried by contextvars so they follow asyncio tasks and (with the threads plugin)
worker threads."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_SCOPE: ContextVar[Mapping[str, str]] = ContextVar("agentaccel_scope", default=_EMPTY)
_OPTIONS: ContextVar[Mapping[str, Any]] = ContextVar("agentaccel_options", default=_EMPTY)


def current_scope() -> Mapping[str, str]:
    """The scope in force: read-only, merged from every enclosing :func:`scope`."""
    return _SCOPE.get()


def current_options() -> Mapping[str, Any]:
    """The per-call options in force: read-only, merged from every enclosing :func:`options`."""
    return _OPTIONS.get()


@contextmanager
def scope(**labels: str) -> Iterator[Mapping[str, str]]:
    """Partition caches and tag spans for everything called inside, e.g. ``scope(tenant="acme", user="u1")``.

    Nested scopes merge, the inner one winning on equal keys. Values must be strings because they become cache
    key material and span attributes; anything else is a programming error reported at once.
    """
    for key, value in labels.items():
        if not isinstance(value, str):
            raise TypeError(f"agentaccel.scope({key}=...) takes a str, got {type(value).__name__}: {value!r}")
    merged = MappingProxyType({**_SCOPE.get(), **labels})
    token = _SCOPE.set(merged)
    try:
        yield merged
    finally:
        _SCOPE.reset(token)


@contextmanager
def options(**overrides: Any) -> Iterator[Mapping[str, Any]]:
    """Override what middleware does for the calls made inside, e.g. ``options(cache=False)``.

    Each plugin documents the options it reads. Names no installed plugin declares are rejected when agentaccel
    is enabled, so a typo does not silently do nothing.
    """
    from agentaccel._runtime import check_options  # late: options() must work before enable()

    check_options(overrides)
    merged = MappingProxyType({**_OPTIONS.get(), **overrides})
    token = _OPTIONS.set(merged)
    try:
        yield merged
    finally:
        _OPTIONS.reset(token)
