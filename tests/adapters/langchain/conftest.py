"""Fixtures for the LangChain adapter's tests: LangSmith tracing off, agentaccel disabled after each test, and a
handler that records the callback events a call produces, and a one-node graph around a model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agentaccel


@pytest.fixture(autouse=True)
def _quiet_langchain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    yield
    agentaccel.disable()
    from langchain_core.globals import set_llm_cache

    set_llm_cache(None)


class Recorder:
    """Records callback events by name with what a consumer would look at (not run ids, which differ per run)."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        events: list[tuple[str, Any]] = []
        self.events = events

        class Handler(BaseCallbackHandler):
            def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
                events.append(("on_chat_model_start", [[m.content for m in batch] for batch in messages]))

            def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
                events.append(("on_llm_new_token", token))

            def on_llm_end(self, response: Any, **kwargs: Any) -> None:
                events.append(("on_llm_end", [[g.text for g in gens] for gens in response.generations]))

            def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
                events.append(("on_tool_start", input_str))

            def on_tool_end(self, output: Any, **kwargs: Any) -> None:
                events.append(("on_tool_end", str(getattr(output, "content", output))))

        self.handler = Handler()

    def take(self) -> list[tuple[str, Any]]:
        taken = list(self.events)
        self.events.clear()
        return taken


@pytest.fixture
def callbacks() -> Recorder:
    return Recorder()


@pytest.fixture
def one_node_graph() -> Callable[..., Any]:
    """Builds a compiled graph START -> "llm" -> END whose node calls ``model`` on the state's messages, with
    ``ainvoke`` in an async node when ``asynchronous``."""
    from langgraph.graph import END, START, MessagesState, StateGraph

    def build(model: Any, asynchronous: bool = False) -> Any:
        async def llm(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        if asynchronous:
            builder.add_node("llm", llm)
        else:
            builder.add_node("llm", lambda state: {"messages": [model.invoke(state["messages"])]})
        builder.add_edge(START, "llm")
        builder.add_edge("llm", END)
        return builder.compile()

    return build
