"""Coexistence with OpenLLMetry's real OpenAI instrumentation (``opentelemetry-instrumentation-openai``): it wraps
the ``openai`` client that ``ChatOpenAI`` calls, and without agentaccel it records an ``openai.chat`` span per
request. With agentaccel, the model call is recorded once, by agentaccel, because agentaccel's span context carries
the ``suppress_language_model_instrumentation`` key OpenLLMetry honours; on a hit there is no request at all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

import agentaccel
from agentaccel.mockllm import MockLLM
from agentaccel.testing.pytest_plugin import SpanRecorder


@pytest.fixture
def openllmetry(agentaccel_spans: SpanRecorder) -> Iterator[SpanRecorder]:
    """OpenLLMetry's OpenAI instrumentation recording into the same provider as agentaccel."""
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=agentaccel_spans.tracer_provider)
    try:
        yield agentaccel_spans
    finally:
        instrumentor.uninstrument()


def chat_model(mock_llm: MockLLM) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=mock_llm.url, api_key="test", model="gpt-4o-mini")


def names(recorder: SpanRecorder) -> list[str]:
    return sorted(s.name for s in recorder.spans())


def test_without_agentaccel_openllmetry_records_the_request(openllmetry: SpanRecorder, mock_llm: MockLLM) -> None:
    # The control: the instrumentation is live, so the absence of its span below means it was suppressed.
    agentaccel.disable()
    chat_model(mock_llm).invoke([HumanMessage("hello")])
    assert names(openllmetry) == ["openai.chat"]


def test_one_model_span_per_call_on_every_path(openllmetry: SpanRecorder, mock_llm: MockLLM,
                                               callbacks: Any) -> None:
    model = chat_model(mock_llm)

    async def async_paths() -> None:
        await model.ainvoke("async question")
        [c async for c in model.astream("async story")]

    model.invoke("plain question")  # answered at invoke (no handler configured)
    model.invoke("with a handler", config={"callbacks": [callbacks.handler]})  # answered in _generate_with_cache
    list(model.stream("a story"))
    asyncio.run(async_paths())
    assert mock_llm.counters()["chat_requests"] == 5
    spans = openllmetry.spans()
    assert [s for s in spans if s.name == "openai.chat"] == []
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 5
    assert [s.attributes.get("agentaccel.cache.result") for s in spans] == ["miss"] * 5
    assert all(s.instrumentation_scope.name == "agentaccel.langchain" for s in spans)

    openllmetry.clear()
    model.invoke("plain question")
    list(model.stream("a story"))
    assert mock_llm.counters()["chat_requests"] == 5
    assert [s.attributes.get("agentaccel.cache.result") for s in openllmetry.spans()] == ["hit", "hit"]


def test_openllmetry_still_records_calls_agentaccel_does_not_own(openllmetry: SpanRecorder,
                                                                 mock_llm: MockLLM) -> None:
    # The key is set only while an agentaccel model call runs: a direct openai client call, made outside any
    # LangChain model, is OpenLLMetry's to record (agentaccel does not intercept the openai client itself).
    import openai

    model = chat_model(mock_llm)
    model.invoke("first")
    client = openai.OpenAI(base_url=mock_llm.url, api_key="test")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "direct"}])
    assert names(openllmetry) == ["chat gpt-4o-mini", "openai.chat"]


def test_embeddings_are_one_span(openllmetry: SpanRecorder, mock_llm: MockLLM) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(base_url=mock_llm.url, api_key="test", model="text-embedding-3-small",
                                  check_embedding_ctx_length=False)
    embeddings.embed_query("hello")
    assert names(openllmetry) == ["embeddings text-embedding-3-small"]


def test_with_openllmetrys_langchain_instrumentation_its_handler_sees_hits_too(openllmetry: SpanRecorder,
                                                                                mock_llm: MockLLM) -> None:
    # OpenLLMetry's LangChain instrumentation is a callback handler that it adds by wrapping the callback
    # manager's constructor: agentaccel cannot see it in any config, so it must not answer a hit before
    # LangChain's callback run (the handler would see misses only). Its span is the handler's record of
    # LangChain's run, not a second record of the request: the openai span stays suppressed.
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor

    instrumentor = LangchainInstrumentor()
    instrumentor.instrument(tracer_provider=openllmetry.tracer_provider)
    try:
        model = chat_model(mock_llm)
        model.invoke("hello")
        miss = names(openllmetry)
        openllmetry.clear()
        model.invoke("hello")
        assert names(openllmetry) == miss == ["ChatOpenAI.chat", "chat gpt-4o-mini"]
        assert [s.attributes.get("agentaccel.cache.result") for s in openllmetry.spans()
                if s.name.startswith("chat ")] == ["hit"]
        assert mock_llm.counters()["chat_requests"] == 1
    finally:
        instrumentor.uninstrument()
