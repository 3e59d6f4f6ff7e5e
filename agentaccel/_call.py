"""What is being called: the static :class:`Target` an adapter describes once, the per-call :class:`Call`
middleware sees, and the :class:`Outcome` it is handed back."""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn, Protocol

from agentaccel._context import _OPTIONS, _SCOPE

#: Operation names, in the OpenTelemetry GenAI semantic conventions' vocabulary.
CHAT = "chat"
TEXT_COMPLETION = "text_completion"
EMBEDDINGS = "embeddings"
EXECUTE_TOOL = "execute_tool"
INVOKE_AGENT = "invoke_agent"
INVOKE_WORKFLOW = "invoke_workflow"
OPERATIONS = frozenset({CHAT, TEXT_COMPLETION, EMBEDDINGS, EXECUTE_TOOL, INVOKE_AGENT, INVOKE_WORKFLOW})
#: Operations that are one request to a model provider: a nested call of the same kind is the same request.
MODEL_OPERATIONS = frozenset({CHAT, TEXT_COMPLETION, EMBEDDINGS})


class Mode(enum.Enum):
    """How the intercepted callable delivers its result."""

    SYNC = "sync"
    ASYNC = "async"
    SYNC_STREAM = "sync_stream"
    ASYNC_STREAM = "async_stream"

    is_stream: bool
    is_async: bool

    def __init__(self, value: str) -> None:
        # Plain attributes, not properties: the pipeline asks them on every call.
        self.is_stream = value.endswith("stream")
        self.is_async = value.startswith("async")


class CodecError(ValueError):
    """A result could not be turned into JSON-safe data, or stored data back into a result."""


class Codec(Protocol):
    """Turns a framework's result (or one stream chunk) into JSON-safe data and back. Never pickle.

    ``decode`` must treat its data as untrusted (it may come from a shared store) and raise on anything it did not
    make. A codec may also define ``rebuild(data)``: the same result from data its own ``encode`` made or its
    ``decode`` accepted, without validating it again; the cache uses it for in-process hits.
    """

    def encode(self, value: Any) -> Any: ...

    def decode(self, data: Any) -> Any: ...


class JSONCodec:
    """For results that already are JSON data (dict, list, str, int, float, bool, None)."""

    def encode(self, value: Any) -> Any:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CodecError(
                f"result of type {type(value).__name__} is not JSON data ({exc}); pass codec= to "
                "agentaccel.accelerate() to say how to encode it"
            ) from None
        return value

    def decode(self, data: Any) -> Any:
        return data


JSON_CODEC = JSONCodec()


@dataclass(frozen=True, eq=False, slots=True)
class Target:
    """One intercepted callable, described once by an adapter.

    ``request`` builds the normalized request (model, params, messages, tools …: JSON data) from a call; it runs
    only when something asks for ``call.request``. ``identify`` derives the name and provider from the call (a
    tool's name, a model class's provider) when they are not fixed. ``describe`` extracts span attributes from a
    result (``gen_ai.usage.*``, ``gen_ai.response.model``). ``replay(call, value)`` is called for what a middleware
    answered in place of the original (a cache hit): for each chunk of a stream, or once with a call's result, in
    the span's context just before the caller gets it, for the effects the original has inside it (a framework's
    token callbacks or stream events); in an async call what it returns, when not None, is awaited, and if it
    raises, the call fails there. ``adopt(call, value)`` makes a call's result that a middleware answered this
    call's own, in place, before the caller gets it: what the original would have put in it that only this call
    has (a run's message ids). It runs outside the span's context and has no effects beyond the
    value (those are ``replay``'s), so it costs the call no early span; if it raises, the call fails there.
    ``hints`` carry adapter facts middleware may use, such as ``{"pure": True}`` for a tool whose result depends
    only on its arguments, or ``{"http": True}`` (or a function of the call saying so per call) when a call's
    requests to its provider go through an httpx or httpx2 client in this process (see ``agentaccel.builtin.http``).
    """

    framework: str
    operation: str
    name: str
    mode: Mode
    provider: str | None = None
    codec: Codec = JSON_CODEC
    request: Callable[[Call], Mapping[str, Any]] | None = None
    identify: Callable[[Call], tuple[str, str | None]] | None = None
    describe: Callable[[Any], Mapping[str, Any]] | None = None
    replay: Callable[[Call, Any], Awaitable[None] | None] | None = None
    adopt: Callable[[Call, Any], None] | None = None
    hints: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(
                f"operation {self.operation!r} is not one of {', '.join(sorted(OPERATIONS))} "
                "(the OpenTelemetry GenAI operation names)"
            )
        if self.adopt is not None and self.mode.is_stream:
            raise ValueError(f"{self.framework} target {self.name!r}: adopt= is for a call's result; a stream's "
                             "chunks are replayed (replay=)")


class Call:
    """One intercepted call. Middleware reads it, sets ``context``/``collect``, and ``annotate`` adds span
    attributes."""

    __slots__ = (
        "_request",
        "args",
        "attributes",
        "collect",
        "context",
        "instance",
        "kwargs",
        "name",
        "options",
        "provider",
        "scope",
        "target",
        "upstream",
    )

    def __init__(self, target: Target, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.target = target
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.scope: Mapping[str, str] = _SCOPE.get()
        self.options: Mapping[str, Any] = _OPTIONS.get()
        self.attributes: dict[str, Any] = {}
        #: The OpenTelemetry context the original callable (and each step of a stream) and the middleware's Io
        #: effects run in, or a function of no arguments that makes it, called once just before the first of
        #: them (the original, a replay or an effect) runs: the tracing middleware sets its span's here so that
        #: calls made inside are its children, and when a middleware inside it may answer the call, sets a
        #: function, so that an answered call's span starts only at its end.
        self.context: Any = None
        #: Set by a middleware that needs a stream's chunks: True collects them as a list in ``outcome.value``; a
        #: function collects what it makes of each chunk, called before the consumer gets the chunk (so that a
        #: consumer changing it cannot change what was collected). If it raises, ``outcome.value`` is None.
        self.collect: bool | Callable[[Any], Any] = False
        #: Set by a middleware that admits each HTTP request the call sends rather than the call as a whole (an
        #: ``agentaccel.builtin.http.Upstream``: the limit plugin's permits), for calls whose target's
        #: ``hints["http"]`` says their requests go through httpx or httpx2.
        self.upstream: Any = None
        self._request: Mapping[str, Any] | None = None
        if target.identify is None:
            self.name = target.name
            self.provider = target.provider
        else:
            try:
                self.name, self.provider = target.identify(self)
            except Exception as exc:  # the adapter's bug: the call goes on under the target's own name
                from agentaccel._pipeline import isolate  # late: _pipeline imports this module

                isolate(f"{target.framework} adapter's identify() for {target.operation}", exc)
                self.name, self.provider = target.name, target.provider

    @property
    def framework(self) -> str:
        return self.target.framework

    @property
    def operation(self) -> str:
        return self.target.operation

    @property
    def mode(self) -> Mode:
        return self.target.mode

    @property
    def request(self) -> Mapping[str, Any]:
        """The normalized request, built on first access and kept for the rest of the call."""
        if self._request is None:
            builder = self.target.request
            self._request = Request(builder(self)) if builder is not None else _NO_REQUEST
        return self._request

    def annotate(self, key: str, value: Any) -> None:
        """Record an attribute for this call's span (e.g. ``agentaccel.cache.result``)."""
        self.attributes[key] = value

    def __repr__(self) -> str:
        return f"<Call {self.framework}:{self.operation} {self.name!r} {self.mode.value}>"


class Request(dict[str, Any]):
    """A normalized request: a dict no middleware can change under the others (a dict, not a mapping proxy, so
    that encoders such as the cache's take it as it is, without a copy per call)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("call.request is read-only: middleware share it")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)  # copies (copy, deepcopy, pickle) are plain dicts, free to change


_NO_REQUEST: Mapping[str, Any] = Request()


class Outcome:
    """What a call produced: ``value`` or ``error`` (then ``unwrap()`` raises it). ``served`` is true when a
    middleware answered with :class:`Return` (a cache hit) rather than the original callable."""

    __slots__ = ("error", "served", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None, served: bool = False) -> None:
        self.value = value
        self.error = error
        self.served = served

    @property
    def completed(self) -> bool:
        """The call returned (a stream: was read to the end) rather than failing, being cancelled or abandoned."""
        return self.error is None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class StreamOutcome(Outcome):
    """The outcome of a stream: ``value`` is the list of chunks (or what ``call.collect`` made of each) when a
    middleware asked to collect them,
    ``chunks`` counts them, ``last`` is the last one (where providers put usage) and ``first_chunk_ns`` is the
    ``time.perf_counter_ns()`` of the first."""

    __slots__ = ("chunks", "first_chunk_ns", "last")

    def __init__(self, value: Any = None, error: BaseException | None = None, served: bool = False) -> None:
        super().__init__(value, error, served)
        self.chunks = 0
        self.first_chunk_ns = 0
        self.last: Any = None
