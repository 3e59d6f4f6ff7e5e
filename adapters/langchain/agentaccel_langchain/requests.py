"""Normalized requests: what changes an answer, in LangChain's own terms. For a chat model that is the messages
(ids dropped, as LangChain's cache drops them, and earlier answers' ``usage_metadata``, which no provider is
sent), the model's invocation parameters (``_get_invocation_params``, what LangSmith records), its other settings
(the constructor arguments LangChain's own cache keys a serializable model on, through ``dumps(model)`` in
``_get_llm_string``: ``output_version``, ``stream_usage``, ``use_responses_api`` …), its base URL (which server
answers) and the per-call keyword arguments that ``bind_tools``/``with_structured_output``/``bind`` add: tools,
tool_choice, response_format, stop, and the rest.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import weakref
from collections.abc import Mapping
from functools import partial
from typing import Any

from agentaccel import Call
from agentaccel_langchain.providers import base_url

#: Keyword arguments that steer LangChain itself, not the provider's answer ("stop" is the call's own argument,
#: which the request takes separately).
_NOT_PARAMS = frozenset({"config", "run_manager", "callbacks", "stop", "run_managers", "new_arg_supported",
                         "ls_structured_output_format", "structured_output_format", "run_name", "run_id", "tags",
                         "metadata"})
#: The same for each intercepted method, with its own input's name: that name is the input only there (a model
#: that sends unknown keywords on, as ChatOpenAI's Responses API does, may be given a ``prompt=``).
_CHAT_NOT_PARAMS = _NOT_PARAMS | {"messages"}
_INVOKE_NOT_PARAMS = _NOT_PARAMS | {"input"}
_LLM_NOT_PARAMS = _NOT_PARAMS | {"prompts"}
_STREAM_NOT_PARAMS = _NOT_PARAMS | {"prompt"}
#: The same for the model's own parameters, where "stop" is the model's stop sequences (``ChatOpenAI(stop=...)``),
#: which are sent when the call gives none.
_NOT_MODEL_PARAMS = _NOT_PARAMS - {"stop"}
#: Settings that steer the client, not the answer. LangChain's own cache keys on them too (on the whole
#: ``dumps(model)``); agentaccel does not, so models that differ only in their retries or timeout share answers.
_TRANSPORT_FIELDS = frozenset({"max_retries", "request_timeout", "timeout"})
#: The dict and list fields every LangChain model has that steer LangChain, never the answer (``profile`` is what
#: the model can do, for LangChain to read). The memo's snapshot keeps them as they are rather than deep-copying
#: them: a callback handler holds locks, which deepcopy cannot copy, and so may anything in metadata; and a field
#: kept as it is compares by identity on every call, where a copy compares deeply. (The other such fields, cache,
#: rate_limiter and verbose, are never deep-copied: they are not dicts or lists.)
_NOT_ANSWER_FIELDS = frozenset({"callbacks", "metadata", "tags", "profile"})
_MODEL_FIELDS = ("model", "model_name", "model_id", "deployment_name")


def jsonable(value: Any) -> Any:
    """JSON data for what LangChain passes as parameters: pydantic schemas and models become their JSON form.
    Anything else that is not JSON data is left as is, and the cache then declines to key the call."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return {"pydantic_schema": value.__name__, "schema": value.model_json_schema()}
    dump = getattr(value, "model_dump", None)
    if dump is not None and not isinstance(value, type):
        return dump(mode="json")
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list})


@functools.cache
def _dumps_as_is(cls: type) -> bool:
    """Whether ``model_dump`` gives the field values of a ``cls`` instance as they are when they are scalars or
    empty: no computed fields and no serializers (a subclass of a message may add either)."""
    decorators = getattr(cls, "__pydantic_decorators__", None)
    return (decorators is not None and not getattr(cls, "__pydantic_computed_fields__", None)
            and not decorators.field_serializers and not decorators.model_serializers)


def _fields(message: Any) -> dict[str, Any]:
    """``message.model_dump()``; for a message whose fields hold only scalars and empty containers (a system or
    user message's text) that is a copy of its fields, at a third of the cost."""
    if _dumps_as_is(message.__class__) and not message.__pydantic_extra__:
        fields = message.__dict__
        for value in fields.values():
            kind = type(value)
            if kind not in _SCALARS and (kind not in _CONTAINERS or value):
                break
        else:
            return dict(fields)
    return message.model_dump()  # type: ignore[no-any-return]


def _message(message: Any) -> Any:
    data = _fields(message)
    data.pop("id", None)
    # An answer's token counts (and the total_cost = 0 a cache hit marks them with) are never sent back to the
    # provider: a conversation must key the same whether its earlier answers were fresh, cached or reloaded.
    data.pop("usage_metadata", None)
    data["type"] = message.type
    return data


#: A request's part that comes from the model: its parameters, its model-name fields, and the model's name.
_Part = tuple[dict[str, Any], dict[str, Any], str | None]
#: id(model) -> (weak reference, snapshot of its fields, its part of the request).
_params: dict[int, tuple[weakref.ref[Any], tuple[Any, ...], _Part]] = {}


def _forget(key: int, _reference: object) -> None:
    _params.pop(key, None)


def _model_part(instance: Any) -> _Part:
    """The model's part of every request: its invocation parameters as JSON data (without the model's name and
    what steers LangChain) with its base URL (the same model name on another server is another model), its
    model-name fields, and the name they give (:func:`_model_name`). For chat models the parameters are
    ``_get_invocation_params()`` and the model's other settings (:func:`_settings`); text-completion models key
    LangChain's own cache on ``asdict()`` (their identifying parameters and type), which is what they have
    instead.

    Kept while the model's fields stay the same: for ChatOpenAI this serializes the whole model (tens of
    microseconds, as long as a cache hit). Each call compares the model's field values with a copy taken when
    the part was computed, so a changed model recomputes, whether a field was set (``model.temperature = 0``) or
    a dict or list field was changed in place (``model.model_kwargs["seed"] = 1``: the copy is deep for those,
    and ``==`` compares them deeply); a dead weak reference makes a reused id recompute. A model with a field
    deepcopy cannot copy (outside :data:`_NOT_ANSWER_FIELDS`) is not kept: its part is computed on every call."""
    key = id(instance)
    values = tuple(vars(instance).values())
    found = _params.get(key)
    if found is not None and found[0]() is instance and found[1] == values:
        return found[2]
    get = getattr(instance, "_get_invocation_params", None) or getattr(instance, "asdict", None) or instance.dict
    params = dict(get())
    models = {name: params.pop(name) for name in _MODEL_FIELDS if name in params}
    params["base_url"] = base_url(instance)
    answer = {k: v for k, v in params.items() if k not in _NOT_MODEL_PARAMS}
    answer.update(_settings(instance, answer))
    part = jsonable(answer), models, _model_name(instance, models)
    try:
        reference = weakref.ref(instance, partial(_forget, key))
    except TypeError:  # not weak-referenceable: not kept
        return part
    try:
        snapshot = tuple(copy.deepcopy(v) if isinstance(v, (dict, list)) and name not in _NOT_ANSWER_FIELDS else v
                         for name, v in zip(vars(instance), values, strict=True))
    except Exception:  # a value deepcopy cannot copy (it holds a lock, or its __deepcopy__ fails): not kept
        return part
    if len(_params) > 4096:  # models made per call: keep the memo bounded
        _params.clear()
    _params[key] = (reference, snapshot, part)
    return part


def _settings(instance: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """A chat model's constructor arguments that ``params`` does not hold: what LangChain's own cache keys a
    serializable chat model on besides its invocation parameters (``to_json()``'s arguments, which
    ``_get_llm_string`` serializes). ``output_version`` changes the answer's content blocks, ``stream_usage`` whether
    a stream carries usage, ``include_response_headers`` its metadata. Left out: the model's name (keyed as the
    request's ``model``), what steers LangChain (:data:`_NOT_ANSWER_FIELDS`) or the client
    (:data:`_TRANSPORT_FIELDS`), and secrets (``to_json`` names them, as their environment variable, and a key
    never holds one). A value that is not JSON data is keyed as its type's name: a model holding one is still
    cached, where the value itself would leave it without a key."""
    if not hasattr(instance, "_get_llm_string"):  # text-completion models: LangChain keys them on asdict() alone
        return {}
    try:
        kwargs = instance.to_json().get("kwargs", {}) if instance.is_lc_serializable() else {}
    except Exception:  # a partner model whose serialization fails: keyed on its invocation parameters alone
        return {}
    return {name: _json_or_type(value) for name, value in kwargs.items()
            if name not in params and name not in _MODEL_FIELDS and name not in _NOT_ANSWER_FIELDS
            and name not in _TRANSPORT_FIELDS and not _secret(value)}


def _secret(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("lc") == 1 and value.get("type") == "secret"


def _json_or_type(value: Any) -> Any:
    try:
        data = jsonable(value)
        json.dumps(data)
    except Exception:  # no JSON data, or a model_dump that fails: its type is what can be keyed
        kind = type(value)
        return {"not_json": f"{kind.__module__}.{kind.__qualname__}"}
    return data


def _model_name(instance: Any, models: Mapping[str, Any]) -> str | None:
    """The model's name: ChatOpenAI says "model", others "model_name" or "model_id"; one key for all. From the
    parameters' model fields, else from the model's own attributes."""
    for name in _MODEL_FIELDS:
        if isinstance(value := models.get(name), str):
            return value
    for name in _MODEL_FIELDS:
        if isinstance(value := getattr(instance, name, None), str):
            return value
    return None


def _model_request(instance: Any, messages: Any, stop: Any, extra: dict[str, Any], key: str) -> dict[str, Any]:
    base, models, model = _model_part(instance)
    request = dict(base)  # the memo's dict stays as it is: requests are read-only, and this copy is shallow
    if extra:  # per-call arguments override the model's fields, as in every partner's _get_invocation_params
        if not extra.keys().isdisjoint(_MODEL_FIELDS):
            model = _model_name(instance, {**models, **{name: extra[name] for name in _MODEL_FIELDS if name in extra}})
        request.update(jsonable({k: v for k, v in extra.items() if k not in _MODEL_FIELDS}))
    # The call's stop sequences replace the model's, as every partner's request payload does.
    request["stop"] = base.get("stop") if stop is None else stop
    request["model"] = model
    request[key] = messages
    return request


def _extra(kwargs: Mapping[str, Any], not_params: frozenset[str]) -> dict[str, Any]:
    if kwargs.keys() <= not_params:  # the common call: nothing but LangChain's own (a comprehension costs more)
        return {}
    return {k: v for k, v in kwargs.items() if k not in not_params}


def chat_generate(call: Call) -> dict[str, Any]:
    """``_generate_with_cache(messages, stop=None, run_manager=None, **kwargs)`` and ``_stream`` alike."""
    args, kwargs = call.args, call.kwargs
    messages = args[0] if args else kwargs["messages"]
    stop = args[1] if len(args) > 1 else kwargs.get("stop")
    return _model_request(call.instance, [_message(m) for m in messages], stop, _extra(kwargs, _CHAT_NOT_PARAMS),
                          "messages")


@functools.cache
def _base_message() -> type:
    # Imported on first use: the adapter is imported at enable(), possibly before LangChain.
    from langchain_core.messages import BaseMessage

    return BaseMessage


def chat_invoke(call: Call) -> dict[str, Any]:
    """``invoke(input, config=None, *, stop=None, **kwargs)``: the same request ``_generate_with_cache`` sees."""
    args, kwargs = call.args, call.kwargs
    model_input = args[0] if args else kwargs["input"]
    if type(model_input) is list and all(isinstance(m, _base_message()) for m in model_input):
        messages = model_input  # what _convert_input gives back for messages, without building a ChatPromptValue
    else:
        messages = call.instance._convert_input(model_input).to_messages()
    return _model_request(call.instance, [_message(m) for m in messages], kwargs.get("stop"),
                          _extra(kwargs, _INVOKE_NOT_PARAMS), "messages")


def llm_generate(call: Call) -> dict[str, Any]:
    """``BaseLLM._generate(prompts, stop=None, run_manager=None, **kwargs)`` and ``_agenerate``."""
    args, kwargs = call.args, call.kwargs
    prompts = args[0] if args else kwargs["prompts"]
    stop = args[1] if len(args) > 1 else kwargs.get("stop")
    return _model_request(call.instance, list(prompts), stop, _extra(kwargs, _LLM_NOT_PARAMS), "prompts")


def llm_stream(call: Call) -> dict[str, Any]:
    """``BaseLLM._stream(prompt, stop=None, run_manager=None, **kwargs)``: one prompt, keyed as ``_generate``'s
    list of one (the stream and the call still get separate entries: the mode is part of the key)."""
    args, kwargs = call.args, call.kwargs
    prompt = args[0] if args else kwargs["prompt"]
    stop = args[1] if len(args) > 1 else kwargs.get("stop")
    return _model_request(call.instance, [prompt], stop, _extra(kwargs, _STREAM_NOT_PARAMS), "prompts")


#: ``embed_documents(texts, chunk_size=None, **kwargs)``'s batching, which changes no vector.
_NOT_EMBEDDING_PARAMS = frozenset({"texts", "text", "chunk_size"})


def embeddings(call: Call) -> dict[str, Any]:
    """``embed_documents(texts, ...)`` / ``embed_query(text, ...)``: the model, its base URL, its dimensions, the
    input, and the call's other keyword arguments (``OpenAIEmbeddings`` sends them, ``dimensions=`` among them)."""
    instance, kwargs = call.instance, call.kwargs
    text = call.args[0] if call.args else kwargs.get("texts", kwargs.get("text"))
    request: dict[str, Any] = {"input": list(text) if isinstance(text, list | tuple) else text,
                               "base_url": base_url(instance)}
    for name in (*_MODEL_FIELDS, "dimensions", "size"):
        value = getattr(instance, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            request["model" if name in _MODEL_FIELDS else name] = value
    request.update(jsonable({k: v for k, v in kwargs.items() if k not in _NOT_EMBEDDING_PARAMS}))
    return request


#: What ``run``/``arun`` pass a tool's ``_run``/``_arun`` besides the tool's arguments.
_NOT_TOOL_ARGUMENTS = frozenset({"run_manager", "callbacks"})


def tool(call: Call) -> dict[str, Any]:
    """``_run(*args, **kwargs)``/``_arun``: the arguments ``run`` parsed from the tool's input, without the run
    manager and the RunnableConfig it passes along (under the name the tool's ``_run`` gives it). The tool call's
    id is not among them: ``run`` makes the ToolMessage, for the call's own id, around what ``_run`` returns."""
    instance = call.instance
    config = _config_parameter(instance.__class__, "_arun" if call.target.mode.is_async else "_run")
    call_ids = _call_id_arguments(getattr(instance, "args_schema", None))
    if "tool_call_id" in getattr(instance, "_injected_args_keys", ()):  # injected by name (LangChain 1.x)
        call_ids |= {"tool_call_id"}
    arguments = {k: v for k, v in call.kwargs.items()
                 if k not in _NOT_TOOL_ARGUMENTS and k != config and k not in call_ids}
    return {"arguments": jsonable(arguments), "positional": jsonable(list(call.args))}


@functools.lru_cache(maxsize=4096)  # bounded: tools (and their schemas) may be made per request
def _call_id_arguments(schema: Any) -> frozenset[str]:
    """The arguments ``run`` fills with the tool call's id (annotated ``InjectedToolCallId``): new on every call,
    they would make every call of such a tool a miss."""
    from langchain_core.tools.base import InjectedToolCallId, _is_injected_arg_type, get_all_basemodel_annotations

    if not isinstance(schema, type):  # a JSON schema (dict) or none: nothing is injected into it
        return frozenset()
    try:
        annotations = get_all_basemodel_annotations(schema)
    except Exception:  # a schema LangChain cannot read either: run() injects nothing into it
        return frozenset()
    return frozenset(name for name, annotation in annotations.items()
                     if _is_injected_arg_type(annotation, injected_type=InjectedToolCallId))


@functools.cache
def _config_parameter(cls: type, method: str) -> str | None:
    from langchain_core.tools.base import _get_runnable_config_param

    # Read off the method's type hints (unwrapped: agentaccel's wrapper has none), as run()/arun() read it.
    return _get_runnable_config_param(inspect.unwrap(getattr(cls, method)))


def graph(call: Call) -> dict[str, Any]:
    """``Pregel.invoke(input, config=None, ...)``: the input, as far as it is JSON data."""
    value = call.args[0] if call.args else call.kwargs.get("input")
    return {"input": jsonable(value)}
