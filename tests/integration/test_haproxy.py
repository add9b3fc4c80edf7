"""A real haproxy in front of the door, speaking PROXY v1 and v2."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket

import pytest
import trio

from refd.config.loader import DaemonConfig, ListenerConfig
from refd.door import DoorState
from refd.runtime import Service, ServiceRef
from refd.server import serve
from tests.haproxy_harness import haproxy_in_front
from tests.procs import in_thread

pytestmark = pytest.mark.interop


def login(port: int) -> list[bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as f,
    ):
        out = [f.readline()]
        sock.sendall(b"a1 LOGIN alice secret\r\n")
        out.append(f.readline())
        return out


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_door_behind_haproxy(
    nursery: trio.Nursery,
    demo_config: DaemonConfig,
    demo_service: Service,
    caplog: pytest.LogCaptureFixture,
    version: str,
) -> None:
    config = dataclasses.replace(
        demo_config,
        listeners=(ListenerConfig("imap", "127.0.0.1", 0, "none", proxy_protocol=True),),
        proxy_networks=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    service = dataclasses.replace(
        demo_service,
        limits=dataclasses.replace(demo_service.limits, proxy_header_timeout_s=1.0),
    )
    door = DoorState()
    bound = await nursery.start(
        lambda task_status: serve(config, ServiceRef(service), door=door, task_status=task_status)
    )
    port = bound[0].port
    with (
        caplog.at_level(logging.INFO),
        haproxy_in_front(port, send_proxy=version) as front,
    ):
        greeting, answer = await in_thread(login, front)
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert answer.startswith(b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]")
    assert not [r for r in caplog.records if "limit=proxy_header" in r.getMessage()]
    # Straight to the door from a proxy network without a header: closed.
    assert await in_thread(direct, port) == b""
    door.stop()


def direct(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"a1 CAPABILITY\r\n")
        return sock.recv(100)
