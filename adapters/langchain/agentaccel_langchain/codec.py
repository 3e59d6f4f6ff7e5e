"""LangChain results <-> JSON data for the cache, without pickle and without ``langchain_core.load.loads``:
messages go through ``message_to_dict``/``messages_from_dict``, which map a fixed set of type names to message
classes and never import a class named by the data (CVE-2025-68664 is what ``loads`` on stored data risks).

A chat call stores one shape whether it was made at ``invoke`` (an AIMessage) or below it (a ChatResult), so a
call answered with callbacks attached fills the cache for the same call without them, and the other way round.
"""

from __future__ import annotations

import functools
from random import getrandbits
from typing import Any

from agentaccel import CodecError

#: ``langchain_core.utils.utils.LC_ID_PREFIX``, which ``_generate_with_cache`` puts before a run's id.
LC_ID_PREFIX = "lc_run-"
#: Message ids LangChain derives from the run (``lc_run--<uuid>``, ``run-<uuid>`` before LangChain 0.3): stale on
#: a replay, so they are not stored and a hit's message gets the new run's id, as a fresh one does
#: (``patches._run_ids``, :func:`_new_run_id`).
RUN_ID_PREFIXES = (LC_ID_PREFIX, "run-")
#: The bits a version-4 UUID fixes (version and variant), as (mask to clear, bits to set), as ``uuid.UUID`` does.
_UUID4_BITS = (~(0xF << 76 | 0xC << 60), 0x4 << 76 | 0x8 << 60)


def _new_run_id() -> str:
    """``f"{LC_ID_PREFIX}-{uuid.uuid4()}-0"``, the id ``_generate_with_cache`` gives a run's one answer, for a run
    that never existed: an ``invoke`` hit is answered before LangChain starts one. ``uuid4()`` and its ``str()``
    cost 2.6 us, a tenth of such a hit; this costs 0.7 us (the random module, not the OS: the id needs to be
    unique, not secret)."""
    clear, bits = _UUID4_BITS
    digits = "%032x" % (getrandbits(128) & clear | bits)
    return f"{LC_ID_PREFIX}-{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}-0"


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
def constructible() -> dict[str, Any]:
    """The message classes a stored entry may name, by type: imported on first use (the adapter is imported at
    enable(), possibly before LangChain)."""
    from langchain_core.messages import AIMessage, AIMessageChunk

    return {"ai": AIMessage, "AIMessageChunk": AIMessageChunk}


@functools.cache
def _layout(cls: Any) -> tuple[tuple[str, ...], bool] | None:
    """The field names of ``cls`` in order and whether it keeps extra fields, when pydantic's ``model_construct``
    of data holding every field and nothing else amounts to taking that dict as the instance's: no aliases,
    private attributes, post-init hook or root model. None otherwise."""
    fields = cls.__pydantic_fields__
    if (cls.__pydantic_post_init__ or cls.__private_attributes__ or cls.__pydantic_root_model__
            or any(f.alias is not None or f.validation_alias is not None for f in fields.values())):
        return None
    return tuple(fields), cls.model_config.get("extra") == "allow"


_set = object.__setattr__


def _new(cls: Any, extra: bool, fields: dict[str, Any], fields_set: set[str]) -> Any:
    """``cls`` with ``fields`` as its instance dict, as ``model_construct`` lays an instance out: for a class with
    a :func:`_layout`, ``fields`` holding its names in order, and ``extra`` as the layout says."""
    instance = cls.__new__(cls)
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_extra__", {} if extra else None)
    _set(instance, "__pydantic_private__", None)
    return instance


#: The fields of a ChatGeneration(Chunk) and of a ChatResult in the order their classes declare them, which is
#: the order this codec writes them in.
_GENERATION_FIELDS = ("text", "generation_info", "type", "message")
_RESULT_FIELDS = ("generations", "llm_output")


def _written(cls: Any, names: tuple[str, ...]) -> bool | None:
    """For a class whose fields this codec writes itself, in the order ``names``: whether it keeps extra fields,
    when its layout is those names; None when it is not (a LangChain that changed it)."""
    layout = _layout(cls)
    return layout[1] if layout is not None and layout[0] == names else None


@functools.cache
def _generation_layout(cls: Any) -> tuple[bool, str] | None:
    """Whether ChatGeneration(Chunk) ``cls`` keeps extra fields, and its ``type``, when its layout is
    :data:`_GENERATION_FIELDS`; None otherwise. Asked once per class, not on every hit."""
    extra = _written(cls, _GENERATION_FIELDS)
    return None if extra is None else (extra, cls.__pydantic_fields__["type"].default)


@functools.cache
def _result_layout() -> bool | None:
    """Whether ChatResult keeps extra fields, when its layout is :data:`_RESULT_FIELDS`; None otherwise."""
    return _written(_outputs().ChatResult, _RESULT_FIELDS)


def rebuild_message(data: Any) -> Any:
    """The message again from data ``encode_message`` made (or ``decode_message`` accepted), skipping the
    validators, which cost half of an in-process hit. ``encode_message`` writes every field in order, and for
    such data the instance is assembled as ``model_construct`` would assemble it, without its per-field loop
    (1.3 us against 3.2 us for an AIMessage); anything else goes through ``model_construct``. A test holds the
    two equal."""
    cls = constructible().get(data["type"])
    if cls is None:
        return decode_message(data)
    fields = data["data"]
    layout = _layout(cls)
    if layout is not None and tuple(fields) == layout[0]:
        return _new(cls, layout[1], fields, set(fields))
    return cls.model_construct(**fields)


@functools.cache
def _outputs() -> Any:
    from langchain_core import outputs

    return outputs


def _cost_free(message: Any) -> Any:
    """A message a hit returns says it cost nothing, as LangChain's own cache says it (``usage_metadata``'s
    ``total_cost`` = 0, which LangSmith reads); its token counts stay, as there. The usage dict is the hit's own.
    A message without usage keeps none: LangChain's cache gives it ``{"total_cost": 0}``, a usage without token
    counts, on which LangGraph's v3 event streaming fails to assemble the message (and chunks fail to add)."""
    usage = message.__dict__.get("usage_metadata")
    if usage is not None:
        usage["total_cost"] = 0
    return message


def _hit_message(data: Any, trusted: bool) -> Any:
    return _cost_free(rebuild_message(data) if trusted else decode_message(data))


def _generation(generation: Any) -> dict[str, Any]:
    # The text too: the generation's validator derives it from the message (by rules that change between
    # LangChain versions), and with it stored a hit can assemble the generation without running the validator.
    return {"message": encode_message(generation.message), "generation_info": generation.generation_info,
            "text": generation.text}


def _make_generation(cls: Any, data: Any, trusted: bool) -> Any:
    """``cls`` (ChatGeneration or ChatGenerationChunk) from stored data. Trusted data (made by this codec, or
    decoded once) with its text is assembled, as validation would give it at a fifth of the cost (a test holds
    the two equal); anything else is validated, and a stored text that is not the one validation derives makes
    the data invalid, so that data which decoded once can be trusted to assemble right."""
    message = _hit_message(data["message"], trusted)
    info = data.get("generation_info")
    text = data.get("text")
    if trusted and isinstance(text, str):
        layout = _generation_layout(cls)
        if layout is not None:
            extra, kind = layout
            fields = {"text": text, "generation_info": info, "type": kind, "message": message}
            return _new(cls, extra, fields, {"message", "generation_info", "text"})
    generation = cls(message=message, generation_info=info)
    if not trusted and text is not None and text != generation.text:
        raise CodecError("stored generation text does not match its message")
    return generation


class _MessageCodec:
    """A codec whose results hold messages: ``decode`` validates stored data (it may come from Redis),
    ``rebuild`` skips that for data this codec made or has decoded once (``trusted``); either way a message read
    back is a hit's, so it is marked cost-free (:func:`_hit_message`), once for every codec."""

    def decode(self, data: Any) -> Any:
        return self._build(data, False)

    def rebuild(self, data: Any) -> Any:
        return self._build(data, True)

    def _build(self, data: Any, trusted: bool) -> Any:
        raise NotImplementedError


class ChatResultCodec(_MessageCodec):
    """``ChatResult`` (what ``_generate_with_cache`` returns). As LangChain's own cache does, a hit has no
    ``llm_output``: that is where handlers such as the OpenAI cost callback count a call's tokens."""

    def encode(self, value: Any) -> Any:
        return {"generations": [_generation(g) for g in value.generations]}

    def _build(self, data: Any, trusted: bool) -> Any:
        outputs = _outputs()
        generations = [_make_generation(outputs.ChatGeneration, g, trusted) for g in data["generations"]]
        if trusted:
            extra = _result_layout()
            if extra is not None:
                return _new(outputs.ChatResult, extra, {"generations": generations, "llm_output": None},
                            {"generations"})
        return outputs.ChatResult(generations=generations)


class MessageCodec(_MessageCodec):
    """The ``AIMessage`` ``invoke`` returns, stored in the ChatResult shape. A hit's message without an id gets
    one of the form a fresh answer's has (:func:`_new_run_id`): consumers such as LangGraph's message reducer
    tell messages apart by it."""

    def encode(self, value: Any) -> Any:
        return {"generations": [_generation(_outputs().ChatGeneration(message=value))]}

    def _build(self, data: Any, trusted: bool) -> Any:
        message = _hit_message(data["generations"][0]["message"], trusted)
        if message.id is None:
            message.id = _new_run_id()
        return message


class ChatChunkCodec(_MessageCodec):
    """One ``ChatGenerationChunk`` of ``_stream``/``_astream``."""

    def encode(self, value: Any) -> Any:
        return _generation(value)

    def _build(self, data: Any, trusted: bool) -> Any:
        return _make_generation(_outputs().ChatGenerationChunk, data, trusted)


class LLMResultCodec:
    """``LLMResult`` of a text-completion model (``BaseLLM._generate_helper``). As for chat models, a hit has no
    ``llm_output`` (an entry stored with one, by an earlier version, is read without it): handlers that sum the
    tokens there would count the call that made the entry again on every hit."""

    def encode(self, value: Any) -> Any:
        return {"generations": [[{"text": g.text, "generation_info": g.generation_info} for g in prompt]
                                for prompt in value.generations]}

    def decode(self, data: Any) -> Any:
        from langchain_core.outputs import Generation, LLMResult

        return LLMResult(generations=[[Generation(text=g["text"], generation_info=g.get("generation_info"))
                                       for g in prompt] for prompt in data["generations"]])


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


class ToolResultCodec:
    """What a tool's ``_run``/``_arun`` returns: JSON data, or a tuple (the content and artifact of a tool with
    ``response_format="content_and_artifact"``). ``run`` makes the ToolMessage around it on a hit as on a miss.
    What is neither (a message or a LangGraph ``Command`` the tool made itself, which answers one tool call) is not
    stored: it is no JSON data."""

    def encode(self, value: Any) -> Any:
        return {"tuple": list(value)} if isinstance(value, tuple) else {"value": value}

    def decode(self, data: Any) -> Any:
        try:
            return tuple(data["tuple"]) if "tuple" in data else data["value"]
        except (KeyError, TypeError) as exc:
            raise CodecError(f"stored tool result is not one this codec wrote: {exc!r}") from None


CHAT_RESULT = ChatResultCodec()
MESSAGE = MessageCodec()
CHAT_CHUNK = ChatChunkCodec()
LLM_RESULT = LLMResultCodec()
GENERATION_CHUNK = GenerationChunkCodec()
TOOL_RESULT = ToolResultCodec()
