"""Replacing a callable with one that hands its calls to a wrapt-style ``wrapper(wrapped, instance, args,
kwargs)``."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

WrapperFn = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def wrap_callable(original: Any, wrapper: WrapperFn, *, method: bool, closure: bool) -> Any:
    """Wrap ``original``: a function, or with ``method`` a plain function found in a class's ``__dict__``.

    Where ``closure`` allows it, a plain function gets a closure: about a quarter of wrapt's per-call cost, and
    no wrapt import (which pulls in asyncio) at start-up. Callers allow it only for sync functions, since
    ``inspect`` must still see a coroutine or generator function through the wrapper, which wrapt's
    ``FunctionWrapper`` (used for everything else, descriptors included) provides.
    """
    if not closure or not isinstance(original, types.FunctionType):
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
