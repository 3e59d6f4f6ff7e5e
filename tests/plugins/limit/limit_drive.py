"""Drivers for generators of Io effects outside the pipeline (the Redis backend's acquire)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import agentaccel


def drive(gen: Generator[agentaccel.Io, Any, Any]) -> Any:
    """Run a generator of Io effects the way the sync pipeline driver does; its return value."""
    try:
        effect = next(gen)
        while True:
            try:
                value = effect.run()
            except BaseException as exc:
                effect = gen.throw(exc)
            else:
                effect = gen.send(value)
    except StopIteration as stop:
        return stop.value


async def adrive(gen: Generator[agentaccel.Io, Any, Any]) -> Any:
    """The async form of :func:`drive`."""
    try:
        effect = next(gen)
        while True:
            try:
                value = await effect.arun()
            except BaseException as exc:
                effect = gen.throw(exc)
            else:
                effect = gen.send(value)
    except StopIteration as stop:
        return stop.value
