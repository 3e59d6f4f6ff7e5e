"""Deterministic chat answers in OpenAI's Chat Completions wire format.

Every answer is a pure function of the request body (minus the streaming switches), so
equal requests get byte-identical responses and a streamed answer concatenates to exactly
the non-streamed one. That is what caching and replay tests built on this server rely on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ScriptRule

# Fixed rather than time.time(): equal requests must give byte-identical bodies.
CREATED = 1_700_000_000
FINGERPRINT = "fp_mockllm"
_STREAM_KEYS = frozenset({"stream", "stream_options"})
_MAX_SCHEMA_DEPTH = 8


class RequestError(ValueError):
    """A client error, answered with 400 and OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def count_tokens(text: str) -> int:
    # Roughly OpenAI's "a token is about four characters", per word, so it never depends on a tokenizer.
    return sum((len(word) + 3) // 4 for word in text.split())


def digest_of(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def text_of(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        return "\n".join(parts)
    return json.dumps(content, sort_keys=True)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    digest: str
    last_user: str
    tools: tuple[Mapping[str, Any], ...]  # the "function" objects of function tools
    tool_choice: object
    tool_results: tuple[tuple[str, str], ...]  # (tool name, content) after the last user message
    prompt_tokens: int
    response_format: str = "text"  # "text", "json_object" or "json_schema"
    response_schema: Mapping[str, Any] | None = None


def parse_chat_request(body: object) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise RequestError("Request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array of message objects.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string 'role'.", f"messages[{i}]")
    model = body.get("model", "mock-llm")
    if not isinstance(model, str):
        raise RequestError("'model' must be a string.", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise RequestError("'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    include_usage = bool(stream) and isinstance(options, Mapping) and options.get("include_usage") is True
    tools = _function_tools(body.get("tools"))
    tool_choice = body.get("tool_choice", "auto")
    response_format = body.get("response_format") or {"type": "text"}
    if not isinstance(response_format, Mapping) or not isinstance(response_format.get("type"), str):
        raise RequestError("'response_format' must be an object with a string 'type'.", "response_format")
    json_schema = response_format.get("json_schema")
    schema = json_schema.get("schema") if isinstance(json_schema, Mapping) else None
    forced = _forced_tool_name(tool_choice)
    if forced is not None and all(t["name"] != forced for t in tools):
        raise RequestError(f"tool_choice names function '{forced}', which is not in 'tools'.", "tool_choice")

    user_index = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    last_user = text_of(messages[user_index].get("content")) if user_index >= 0 else ""
    names = {
        str(call.get("id")): str(call["function"].get("name", "tool"))
        for m in messages
        if m["role"] == "assistant" and isinstance(m.get("tool_calls"), list)
        for call in m["tool_calls"]
        if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping)
    }
    results = tuple(
        (names.get(str(m.get("tool_call_id")), str(m.get("name") or "tool")), text_of(m.get("content")))
        for m in messages[user_index + 1 :]
        if m["role"] in ("tool", "function")
    )
    prompt_tokens = 3 + sum(4 + count_tokens(_message_text(m)) for m in messages)
    if tools:
        prompt_tokens += count_tokens(json.dumps(list(tools)))
    return ChatRequest(
        model=model,
        stream=bool(stream),
        include_usage=include_usage,
        digest=digest_of({k: v for k, v in body.items() if k not in _STREAM_KEYS}),
        last_user=last_user,
        tools=tools,
        tool_choice=tool_choice,
        tool_results=results,
        prompt_tokens=prompt_tokens,
        response_format=response_format["type"],
        response_schema=schema if isinstance(schema, Mapping) else None,
    )


def _message_text(message: Mapping[str, Any]) -> str:
    text = text_of(message.get("content"))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        text += " " + json.dumps(calls, sort_keys=True)
    return text


def _function_tools(raw: object) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RequestError("'tools' must be an array.", "tools")
    tools: list[Mapping[str, Any]] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, Mapping):
            raise RequestError(f"tools[{i}] must be an object.", f"tools[{i}]")
        if tool.get("type", "function") != "function":
            continue  # custom and hosted tools have no JSON schema to answer from
        fn = tool.get("function")
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise RequestError(f"tools[{i}].function must be an object with a string 'name'.", f"tools[{i}]")
        tools.append(fn)
    return tuple(tools)


def _forced_tool_name(choice: object) -> str | None:
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if isinstance(name, str):
            return name
    return None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def completion_tokens(self) -> int:
        tokens = count_tokens(self.content or "")
        return tokens + sum(count_tokens(f"{c.name} {c.arguments}") for c in self.tool_calls)


def build_reply(req: ChatRequest, rule: ScriptRule | None) -> Reply:
    if rule is not None and rule.tool_calls:
        return Reply(None, tuple(_call(req, i, c.name, c.arguments) for i, c in enumerate(rule.tool_calls)))
    if rule is not None and rule.content is not None:
        return Reply(rule.content)
    tool = choose_tool(req)
    if tool is not None:
        arguments = json.dumps(arguments_for(tool.get("parameters"), req.last_user), ensure_ascii=False)
        return Reply(None, (_call(req, 0, tool["name"], arguments),))
    # The digest tag keeps answers distinct for requests that differ only outside the last user message.
    tag = f" #{req.digest[:8]}"
    if req.tool_results:
        text = "tool results: " + "; ".join(f"{n}: {c}" for n, c in req.tool_results) + tag
    else:
        text = f"echo: {req.last_user}{tag}"
    # Structured-output callers (chat.completions.parse, with_structured_output) need parseable JSON.
    if req.response_format == "json_schema":
        return Reply(json.dumps(arguments_for(req.response_schema, req.last_user), ensure_ascii=False))
    if req.response_format == "json_object":
        return Reply(json.dumps({"answer": text}, ensure_ascii=False))
    return Reply(text)


def _call(req: ChatRequest, index: int, name: str, arguments: str) -> ToolCall:
    return ToolCall(f"call_{digest_of([req.digest, index])[:24]}", name, arguments)


def choose_tool(req: ChatRequest) -> Mapping[str, Any] | None:
    """The tool to call, or None to answer with text (no tools, tool results present, or choice "none")."""
    if not req.tools or req.tool_results or req.tool_choice == "none":
        return None
    forced = _forced_tool_name(req.tool_choice)
    if forced is not None:
        return next(t for t in req.tools if t["name"] == forced)
    text = req.last_user.lower()
    # Earliest mention wins; the longer name wins a tie so "get" never shadows "get_weather".
    mentioned = [(text.find(t["name"].lower()), -len(t["name"]), i) for i, t in enumerate(req.tools)]
    hits = sorted(m for m in mentioned if m[0] >= 0)
    return req.tools[hits[0][2]] if hits else req.tools[0]


def arguments_for(parameters: object, text: str) -> dict[str, Any]:
    root = parameters if isinstance(parameters, Mapping) else {}
    value = _example(root, text, root, 0)
    return value if isinstance(value, dict) else {}


def _example(schema: object, text: str, root: Mapping[str, Any], depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_SCHEMA_DEPTH:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        return _example(target, text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return _example((usable or options)[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        obj = {name: _example(prop, text, root, depth + 1) for name, prop in props.items()}
        for name in schema.get("required") or ():
            obj.setdefault(name, text)
        return obj
    if kind in ("integer", "number"):
        minimum = schema.get("minimum")
        return minimum if isinstance(minimum, int | float) and minimum > 1 else 1
    return {"boolean": True, "array": [], "null": None}.get(str(kind), text)


def usage(req: ChatRequest, reply: Reply) -> dict[str, Any]:
    completion = reply.completion_tokens
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": req.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def completion_body(req: ChatRequest, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return {
        "id": f"chatcmpl-{req.digest[:24]}",
        "object": "chat.completion",
        "created": CREATED,
        "model": req.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage(req, reply),
        "system_fingerprint": FINGERPRINT,
    }


def split_words(text: str, words: int) -> list[str]:
    """Pieces of ``words`` words each that concatenate back to exactly ``text``."""
    pieces = re.findall(r"\s*\S+\s*", text)
    if not pieces:
        return [text] if text else []
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def stream_chunks(req: ChatRequest, reply: Reply, chunk_words: int) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects for one streamed answer, in OpenAI's delta format."""
    base = {"id": f"chatcmpl-{req.digest[:24]}", "object": "chat.completion.chunk", "created": CREATED}
    base |= {"model": req.model, "system_fingerprint": FINGERPRINT}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        out = {**base, "choices": [choice]}
        if req.include_usage:
            # OpenAI sends "usage": null on every chunk but the last when usage is requested.
            out["usage"] = None
        return out

    chunks: list[dict[str, Any]] = []
    for i, call in enumerate(reply.tool_calls):
        head = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        delta: dict[str, Any] = {"tool_calls": [head]}
        if i == 0:
            delta = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
        chunks.append(chunk(delta))
        for fragment in split_words(call.arguments, chunk_words):
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}))
    if not reply.tool_calls:
        chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        chunks.extend(chunk({"content": piece}) for piece in split_words(reply.content or "", chunk_words))
    chunks.append(chunk({}, reply.finish_reason))
    if req.include_usage:
        chunks.append({**base, "choices": [], "usage": usage(req, reply)})
    return chunks
