"""agentaccel-limit: concurrency, rate and token limits that keep providers at capacity without 429s, in one
process or across machines through Redis; and ``map``/``amap`` for running a batch of calls.

Configure rules in ``[tool.agentaccel.limit]`` (see docs/limits.md); ``agentaccel.enable()`` finds the plugin.
"""

from __future__ import annotations

from agentaccel_limit.bulk import Batch, Item, ItemCancelled, amap, map
from agentaccel_limit.config import LimitConfig, RuleConfig
from agentaccel_limit.errors import LimitExceeded
from agentaccel_limit.feedback import rate_limited
from agentaccel_limit.state import snapshot

__all__ = ["Batch", "Item", "ItemCancelled", "LimitConfig", "LimitExceeded", "RuleConfig", "amap", "map",
           "rate_limited", "snapshot"]
