"""Chat models at the unit level, with the fake models LangChain ships: spans, the normalized request, cached
answers as the same LangChain types, and callbacks identical on a hit and a miss."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder


def fake(*answers: AIMessage | str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([a if isinstance(a, AIMessage) else AIMessage(a) for a in answers]))


def tool_answer() -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "search", "args": {"q": "otel"}, "id": "call_1"}],
                     usage_metadata={"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
                     response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"})


def results(spans: Any) -> list[Any]:
    return [s.attributes.get("agentaccel.cache.result") for s in spans]


def test_invoke_is_one_span_and_a_repeat_is_a_hit_of_the_same_types(agentaccel_spans: SpanRecorder) -> None:
    model = fake(tool_answer(), "never served")
    first = model.invoke([SystemMessage("be brief"), HumanMessage("find otel")])
    again = model.invoke([SystemMessage("be brief"), HumanMessage("find otel")])
    assert isinstance(again, AIMessage)
    assert again.tool_calls == first.tool_calls == [{"name": "search", "args": {"q": "otel"}, "id": "call_1",
                                                     "type": "tool_call"}]
    assert again.usage_metadata == {**first.usage_metadata, "total_cost": 0}  # as LangChain's own cache marks a hit
    assert again.response_metadata["model_name"] == "fake-1"
    spans = agentaccel_spans.spans()
    assert [s.name for s in spans] == ["chat GenericFakeChatModel"] * 2
    assert results(spans) == ["miss", "hit"]
    attributes = spans[0].attributes
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.response.model"] == "fake-1"


def test_the_request_changes_with_what_changes_the_answer(agentaccel_spans: SpanRecorder) -> None:
    model = fake(*[f"answer {i}" for i in range(6)])
    tools = [{"type": "function", "function": {"name": "search", "description": "d", "parameters": {}}}]
    answers = [
        model.invoke("hi").content,
        model.invoke("hi", stop=["x"]).content,
        model.bind(tools=tools).invoke("hi").content,
        model.bind(tools=tools, tool_choice="search").invoke("hi").content,
        model.invoke("hello").content,
        model.invoke("hi").content,
    ]
    assert answers == ["answer 0", "answer 1", "answer 2", "answer 3", "answer 4", "answer 0"]
    assert results(agentaccel_spans.spans()) == ["miss"] * 5 + ["hit"]


def test_a_keyword_named_like_another_methods_input_is_part_of_the_request(agentaccel_spans: SpanRecorder) -> None:
    # A model that sends unknown keywords on (ChatOpenAI's Responses API takes a reusable prompt=): "prompt" is
    # the input of a text-completion stream, here it is an argument like any other.
    model = fake("answer A", "answer B", "never")
    assert model.invoke("hi", prompt={"id": "pmpt_A"}).content == "answer A"
    assert model.invoke("hi", prompt={"id": "pmpt_B"}).content == "answer B"
    assert model.invoke("hi", prompt={"id": "pmpt_A"}).content == "answer A"
    assert results(agentaccel_spans.spans()) == ["miss", "miss", "hit"]


def test_a_serializable_model_holding_an_object_is_keyed_and_cached(agentaccel_spans: SpanRecorder) -> None:
    # Its settings (to_json()'s arguments) are keyed; a value that is not JSON data is keyed as its type's name,
    # so the model is still cached rather than left without a key.
    class Helper:
        pass

    class Serializable(GenericFakeChatModel):
        helper: Any = None
        tone: str = "plain"

        @classmethod
        def is_lc_serializable(cls) -> bool:
            return True

    def model(tone: str) -> Serializable:
        return Serializable(messages=iter([AIMessage(f"{tone} answer"), AIMessage("never")]), helper=Helper(),
                            tone=tone)

    assert model("plain").invoke("q").content == "plain answer"
    assert model("terse").invoke("q").content == "terse answer"  # another setting: another request
    assert model("plain").invoke("q").content == "plain answer"  # another Helper, the same type: a hit
    assert results(agentaccel_spans.spans()) == ["miss", "miss", "hit"]


def test_async_and_batch_share_the_entries_of_invoke(agentaccel_spans: SpanRecorder) -> None:
    model = fake("a", "b", "c")
    assert model.invoke("q1").content == "a"
    assert asyncio.run(model.ainvoke("q1")).content == "a"
    assert [m.content for m in model.batch(["q1", "q2"])] == ["a", "b"]
    assert [m.content for m in asyncio.run(model.abatch(["q1", "q2"]))] == ["a", "b"]
    assert results(agentaccel_spans.spans()).count("miss") == 2


def test_callbacks_see_the_same_events_on_a_hit_as_on_a_miss(agentaccel_spans: SpanRecorder, callbacks: Any) -> None:
    model = fake("the answer", "not this")
    config = {"callbacks": [callbacks.handler]}
    miss = model.invoke("question", config=config)
    miss_events = callbacks.take()
    hit = model.invoke("question", config=config)
    assert hit.content == miss.content == "the answer"
    assert callbacks.take() == miss_events == [("on_chat_model_start", [["question"]]),
                                               ("on_llm_end", [["the answer"]])]
    assert results(agentaccel_spans.spans()) == ["miss", "hit"]


def test_a_handler_attached_and_none_attached_share_one_entry(agentaccel_spans: SpanRecorder, callbacks: Any) -> None:
    model = fake("stored once", "not this")
    assert model.invoke("q", config={"callbacks": [callbacks.handler]}).content == "stored once"
    assert model.invoke("q").content == "stored once"
    assert results(agentaccel_spans.spans()) == ["miss", "hit"]


def test_a_handler_on_a_graph_sees_its_nodes_model_call_on_a_hit(agentaccel_spans: SpanRecorder, callbacks: Any,
                                                                 one_node_graph: Any) -> None:
    # LangGraph hands each node a callback manager carrying the graph's handlers: the call is answered inside
    # LangChain's run, where the handler sees it.
    graph = one_node_graph(fake("the answer", "not this"))
    config = {"callbacks": [callbacks.handler]}
    miss = graph.invoke({"messages": [HumanMessage("question")]}, config=config)
    miss_events = callbacks.take()
    hit = graph.invoke({"messages": [HumanMessage("question")]}, config=config)
    assert hit["messages"][-1].content == miss["messages"][-1].content == "the answer"
    assert callbacks.take() == miss_events == [("on_chat_model_start", [["question"]]),
                                               ("on_llm_end", [["the answer"]])]
    assert results(s for s in agentaccel_spans.spans() if s.name.startswith("chat ")) == ["miss", "hit"]


def test_a_graph_nodes_hit_with_nothing_listening_starts_no_langchain_run(agentaccel_spans: SpanRecorder,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        one_node_graph: Any) -> None:
    # The manager LangGraph hands a node is empty when nothing listens: a hit is answered at invoke, before
    # LangChain configures callbacks and starts a run nobody would see (as for a model called on its own).
    from langchain_core.callbacks.manager import CallbackManager

    started: list[Any] = []
    original = CallbackManager.on_chat_model_start

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        started.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CallbackManager, "on_chat_model_start", counting)
    graph = one_node_graph(fake("the answer", "not this"))
    miss = graph.invoke({"messages": [HumanMessage("question")]})
    assert len(started) == 1  # the miss runs through LangChain's run
    hit = graph.invoke({"messages": [HumanMessage("question")]})
    assert len(started) == 1  # the hit starts none
    assert hit["messages"][-1].content == miss["messages"][-1].content == "the answer"
    assert hit["messages"][-1].id.startswith("lc_run--")  # a fresh run id of its own, as at invoke outside a graph
    assert hit["messages"][-1].id != miss["messages"][-1].id
    assert results(s for s in agentaccel_spans.spans() if s.name.startswith("chat ")) == ["miss", "hit"]


def test_graph_astream_events_and_messages_yield_the_message_on_a_hit(agentaccel_spans: SpanRecorder,
                                                                     one_node_graph: Any) -> None:
    graph = one_node_graph(fake("the answer here", "not this"), asynchronous=True)
    question = {"messages": [HumanMessage("question")]}

    async def events() -> list[tuple[str, Any]]:
        return [(e["event"], getattr(e["data"].get("chunk") or e["data"].get("output"), "content", None))
                async for e in graph.astream_events(question, version="v2") if "chat_model" in e["event"]]

    async def messages() -> list[tuple[str, Any]]:
        return [(type(m).__name__, m.content) async for m, _ in graph.astream(question, stream_mode="messages")]

    async def scenario() -> tuple[Any, ...]:
        return await events(), await events(), await messages()

    miss, hit, hit_messages = asyncio.run(scenario())
    # The miss streams (astream_events' handler asks LangChain to); a hit yields the start and the whole message,
    # as a hit of LangChain's own cache does.
    assert miss[0] == ("on_chat_model_start", None) and miss[-1] == ("on_chat_model_end", "the answer here")
    assert "".join(content for event, content in miss if event == "on_chat_model_stream") == "the answer here"
    assert hit == [("on_chat_model_start", None), ("on_chat_model_end", "the answer here")]
    assert hit_messages == [("AIMessage", "the answer here")]
    assert results(s for s in agentaccel_spans.spans() if s.name.startswith("chat ")) == ["miss", "hit", "hit"]


def test_a_cached_stream_replays_as_chunks_with_token_callbacks(agentaccel_spans: SpanRecorder,
                                                                callbacks: Any) -> None:
    model = fake("one two three", "not this")
    config = {"callbacks": [callbacks.handler]}
    first = list(model.stream("count", config=config))
    first_events = callbacks.take()
    second = list(model.stream("count", config=config))
    assert all(isinstance(c, AIMessageChunk) for c in second)
    assert [c.content for c in second] == [c.content for c in first]
    assert "".join(c.content for c in second) == "one two three"
    assert callbacks.take() == first_events
    assert [e for e in first_events if e[0] == "on_llm_new_token"][:3] == [
        ("on_llm_new_token", "one"), ("on_llm_new_token", " "), ("on_llm_new_token", "two")]
    spans = agentaccel_spans.spans()
    assert results(spans) == ["miss", "hit"]
    assert spans[1].attributes["agentaccel.mode"] == "sync_stream"


def test_async_stream_replays(agentaccel_spans: SpanRecorder) -> None:
    model = fake("a b", "not this")

    async def collect() -> list[Any]:
        return [c async for c in model.astream("go")]

    first, second = asyncio.run(collect()), asyncio.run(collect())
    assert [c.content for c in second] == [c.content for c in first]
    assert all(isinstance(c, AIMessageChunk) for c in second)
    assert results(agentaccel_spans.spans()) == ["miss", "hit"]


def test_langchain_cache_answers_after_agentaccel(agentaccel_spans: SpanRecorder) -> None:
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    lc_cache = InMemoryCache()
    set_llm_cache(lc_cache)
    model = fake("first", "second")
    callbacks_config: Any = {"callbacks": []}
    assert model.invoke("q", config=callbacks_config).content == "first"
    assert lc_cache._cache  # LangChain's cache was filled below agentaccel's
    assert model.invoke("q").content == "first"
    assert results(agentaccel_spans.spans()) == ["miss", "hit"]


def test_options_cache_false_calls_the_model(agentaccel_spans: SpanRecorder) -> None:
    model = fake("one", "two")
    assert model.invoke("q").content == "one"
    with agentaccel.options(cache=False):
        assert model.invoke("q").content == "two"


def test_a_model_made_with_cache_false_is_not_cached_by_agentaccel(agentaccel_spans: SpanRecorder,
                                                                  callbacks: Any) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(f"answer {i}") for i in range(6)]), cache=False)
    assert model.invoke("q").content == "answer 0"
    assert model.invoke("q").content == "answer 1"
    assert model.invoke("q", config={"callbacks": [callbacks.handler]}).content == "answer 2"
    assert "".join(str(c.content) for c in model.stream("q")) == "answer 3"
    assert results(agentaccel_spans.spans()) == ["bypass"] * 4  # still one span each


def test_a_model_with_its_own_cache_instance_answers_after_agentaccel(agentaccel_spans: SpanRecorder) -> None:
    from langchain_core.caches import InMemoryCache

    own = InMemoryCache()
    model = GenericFakeChatModel(messages=iter([AIMessage("first"), AIMessage("second")]), cache=own)
    assert model.invoke("q").content == "first"
    assert own._cache  # the model's cache was filled below agentaccel's, as the global one would be
    assert model.invoke("q").content == "first"
    assert results(agentaccel_spans.spans()) == ["miss", "hit"]
    with agentaccel.options(cache=False):  # agentaccel's cache off: the model's own cache answers
        assert model.invoke("q").content == "first"


def test_a_rebuilt_message_is_the_instance_pydantic_would_construct() -> None:
    # rebuild_message assembles complete stored messages itself, skipping model_construct's per-field loop: it
    # must give exactly what model_construct and the validating decode give, or a pydantic upgrade that changes
    # how instances are laid out fails here rather than in users' hands.
    from agentaccel_langchain.codec import decode_message, encode_message, rebuild_message

    messages = [tool_answer(), AIMessageChunk("par", usage_metadata={"input_tokens": 1, "output_tokens": 1,
                                                                      "total_tokens": 2})]
    for message in messages:
        data = encode_message(message)
        rebuilt, constructed = rebuild_message(data), type(message).model_construct(**data["data"])
        assert type(rebuilt) is type(message)
        assert rebuilt == constructed == decode_message(data)
        assert list(vars(rebuilt).items()) == list(vars(constructed).items())
        assert rebuilt.model_fields_set == constructed.model_fields_set
        assert (rebuilt.model_extra, rebuilt.__pydantic_private__) == (constructed.model_extra, None)
        assert rebuilt.model_dump() == message.model_dump()
    # Data without every field (written by another LangChain version) goes through model_construct's defaults.
    partial = {"type": "ai", "data": {"content": "hi", "tool_calls": []}}
    assert rebuild_message(partial) == AIMessage("hi")


def test_a_rebuilt_chat_result_is_the_result_validation_gives() -> None:
    # A hit below invoke assembles its ChatGeneration(Chunk)s and ChatResult from trusted data with the text the
    # generation's validator derived when the entry was stored; it must equal what validating the same data gives.
    from agentaccel_langchain.codec import CHAT_CHUNK, CHAT_RESULT, MESSAGE
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    from agentaccel import CodecError

    # Text in legacy content blocks: the validator joins them, so the stored text is not the message's content.
    blocks = AIMessage([{"text": "one "}, "two", {"type": "text", "text": "three"}])
    result = ChatResult(generations=[ChatGeneration(message=tool_answer(), generation_info={"finish": "stop"}),
                                     ChatGeneration(message=blocks)])
    data = CHAT_RESULT.encode(result)
    rebuilt, validated = CHAT_RESULT.rebuild(copy.deepcopy(data)), CHAT_RESULT.decode(copy.deepcopy(data))
    assert type(rebuilt) is ChatResult and rebuilt == validated
    assert [g.text for g in rebuilt.generations] == ["", "one twothree"] == [g.text for g in result.generations]
    for fast, slow in zip(rebuilt.generations, validated.generations, strict=True):
        assert type(fast) is ChatGeneration
        assert list(vars(fast).items()) == list(vars(slow).items())
        assert fast.model_fields_set == slow.model_fields_set
    assert rebuilt.model_fields_set == validated.model_fields_set and rebuilt.llm_output is None
    chunk = ChatGenerationChunk(message=AIMessageChunk("par"), generation_info={"i": 0})
    fast_chunk, slow_chunk = CHAT_CHUNK.rebuild(CHAT_CHUNK.encode(chunk)), CHAT_CHUNK.decode(CHAT_CHUNK.encode(chunk))
    assert type(fast_chunk) is ChatGenerationChunk and fast_chunk == slow_chunk and fast_chunk.text == "par"
    assert fast_chunk.type == "ChatGenerationChunk"
    # invoke stores the same shape, text included, so either path's entry serves the other assembled.
    assert MESSAGE.encode(blocks) == CHAT_RESULT.encode(ChatResult(generations=[ChatGeneration(message=blocks)]))
    # Stored data whose text is not its message's (planted in a shared store) does not decode, so it never
    # reaches the level where data is trusted.
    planted = copy.deepcopy(data)
    planted["generations"][0]["text"] = "not what the message says"
    with pytest.raises(CodecError, match="text does not match"):
        CHAT_RESULT.decode(planted)
    # An entry stored without the text (an earlier agentaccel) is validated, and still the same result.
    for generation in data["generations"]:
        del generation["text"]
    assert CHAT_RESULT.rebuild(data) == validated
    assert validated.generations[1].message.usage_metadata is None  # no token counts: none to mark (see _cost_free)


def test_a_message_is_keyed_by_exactly_what_model_dump_gives() -> None:
    # The request reads a message's fields directly when they are all scalars or empty, rather than paying for
    # model_dump: for every kind of message, extra fields and subclasses with computed fields or serializers
    # included, what it reads must be what model_dump gives, or two different conversations could share a key.
    import pydantic
    from agentaccel_langchain.requests import _fields
    from langchain_core.messages import ToolMessage

    class Shouting(HumanMessage):
        @pydantic.field_serializer("content")
        def _loud(self, content: Any) -> Any:
            return str(content).upper()

    class Counted(HumanMessage):
        @pydantic.computed_field  # type: ignore[prop-decorator]
        @property
        def length(self) -> int:
            return len(str(self.content))

    messages = [SystemMessage("be brief"), HumanMessage("hi", name="ann"), HumanMessage("hi", lang="en"),
                tool_answer(), AIMessage([{"type": "text", "text": "a"}]), ToolMessage("42", tool_call_id="c1"),
                Shouting("hi"), Counted("hi")]
    for message in messages:
        assert _fields(message) == message.model_dump(), type(message).__name__
    assert _fields(HumanMessage("hi", lang="en")) != _fields(HumanMessage("hi"))
    assert _fields(Shouting("hi"))["content"] == "HI" and _fields(Counted("hi"))["length"] == 2


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
def test_a_hit_replays_v2_stream_events_as_langchains_own_cache_does(asynchronous: bool,
                                                                      agentaccel_spans: SpanRecorder) -> None:
    # LangChain's v2 message streaming (LangGraph's StreamMessagesHandlerV2) hears a model call as on_stream_event
    # events; LangChain's own cache replays a hit's message as such events, and so must an agentaccel hit.
    from langchain_core.caches import InMemoryCache
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers._streaming import _V2StreamingCallbackHandler

    class Events(BaseCallbackHandler, _V2StreamingCallbackHandler):
        def __init__(self) -> None:
            self.events: list[Any] = []

        def on_stream_event(self, event: Any, **kwargs: Any) -> None:
            self.events.append(event)

    def without_run_ids(value: Any) -> Any:  # message ids are made from each run's id
        if isinstance(value, dict):
            return {k: without_run_ids(v) for k, v in value.items()}
        if isinstance(value, list):
            return [without_run_ids(v) for v in value]
        return "<run id>" if isinstance(value, str) and value.startswith("lc_run-") else value

    model = fake("the answer is 42", "never served")
    model.cache = InMemoryCache()  # the model's own cache, below agentaccel's

    def heard() -> list[Any]:
        handler = Events()
        config: Any = {"callbacks": [handler]}
        message = asyncio.run(model.ainvoke("q", config=config)) if asynchronous else model.invoke("q", config=config)
        assert message.text == "the answer is 42"
        return without_run_ids(handler.events)

    miss = heard()
    ours = heard()
    with agentaccel.options(cache=False):  # agentaccel's cache off: LangChain's own cache answers
        langchains = heard()
    assert results(agentaccel_spans.spans()) == ["miss", "hit", "bypass"]
    # The one difference: the fake model's answer has no usage, which LangChain's hit marks {"total_cost": 0}, a
    # usage without token counts that LangGraph's v3 streaming cannot assemble; agentaccel's leaves it out.
    assert langchains[-1].pop("usage") == {"total_cost": 0}
    assert miss and ours == langchains
    assert [ours[0]["event"], ours[-1]["event"]] == ["message-start", "message-finish"]
