"""Built-in plugin ``threads``: carry contextvars (the current span, ``agentaccel.scope``/``options``) into
threads and thread pools, so calls made there keep their parent span and tenant.

Python copies context into asyncio tasks but not into ``threading.Thread`` or ``ThreadPoolExecutor.submit``,
which is where frameworks fan out (CrewAI's pools, LangChain's batch, smolagents' parallel tools). Disable with
``AGENTACCEL_DISABLE_PLUGINS=threads``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import Any

from agentaccel._adapter import Adapter, Patch
from agentaccel._plugins import hookimpl

_CONTEXT_ATTRIBUTE = "_agentaccel_context"


def _capture_on_start(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    setattr(instance, _CONTEXT_ATTRIBUTE, contextvars.copy_context())
    return wrapped(*args, **kwargs)


def _run_in_captured(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    # _bootstrap_inner, not run(): subclasses override run() and would escape a patch there.
    context = getattr(instance, _CONTEXT_ATTRIBUTE, None)
    if context is None:
        return wrapped(*args, **kwargs)
    return context.run(wrapped, *args, **kwargs)


def _submit_in_context(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
    fn, *rest = args
    return wrapped(contextvars.copy_context().run, fn, *rest, **kwargs)


class ThreadsAdapter(Adapter):
    name = "threads"

    def patches(self) -> Iterable[Patch]:
        return (
            Patch("threading", "Thread.start", wrapper=_capture_on_start),
            Patch("threading", "Thread._bootstrap_inner", wrapper=_run_in_captured),
            Patch("concurrent.futures.thread", "ThreadPoolExecutor.submit", wrapper=_submit_in_context),
        )


@hookimpl
def agentaccel_register_adapters(register: Callable[[Adapter], None]) -> None:
    register(ThreadsAdapter())
