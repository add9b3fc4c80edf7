"""What the door tells its auth source about the client, over real sockets.

The address, port and connection id of the client and the address and port
it connected to come from the socket, a PROXY header (from a proxy
network) or ``ID ("x-originating-ip" ... "x-originating-port" ...)`` from a
trusted peer; the ``imap`` source can pass them on to the backend
(``auth.imap.send_id``).  The auth source here records every request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import socket

import pytest
import trio

from refd.auth.base import AuthRequest
from refd.config.loader import DaemonConfig
from refd.door import DoorState
from refd.limits import Limits
from refd.runtime import Service
from refd.transport import Endpoints, SocketConnection, client_endpoints, local_end_of
from tests.auth.test_password_length import Recorder
from tests.integration.test_proxy import start, v2_header
from tests.procs import exchange, in_thread

REFERRAL = b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]"


def recorded(service: Service) -> tuple[Service, Recorder]:
    recorder = Recorder(service.auth)
    policy = dataclasses.replace(
        service.policy,
        trusted_networks=(
            *service.policy.trusted_networks,
            ipaddress.ip_network("203.0.113.0/24"),
            ipaddress.ip_network("2001:db8::/64"),
        ),
    )
    return dataclasses.replace(service, auth=recorder, policy=policy), recorder


def session_ids(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        m.group(1)
        for r in caplog.records
        if (m := re.match(r"session end conn=(\S+) ", r.getMessage()))
    ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 143\r\n",
            ("203.0.113.7", 51234, "192.0.2.1", 143),
        ),
        (
            v2_header("2001:db8::7", "2001:db8::1", 51234, 993),
            ("2001:db8::7", 51234, "2001:db8::1", 993),
        ),
    ],
)
async def test_proxy_header_names_both_ends(
    nursery: trio.Nursery,
    demo_config: DaemonConfig,
    demo_service: Service,
    caplog: pytest.LogCaptureFixture,
    header: bytes,
    expected: tuple[str, int, str, int],
) -> None:
    service, recorder = recorded(demo_service)
    pd = await start(nursery, demo_config, service, "127.0.0.0/8")
    with caplog.at_level(logging.INFO):
        got = await in_thread(exchange, pd.port, header + b"a1 LOGIN alice secret\r\n")
        await trio.sleep(0.1)
    assert REFERRAL in got
    (request,) = recorder.requests
    address, port, local, local_port = expected
    assert request == AuthRequest(
        "alice",
        "secret",
        client_address=address,
        client_port=port,
        local_address=local,
        local_port=local_port,
        session_id=session_ids(caplog)[0],
    )


async def test_socket_endpoints_without_proxy(
    nursery: trio.Nursery, demo_config: DaemonConfig, demo_service: Service
) -> None:
    service, recorder = recorded(demo_service)
    pd = await start(nursery, demo_config, service, "10.0.0.0/8")  # not us: no header read

    def login() -> int:
        with socket.create_connection(("127.0.0.1", pd.port), timeout=10) as sock:
            sock.sendall(b"a1 LOGIN alice secret\r\n")
            got = b""
            while b"a1 " not in got:
                got += sock.recv(65536)
            assert REFERRAL in got
            return int(sock.getsockname()[1])

    client_port = await in_thread(login)
    (request,) = recorder.requests
    assert (request.client_address, request.client_port) == ("127.0.0.1", client_port)
    assert (request.local_address, request.local_port) == ("127.0.0.1", pd.port)


def test_a_listener_bound_to_one_address_is_the_local_end_of_its_connections() -> None:
    # The accept loop takes both ends without asking each socket: the peer
    # from the accept, the local end from a listener bound to one address.
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as sock:
            assert local_end_of(sock) is None  # unbound: 0.0.0.0 or ::, a wildcard
            sock.bind((host, 0))
            assert local_end_of(sock) == (host, sock.getsockname()[1])


async def test_without_a_fixed_local_end_the_socket_is_asked() -> None:
    # A listener bound to a wildcard: each connection's own address is asked.
    with trio.socket.socket() as listener, trio.socket.socket() as client:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        await client.connect(("127.0.0.1", port))
        accepted, _ = await listener.accept()
        stream = SocketConnection(accepted.detach(), socket.AF_INET)
        opened = await client_endpoints(
            stream,
            ("192.0.2.9", 4242),  # the peer as the accept loop hands it over
            None,
            proxy_protocol=False,
            proxy_networks=(),
            limits=Limits(),
            door=DoorState(),
            conn_id="t-1",
        )
        await stream.aclose()
    assert opened == (
        stream,
        Endpoints("192.0.2.9", 4242, "127.0.0.1", port, "192.0.2.9"),
    )


@pytest.mark.parametrize(
    ("params", "address", "port"),
    [
        (b'"x-originating-ip" "203.0.113.7" "x-originating-port" "51234"', "203.0.113.7", 51234),
        # The peer's own port is not the client's: unknown unless named.
        (b'"x-originating-ip" "203.0.113.7"', "203.0.113.7", None),
        (b'"x-originating-ip" "203.0.113.7" "x-originating-port" "65536"', "203.0.113.7", None),
    ],
)
async def test_trusted_peer_names_the_client_with_id(
    nursery: trio.Nursery,
    demo_config: DaemonConfig,
    demo_service: Service,
    params: bytes,
    address: str,
    port: int | None,
) -> None:
    service, recorder = recorded(demo_service)
    pd = await start(nursery, demo_config, service, "10.0.0.0/8")
    payload = b"i1 ID (" + params + b")\r\na1 LOGIN alice secret\r\n"
    assert REFERRAL in await in_thread(exchange, pd.port, payload)
    (request,) = recorder.requests
    assert (request.client_address, request.client_port) == (address, port)
    assert request.local_address == "127.0.0.1"
