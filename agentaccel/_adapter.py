"""The adapter contract (OpenTelemetry's instrumentor shape): declared framework version ranges, idempotent
``instrument()``/``uninstrument()``, patches applied when the framework module is imported (or at once if it
already is), and ``uninstrument()`` putting back exactly the objects it found."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import threading
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from agentaccel._call import Mode, Target
from agentaccel._imports import forget, when_imported
from agentaccel._wrapping import WrapperFn, wrap_callable

if TYPE_CHECKING:
    from packaging.requirements import Requirement

log = logging.getLogger("agentaccel")

@dataclasses.dataclass(frozen=True)
class Patch:
    """Wrap ``module.qualname`` (``"Class.method"`` or ``"function"``) once the module is imported.

    Give ``target`` to run calls through the pipeline, or ``wrapper`` — a wrapt-style
    ``(wrapped, instance, args, kwargs)`` function — for anything else (e.g. carrying context into threads).
    Patch where one patch sees every call: a base-class method subclasses do not override.
    """

    module: str
    qualname: str
    target: Target | None = None
    wrapper: WrapperFn | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.wrapper is None):
            raise ValueError(f"Patch({self.module}.{self.qualname}) needs exactly one of target= and wrapper=")


@dataclasses.dataclass
class _Applied:
    owner: Any
    attribute: str
    original: Any
    wrapper: Any


class Adapter:
    """Base class for framework adapters. Subclasses set ``name`` and ``requires`` and return their
    :class:`Patch` list from :meth:`patches`."""

    name: str = ""
    #: Requirement strings of the supported framework versions, e.g. ``("langchain-core>=0.3,<2",)``.
    requires: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._active = False
        self._applied: list[_Applied] = []
        self.problems: list[str] = []

    def patches(self) -> Iterable[Patch]:
        return ()

    # --- state, as `agentaccel plugins` shows it ----------------------------------------------------------------

    def versions(self) -> dict[str, str | None]:
        """Installed version of each required distribution (None when not installed)."""
        found: dict[str, str | None] = {}
        for requirement in self._requirements():
            try:
                found[requirement.name] = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                found[requirement.name] = None
        return found

    def unsupported(self) -> list[str]:
        """Why this adapter cannot instrument what is installed: one line per missing or out-of-range package."""
        reasons = []
        for requirement in self._requirements():
            try:
                version = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                reasons.append(f"{requirement.name} is not installed")
                continue
            if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
                reasons.append(f"{requirement.name} {version} is installed; this adapter supports "
                               f"{requirement.name}{requirement.specifier}")
        return reasons

    @property
    def instrumented(self) -> bool:
        return self._active

    def patched(self) -> list[str]:
        """``module.qualname`` of each patch currently in place."""
        return [f"{_owner_name(a.owner)}.{a.attribute}" for a in self._applied]

    def _requirements(self) -> list[Requirement]:
        if not self.requires:
            return []
        from packaging.requirements import InvalidRequirement, Requirement  # late: ~35 ms to import

        try:
            return [Requirement(text) for text in self.requires]
        except InvalidRequirement as exc:
            raise ValueError(f"adapter {self.name!r} declares an invalid requirement: {exc}") from None

    # --- the contract -------------------------------------------------------------------------------------------

    def instrument(self) -> None:
        """Apply the patches now for imported modules and on import for the others. Idempotent. Does nothing
        (and says why in ``problems``) when a required framework is missing or out of range."""
        with self._lock:
            if self._active:
                return
            self.problems = self.unsupported()
            if self.problems:
                for problem in self.problems:
                    if "is not installed" not in problem:
                        log.warning("agentaccel adapter %r is not instrumenting: %s", self.name, problem)
                return
            self._active = True
            for module in dict.fromkeys(p.module for p in self.patches()):
                when_imported(module, self._module_imported)

    def uninstrument(self) -> None:
        """Put back exactly the objects that were replaced. Idempotent."""
        with self._lock:
            self._active = False
            for applied in reversed(self._applied):
                current = vars(applied.owner).get(applied.attribute)
                if current is applied.wrapper:
                    setattr(applied.owner, applied.attribute, applied.original)
                else:
                    log.warning("agentaccel adapter %r cannot restore %s.%s: something else replaced it after "
                                "agentaccel; it stays, and agentaccel's wrapper inside it passes calls through",
                                self.name, _owner_name(applied.owner), applied.attribute)
            self._applied.clear()
            forget(self._module_imported)

    def _module_imported(self, module: types.ModuleType) -> None:
        from agentaccel._runtime import interceptor  # late: _runtime imports this module

        with self._lock:
            if not self._active:
                return
            for patch in self.patches():
                if patch.module == module.__name__:
                    self._apply(module, patch, interceptor)

    def _apply(self, module: types.ModuleType, patch: Patch, interceptor: Callable[[Target], WrapperFn]) -> None:
        owner_path, _, attribute = patch.qualname.rpartition(".")
        try:
            owner = _resolve(module, owner_path)
            original = vars(owner)[attribute]
        except (AttributeError, KeyError, TypeError):
            self._problem(f"{patch.module}.{patch.qualname} not found; the framework changed its layout")
            return
        wrapper_fn = interceptor(patch.target) if patch.target is not None else patch.wrapper
        assert wrapper_fn is not None  # Patch.__post_init__ demands one of the two
        wrapper = wrap_callable(original, wrapper_fn, method=not isinstance(owner, types.ModuleType),
                                closure=patch.target is None or patch.target.mode is Mode.SYNC)
        try:
            setattr(owner, attribute, wrapper)
        except (AttributeError, TypeError) as exc:  # a built-in or frozen type
            self._problem(f"{patch.module}.{patch.qualname} cannot be replaced: {exc}")
            return
        self._applied.append(_Applied(owner, attribute, original, wrapper))

    def _problem(self, problem: str) -> None:
        self.problems.append(problem)
        log.warning("agentaccel adapter %r skipped a patch: %s", self.name, problem)


def _resolve(module: types.ModuleType, path: str) -> Any:
    owner: Any = module
    for part in filter(None, path.split(".")):
        owner = getattr(owner, part)
    return owner


def _owner_name(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


