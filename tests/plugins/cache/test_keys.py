"""Keys: equal requests give equal keys across processes and runs; any answer-relevant change gives another key;
scopes partition the cache."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from agentaccel_cache.keys import digest, encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentaccel
from agentaccel import Call, Mode, Target
from agentaccel.testing.pytest_plugin import SpanRecorder

# Integers within 64 bits: the canonical encoder refuses larger ones (such a call is not cached, see test_middleware).
ints = st.integers(-(2**63), 2**64 - 1)
json_scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_data = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text()}),
                    max_size=3)
requests = st.fixed_dictionaries({"model": st.sampled_from(["gpt-a", "gpt-b"]), "messages": messages},
                                 optional={"temperature": st.floats(0, 2), "seed": ints,
                                           "stop": st.lists(st.text(max_size=4), max_size=2),
                                           "tools": st.lists(json_data, max_size=2), "tool_choice": json_data,
                                           "response_format": json_data})

TARGET = Target(framework="openai", operation="chat", name="chat.completions", mode=Mode.SYNC, provider="openai",
                request=lambda call: call.kwargs)


def key(request: dict[str, Any], scope: dict[str, str] | None = None, namespace: str = "ns",
        target: Target = TARGET) -> str:
    call = Call(target, None, (), dict(request))
    if scope is not None:
        call.scope = scope
    return digest(encode(call, namespace))


@given(requests)
def test_equal_requests_equal_keys_whatever_the_dict_order(request: dict[str, Any]) -> None:
    shuffled = dict(reversed(list(request.items())))
    assert key(request) == key(shuffled)


@given(requests, st.sampled_from(["model", "messages", "temperature", "seed", "stop", "tools", "tool_choice",
                                  "response_format", "n"]), json_data)
def test_any_changed_parameter_changes_the_key(request: dict[str, Any], field: str, value: Any) -> None:
    changed = {**request, field: value}
    if changed.get(field, object()) == request.get(field, object()) and field in request:
        return  # hypothesis drew the same value
    assert key(changed) != key(request)


@given(requests, st.dictionaries(st.sampled_from(["tenant", "user"]), st.text(max_size=5), min_size=1),
       st.dictionaries(st.sampled_from(["tenant", "user"]), st.text(max_size=5), min_size=1))
def test_scope_and_namespace_partition_keys(request: dict[str, Any], a: dict[str, str], b: dict[str, str]) -> None:
    assert (key(request, a) == key(request, b)) == (a == b)
    assert key(request, namespace="one") != key(request, namespace="two")
    other = Target(framework="openai", operation="embeddings", name="chat.completions", mode=Mode.SYNC,
                   provider="openai", request=lambda call: call.kwargs)
    assert key(request, target=other) != key(request)


def test_keys_are_stable_across_processes_and_hash_seeds() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}], "temperature": 0.1,
               "tools": [{"b": 1, "a": [1.5, None, True]}]}
    code = ("from agentaccel import Call, Mode, Target\nfrom agentaccel_cache.keys import digest, encode\n"
            "t = Target(framework='openai', operation='chat', name='chat.completions', mode=Mode.SYNC, "
            "provider='openai', request=lambda c: c.kwargs)\n"
            f"print(digest(encode(Call(t, None, (), {request!r}), 'ns')))")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (1, 2)}
    assert seen == {key(request)}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["acme", "globex", "initech"]), st.sampled_from(["u1", "u2", ""]),
                          st.sampled_from(["q1", "q2"])), min_size=1, max_size=12))
def test_no_entry_is_ever_served_to_another_scope(agentaccel_spans: SpanRecorder,
                                                  calls: list[tuple[str, str, str]]) -> None:
    agentaccel_spans.enable(cache={"namespace": "scoped"})
    from cache_helpers import cache

    cache().l1.clear()

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="scoped-model")
    def model(q: str) -> dict[str, str]:
        scope = agentaccel.current_scope()
        return {"tenant": scope["tenant"], "user": scope.get("user", ""), "q": q}

    for tenant, user, q in calls:
        labels = {"tenant": tenant, **({"user": user} if user else {})}
        with agentaccel.scope(**labels):
            assert model(q) == {"tenant": tenant, "user": user, "q": q}
