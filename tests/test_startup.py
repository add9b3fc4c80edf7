"""``refd serve`` start-up: a port it cannot have is one line and exit code 1.

Real processes on loopback.  A port held by another program, one held by a
program that set ``SO_REUSEPORT`` itself, and a second refd on the ports of
a running one (with one worker and with two) are all refused with
"Address already in use"; the running refd keeps serving.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from refd.config.loader import DEMO_CONFIG
from tests.procs import Daemon, free_port, free_ports, session

REFERRAL = b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]"


def write_config(tmp_path: Path, port: int, metrics: int, workers: int = 1) -> Path:
    for name in ("routing.yaml", "users.passwd"):
        (tmp_path / name).write_text((DEMO_CONFIG.parent / name).read_text())
    text = DEMO_CONFIG.read_text().replace("port: 1143", f"port: {port}")
    text = text.replace("port: 9143", f"port: {metrics}").replace("port: 1180", "port: 0")
    path = tmp_path / f"refd-{workers}.yaml"
    path.write_text(text + f"workers: {workers}\nshutdown_grace_s: 1\n")
    return path


def serve(config: Path) -> tuple[int, list[str]]:
    """``refd serve`` that is expected to stop by itself: exit code, stderr lines."""
    done = subprocess.run(
        [sys.executable, "-m", "refd", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr.splitlines()


@pytest.fixture
def squatter() -> Iterator[tuple[socket.socket, int]]:
    """Another program listening on a loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock, sock.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_is_one_line(
    tmp_path: Path, squatter: tuple[socket.socket, int], workers: int
) -> None:
    _, port = squatter
    config = write_config(tmp_path, port, free_port(), workers)
    assert serve(config) == (
        1,
        [f"refd: cannot listen on 127.0.0.1:{port} (listener imap): Address already in use"],
    )


def test_the_metrics_port_in_use_is_one_line(
    tmp_path: Path, squatter: tuple[socket.socket, int]
) -> None:
    _, port = squatter
    config = write_config(tmp_path, free_port(), port)
    assert serve(config) == (
        1,
        [f"refd: cannot listen on 127.0.0.1:{port} (metrics): Address already in use"],
    )


def test_a_reuseport_socket_of_another_program_is_not_joined(tmp_path: Path) -> None:
    # SO_REUSEPORT lets every socket of the same user that sets it join a
    # port; refd never sets it, so it cannot end up sharing with this one.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = write_config(tmp_path, port, free_port(), workers=2)
        assert serve(config) == (
            1,
            [f"refd: cannot listen on 127.0.0.1:{port} (listener imap): Address already in use"],
        )


@pytest.mark.parametrize("second_workers", [1, 2])
def test_a_second_refd_is_refused(tmp_path: Path, second_workers: int) -> None:
    port, metrics = free_ports(2)
    first = Daemon(["serve", "-c", str(write_config(tmp_path, port, metrics, workers=2))])
    try:
        first.wait_log("supervisor ready workers=2", timeout=60)
        # Another refd on the same ports, its own metrics port: refused.
        second = write_config(tmp_path, port, free_port(), second_workers)
        assert serve(second) == (
            1,
            [f"refd: cannot listen on 127.0.0.1:{port} (listener imap): Address already in use"],
        )
        # The first one never noticed.
        for _ in range(4):
            assert session(port, b"a1 LOGIN alice secret")[1].startswith(REFERRAL)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
    finally:
        first.stop()
