"""What a review found the adapter got wrong, each held right with real LangChain objects: a cached tool result
answers the call's own tool call, and a tool's error is not stored; the shape of a tool's result is part of its
key; the base URL and the model's stop sequences are part of a model's key; a model holding something deepcopy
cannot copy is still cached; an answer from LangChain's own cache records no usage; a hit's message has a run id
as a miss's has."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from typing import Annotated, Any

import langchain.agents.factory
import langgraph.prebuilt
import pytest
from langchain.agents import create_agent  # before any enable(): an application's usual import
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool, ToolException, tool
from pydantic import BaseModel

import agentaccel
from agentaccel.mockllm import MockLLM
from agentaccel.testing.pytest_plugin import SpanRecorder

#: The cities that reached the tools below (a hit never does).
CITIES: list[str] = []
TOOLS_CACHED = {"rules": [{"operation": "execute_tool", "enabled": True}]}


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    CITIES.append(city)
    return f"sunny in {city}"


def _no_such_city(city: str) -> str:
    CITIES.append(city)
    raise ToolException(f"no city called {city}")


no_such_city = StructuredTool.from_function(_no_such_city, name="no_such_city", description="Always fails.",
                                            handle_tool_error=True)


@pytest.fixture(autouse=True)
def _no_cities() -> None:
    CITIES.clear()


def tool_call(ident: str, name: str = "weather") -> dict[str, Any]:
    return {"name": name, "args": {"city": "Oslo"}, "id": ident, "type": "tool_call"}


def tool_node(ident: str) -> Any:
    """What an agent's ToolNode makes of a model's call of ``weather`` with id ``ident``, in a graph of its own."""
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([weather]))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    state = builder.compile().invoke({"messages": [AIMessage("", tool_calls=[tool_call(ident)])]})
    return state["messages"][-1]


def results(agentaccel_spans: SpanRecorder, prefix: str = "") -> list[Any]:
    return [s.attributes.get("agentaccel.cache.result") for s in agentaccel_spans.spans() if s.name.startswith(prefix)]


def chat_model(url: str, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=url, api_key="test", model="gpt-4o-mini", **kwargs)


# --- 1. a cached ToolMessage answers the current tool call; a tool's error is not stored --------------------------


def test_a_cached_tool_message_answers_the_calls_own_tool_call(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache=TOOLS_CACHED)
    first = weather.invoke(tool_call("call_1"))
    again = weather.invoke(tool_call("call_2"))
    later = asyncio.run(weather.ainvoke(tool_call("call_3")))
    assert CITIES == ["Oslo"]  # the two repeats were hits
    assert results(agentaccel_spans) == ["miss", "hit", "hit"]
    assert all(isinstance(m, ToolMessage) for m in (first, again, later))
    assert [first.tool_call_id, again.tool_call_id, later.tool_call_id] == ["call_1", "call_2", "call_3"]
    assert again.content == later.content == first.content == "sunny in Oslo"


def test_an_agents_tool_node_pairs_a_cached_result_with_its_tool_call(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache=TOOLS_CACHED)
    answers = [tool_node("call_1"), tool_node("call_2")]
    assert CITIES == ["Oslo"]
    assert [m.tool_call_id for m in answers] == ["call_1", "call_2"]
    assert [m.content for m in answers] == ["sunny in Oslo"] * 2


def test_a_tools_handled_error_is_not_cached(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache=TOOLS_CACHED)
    for ident in ("call_1", "call_2"):
        answer = no_such_city.invoke(tool_call(ident, "no_such_city"))
        assert isinstance(answer, ToolMessage)
        assert (answer.status, answer.tool_call_id, answer.content) == ("error", ident, "no city called Oslo")
    assert CITIES == ["Oslo", "Oslo"]  # the error was not stored: the tool ran again
    # Nor in a plain call, where run() turns it into text that cannot be told from an answer: it is raised in
    # _run, where agentaccel sees it, before run() handles it.
    assert [no_such_city.invoke({"city": "Oslo"}) for _ in range(2)] == ["no city called Oslo"] * 2
    assert CITIES == ["Oslo"] * 4
    assert results(agentaccel_spans) == ["miss"] * 4


# --- 2. a tool call and a plain call share the tool's answer; callbacks see a hit ---------------------------------


def test_a_plain_call_and_a_tool_call_of_a_tool_share_its_answer(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache=TOOLS_CACHED)
    assert weather.invoke({"city": "Oslo"}) == "sunny in Oslo"
    # An agent's ToolNode asks for a ToolMessage: run() makes it around the cached content, for its own call.
    answer = tool_node("call_1")
    assert isinstance(answer, ToolMessage) and answer.tool_call_id == "call_1" and answer.content == "sunny in Oslo"
    assert weather.invoke({"city": "Oslo"}) == "sunny in Oslo"
    assert CITIES == ["Oslo"]
    assert results(agentaccel_spans, "execute_tool") == ["miss", "hit", "hit"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
def test_callbacks_see_a_tools_hit_as_its_miss(asynchronous: bool, agentaccel_spans: SpanRecorder,
                                               callbacks: Any) -> None:
    agentaccel_spans.enable(cache=TOOLS_CACHED)
    config: Any = {"callbacks": [callbacks.handler]}

    def call(ident: str) -> Any:
        if asynchronous:
            return asyncio.run(weather.ainvoke(tool_call(ident), config=config))
        return weather.invoke(tool_call(ident), config=config)

    miss = call("call_1")
    miss_events = callbacks.take()
    hit = call("call_2")
    assert callbacks.take() == miss_events == [("on_tool_start", "{'city': 'Oslo'}"),
                                               ("on_tool_end", "sunny in Oslo")]
    assert (miss.tool_call_id, hit.tool_call_id, hit.content) == ("call_1", "call_2", miss.content)
    assert CITIES == ["Oslo"]
    assert results(agentaccel_spans, "execute_tool") == ["miss", "hit"]


def test_a_tools_content_and_artifact_come_back_from_a_hit(agentaccel_spans: SpanRecorder) -> None:
    agentaccel_spans.enable(cache=TOOLS_CACHED)

    def _rows(city: str) -> tuple[str, dict[str, Any]]:
        CITIES.append(city)
        return f"2 rows for {city}", {"rows": [1, 2]}

    rows = StructuredTool.from_function(_rows, name="rows", description="Rows.", response_format="content_and_artifact")
    answers = [rows.invoke(tool_call(ident, "rows")) for ident in ("call_1", "call_2")]
    assert [(m.content, m.artifact, m.tool_call_id) for m in answers] == [
        ("2 rows for Oslo", {"rows": [1, 2]}, "call_1"), ("2 rows for Oslo", {"rows": [1, 2]}, "call_2")]
    assert CITIES == ["Oslo"]
    assert results(agentaccel_spans) == ["miss", "hit"]


def test_the_config_a_tool_takes_is_not_part_of_its_key(agentaccel_spans: SpanRecorder, callbacks: Any) -> None:
    # run()/arun() pass the RunnableConfig under the name the tool's _run/_arun give it (it holds the callbacks,
    # no JSON data): whatever that name, the call is keyed on its arguments alone. (RunnableConfig is imported at
    # the module's top: LangChain finds the parameter by resolving the method's annotations there.)
    agentaccel_spans.enable(cache=TOOLS_CACHED)

    class Forecast(BaseTool):
        name: str = "forecast"
        description: str = "The forecast for a city."

        def _run(self, city: str, settings: RunnableConfig) -> str:
            CITIES.append(city)
            return f"rain in {city}"

        async def _arun(self, city: str, conf: RunnableConfig) -> str:
            CITIES.append(city)
            return f"rain in {city}"

    forecast = Forecast()
    first: Any = {"callbacks": [callbacks.handler], "tags": ["first"]}  # a handler: no JSON data
    assert forecast.invoke({"city": "Oslo"}, first) == forecast.invoke({"city": "Oslo"}, {"tags": ["second"]})
    assert asyncio.run(forecast.ainvoke({"city": "Bergen"}, first)) == asyncio.run(forecast.ainvoke({"city": "Bergen"}))
    assert CITIES == ["Oslo", "Bergen"]
    assert results(agentaccel_spans) == ["miss", "hit", "miss", "hit"]


def test_a_tool_given_its_call_id_is_keyed_without_it(agentaccel_spans: SpanRecorder) -> None:
    # run() fills an InjectedToolCallId argument with the tool call's id, new on every call: not part of the key.
    # (Annotated and InjectedToolCallId are imported at the module's top, where @tool resolves the annotations.)
    agentaccel_spans.enable(cache=TOOLS_CACHED)

    @tool
    def weather_for(city: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """The weather in a city."""
        CITIES.append(city)
        return f"sunny in {city}"

    class City(BaseModel):
        city: str

    def _weather(city: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        CITIES.append(city)
        return f"sunny in {city}"

    # The same argument on the function of a tool whose schema leaves it out: run() injects it by its name.
    schema_without = StructuredTool.from_function(_weather, name="schema_without", description="The weather.",
                                                  args_schema=City)
    for made in (weather_for, schema_without):
        answers = [made.invoke(tool_call(ident, made.name)) for ident in ("call_1", "call_2")]
        assert [(m.content, m.tool_call_id) for m in answers] == [("sunny in Oslo", "call_1"),
                                                                  ("sunny in Oslo", "call_2")]
    assert CITIES == ["Oslo", "Oslo"]
    assert results(agentaccel_spans) == ["miss", "hit", "miss", "hit"]


def test_what_a_tool_makes_that_is_no_json_data_is_not_stored(agentaccel_spans: SpanRecorder) -> None:
    # A ToolMessage (or a LangGraph Command) the tool makes itself answers one tool call: never stored.
    agentaccel_spans.enable(cache=TOOLS_CACHED)

    def _own(city: str) -> ToolMessage:
        CITIES.append(city)
        return ToolMessage(f"made for {city}", tool_call_id="made_by_the_tool")

    own = StructuredTool.from_function(_own, name="own", description="Its own message.")
    assert [own.invoke({"city": "Oslo"}).content for _ in range(2)] == ["made for Oslo"] * 2
    assert CITIES == ["Oslo", "Oslo"]
    assert results(agentaccel_spans) == ["miss", "miss"]


# --- 3. the base URL is part of the key ------------------------------------------------------------------------------


def test_the_same_model_on_another_server_is_another_request(agentaccel_spans: SpanRecorder,
                                                              mock_llm: MockLLM) -> None:
    from langchain_openai import OpenAIEmbeddings

    def embeddings(url: str) -> Any:
        return OpenAIEmbeddings(base_url=url, api_key="test", model="text-embedding-3-small",
                                check_embedding_ctx_length=False)

    with MockLLM() as other:
        for server in (mock_llm, other, mock_llm):
            chat_model(server.url).invoke([HumanMessage("hello there")])
            embeddings(server.url).embed_query("hello there")
        assert other.counters()["chat_requests"] == other.counters()["embedding_requests"] == 1
    assert mock_llm.counters()["chat_requests"] == mock_llm.counters()["embedding_requests"] == 1
    assert results(agentaccel_spans, "chat") == results(agentaccel_spans, "embeddings") == ["miss", "miss", "hit"]


# --- 4. the model's stop sequences are part of the key, and a call's own replace them ------------------------------


def test_a_models_stop_counts_and_a_calls_stop_replaces_it(agentaccel_spans: SpanRecorder,
                                                          mock_llm: MockLLM) -> None:
    stopping, plain = chat_model(mock_llm.url, stop=["END"]), chat_model(mock_llm.url)
    plain.invoke("count to three")
    stopping.invoke("count to three")  # sends stop=["END"]: another request
    stopping.invoke("count to three", stop=["STOP"])  # sends stop=["STOP"] ...
    plain.invoke("count to three", stop=["STOP"])  # ... as this one does
    assert mock_llm.counters()["chat_requests"] == 3
    assert results(agentaccel_spans) == ["miss", "miss", "miss", "hit"]
    assert agentaccel_spans.spans()[1].attributes["gen_ai.request.stop_sequences"] == ("END",)


# --- 5. a model holding what deepcopy cannot copy is still cached ----------------------------------------------------


class Locked:
    """Something deepcopy cannot copy: it holds a lock, as callback handlers and clients do."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class LockedChatModel(GenericFakeChatModel):
    """A model with a field of its own, not one of its parameters, whose value deepcopy cannot copy."""

    resources: dict[str, Any]


def test_a_model_holding_a_lock_is_still_cached(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    from langchain_core.callbacks import UsageMetadataCallbackHandler

    usage = UsageMetadataCallbackHandler()
    for model in (chat_model(mock_llm.url, callbacks=[usage]), chat_model(mock_llm.url, metadata={"x": Locked()})):
        assert model.invoke("hello there").content == model.invoke("hello there").content
    assert mock_llm.counters()["chat_requests"] == 1
    assert usage.usage_metadata  # the handler on the model saw the miss
    own = LockedChatModel(messages=iter([AIMessage("first"), AIMessage("second")]), resources={"x": Locked()})
    assert [own.invoke("q").content, own.invoke("q").content] == ["first", "first"]
    assert results(agentaccel_spans) == ["miss", "hit", "hit", "hit", "miss", "hit"]


# --- 7. an answer from LangChain's own cache records no usage --------------------------------------------------------


def test_an_answer_from_langchains_cache_records_no_usage(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    from langchain_core.caches import InMemoryCache

    model = chat_model(mock_llm.url, cache=InMemoryCache())
    model.invoke("hello there")
    with agentaccel.options(cache=False):  # agentaccel's cache off: LangChain's answers
        answer = model.invoke("hello there")
    assert answer.usage_metadata["total_cost"] == 0 and answer.usage_metadata["input_tokens"] > 0
    assert mock_llm.counters()["chat_requests"] == 1
    fresh, cached = agentaccel_spans.spans()
    assert fresh.attributes["gen_ai.usage.input_tokens"] > 0
    assert cached.attributes["agentaccel.cache.result"] == "bypass"
    assert not any(key.startswith("gen_ai.usage.") for key in cached.attributes)


# --- 8. a hit's message has a run id, as a miss's has ---------------------------------------------------------------


class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self.ids.append(run_id)


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))


def test_a_hit_at_invoke_has_a_new_run_id(agentaccel_spans: SpanRecorder) -> None:
    from agentaccel_langchain import codec
    from langchain_core.utils.utils import LC_ID_PREFIX

    model = fake("answer", "never served")
    miss, hit, again = model.invoke("q"), model.invoke("q"), asyncio.run(model.ainvoke("q"))
    assert results(agentaccel_spans) == ["miss", "hit", "hit"]
    form = re.compile(rf"{LC_ID_PREFIX}-([0-9a-f-]{{36}})-0")
    for message in (miss, hit, again):
        assert form.fullmatch(message.id or ""), message.id
    assert len({miss.id, hit.id, again.id}) == 3
    # Whether those hits were answered at invoke depends on what earlier tests left behind (OpenLLMetry's LangChain
    # instrumentation stays in the callback manager's constructor): the id of an invoke hit, from its source.
    answer = AIMessage("answer", id=miss.id)  # a run's id: not stored
    first, second = codec.MESSAGE.rebuild(codec.MESSAGE.encode(answer)), codec.MESSAGE.decode(
        codec.MESSAGE.encode(answer))
    for message in (first, second):
        found = form.fullmatch(message.id)
        assert found and uuid.UUID(found[1]).version == 4 and str(uuid.UUID(found[1])) == found[1]
    assert first.id != second.id != miss.id
    assert codec.LC_ID_PREFIX == LC_ID_PREFIX  # the adapter's copy (it imports no LangChain at enable())


@pytest.mark.parametrize("asynchronous", [False, True], ids=["generate", "agenerate"])
def test_a_hit_below_invoke_has_its_runs_id(asynchronous: bool, agentaccel_spans: SpanRecorder) -> None:
    model = fake("answer", "never served")
    runs = Runs()
    config: Any = {"callbacks": [runs]}
    messages = [asyncio.run(model.ainvoke("q", config=config)) if asynchronous else model.invoke("q", config=config)
                for _ in range(2)]
    generated = model.generate([[HumanMessage("q")]], callbacks=[runs]).generations[0][0].message
    assert results(agentaccel_spans) == ["miss", "hit", "hit"]
    assert [m.id for m in [*messages, generated]] == [f"lc_run--{run}-0" for run in runs.ids]


def test_a_hit_with_v2_stream_events_has_the_id_its_events_carry(agentaccel_spans: SpanRecorder) -> None:
    from langchain_core.tracers._streaming import _V2StreamingCallbackHandler

    class Events(BaseCallbackHandler, _V2StreamingCallbackHandler):
        def __init__(self) -> None:
            self.started: list[str] = []

        def on_stream_event(self, event: Any, **kwargs: Any) -> None:
            if event["event"] == "message-start":
                self.started.append(event["id"])

    model = fake("answer", "never served")
    handler = Events()
    messages = [model.invoke("q", config={"callbacks": [handler]}) for _ in range(2)]
    assert results(agentaccel_spans) == ["miss", "hit"]
    assert [m.id for m in messages] == handler.started and len(set(handler.started)) == 2


def test_agents_made_by_factories_imported_before_enable_are_agents(agentaccel_spans: SpanRecorder,
                                                                   mock_llm: MockLLM) -> None:
    # This module and langgraph.prebuilt took the factories by name at import, before enable() patched them.
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=mock_llm.url, api_key="test", model="gpt-4o-mini")
    create_agent(model, [weather], name="early").invoke({"messages": [HumanMessage("just chat")]})
    langgraph.prebuilt.create_react_agent(model, [weather], name="early_react").invoke(
        {"messages": [HumanMessage("just chat")]})

    names = {span.name for span in agentaccel_spans.spans()}
    assert {"invoke_agent early", "invoke_agent early_react"} <= names

    agentaccel.disable()  # and each name holds the original factory again
    assert globals()["create_agent"] is langchain.agents.factory.create_agent
    assert create_agent.__module__ == "langchain.agents.factory" and not hasattr(create_agent, "__wrapped__")
