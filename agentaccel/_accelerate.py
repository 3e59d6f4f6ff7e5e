"""``accelerate`` and ``wrap``: the adapter for plain Python functions, methods, generators and coroutines."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from agentaccel._call import EXECUTE_TOOL, JSON_CODEC, Call, Codec, Mode, Target
from agentaccel._runtime import interceptor
from agentaccel._wrapping import wrap_callable

F = TypeVar("F", bound=Callable[..., Any])


def _mode_of(fn: Callable[..., Any]) -> Mode:
    fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod objects wrap the function that says its kind
    if inspect.isasyncgenfunction(fn):
        return Mode.ASYNC_STREAM
    if inspect.iscoroutinefunction(fn):
        return Mode.ASYNC
    if inspect.isgeneratorfunction(fn):
        return Mode.SYNC_STREAM
    return Mode.SYNC


def _arguments_request(fn: Callable[..., Any]) -> Callable[[Call], Mapping[str, Any]]:
    """The default normalized request: the call's arguments bound to their parameter names (``self``/``cls``
    left out), so ``f(1, b=2)`` and ``f(a=1, b=2)`` are the same request."""
    signature = inspect.signature(getattr(fn, "__func__", fn))  # through staticmethod / classmethod
    parameters = list(signature.parameters)
    bound_first = bool(parameters) and parameters[0] in ("self", "cls")
    function = f"{fn.__module__}.{fn.__qualname__}"
    simple = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in signature.parameters.values())
    positional = [p.name for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    defaults = {p.name: p.default for p in signature.parameters.values() if p.default is not p.empty}
    names = frozenset(parameters)

    def request(call: Call) -> Mapping[str, Any]:
        args = (call.instance, *call.args) if bound_first and call.instance is not None else call.args
        # Signature.bind costs ~5 us; for the common signature (no *args, **kwargs or positional-only) a dict
        # built from the names does the same, and anything unusual or wrong takes the exact path.
        arguments: dict[str, Any] | None = None
        kwargs = call.kwargs
        if simple and len(args) <= len(positional) and (
                not kwargs or (kwargs.keys() <= names and kwargs.keys().isdisjoint(positional[:len(args)]))):
            arguments = defaults.copy()
            for i, value in enumerate(args):  # zip(..., strict=False) costs twice as much: keywords to a builtin
                arguments[positional[i]] = value
            arguments.update(kwargs)
            if len(arguments) != len(parameters):
                arguments = None  # a missing or an unknown argument: let bind() say which
        if arguments is None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                # The function itself rejects such a call, and its TypeError is the caller's to see: raising here
                # would make the middleware that read the request fail instead (no span). No "arguments" key, so
                # this request never equals a bound one.
                return {"function": function, "args": list(call.args), "kwargs": dict(call.kwargs)}
            bound.apply_defaults()
            arguments = dict(bound.arguments)
        if bound_first and call.instance is not None:
            arguments.pop(parameters[0])
        return {"function": function, "arguments": arguments}

    return request


def wrap(
    fn: F,
    *,
    operation: str = EXECUTE_TOOL,
    name: str | None = None,
    provider: str | None = None,
    framework: str = "python",
    mode: Mode | None = None,
    codec: Codec = JSON_CODEC,
    request: Callable[[Call], Mapping[str, Any]] | None = None,
    describe: Callable[[Any], Mapping[str, Any]] | None = None,
    pure: bool = False,
    http: bool = False,
) -> F:
    """Return ``fn`` with its calls running through agentaccel's pipeline (a span, and whatever middleware is
    enabled). Sync and async functions, generators and async generators (as streams) and methods all work; when
    agentaccel is not enabled the call goes straight through.

    :param operation: the GenAI operation: ``execute_tool`` (default), ``chat``, ``embeddings``,
        ``text_completion``, ``invoke_agent`` or ``invoke_workflow``.
    :param name: defaults to the function's ``__name__``.
    :param mode: only needed for a plain function that returns an iterator to be treated as a stream.
    :param codec: turns the result into JSON data and back (for caching); results must be JSON data by default.
    :param request: builds the normalized request from the :class:`Call`; defaults to the bound arguments.
    :param describe: extracts span attributes (``gen_ai.usage.*`` …) from a result.
    :param pure: the result depends only on the arguments, so it may be cached like a model call.
    :param http: the function sends its requests to its provider through httpx or httpx2 (OpenAI's and
        Anthropic's clients do), so that a limit rule can hold its permit only while each request is upstream.
    """
    target = Target(
        framework=framework,
        operation=operation,
        name=name or str(getattr(fn, "__name__", repr(fn))),
        mode=mode or _mode_of(fn),
        provider=provider,
        codec=codec,
        request=request or _arguments_request(fn),
        describe=describe,
        hints={"pure": pure, "http": http},
    )
    # Decorating a function in a class body, we cannot know how it will be bound (a staticmethod() may come on
    # top): wrapt finds out at call time. A module-level sync function can take the cheap closure.
    closure = target.mode is Mode.SYNC and not _is_method(fn)
    return wrap_callable(fn, interceptor(target), method=False, closure=closure)  # type: ignore[no-any-return]


def _is_method(fn: Callable[..., Any]) -> bool:
    """Defined in a class body (``Class.method`` or ``f.<locals>.Class.method``), or not a plain function."""
    if not inspect.isfunction(fn):
        return True
    return "." in fn.__qualname__.rpartition("<locals>.")[2]


@overload
def accelerate(fn: F, /) -> F: ...


@overload
def accelerate(
    *,
    operation: str = ...,
    name: str | None = ...,
    provider: str | None = ...,
    framework: str = ...,
    mode: Mode | None = ...,
    codec: Codec = ...,
    request: Callable[[Call], Mapping[str, Any]] | None = ...,
    describe: Callable[[Any], Mapping[str, Any]] | None = ...,
    pure: bool = ...,
    http: bool = ...,
) -> Callable[[F], F]: ...


def accelerate(fn: Any = None, /, **options: Any) -> Any:
    """Decorator form of :func:`wrap`: ``@accelerate`` or ``@accelerate(operation="execute_tool", name="search")``."""
    if fn is not None:
        return wrap(fn, **options)
    return lambda f: wrap(f, **options)
