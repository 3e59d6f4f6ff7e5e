"""The built-in ``http`` plugin: a middleware that sets ``call.upstream`` admits each request an httpx2 client
sends during the call, and is told when the provider is done with it (real HTTP to the mock LLM)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import httpx2
import pytest
from test_pipeline import MiddlewarePlugin

import agentaccel
from agentaccel import AgentAccelError, Io, Middleware, plugin_failures
from agentaccel.builtin import http
from agentaccel.mockllm import MockLLM

Register = Callable[[Any, str], None]
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


class Refused(AgentAccelError):
    pass


class Admissions(Middleware):
    """Admits each request of the calls ``http.sees``, recording ``admit`` and ``done <status>`` in ``log``;
    ``refuse`` is raised by the admission, ``fail_done`` by its ``done``."""

    name = "admissions"

    def __init__(self) -> None:
        self.log: list[str] = []
        self.refuse: BaseException | None = None
        self.fail_done = False

    def flow(self, call: agentaccel.Call) -> Iterator[Any]:
        if http.sees(call):
            call.upstream = self
        try:
            yield agentaccel.PROCEED
        finally:
            call.upstream = None

    def admit(self) -> Generator[Io, Any, Admissions]:
        async def nothing() -> None:
            return None

        yield Io(lambda: None, nothing)  # an effect, run blocking or awaited as the client is
        if self.refuse is not None:
            raise self.refuse
        self.log.append("admit")
        return self

    def done(self, status: int | None, headers: Mapping[str, str] | None) -> None:
        self.log.append(f"done {status}")
        if self.fail_done:
            raise RuntimeError("a bug in done()")


@pytest.fixture
def admissions(register: Register) -> Admissions:
    middleware = Admissions()
    register(MiddlewarePlugin(middleware), "admissions")
    agentaccel.enable()
    return middleware


def test_a_request_is_admitted_and_done_before_send_returns(admissions: Admissions, mock_llm: MockLLM) -> None:
    with httpx2.Client(base_url=mock_llm.url) as client:

        @agentaccel.accelerate(operation="chat", http=True)
        def ask(path: str) -> list[str]:
            response = client.post(path, json=BODY)
            return [*admissions.log, str(response.status_code)]

        assert ask("/chat/completions") == ["admit", "done 200", "200"]
        admissions.log.clear()
        assert ask("/no/such/path") == ["admit", "done 404", "404"]


def test_a_streamed_body_is_done_when_it_is_closed(admissions: Admissions, mock_llm: MockLLM) -> None:
    with httpx2.Client(base_url=mock_llm.url) as client:

        @agentaccel.accelerate(operation="chat", http=True)
        def ask() -> list[list[str]]:
            seen = []
            with client.stream("POST", "/chat/completions", json={**BODY, "stream": True}) as response:
                raw = response.iter_raw()  # kept: a dropped iterator closes the response
                next(raw)
                seen.append(list(admissions.log))
            seen.append(list(admissions.log))
            return seen

        assert ask() == [["admit"], ["admit", "done 200"]]


def test_async_requests_and_streams(admissions: Admissions, mock_llm: MockLLM) -> None:
    @agentaccel.accelerate(operation="chat", http=True)
    async def ask() -> list[list[str]]:
        seen = []
        async with httpx2.AsyncClient(base_url=mock_llm.url) as client:
            await client.post("/chat/completions", json=BODY)
            seen.append(list(admissions.log))
            async with client.stream("POST", "/chat/completions", json={**BODY, "stream": True}) as response:
                async for _ in response.aiter_raw():
                    break
                seen.append(list(admissions.log))
            seen.append(list(admissions.log))
        return seen

    assert asyncio.run(ask()) == [["admit", "done 200"], ["admit", "done 200", "admit"],
                                  ["admit", "done 200", "admit", "done 200"]]


def test_a_request_without_a_response_is_done_with_none(admissions: Admissions) -> None:
    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> None:
        httpx2.post("http://127.0.0.1:9/v1/chat/completions", json=BODY)  # nothing listens there

    with pytest.raises(httpx2.ConnectError):
        ask()
    assert admissions.log == ["admit", "done None"]


def test_a_refusal_reaches_the_caller_and_sends_nothing(admissions: Admissions, mock_llm: MockLLM) -> None:
    admissions.refuse = Refused("over the limit")

    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> None:
        httpx2.post(f"{mock_llm.url}/chat/completions", json=BODY)

    with pytest.raises(Refused, match="over the limit"):
        ask()
    assert mock_llm.counters()["requests"] == 0


def test_bugs_in_an_admission_do_not_fail_the_request(admissions: Admissions, mock_llm: MockLLM) -> None:
    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> int:
        return httpx2.post(f"{mock_llm.url}/chat/completions", json=BODY).status_code

    before = plugin_failures().get("http admission", 0)
    admissions.refuse = RuntimeError("a bug in admit()")
    assert ask() == 200  # sent without an admission
    admissions.refuse, admissions.fail_done = None, True
    assert ask() == 200  # answered, though done() failed
    assert plugin_failures()["http admission"] == before + 2
    assert mock_llm.counters()["chat_requests"] == 2


def test_only_calls_said_to_go_through_httpx_are_admitted(admissions: Admissions, mock_llm: MockLLM) -> None:
    @agentaccel.accelerate(operation="chat")
    def unsaid() -> int:
        return httpx2.post(f"{mock_llm.url}/chat/completions", json=BODY).status_code

    assert unsaid() == 200
    assert httpx2.post(f"{mock_llm.url}/chat/completions", json=BODY).status_code == 200  # outside any call
    assert admissions.log == []


def test_disabled_it_leaves_httpx_as_it_was(register: Register, monkeypatch: pytest.MonkeyPatch) -> None:
    original = vars(httpx2.Client)["send"], vars(httpx2.AsyncClient)["send"]
    agentaccel.enable()
    assert vars(httpx2.Client)["send"] is not original[0]
    agentaccel.disable()
    assert (vars(httpx2.Client)["send"], vars(httpx2.AsyncClient)["send"]) == original
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "http")
    middleware = Admissions()
    register(MiddlewarePlugin(middleware), "admissions")
    agentaccel.enable()
    assert vars(httpx2.Client)["send"] is original[0]

    @agentaccel.accelerate(operation="chat", http=True)
    def ask() -> bool:
        return http.sees(agentaccel_call())

    assert ask() is False


def agentaccel_call() -> agentaccel.Call:
    from agentaccel._pipeline import _ACTIVE

    call = _ACTIVE.get()
    assert call is not None
    return call
