"""A real ``redis-server`` child process for tests.

The server runs in the foreground (``--daemonize no``) as our own child, bound to 127.0.0.1 on a free
port, with persistence off and a throwaway working directory, so every test gets a clean, isolated
instance that is stopped by PID. Readiness is checked with raw RESP over a socket so this module has
no dependency on a Redis client library.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = ["RedisServer", "RedisServerNotFound", "redis_server_binary"]

_ENV_VAR = "AGENTACCEL_REDIS_SERVER"
_INSTALL_HINT = (
    "redis-server was not found. Install it (Debian/Ubuntu: `apt-get install -y redis-server`; "
    "macOS: `brew install redis`), put it on PATH, or point $AGENTACCEL_REDIS_SERVER at the binary."
)
_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class RedisServerNotFound(RuntimeError):
    """No usable ``redis-server`` executable could be found."""


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def redis_server_binary() -> str | None:
    """Where ``redis-server`` would be found ($AGENTACCEL_REDIS_SERVER, PATH, /usr/bin, /usr/sbin)."""
    explicit = os.environ.get(_ENV_VAR)
    if explicit:
        # An explicit setting that is wrong should fail loudly rather than silently fall back.
        return explicit if _is_executable(explicit) else None
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if _is_executable(candidate):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _encode_command(args: tuple[str, ...]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _answering_pid(port: int, password: str | None, timeout: float) -> int | None:
    """PID reported by the redis-server answering PING on ``port`` (after AUTH when a password is
    set), or None if nothing answers. Comparing PIDs tells our server apart from another one that
    already holds the port, which would answer PING just as well."""
    try:
        with (
            socket.create_connection((_HOST, port), timeout=timeout) as sock,
            sock.makefile("rb") as reader,
        ):
            if password is not None:
                sock.sendall(_encode_command(("AUTH", password)))
                if reader.readline() != b"+OK\r\n":
                    return None
            sock.sendall(_encode_command(("PING",)) + _encode_command(("INFO", "server")))
            if reader.readline() != b"+PONG\r\n":
                return None
            header = reader.readline()
            if not header.startswith(b"$"):
                return None
            info = reader.read(int(header[1:]) + 2).decode(errors="replace")
    except (OSError, ValueError):
        return None
    for line in info.splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        port: int = 0,
        *,
        password: str | None = None,
        binary: str | None = None,
        dir: str | None = None,
    ) -> None:
        self._port = port
        self._password = password
        self._binary = binary
        self._user_dir = dir
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ----------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port; 0 until a free one has been picked by the first start()."""
        return self._port

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def pid(self) -> int | None:
        """PID of the running server, None when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("RedisServer has no port yet; call start() first")
        auth = f":{quote(self._password, safe='')}@" if self._password is not None else ""
        return f"redis://{auth}{_HOST}:{self._port}/0"

    def is_running(self) -> bool:
        return self.pid is not None

    # -- lifecycle -----------------------------------------------------------------------------------

    def _resolve_binary(self) -> str:
        if self._binary is not None:
            if _is_executable(self._binary):
                return self._binary
            raise RedisServerNotFound(f"{self._binary!r} is not an executable file. {_INSTALL_HINT}")
        found = redis_server_binary()
        if found is None:
            raise RedisServerNotFound(_INSTALL_HINT)
        return found

    def start(self) -> RedisServer:
        if self.is_running():
            return self
        # Leftovers of a kill() or crash: reap them so the old working dir does not leak.
        self._cleanup()
        binary = self._resolve_binary()
        # A port we picked ourselves can be grabbed by someone else between probe and bind; retry with
        # a fresh one. A fixed port (user-given, or kept for restart()) must not silently change.
        attempts = 3 if self._port == 0 else 1
        for attempt in range(attempts):
            port = self._port or _free_port()
            try:
                self._launch(binary, port)
            except RuntimeError as exc:
                if attempt + 1 < attempts and "Address already in use" in str(exc):
                    continue
                raise
            self._port = port
            break
        atexit.register(self._stop_at_exit)
        return self

    def _launch(self, binary: str, port: int) -> None:
        if self._user_dir is not None:
            workdir = Path(self._user_dir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix=f"agentaccel-redis-{port}-"))
            self._workdir = workdir
        log_path = workdir / "redis.log"
        args = [
            binary,
            "--bind", _HOST,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            # Loopback-only with protected mode on: nothing outside this host can ever reach it.
            "--protected-mode", "yes",
            "--dir", str(workdir),
            # Empty logfile = stdout, which we send to a file (a pipe could fill up and block redis).
            "--logfile", "",
        ]  # fmt: skip
        if self._password is not None:
            args += ["--requirepass", self._password]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
            )
        self._proc = proc
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if proc.poll() is not None:
                output = self._read_log(log_path)
                self._cleanup()
                raise RuntimeError(
                    f"redis-server exited early with code {proc.returncode} on port {port}:\n{output}"
                )
            if _answering_pid(port, self._password, timeout=0.5) == proc.pid:
                return
            if time.monotonic() > deadline:
                self._terminate(proc)
                output = self._read_log(log_path)
                self._cleanup()
                raise RuntimeError(
                    f"redis-server did not answer PING on port {port} within {_START_TIMEOUT:.0f}s:\n{output}"
                )
            time.sleep(0.02)

    @staticmethod
    def _read_log(path: Path) -> str:
        try:
            return path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to proc.pid
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()

    def _cleanup(self) -> None:
        self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL after a timeout; safe to call repeatedly."""
        atexit.unregister(self._stop_at_exit)
        if self._proc is not None:
            self._terminate(self._proc)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL, to simulate a crash. restart() or start() brings it back on the same port."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        """Stop, then start again on the same port (an outage followed by recovery)."""
        self.stop()
        self.start()

    def _stop_at_exit(self) -> None:
        # Safety net: a forgotten server must not outlive the test run.
        with contextlib.suppress(Exception):
            self.stop()

    def ping(self) -> bool:
        """True if this server (not merely something on its port) answers PING."""
        pid = self.pid
        return pid is not None and _answering_pid(self._port, self._password, timeout=1.0) == pid

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"<RedisServer {_HOST}:{self._port} {state}>"
