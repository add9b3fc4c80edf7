"""Real TLS: implicit TLS and STARTTLS listeners, certificates from trustme.

Clients: imapclient (with an ``ssl_context`` trusting the test CA) and raw
``ssl`` sockets for the byte-level checks, such as the STARTTLS command
injection test.  Loopback is *not* trusted here, so plaintext logins are
refused as they would be from the internet.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from pathlib import Path
from typing import Any

import imapclient
import pytest
import trio
import trustme
from imapclient.exceptions import IMAPClientError, LoginError

from refd.config.loader import DaemonConfig, ListenerConfig, make_tls_context
from refd.door import DoorState
from refd.runtime import Service, ServiceRef
from refd.server import serve
from tests.procs import in_thread

ALICE = (
    "[REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
    "Your mail is on mail1.example.org; connect there."
)
CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"


@dataclasses.dataclass
class TlsDoor:
    starttls_port: int
    implicit_port: int
    client_context: ssl.SSLContext
    door: DoorState
    ref: ServiceRef


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_door(
    nursery: trio.Nursery,
    tmp_path: Path,
    ca: trustme.CA,
    demo_config: DaemonConfig,
    demo_service: Service,
) -> TlsDoor:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    server_ctx = make_tls_context(str(tmp_path / "server.pem"), str(tmp_path / "server.pem"))
    config = dataclasses.replace(
        demo_config,
        listeners=(
            ListenerConfig("imap", "127.0.0.1", 0, "starttls"),
            ListenerConfig("imaps", "127.0.0.1", 0, "implicit"),
        ),
    )
    policy = dataclasses.replace(
        demo_service.policy, auth_failure_delay_s=0.01, trusted_networks=()
    )
    limits = dataclasses.replace(demo_service.limits, tls_handshake_timeout_s=0.5)
    service = dataclasses.replace(
        demo_service, policy=policy, limits=limits, tls_context=server_ctx
    )
    door = DoorState()
    ref = ServiceRef(service)
    bound = await nursery.start(
        lambda task_status: serve(config, ref, door=door, task_status=task_status)
    )
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return TlsDoor(bound[0].port, bound[1].port, client_ctx, door, ref)


def read_until(sock: socket.socket | ssl.SSLSocket, needle: bytes) -> bytes:
    got = b""
    while needle not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def plaintext_refused(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        greeting = read_until(sock, b"\r\n")
        sock.sendall(b"a1 LOGIN alice secret\r\n")
        return greeting + read_until(sock, b"a1 ")


async def test_plaintext_login_refused_before_starttls(tls_door: TlsDoor) -> None:
    got = await in_thread(plaintext_refused, tls_door.starttls_port)
    assert (
        got
        == (
            f"* OK [CAPABILITY {CAPS} STARTTLS LOGINDISABLED] localhost refd IMAP referral "
            "service ready.\r\n"
            "a1 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port "
            "first.\r\n"
        ).encode()
    )


def imapclient_implicit(port: int, ctx: ssl.SSLContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with imapclient.IMAPClient("localhost", port=port, ssl=True, ssl_context=ctx) as client:
        out["caps"] = client.capabilities()
        try:
            client.login("alice", "secret")
        except LoginError as exc:
            out["alice"] = str(exc)
        out["bob"] = client.login("bob", "secret")
    return out


async def test_implicit_tls_login_referral(tls_door: TlsDoor) -> None:
    out = await in_thread(imapclient_implicit, tls_door.implicit_port, tls_door.client_context)
    assert b"STARTTLS" not in out["caps"] and b"LOGINDISABLED" not in out["caps"]
    assert out["alice"] == repr(ALICE.encode())
    assert out["bob"].startswith(b"[REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/]")


def implicit_session_bytes(port: int, ctx: ssl.SSLContext) -> tuple[str, bytes, bytes]:
    """A whole session on raw TLS: the version, every decrypted byte, and the end.

    ``suppress_ragged_eofs=False``: the end is ``b""`` only after the
    server's close_notify; a TCP close without one raises SSLEOFError.
    """
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls,
    ):
        got = read_until(tls, b"\r\n")
        tls.sendall(b"a1 LOGIN alice secret\r\n")
        got += read_until(tls, b"connect there.\r\n")
        tls.sendall(b"a2 LOGOUT\r\n")
        got += read_until(tls, b"a2 OK LOGOUT completed.\r\n")
        return str(tls.version()), got, tls.recv(100)


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_implicit_tls_session_bytes_and_close_notify(
    tls_door: TlsDoor, version: ssl.TLSVersion
) -> None:
    """The same bytes over TLS 1.2 (whose last handshake flight is the
    server's) and TLS 1.3 (whose session tickets go with the greeting),
    ended with a close_notify."""
    tls_door.client_context.minimum_version = version
    tls_door.client_context.maximum_version = version
    got_version, got, end = await in_thread(
        implicit_session_bytes, tls_door.implicit_port, tls_door.client_context
    )
    assert got_version == version.name.replace("v1_", "v1.")
    assert (
        got
        == (
            f"* OK [CAPABILITY {CAPS}] localhost refd IMAP referral service ready.\r\n"
            f"a1 NO {ALICE}\r\n"
            "* BYE Logging out.\r\n"
            "a2 OK LOGOUT completed.\r\n"
        ).encode()
    )
    assert end == b""


def imapclient_starttls(port: int, ctx: ssl.SSLContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with imapclient.IMAPClient("localhost", port=port, ssl=False) as client:
        out["before"] = client.capabilities()
        client.starttls(ctx)
        out["after"] = client.capabilities()
        try:
            client.login("alice", "secret")
        except LoginError as exc:
            out["alice"] = str(exc)
        try:
            client.starttls(ctx)
        except IMAPClientError as exc:
            out["again"] = str(exc)
    return out


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_starttls_then_login_referral(tls_door: TlsDoor, version: ssl.TLSVersion) -> None:
    # TLS 1.2: the handshake's last flight is the server's, and after
    # STARTTLS the client speaks first: it must go out at once.
    tls_door.client_context.minimum_version = version
    tls_door.client_context.maximum_version = version
    out = await in_thread(imapclient_starttls, tls_door.starttls_port, tls_door.client_context)
    assert b"STARTTLS" in out["before"] and b"LOGINDISABLED" in out["before"]
    # RFC 9051 §6.2.1: the capability list after TLS differs.
    assert b"STARTTLS" not in out["after"] and b"LOGINDISABLED" not in out["after"]
    assert out["alice"] == repr(ALICE.encode())
    assert "TLS" in out["again"]


def starttls_injection(port: int, ctx: ssl.SSLContext) -> list[bytes]:
    """CVE-2011-0411 style: commands pipelined after STARTTLS must not run."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        read_until(raw, b"\r\n")
        raw.sendall(b"a STARTTLS\r\nb LOGIN alice secret\r\nc LOGOUT\r\n")
        answer = read_until(raw, b"a OK")
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"d NOOP\r\n")
            after = read_until(tls, b"d OK")
            tls.sendall(b"e LOGOUT\r\n")
            after += read_until(tls, b"e OK")
        return [answer, after]


async def test_starttls_injection_is_discarded(tls_door: TlsDoor) -> None:
    answer, after = await in_thread(
        starttls_injection, tls_door.starttls_port, tls_door.client_context
    )
    assert answer == b"a OK Begin TLS negotiation now.\r\n"
    # Nothing for "b" or "c": the first answer over TLS is to "d".
    assert after == (b"d OK NOOP completed.\r\n* BYE Logging out.\r\ne OK LOGOUT completed.\r\n")


def tls_garbage(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"a1 LOGIN alice secret\r\n" + bytes(range(256)) * 4)
        return read_until(sock, b"never")


def silent_client(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return read_until(sock, b"never")


async def test_tls_garbage_and_silence_are_dropped(tls_door: TlsDoor) -> None:
    # Garbage on the implicit-TLS port: no IMAP answer in clear, just a close.
    got = await in_thread(tls_garbage, tls_door.implicit_port)
    assert b"REFERRAL" not in got and b"OK" not in got
    # A client that never starts its handshake is dropped at the timeout.
    assert await in_thread(silent_client, tls_door.implicit_port) == b""
    assert (
        tls_door.door.metrics.registry.get_sample_value(
            "refd_tls_handshake_failures_total", {"listener": "imaps"}
        )
        == 2
    )
    # And the door still serves TLS clients.
    out = await in_thread(imapclient_implicit, tls_door.implicit_port, tls_door.client_context)
    assert out["alice"] == repr(ALICE.encode())


def idle_tls_client(port: int, ctx: ssl.SSLContext) -> tuple[bytes, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls,
    ):
        greeting = read_until(tls, b"\r\n")
        return greeting, read_until(tls, b"\r\n") + tls.recv(100)


async def test_idle_timeout_over_tls_says_bye(tls_door: TlsDoor) -> None:
    """A read deadline over TLS still leaves the stream able to say why it ends."""
    limits = dataclasses.replace(tls_door.ref.current.limits, preauth_idle_timeout_s=0.3)
    tls_door.ref.current = dataclasses.replace(tls_door.ref.current, limits=limits)
    greeting, rest = await in_thread(
        idle_tls_client, tls_door.implicit_port, tls_door.client_context
    )
    assert greeting.startswith(b"* OK [CAPABILITY ")
    assert rest == b"* BYE Autologout; idle for too long.\r\n"  # then a close_notify
