"""The ``langchain`` plugin (entry point in the group ``agentaccel``): registers the adapter."""

from __future__ import annotations

from collections.abc import Callable

import agentaccel
from agentaccel_langchain.adapter import LangChainAdapter


@agentaccel.hookimpl
def agentaccel_register_adapters(register: Callable[[agentaccel.Adapter], None]) -> None:
    register(LangChainAdapter())
