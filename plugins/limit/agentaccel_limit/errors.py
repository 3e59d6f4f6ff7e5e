"""The error the limit plugin raises on purpose."""

from __future__ import annotations

from typing import Literal

from agentaccel import AgentAccelError

Reason = Literal["queue_timeout", "queue_full", "backend"]


class LimitExceeded(AgentAccelError):
    """A call was refused by a limit rule: it waited longer than the rule's ``queue_timeout``, found its queue
    full (``max_queue``), or the rule's Redis backend was unreachable with ``on_backend_error = "closed"``.

    ``rule`` names the rule, ``limit`` describes its limits (``"max_concurrency=8, rate=100/60s"``) and
    ``reason`` is ``"queue_timeout"``, ``"queue_full"`` or ``"backend"``."""

    def __init__(self, message: str, *, rule: str, limit: str, reason: Reason) -> None:
        super().__init__(message)
        self.rule = rule
        self.limit = limit
        self.reason = reason
