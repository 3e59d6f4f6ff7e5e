"""The network guard refuses anything beyond loopback, in this process and in child processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentaccel.testing.netguard import NonLoopbackConnection, is_loopback, network_guard


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "example.com", "0.0.0.0", "", None])
def test_other_hosts(host: str | None) -> None:
    assert not is_loopback(host)


def test_refuses_and_records_connections_and_lookups() -> None:
    before = socket.socket.connect
    with network_guard() as guard:
        with socket.socket() as sock, pytest.raises(NonLoopbackConnection, match=r"10\.1\.2\.3:80 refused"):
            sock.connect(("10.1.2.3", 80))
        with socket.socket() as sock, pytest.raises(NonLoopbackConnection):
            sock.connect_ex(("10.1.2.3", 80))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(NonLoopbackConnection):
            udp.sendto(b"x", ("10.1.2.3", 53))
        with pytest.raises(socket.gaierror, match=r"name lookup of 'example\.com'"):
            socket.getaddrinfo("example.com", 443)
        with pytest.raises(OSError):  # create_connection goes through the lookup
            socket.create_connection(("example.com", 443), timeout=1)
    assert len(guard.attempts) == 5
    assert socket.socket.connect is before  # restored


def test_loopback_still_works_and_other_threads_are_guarded_too() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with network_guard() as guard:
            socket.create_connection(server.getsockname(), timeout=5).close()
            errors: list[BaseException] = []

            def reach_out() -> None:
                try:
                    socket.create_connection(("192.0.2.1", 80), timeout=1)
                except OSError as exc:
                    errors.append(exc)

            thread = threading.Thread(target=reach_out)
            thread.start()
            thread.join()
        assert isinstance(errors[0], NonLoopbackConnection)
        assert guard.attempts == ["connection to 192.0.2.1:80"]


def test_child_processes_are_guarded(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    code = ("import socket\n"
            "try:\n"
            "    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "NonLoopbackConnection"
    assert result.returncode == 97  # recorded and reported even though the program caught the error
    assert "agentaccel network guard refused: connection to 192.0.2.1:80" in result.stderr
