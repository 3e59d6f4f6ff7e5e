"""``agentaccel doctor``: is the configuration valid, do the plugins load, can the exporter and every configured
Redis be reached. Each check prints one line; the exit status is 1 when any failed."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from agentaccel._config import Config
from agentaccel._errors import ConfigError

Check = Callable[[], tuple[bool, str]]
TIMEOUT = 2.0


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def check_redis(url: str, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """PING a Redis server (AUTH first when the URL has credentials); TLS for ``rediss://``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    shown = f"{parts.scheme}://{host}:{port}"
    try:
        sock: socket.socket = socket.create_connection((host, port), timeout=timeout)
        if parts.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        with sock:
            if parts.password is not None:
                auth = [unquote(parts.username)] if parts.username else []
                sock.sendall(_resp("AUTH", *auth, unquote(parts.password)))
                reply = sock.recv(256)
                if not reply.startswith(b"+OK"):
                    return False, f"{shown}: AUTH refused: {reply.decode(errors='replace').strip()}"
            sock.sendall(_resp("PING"))
            reply = sock.recv(256)
    except OSError as exc:
        return False, f"{shown}: unreachable ({exc}); is redis-server running and the URL right?"
    if reply.startswith(b"+PONG"):
        return True, f"{shown}: PONG"
    return False, f"{shown}: unexpected reply {reply.decode(errors='replace').strip()!r}"


def redis_urls(config: Config) -> Iterator[tuple[str, str]]:
    """(``section.key``, url) for every setting that holds a redis:// or rediss:// URL."""
    for section, values in config.as_dict().items():
        yield from _urls(section, values)


def _urls(path: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, str) and value.startswith(("redis://", "rediss://")):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _urls(f"{path}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _urls(f"{path}[{index}]", item)


def check_endpoint(url: str, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """Whether ``url``'s host accepts a TCP connection."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return False, f"{url} unreachable ({exc})"
    return True, f"{url} accepts connections"


def run_checks(write: Callable[[str], None]) -> int:
    from agentaccel._runtime import _call_each, load_configuration

    failures = 0

    def report(title: str, check: Check) -> None:
        nonlocal failures
        try:
            ok, message = check()
        except Exception as exc:
            ok, message = False, f"{type(exc).__name__}: {exc}"
        failures += not ok
        write(f"[{'ok' if ok else 'FAIL'}] {title}: {message}")

    def summary() -> int:
        write(f"{failures} problem(s) found" if failures else "all checks passed")
        return 1 if failures else 0

    try:
        pm, infos, _, config = load_configuration({})
    except ConfigError as exc:
        message = str(exc)
        report("configuration", lambda: (False, message))
        return summary()  # the other checks need a valid configuration
    report("configuration", lambda: (True, "valid; read from " + (", ".join(config.sources) or "defaults only")))
    for info in infos:
        if info.status == "failed":
            report(f"plugin {info.name}", lambda info=info: (False, info.reason))  # type: ignore[misc]
    for path, url in redis_urls(config):
        report(f"redis ({path})", lambda url=url: check_redis(url))  # type: ignore[misc]
    extra: list[tuple[str, Check]] = []
    _call_each(pm, {info.name: info for info in infos}, "agentaccel_doctor", collect=extra, config=config)
    for title, check in extra:
        report(title, check)
    return summary()
