"""Replacing a callable with one that hands its calls to a wrapt-style ``wrapper(wrapped, instance, args,
kwargs)``."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

_NOT_PLAIN = inspect.CO_COROUTINE | inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
WrapperFn = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def wrap_callable(original: Any, wrapper: WrapperFn, *, method: bool, closure: bool = True) -> Any:
    """Wrap ``original``: a function, or with ``method`` a plain function found in a class's ``__dict__``.

    A plain sync function gets a closure (unless ``closure`` is False): about a quarter of wrapt's per-call
    cost, and no wrapt import (which pulls in asyncio) at start-up. Everything else gets wrapt's
    ``FunctionWrapper``: descriptors (classmethod, staticmethod …) need its binding, and coroutine and generator
    functions must still look like one to ``inspect`` through the wrapper.
    """
    if not closure or not isinstance(original, types.FunctionType) or original.__code__.co_flags & _NOT_PLAIN:
        import wrapt

        return wrapt.FunctionWrapper(original, wrapper)
    if method:

        @functools.wraps(original)
        def bound(self: Any, *args: Any, **kwargs: Any) -> Any:
            return wrapper(original.__get__(self, type(self)), self, args, kwargs)

        return bound

    @functools.wraps(original)
    def function(*args: Any, **kwargs: Any) -> Any:
        return wrapper(original, None, args, kwargs)

    return function
