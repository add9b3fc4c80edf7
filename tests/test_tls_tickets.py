"""TLS session tickets: one set of keys for every context of a refd, workers included.

The unit tests hand-shake in memory with OpenSSL itself (``ssl.MemoryBIO``);
the last one runs ``refd serve`` with two workers and reconnects with the
session each time, so every reconnection that lands on the other worker
shows whether the keys are shared, and again after a reload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from refd import tls_tickets
from refd.config.loader import DEMO_CONFIG, make_tls_context
from refd.tls_tickets import (
    TICKET_KEYS_BYTES,
    TICKET_KEYS_FD_ENV,
    keys_pipe,
    share_ticket_keys,
    ticket_keys,
)
from tests.procs import Daemon


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pem(tmp_path: Path, ca: trustme.CA) -> str:
    path = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def fresh_keys() -> Iterator[None]:
    """`ticket_keys` forgotten before and after, so a test can make the process's keys anew."""
    ticket_keys.cache_clear()
    yield
    ticket_keys.cache_clear()


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _connect(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> ssl.SSLObject:
    """A whole TLS 1.3 handshake in memory, and the server's tickets read by the client."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        _pump(c_out, s_in)
        _pump(s_out, c_in)
    # The tickets come after the handshake: a byte of data carries them through.
    server.write(b"*")
    _pump(s_out, c_in)
    assert client.read(1) == b"*"
    return client


def test_two_contexts_of_one_process_resume_each_others_sessions(
    pem: str, client_ctx: ssl.SSLContext, fresh_keys: None
) -> None:
    # A reload makes a new context, as each worker makes its own.
    first = make_tls_context(pem, pem)
    second = make_tls_context(pem, pem)
    session = _connect(client_ctx, first, None).session
    again = _connect(client_ctx, second, session)
    assert again.session_reused
    assert again.version() == "TLSv1.3"


def test_a_context_with_opensslss_own_keys_does_not_resume_them(
    pem: str, client_ctx: ssl.SSLContext, fresh_keys: None
) -> None:
    shared = make_tls_context(pem, pem)
    own = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    own.load_cert_chain(pem, pem)
    session = _connect(client_ctx, shared, None).session
    assert not _connect(client_ctx, own, session).session_reused
    # The same context, given the keys afterwards, does.
    assert share_ticket_keys(own)
    assert _connect(client_ctx, own, session).session_reused


def test_a_worker_reads_the_supervisors_keys_from_the_pipe_once(
    monkeypatch: pytest.MonkeyPatch, fresh_keys: None
) -> None:
    supervisor = ticket_keys()
    assert len(supervisor) == TICKET_KEYS_BYTES
    fd = keys_pipe()
    ticket_keys.cache_clear()  # now "the worker"
    monkeypatch.setenv(TICKET_KEYS_FD_ENV, str(fd))
    assert ticket_keys() == supervisor
    assert TICKET_KEYS_FD_ENV not in os.environ  # read once, not handed on
    with pytest.raises(OSError):
        os.fstat(fd)  # closed after reading


def test_no_keys_from_the_pipe_means_keys_of_its_own_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_keys: None
) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"short")
    os.close(write_end)
    monkeypatch.setenv(TICKET_KEYS_FD_ENV, str(read_end))
    with caplog.at_level(logging.WARNING, logger="refd.tls_tickets"):
        keys = ticket_keys()
    assert len(keys) == TICKET_KEYS_BYTES
    assert [r.getMessage() for r in caplog.records] == [
        f"tls tickets: no keys from the supervisor ({TICKET_KEYS_FD_ENV}={read_end}); "
        "this worker's tickets resume on this worker only"
    ]
    assert keys.hex() not in caplog.text


def test_a_pointer_that_is_not_the_contexts_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, pem: str
) -> None:
    lib = tls_tickets._libssl()
    assert lib is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert tls_tickets._ssl_ctx(ctx, lib) is not None
    # Another context's SSL_CTX: valid memory, but its options do not follow ctx's flip.
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_pointer = tls_tickets._ssl_ctx(other, lib)
    monkeypatch.setattr(
        tls_tickets.ctypes.c_void_p,
        "from_address",
        lambda _address: tls_tickets.ctypes.c_void_p(other_pointer),
    )
    assert tls_tickets._ssl_ctx(ctx, lib) is None
    tls_tickets._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="refd.tls_tickets"):
        assert not share_ticket_keys(ctx)
        assert not share_ticket_keys(ctx)
    assert len(caplog.records) == 1
    assert "cannot set the ticket keys" in caplog.records[0].getMessage()
    tls_tickets._warn_once.cache_clear()


def _session_over_tls(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        with tls.makefile("rb") as f:
            assert f.readline().startswith(b"* OK")
            tls.sendall(b"a1 LOGOUT\r\n")
            assert f.readline().startswith(b"* BYE")
            assert f.readline().startswith(b"a1 OK")
        return tls.session_reused, tls.session


def test_two_workers_resume_each_others_sessions(
    tmp_path: Path, pem: str, client_ctx: ssl.SSLContext
) -> None:
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    text = DEMO_CONFIG.read_text().replace("port: 1143", "port: 0").replace("port: 9143", "port: 0")
    text = text.replace("port: 1180", "port: 0")
    text = text.replace(
        "listeners:\n",
        "listeners:\n  - {name: imaps, address: 127.0.0.1, port: 0, tls: implicit}\n",
        1,
    )
    (tmp_path / "refd.yaml").write_text(
        text + f"workers: 2\nshutdown_grace_s: 2\ntls:\n  cert: {pem}\n  key: {pem}\n"
    )
    daemon = Daemon(["serve", "-c", str(tmp_path / "refd.yaml")])
    try:
        ready = daemon.wait_log("supervisor ready workers=2", timeout=60)
        port = int(re.search(r"'imaps': (\d+)", ready).group(1))  # type: ignore[union-attr]
        reused, session = _session_over_tls(port, client_ctx, None)
        assert not reused
        # Reconnect until both workers have served (a session's conn= id
        # starts with its worker's pid), each time with the last session.
        resumed: list[bool] = []
        workers: set[str] = set()
        log = ""
        while len(workers) < 2 or len(resumed) < 12:
            assert len(resumed) < 80, f"one worker took every connection: {workers}"
            time.sleep(0.02)  # past IDLE_LOSER_PAUSE_S: either worker may take the next
            reused, session = _session_over_tls(port, client_ctx, session)
            resumed.append(reused)
            log += "".join(daemon.drain_log(0.05))
            workers = set(re.findall(r"session end conn=(\w+)-\w+ .*listener=imaps", log))
        assert resumed == [True] * len(resumed)
        # A reload makes new contexts: the same keys, so the session still resumes.
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload ok")
        daemon.wait_log("reload ok")
        after = [_session_over_tls(port, client_ctx, session)[0] for _ in range(4)]
        assert after == [True] * 4
        assert "tls tickets" not in log + "".join(daemon.log)
    finally:
        daemon.stop()
