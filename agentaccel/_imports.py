"""Post-import hooks: run a callback when a module is imported, or at once if it already is.

Adapters patch a framework when its module loads, so ``enable()`` may come before ``import langchain_core``.
wrapt has this too, but importing wrapt pulls in asyncio (~30 ms of start-up) and its hooks cannot be removed;
this finder is small, and a hook is one entry in a dict.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

Hook = Callable[[types.ModuleType], None]

_hooks: dict[str, list[Hook]] = {}
_lock = threading.RLock()
_resolving = threading.local()


def when_imported(name: str, hook: Hook) -> None:
    """Call ``hook(module)`` after module ``name`` is executed — now, if it already was."""
    with _lock:
        _hooks.setdefault(name, []).append(hook)
        if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    module = sys.modules.get(name)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
        hook(module)


def forget(hook: Hook) -> None:
    """Remove ``hook`` from every module it was registered for."""
    with _lock:
        for hooks in _hooks.values():
            while hook in hooks:
                hooks.remove(hook)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        busy: set[str] = _resolving.__dict__.setdefault("names", set())
        if fullname not in _hooks or fullname in busy:
            return None
        busy.add(fullname)
        try:  # ask the rest of sys.meta_path; this finder answers None for the name while it does
            spec = importlib.util.find_spec(fullname)
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader(importlib.abc.Loader):
    """Runs the real loader, puts it back where introspection looks for it, then calls the hooks."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        with _lock:
            hooks = list(_hooks.get(module.__name__, ()))
        for hook in hooks:
            hook(module)
