"""Single flight across processes through Redis: real child processes, a real redis-server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from agentaccel.testing.redis_server import RedisServer

pytestmark = pytest.mark.slow

# Each child enables agentaccel with the cache on the shared Redis, says it is ready, waits for the go signal (so
# the calls really are concurrent), and calls a model whose upstream counts itself with INCR.
CHILD = """
import json, sys, time
import redis
import agentaccel

url, namespace, lease, upstream_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
agentaccel.enable(cache={"backend": url, "namespace": namespace, "lease": lease})
counter = redis.Redis.from_url(url)

@agentaccel.accelerate(operation="chat", name="shared-model")
def model(q):
    counter.incr("upstream")
    time.sleep(upstream_seconds)
    return {"answer": q, "by": counter.get("upstream").decode()}

counter.incr("ready")
counter.blpop(["go"], timeout=60)
print(json.dumps(model("same question")))
"""


def spawn(script: Path, env: dict[str, str], url: str, namespace: str, lease: float,
          upstream_seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), url, namespace, str(lease), str(upstream_seconds)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(check: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_four_processes_make_one_upstream_call(redis_server: RedisServer, tmp_path: Path,
                                               subprocess_env: dict[str, str]) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    client = redis.Redis.from_url(redis_server.url)
    children = [spawn(script, subprocess_env, redis_server.url, "xp", 30.0, 0.5) for _ in range(4)]
    wait_for(lambda: int(client.get("ready") or 0) == 4, "4 ready children")
    client.rpush("go", *[1] * 4)
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(out.strip())
    assert int(client.get("upstream")) == 1
    assert len(set(outputs)) == 1 and '"answer": "same question"' in outputs[0]


def test_killed_holder_others_proceed_after_the_lease(redis_server: RedisServer, tmp_path: Path,
                                                      subprocess_env: dict[str, str]) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    client = redis.Redis.from_url(redis_server.url)
    holder = spawn(script, subprocess_env, redis_server.url, "kill", 1.0, 60.0)
    wait_for(lambda: int(client.get("ready") or 0) == 1, "the holder to be ready")
    client.rpush("go", 1)
    wait_for(lambda: int(client.get("upstream") or 0) == 1, "the holder to hold the lease")
    waiter = spawn(script, subprocess_env, redis_server.url, "kill", 1.0, 0.0)
    wait_for(lambda: int(client.get("ready") or 0) == 2, "the waiter to be ready")
    client.rpush("go", 1)
    time.sleep(0.2)  # let the waiter reach the lease and subscribe
    holder.kill()
    holder.communicate()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert '"by": "2"' in out  # the waiter called upstream itself once the dead holder's lease expired
    assert int(client.get("upstream")) == 2
