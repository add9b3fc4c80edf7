"""Every limit, hit over a real socket: its log line, its count, and what the client sees.

Each case starts the daemon in-process (``Daemon.run``, as in
``tests/integration/test_operations.py``, whose helpers are reused) with one
listener and small limits, plays a client that runs into one limit, and
checks three things: the bytes the client got (a ``* BYE`` giving the reason
wherever the client can still read it, nothing where it cannot), the
``limit hit`` log lines exactly (name and reason; only the connection id
varies), and ``refd_limit_hits_total`` scraped from the real ``/metrics``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trustme

from tests.integration.test_operations import scrape, start, value, write_config
from tests.robustness.helpers import LineClient

LIMIT_HIT = re.compile(r"limit hit conn=[0-9a-f]+-[0-9a-f]+ addr=(\S+) limit=(\S+) reason=(.*)")
AUTH_FAILED = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
LONG_PASSWORD = "p" * 4096

Client = Callable[[int], Awaitable[bytes]]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    client: Client
    #: everything the client received after the greeting, up to EOF
    sees: bytes
    #: the limit hit log lines: (limit, reason), address 127.0.0.1
    logged: list[tuple[str, str]]
    #: refd_limit_hits_total for the case's limit
    count: int = 1
    limits: dict[str, object] = dataclasses.field(default_factory=dict)
    listener: str = "none"  # tls mode, or "proxy"


async def greeted(port: int) -> LineClient:
    client = await LineClient.connect(port)
    assert (await client.line()).startswith(b"* OK ")
    return client


def scripted(*chunks: bytes, pause_s: float = 0.0) -> Client:
    """Send each chunk (pausing between them); return all the door said until it closed."""

    async def run(port: int) -> bytes:
        client = await greeted(port)
        for chunk in chunks:
            await client.send(chunk)
            await trio.sleep(pause_s)
        try:
            return await client.rest()
        finally:
            await client.aclose()

    return run


async def silent(port: int) -> bytes:
    """Connect and say nothing (no PROXY header, no TLS ClientHello)."""
    client = await LineClient.connect(port)
    try:
        return await client.rest()
    finally:
        await client.aclose()


def unprompted(data: bytes) -> Client:
    """Send ``data`` at once, before any greeting; return all the door said until it closed."""

    async def run(port: int) -> bytes:
        client = await LineClient.connect(port)
        try:
            await client.send(data)
            return await client.rest()
        finally:
            await client.aclose()

    return run


async def busy_until_cut(port: int) -> bytes:
    """NOOP every 0.2 s, never logging in, until the login deadline."""
    client = await greeted(port)
    with trio.fail_after(10):
        while True:
            with contextlib.suppress(trio.BrokenResourceError):
                await client.send(b"n NOOP\r\n")
            line = await client.line()
            if line != b"n OK NOOP completed.\r\n":
                got = line + await client.rest()
                break
            await trio.sleep(0.2)
    await client.aclose()
    return got


async def starttls_then_silent(port: int) -> bytes:
    client = await greeted(port)
    await client.send(b"s STARTTLS\r\n")
    try:
        return await client.rest()
    finally:
        await client.aclose()


async def never_reads(port: int) -> bytes:
    """Pipeline CAPABILITY commands (10 times their size in answers), reading nothing."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    burst = b"c CAPABILITY\r\n" * 4096  # 56 KiB of commands, ~0.5 MiB of answers
    with trio.fail_after(20):
        for _ in range(512):  # at most 28 MiB; the door gives up long before
            try:
                await stream.send_all(burst)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
        else:
            raise AssertionError("the door kept taking commands from a client that never reads")
    await trio.aclose_forcefully(stream)
    return b""


def login_literal(password: str) -> Client:
    """LOGIN alice with the password as a synchronizing literal."""

    async def run(port: int) -> bytes:
        client = await greeted(port)
        data = password.encode()
        await client.send(b"a1 LOGIN alice {%d}\r\n" % len(data))
        assert await client.line() == b"+ Ready for literal data\r\n"
        await client.send(data + b"\r\n")
        got = await client.line()
        await client.send(b"z LOGOUT\r\n")
        got += await client.rest()
        await client.aclose()
        return got

    return run


def plain(password: str, *, initial: bool) -> Client:
    """AUTHENTICATE PLAIN as alice, with SASL-IR or after the continuation."""
    message = base64.b64encode(b"\0alice\0" + password.encode())

    async def run(port: int) -> bytes:
        client = await greeted(port)
        if initial:
            await client.send(b"a1 AUTHENTICATE PLAIN " + message + b"\r\n")
        else:
            await client.send(b"a1 AUTHENTICATE PLAIN\r\n")
            assert await client.line() == b"+ \r\n"
            await client.send(message + b"\r\n")
        got = await client.line()
        await client.send(b"z LOGOUT\r\n")
        got += await client.rest()
        await client.aclose()
        return got

    return run


async def second_connection(port: int) -> bytes:
    first = await greeted(port)
    try:
        second = await LineClient.connect(port)
        got = await second.rest()
        await second.aclose()
    finally:
        await first.aclose()
    return b"(greeting) " + got


BYE_LOGOUT = b"* BYE Logging out.\r\nz OK LOGOUT completed.\r\n"
PASSWORD_REASON = "a password of 4096 bytes; limits.max_password_bytes is 511"

CASES = [
    Case(
        "idle_timeout",
        scripted(),
        b"* BYE Autologout; idle for too long.\r\n",
        [("idle_timeout", "no input for 0.5s (limits.preauth_idle_timeout_s)")],
        limits={"preauth_idle_timeout_s": 0.5},
    ),
    Case(
        "login_timeout",
        busy_until_cut,
        b"* BYE Login timeout; log in sooner.\r\n",
        [("login_timeout", "not logged in 0.8s after connecting (limits.login_timeout_s)")],
        limits={"login_timeout_s": 0.8},
    ),
    Case(
        "command_timeout",
        scripted(b"a1 NOO"),
        b"* BYE Command not completed in time.\r\n",
        [
            (
                "command_timeout",
                "a command not complete 0.5s after its first byte (limits.command_timeout_s)",
            )
        ],
        limits={"command_timeout_s": 0.5},
    ),
    Case(
        "bad_commands",
        scripted(b"a1 FROB\r\na2 FROB\r\n"),
        b"a1 BAD Unknown command FROB.\r\na2 BAD Unknown command FROB.\r\n"
        b"* BYE Too many invalid commands.\r\n",
        [("bad_commands", "Too many invalid commands.")],
        limits={"bad_commands": 2},
    ),
    Case(
        # Three hits on one connection: counted three times, logged once.
        "line_length",
        scripted(*[b"a%d NOOP %s\r\n" % (i, b"x" * 600) for i in (1, 2, 3)], b"z LOGOUT\r\n"),
        b"a1 BAD [TOOBIG] Command line too long.\r\na2 BAD [TOOBIG] Command line too long.\r\n"
        b"a3 BAD [TOOBIG] Command line too long.\r\n" + BYE_LOGOUT,
        [("line_length", "Command line too long.")],
        count=3,
        limits={"max_line_bytes": 512, "bad_commands": 10},
    ),
    Case(
        "literal_size",
        scripted(b"a1 LOGIN alice {200}\r\n", b"z LOGOUT\r\n"),
        b"a1 NO [TOOBIG] Literal of 200 octets is over the limit.\r\n" + BYE_LOGOUT,
        [("literal_size", "a literal of 200 octets; limits.max_literal_bytes is 100")],
        limits={"max_literal_bytes": 100},
    ),
    Case(
        "command_size",
        scripted(b"a1 NOOP " + b"x" * 1100 + b"\r\n", b"z LOGOUT\r\n"),
        b"a1 BAD [TOOBIG] Command too long.\r\n" + BYE_LOGOUT,
        [("command_size", "Command too long.")],
        limits={"max_command_bytes": 1024},
    ),
    Case(
        # RFC 7888 §4: the stream after an over-large {n+} cannot be trusted.
        "literal_size_non_synchronizing",
        scripted(b"a1 LOGIN alice {5000+}\r\n"),
        b"a1 BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-).\r\n"
        b"* BYE Cannot resynchronize after a refused non-synchronizing literal.\r\n",
        # The reason is the limit's own, not the BYE that every lost stream shares.
        [("literal_size", "Non-synchronizing literal over 4096 octets (LITERAL-).")],
    ),
    Case(
        # The same BYE after an overlong line that announces {n+}: logged as
        # line_length with its own reason.
        "line_length_non_synchronizing",
        scripted(b"a1 NOOP " + b"x" * 600 + b" {5+}\r\n"),
        b"a1 BAD [TOOBIG] Command line too long.\r\n"
        b"* BYE Cannot resynchronize after a refused non-synchronizing literal.\r\n",
        [("line_length", "Command line too long.")],
        limits={"max_line_bytes": 512},
    ),
    Case(
        # The last invalid command a client may send is itself over a limit:
        # both limits are logged and counted, each with its own reason.
        "bad_commands_ended_by_a_limit",
        scripted(b"a1 FROB\r\n", b"a2 NOOP " + b"x" * 600 + b"\r\n"),
        b"a1 BAD Unknown command FROB.\r\na2 BAD [TOOBIG] Command line too long.\r\n"
        b"* BYE Too many invalid commands.\r\n",
        [("line_length", "Command line too long."), ("bad_commands", "Too many invalid commands.")],
        limits={"max_line_bytes": 512, "bad_commands": 2},
    ),
    Case(
        "connections_total",
        second_connection,
        b"(greeting) * BYE [UNAVAILABLE] Too many connections; try again later.\r\n",
        [("connections_total", "1 open; limits.max_connections is 1")],
        limits={"max_connections": 1},
    ),
    Case(
        "connections_per_address",
        second_connection,
        b"(greeting) * BYE [UNAVAILABLE] Too many connections; try again later.\r\n",
        [
            (
                "connections_per_address",
                "1 open from this address; limits.max_connections_per_address is 1",
            )
        ],
        limits={"max_connections_per_address": 1},
    ),
    Case(
        # Finding 5: dropped without a log line or a count before.
        "write_timeout",
        never_reads,
        b"",
        [
            (
                "write_timeout",
                "the client read none of an answer within 0.5s (limits.write_timeout_s)",
            )
        ],
        limits={"write_timeout_s": 0.5},
    ),
    Case(
        "tls_handshake_timeout",
        silent,
        b"",
        [
            (
                "tls_handshake_timeout",
                "TLS handshake not done within 0.5s (limits.tls_handshake_timeout_s)",
            )
        ],
        limits={"tls_handshake_timeout_s": 0.5},
        listener="implicit",
    ),
    Case(
        "tls_handshake_timeout_after_starttls",
        starttls_then_silent,
        b"s OK Begin TLS negotiation now.\r\n",
        [
            (
                "tls_handshake_timeout",
                "TLS handshake not done within 0.5s (limits.tls_handshake_timeout_s)",
            )
        ],
        limits={"tls_handshake_timeout_s": 0.5},
        listener="starttls",
    ),
    Case(
        # Finding 5: the reason was empty (trio.TooSlowError has no text).
        "proxy_header_timeout",
        silent,
        b"",
        [
            (
                "proxy_header",
                "no complete PROXY header within 0.5s, 0 octets received "
                "(limits.proxy_header_timeout_s)",
            )
        ],
        limits={"proxy_header_timeout_s": 0.5},
        listener="proxy",
    ),
    Case(
        # A client (or a balancer without send-proxy) that speaks IMAP at once:
        # what it sent is described, never copied into the log (a password).
        "proxy_header_missing",
        unprompted(b"a1 LOGIN bob s3cret-pass\r\n"),
        b"",
        [
            (
                "proxy_header",
                "not a PROXY header: the connection starts with 26 octets of "
                "something else (first octet 0x61)",
            )
        ],
        listener="proxy",
    ),
    Case(
        "proxy_header_missing_tls",
        unprompted(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        b"",
        [
            (
                "proxy_header",
                "not a PROXY header: the connection starts with 11 octets of a TLS handshake",
            )
        ],
        listener="proxy",
    ),
    Case(
        "password_length_login",
        login_literal(LONG_PASSWORD),
        AUTH_FAILED + BYE_LOGOUT,
        [("password_length", PASSWORD_REASON)],
    ),
    Case(
        "password_length_plain_initial_response",
        plain(LONG_PASSWORD, initial=True),
        AUTH_FAILED + BYE_LOGOUT,
        [("password_length", PASSWORD_REASON)],
    ),
    Case(
        "password_length_plain_continuation",
        plain(LONG_PASSWORD, initial=False),
        AUTH_FAILED + BYE_LOGOUT,
        [("password_length", PASSWORD_REASON)],
    ),
]


def configure(tmp: Path, c: Case) -> Path:
    extra = "limits:\n" + "".join(f"  {k}: {v}\n" for k, v in c.limits.items())
    tls = c.listener in ("implicit", "starttls")
    if tls:
        trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
            str(tmp / "server.pem")
        )
        extra += "tls:\n  cert: server.pem\n  key: server.pem\n"
    if c.listener == "proxy":
        extra += "proxy_networks: [127.0.0.0/8]\n"
    cfg = write_config(tmp, extra if c.limits else extra.removeprefix("limits:\n"))
    mode = "none" if c.listener == "proxy" else c.listener
    listener = (
        f"listeners:\n  - name: imap\n    address: 127.0.0.1\n    port: 0\n    tls: {mode}\n"
        f"    proxy_protocol: {'true' if c.listener == 'proxy' else 'false'}\n"
    )
    text = cfg.read_text()
    cut, end = text.index("listeners:"), text.index("metrics:")
    cfg.write_text(text[:cut] + listener + text[end:])
    return cfg


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
async def test_limit_is_logged_counted_and_explained(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture, c: Case
) -> None:
    caplog.set_level(logging.INFO)
    run = await start(nursery, configure(tmp_path, c))
    with trio.fail_after(30):
        assert await c.client(run.port) == c.sees
        await trio.sleep(0.2)  # let the session's close path run
    lines = [m.groups() for r in caplog.records if (m := LIMIT_HIT.fullmatch(r.getMessage()))]
    assert lines == [("127.0.0.1", *line) for line in c.logged]
    m = await scrape(run.metrics_port)
    limit = c.logged[0][0]
    assert value(m, "refd_limit_hits_total", limit=limit) == c.count
    for other, _ in c.logged[1:]:
        assert value(m, "refd_limit_hits_total", limit=other) == 1, other
    if limit == "password_length":
        # Answered as a wrong password: a failure for the source's metric.
        assert value(m, "refd_auth_total", source="passwd-file", result="failure") == 1
        assert not [r for r in caplog.records if LONG_PASSWORD[:64] in r.getMessage()]
    run.daemon.door.stop()
