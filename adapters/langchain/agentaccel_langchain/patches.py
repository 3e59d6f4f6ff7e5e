"""What is intercepted, and where. Each place is chosen so that one patch sees every call, and LangChain's own
machinery (callbacks, ``stream_mode="messages"``, ``astream_events``, its cache and rate limiter) still runs
around what agentaccel answers:

- chat models: ``BaseChatModel._generate_with_cache``/``_agenerate_with_cache`` — the layer where LangChain
  consults its own cache, inside the callback run, so ``on_chat_model_start``/``on_llm_end`` fire on a hit as
  on a miss; it serves invoke, batch, generate and their async forms (a call with a v2 streaming handler gets a
  target whose hits replay the v2 events LangChain's own cache replays there). When no callback handler is
  configured, ``invoke``/``ainvoke`` themselves are intercepted (``select``), so a hit skips LangChain's run
  bookkeeping that nobody observes. Streams: every subclass's ``_stream``/``_astream`` (``overrides``), so a replay goes
  through ``stream()``'s token callbacks as chunks.
- text-completion models: every subclass's ``_generate``/``_agenerate`` (``overrides``), which
  ``_generate_helper`` calls inside the callback run, so ``on_llm_end`` fires on a hit as on a miss; streams at
  every subclass's ``_stream``/``_astream``.
- embeddings: every subclass's ``embed_documents``/``embed_query`` and async forms (``overrides``: the base
  class is abstract).
- tools: every subclass's ``_run``/``_arun`` (``overrides``; StructuredTool and ``@tool`` functions among
  them), which ``run``/``arun`` call inside the tool's callback run, so ``on_tool_start``/``on_tool_end`` fire on
  a hit as on a miss, and ``run`` makes the ToolMessage of a hit's content for the call's own tool call. A tool
  without an ``_arun`` of its own runs its ``_run`` in a thread from ``BaseTool._arun``: that call is the span.
- LangGraph: ``Pregel.invoke``/``ainvoke``/``stream``/``astream`` (``invoke`` runs ``stream`` on the same graph,
  which de-duplication folds into one span), nodes at ``run_with_retry``/``arun_with_retry`` as the runner
  module calls them (except the tasks LangGraph tags hidden, its ``__start__`` node), and graphs made by
  ``create_agent``/``create_react_agent`` as ``invoke_agent``.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import FunctionType, MappingProxyType
from typing import Any

from agentaccel import (
    CHAT,
    EMBEDDINGS,
    EXECUTE_TOOL,
    INVOKE_AGENT,
    INVOKE_WORKFLOW,
    JSON_CODEC,
    TEXT_COMPLETION,
    Call,
    Mode,
    Patch,
    Target,
)
from agentaccel_langchain import codec, describe, requests
from agentaccel_langchain.providers import provider_of, sends_through_httpx

FRAMEWORK = "langchain"
CHAT_MODELS = "langchain_core.language_models.chat_models"
LLMS = "langchain_core.language_models.llms"
EMBEDDINGS_MODULE = "langchain_core.embeddings.embeddings"
TOOLS = "langchain_core.tools.base"
PREGEL = "langgraph.pregel.main"
RUNNER = "langgraph.pregel._runner"


#: Model calls say whose requests go through httpx, so that a limit can hold its permits per request.
_MODEL_HINTS: Mapping[str, Any] = MappingProxyType({"http": sends_through_httpx})
#: ``agentaccel.options(cache=False)`` for the calls of a model created with LangChain's ``cache=False``.
_NO_CACHE: Mapping[str, Any] = MappingProxyType({"cache": False})


def _model_identity(call: Call) -> tuple[str, str | None]:
    instance = call.instance
    # LangChain's per-model ``cache=False`` says "never answer this model from a cache": agentaccel's cache
    # honours it as if the call were made inside ``agentaccel.options(cache=False)`` (spans and limits still
    # apply), unless the caller set the option explicitly. This runs once per call, as the Call is built and
    # before any middleware reads ``call.options``, which is why it lives here and costs no extra wrapper layer.
    if getattr(instance, "cache", None) is False and "cache" not in call.options:
        call.options = MappingProxyType({**call.options, **_NO_CACHE}) if call.options else _NO_CACHE
    return type(instance).__name__, provider_of(instance)


def _tool_identity(call: Call) -> tuple[str, str | None]:
    return str(getattr(call.instance, "name", None) or type(call.instance).__name__), None


def _graph_identity(call: Call) -> tuple[str, str | None]:
    return str(getattr(call.instance, "name", None) or "LangGraph"), None


def _node_identity(call: Call) -> tuple[str, str | None]:
    task = call.args[0] if call.args else call.kwargs.get("task")
    return str(getattr(task, "name", None) or "node"), None


def _chat(name: str, mode: Mode, model_codec: Any, request: Callable[[Call], Any],
          replay: Callable[[Call, Any], Any] | None = None, adopt: Callable[[Call, Any], None] | None = None
          ) -> Target:
    return Target(framework=FRAMEWORK, operation=CHAT, name=name, mode=mode, codec=model_codec, request=request,
                  identify=_model_identity, describe=describe.chat, replay=replay, adopt=adopt, hints=_MODEL_HINTS)


#: What ``_generate_with_cache(messages, stop=None, run_manager=None, **kwargs)`` takes besides the model's kwargs.
_GENERATE_ARGUMENTS = frozenset({"messages", "stop", "run_manager"})


def _run_manager(call_args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The run manager of ``_generate_with_cache``, ``BaseLLM._generate`` and ``_stream``: third, after the
    messages (or prompts) and ``stop``."""
    return call_args[2] if len(call_args) > 2 else kwargs.get("run_manager")


def _run_ids(call: Call, result: Any) -> None:
    """A hit's messages get the ids ``_generate_with_cache`` gives a fresh answer's messages, made from this
    call's run (``lc_run--<run id>-<index>``): the stored ones, from the run that made them, were dropped
    (``codec.RUN_ID_PREFIXES``). A message with an id of its own (the provider's) keeps it, as there."""
    _give_run_ids(result, _run_manager(call.args, call.kwargs), indexed=True)


def _give_run_ids(result: Any, run_manager: Any, *, indexed: bool) -> None:
    if run_manager is None:
        return
    run = f"{codec.LC_ID_PREFIX}-{run_manager.run_id}"
    for index, generation in enumerate(result.generations):
        message = generation.message
        if message.id is None:
            message.id = f"{run}-{index}" if indexed else run


def _stream_events(method: str, call: Call, result: Any) -> Any:
    """A hit's v2 stream events. LangChain's own cache replays a hit's messages as ``on_stream_event`` events
    where agentaccel answers instead (``_generate_with_cache``), for the handlers that ask for them (LangGraph's
    v2 message streaming): the model's own replay method does the same for an agentaccel hit. The async method
    returns a coroutine. A message without an id gets the one its events carry, ``lc_run--<run id>``, which is
    also the id of a fresh answer made through v2 streaming (unlike :func:`_run_ids`, without an index)."""
    run_manager = _run_manager(call.args, call.kwargs)
    _give_run_ids(result, run_manager, indexed=False)
    replay = getattr(call.instance, method)
    return replay(result.generations, run_manager=run_manager,
                  **{k: v for k, v in call.kwargs.items() if k not in _GENERATE_ARGUMENTS})


CHAT_INVOKE = _chat("invoke", Mode.SYNC, codec.MESSAGE, requests.chat_invoke)
CHAT_AINVOKE = _chat("ainvoke", Mode.ASYNC, codec.MESSAGE, requests.chat_invoke)
CHAT_GENERATE = _chat("generate", Mode.SYNC, codec.CHAT_RESULT, requests.chat_generate, adopt=_run_ids)
CHAT_AGENERATE = _chat("agenerate", Mode.ASYNC, codec.CHAT_RESULT, requests.chat_generate, adopt=_run_ids)
#: The same, for calls with a v2 streaming handler: their hits also replay its events.
REPLAY_EVENTS, AREPLAY_EVENTS = "_replay_v2_events_for_cache_hit", "_areplay_v2_events_for_cache_hit"
CHAT_GENERATE_EVENTS = _chat("generate", Mode.SYNC, codec.CHAT_RESULT, requests.chat_generate,
                             functools.partial(_stream_events, REPLAY_EVENTS))
CHAT_AGENERATE_EVENTS = _chat("agenerate", Mode.ASYNC, codec.CHAT_RESULT, requests.chat_generate,
                              functools.partial(_stream_events, AREPLAY_EVENTS))
CHAT_STREAM = _chat("stream", Mode.SYNC_STREAM, codec.CHAT_CHUNK, requests.chat_generate)
CHAT_ASTREAM = _chat("astream", Mode.ASYNC_STREAM, codec.CHAT_CHUNK, requests.chat_generate)


def _llm(name: str, mode: Mode) -> Target:
    return Target(framework=FRAMEWORK, operation=TEXT_COMPLETION, name=name, mode=mode, codec=codec.LLM_RESULT,
                  request=requests.llm_generate, identify=_model_identity, describe=describe.llm, hints=_MODEL_HINTS)


LLM_GENERATE = _llm("generate", Mode.SYNC)
LLM_AGENERATE = _llm("agenerate", Mode.ASYNC)


def _llm_token(call: Call, chunk: Any) -> Any:
    """A replayed chunk's token callback. ``BaseLLM.stream()`` leaves ``on_llm_new_token`` to each model's own
    ``_stream`` (``run_manager.on_llm_new_token(chunk.text, chunk=chunk)``), which a replay does not run: without
    this a handler would see a hit's run start and end but none of its tokens. (Chat models fire tokens in
    ``stream()`` itself, so their replays need nothing.) The async run manager returns a coroutine to await."""
    run_manager = _run_manager(call.args, call.kwargs)
    if run_manager is None:
        return None
    return run_manager.on_llm_new_token(chunk.text, chunk=chunk)


LLM_STREAM = Target(framework=FRAMEWORK, operation=TEXT_COMPLETION, name="stream", mode=Mode.SYNC_STREAM,
                    codec=codec.GENERATION_CHUNK, request=requests.llm_stream, identify=_model_identity,
                    replay=_llm_token, hints=_MODEL_HINTS)
LLM_ASTREAM = Target(framework=FRAMEWORK, operation=TEXT_COMPLETION, name="astream", mode=Mode.ASYNC_STREAM,
                     codec=codec.GENERATION_CHUNK, request=requests.llm_stream, identify=_model_identity,
                     replay=_llm_token, hints=_MODEL_HINTS)


def _embeddings(name: str, mode: Mode) -> Target:
    return Target(framework=FRAMEWORK, operation=EMBEDDINGS, name=name, mode=mode, codec=JSON_CODEC,
                  request=requests.embeddings, identify=_model_identity, hints=_MODEL_HINTS)


def _tool(mode: Mode) -> Target:
    return Target(framework=FRAMEWORK, operation=EXECUTE_TOOL, name="tool", mode=mode, codec=codec.TOOL_RESULT,
                  request=requests.tool, identify=_tool_identity)


TOOL_RUN = _tool(Mode.SYNC)
TOOL_ARUN = _tool(Mode.ASYNC)


def _graph(operation: str, mode: Mode) -> Target:
    return Target(framework=FRAMEWORK, operation=operation, name="LangGraph", mode=mode, request=requests.graph,
                  identify=_graph_identity)


GRAPHS = {mode: (_graph(INVOKE_WORKFLOW, mode), _graph(INVOKE_AGENT, mode)) for mode in Mode}
NODE = Target(framework=FRAMEWORK, operation=INVOKE_WORKFLOW, name="node", mode=Mode.SYNC,
              identify=_node_identity, hints=MappingProxyType({"langgraph.node": True}))
ANODE = Target(framework=FRAMEWORK, operation=INVOKE_WORKFLOW, name="node", mode=Mode.ASYNC,
               identify=_node_identity, hints=MappingProxyType({"langgraph.node": True}))


# --- per-call choices --------------------------------------------------------------------------------------------


@functools.cache
def _observer_sources() -> tuple[Any, ...]:
    # Imported once, on the first call (the adapter is imported at enable(), possibly before LangChain); an
    # import statement per call costs a dict lookup and a lock each.
    from langchain_core.callbacks.base import BaseCallbackManager
    from langchain_core.globals import get_debug
    from langchain_core.runnables.config import var_child_runnable_config
    from langchain_core.tracers.context import _configure_hooks, _tracing_v2_is_enabled
    from langchain_core.utils.env import env_var_is_set

    return (BaseCallbackManager, get_debug, var_child_runnable_config, _configure_hooks, _tracing_v2_is_enabled,
            env_var_is_set)


def _no_observers(instance: Any, config: Any) -> bool:
    """No callback handler would see this call: none in the config or the enclosing runnable's config
    (LangGraph's nodes and astream_events put theirs there), none on the model, and none that
    ``CallbackManager.configure`` would add (LangSmith tracing, debug, the context-manager hooks, or an
    instrumentation that wraps the manager's constructor to add its handler, as OpenLLMetry's LangChain
    instrumentation does). It reads what ``configure`` reads rather than calling it: building a manager costs
    about as much as the cache hit it would decide; and it reads the two configs as ``ensure_config`` merges
    them (the call's callbacks replace the enclosing ones) without building the merged dict."""
    (BaseCallbackManager, get_debug, var_child_runnable_config, _configure_hooks, _tracing_v2_is_enabled,
     env_var_is_set) = _observer_sources()
    callbacks = config.get("callbacks") if config else None
    if callbacks is None:
        enclosing = var_child_runnable_config.get()
        callbacks = enclosing.get("callbacks") if enclosing else None
    if isinstance(callbacks, BaseCallbackManager):
        # A manager hands its handlers to the call's own: LangGraph gives each node one, empty unless something
        # listens (stream_mode="messages", astream_events and a handler in the graph's config add theirs).
        callbacks = callbacks.handlers or callbacks.inheritable_handlers
    if callbacks or instance.callbacks or instance.verbose or get_debug():
        return False
    if type(BaseCallbackManager.__dict__["__init__"]) is not FunctionType:  # wrapped: it may add handlers
        return False
    if _tracing_v2_is_enabled():
        return False
    for var, _inheritable, handler_class, env_var in _configure_hooks:
        if var.get() is not None or (handler_class is not None and env_var is not None and env_var_is_set(env_var)):
            return False
    return True


def _select_invoke(target: Target, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target | None:
    config = args[1] if len(args) > 1 else kwargs.get("config")
    # With an observer, _generate_with_cache answers instead, inside the callback run the observer expects.
    return target if _no_observers(instance, config) else None


@functools.cache
def _v2_handler() -> type | None:
    try:  # LangChain's marker for handlers that take v2 stream events; a LangChain without it has none
        from langchain_core.tracers._streaming import _V2StreamingCallbackHandler
    except ImportError:
        return None
    return _V2StreamingCallbackHandler


def _select_generate(plain: Target, events: Target, method: str, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Target:
    """``events`` when a v2 streaming handler is attached and the model can replay a hit's events (``method``);
    ``plain`` otherwise."""
    marker = _v2_handler()
    run_manager = _run_manager(args, kwargs)
    if marker is not None and run_manager is not None:
        for handler in run_manager.handlers:  # a loop, not any(): a generator costs more than the one handler
            if isinstance(handler, marker):
                return events if hasattr(instance, method) else plain
    return plain


#: Graphs built by the agent factories (weakly held: a graph that is dropped leaves nothing behind).
_agents: weakref.WeakSet[Any] = weakref.WeakSet()


#: LangGraph's tag for its own plumbing (the ``__start__`` node that writes the input into the state): LangSmith,
#: the debug stream and ``stream_mode="messages"`` leave such tasks out, and so do agentaccel's spans.
_HIDDEN = "langsmith:hidden"


def _select_node(target: Target, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target | None:
    task = args[0] if args else kwargs.get("task")
    config = getattr(task, "config", None)
    return None if config and _HIDDEN in (config.get("tags") or ()) else target


def _select_graph(mode: Mode, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target:
    workflow, agent = GRAPHS[mode]
    return agent if instance in _agents else workflow


def _mark_agent(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    graph = wrapped(*args, **kwargs)
    with contextlib.suppress(TypeError):  # not weak-referenceable: recorded as a workflow
        _agents.add(graph)
    return graph


def patches() -> Iterable[Patch]:
    chat = "BaseChatModel"
    for name, invoke in (("invoke", CHAT_INVOKE), ("ainvoke", CHAT_AINVOKE)):
        yield Patch(CHAT_MODELS, f"{chat}.{name}", target=invoke, select=functools.partial(_select_invoke, invoke))
    for name, plain, events, method in (
            ("_generate_with_cache", CHAT_GENERATE, CHAT_GENERATE_EVENTS, REPLAY_EVENTS),
            ("_agenerate_with_cache", CHAT_AGENERATE, CHAT_AGENERATE_EVENTS, AREPLAY_EVENTS)):
        yield Patch(CHAT_MODELS, f"{chat}.{name}", target=plain,
                    select=functools.partial(_select_generate, plain, events, method))
    yield Patch(CHAT_MODELS, f"{chat}._stream", target=CHAT_STREAM, overrides=True)
    yield Patch(CHAT_MODELS, f"{chat}._astream", target=CHAT_ASTREAM, overrides=True)
    # Below _generate_helper, which fires on_llm_end: a hit must reach it as a miss does.
    yield Patch(LLMS, "BaseLLM._generate", target=LLM_GENERATE, overrides=True)
    yield Patch(LLMS, "BaseLLM._agenerate", target=LLM_AGENERATE, overrides=True)
    yield Patch(LLMS, "BaseLLM._stream", target=LLM_STREAM, overrides=True)
    yield Patch(LLMS, "BaseLLM._astream", target=LLM_ASTREAM, overrides=True)
    for method, embed_target in _EMBEDDING_TARGETS.items():
        yield Patch(EMBEDDINGS_MODULE, f"Embeddings.{method}", target=embed_target, overrides=True)
    # Inside the callback run that run()/arun() start, which also make a hit's ToolMessage for the call's own tool
    # call, as they make a fresh answer's.
    yield Patch(TOOLS, "BaseTool._run", target=TOOL_RUN, overrides=True)
    yield Patch(TOOLS, "BaseTool._arun", target=TOOL_ARUN, overrides=True)
    for method, mode in (("invoke", Mode.SYNC), ("ainvoke", Mode.ASYNC), ("stream", Mode.SYNC_STREAM),
                         ("astream", Mode.ASYNC_STREAM)):
        yield Patch(PREGEL, f"Pregel.{method}", target=GRAPHS[mode][0], select=functools.partial(_select_graph, mode))
    # The runner binds these names from _retry at import; patching them where they are looked up (and only
    # there) gives one wrapper whether langgraph was imported before or after enable().
    for name, node in (("run_with_retry", NODE), ("arun_with_retry", ANODE)):
        yield Patch(RUNNER, name, target=node, select=functools.partial(_select_node, node))
    # rebind: the packages re-export the factories, and an application imports them by name, often before enable().
    yield Patch("langchain.agents.factory", "create_agent", wrapper=_mark_agent, rebind=True)
    yield Patch("langgraph.prebuilt.chat_agent_executor", "create_react_agent", wrapper=_mark_agent, rebind=True)


_EMBEDDING_TARGETS = {method: _embeddings(method, mode) for method, mode in
                      (("embed_documents", Mode.SYNC), ("embed_query", Mode.SYNC),
                       ("aembed_documents", Mode.ASYNC), ("aembed_query", Mode.ASYNC))}
