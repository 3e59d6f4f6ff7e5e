"""``map`` and ``amap``: run one function over many inputs with bounded concurrency. Results come back in input
order, each item's error is captured rather than aborting the batch, a progress bar shows on a terminal, and the
batch reports its throughput and error count."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TextIO, TypeVar, overload

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Item(Generic[T, R]):
    """One input's result: ``value``, or the ``error`` its call raised."""

    index: int
    input: T
    value: R | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ItemCancelled(Exception):
    """An item's call of :func:`amap` ended in a cancellation that did not come from cancelling the batch (the
    function cancelled something it awaited, or its own task): kept in its item like any other error, so that
    the batch still has one item per input."""


class Batch(Sequence[Item[T, R]]):
    """The items of a batch in input order, with ``elapsed_s``, ``throughput`` (items per second) and
    ``errors`` (the failed items)."""

    def __init__(self, items: list[Item[T, R]], elapsed_s: float) -> None:
        self.items = items
        self.elapsed_s = elapsed_s

    @overload
    def __getitem__(self, index: int) -> Item[T, R]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Item[T, R]]: ...

    def __getitem__(self, index: int | slice) -> Item[T, R] | Sequence[Item[T, R]]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item[T, R]]:
        return iter(self.items)

    @property
    def errors(self) -> list[Item[T, R]]:
        return [item for item in self.items if item.error is not None]

    @property
    def throughput(self) -> float:
        return len(self.items) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def values(self) -> list[R]:
        """Every value in input order; raises an ExceptionGroup of the items' errors if any failed."""
        errors = self.errors
        if errors:
            raise ExceptionGroup(f"{len(errors)} of {len(self.items)} items failed",
                                 [item.error for item in errors if item.error is not None])
        return [item.value for item in self.items]  # type: ignore[misc]  # no error: every value was set

    def summary(self) -> str:
        return (f"{len(self.items)} items in {self.elapsed_s:.2f}s ({self.throughput:.1f}/s), "
                f"{len(self.errors)} errors")

    def __repr__(self) -> str:
        return f"<Batch {self.summary()}>"


class _Progress:
    """A one-line bar on stderr when it is a terminal (or when asked); silent otherwise."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool | None, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self._drawn = 0.0

    def step(self, item: Item[T, R]) -> None:
        self.done += 1
        self.failed += item.error is not None
        now = time.perf_counter()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):  # at most 10 redraws a second
            self._drawn = now
            filled = self.WIDTH * self.done // max(1, self.total)
            rate = self.done / max(now - self.start, 1e-9)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
                              f"{self.failed} errors {rate:.1f}/s")
            self.stream.flush()

    def close(self, batch: Batch[T, R]) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[Kagentaccel.map: {batch.summary()}\n")
            self.stream.flush()


def _run(fn: Callable[[T], R], index: int, value: T) -> Item[T, R]:
    try:
        return Item(index, value, fn(value))
    except Exception as exc:
        return Item(index, value, error=exc)


def map(fn: Callable[[T], R], inputs: Iterable[T], *, concurrency: int = 8, progress: bool | None = None,
        stream: TextIO | None = None) -> Batch[T, R]:
    """Call ``fn`` on every input from ``concurrency`` threads; a :class:`Batch` of the items in input order.

    Each call runs in a copy of the caller's context (``agentaccel.scope``/``options`` apply). An ``Exception``
    from one call is kept in its item; KeyboardInterrupt cancels what has not started and propagates.
    ``progress``: None shows a bar when ``stream`` (default stderr) is a terminal."""
    items = list(inputs)
    bar = _Progress(len(items), progress, stream or sys.stderr)
    results: list[Item[T, R]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items) or 1)),
                            thread_name_prefix="agentaccel-map") as pool:
        try:
            futures = [pool.submit(contextvars.copy_context().run, _run, fn, i, x) for i, x in enumerate(items)]
            for future in as_completed(futures):
                bar.step(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        results = [future.result() for future in futures]
    batch = Batch(results, time.perf_counter() - bar.start)
    bar.close(batch)
    return batch


async def amap(fn: Callable[[T], Awaitable[R]], inputs: Iterable[T], *, concurrency: int = 8,
               progress: bool | None = None, stream: TextIO | None = None) -> Batch[T, R]:
    """The asyncio form of :func:`map`: at most ``concurrency`` awaits of ``fn`` at once, each in its own task
    (a copy of the caller's context); cancelling ``amap`` cancels them all."""
    items = list(inputs)
    bar = _Progress(len(items), progress, stream or sys.stderr)
    results: list[Item[T, R] | None] = [None] * len(items)
    pending = iter(enumerate(items))

    async def one(index: int, value: T) -> Item[T, R]:
        try:
            return Item(index, value, await fn(value))
        except Exception as exc:
            return Item(index, value, error=exc)

    async def worker() -> None:
        for index, value in pending:  # the workers share one iterator: each input is taken once
            try:
                item = await asyncio.create_task(one(index, value), context=contextvars.copy_context())
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # amap is being cancelled, and so was the call
                    raise
                # The call cancelled itself (its task, or raised a CancelledError): an error of this item.
                # Re-raised, it would end this worker, which a TaskGroup ignores, and lose the item.
                error = ItemCancelled(f"the call for input {index} was cancelled from inside (not by cancelling "
                                      "amap)")
                error.__cause__ = exc
                item = Item(index, value, error=error)
            results[index] = item
            bar.step(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, len(items)))):
            group.create_task(worker())
    done = [item for item in results if item is not None]
    assert len(done) == len(items)  # each worker records every input it takes, or amap raised
    batch = Batch(done, time.perf_counter() - bar.start)
    bar.close(batch)
    return batch
