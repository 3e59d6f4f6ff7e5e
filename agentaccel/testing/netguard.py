"""Fail any connection that leaves this machine: tests must talk only to servers they started on loopback.

Frameworks phone home (telemetry, cost maps, tracing backends); a test that quietly depends on the internet is
flaky at best. The guard refuses the connection with :class:`NonLoopbackConnection` and records it, so the test
fails at teardown even when a library swallowed the error and retried.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class NonLoopbackConnection(ConnectionRefusedError):
    """A test tried to reach a host that is not on loopback."""


def is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _numeric(host: str) -> bool:
    """A literal address needs no lookup (the connect that follows is what the guard checks)."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


class Guard:
    """Patches socket connects and name lookups while active; ``attempts`` lists what it refused."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, Any]] = []

    def _refuse(self, what: str) -> NonLoopbackConnection:
        with self._lock:
            self.attempts.append(what)
        return NonLoopbackConnection(f"agentaccel network guard: {what} refused; tests may only reach 127.0.0.1 "
                                     "or ::1 (start a local server instead)")

    def _check_address(self, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise self._refuse(f"connection to {address[0]}:{address[1]}")

    def install(self) -> None:
        original_connect = socket.socket.connect
        original_connect_ex = socket.socket.connect_ex
        original_sendto = socket.socket.sendto
        original_getaddrinfo = socket.getaddrinfo
        guard = self

        def connect(sock: socket.socket, address: Any) -> None:
            guard._check_address(sock, address)
            return original_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard._check_address(sock, address)
            return original_connect_ex(sock, address)

        def sendto(sock: socket.socket, data: Any, *args: Any) -> int:
            guard._check_address(sock, args[-1])
            return original_sendto(sock, data, *args)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if name is not None and not is_loopback(name) and not _numeric(name):
                raise socket.gaierror(socket.EAI_NONAME, str(self._refuse(f"name lookup of {name!r}")))
            return original_getaddrinfo(host, *args, **kwargs)

        replacements: list[tuple[Any, str, Callable[..., Any]]] = [
            (socket.socket, "connect", connect), (socket.socket, "connect_ex", connect_ex),
            (socket.socket, "sendto", sendto), (socket, "getaddrinfo", getaddrinfo)]
        for owner, name, replacement in replacements:
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, replacement)

    def uninstall(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)


@contextmanager
def network_guard() -> Iterator[Guard]:
    """``with network_guard() as guard:`` refuses non-loopback connections inside."""
    guard = Guard()
    guard.install()
    try:
        yield guard
    finally:
        guard.uninstall()
