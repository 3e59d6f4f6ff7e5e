"""The test matrix. `python3 -m uv tool run --from 'nox[uv]' nox` runs every session (the README's test command).

Sessions run through uv: the core in the workspace's locked environment, and (as they arrive) each adapter in
an environment of its own, because agent frameworks pin conflicting versions of each other's dependencies.
"""

from __future__ import annotations

import os
import shutil
import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.error_on_missing_interpreters = True
UV = [shutil.which("uv") or sys.executable, *([] if shutil.which("uv") else ["-m", "uv"])]


def _uv_run(session: nox.Session, *args: str) -> None:
    session.run(*UV, "run", "--locked", "--group", "dev", *args, external=True)


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
    _uv_run(session, "ruff", "check", ".")
    _uv_run(session, "mypy")


@nox.session
def core(session: nox.Session) -> None:
    _ensure_redis_server(session)
    _uv_run(session, "pytest", "tests/core", *session.posargs)
