"""The call pipeline: the same middleware behaves identically for a sync function, a coroutine, a generator and an
async generator; middleware ordering; streams that fail or are abandoned; scope and per-call options."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import agentaccel
from agentaccel import (
    PROCEED,
    AgentAccelError,
    ConfigError,
    Io,
    Middleware,
    Mode,
    Outcome,
    PluginError,
    Return,
)
from agentaccel._call import StreamOutcome
from agentaccel._pipeline import order
from agentaccel._runtime import interceptor
from agentaccel.builtin.tracing import Tracing

Register = Callable[[Any, str], None]
MODES = list(Mode)
IDS = [mode.value for mode in MODES]


# --- helpers: an inline plugin, middleware that record, and one accelerated function per mode ---------------------


class MiddlewarePlugin:
    """An inline plugin contributing the given middleware, in this order."""

    def __init__(self, *middleware: Middleware) -> None:
        self.middleware = middleware

    @agentaccel.hookimpl
    def agentaccel_register_middleware(self, register: Callable[[Middleware], None]) -> None:
        for mw in self.middleware:
            register(mw)


class Recorder(Middleware):
    """Proceeds (asking for a stream's chunks with ``collect``) and records the calls it saw and the outcome each
    was sent; ``log`` gets the global order."""

    def __init__(self, name: str, *, log: list[tuple[str, str]] | None = None,
                 collect: bool | Callable[[Any], Any] = False,
                 before: Iterable[str] = (), after: Iterable[str] = ()) -> None:
        self.name = name
        self.before = tuple(before)
        self.after = tuple(after)
        self.log = [] if log is None else log
        self.collect = collect
        self.calls: list[agentaccel.Call] = []
        self.outcomes: list[Outcome] = []

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        self.calls.append(call)
        self.log.append((self.name, "enter"))
        if self.collect:
            call.collect = self.collect  # asks for a stream's chunks (or what a function makes of them)
        outcome = yield PROCEED
        self.log.append((self.name, "exit"))
        self.outcomes.append(outcome)


class Effects(Middleware):
    """Yields Io effects before deciding (one fails and is caught) and after the outcome."""

    name = "effects"

    def __init__(self) -> None:
        self.ran: list[str] = []  # which form of each effect ran: "run" or "arun"
        self.received: list[Any] = []

    def _io(self, label: str, *, fail: bool = False) -> Io:
        def run() -> str:
            self.ran.append("run")
            if fail:
                raise ConnectionError(label)
            return f"{label}:sync"

        async def arun() -> str:
            await asyncio.sleep(0)  # a real suspension: only an awaited arun gets past it
            self.ran.append("arun")
            if fail:
                raise ConnectionError(label)
            return f"{label}:async"

        return Io(run, arun)

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        self.received.append((yield self._io("lock")))
        try:
            yield self._io("redis", fail=True)
        except ConnectionError as exc:
            self.received.append(f"caught {exc}")
        yield PROCEED
        self.received.append((yield self._io("store")))


class Buggy(Middleware):
    """A middleware with a bug at ``where``."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        if self.where == "decide":
            raise RuntimeError("bug before deciding")
        if self.where == "no-decision":
            return
        if self.where == "junk":
            yield "neither Io, Proceed nor Return"
        yield PROCEED
        if self.where == "unwind":
            raise RuntimeError("bug after the outcome")
        if self.where == "junk-after":
            yield "junk after the decision"


class Refused(AgentAccelError):
    """What a middleware raises to refuse a call on purpose (like a limiter's queue timeout)."""


class Refuse(Middleware):
    name = "limit"

    def __init__(self, where: str, error: BaseException | None = None) -> None:
        self.where = where
        self.error = error if error is not None else Refused("over the limit")

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        if self.where == "decide":
            raise self.error
        yield PROCEED
        raise self.error


class ShortCircuit(Middleware):
    """Answers without calling inward, like a cache hit."""

    name = "cache"

    def __init__(self, value: Any) -> None:
        self.value = value
        self.outcomes: list[Outcome] = []

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        outcome = yield Return(self.value)
        self.outcomes.append(outcome)


class Plain(Middleware):
    """A flow that is a plain method: it returns ``decision`` (or raises it) and never sees the outcome."""

    def __init__(self, name: str, decision: Any) -> None:
        self.name = name
        self.decision = decision
        self.calls = 0

    def flow(self, call: agentaccel.Call) -> Any:
        self.calls += 1
        if isinstance(self.decision, BaseException):
            raise self.decision
        return self.decision


class Finisher(Middleware):
    """A flow that is a function of the outcome (a finisher): it lets the call go on, is told how it ended, and
    raises ``error`` (if any) when told."""

    def __init__(self, name: str, log: list[tuple[str, str]], error: BaseException | None = None) -> None:
        self.name = name
        self.log = log
        self.error = error
        self.outcomes: list[Outcome] = []

    def flow(self, call: agentaccel.Call) -> Callable[[Outcome], None]:
        self.log.append((self.name, "enter"))
        return functools.partial(self._finish, call)

    def _finish(self, call: agentaccel.Call, outcome: Outcome) -> None:
        self.log.append((self.name, "exit"))
        self.outcomes.append(outcome)
        if self.error is not None:
            raise self.error


def accelerated(mode: Mode, body: Callable[[], Iterable[Any]], **options: Any) -> Callable[[], Any]:
    """An accelerated function of ``mode`` producing ``body()``'s items: returned as a list by the sync function
    and the coroutine, yielded one by one by the generators."""
    fn: Callable[[], Any]
    if mode is Mode.SYNC:
        def fn() -> list[Any]:
            return list(body())
    elif mode is Mode.ASYNC:
        async def fn() -> list[Any]:  # type: ignore[misc]
            return list(body())
    elif mode is Mode.SYNC_STREAM:
        def fn() -> Iterator[Any]:  # type: ignore[misc]
            yield from body()
    else:
        async def fn() -> Any:  # type: ignore[misc]
            for item in body():
                yield item
    return agentaccel.accelerate(fn, name="fn", **options)


def consume(mode: Mode, fn: Callable[[], Any], received: list[Any] | None = None) -> list[Any]:
    """Call ``fn`` the way its mode wants; stream chunks are appended to ``received`` as they arrive."""
    got: list[Any] = [] if received is None else received
    if mode is Mode.SYNC:
        got.extend(fn())
    elif mode is Mode.ASYNC:
        got.extend(asyncio.run(fn()))
    elif mode is Mode.SYNC_STREAM:
        for chunk in fn():
            got.append(chunk)
    else:
        async def read() -> None:
            async for chunk in fn():
                got.append(chunk)

        asyncio.run(read())
    return got


def failures_since(before: dict[str, int]) -> dict[str, int]:
    now = agentaccel.plugin_failures()
    return {name: count - before.get(name, 0) for name, count in now.items() if count != before.get(name, 0)}


# --- parity across the four modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_the_same_middleware_behaves_the_same_in_every_mode(mode: Mode, register: Register) -> None:
    log: list[tuple[str, str]] = []
    outer = Recorder("outer", log=log, collect=True)
    effects = Effects()
    inner = Recorder("inner", log=log)
    register(MiddlewarePlugin(outer, effects, Buggy("buggy-decide", "decide"), Buggy("buggy-unwind", "unwind"),
                              inner), "parity")
    agentaccel.enable()
    before = agentaccel.plugin_failures()
    called = []

    def body() -> Iterator[str]:
        called.append(True)
        yield from ["a", "b"]

    fn = accelerated(mode, body)

    assert consume(mode, fn) == ["a", "b"]
    assert consume(mode, fn) == ["a", "b"]

    assert called == [True, True]
    assert log == [("outer", "enter"), ("inner", "enter"), ("inner", "exit"), ("outer", "exit")] * 2
    for outcome in outer.outcomes + inner.outcomes:
        assert outcome.value == ["a", "b"]  # a stream's chunks, collected because "outer" asked
        assert outcome.error is None
        assert outcome.completed
    assert [call.name for call in outer.calls] == ["fn", "fn"]
    assert all(call.mode is mode for call in outer.calls)
    # Io: the sync drivers called run(), the async ones awaited arun(); results and errors went back to the flow.
    form, suffix = ("arun", "async") if mode.is_async else ("run", "sync")
    assert effects.ran == [form] * 6
    assert effects.received == [f"lock:{suffix}", "caught redis", f"store:{suffix}"] * 2
    # the buggy middleware were skipped and counted, every time; the calls went on without them
    assert failures_since(before) == {"buggy-decide": 2, "buggy-unwind": 2}


@pytest.mark.parametrize("mode", MODES, ids=IDS)
@pytest.mark.parametrize("where", ["decide", "no-decision", "junk", "unwind", "junk-after"])
def test_a_buggy_middleware_is_isolated_and_counted(mode: Mode, where: str, register: Register) -> None:
    outer = Recorder("outer", collect=True)
    inner = Recorder("inner")
    register(MiddlewarePlugin(outer, Buggy("buggy", where), inner), "buggy")
    agentaccel.enable()
    before = agentaccel.plugin_failures()

    assert consume(mode, accelerated(mode, lambda: ["a", "b"])) == ["a", "b"]

    assert failures_since(before) == {"buggy": 1}
    assert len(inner.outcomes) == 1
    assert [o.value for o in outer.outcomes] == [["a", "b"]]
    assert outer.outcomes[0].error is None
    assert not outer.outcomes[0].served


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_return_answers_without_calling_inward(mode: Mode, register: Register) -> None:
    log: list[tuple[str, str]] = []
    outer = Recorder("outer", log=log, collect=True)
    cache = ShortCircuit(["x", "y"])
    inner = Recorder("inner", log=log)
    register(MiddlewarePlugin(outer, cache, inner), "short-circuit")
    agentaccel.enable()
    called = []

    def body() -> Iterator[str]:
        called.append(True)
        yield "never"

    fn = accelerated(mode, body)

    assert consume(mode, fn) == ["x", "y"]

    assert called == []
    assert log == [("outer", "enter"), ("outer", "exit")]  # inner never entered
    for outcome in outer.outcomes + cache.outcomes:
        assert outcome.value == ["x", "y"]
        assert outcome.error is None
        assert outcome.served  # a middleware answered, not the original
    if mode.is_stream:
        # the chunks of a Return reach the caller as a stream, like the original's would
        result = fn()
        if mode is Mode.SYNC_STREAM:
            assert inspect.isgenerator(result)
            assert next(result) == "x"
            assert list(result) == ["y"]
        else:
            assert inspect.isasyncgen(result)

            async def read() -> list[Any]:
                return [chunk async for chunk in result]

            assert asyncio.run(read()) == ["x", "y"]
        assert isinstance(outer.outcomes[-1], StreamOutcome)
        assert outer.outcomes[-1].chunks == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES, ids=IDS)
@pytest.mark.parametrize("answer", [False, True], ids=["proceed", "return"])
def test_a_flow_may_return_its_decision_without_a_generator(mode: Mode, answer: bool, register: Register) -> None:
    log: list[tuple[str, str]] = []
    outer = Recorder("outer", log=log, collect=True)
    plain = Plain("plain", Return(["x", "y"]) if answer else PROCEED)
    inner = Recorder("inner", log=log)
    register(MiddlewarePlugin(outer, plain, inner), "plain")
    agentaccel.enable()
    before = agentaccel.plugin_failures()

    got = consume(mode, accelerated(mode, lambda: ["a", "b"]))

    assert plain.calls == 1 and failures_since(before) == {}
    if answer:
        assert got == ["x", "y"]
        assert log == [("outer", "enter"), ("outer", "exit")]  # inner never entered, the original never ran
        assert outer.outcomes[0].served and outer.outcomes[0].value == ["x", "y"]
    else:
        assert got == ["a", "b"]
        assert log == [("outer", "enter"), ("inner", "enter"), ("inner", "exit"), ("outer", "exit")]
        assert not outer.outcomes[0].served and outer.outcomes[0].value == ["a", "b"]


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_a_plain_flow_that_returns_junk_or_fails_is_isolated_and_one_that_refuses_refuses(
        mode: Mode, register: Register, caplog: pytest.LogCaptureFixture) -> None:
    # Names of their own in each mode: a failure is logged once per name and process.
    junk, bug = Plain(f"junk-{mode.value}", None), Plain(f"bug-{mode.value}", RuntimeError("bug"))
    refuse = Plain("refuse", Refused("no"))
    register(MiddlewarePlugin(junk, bug), "plain-bugs")
    agentaccel.enable()
    before = agentaccel.plugin_failures()
    with caplog.at_level(logging.ERROR, logger="agentaccel"):
        assert consume(mode, accelerated(mode, lambda: ["a"])) == ["a"]
    assert failures_since(before) == {junk.name: 1, bug.name: 1}
    assert (f"flow of '{junk.name}' returned None; expected a generator, PROCEED, a Return or a function of the "
            "outcome") in caplog.text
    register(MiddlewarePlugin(refuse), "plain-refuse")  # enabled now: registering re-enables with it
    with pytest.raises(Refused, match="no"):
        consume(mode, accelerated(mode, lambda: ["a"]))


@pytest.mark.parametrize("mode", MODES, ids=IDS)
@pytest.mark.parametrize("inside", ["nothing", "a generator flow", "a plain answer", "an answering generator"])
def test_a_finisher_is_told_the_outcome_in_its_turn_with_generator_flows_around_and_inside_it(
        mode: Mode, inside: str, register: Register) -> None:
    log: list[tuple[str, str]] = []
    outer, middle = Finisher("outer", log), Recorder("middle", log=log, collect=True)
    inner = {"nothing": Finisher("inner", log), "a generator flow": Recorder("inner", log=log),
             "a plain answer": Plain("inner", Return(["x"])), "an answering generator": ShortCircuit(["x"])}[inside]
    register(MiddlewarePlugin(outer, middle, inner), "finishers")
    agentaccel.enable()
    before = agentaccel.plugin_failures()
    answered = inside in ("a plain answer", "an answering generator")

    assert consume(mode, accelerated(mode, lambda: ["a", "b"])) == (["x"] if answered else ["a", "b"])

    expected_inner = [("inner", "enter"), ("inner", "exit")] if isinstance(inner, (Finisher, Recorder)) else []
    assert log == [("outer", "enter"), ("middle", "enter"), *expected_inner, ("middle", "exit"), ("outer", "exit")]
    (told,) = outer.outcomes
    assert told is middle.outcomes[0]  # the same Outcome, unchanged on its way out
    assert told.value == (["x"] if answered else ["a", "b"]) and told.error is None and told.served is answered
    assert failures_since(before) == {}


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_a_finisher_that_refuses_fails_the_call_and_one_with_a_bug_is_isolated(
        mode: Mode, register: Register) -> None:
    log: list[tuple[str, str]] = []
    outer = Finisher("outer", log)
    bug = Finisher(f"finisher-bug-{mode.value}", log, RuntimeError("bug"))
    register(MiddlewarePlugin(outer, bug), "finisher-bug")
    agentaccel.enable()
    before = agentaccel.plugin_failures()

    assert consume(mode, accelerated(mode, lambda: ["a"])) == ["a"]

    assert failures_since(before) == {bug.name: 1}
    told = outer.outcomes[0]  # the bug changed nothing (a stream's chunks are counted, not collected, here)
    assert told.completed and (told.chunks == 1 if isinstance(told, StreamOutcome) else told.value == ["a"])
    refuse = Finisher("refuse", log, Refused("not after all"))
    register(MiddlewarePlugin(refuse), "finisher-refuse")  # enabled now: registering re-enables with it
    with pytest.raises(Refused, match="not after all"):
        consume(mode, accelerated(mode, lambda: ["a"]))
    assert isinstance(outer.outcomes[-1].error, Refused)  # the middleware outside see the refusal


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_a_deliberate_error_before_deciding_reaches_the_caller(mode: Mode, register: Register) -> None:
    outer = Recorder("outer")
    refuse = Refuse("decide")
    inner = Recorder("inner")
    register(MiddlewarePlugin(outer, refuse, inner), "refuse")
    agentaccel.enable()
    before = agentaccel.plugin_failures()
    called = []

    def body() -> Iterator[int]:
        called.append(True)
        yield 1

    with pytest.raises(Refused) as caught:
        consume(mode, accelerated(mode, body))

    assert caught.value is refuse.error
    assert called == []
    assert inner.calls == []
    assert [o.error for o in outer.outcomes] == [refuse.error]
    assert failures_since(before) == {}


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_a_deliberate_error_after_the_outcome_reaches_the_caller(mode: Mode, register: Register) -> None:
    outer = Recorder("outer")
    refuse = Refuse("unwind")
    inner = Recorder("inner")
    register(MiddlewarePlugin(outer, refuse, inner), "refuse")
    agentaccel.enable()
    before = agentaccel.plugin_failures()

    with pytest.raises(Refused) as caught:
        consume(mode, accelerated(mode, lambda: [1, 2]))

    assert caught.value is refuse.error
    assert [o.error for o in inner.outcomes] == [None]  # the call itself succeeded
    assert [o.error for o in outer.outcomes] == [refuse.error]
    assert failures_since(before) == {}


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_the_functions_exception_reaches_the_caller_unchanged(mode: Mode, register: Register) -> None:
    outer = Recorder("outer")
    inner = Recorder("inner")
    register(MiddlewarePlugin(outer, inner), "recorders")
    agentaccel.enable()
    error = ValueError("the tool failed")

    def body() -> Iterator[str]:
        yield "a"
        raise error

    received: list[Any] = []
    with pytest.raises(ValueError) as caught:
        consume(mode, accelerated(mode, body), received)

    assert caught.value is error
    assert received == (["a"] if mode.is_stream else [])
    assert [o.error for o in outer.outcomes] == [error]
    assert [o.error for o in inner.outcomes] == [error]
    assert not outer.outcomes[0].completed


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_keyboard_interrupt_from_the_function_propagates(mode: Mode, register: Register) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    agentaccel.enable()

    def body() -> Iterator[str]:
        raise KeyboardInterrupt
        yield "never"

    with pytest.raises(KeyboardInterrupt):
        consume(mode, accelerated(mode, body))

    assert len(outer.outcomes) == 1
    assert isinstance(outer.outcomes[0].error, KeyboardInterrupt)


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_keyboard_interrupt_from_a_middleware_propagates_and_is_not_a_plugin_failure(
    mode: Mode, register: Register
) -> None:
    interrupt = KeyboardInterrupt()
    register(MiddlewarePlugin(Refuse("decide", interrupt)), "interrupting")
    agentaccel.enable()
    before = agentaccel.plugin_failures()

    with pytest.raises(KeyboardInterrupt) as caught:
        consume(mode, accelerated(mode, lambda: [1]))

    assert caught.value is interrupt
    assert failures_since(before) == {}


@pytest.mark.parametrize("mode", [Mode.ASYNC, Mode.ASYNC_STREAM], ids=["async", "async_stream"])
def test_cancelling_the_task_propagates_cancelled_error(mode: Mode, register: Register) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    agentaccel.enable()
    finally_ran: list[bool] = []

    async def main() -> None:
        started = asyncio.Event()
        task: asyncio.Task[Any]
        if mode is Mode.ASYNC:
            @agentaccel.accelerate
            async def slow() -> None:
                started.set()
                try:
                    await asyncio.Event().wait()  # until cancelled
                finally:
                    finally_ran.append(True)

            task = asyncio.create_task(slow())
        else:
            @agentaccel.accelerate
            async def chunks() -> Any:
                yield 1
                started.set()
                try:
                    await asyncio.Event().wait()
                    yield 2
                finally:
                    finally_ran.append(True)

            async def read() -> list[Any]:
                return [chunk async for chunk in chunks()]

            task = asyncio.create_task(read())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())

    assert finally_ran == [True]
    assert len(outer.outcomes) == 1
    assert isinstance(outer.outcomes[0].error, asyncio.CancelledError)


@pytest.mark.parametrize("mode", [Mode.SYNC_STREAM, Mode.ASYNC_STREAM], ids=["sync_stream", "async_stream"])
@pytest.mark.parametrize("collect", [False, True])
def test_collect_puts_a_streams_chunks_in_the_outcome(mode: Mode, collect: bool, register: Register) -> None:
    recorder = Recorder("recorder", collect=collect)
    register(MiddlewarePlugin(recorder), "recorder")
    agentaccel.enable()

    assert consume(mode, accelerated(mode, lambda: ["a", "b", "c"])) == ["a", "b", "c"]

    outcome = recorder.outcomes[-1]
    assert isinstance(outcome, StreamOutcome)
    # the chunks are kept only when a middleware asked for them
    assert outcome.value == (["a", "b", "c"] if collect else None)
    assert (outcome.chunks, outcome.last, outcome.completed) == (3, "c", True)


@pytest.mark.parametrize("mode", [Mode.SYNC_STREAM, Mode.ASYNC_STREAM], ids=["sync_stream", "async_stream"])
def test_a_collecting_function_sees_each_chunk_before_the_consumer(mode: Mode, register: Register) -> None:
    def copy_of(chunk: dict[str, str]) -> dict[str, str]:
        if chunk["text"] == "refused":
            raise ValueError("not collectable")
        return dict(chunk)

    recorder = Recorder("recorder", collect=copy_of)
    register(MiddlewarePlugin(recorder), "recorder")
    agentaccel.enable()

    def read_changing(texts: list[str]) -> list[str]:
        """Consume a stream of chunks, changing each one as it arrives."""
        stream = accelerated(mode, lambda: [{"text": text} for text in texts])
        got: list[str] = []
        if mode is Mode.SYNC_STREAM:
            for chunk in stream():
                got.append(chunk["text"])
                chunk["text"] = "changed by the consumer"
        else:
            async def read() -> None:
                async for chunk in stream():
                    got.append(chunk["text"])
                    chunk["text"] = "changed by the consumer"

            asyncio.run(read())
        return got

    assert read_changing(["a", "b"]) == ["a", "b"]
    assert recorder.outcomes[-1].value == [{"text": "a"}, {"text": "b"}]

    # A chunk the function refuses: nothing is collected, and the consumer still gets the whole stream.
    assert read_changing(["a", "refused", "c"]) == ["a", "refused", "c"]
    outcome = recorder.outcomes[-1]
    assert (outcome.value, outcome.chunks, outcome.completed) == (None, 3, True)


# --- streams that end early ------------------------------------------------------------------------------------


def _numbers(finally_ran: list[bool]) -> Callable[[], Iterator[int]]:
    @agentaccel.accelerate(name="numbers")
    def numbers() -> Iterator[int]:
        try:
            yield from range(10)
        finally:
            finally_ran.append(True)

    return numbers


def _assert_abandoned(spans: Any, outer: Recorder, finally_ran: list[bool]) -> None:
    span = spans.span("execute_tool numbers")
    assert span.attributes["agentaccel.stream.abandoned"] is True
    assert span.attributes["agentaccel.stream.completed"] is False
    assert span.attributes["agentaccel.stream.chunks"] == 2
    assert span.status.status_code is StatusCode.UNSET  # the consumer stopped: not a failure of the call
    assert "error.type" not in span.attributes
    assert len(outer.outcomes) == 1
    assert isinstance(outer.outcomes[0].error, GeneratorExit)
    assert not outer.outcomes[0].completed
    assert finally_ran == [True]


def test_a_sync_stream_closed_half_way_ends_its_span(agentaccel_spans: Any, register: Register) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    finally_ran: list[bool] = []
    stream = _numbers(finally_ran)()

    assert [next(stream), next(stream)] == [0, 1]
    stream.close()  # type: ignore[attr-defined]

    _assert_abandoned(agentaccel_spans, outer, finally_ran)


def test_a_sync_stream_dropped_half_way_ends_its_span_when_collected(
    agentaccel_spans: Any, register: Register
) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    finally_ran: list[bool] = []
    stream = _numbers(finally_ran)()

    assert [next(stream), next(stream)] == [0, 1]
    del stream
    gc.collect()

    _assert_abandoned(agentaccel_spans, outer, finally_ran)


def test_an_async_stream_closed_half_way_ends_its_span(agentaccel_spans: Any, register: Register) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    finally_ran: list[bool] = []

    @agentaccel.accelerate(name="numbers")
    async def numbers() -> Any:
        try:
            for i in range(10):
                yield i
        finally:
            finally_ran.append(True)

    async def main() -> list[int]:
        stream = numbers()
        got = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return got

    assert asyncio.run(main()) == [0, 1]

    _assert_abandoned(agentaccel_spans, outer, finally_ran)


@pytest.mark.parametrize("mode", [Mode.SYNC_STREAM, Mode.ASYNC_STREAM], ids=["sync_stream", "async_stream"])
def test_an_exception_mid_stream_ends_the_span_with_an_error(
    mode: Mode, agentaccel_spans: Any, register: Register
) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    error = ValueError("connection reset mid-stream")

    def body() -> Iterator[str]:
        yield "a"
        raise error

    received: list[Any] = []
    with pytest.raises(ValueError) as caught:
        consume(mode, accelerated(mode, body), received)

    assert caught.value is error
    assert received == ["a"]
    span = agentaccel_spans.span("execute_tool fn")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes["agentaccel.stream.chunks"] == 1
    assert span.attributes["agentaccel.stream.completed"] is False
    assert "agentaccel.stream.abandoned" not in span.attributes
    assert outer.outcomes[0].error is error


def test_a_sync_stream_whose_source_fails_to_close_still_ends_its_span(agentaccel_spans: Any,
                                                                         register: Register) -> None:
    # The consumer stops early and the source's own clean-up raises: the caller gets that error, as without
    # agentaccel, and the span and every middleware still see the call end (a limiter releases its slot).
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    error = RuntimeError("cleanup failed")

    @agentaccel.accelerate(name="numbers")
    def numbers() -> Iterator[int]:
        try:
            yield from range(10)
        finally:
            raise error

    stream = numbers()
    assert next(stream) == 0
    with pytest.raises(RuntimeError) as caught:
        stream.close()  # type: ignore[attr-defined]

    assert caught.value is error
    assert outer.outcomes[0].error is error
    span = agentaccel_spans.span("execute_tool numbers")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["agentaccel.stream.chunks"] == 1


def test_an_async_stream_cancelled_while_its_source_closes_still_ends_its_span(agentaccel_spans: Any,
                                                                                register: Register) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    closing = asyncio.Event()

    @agentaccel.accelerate(name="numbers")
    async def numbers() -> Any:
        try:
            for i in range(10):
                yield i
        finally:
            closing.set()
            await asyncio.Event().wait()  # a clean-up that waits (closing a connection) until cancelled

    async def main() -> None:
        async def read_one_and_close() -> None:
            stream = numbers()
            await stream.__anext__()
            await stream.aclose()

        task = asyncio.create_task(read_one_and_close())
        await closing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    assert isinstance(outer.outcomes[0].error, asyncio.CancelledError)
    span = agentaccel_spans.span("execute_tool numbers")
    assert span.attributes["error.type"] == "CancelledError"
    assert span.attributes["agentaccel.stream.chunks"] == 1


# --- the context effects run in ---------------------------------------------------------------------------------


class Witness(Middleware):
    """Inside tracing: an Io before deciding and one after the outcome, each noting the span current while it
    runs; the first also makes a model call of its own (``guard``), as a middleware asking a model would."""

    name = "witness"
    after = ("tracing",)

    def __init__(self, guard: Callable[[], Any]) -> None:
        self.guard = guard
        self.seen: list[tuple[str, int]] = []

    def _io(self, label: str) -> Io:
        def run() -> None:
            self.seen.append((label, trace.get_current_span().get_span_context().span_id))
            if label == "before":
                self.guard()

        async def arun() -> None:
            await asyncio.sleep(0)
            run()

        return Io(run, arun)

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        if call.name == "guard":
            yield PROCEED
            return
        yield self._io("before")
        yield PROCEED
        yield self._io("after")


@pytest.mark.parametrize("mode", MODES, ids=IDS)
@pytest.mark.parametrize("answered", [True, False], ids=["answered", "ran"])
def test_effects_run_in_the_calls_span_and_a_model_call_they_make_is_its_own(
        mode: Mode, answered: bool, agentaccel_spans: Any, register: Register) -> None:
    # What a middleware does for a call (a Redis round trip, a wait for a slot) is part of the call: an
    # instrumented client's span for it belongs under the call's span, also when a middleware inside answers
    # the call and the span would otherwise start only at the end.
    guard = agentaccel.wrap(lambda: "allowed", operation=agentaccel.CHAT, name="guard")
    witness = Witness(guard)
    register(MiddlewarePlugin(witness, *([ShortCircuit(["x"])] if answered else [])), "witnessing")
    # (ShortCircuit answers the guard's call too: what matters is where its span is.)
    agentaccel_spans.enable()

    got = consume(mode, accelerated(mode, lambda: ["a"], operation=agentaccel.CHAT))

    assert got == (["x"] if answered else ["a"])
    call_span, guard_span = agentaccel_spans.span("chat fn"), agentaccel_spans.span("chat guard")
    assert call_span.context is not None
    assert witness.seen == [("before", call_span.context.span_id), ("after", call_span.context.span_id)]
    # The guard's model call made inside this model call's effect is not folded into it: it has its own span.
    assert guard_span.parent is not None and guard_span.parent.span_id == call_span.context.span_id


# --- a replayed answer's effects -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
@pytest.mark.parametrize("answered", [True, False], ids=["replayed", "ran"])
def test_a_targets_replay_sees_what_was_answered_in_the_span(mode: Mode, answered: bool, agentaccel_spans: Any,
                                                             register: Register) -> None:
    # What an adapter does for the effects the original has inside it (a framework's token callbacks, its stream
    # events): for an answer only, in the span's context, before the caller gets it (each chunk of a stream, a
    # call's whole result); awaited in async calls.
    register(MiddlewarePlugin(ShortCircuit(["x", "y"]) if answered else Recorder("passes")), "replaying")
    agentaccel_spans.enable()
    seen: list[tuple[Any, ...]] = []
    received: list[Any] = []

    def replay(call: agentaccel.Call, value: Any) -> Any:
        entry = (call.name, value, trace.get_current_span().get_span_context().span_id, list(received))
        if not mode.is_async:
            seen.append(entry)
            return None

        async def later() -> None:
            await asyncio.sleep(0)  # a real suspension: only an awaited result gets past it
            seen.append(entry)

        return later()

    target = agentaccel.Target(framework="test", operation="chat", name="replaying", mode=mode, replay=replay)
    original = accelerated(mode, lambda: ["a", "b"]).__wrapped__  # type: ignore[attr-defined]
    call = functools.partial(interceptor(target), original, None, (), {})

    got = consume(mode, call, received)

    span = agentaccel_spans.span("chat replaying")
    assert span.context is not None
    if not answered:
        assert got == ["a", "b"]
        assert seen == []
    elif mode.is_stream:
        assert got == ["x", "y"]
        assert seen == [("replaying", "x", span.context.span_id, []), ("replaying", "y", span.context.span_id, ["x"])]
    else:
        assert got == ["x", "y"]
        assert seen == [("replaying", ["x", "y"], span.context.span_id, [])]


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_a_failing_replay_fails_the_call_where_it_failed(mode: Mode, register: Register,
                                                         agentaccel_spans: Any) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer, ShortCircuit(["x", "y", "z"])), "replaying")
    agentaccel_spans.enable()

    def replay(call: agentaccel.Call, value: Any) -> Any:
        if value == "y" or isinstance(value, list):
            raise ValueError("replay refused")
        return None

    target = agentaccel.Target(framework="test", operation="chat", name="replaying", mode=mode, replay=replay)
    original = accelerated(mode, lambda: ["a"]).__wrapped__  # type: ignore[attr-defined]
    received: list[Any] = []

    with pytest.raises(ValueError, match="replay refused"):
        consume(mode, functools.partial(interceptor(target), original, None, (), {}), received)

    assert received == (["x"] if mode.is_stream else [])
    assert isinstance(outer.outcomes[0].error, ValueError)
    assert outer.outcomes[0].served
    span = agentaccel_spans.span("chat replaying")
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "ValueError"


CALL_MODES = [Mode.SYNC, Mode.ASYNC]


@pytest.mark.parametrize("mode", CALL_MODES, ids=[m.value for m in CALL_MODES])
@pytest.mark.parametrize("answered", [True, False], ids=["answered", "ran"])
def test_a_targets_adopt_makes_an_answer_the_calls_own_outside_the_span(mode: Mode, answered: bool,
                                                                        agentaccel_spans: Any,
                                                                        register: Register) -> None:
    # What only this call has (a run's ids) goes into an answered result before the caller gets it; unlike a
    # replay it runs outside the span's context, so the span is started once, at the end, with every attribute.
    register(MiddlewarePlugin(ShortCircuit([{"id": None}]) if answered else Recorder("passes")), "adopting")
    agentaccel_spans.enable()
    seen: list[Any] = []

    def adopt(call: agentaccel.Call, value: Any) -> None:
        seen.append(trace.get_current_span().get_span_context().is_valid)
        value[0]["id"] = f"{call.name}'s own"

    target = agentaccel.Target(framework="test", operation="chat", name="adopting", mode=mode, adopt=adopt)
    original = accelerated(mode, lambda: [{"id": "fresh"}]).__wrapped__  # type: ignore[attr-defined]

    got = consume(mode, functools.partial(interceptor(target), original, None, (), {}))

    assert got == ([{"id": "adopting's own"}] if answered else [{"id": "fresh"}])
    assert seen == ([False] if answered else [])  # not in the span's context; never for what the original made
    assert agentaccel_spans.span("chat adopting").status.status_code is not StatusCode.ERROR


@pytest.mark.parametrize("mode", CALL_MODES, ids=[m.value for m in CALL_MODES])
def test_a_failing_adopt_fails_the_answered_call(mode: Mode, register: Register, agentaccel_spans: Any) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer, ShortCircuit(["x"])), "adopting")
    agentaccel_spans.enable()

    def adopt(call: agentaccel.Call, value: Any) -> None:
        raise ValueError("adopt refused")

    target = agentaccel.Target(framework="test", operation="chat", name="adopting", mode=mode, adopt=adopt)
    original = accelerated(mode, lambda: ["a"]).__wrapped__  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="adopt refused"):
        consume(mode, functools.partial(interceptor(target), original, None, (), {}))

    assert isinstance(outer.outcomes[0].error, ValueError) and outer.outcomes[0].served
    span = agentaccel_spans.span("chat adopting")
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "ValueError"


def test_adopt_is_refused_for_a_stream() -> None:
    with pytest.raises(ValueError, match="adopt= is for a call's result"):
        agentaccel.Target(framework="test", operation="chat", name="s", mode=Mode.SYNC_STREAM,
                          adopt=lambda call, value: None)


# --- ordering ----------------------------------------------------------------------------------------------------


def test_middleware_are_ordered_by_before_and_after(register: Register) -> None:
    log: list[tuple[str, str]] = []
    a = Recorder("a", log=log, after=("c",))  # c runs outside a
    b = Recorder("b", log=log)
    c = Recorder("c", log=log, before=("b", "not-installed"))  # c runs outside b; unknown names are ignored
    register(MiddlewarePlugin(a, b, c), "ordered")
    rt = agentaccel.enable()

    assert [mw.name for mw in rt.middleware] == ["tracing", "c", "a", "b"]
    consume(Mode.SYNC, accelerated(Mode.SYNC, lambda: [1]))
    assert log == [("c", "enter"), ("a", "enter"), ("b", "enter"), ("b", "exit"), ("a", "exit"), ("c", "exit")]


def test_registration_order_is_kept_where_before_and_after_leave_a_choice(register: Register) -> None:
    log: list[tuple[str, str]] = []
    register(MiddlewarePlugin(Recorder("m2", log=log), Recorder("m1", log=log)), "first")
    register(MiddlewarePlugin(Recorder("m3", log=log)), "second")
    rt = agentaccel.enable()

    assert [mw.name for mw in rt.middleware] == ["tracing", "m2", "m1", "m3"]
    consume(Mode.ASYNC, accelerated(Mode.ASYNC, lambda: [1]))
    assert [name for name, step in log if step == "enter"] == ["m2", "m1", "m3"]


def test_a_middleware_placing_itself_outside_tracing_leaves_the_others_where_they_were(
    register: Register
) -> None:
    # "audit" says nothing about tracing, and tracing was registered first: it stays inside tracing. Only
    # "outermost", which asked for it, moves outside.
    register(MiddlewarePlugin(Recorder("audit"), Recorder("outermost", before=("tracing",))), "outside")
    rt = agentaccel.enable()

    assert [mw.name for mw in rt.middleware] == ["outermost", "tracing", "audit"]


def test_an_order_cycle_is_a_plugin_error_naming_its_members(register: Register) -> None:
    register(MiddlewarePlugin(Recorder("alpha", before=("beta",)), Recorder("beta", before=("alpha",)),
                              Recorder("gamma")), "cyclic")

    with pytest.raises(PluginError) as caught:
        agentaccel.enable()

    message = str(caught.value)
    assert "cycle" in message
    assert "alpha" in message
    assert "beta" in message
    assert agentaccel.runtime() is None


def test_tracing_is_outermost_of_the_standard_names(register: Register) -> None:
    # tracing declares it runs outside profile, cache, limit and pool: one of them claiming the outside is a cycle
    register(MiddlewarePlugin(Recorder("cache", before=("tracing",))), "greedy-cache")
    with pytest.raises(PluginError, match="cycle") as caught:
        agentaccel.enable()
    assert "cache" in str(caught.value)
    assert "tracing" in str(caught.value)

    # and wherever tracing is registered, it is placed outside them; the others keep their registration order
    standard = [Recorder("pool"), Recorder("limit"), Recorder("cache"), Recorder("profile")]
    tracing = Tracing(NoOpTracerProvider(), None)
    mine = Recorder("mine")
    assert [mw.name for mw in order([*standard, tracing, mine])] == [
        "tracing", "pool", "limit", "cache", "profile", "mine"]


def test_two_middleware_with_one_name_are_a_plugin_error(register: Register) -> None:
    register(MiddlewarePlugin(Recorder("twin"), Recorder("twin")), "twins")
    with pytest.raises(PluginError, match="'twin'"):
        agentaccel.enable()


def test_a_middleware_without_a_name_is_a_plugin_error(register: Register) -> None:
    register(MiddlewarePlugin(Recorder("")), "nameless")
    with pytest.raises(PluginError, match="no name"):
        agentaccel.enable()


# --- scope and options ---------------------------------------------------------------------------------------------


def test_scope_flows_into_asyncio_tasks_and_accelerated_calls(register: Register) -> None:
    outer = Recorder("outer")
    register(MiddlewarePlugin(outer), "recorder")
    agentaccel.enable()

    @agentaccel.accelerate
    async def tool(i: int) -> dict[str, str]:
        return dict(agentaccel.current_scope())

    async def main() -> list[Any]:
        with agentaccel.scope(tenant="acme"):
            return await asyncio.gather(tool(1), asyncio.create_task(tool(2)))

    assert asyncio.run(main()) == [{"tenant": "acme"}, {"tenant": "acme"}]
    assert [dict(call.scope) for call in outer.calls] == [{"tenant": "acme"}] * 2
    assert dict(agentaccel.current_scope()) == {}


def test_nested_scopes_merge_and_the_inner_wins() -> None:
    with agentaccel.scope(tenant="acme", user="u1") as outer:
        assert dict(outer) == {"tenant": "acme", "user": "u1"}
        with agentaccel.scope(user="u2", region="eu") as inner:
            assert dict(inner) == {"tenant": "acme", "user": "u2", "region": "eu"}
            assert agentaccel.current_scope() == inner
        assert dict(agentaccel.current_scope()) == {"tenant": "acme", "user": "u1"}
    assert dict(agentaccel.current_scope()) == {}


def test_a_scope_value_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"scope\(tenant=\.\.\.\) takes a str, got int"), \
            agentaccel.scope(tenant=42):  # type: ignore[arg-type]
        pass
    assert dict(agentaccel.current_scope()) == {}


class OptionsPlugin:
    """Declares per-call options, as a cache plugin would."""

    @agentaccel.hookimpl
    def agentaccel_add_config(self, spec: agentaccel.ConfigSpec) -> None:
        spec.add_option("cache_ttl", int, "seconds to keep results of these calls", check=_positive)
        spec.add_option("cache", bool, "False bypasses the cache for these calls")


def _positive(value: int) -> None:
    if value <= 0:
        raise ValueError(f"must be a positive number of seconds, got {value}")


def test_options_reach_middleware_and_nested_options_merge(register: Register) -> None:
    outer = Recorder("outer")
    register(OptionsPlugin(), "options")
    register(MiddlewarePlugin(outer), "recorder")
    agentaccel.enable()
    fn = accelerated(Mode.SYNC, lambda: [1])

    with agentaccel.options(cache_ttl=5), agentaccel.options(cache=False):
        assert dict(agentaccel.current_options()) == {"cache_ttl": 5, "cache": False}
        fn()
    fn()

    assert [dict(call.options) for call in outer.calls] == [{"cache_ttl": 5, "cache": False}, {}]


def test_an_unknown_option_while_enabled_names_the_closest_option(register: Register) -> None:
    register(OptionsPlugin(), "options")
    agentaccel.enable()

    with pytest.raises(ConfigError) as caught, agentaccel.options(cache_tll=5):
        pass
    assert "'cache_tll'" in str(caught.value)
    assert "did you mean 'cache_ttl'?" in str(caught.value)
    assert dict(agentaccel.current_options()) == {}

    with pytest.raises(ConfigError, match=r"options\(cache_ttl=\.\.\.\): expected an integer"), \
            agentaccel.options(cache_ttl="soon"):
        pass
    # The right type, but a value the plugin's check refuses: its message, under the option's name.
    with pytest.raises(ConfigError, match=r"^options\(cache_ttl=\.\.\.\): must be a positive number of seconds, "
                                          r"got -1$"), agentaccel.options(cache_ttl=-1):
        pass
    assert dict(agentaccel.current_options()) == {}


def test_options_are_not_checked_while_disabled() -> None:
    with agentaccel.options(anything_at_all=1) as merged:
        assert dict(merged) == {"anything_at_all": 1}


# --- which middleware run, and what they are told -----------------------------------------------------------------


class ModelsOnly(Recorder):
    def accepts(self, target: agentaccel.Target) -> bool:
        return target.operation == "chat"


class BrokenAccepts(Recorder):
    def accepts(self, target: agentaccel.Target) -> bool:
        raise RuntimeError("bug in accepts")


class Chained(Recorder):
    """Records what it is told runs inside it, per target."""

    def __init__(self, name: str, *, broken: bool = False) -> None:
        super().__init__(name)
        self.broken = broken
        self.told: list[tuple[str, tuple[str, ...]]] = []

    def chained(self, target: agentaccel.Target, inner: tuple[Middleware, ...]) -> None:
        self.told.append((target.name, tuple(mw.name for mw in inner)))
        if self.broken:
            raise RuntimeError("bug in chained")


def test_middleware_run_for_the_targets_they_accept_and_are_told_what_runs_inside(register: Register) -> None:
    everything = Chained("everything")
    models_only = ModelsOnly("models-only")
    broken = BrokenAccepts("broken-accepts")
    broken_chained = Chained("broken-chained", broken=True)
    innermost = Chained("innermost")
    register(MiddlewarePlugin(everything, models_only, broken, broken_chained, innermost), "accepting")
    agentaccel.enable()
    before = agentaccel.plugin_failures()

    @agentaccel.accelerate(operation="chat")
    def chat() -> str:
        return "hi"

    @agentaccel.accelerate
    def tool() -> str:
        return "done"

    assert (chat(), chat(), tool()) == ("hi", "hi", "done")

    assert [call.name for call in models_only.calls] == ["chat", "chat"]
    assert [call.name for call in everything.calls] == ["chat", "chat", "tool"]
    assert broken.calls == []
    # Each is told once per target which middleware run inside it; a bug there is counted, and the middleware
    # still runs: it accepted the target. A bug in accepts is counted each time it is asked, once per target.
    assert everything.told == [("chat", ("models-only", "broken-chained", "innermost")),
                               ("tool", ("broken-chained", "innermost"))]
    assert innermost.told == [("chat", ()), ("tool", ())]
    assert [call.name for call in broken_chained.calls] == ["chat", "chat", "tool"]
    assert failures_since(before) == {"broken-accepts": 2, "broken-chained": 2}


class Contextual(Middleware):
    """Sets ``call.context`` to a function that makes the context the original runs in (or fails)."""

    name = "contextual"

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.made = 0

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        def make() -> Any:
            self.made += 1
            if self.fail:
                raise RuntimeError("bug making the context")
            return otel_context.set_value("agentaccel.test", "inside")

        call.context = make
        yield PROCEED


@pytest.mark.parametrize("mode", MODES, ids=IDS)
@pytest.mark.parametrize("fail", [False, True], ids=["made", "failing"])
def test_a_context_function_is_called_once_when_the_original_starts(mode: Mode, fail: bool,
                                                                     register: Register) -> None:
    contextual = Contextual(fail=fail)
    register(MiddlewarePlugin(contextual), "contextual")
    agentaccel.enable(tracing={"export": "none"})
    before = agentaccel.plugin_failures()
    seen: list[Any] = []

    def body() -> Iterator[int]:
        for i in range(3):  # each step of a stream runs in the context, made once for all of them
            seen.append(otel_context.get_value("agentaccel.test"))
            yield i

    assert consume(mode, accelerated(mode, body)) == [0, 1, 2]

    assert contextual.made == 1
    if fail:  # the original still runs, outside the context the buggy middleware could not make
        assert seen == [None] * 3
        assert failures_since(before) == {"call.context": 1}
    else:
        assert seen == ["inside"] * 3
        assert failures_since(before) == {}


def test_the_default_request_is_the_bound_arguments(register: Register) -> None:
    recorder = Recorder("recorder")
    register(MiddlewarePlugin(recorder), "recorder")
    agentaccel.enable()

    @agentaccel.accelerate
    def search(query: str, limit: int = 10) -> list[str]:
        return []

    class Toolbox:
        @agentaccel.accelerate
        def fetch(self, url: str) -> str:
            return url

    search("otel")
    search(query="otel", limit=10)
    Toolbox().fetch("https://example.invalid")

    requests = [dict(call.request) for call in recorder.calls]
    function = f"{__name__}.test_the_default_request_is_the_bound_arguments.<locals>.search"
    assert requests[0] == requests[1] == {"function": function, "arguments": {"query": "otel", "limit": 10}}
    assert requests[2]["arguments"] == {"url": "https://example.invalid"}  # self left out


def test_a_call_with_arguments_its_signature_rejects_is_the_callers_error_not_a_plugins(
        agentaccel_spans: Any) -> None:
    # The default request binds the arguments; a call the signature rejects fails in the function itself, and
    # its span records that, rather than the tracing plugin failing on the request and recording nothing.
    @agentaccel.accelerate(operation=agentaccel.CHAT, name="model")
    def chat(prompt: str) -> str:
        return prompt

    before = agentaccel.plugin_failures()
    with pytest.raises(TypeError):
        chat("hi", "unexpected")  # type: ignore[call-arg]

    assert failures_since(before) == {}
    span = agentaccel_spans.span("chat model")
    assert span.attributes["error.type"] == "TypeError"


def test_an_adapters_identify_that_raises_never_fails_the_call(agentaccel_spans: Any) -> None:
    def identify(call: agentaccel.Call) -> tuple[str, str | None]:
        raise KeyError("model_name")  # an adapter's bug, say a framework release that renamed a field

    target = agentaccel.Target(framework="fake", operation=agentaccel.CHAT, name="model", mode=Mode.SYNC,
                               provider="openai", identify=identify)
    before = agentaccel.plugin_failures()

    assert interceptor(target)(lambda x: x * 2, None, (21,), {}) == 42

    assert failures_since(before) == {"fake adapter's identify() for chat": 1}
    span = agentaccel_spans.span("chat model")  # the target's own name and provider
    assert span.attributes["gen_ai.provider.name"] == "openai"


def test_a_stream_started_before_disable_finishes_through_its_pipeline(agentaccel_spans: Any) -> None:
    @agentaccel.accelerate(name="numbers")
    def numbers() -> Iterator[int]:
        yield from range(4)

    stream = numbers()
    assert next(stream) == 0
    agentaccel.disable()
    assert list(stream) == [1, 2, 3]

    span = agentaccel_spans.span("execute_tool numbers")
    assert span.attributes["agentaccel.stream.chunks"] == 4
    assert span.attributes["agentaccel.stream.completed"] is True


# --- accelerate on static and class methods, whichever decorator is outermost -------------------------------------


def test_accelerate_over_staticmethod_keeps_an_async_function_async(agentaccel_spans: Any) -> None:
    class Tools:
        @agentaccel.accelerate
        @staticmethod
        async def fetch(url: str) -> str:
            await asyncio.sleep(0)
            raise ConnectionError(url)

    with pytest.raises(ConnectionError):
        asyncio.run(Tools.fetch("https://example.invalid"))

    span = agentaccel_spans.span("execute_tool fetch")
    # the span covers the coroutine's run, so it saw the error: the call was not taken for a sync one
    assert span.attributes["agentaccel.mode"] == "async"
    assert span.status.status_code is StatusCode.ERROR


def test_accelerate_over_classmethod(agentaccel_spans: Any) -> None:
    class Tools:
        prefix = "tools"

        @agentaccel.accelerate
        @classmethod
        def describe(cls, item: str) -> str:
            return f"{cls.prefix}:{item}"

    assert Tools.describe("x") == "tools:x"
    assert Tools().describe("y") == "tools:y"
    assert [s.name for s in agentaccel_spans.spans()] == ["execute_tool describe"] * 2


def test_staticmethod_and_classmethod_over_accelerate(agentaccel_spans: Any) -> None:
    class Tools:
        prefix = "tools"

        @staticmethod
        @agentaccel.accelerate
        async def fetch(url: str) -> str:
            await asyncio.sleep(0)
            raise ConnectionError(url)

        @classmethod
        @agentaccel.accelerate
        def describe(cls, item: str) -> str:
            return f"{cls.prefix}:{item}"

    with pytest.raises(ConnectionError):
        asyncio.run(Tools.fetch("https://example.invalid"))
    assert Tools.describe("x") == "tools:x"

    assert agentaccel_spans.span("execute_tool fetch").status.status_code is StatusCode.ERROR
    agentaccel_spans.span("execute_tool describe")
