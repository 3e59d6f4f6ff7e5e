"""The test matrix. `python3 -m uv tool run --from 'nox[uv]' nox` runs every session (the README's test command).

Each session runs through uv in an environment of its own under .nox/: the core without any plugin installed (so
entry-point discovery sees only what the core ships), the plugins with every workspace member, and — as they
arrive — each framework adapter with its framework, because frameworks pin conflicting versions of each other's
dependencies.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.error_on_missing_interpreters = True
UV = [shutil.which("uv") or sys.executable, *([] if shutil.which("uv") else ["-m", "uv"])]
ROOT = Path(__file__).parent


def _uv_run(session: nox.Session, environment: str, *args: str, all_packages: bool = False) -> None:
    env = {"UV_PROJECT_ENVIRONMENT": str(ROOT / ".nox" / f"{environment}-env")}
    packages = ["--all-packages"] if all_packages else []
    session.run(*UV, "run", "--locked", "--exact", *packages, "--group", "dev", *args, external=True, env=env)


def _ensure_redis_server(session: nox.Session) -> None:
    """Tests use a real redis-server; install Debian's when it is missing and we may."""
    if shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.error("redis-server is missing: install it (Debian: apt-get install -y redis-server)")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server", external=True, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    _uv_run(session, "plugins", "ruff", "check", ".", all_packages=True)
    _uv_run(session, "plugins", "mypy", all_packages=True)


@nox.session
def core(session: nox.Session) -> None:
    _ensure_redis_server(session)
    _uv_run(session, "core", "pytest", "tests/core", *session.posargs)


@nox.session
def plugins(session: nox.Session) -> None:
    _ensure_redis_server(session)
    _uv_run(session, "plugins", "pytest", "tests/plugins", *session.posargs, all_packages=True)


@nox.session
def langchain(session: nox.Session) -> None:
    """The LangChain/LangGraph adapter with its framework, in an environment of its own (the adapter's `test`
    dependency group pins the framework, which the other sessions never install); mypy runs here too, where
    LangChain's types are importable."""
    env = {"UV_PROJECT_ENVIRONMENT": str(ROOT / ".nox" / "langchain-env")}
    run = [*UV, "run", "--locked", "--exact", "--package", "agentaccel-langchain", "--group", "test"]
    session.run(*run, "pytest", "tests/adapters/langchain", *session.posargs, external=True, env=env)
    session.run(*run, "mypy", "--strict", "adapters/langchain/agentaccel_langchain", external=True, env=env)
