"""Span attributes from results: ``gen_ai.usage.*`` from LangChain's ``usage_metadata`` (every partner fills
it) when the call reached the provider, ``gen_ai.response.model``/``id``/``finish_reasons`` from
``response_metadata``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _message_of(result: Any) -> Any:
    # Fields are read from the pydantic instance's __dict__: getattr() of a missing name on a pydantic model
    # raises and catches an AttributeError inside, which costs more than the rest of this function.
    fields = getattr(result, "__dict__", None) or {}
    generations = fields.get("generations")
    if generations:
        first = generations[0]
        if isinstance(first, list):  # LLMResult: one list per prompt
            first = first[0] if first else None
        return getattr(first, "message", None)
    return fields.get("message", result)  # a ChatGenerationChunk, or the AIMessage itself


def chat(result: Any) -> Mapping[str, Any]:
    # Runs on every call, hits included (the span records them): plain attribute reads, no intermediate dicts.
    message = _message_of(result)
    attributes: dict[str, Any] = {}
    usage = getattr(message, "usage_metadata", None)
    # total_cost = 0 is how LangChain's own cache (set_llm_cache, or the model's cache field) marks an answer it
    # gave: that call used no tokens, and its usage is the call's that stored it.
    if isinstance(usage, dict) and usage.get("total_cost") != 0:
        attributes["gen_ai.usage.input_tokens"] = usage.get("input_tokens")
        attributes["gen_ai.usage.output_tokens"] = usage.get("output_tokens")
    metadata = getattr(message, "response_metadata", None)
    if isinstance(metadata, dict):
        model = metadata.get("model_name") or metadata.get("model")
        if model and isinstance(model, str):
            attributes["gen_ai.response.model"] = model
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        if isinstance(reason, str):
            attributes["gen_ai.response.finish_reasons"] = [reason]
        ident = metadata.get("id")
        if isinstance(ident, str):
            attributes["gen_ai.response.id"] = ident
    return attributes


def llm(result: Any) -> Mapping[str, Any]:
    output = getattr(result, "llm_output", None) or {}
    usage = output.get("token_usage") or output.get("usage") or {}
    attributes: dict[str, Any] = {}
    if isinstance(usage, Mapping):
        attributes["gen_ai.usage.input_tokens"] = usage.get("prompt_tokens", usage.get("input_tokens"))
        attributes["gen_ai.usage.output_tokens"] = usage.get("completion_tokens", usage.get("output_tokens"))
    model = output.get("model_name")
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    return attributes
