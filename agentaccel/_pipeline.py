"""The call pipeline: middleware decides in one sans-I/O generator per call; four thin drivers (sync, async, sync
stream, async stream) perform what it asks.

A middleware's ``flow(call)`` is a generator (or returns its decision alone, or a function of the outcome, when
that is all it needs: see :meth:`Middleware.flow`). It may yield :class:`Io` effects (work that has a sync and an
async form: a lock, a Redis round trip) and gets each result sent back; then it yields exactly one decision,
:class:`Proceed` (let the call go on) or :class:`Return` (answer without calling: a cache hit); then it is sent the
:class:`~agentaccel.Outcome` and may yield further :class:`Io` effects before it returns. All the logic lives in
:func:`_open` and :func:`_plan`, which walk the flows in order and unwind them in reverse; the drivers only run
effects and the original callable, so sync and async behave the same by construction.

A call whose flows all decide without a generator (every call's span, a cache hit, a call no limit rule matches)
needs no plan: :func:`_open` decides it, and the sync and async drivers run the original or take the answer and
tell the finishers, with no generator made for the call.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from agentaccel._call import MODEL_OPERATIONS, Call, Outcome, StreamOutcome, Target
from agentaccel._errors import AgentAccelError, PluginError

log = logging.getLogger("agentaccel")


class Io:
    """An effect with a sync and an async form; the driver runs the one that fits the call and sends back its
    result (or throws its exception into the flow)."""

    __slots__ = ("arun", "run")

    def __init__(self, run: Callable[[], Any], arun: Callable[[], Awaitable[Any]]) -> None:
        self.run = run
        self.arun = arun


class Proceed:
    """Decision: let the call go on. Yield the :data:`PROCEED` instance. (To run the inner call in a span's
    context set ``call.context``; to receive a stream's chunks, or a copy of each, set ``call.collect``.)"""

    __slots__ = ()


class Return:
    """Decision: answer with ``value`` without calling inward. For a stream ``value`` is an iterable of chunks,
    which the caller receives as a stream."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


PROCEED = Proceed()
Flow = Generator[Io | Proceed | Return, Any, None]
Finish = Callable[[Outcome], None]


class Middleware:
    """Base class for middleware. Subclasses set ``name`` and override :meth:`flow` (and :meth:`accepts`,
    :meth:`chained`).

    ``before``/``after`` name other middleware this one must run outside of / inside of; names that are not
    installed are ignored. The standard order is ``observe -> tracing -> profile -> cache -> limit -> pool``.
    """

    name: str = ""
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def accepts(self, target: Target) -> bool:
        """Whether :meth:`flow` can matter for calls of ``target``; asked once per target, not per call."""
        return True

    def chained(self, target: Target, inner: tuple[Middleware, ...]) -> None:
        """Told once per target, after every middleware answered :meth:`accepts`, which middleware run inside
        this one for calls of ``target`` (empty when it is the innermost)."""

    def flow(self, call: Call) -> Flow | Proceed | Return | Finish:
        """The call's flow (a generator, see the module's docstring); or, when this middleware wants nothing more
        of the call once it has decided (no outcome, no effects), the decision itself: PROCEED or a Return; or,
        when it lets the call go on and wants only its outcome (no effects), a function the pipeline calls with
        the :class:`~agentaccel.Outcome` (a finisher: no generator to make and end on every call)."""
        return PROCEED


def order(middleware: Sequence[Middleware]) -> tuple[Middleware, ...]:
    """Sort by the before/after constraints, keeping registration order where they leave a choice: each
    middleware, in registration order, is placed right after the ones that must be outside it, so one that asks
    to be outside ``tracing`` moves in front of it and nothing else moves."""
    by_name: dict[str, Middleware] = {}
    for mw in middleware:
        if not mw.name:
            raise PluginError(f"middleware {mw!r} has no name; set the class attribute `name`")
        if mw.name in by_name:
            raise PluginError(f"two middleware are named {mw.name!r}; names must be unique")
        by_name[mw.name] = mw
    outer: dict[str, list[str]] = {name: [] for name in by_name}  # name -> names that must run outside it
    for mw in middleware:
        outer[mw.name].extend(n for n in mw.after if n in by_name)
        for inside in mw.before:
            if inside in by_name:
                outer[inside].append(mw.name)
    result: list[Middleware] = []
    placing: list[str] = []

    def place(name: str) -> None:
        if by_name[name] in result:
            return
        if name in placing:
            cycle = placing[placing.index(name):]
            raise PluginError(f"middleware order has a cycle among: {', '.join(cycle)}; check their before/after")
        placing.append(name)
        for first in outer[name]:
            place(first)
        placing.pop()
        result.append(by_name[name])

    for name in by_name:
        place(name)
    return tuple(result)


class _Invoke:
    """What :func:`_plan` yields when the driver should call the original (:data:`_INVOKE`); a stream's replay
    is asked for by yielding the deciding :class:`Return` itself."""

    __slots__ = ()


_INVOKE = _Invoke()
_GENERATOR = types.GeneratorType


_failures: dict[str, int] = {}


def plugin_failures() -> dict[str, int]:
    """How many times each middleware raised by mistake since the process started."""
    return dict(_failures)


def isolate(name: str, exc: BaseException) -> None:
    """Count a plugin's accidental failure under ``name``; log the first one with its traceback."""
    count = _failures.get(name, 0) + 1
    _failures[name] = count
    if count == 1:
        log.error("agentaccel: %s failed and was skipped for this call (logged once, counted in `agentaccel "
                  "plugins`); the call went on without it", name, exc_info=exc)


def _deliberate(exc: BaseException) -> bool:
    # AgentAccelError is how middleware refuses a call on purpose; BaseExceptions that are not Exceptions
    # (cancellation, KeyboardInterrupt, GeneratorExit) must reach the caller unchanged.
    return isinstance(exc, AgentAccelError) or not isinstance(exc, Exception)


def _step(flow: Generator[Any, Any, Any], value: Any, error: BaseException | None) -> Any:
    return flow.send(value) if error is None else flow.throw(error)


Effect = Io | _Invoke | Return | Outcome
#: The flows a call entered, in order: each middleware with its generator or its finisher.
Entered = list[tuple[Middleware, Any]]


def _open(chain: Sequence[Middleware], call: Call, entered: Entered, start: int) -> tuple[int, Any]:
    """Run the decision phase of ``chain[start:]`` for as long as each flow decides without a generator
    (PROCEED, a Return, a finisher, which joins ``entered``). Returns ``(index, stop)``: ``stop`` is the Return
    that answered the call, the Outcome of a refusal, the generator flow of ``chain[index]`` (a plan runs it,
    with its effects, then opens the rest), or None when every flow let the call go on."""
    for index in range(start, len(chain)):
        mw = chain[index]
        try:
            flow = mw.flow(call)
        except BaseException as exc:
            if _deliberate(exc):
                return index, Outcome(error=exc)
            isolate(mw.name, exc)
            continue
        kind = type(flow)
        if kind is Proceed:
            continue
        if kind is Return or kind is _GENERATOR:
            return index, flow
        if callable(flow):  # a finisher (generators are not callable)
            entered.append((mw, flow))
        elif hasattr(flow, "send"):  # a generator of another make
            return index, flow
        else:
            isolate(mw.name, PluginError(f"flow of {mw.name!r} returned {flow!r}; expected a generator, PROCEED, "
                                         "a Return or a function of the outcome"))
    return len(chain), None


def _answer(call: Call, decision: Return) -> Outcome | None:
    """The outcome of a call a middleware answered with ``decision``, once the target has adopted its value
    (see Target.adopt); None when the driver hands the value out itself (a stream's chunks, or a value its
    target replays)."""
    target = call.target
    if target.adopt is not None:
        try:
            target.adopt(call, decision.value)
        except BaseException as exc:  # as a replay that raises: the call fails there
            return Outcome(error=exc, served=True)
    if target.mode.is_stream or target.replay is not None:
        return None
    return Outcome(decision.value, None, True)  # positional: keywords cost 0.2 us here


def _close(entered: Entered, outcome: Outcome) -> Outcome:
    """Tell finishers (only) the outcome, innermost first: the outcome the flows outside them see."""
    for mw, finish in reversed(entered):
        try:
            finish(outcome)
        except BaseException as exc:
            outcome = _fault(mw, exc, outcome)
    return outcome


def _fault(mw: Middleware, exc: BaseException, outcome: Outcome) -> Outcome:
    """The outcome after a flow raised ``exc`` once told ``outcome``: a deliberate error replaces it, a bug is
    isolated and leaves it."""
    if _deliberate(exc):
        return Outcome(error=exc)
    isolate(mw.name, exc)
    return outcome


def _plan(chain: Sequence[Middleware], call: Call, entered: Entered, index: int, stop: Any
          ) -> Generator[Effect, Any, None]:
    """The rest of a call :func:`_open` stopped at ``stop`` (the flows before it are in ``entered``): run each
    generator flow's decision phase and open the flows after it, ask the driver for the centre, unwind every
    entered flow in reverse. Yields effects for the driver: an :class:`Io` is answered with ``(value, error)``;
    :data:`_INVOKE` (call the original) and a :class:`Return` to replay (a stream's chunks, or a result its
    target replays) with an :class:`Outcome`; the last thing yielded is the final :class:`Outcome` (yielded, not
    returned: a StopIteration on every call costs), after which the driver resumes the plan once with
    ``next(plan, None)`` to end it (a suspended generator, once collected, is closed by a GeneratorExit thrown
    into it, which costs too)."""
    outcome: Outcome | None = None
    centre: _Invoke | Return = _INVOKE
    effect: Any  # a decision, or what a flow yielded
    while stop is not None:
        if type(stop) is Return:
            outcome = _answer(call, stop)
            if outcome is None:
                centre = stop  # the driver replays it (Target.replay)
            break
        if type(stop) is Outcome:  # a flow refused the call
            outcome = stop
            break
        mw, flow = chain[index], stop
        try:
            effect = next(flow)
            while type(effect) is Io:
                value, error = yield effect
                effect = _step(flow, value, error)
        except StopIteration:
            isolate(mw.name, PluginError(f"flow of {mw.name!r} returned before deciding Proceed or Return"))
            effect = None
        except BaseException as exc:
            if _deliberate(exc):
                outcome = Outcome(error=exc)
                break
            isolate(mw.name, exc)
            effect = None
        if type(effect) is Return:
            entered.append((mw, flow))
            stop = effect
            continue
        if type(effect) is Proceed:
            entered.append((mw, flow))
        elif effect is not None:
            flow.close()
            isolate(mw.name, PluginError(f"flow of {mw.name!r} yielded {effect!r}; expected Io, Proceed or Return"))
        index, stop = _open(chain, call, entered, index + 1)
    if outcome is None:
        outcome = yield centre
    for mw, flow in reversed(entered):
        if callable(flow):  # a finisher (generators are not callable)
            outcome = _close([(mw, flow)], outcome)
            continue
        try:
            effect = flow.send(outcome)
            while type(effect) is Io:
                value, error = yield effect
                effect = _step(flow, value, error)
            flow.close()
            isolate(mw.name, PluginError(f"flow of {mw.name!r} yielded {effect!r} after its decision"))
        except StopIteration:
            pass
        except BaseException as exc:
            outcome = _fault(mw, exc, outcome)
    yield outcome


# --- what runs around the centre: the span context and the "which call owns this" marker -------------------------

_ACTIVE: ContextVar[Call | None] = ContextVar("agentaccel_active_call", default=None)


def owned_by_outer(target: Target, instance: Any) -> bool:
    """True when this call is part of a call an enclosing agentaccel frame already owns: a subclass calling
    ``super()`` on the same object, or a client library under a framework's model call (both ``chat``)."""
    parent = _ACTIVE.get()
    if parent is None:
        return False
    if parent.target.operation != target.operation:
        return False
    return (instance is not None and parent.instance is instance) or target.operation in MODEL_OPERATIONS


def _context(call: Call) -> Context | None:
    """The context the original runs in; a function in ``call.context`` makes it now, once (see :class:`Call`)."""
    context = call.context
    if callable(context):
        try:
            context = context()
        except Exception as exc:  # a middleware's bug: the original still runs, outside that middleware's context
            isolate("call.context", exc)
            context = None
        call.context = context
    return context  # type: ignore[no-any-return]


def _enter(call: Call, context: Context | None) -> tuple[Token[Call | None], object | None]:
    return _ACTIVE.set(call), otel_context.attach(context) if context is not None else None


def _exit(tokens: tuple[Token[Call | None], object | None]) -> None:
    _detach(tokens[1])
    _ACTIVE.reset(tokens[0])


# --- the four drivers: run Io effects, call the original (or replay), hand the plan its Outcome -------------------


def run_sync(chain: Sequence[Middleware], call: Call, fn: Callable[..., Any]) -> Any:
    entered: Entered = []
    index, stop = _open(chain, call, entered, 0)
    # Decided without a generator flow, the call needs no plan (see the module's docstring).
    if stop is None:
        outcome = _close(entered, _call(call, fn))
    elif type(stop) is Outcome:  # refused
        outcome = _close(entered, stop)
    elif type(stop) is Return:  # answered (a sync call is no stream: its answer is adopted, or replayed)
        outcome = _close(entered, _answer(call, stop) or _replayed(call, stop))
    else:
        outcome = _run_plan(_plan(chain, call, entered, index, stop), call, fn)
    return outcome.value if outcome.error is None else outcome.unwrap()  # unwrap(), a call, only to raise


def _run_plan(plan: Generator[Effect, Any, None], call: Call, fn: Callable[..., Any]) -> Outcome:
    effect = next(plan)
    while True:
        if type(effect) is Io:
            effect = plan.send(_run_io(effect, call))
        elif type(effect) is _Invoke:
            effect = plan.send(_call(call, fn))
        elif type(effect) is Return:  # an answer whose target replays it (see Target.replay)
            effect = plan.send(_replayed(call, effect))
        else:
            next(plan, None)  # ended, not left suspended (see _plan)
            return effect  # type: ignore[return-value]  # the plan's last yield is the Outcome


def _replayed(call: Call, answer: Return) -> Outcome:
    """The outcome of a sync call's ``answer`` after its target's replay of it, in the call's context."""
    tokens = _enter(call, _context(call))
    try:
        call.target.replay(call, answer.value)  # type: ignore[misc]  # asked for only when it is set
    except BaseException as exc:
        return Outcome(error=exc, served=True)
    else:
        return Outcome(answer.value, served=True)
    finally:
        _exit(tokens)


def _call(call: Call, fn: Callable[..., Any]) -> Outcome:
    """The original's outcome, run in the call's context as the active call (a sync call's centre)."""
    # _context/_enter/_exit inlined: this is the path every sync call takes
    context = call.context
    if callable(context):
        context = _context(call)
    active = _ACTIVE.set(call)
    attached = otel_context.attach(context) if context is not None else None
    try:
        return Outcome(fn(*call.args, **call.kwargs))
    except BaseException as exc:
        return Outcome(error=exc)
    finally:
        if attached is not None:
            otel_context.detach(attached)
        _ACTIVE.reset(active)


async def run_async(chain: Sequence[Middleware], call: Call, fn: Callable[..., Awaitable[Any]]) -> Any:
    entered: Entered = []
    index, stop = _open(chain, call, entered, 0)
    # As in run_sync: a call decided without a generator flow needs no plan.
    if stop is None:
        outcome = _close(entered, await _acall(call, fn, None))
    elif type(stop) is Outcome:  # refused
        outcome = _close(entered, stop)
    elif type(stop) is Return:  # answered: adopted, or replayed
        outcome = _close(entered, _answer(call, stop) or await _acall(call, fn, stop))
    else:
        plan = _plan(chain, call, entered, index, stop)
        effect = next(plan)
        while type(effect) is not Outcome:
            if type(effect) is Io:
                effect = plan.send(await _arun_io(effect, call))
            else:  # the original, or an answer to replay
                effect = plan.send(await _acall(call, fn, effect if type(effect) is Return else None))
        next(plan, None)  # ended, not left suspended (see _plan)
        outcome = effect
    return outcome.value if outcome.error is None else outcome.unwrap()


async def _acall(call: Call, fn: Callable[..., Awaitable[Any]], answer: Return | None) -> Outcome:
    """The outcome of the original (or of ``answer`` after its replay), run in the call's context as the active
    call (an async call's centre)."""
    served = answer is not None
    tokens = _enter(call, _context(call))
    try:
        value = await (_areplayed(call, answer.value) if answer is not None else fn(*call.args, **call.kwargs))
    except BaseException as exc:
        return Outcome(error=exc, served=served)
    else:
        return Outcome(value, served=served)
    finally:
        _exit(tokens)


def run_sync_stream(chain: Sequence[Middleware], call: Call, fn: Callable[..., Iterable[Any]]) -> Iterator[Any]:
    entered: Entered = []
    plan = _plan(chain, call, entered, *_open(chain, call, entered, 0))
    effect = next(plan)
    while True:
        if type(effect) is Io:
            effect = plan.send(_run_io(effect, call))
        elif type(effect) is _Invoke or type(effect) is Return:
            context = _context(call)
            chunks = effect.value if type(effect) is Return else None
            outcome = StreamOutcome([] if call.collect else None, served=chunks is not None)
            replay = call.target.replay if chunks is not None else None
            source: Iterator[Any] | None = None
            try:
                tokens = _enter(call, context)
                try:
                    source = iter(fn(*call.args, **call.kwargs) if chunks is None else chunks)
                finally:
                    _exit(tokens)
                while True:
                    tokens = _enter(call, context)
                    try:
                        chunk = next(source)
                        if replay is not None:
                            replay(call, chunk)
                    except StopIteration:
                        break
                    finally:
                        _exit(tokens)
                    _count(outcome, chunk, call.collect)
                    yield chunk
            except BaseException as exc:
                _fail(outcome, exc)
                close = getattr(source, "close", None)
                if close is not None:
                    try:
                        close()
                    except BaseException as close_exc:  # the source's own clean-up failed: the call ends with
                        _fail(outcome, close_exc)  # that, and the flows must still be told (a limiter's slot)
            effect = plan.send(outcome)
        else:
            next(plan, None)  # ended, not left suspended (see _plan)
            effect.unwrap()  # type: ignore[union-attr]  # the plan's last yield is the Outcome
            return


async def run_async_stream(
    chain: Sequence[Middleware], call: Call, fn: Callable[..., AsyncIterator[Any]]
) -> AsyncIterator[Any]:
    entered: Entered = []
    plan = _plan(chain, call, entered, *_open(chain, call, entered, 0))
    effect = next(plan)
    while True:
        if type(effect) is Io:
            effect = plan.send(await _arun_io(effect, call))
        elif type(effect) is _Invoke or type(effect) is Return:
            context = _context(call)
            chunks = effect.value if type(effect) is Return else None
            outcome = StreamOutcome([] if call.collect else None, served=chunks is not None)
            replay = call.target.replay if chunks is not None else None
            source: AsyncIterator[Any] | None = None
            try:
                tokens = _enter(call, context)
                try:
                    source = (fn(*call.args, **call.kwargs) if chunks is None else _replay(chunks)).__aiter__()
                finally:
                    _exit(tokens)
                while True:
                    tokens = _enter(call, context)
                    try:
                        chunk = await source.__anext__()
                        if replay is not None:
                            replayed = replay(call, chunk)
                            if replayed is not None:
                                await replayed
                    except StopAsyncIteration:
                        break
                    finally:
                        _exit(tokens)
                    _count(outcome, chunk, call.collect)
                    yield chunk
            except BaseException as exc:
                _fail(outcome, exc)
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    try:
                        await aclose()
                    except BaseException as close_exc:  # its clean-up failed or was cancelled: as in the sync
                        _fail(outcome, close_exc)  # driver, the call ends with that and the flows are told
            effect = plan.send(outcome)
        else:
            next(plan, None)  # ended, not left suspended (see _plan)
            effect.unwrap()  # type: ignore[union-attr]  # the plan's last yield is the Outcome
            return


# An effect is work done for the call (a Redis round trip, a wait for a slot), so it runs in the call's context:
# the spans an instrumented client records for it are children of the call's span, and the call's span starts
# when such work begins if it was waiting to start (see Call.context). Not as the active call, though: a model
# call an effect makes (a guard asking a model) is a call of its own, not part of this one.


def _run_io(effect: Io, call: Call) -> tuple[Any, BaseException | None]:
    token = _attach(call)
    try:
        return effect.run(), None
    except BaseException as exc:
        return None, exc
    finally:
        _detach(token)


async def _arun_io(effect: Io, call: Call) -> tuple[Any, BaseException | None]:
    token = _attach(call)
    try:
        return await effect.arun(), None
    except BaseException as exc:
        return None, exc
    finally:
        _detach(token)


def _attach(call: Call) -> object | None:
    context = _context(call)
    return otel_context.attach(context) if context is not None else None


def _detach(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


async def _areplayed(call: Call, value: Any) -> Any:
    """``value`` after the target's replay of it (see Target.replay), awaited when it gives an awaitable."""
    replayed = call.target.replay(call, value)  # type: ignore[misc]  # _plan asks for a replay only when it is set
    if replayed is not None:
        await replayed
    return value


async def _replay(chunks: Iterable[Any]) -> AsyncIterator[Any]:
    for chunk in chunks:
        yield chunk


def _count(outcome: StreamOutcome, chunk: Any, collect: bool | Callable[[Any], Any]) -> None:
    """Count ``chunk`` (and collect it, or what ``collect`` makes of it) before the consumer gets it."""
    if outcome.chunks == 0:
        outcome.first_chunk_ns = time.perf_counter_ns()
    outcome.chunks += 1
    outcome.last = chunk
    if outcome.value is not None:
        if collect is True:
            outcome.value.append(chunk)
            return
        try:
            outcome.value.append(collect(chunk))  # type: ignore[operator]  # true or callable when collecting
        except Exception:
            outcome.value = None  # the collector refused this chunk: the stream goes on, collected as nothing


def _fail(outcome: StreamOutcome, exc: BaseException) -> None:
    outcome.error = exc
