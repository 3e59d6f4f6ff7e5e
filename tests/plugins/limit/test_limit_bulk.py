"""map and amap: ordered results, per-item errors, bounded concurrency, progress only when asked or on a tty."""

from __future__ import annotations

import asyncio
import contextvars
import io
import random
import threading
import time

import pytest
from agentaccel_limit import Batch, ItemCancelled, amap, map

LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("label", default="none")


def test_map_keeps_input_order_and_captures_each_error() -> None:
    def work(x: int) -> int:
        time.sleep(random.random() / 1000)  # finish out of order
        if x % 7 == 3:
            raise ValueError(f"bad {x}")
        return x * x

    batch = map(work, range(50), concurrency=8, progress=False)
    assert isinstance(batch, Batch) and len(batch) == 50
    assert [item.index for item in batch] == list(range(50))
    assert [item.input for item in batch] == list(range(50))
    assert [item.value for item in batch if item.ok] == [x * x for x in range(50) if x % 7 != 3]
    assert [str(item.error) for item in batch.errors] == [f"bad {x}" for x in range(50) if x % 7 == 3]
    with pytest.raises(ExceptionGroup) as info:
        batch.values()
    assert len(info.value.exceptions) == 7
    assert "50 items in" in batch.summary() and "7 errors" in batch.summary()


def test_map_runs_at_most_concurrency_at_once_in_the_callers_context() -> None:
    gauge = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def work(x: int) -> str:
        with lock:
            gauge["now"] += 1
            gauge["peak"] = max(gauge["peak"], gauge["now"])
        time.sleep(0.002)
        with lock:
            gauge["now"] -= 1
        return LABEL.get()

    LABEL.set("caller")
    batch = map(work, range(40), concurrency=5, progress=False)
    assert batch.values() == ["caller"] * 40
    assert gauge["peak"] <= 5


def test_amap_keeps_order_captures_errors_and_bounds_concurrency() -> None:
    gauge = {"now": 0, "peak": 0}

    async def work(x: int) -> int:
        gauge["now"] += 1
        gauge["peak"] = max(gauge["peak"], gauge["now"])
        await asyncio.sleep(random.random() / 1000)
        gauge["now"] -= 1
        if x == 13:
            raise KeyError(x)
        LABEL.set(f"item {x}")  # each item runs in its own copy of the context
        return x + 1

    async def scenario() -> Batch[int, int]:
        LABEL.set("caller")
        batch = await amap(work, range(30), concurrency=4, progress=False)
        assert LABEL.get() == "caller"
        return batch

    batch = asyncio.run(scenario())
    assert [item.value for item in batch] == [x + 1 if x != 13 else None for x in range(30)]
    assert [item.index for item in batch.errors] == [13]
    assert isinstance(batch[13].error, KeyError)
    assert gauge["peak"] == 4


def test_cancelling_amap_cancels_its_calls() -> None:
    started: list[int] = []

    async def work(x: int) -> None:
        started.append(x)
        await asyncio.sleep(10)

    async def scenario() -> None:
        task = asyncio.create_task(amap(work, range(10), concurrency=3, progress=False))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert started == [0, 1, 2]


def test_a_call_that_cancels_itself_is_an_error_of_its_item_and_loses_nothing() -> None:
    async def work(x: int) -> int:
        if x % 3 == 0:
            raise asyncio.CancelledError  # as an awaited future cancelled under the call would
        if x % 3 == 1:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the call cancels its own task
            await asyncio.sleep(1)
        return x

    batch = asyncio.run(amap(work, range(9), concurrency=1, progress=False))  # one worker: it must outlive each
    assert [item.index for item in batch] == list(range(9))
    assert [item.value for item in batch if item.ok] == [2, 5, 8]
    errors = {item.index: item.error for item in batch.errors}
    assert sorted(errors) == [0, 1, 3, 4, 6, 7]
    assert all(isinstance(e, ItemCancelled) and "input" in str(e) for e in errors.values())
    assert all(isinstance(e.__cause__, asyncio.CancelledError) for e in errors.values() if e is not None)


def test_progress_bar_and_summary_when_asked() -> None:
    out = io.StringIO()
    batch = map(lambda x: 1 / x, [1, 0, 2], concurrency=2, progress=True, stream=out)
    text = out.getvalue()
    assert "3/3" in text and "1 errors" in text
    assert text.rstrip().endswith(f"agentaccel.map: {batch.summary()}")


def test_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()  # isatty() is False
    asyncio.run(amap(asyncio.sleep, [0, 0], stream=out))
    assert out.getvalue() == ""


def test_empty_inputs() -> None:
    assert len(map(str, [], progress=False)) == 0
    assert len(asyncio.run(amap(asyncio.sleep, [], progress=False))) == 0
