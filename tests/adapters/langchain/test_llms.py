"""Text-completion models (``BaseLLM``, not chat): invoke/batch/stream/astream are one span each, a repeat is a hit
answered as the types each path expects (an LLMResult below ``generate``, GenerationChunks replayed through
``stream()`` as strings), and callback handlers see a run that starts, streams its tokens and ends on a hit as
on a miss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import GenerationChunk

import agentaccel
from agentaccel.testing.pytest_plugin import SpanRecorder

#: The prompts that reached CountingLLM (a module list: a list field would be copied per pydantic instance).
CALLS: list[str] = []


class CountingLLM(LLM):
    """A completion model with its own ``_stream``/``_astream`` (defined after enable(): patched as it is
    created), counting what reaches it so a hit is told from a miss."""

    fail_after: int | None = None

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        CALLS.append(prompt)
        return f"answer to {prompt}"

    def _stream(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        CALLS.append(prompt)
        for i, word in enumerate(["one", " two", " three"]):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("stream broke")
            chunk = GenerationChunk(text=word, generation_info={"index": i})
            if run_manager is not None:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk

    async def _astream(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        for chunk in self._stream(prompt, stop, None, **kwargs):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def results(recorder: SpanRecorder) -> list[Any]:
    return [s.attributes.get("agentaccel.cache.result") for s in recorder.spans()]


def test_invoke_and_batch_hit_with_the_same_answer(agentaccel_spans: SpanRecorder) -> None:
    model = FakeListLLM(responses=["first", "second", "third", "never"])
    assert model.invoke("q") == "first"
    assert model.invoke("q") == "first"  # FakeListLLM would answer "second": this is the cache
    assert asyncio.run(model.ainvoke("q")) == "first"  # sync and async share entries
    # batch() is one _generate over both prompts (one request for a provider that takes several): its own entry.
    assert model.batch(["q", "other"]) == ["second", "third"]
    assert model.batch(["q", "other"]) == ["second", "third"]
    spans = agentaccel_spans.spans()
    assert {s.name for s in spans} == {"text_completion FakeListLLM"}
    assert results(agentaccel_spans) == ["miss", "hit", "hit", "miss", "hit"]


def test_a_hit_starts_and_ends_the_callback_run(agentaccel_spans: SpanRecorder, callbacks: Any) -> None:
    events: list[str] = []
    from langchain_core.callbacks import BaseCallbackHandler

    class Runs(BaseCallbackHandler):
        def on_llm_start(self, serialized: Any, prompts: list[str], **kwargs: Any) -> None:
            events.append(f"start {prompts}")

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            events.append(f"end {[[g.text for g in gens] for gens in response.generations]}")

    model = FakeListLLM(responses=["only", "never"])
    config: Any = {"callbacks": [Runs()]}
    model.invoke("q", config=config)
    miss = list(events)
    events.clear()
    model.invoke("q", config=config)
    assert events == miss == ["start ['q']", "end [['only']]"]
    assert results(agentaccel_spans) == ["miss", "hit"]


def test_a_hit_reports_no_tokens_to_a_handler(agentaccel_spans: SpanRecorder) -> None:
    # As LangChain's own cache (and agentaccel's chat hits): a hit has no llm_output, where handlers that count a
    # run's tokens (the OpenAI cost callback) look, so the call that made the entry is counted once.
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models.llms import BaseLLM
    from langchain_core.outputs import Generation, LLMResult

    class Billed(BaseLLM):
        @property
        def _llm_type(self) -> str:
            return "billed"

        def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> LLMResult:
            CALLS.extend(prompts)
            return LLMResult(generations=[[Generation(text=f"out {p}")] for p in prompts],
                             llm_output={"token_usage": {"total_tokens": 12}})

    counted: list[int] = []

    class Usage(BaseCallbackHandler):
        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            counted.append(((response.llm_output or {}).get("token_usage") or {}).get("total_tokens", 0))

    CALLS.clear()
    model = Billed()
    config: Any = {"callbacks": [Usage()]}
    assert model.invoke("p", config=config) == model.invoke("p", config=config) == "out p"
    assert counted == [12, 0] and CALLS == ["p"]
    assert results(agentaccel_spans) == ["miss", "hit"]


class Tokens:
    """A handler recording each token with the chunk it came with, and the run's end; sync or async."""

    def __init__(self, asynchronous: bool) -> None:
        from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

        events: list[tuple[Any, ...]] = []
        self.events = events

        def record(token: str, chunk: Any = None, **kwargs: Any) -> None:
            events.append(("token", token, type(chunk).__name__, getattr(chunk, "generation_info", None)))

        def end(response: Any, **kwargs: Any) -> None:
            events.append(("end", [[g.text for g in gens] for gens in response.generations]))

        class Async(AsyncCallbackHandler):
            async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
                await asyncio.sleep(0)  # a real suspension: only an awaited callback gets past it
                record(token, **kwargs)

            async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
                end(response)

        class Sync(BaseCallbackHandler):
            def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
                record(token, **kwargs)

            def on_llm_end(self, response: Any, **kwargs: Any) -> None:
                end(response)

        self.handler: Any = Async() if asynchronous else Sync()

    def take(self) -> list[tuple[Any, ...]]:
        taken = list(self.events)
        self.events.clear()
        return taken


EXPECTED_EVENTS = [("token", "one", "GenerationChunk", {"index": 0}),
                   ("token", " two", "GenerationChunk", {"index": 1}),
                   ("token", " three", "GenerationChunk", {"index": 2}),
                   ("end", [["one two three"]])]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["stream", "astream"])
def test_a_replayed_stream_fires_the_token_callbacks_the_models_stream_fires(agentaccel_spans: SpanRecorder,
                                                                             asynchronous: bool) -> None:
    # BaseLLM.stream() leaves on_llm_new_token to the model's own _stream, which a replay does not run: the
    # adapter fires them for each replayed chunk, as the model did, with the chunk (awaited on astream).
    CALLS.clear()
    model = CountingLLM()
    tokens = Tokens(asynchronous)
    config: Any = {"callbacks": [tokens.handler]}

    def run() -> list[str]:
        if not asynchronous:
            return list(model.stream("count", config=config))

        async def collect() -> list[str]:
            return [c async for c in model.astream("count", config=config)]

        return asyncio.run(collect())

    assert run() == ["one", " two", " three"]
    assert tokens.take() == EXPECTED_EVENTS
    assert run() == ["one", " two", " three"]
    assert tokens.take() == EXPECTED_EVENTS
    assert CALLS == ["count"]
    spans = agentaccel_spans.spans()
    assert [s.name for s in spans] == ["text_completion CountingLLM"] * 2
    assert results(agentaccel_spans) == ["miss", "hit"]
    assert spans[1].attributes is not None and spans[1].attributes["agentaccel.stream.chunks"] == 3


def test_a_failing_token_callback_fails_a_replay_as_it_fails_the_model(agentaccel_spans: SpanRecorder) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Strict(BaseCallbackHandler):
        raise_error = True  # LangChain re-raises this handler's errors instead of logging them

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            if token == " two":
                raise ValueError("handler refused a token")

    CALLS.clear()
    model = CountingLLM()
    assert list(model.stream("strict")) == ["one", " two", " three"]  # fills the cache, no handler
    got: list[str] = []
    with pytest.raises(ValueError, match="handler refused a token"):
        for chunk in model.stream("strict", config={"callbacks": [Strict()]}):
            got.append(chunk)
    assert got == ["one"]
    assert CALLS == ["strict"]
    assert results(agentaccel_spans) == ["miss", "hit"]
    assert agentaccel_spans.spans()[1].attributes["agentaccel.stream.completed"] is False


def test_the_replayed_chunks_are_generation_chunks(agentaccel_spans: SpanRecorder) -> None:
    CALLS.clear()
    model = CountingLLM()
    list(model._stream("direct"))
    replayed = list(model._stream("direct"))
    assert all(type(c) is GenerationChunk for c in replayed)
    assert [(c.text, c.generation_info) for c in replayed] == [("one", {"index": 0}), (" two", {"index": 1}),
                                                              (" three", {"index": 2})]
    assert CALLS == ["direct"]


def test_astream_replays(agentaccel_spans: SpanRecorder) -> None:
    CALLS.clear()
    model = CountingLLM()

    async def collect() -> list[str]:
        return [c async for c in model.astream("async count")]

    assert asyncio.run(collect()) == asyncio.run(collect()) == ["one", " two", " three"]
    assert CALLS == ["async count"]
    assert results(agentaccel_spans) == ["miss", "hit"]
    assert agentaccel_spans.spans()[0].attributes["agentaccel.mode"] == "async_stream"


def test_a_stream_that_fails_is_not_stored(agentaccel_spans: SpanRecorder) -> None:
    CALLS.clear()
    model = CountingLLM(fail_after=2)
    with pytest.raises(RuntimeError, match="stream broke"):
        list(model.stream("fragile"))
    model.fail_after = None
    assert list(model.stream("fragile")) == ["one", " two", " three"]
    assert CALLS == ["fragile", "fragile"]
    assert results(agentaccel_spans) == ["miss", "miss"]
    assert agentaccel_spans.spans()[0].attributes["error.type"] == "RuntimeError"


def test_cache_false_on_the_llm_is_honoured(agentaccel_spans: SpanRecorder) -> None:
    model = FakeListLLM(responses=["a", "b", "c"], cache=False)
    assert [model.invoke("q"), model.invoke("q")] == ["a", "b"]
    with agentaccel.options(cache=True):  # the caller's explicit option wins over the model's field
        assert [model.invoke("q"), model.invoke("q")] == ["c", "c"]
    assert results(agentaccel_spans) == ["bypass", "bypass", "miss", "hit"]
