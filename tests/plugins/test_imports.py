"""What enabling the plugins imports: the redis client takes about 0.4 s to import (redis 8 also loads its
observability module, which imports OpenTelemetry's metrics), so neither plugin loads it unless the configuration
names a Redis URL."""

from __future__ import annotations

import os
import subprocess
import sys

ENABLE_AND_CALL = """
import sys
import agentaccel

runtime = agentaccel.enable(limit={"rules": [{"name": "tools", "operation": "execute_tool", "max_concurrency": 2}]})
assert {"cache", "limit"} <= {mw.name for mw in runtime.middleware}, runtime.middleware
ran = []

@agentaccel.accelerate(pure=True)
def double(x: int) -> int:
    ran.append(x)
    return 2 * x

assert [double(2), double(2)] == [4, 4] and ran == [2], ran  # limited, then cached
print("redis" in sys.modules)
"""


def test_in_process_limits_and_cache_never_import_the_redis_client() -> None:
    # A fresh interpreter: this test process has imported redis for the Redis tests.
    result = subprocess.run([sys.executable, "-c", ENABLE_AND_CALL], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "AGENTACCEL_DISABLE_PLUGINS"}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
