"""agentaccel-cache: two-level, stampede-proof, tenant-safe caching of LLM, tool and agent calls.

Installed, it is on with ``agentaccel.enable()``: model calls are cached in process (L1); set
``[tool.agentaccel.cache] backend = "redis://..."`` or ``"sqlite:///cache.db"`` for a shared second level. See
docs/caching.md.
"""

from __future__ import annotations

from agentaccel_cache.config import CacheConfig, Rule
from agentaccel_cache.keys import VERSION as KEY_VERSION
from agentaccel_cache.middleware import BYPASS, COALESCED, ERROR, HIT, MISS

__all__ = ["BYPASS", "COALESCED", "ERROR", "HIT", "KEY_VERSION", "MISS", "CacheConfig", "Rule"]
