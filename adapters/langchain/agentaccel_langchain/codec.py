"""LangChain results <-> JSON data for the cache, without pickle and without ``langchain_core.load.loads``:
messages go through ``message_to_dict``/``messages_from_dict``, which map a fixed set of type names to message
classes and never import a class named by the data (CVE-2025-68664 is what ``loads`` on stored data risks).

A chat call stores one shape whether it was made at ``invoke`` (an AIMessage) or below it (a ChatResult), so a
call answered with callbacks attached fills the cache for the same call without them, and the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from agentaccel import CodecError

#: Message ids LangChain derives from the run (``lc_run-<uuid>``): stale on a replay, so they are not stored and
#: LangChain gives the replayed message the new run's id, as it does for a fresh one.
RUN_ID_PREFIXES = ("lc_run-", "run-")


def encode_message(message: Any) -> dict[str, Any]:
    from langchain_core.messages import message_to_dict

    try:
        data = message_to_dict(message)
    except Exception as exc:
        raise CodecError(f"cannot encode {type(message).__name__}: {exc}") from None
    ident = data["data"].get("id")
    if isinstance(ident, str) and ident.startswith(RUN_ID_PREFIXES):
        data["data"]["id"] = None
    return data


def decode_message(data: Any) -> Any:
    from langchain_core.messages import messages_from_dict

    try:
        return messages_from_dict([data])[0]
    except Exception as exc:
        raise CodecError(f"stored message is not a LangChain message: {exc}") from None


@functools.cache
def _constructible() -> dict[str, Any]:
    from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage

    return {"ai": AIMessage, "AIMessageChunk": AIMessageChunk, "tool": ToolMessage}


def rebuild_message(data: Any) -> Any:
    """The message again from data ``encode_message`` made (or ``decode_message`` accepted): pydantic's
    ``model_construct`` skips the validators, which cost half of an in-process hit."""
    cls = _constructible().get(data["type"])
    return cls.model_construct(**data["data"]) if cls is not None else decode_message(data)


@functools.cache
def _outputs() -> Any:
    from langchain_core import outputs

    return outputs


def _generation(message: Any, info: Any) -> dict[str, Any]:
    return {"message": encode_message(message), "generation_info": info}


class _MessageCodec:
    """A codec whose results hold messages: ``decode`` validates stored messages (they may come from Redis),
    ``rebuild`` skips that for data this codec made or has decoded once; ``_build`` says how a result is made
    from its data with either way of reading a message."""

    def decode(self, data: Any) -> Any:
        return self._build(data, decode_message)

    def rebuild(self, data: Any) -> Any:
        return self._build(data, rebuild_message)

    def _build(self, data: Any, message: Callable[[Any], Any]) -> Any:
        raise NotImplementedError


class ChatResultCodec(_MessageCodec):
    """``ChatResult`` (what ``_generate_with_cache`` returns)."""

    def encode(self, value: Any) -> Any:
        return {"generations": [_generation(g.message, g.generation_info) for g in value.generations],
                "llm_output": value.llm_output}

    def _build(self, data: Any, message: Callable[[Any], Any]) -> Any:
        outputs = _outputs()
        return outputs.ChatResult(generations=[outputs.ChatGeneration(message=message(g["message"]),
                                                                      generation_info=g.get("generation_info"))
                                               for g in data["generations"]], llm_output=data.get("llm_output"))


class MessageCodec(_MessageCodec):
    """The ``AIMessage`` ``invoke`` returns, stored in the ChatResult shape."""

    def encode(self, value: Any) -> Any:
        return {"generations": [_generation(value, None)], "llm_output": None}

    def _build(self, data: Any, message: Callable[[Any], Any]) -> Any:
        return message(data["generations"][0]["message"])


class ChatChunkCodec(_MessageCodec):
    """One ``ChatGenerationChunk`` of ``_stream``/``_astream``."""

    def encode(self, value: Any) -> Any:
        return _generation(value.message, value.generation_info)

    def _build(self, data: Any, message: Callable[[Any], Any]) -> Any:
        return _outputs().ChatGenerationChunk(message=message(data["message"]),
                                              generation_info=data.get("generation_info"))


class LLMResultCodec:
    """``LLMResult`` of a text-completion model (``BaseLLM._generate_helper``)."""

    def encode(self, value: Any) -> Any:
        return {"generations": [[{"text": g.text, "generation_info": g.generation_info} for g in prompt]
                                for prompt in value.generations], "llm_output": value.llm_output}

    def decode(self, data: Any) -> Any:
        from langchain_core.outputs import Generation, LLMResult

        return LLMResult(generations=[[Generation(text=g["text"], generation_info=g.get("generation_info"))
                                       for g in prompt] for prompt in data["generations"]],
                         llm_output=data.get("llm_output"))


class GenerationChunkCodec:
    """One ``GenerationChunk`` of a text-completion model's ``_stream``/``_astream``."""

    def encode(self, value: Any) -> Any:
        return {"text": value.text, "generation_info": value.generation_info}

    def decode(self, data: Any) -> Any:
        from langchain_core.outputs import GenerationChunk

        try:
            return GenerationChunk(text=data["text"], generation_info=data.get("generation_info"))
        except Exception as exc:
            raise CodecError(f"stored chunk is not a GenerationChunk: {exc}") from None


class ToolResultCodec(_MessageCodec):
    """A tool's result: JSON data as is, a ``ToolMessage`` (LangGraph's ToolNode asks for one) as a message."""

    def encode(self, value: Any) -> Any:
        from langchain_core.messages import BaseMessage

        if isinstance(value, BaseMessage):
            return {"message": encode_message(value)}
        return {"value": value}

    def _build(self, data: Any, message: Callable[[Any], Any]) -> Any:
        return message(data["message"]) if "message" in data else data["value"]


CHAT_RESULT = ChatResultCodec()
MESSAGE = MessageCodec()
CHAT_CHUNK = ChatChunkCodec()
LLM_RESULT = LLMResultCodec()
GENERATION_CHUNK = GenerationChunkCodec()
TOOL_RESULT = ToolResultCodec()
