"""`agentaccel cache stats|clear` on both backends, and configuration errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import agentaccel
from agentaccel.cli import main
from agentaccel.testing.pytest_plugin import SpanRecorder
from agentaccel.testing.redis_server import RedisServer


def fill(spans: SpanRecorder, url: str) -> None:
    spans.enable(cache={"backend": url, "namespace": "cli", "rules": [{"name": "tagged-*", "tags": ["docs"]}]})

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="tagged-model")
    def tagged(q: str) -> str:
        return q

    @agentaccel.accelerate(operation=agentaccel.CHAT, name="plain-model")
    def plain(q: str) -> str:
        return q

    for q in ("a", "b"):
        tagged(q)
        plain(q)
    with agentaccel.options(cache_tags=["extra"]):
        plain("c")
    agentaccel.disable()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(["cache", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_stats_and_clear(agentaccel_spans: SpanRecorder, redis_server: RedisServer, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str], backend: str) -> None:
    url = redis_server.url if backend == "redis" else f"sqlite:///{tmp_path}/cli.db"
    fill(agentaccel_spans, url)
    common = ["--backend", url, "--namespace", "cli"]
    stats = run_json(capsys, "stats", *common)
    assert stats["entries"] == 5 and stats["bytes"] > 0 and stats["namespace"] == "cli"
    assert run_json(capsys, "clear", *common, "--tag", "docs")["deleted"] == 2
    assert run_json(capsys, "clear", *common, "--tag", "extra", "--match", "python/chat/plain-*")["deleted"] == 1
    assert run_json(capsys, "clear", *common, "--match", "python/chat/nothing")["deleted"] == 0
    assert run_json(capsys, "stats", *common)["entries"] == 2
    assert run_json(capsys, "clear", "--backend", url, "--namespace", "other")["deleted"] == 0
    assert run_json(capsys, "clear", *common)["deleted"] == 2
    assert run_json(capsys, "stats", *common)["entries"] == 0


def test_cli_reads_the_configuration_and_explains_l1_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["cache", "stats"]) == 2
    assert "cache.backend is empty" in capsys.readouterr().err
    monkeypatch.setenv("AGENTACCEL_CACHE__BACKEND", f"sqlite:///{tmp_path}/env.db")
    assert main(["cache", "stats"]) == 1  # the CLI reads a cache file; it never creates one
    assert "env.db does not exist" in capsys.readouterr().err
    sqlite3.connect(tmp_path / "env.db").close()
    assert main(["cache", "stats"]) == 0
    assert "entries: 0" in capsys.readouterr().out
    monkeypatch.setenv("AGENTACCEL_CACHE__BACKEND", "memcached://x")
    assert main(["cache", "stats"]) == 2
    assert "cache.backend" in capsys.readouterr().err


def test_cli_reports_an_unreachable_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "stats", "--backend", "redis://:pw@127.0.0.1:1/0"]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "pw" not in err  # the password is never printed


@pytest.mark.parametrize(("section", "message"), [
    ({"backend": "memcached://localhost"}, "cache.backend: 'memcached://localhost' has scheme 'memcached'"),
    ({"backend": "sqlite://"}, "names no file"),
    ({"ttl": 0}, "cache.ttl: must be a positive, finite number"),
    # An infinite number of seconds passes `> 0`, then cannot be stored as an expiry nor used as a timeout.
    ({"ttl": float("inf")}, "cache.ttl: must be a positive, finite number of seconds, got inf"),
    ({"lease": float("nan")}, "cache.lease"),
    ({"timeout": float("inf")}, "cache.timeout"),
    ({"rules": [{"name": "x", "ttl": float("inf")}]}, "cache.rules[0].ttl"),
    # A URL redis-py cannot parse is the user's to fix at enable(), not a cache silently left out.
    ({"backend": "redis://localhost:abc/0"}, "cache.backend: 'redis://localhost:abc/0': Port could not be cast"),
    ({"backend": "REDIS://localhost"}, "has scheme 'REDIS'"),
    ({"max_bytes": -1}, "cache.max_bytes"),
    ({"namespace": "has space"}, "cache.namespace"),
    ({"rules": [{"name": "x", "ttl": -5}]}, "cache.rules[0].ttl"),
    ({"rules": [{"name": "x", "enabled": "yes"}]}, "cache.rules[0].enabled"),
    ({"backnd": "redis://x"}, "did you mean 'backend'"),
    # A glob over six names: one matching none of them is a typo that would otherwise match no call, silently.
    ({"rules": [{"operation": "chatt", "ttl": 5}]}, "cache.rules[0].operation: 'chatt' matches no operation; use "
                                                    "one of chat, embeddings, execute_tool, invoke_agent"),
])
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(agentaccel.ConfigError) as raised:
        agentaccel.enable(cache=section)
    assert message in str(raised.value)
    assert agentaccel.runtime() is None


def test_option_types_are_checked(agentaccel_spans: SpanRecorder) -> None:
    with pytest.raises(agentaccel.ConfigError, match="ttl"), agentaccel.options(ttl="long"):
        pass
    for seconds in (float("inf"), 0, -5):  # the right type, but no entry can live that long
        with pytest.raises(agentaccel.ConfigError, match=r"options\(ttl=...\): must be a positive, finite"), \
                agentaccel.options(ttl=seconds):
            pass
    with agentaccel.options(cache=False, ttl=5, refresh=True, cache_tags=["a"]):
        pass
