"""Built-in plugin ``http``: lets a middleware admit each HTTP request a call sends through ``httpx`` or
``httpx2`` (the clients of OpenAI's, Anthropic's and most providers' SDKs), rather than the whole call.

A middleware that sets ``call.upstream`` (an :class:`Upstream`) is asked, as each request of that call is about to
be sent, for an admission (:meth:`Upstream.admit`, a flow of :class:`~agentaccel.Io` effects run here, blocking a
thread or awaited); the admission is told the response's status and headers once the provider is done with the
request: when ``send`` returns a response whose body it has read or whose status is an error, when a streamed
body is closed (read to its end or not), or when ``send`` raises. The limit plugin uses it to hold a permit only
while a request is upstream, not while the framework builds the request and parses the answer, and to see every
429, including those the client retries by itself. Disable with ``AGENTACCEL_DISABLE_PLUGINS=http``: limits then
hold their permits per call.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, Protocol

from agentaccel._adapter import Adapter, Patch
from agentaccel._call import Call
from agentaccel._pipeline import _ACTIVE, Io, _arun_io, _deliberate, _run_io, _step, isolate
from agentaccel._plugins import hookimpl


class Admission(Protocol):
    def done(self, status: int | None, headers: Mapping[str, str] | None) -> None:
        """The provider is done with the request: ``status`` and ``headers`` of its response, or None for both
        when the request failed without one (a timeout, a refused connection, a cancelled send)."""


class Upstream(Protocol):
    def admit(self) -> Generator[Io, Any, Admission]:
        """Wait (by yielding Io effects) until one request of the call may be sent; raise to refuse it."""


def _admitted(call: Call) -> Admission:
    flow = call.upstream.admit()
    effect, admission = _resume(flow, None, None)
    while effect is not None:
        effect, admission = _resume(flow, *_run_io(effect, call))
    return admission  # type: ignore[return-value]  # a flow that returned gave its admission


async def _admitted_async(call: Call) -> Admission:
    flow = call.upstream.admit()
    effect, admission = _resume(flow, None, None)
    while effect is not None:
        effect, admission = _resume(flow, *await _arun_io(effect, call))
    return admission  # type: ignore[return-value]  # a flow that returned gave its admission


def _resume(flow: Generator[Io, Any, Admission], value: Any, error: BaseException | None
            ) -> tuple[Io | None, Admission | None]:
    """The flow's next effect, or its admission once it returns; what it raises goes to the sender."""
    try:
        return _step(flow, value, error), None
    except StopIteration as stop:
        return None, stop.value


def _admitting() -> Call | None:
    """The active call, when a middleware admits its requests."""
    call = _ACTIVE.get()
    return call if call is not None and call.upstream is not None else None


def _send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _admitting()
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        admission = _admitted(call)
    except BaseException as exc:
        _refused(exc)
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException:
        _done(admission, None)
        raise
    return _settled(response, admission, asynchronous=False)


def _send_async(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _admitting()
    if call is None:
        return wrapped(*args, **kwargs)
    return _admitted_send(call, wrapped, args, kwargs)


async def _admitted_send(call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
    try:
        admission = await _admitted_async(call)
    except BaseException as exc:
        _refused(exc)
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException:
        _done(admission, None)
        raise
    return _settled(response, admission, asynchronous=True)


def _refused(exc: BaseException) -> None:
    """Raise what an admission raised on purpose (a limit's refusal, a cancellation); a bug in it is counted and
    logged, and the request goes without it, as a call goes on without a middleware that fails."""
    if _deliberate(exc):
        raise exc
    isolate("http admission", exc)


def _done(admission: Admission, response: Any) -> None:
    try:
        if response is None:
            admission.done(None, None)
        else:
            admission.done(response.status_code, response.headers)
    except Exception as exc:  # the middleware's bug must not fail a request that got its answer
        isolate("http admission", exc)


def _settled(response: Any, admission: Admission, *, asynchronous: bool) -> Any:
    """``response``, with ``admission`` told it is done: now if its body was read (``send(stream=False)``) or it
    is an error (the provider has finished with it), else when its body's stream closes."""
    if response.is_closed or response.status_code >= 400:
        _done(admission, response)
        return response
    # The response's own package (httpx or httpx2): a response checks that its stream is one of its base classes.
    package = sys.modules.get(type(response).__module__.partition(".")[0])
    closing = _classes(package)[1 if asynchronous else 0] if package is not None else None
    if closing is None:  # not httpx's own response type: the permit stays held until the call ends
        return response
    response.stream = closing(response.stream, lambda: _done(admission, response))
    return response


_made: dict[str, tuple[type | None, type | None]] = {}


def _classes(package: Any) -> tuple[type | None, type | None]:
    """The sync and async byte streams of ``package`` (httpx or httpx2) that call ``done`` once closed."""
    found = _made.get(package.__name__)
    if found is not None:
        return found
    if not hasattr(package, "SyncByteStream") or not hasattr(package, "AsyncByteStream"):
        return None, None

    class Closing(package.SyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Iterable[bytes], done: Callable[[], None]) -> None:
            self._stream = stream
            self._done = done

        def __iter__(self) -> Iterator[bytes]:
            yield from self._stream

        def close(self) -> None:
            try:
                self._stream.close()  # type: ignore[attr-defined]
            finally:
                self._done()

    class AsyncClosing(package.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Any, done: Callable[[], None]) -> None:
            self._stream = stream
            self._done = done

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            try:
                await self._stream.aclose()
            finally:
                self._done()

    found = _made[package.__name__] = (Closing, AsyncClosing)
    return found


_instrumented: list[HttpAdapter] = []


def sees(call: Call) -> bool:
    """Whether each request ``call`` sends to its provider passes through here: this plugin is enabled (httpx's
    and httpx2's sends are patched, or will be when imported) and the call's adapter says, in its target's
    ``hints["http"]`` (True, or a function of the call), that this call's requests go through httpx or httpx2."""
    says = call.target.hints.get("http")
    if not says or not _instrumented:
        return False
    if says is True:
        return True
    try:
        return bool(says(call))
    except Exception as exc:  # the adapter's bug: the call is treated as one whose requests are not seen
        isolate(f"{call.framework} adapter's hints['http']", exc)
        return False


class HttpAdapter(Adapter):
    name = "http"

    def instrument(self) -> None:
        super().instrument()
        if self.instrumented and self not in _instrumented:
            _instrumented.append(self)

    def uninstrument(self) -> None:
        if self in _instrumented:
            _instrumented.remove(self)
        super().uninstrument()

    def patches(self) -> Iterable[Patch]:
        for module in ("httpx", "httpx2"):
            yield Patch(module, "Client.send", wrapper=_send)
            yield Patch(module, "AsyncClient.send", wrapper=_send_async)


@hookimpl
def agentaccel_register_adapters(register: Callable[[Adapter], None]) -> None:
    register(HttpAdapter())
