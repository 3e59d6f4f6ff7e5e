"""Integration: ChatOpenAI over real HTTP against the mock LLM, a LangGraph agent with two tools (spans nested
graph -> node -> chat/tool, cache, limit), 429 feedback, embeddings, tools, uninstrument and enable-before-import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

import agentaccel
from agentaccel.mockllm import MockLLM
from agentaccel.testing.pytest_plugin import SpanRecorder


def chat_model(mock_llm: MockLLM, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=mock_llm.url, api_key="test", model="gpt-4o-mini", **kwargs)


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def population(city: str) -> int:
    """How many people live in a city."""
    return 1000


def test_chat_openai_span_usage_provider_and_hit(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    model = chat_model(mock_llm)
    first = model.invoke([HumanMessage("hello there")])
    second = model.invoke([HumanMessage("hello there")])
    assert isinstance(second, AIMessage) and second.content == first.content
    assert second.usage_metadata == {**first.usage_metadata, "total_cost": 0}
    assert mock_llm.counters()["chat_requests"] == 1
    spans = agentaccel_spans.spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 2
    attributes = spans[0].attributes
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    # The hit used no tokens: its span says so by carrying no usage (the returned message still has it).
    assert spans[1].attributes["agentaccel.cache.result"] == "hit"
    assert not any(key.startswith("gen_ai.usage.") for key in spans[1].attributes)


def test_a_hit_says_what_a_langchain_cache_hit_says(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    def two_calls() -> tuple[Any, Any]:
        model = chat_model(mock_llm)
        return model.generate([[HumanMessage("cost?")]]), model.generate([[HumanMessage("cost?")]])

    agentaccel.disable()  # LangChain's cache alone first
    set_llm_cache(InMemoryCache())
    _, native_hit = two_calls()
    set_llm_cache(None)
    agentaccel_spans.enable()
    miss, hit = two_calls()
    assert mock_llm.counters()["chat_requests"] == 2  # one miss each
    assert [s.attributes["agentaccel.cache.result"] for s in agentaccel_spans.spans()] == ["miss", "hit"]
    message, native = hit.generations[0][0].message, native_hit.generations[0][0].message
    # The hit cost nothing: total_cost 0 beside the token counts, and no llm_output (where the OpenAI cost
    # callback counts tokens) -- what LangChain's own cache hit says, where the miss says otherwise.
    assert message.usage_metadata == native.usage_metadata == {**miss.generations[0][0].message.usage_metadata,
                                                               "total_cost": 0}
    assert hit.llm_output == native_hit.llm_output
    assert miss.llm_output["token_usage"] and hit.llm_output != miss.llm_output
    assert message.content == native.content == miss.generations[0][0].text


def test_a_conversation_keys_the_same_whatever_its_answers_cost(agentaccel_spans: SpanRecorder,
                                                               mock_llm: MockLLM) -> None:
    # An earlier answer's usage (fresh, marked total_cost = 0 by a hit, or lost when the history was stored) is
    # never sent to the provider, so it does not make another request.
    model = chat_model(mock_llm)
    answer = model.invoke([HumanMessage("first")])
    for usage in (answer.usage_metadata, {**answer.usage_metadata, "total_cost": 0}, None):
        model.invoke([HumanMessage("first"), answer.model_copy(update={"usage_metadata": usage}),
                      HumanMessage("second")])
    assert mock_llm.counters()["chat_requests"] == 2
    assert [s.attributes["agentaccel.cache.result"] for s in agentaccel_spans.spans()] == ["miss", "miss", "hit",
                                                                                          "hit"]


def test_a_model_changed_in_place_is_another_request(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    model = chat_model(mock_llm, model_kwargs={"user": "a"})
    model.invoke("same words"), model.invoke("same words")
    model.model_kwargs["user"] = "b"  # changed in place: the same dict object, another request
    model.invoke("same words")
    model.temperature = 0.5  # a field set anew
    model.invoke("same words")
    model.model_kwargs["user"] = "a"
    model.temperature = None
    model.invoke("same words")  # back to the first request
    assert mock_llm.counters()["chat_requests"] == 3
    assert [s.attributes["agentaccel.cache.result"] for s in agentaccel_spans.spans()] == ["miss", "hit", "miss",
                                                                                          "miss", "hit"]


def test_the_requested_model_is_the_one_the_call_sends(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    # The model's name is kept with the model's memoized part of the request: a renamed model, and a call that
    # names another model, are other requests, and their spans say which model was asked for.
    model = chat_model(mock_llm)
    model.invoke("same words")
    model.model_name = "gpt-4o"
    model.invoke("same words")
    model.bind(model="gpt-4.1").invoke("same words")
    model.model_name = "gpt-4o-mini"
    model.invoke("same words")
    spans = agentaccel_spans.spans()
    assert [(s.name, s.attributes["agentaccel.cache.result"]) for s in spans] == [
        ("chat gpt-4o-mini", "miss"), ("chat gpt-4o", "miss"), ("chat gpt-4.1", "miss"), ("chat gpt-4o-mini", "hit")]
    assert [s.attributes["gen_ai.request.model"] for s in spans] == ["gpt-4o-mini", "gpt-4o", "gpt-4.1",
                                                                     "gpt-4o-mini"]
    assert mock_llm.counters()["chat_requests"] == 3


def test_the_model_settings_that_shape_the_answer_are_part_of_the_request(agentaccel_spans: SpanRecorder,
                                                                            mock_llm: MockLLM) -> None:
    # Settings outside the invocation parameters that LangChain's own cache keys on (to_json()): content blocks
    # (output_version), usage in a stream (stream_usage). Each answers as a fresh call of that model would.
    agentaccel.disable()
    fresh_blocks = chat_model(mock_llm, output_version="v1").invoke("shape me").content
    fresh_usage = _joined(chat_model(mock_llm, stream_usage=True).stream("count me")).usage_metadata
    agentaccel_spans.enable()
    mock_llm.reset_counters()
    assert isinstance(chat_model(mock_llm).invoke("shape me").content, str)
    assert chat_model(mock_llm, output_version="v1").invoke("shape me").content == fresh_blocks
    assert isinstance(fresh_blocks, list) and fresh_blocks[0]["type"] == "text"
    assert _joined(chat_model(mock_llm, stream_usage=False).stream("count me")).usage_metadata is None
    streamed = _joined(chat_model(mock_llm, stream_usage=True).stream("count me"))
    assert streamed.usage_metadata is not None
    assert streamed.usage_metadata["input_tokens"] == fresh_usage["input_tokens"]  # type: ignore[index]
    # What only steers the client (retries, timeout) shares the entry.
    assert chat_model(mock_llm, max_retries=7, timeout=30).invoke("shape me").content == fresh_blocks[0]["text"]
    assert mock_llm.counters()["chat_requests"] == 4
    assert [s.attributes["agentaccel.cache.result"] for s in agentaccel_spans.spans()] == ["miss"] * 4 + ["hit"]


def _joined(chunks: Any) -> Any:
    joined = None
    for chunk in chunks:
        joined = chunk if joined is None else joined + chunk
    return joined


def test_chat_openai_stream_replay(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    model = chat_model(mock_llm)
    first = [c.content for c in model.stream("tell me a story")]
    second = list(model.stream("tell me a story"))
    assert [c.content for c in second] == first
    assert mock_llm.counters()["chat_requests"] == 1


def test_a_429_reaches_the_limit_plugin(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    mock_llm.configure(script=[{"match": "busy", "status": 429, "error": "slow down"}], retry_after=0)
    agentaccel_spans.enable(limit={"rules": [{"name": "openai", "provider": "openai", "max_concurrency": 4,
                                              "adaptive": True}]})
    model = chat_model(mock_llm, max_retries=0)
    with pytest.raises(Exception) as raised:
        model.invoke("busy now")
    assert raised.value.status_code == 429  # type: ignore[attr-defined]
    span = agentaccel_spans.span("chat gpt-4o-mini")
    assert span.attributes["agentaccel.limit.rule"] == "openai"
    assert span.attributes["agentaccel.limit.rate_limited"] is True


def test_openai_models_hold_the_limit_per_request_and_see_the_429s_they_retry(
        agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    from agentaccel_limit import snapshot
    from langchain_core.language_models import FakeListChatModel
    from langchain_openai import OpenAIEmbeddings

    mock_llm.configure(script=[{"match": "busy", "status": 429, "times": 1}], retry_after=0)
    agentaccel_spans.enable(cache={"enabled": False}, limit={"rules": [{"name": "models", "max_concurrency": 2}]})
    model = chat_model(mock_llm, max_retries=1)
    assert model.invoke("busy now").content  # the client retried the 429 by itself
    list(model.stream("tell me a story"))
    asyncio.run(model.ainvoke("hello"))
    OpenAIEmbeddings(base_url=mock_llm.url, api_key="test", model="text-embedding-3-small",
                     check_embedding_ctx_length=False).embed_query("hello")
    FakeListChatModel(responses=["offline"]).invoke("hello")  # no HTTP: limited as a whole call
    spans = agentaccel_spans.spans()
    assert [s.attributes.get("agentaccel.limit.requests") for s in spans] == [2, 1, 1, 1, None]
    assert spans[0].attributes["agentaccel.limit.rate_limited"] is True
    assert all(s.attributes["agentaccel.limit.rule"] == "models" for s in spans)
    assert snapshot()["models"]["in_flight"] == 0


def test_embeddings_and_tools(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    from langchain_core.embeddings import Embeddings
    from langchain_openai import OpenAIEmbeddings

    class LengthEmbedding(Embeddings):  # a subclass created after enable(): patched as it is created
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[float(len(t))] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return [float(len(text))]

    fake = LengthEmbedding()
    assert fake.embed_documents(["a", "b"]) == fake.embed_documents(["a", "b"])
    real = OpenAIEmbeddings(base_url=mock_llm.url, api_key="test", model="text-embedding-3-small",
                            check_embedding_ctx_length=False)
    vector = real.embed_query("hello")
    assert real.embed_query("hello") == vector
    assert weather.invoke({"city": "Paris"}) == "sunny in Paris"
    assert asyncio.run(population.ainvoke({"city": "Paris"})) == 1000
    names = [s.name for s in agentaccel_spans.spans()]
    assert names == ["embeddings LengthEmbedding"] * 2 + ["embeddings text-embedding-3-small"] * 2 + [
        "execute_tool weather", "execute_tool population"]
    spans = agentaccel_spans.spans()
    assert [s.attributes.get("agentaccel.cache.result") for s in spans[:4]] == ["miss", "hit", "miss", "hit"]
    assert spans[2].attributes["gen_ai.provider.name"] == "openai"


def test_an_embeddings_call_is_keyed_on_its_input_and_its_arguments(agentaccel_spans: SpanRecorder,
                                                                      mock_llm: MockLLM) -> None:
    from langchain_openai import OpenAIEmbeddings

    model = OpenAIEmbeddings(base_url=mock_llm.url, api_key="test", model="text-embedding-3-small",
                             check_embedding_ctx_length=False)
    default = model.embed_documents(["alpha"])
    narrow = model.embed_documents(["alpha"], dimensions=8)  # sent to the provider: another answer
    assert len(narrow[0]) == 8 != len(default[0])
    # The input by keyword, after another keyword: the texts are the input, whatever the order.
    assert len(model.embed_documents(chunk_size=100, texts=["one"])) == 1
    assert len(model.embed_documents(chunk_size=100, texts=["two", "three"])) == 2
    # chunk_size only batches the request: the same texts are a hit whatever it is.
    assert model.embed_documents(["alpha"], chunk_size=10) == default
    assert [s.attributes["agentaccel.cache.result"] for s in agentaccel_spans.spans()] == ["miss"] * 4 + ["hit"]


AGENT_SCRIPT = [
    {"match": "weather and population", "response": {"tool_calls": [
        {"name": "weather", "arguments": {"city": "Oslo"}}, {"name": "population", "arguments": {"city": "Oslo"}}]}},
]


def _run_agent(mock_llm: MockLLM, question: str) -> Any:
    from langchain.agents import create_agent

    agent = create_agent(chat_model(mock_llm), [weather, population], name="city_agent")
    return agent.invoke({"messages": [HumanMessage(question)]})


def test_agent_with_two_tools_spans_cache_and_limit(agentaccel_spans: SpanRecorder, mock_llm: MockLLM) -> None:
    mock_llm.configure(script=AGENT_SCRIPT)
    agentaccel_spans.enable(limit={"rules": [{"name": "openai", "provider": "openai", "max_concurrency": 2}]})
    state = _run_agent(mock_llm, "weather and population of Oslo?")
    assert isinstance(state["messages"][-1], AIMessage)
    spans = agentaccel_spans.spans()
    by_id = {s.context.span_id: s for s in spans}
    agent = [s for s in spans if s.name == "invoke_agent city_agent"]
    assert len(agent) == 1
    chats = [s for s in spans if s.name.startswith("chat ")]
    tools = sorted(s.name for s in spans if s.name.startswith("execute_tool"))
    assert len(chats) == 2 and tools == ["execute_tool population", "execute_tool weather"]

    def ancestors(span: Any) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    for span in [*chats, *[s for s in spans if s.name.startswith("execute_tool")]]:
        chain = ancestors(span)
        assert chain[-1] == "invoke_agent city_agent", chain
        assert chain[0].startswith("invoke_workflow "), chain  # the node
    assert all(s.attributes["agentaccel.limit.rule"] == "openai" for s in chats)
    assert all(s.attributes["agentaccel.limit.requests"] == 1 for s in chats)  # a permit per request, not per call
    # One span per node run; LangGraph's hidden __start__ node is plumbing, as in LangSmith's trace.
    nodes = sorted(s.name for s in spans if s.name.startswith("invoke_workflow "))
    assert nodes == ["invoke_workflow model"] * 2 + ["invoke_workflow tools"] * 2, nodes  # a task per tool call
    upstream = mock_llm.counters()["chat_requests"]

    agentaccel_spans.clear()
    _run_agent(mock_llm, "weather and population of Oslo?")
    assert mock_llm.counters()["chat_requests"] == upstream  # the repeat is answered from the cache
    hits = [s.attributes.get("agentaccel.cache.result") for s in agentaccel_spans.spans() if s.name.startswith("chat")]
    assert hits == ["hit", "hit"]


def test_an_async_agent_run_nests_its_spans_and_hits_the_cache(agentaccel_spans: SpanRecorder,
                                                               mock_llm: MockLLM) -> None:
    from langchain.agents import create_agent

    mock_llm.configure(script=AGENT_SCRIPT)
    agent = create_agent(chat_model(mock_llm), [weather, population], name="city_agent")

    async def twice() -> None:  # one loop: langchain-openai keeps its async client per base URL
        for _ in range(2):
            await agent.ainvoke({"messages": [HumanMessage("weather and population of Oslo?")]})

    asyncio.run(twice())
    spans = agentaccel_spans.spans()
    by_id = {s.context.span_id: s for s in spans}
    roots = [s for s in spans if s.parent is None or s.parent.span_id not in by_id]
    assert [s.name for s in roots] == ["invoke_agent city_agent"] * 2
    assert all(s.attributes["agentaccel.mode"] == "async" for s in roots)
    for span in spans:
        if span.name.startswith(("chat ", "execute_tool ")):
            node = by_id[span.parent.span_id]  # the node's task, run by arun_with_retry on the loop
            assert node.name in ("invoke_workflow model", "invoke_workflow tools"), node.name
            assert by_id[node.parent.span_id].name == "invoke_agent city_agent"
    assert not any(s.name == "invoke_workflow __start__" for s in spans)
    assert [s.attributes.get("agentaccel.cache.result") for s in spans if s.name.startswith("chat ")] == [
        "miss", "miss", "hit", "hit"]
    assert mock_llm.counters()["chat_requests"] == 2


def test_graph_stream_mode_messages_yields_the_message_on_a_hit(agentaccel_spans: SpanRecorder,
                                                              mock_llm: MockLLM) -> None:
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(chat_model(mock_llm), [weather], name="react")

    def messages() -> list[str]:
        return [m.content for m, _ in agent.stream({"messages": [HumanMessage("just chat")]}, stream_mode="messages")
                if isinstance(m, AIMessage) and m.content]

    first = messages()
    assert first
    assert "".join(messages()) == "".join(first)
    assert any(s.name == "invoke_agent react" for s in agentaccel_spans.spans())


@pytest.mark.filterwarnings("ignore:The v3 streaming protocol")
def test_graph_v3_event_stream_assembles_the_message_on_a_hit(agentaccel_spans: SpanRecorder,
                                                               mock_llm: MockLLM, one_node_graph: Any) -> None:
    # LangGraph's v3 event stream hears a model call through LangChain's v2 stream events: on a hit they are
    # replayed (where LangChain's own cache hit of a usage-less answer fails to assemble), and the graph's state
    # gets the same message.
    graph = one_node_graph(chat_model(mock_llm))

    def streamed() -> tuple[list[str], str, str]:
        events = list(graph.stream_events({"messages": [HumanMessage("just chat")]}, version="v3"))
        heard = [e["params"]["data"][0] for e in events if e.get("method") == "messages"]
        text = "".join(d["delta"]["text"] for d in heard
                       if d["event"] == "content-block-delta" and d["delta"]["type"] == "text-delta")
        state = [e["params"]["data"] for e in events if e.get("method") == "values"][-1]
        return [heard[0]["event"], heard[-1]["event"]], text, state["messages"][-1].text

    miss, hit = streamed(), streamed()
    assert miss[1]
    assert hit == miss == (["message-start", "message-finish"], miss[1], miss[1])
    assert [s.attributes.get("agentaccel.cache.result") for s in agentaccel_spans.spans()
            if s.name.startswith("chat ")] == ["miss", "hit"]


def test_uninstrument_restores_every_patched_attribute(agentaccel_spans: SpanRecorder) -> None:
    from langchain_core.embeddings import FakeEmbeddings
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.tools import BaseTool
    from langgraph.pregel import Pregel

    agentaccel.disable()
    originals = {(cls, name): cls.__dict__.get(name) for cls, name in [
        (BaseChatModel, "invoke"), (BaseChatModel, "_generate_with_cache"), (BaseChatModel, "__init_subclass__"),
        (BaseTool, "run"), (Pregel, "stream"), (FakeEmbeddings, "embed_query")]}
    runtime = agentaccel_spans.enable()
    adapter = next(a for a in runtime.adapters if a.name == "langchain")
    assert adapter.problems == []
    assert BaseChatModel.__dict__["invoke"] is not originals[(BaseChatModel, "invoke")]
    agentaccel.disable()
    assert {key: key[0].__dict__.get(key[1]) for key in originals} == originals
    assert adapter.patched() == []


def test_enable_before_import(subprocess_env: dict[str, str]) -> None:
    code = """
import sys
import agentaccel
agentaccel.enable()
assert "langchain_core" not in sys.modules
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.embeddings import Embeddings

class Mine(Embeddings):  # defined after enable(): patched when created
    def embed_documents(self, texts): return [[1.0] for _ in texts]
    def embed_query(self, text): return [1.0]

adapter = next(a for a in agentaccel.runtime().adapters if a.name == "langchain")
patched = adapter.patched()
assert any(p.endswith("BaseChatModel._generate_with_cache") for p in patched), patched
assert any(p.endswith("Mine.embed_query") for p in patched), patched
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
