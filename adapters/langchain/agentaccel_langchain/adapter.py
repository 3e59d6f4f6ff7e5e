"""The LangChain + LangGraph adapter."""

from __future__ import annotations

from collections.abc import Iterable

from agentaccel import Adapter, Patch
from agentaccel_langchain.patches import patches


class LangChainAdapter(Adapter):
    name = "langchain"
    requires = ("langchain-core>=1.0,<2",)

    def patches(self) -> Iterable[Patch]:
        return patches()
