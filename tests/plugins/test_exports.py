"""With the limit plugin installed, its bulk helpers and error are reachable from `agentaccel.`."""

from __future__ import annotations

import agentaccel_limit

import agentaccel


def test_limit_names_are_re_exported() -> None:
    assert agentaccel.map is agentaccel_limit.map
    assert agentaccel.amap is agentaccel_limit.amap
    assert agentaccel.LimitExceeded is agentaccel_limit.LimitExceeded
    assert issubclass(agentaccel.LimitExceeded, agentaccel.AgentAccelError)
    batch = agentaccel.map(lambda x: 10 // x, [1, 0, 5], concurrency=2)
    assert [item.value for item in batch] == [10, None, 2]
    assert [type(item.error).__name__ for item in batch] == ["NoneType", "ZeroDivisionError", "NoneType"]
