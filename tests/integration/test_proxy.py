"""PROXY protocol v1/v2 in front of the door: byte-exact headers, real sockets.

The address a PROXY header carries is the client's address for everything:
trust decisions (plaintext login), limits and logs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
import struct
from typing import Any

import pytest
import trio

from refd.config.loader import DaemonConfig, ListenerConfig
from refd.door import DoorState
from refd.runtime import Service, ServiceRef
from refd.server import serve
from tests.conftest import hits
from tests.procs import exchange, in_thread

CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    body = s.packed + d.packed + struct.pack("!HH", sport, dport)
    fam = 0x11 if s.version == 4 else 0x21  # AF_INET / AF_INET6, STREAM
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


@dataclasses.dataclass
class ProxyDoor:
    port: int
    door: DoorState


async def start(
    nursery: trio.Nursery,
    demo_config: DaemonConfig,
    demo_service: Service,
    proxy_networks: str,
    **limits: Any,
) -> ProxyDoor:
    config = dataclasses.replace(
        demo_config,
        listeners=(ListenerConfig("imap", "127.0.0.1", 0, "none", proxy_protocol=True),),
        proxy_networks=(ipaddress.ip_network(proxy_networks),),
    )
    service = dataclasses.replace(
        demo_service,
        policy=dataclasses.replace(demo_service.policy, auth_failure_delay_s=0.01),
        limits=dataclasses.replace(demo_service.limits, proxy_header_timeout_s=0.5, **limits),
    )
    door = DoorState()
    bound = await nursery.start(
        lambda task_status: serve(config, ServiceRef(service), door=door, task_status=task_status)
    )
    return ProxyDoor(bound[0].port, door)


GREETING_UNTRUSTED = (
    f"* OK [CAPABILITY {CAPS} LOGINDISABLED] localhost refd IMAP referral service ready.\r\n"
)
REFUSED = (
    b"a1 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.\r\n"
)


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 143\r\n", "203.0.113.9"),
        (b"PROXY TCP6 2001:db8::9 2001:db8::1 51234 143\r\n", "2001:db8::9"),
        (v2_header("203.0.113.9", "10.0.0.1", 51234, 143), "203.0.113.9"),
        (v2_header("2001:db8::9", "2001:db8::1", 51234, 143), "2001:db8::9"),
    ],
)
async def test_proxied_address_decides_trust(
    nursery: trio.Nursery,
    demo_config: DaemonConfig,
    demo_service: Service,
    caplog: pytest.LogCaptureFixture,
    header: bytes,
    source: str,
) -> None:
    pd = await start(nursery, demo_config, demo_service, "127.0.0.0/8")
    with caplog.at_level(logging.INFO, logger="refd.server"):
        got = await in_thread(exchange, pd.port, header + b"a1 LOGIN alice secret\r\n")
        await trio.sleep(0.1)
    # The real client (public address) is not trusted: plaintext login refused.
    assert got == GREETING_UNTRUSTED.encode() + REFUSED
    assert any(f"addr={source} " in r.message for r in caplog.records if "session end" in r.message)


async def test_proxied_trusted_client_gets_referral(
    nursery: trio.Nursery, demo_config: DaemonConfig, demo_service: Service
) -> None:
    pd = await start(nursery, demo_config, demo_service, "127.0.0.0/8")
    got = await in_thread(
        exchange, pd.port, b"PROXY TCP4 127.0.0.5 127.0.0.1 5000 143\r\na1 LOGIN alice secret\r\n"
    )
    assert got.endswith(
        b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
        b"Your mail is on mail1.example.org; connect there.\r\n"
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"a1 CAPABILITY\r\n",  # no header at all
        b"PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n",  # malformed v1
        V2_SIG + b"\x2f\x11\x00\x0c" + b"\x00" * 12,  # v2 with a bad command
        b"",  # nothing before the timeout
    ],
)
async def test_bad_or_missing_header_from_proxy_network_closes(
    nursery: trio.Nursery, demo_config: DaemonConfig, demo_service: Service, payload: bytes
) -> None:
    pd = await start(nursery, demo_config, demo_service, "127.0.0.0/8")
    assert await in_thread(exchange, pd.port, payload) == b""
    assert hits(pd.door, "proxy_header") == 1


async def test_header_from_other_networks_is_a_protocol_error(
    nursery: trio.Nursery, demo_config: DaemonConfig, demo_service: Service
) -> None:
    # 127.0.0.1 is not a proxy network here: it is a client, and a PROXY line
    # from a client is just a bad command, not an address to believe.
    pd = await start(nursery, demo_config, demo_service, "10.0.0.0/8")
    got = await in_thread(exchange, pd.port, b"PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\na1 NOOP\r\n")
    assert got.split(b"\r\n")[1:] == [
        b"PROXY BAD Unknown command TCP4.",
        b"a1 OK NOOP completed.",
        b"",
    ]


def hold_two(port: int, first: bytes, second: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as one:
        one.sendall(first)
        assert one.recv(65536).startswith(b"* OK")
        return exchange(port, second, until=b"\r\n")


async def test_connection_limit_per_proxied_address(
    nursery: trio.Nursery, demo_config: DaemonConfig, demo_service: Service
) -> None:
    pd = await start(
        nursery, demo_config, demo_service, "127.0.0.0/8", max_connections_per_address=1
    )
    a = b"PROXY TCP4 198.51.100.1 10.0.0.1 1000 143\r\n"
    b = b"PROXY TCP4 198.51.100.2 10.0.0.1 1000 143\r\n"
    # Another address is fine; the same address a second time is not.
    assert (await in_thread(hold_two, pd.port, a, b)).startswith(b"* OK")
    assert await in_thread(hold_two, pd.port, a, a) == (
        b"* BYE [UNAVAILABLE] Too many connections; try again later.\r\n"
    )
    assert hits(pd.door, "connections_per_address") == 1


async def test_a_connection_ended_while_its_header_is_awaited_leaves_no_descriptor(
    demo_config: DaemonConfig, demo_service: Service
) -> None:
    """Cancelled in the middle of a PROXY header (the door's nursery ends), the
    accepted connections' descriptors are closed all the same."""

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    clients = []
    async with trio.open_nursery() as nursery:
        pd = await start(nursery, demo_config, demo_service, "127.0.0.0/8")
        before = fds()
        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", pd.port))
            client.sendall(b"PROXY TCP4 203.0.113.9")  # and no more
            clients.append(client)
        await trio.sleep(0.1)  # accepted: the door waits for the rest of each header
        assert fds() == before + 10  # each client socket, and each accepted one
        nursery.cancel_scope.cancel()
    assert fds() == before + 5 - 1  # the clients' own; the listener is closed too
    for client in clients:
        client.close()
