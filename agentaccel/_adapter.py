"""The adapter contract (OpenTelemetry's instrumentor shape): declared framework version ranges, idempotent
``instrument()``/``uninstrument()``, patches applied when the framework module is imported (or at once if it
already is), and ``uninstrument()`` putting back exactly the objects it found."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import sys
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

    ``select(instance, args, kwargs) -> Target | None`` (with ``target``) picks the target per call: another
    target of the same mode (a graph that is an agent), or None to call straight through (a model call that a
    deeper patch handles better). ``overrides=True`` patches, instead of the class itself, every subclass that
    defines the attribute in its own ``__dict__`` — those that exist and those created later — for methods every
    subclass implements (an abstract ``embed_query``) or may override (``_stream``). ``rebind=True``, for a
    module-level function, also replaces it where modules imported before ``enable()`` hold it under the same name
    (a package's re-export, a ``from module import function``), so that the order of imports does not matter.
    Whatever the patch, ``uninstrument()`` puts the original back wherever a module holds agentaccel's wrapper of
    a module-level function, including the copies that ``from module import function`` made after ``enable()``.
    """

    module: str
    qualname: str
    target: Target | None = None
    wrapper: WrapperFn | None = None
    select: Callable[[Any, tuple[Any, ...], dict[str, Any]], Target | None] | None = None
    overrides: bool = False
    rebind: bool = False

    def __post_init__(self) -> None:
        if (self.target is None) == (self.wrapper is None):
            raise ValueError(f"Patch({self.module}.{self.qualname}) needs exactly one of target= and wrapper=")
        if self.select is not None and self.target is None:
            raise ValueError(f"Patch({self.module}.{self.qualname}): select= needs a target= (its default and mode)")


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
            functions = [a for a in self._applied if isinstance(a.owner, types.ModuleType)]
            for applied in reversed(self._applied):
                current = vars(applied.owner).get(applied.attribute)
                if current is applied.wrapper and applied.original is _MISSING:
                    delattr(applied.owner, applied.attribute)  # it was inherited: inherit it again
                elif current is applied.wrapper:
                    setattr(applied.owner, applied.attribute, applied.original)
                else:
                    log.warning("agentaccel adapter %r cannot restore %s.%s: something else replaced it after "
                                "agentaccel; it stays, and agentaccel's wrapper inside it passes calls through",
                                self.name, _owner_name(applied.owner), applied.attribute)
            # Copies of a function's wrapper that imports made after enable() (a package's re-export of it):
            # nobody recorded them, and LangChain must be left exactly as it was.
            for applied in functions:
                for module in _modules_holding(applied.wrapper, applied.attribute):
                    setattr(module, applied.attribute, applied.original)
            self._applied.clear()
            forget(self._module_imported)

    def _module_imported(self, module: types.ModuleType) -> None:
        from agentaccel._runtime import interceptor  # late: _runtime imports this module

        with self._lock:
            if not self._active:
                return
            for patch in self.patches():
                if patch.module == module.__name__:
                    try:
                        self._apply(module, patch, interceptor)
                    except Exception as exc:  # e.g. a lazy attribute whose optional dependency is missing: this
                        # runs inside the user's `import`, which must not fail because of a patch
                        self._problem(f"{patch.module}.{patch.qualname} could not be patched: "
                                      f"{type(exc).__name__}: {exc}")

    def _apply(self, module: types.ModuleType, patch: Patch, interceptor: Callable[[Target], WrapperFn]) -> None:
        owner_path, _, attribute = patch.qualname.rpartition(".")
        try:
            owner = _resolve(module, owner_path)
            if not patch.overrides:
                vars(owner)[attribute]
        except (AttributeError, KeyError, TypeError):
            self._problem(f"{patch.module}.{patch.qualname} not found; the framework changed its layout")
            return
        wrapper_fn = _wrapper_fn(patch, interceptor)
        if not patch.overrides:
            self._replace(owner, attribute, patch, wrapper_fn)
            return
        if not isinstance(owner, type):
            self._problem(f"{patch.module}.{patch.qualname}: overrides=True needs a class")
            return
        for cls in _subclasses(owner):
            if attribute in vars(cls):
                self._replace(cls, attribute, patch, wrapper_fn)
        self._watch_subclasses(owner, attribute, patch, wrapper_fn)

    def _replace(self, owner: Any, attribute: str, patch: Patch, wrapper_fn: WrapperFn) -> None:
        original = vars(owner)[attribute]
        wrapper = wrap_callable(original, wrapper_fn, method=not isinstance(owner, types.ModuleType),
                                closure=patch.target is None or patch.target.mode is Mode.SYNC)
        try:
            setattr(owner, attribute, wrapper)
        except (AttributeError, TypeError) as exc:  # a built-in or frozen type
            self._problem(f"{patch.module}.{patch.qualname} cannot be replaced: {exc}")
            return
        self._applied.append(_Applied(owner, attribute, original, wrapper))
        if patch.rebind and isinstance(owner, types.ModuleType):
            for module in _modules_holding(original, attribute):
                setattr(module, attribute, wrapper)
                self._applied.append(_Applied(module, attribute, original, wrapper))

    def _watch_subclasses(self, owner: type, attribute: str, patch: Patch, wrapper_fn: WrapperFn) -> None:
        """Patch ``attribute`` on the subclasses of ``owner`` created from now on, from an ``__init_subclass__``
        hook (the one moment every subclass passes through, whatever module defines it)."""
        previous = vars(owner).get("__init_subclass__", _MISSING)
        adapter = self
        base: Any = owner  # mypy cannot see that a `type` parameter is a type object for super()

        def __init_subclass__(cls: Any, /, **kwargs: Any) -> None:
            if previous is _MISSING:
                super(base, cls).__init_subclass__(**kwargs)
            else:
                previous.__get__(None, cls)(**kwargs)
            with adapter._lock:
                if adapter._active and attribute in vars(cls):
                    adapter._replace(cls, attribute, patch, wrapper_fn)

        hook: classmethod[Any, Any, None] = classmethod(__init_subclass__)
        owner.__init_subclass__ = hook  # type: ignore[assignment]
        self._applied.append(_Applied(owner, "__init_subclass__", previous, hook))

    def _problem(self, problem: str) -> None:
        self.problems.append(problem)
        log.warning("agentaccel adapter %r skipped a patch: %s", self.name, problem)


_MISSING: Any = object()  # "the class had no attribute of its own": uninstrument() deletes the replacement


def _wrapper_fn(patch: Patch, interceptor: Callable[[Target], WrapperFn]) -> WrapperFn:
    if patch.target is None:
        assert patch.wrapper is not None  # Patch.__post_init__ demands one of the two
        return patch.wrapper
    default = interceptor(patch.target)
    select = patch.select
    if select is None:
        return default
    chosen: dict[Target, WrapperFn] = {patch.target: default}

    def selecting(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            target = select(instance, args, kwargs)
        except Exception as exc:  # the adapter's bug: the call goes on with the patch's own target
            from agentaccel._pipeline import isolate

            isolate(f"select() of {patch.module}.{patch.qualname}", exc)
            target = patch.target
        if target is None:
            return wrapped(*args, **kwargs)
        intercept = chosen.get(target)
        if intercept is None:
            intercept = chosen[target] = interceptor(target)
        return intercept(wrapped, instance, args, kwargs)

    return selecting


def _subclasses(owner: type) -> list[type]:
    found: list[type] = []
    pending: list[type] = list(type.__subclasses__(owner))
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(type.__subclasses__(cls))
    return found


def _modules_holding(value: Any, attribute: str) -> list[types.ModuleType]:
    """The imported modules whose ``attribute`` is ``value`` itself."""
    return [module for module in list(sys.modules.values())
            if isinstance(module, types.ModuleType) and getattr(module, "__dict__", {}).get(attribute) is value]


def _resolve(module: types.ModuleType, path: str) -> Any:
    owner: Any = module
    for part in filter(None, path.split(".")):
        owner = getattr(owner, part)
    return owner


def _owner_name(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


