"""Helpers for tests that talk to refd over real sockets or run it as a process."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import trio


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports free on ``host`` now, all different: each socket stays
    bound until the last is, so the kernel cannot hand out one port twice
    (two ``free_port()`` calls in a row can, and a server given the same port
    twice refuses to start: Dovecot's "duplicate listener")."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


class Daemon:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "refd", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.pump.join(timeout=10)  # it ends at EOF, once the process is gone
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_log(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} not logged; got {self.log!r}")

    def drain_log(self, seconds: float) -> list[str]:
        """What it has logged and `wait_log` has not read, and logs in the next ``seconds``
        (kept in ``log`` too)."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            try:
                got.append(self.lines.get(timeout=left) if left > 0 else self.lines.get_nowait())
            except queue.Empty:
                if left <= 0:
                    break
        self.log.extend(got)
        return got


def session(port: int, *commands: bytes) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with sock.makefile("rb") as f:
            out = [f.readline()]
            for cmd in commands:
                sock.sendall(cmd + b"\r\n")
                tag = cmd.split(b" ")[0]
                while True:
                    line = f.readline()
                    out.append(line)
                    if line.startswith(tag + b" ") or not line:
                        break
        return out


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking client in a thread, so the server on the trio loop can answer."""
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(fn, *args)


def exchange(port: int, payload: bytes, until: bytes = b"a1 ") -> bytes:
    """Send ``payload`` on a fresh connection; read until ``until`` or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while until not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got
