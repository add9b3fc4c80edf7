"""A real haproxy in front of a backend port, for PROXY protocol integration tests.

    from tests.haproxy_harness import haproxy_in_front

    with haproxy_in_front(backend_port, send_proxy="v2") as front_port:
        ...  # connect to 127.0.0.1:front_port; the backend sees a PROXY v2 header

haproxy runs in the foreground (``-db``) from its own config file in a
temporary directory, with no pidfile, stats socket or chroot.  Its listening
sockets are bound here on 127.0.0.1 port 0 and handed over as ``fd@N``, so
no free port is guessed and nothing races for it.  A second, HTTP frontend
answers ``monitor-uri /ready``: once that answers, haproxy's event loop
runs, without a probe connection ever reaching the backend.  At exit haproxy
is terminated (killed if it lingers) and reaped.

Without a haproxy binary the calling test is skipped, or fails under
``CI=true`` (interop tests must not silently skip in CI).  ``$HAPROXY``
names a binary to use instead of the one on PATH or in /usr/sbin.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest

__all__ = ["find_haproxy", "haproxy_in_front"]

_SEARCH = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
_SEND_PROXY = {"v1": "send-proxy", "v2": "send-proxy-v2"}
_READY_URI = "/ready"

_CONFIG = """\
global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend refd_front
    bind fd@{front_fd}
    default_backend refd_back

backend refd_back
    server refd {backend_host}:{backend_port} {send_proxy}{v2_options}

frontend harness_ready
    mode http
    timeout http-request 5s
    bind fd@{ready_fd}
    monitor-uri {ready_uri}
"""


def find_haproxy() -> str:
    """The haproxy binary; skips the test (fails it under ``CI=true``) if there is none."""
    candidates = [os.environ.get("HAPROXY"), shutil.which("haproxy"), *_SEARCH]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    reason = "haproxy is not installed (apt-get install haproxy, or set $HAPROXY)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; interop tests must not skip under CI=true")
    pytest.skip(reason)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout_s: float) -> None:
    """Wait until haproxy answers its monitor URI, or fail the test with its log."""
    deadline = time.monotonic() + timeout_s
    reply = b""
    # The socket listens already, so this connection waits in the backlog
    # until haproxy's loop accepts it; meanwhile keep an eye on the process.
    # (A reset means haproxy died and took the listener with it.)
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as probe,
    ):
        probe.sendall(f"GET {_READY_URI} HTTP/1.0\r\n\r\n".encode())
        probe.settimeout(0.1)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                data = probe.recv(4096)
            except TimeoutError:
                continue
            reply += data
            if not data or b"\r\n" in reply:
                break
    status = reply.split(b"\r\n", 1)[0]
    if status.startswith(b"HTTP/1.") and b" 200 " in status:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)
    what = f"exited with status {proc.returncode}" if proc.returncode is not None else "not ready"
    pytest.fail(f"haproxy {what} (monitor said {status!r}); its output:\n{log.read_text()}")


@contextlib.contextmanager
def haproxy_in_front(
    backend_port: int,
    *,
    send_proxy: Literal["v1", "v2"] = "v1",
    proxy_v2_options: Sequence[str] = (),
    backend_host: str = "127.0.0.1",
    ready_timeout_s: float = 10.0,
) -> Iterator[int]:
    """Run haproxy (``mode tcp``) from 127.0.0.1:<port> to the backend; yield the port.

    ``send_proxy`` picks ``send-proxy`` (v1) or ``send-proxy-v2``;
    ``proxy_v2_options`` adds haproxy's ``proxy-v2-options`` (for instance
    ``("crc32c", "authority")``), v2 only.
    """
    if send_proxy not in _SEND_PROXY:
        raise ValueError(f"send_proxy must be 'v1' or 'v2', not {send_proxy!r}")
    if proxy_v2_options and send_proxy != "v2":
        raise ValueError("proxy_v2_options needs send_proxy='v2'")
    binary = find_haproxy()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="refd-haproxy-")))
        front = stack.enter_context(_listening_socket())
        ready = stack.enter_context(_listening_socket())
        front_port = front.getsockname()[1]
        ready_port = ready.getsockname()[1]
        config = tmp / "haproxy.cfg"
        config.write_text(
            _CONFIG.format(
                front_fd=front.fileno(),
                ready_fd=ready.fileno(),
                backend_host=backend_host,
                backend_port=backend_port,
                send_proxy=_SEND_PROXY[send_proxy],
                v2_options=(
                    f" proxy-v2-options {','.join(proxy_v2_options)}" if proxy_v2_options else ""
                ),
                ready_uri=_READY_URI,
            )
        )
        log = tmp / "haproxy.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(front.fileno(), ready.fileno()),
                cwd=tmp,
            )
        # haproxy owns the listeners now; once it stops, connections are refused.
        front.close()
        ready.close()
        try:
            _wait_ready(proc, ready_port, log, ready_timeout_s)
            yield front_port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
