"""``refd probe --autoconfig``: the setup document against the referral, for real.

A whole door in-process (`start_door`) with an IMAP and an autodiscovery
listener, real Dovecot backends behind it; the probe logs in, follows the
referral, then fetches the autoconfig document from the door's HTTP
listener with ``Host: autoconfig.example.org`` and compares.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.procs import free_port

from .conftest import USERS, DovecotFactory
from .test_probe import Door, probe, routing, start_door, write_door

pytestmark = pytest.mark.interop

DOMAINS = """
domains:
  example.org:
    login_name: local_part
    server: home
    submission: smtp.example.org:587
"""
HTTP = """autodiscovery:
  listeners:
    - {name: http, address: 127.0.0.1, port: 0, tls: none}
"""


async def door_with_setup(
    nursery: trio.Nursery, directory: Path, servers: dict[str, tuple[str, int]], users: str
) -> tuple[Door, str]:
    config = write_door(directory, routing(servers, users, DOMAINS))
    config.write_text(config.read_text() + HTTP)
    door = await start_door(nursery, config)
    return door, f"http://127.0.0.1:{door.daemon.http_bound[0].port}"


async def test_the_document_names_the_referral_server(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    home = dovecot_factory()
    door, web = await door_with_setup(
        nursery, tmp_path / "door", {"home": home.address}, "  - user: alice\n    server: home\n"
    )
    where = f"127.0.0.1:{door.port}"
    got = await probe(
        tmp_path, where, "alice", USERS["alice"], "--autoconfig", "alice@example.org", "--web", web
    )
    assert got.code == 0, got.result
    assert got.doc["setup"] == {
        "address": "alice@example.org",
        "url": f"{web}:80/mail/config-v1.1.xml?emailaddress=alice@example.org".replace(":80/", "/")
        + " (Host: autoconfig.example.org)",
        "servers": [
            {
                "element": "incomingServer",
                "type": "imap",
                "hostname": "127.0.0.1",
                "port": home.port,
                "socket_type": "STARTTLS",
                "username": "%EMAILLOCALPART%",
            },
            {
                "element": "outgoingServer",
                "type": "smtp",
                "hostname": "smtp.example.org",
                "port": 587,
                "socket_type": "STARTTLS",
                "username": "%EMAILLOCALPART%",
            },
        ],
        "checked": True,
        "agrees": True,
    }
    human = await probe(
        tmp_path,
        where,
        "alice",
        USERS["alice"],
        "--autoconfig",
        "alice@example.org",
        "--web",
        web,
        human=True,
    )
    assert human.code == 0
    assert (
        f"setup: autoconfig names 127.0.0.1:{home.port} STARTTLS, login alice: the referral's "
        f"server (imap://alice;AUTH=*@127.0.0.1:{home.port}/)\n"
    ) in human.out
    # The door logged the fetch as a client's.
    assert (
        door.daemon.metrics.registry.get_sample_value(
            "refd_autodiscovery_requests_total", {"protocol": "autoconfig", "result": "ok"}
        )
        == 2
    )


async def test_a_document_naming_another_server_is_exit_9(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    home, other = dovecot_factory(), dovecot_factory()
    door, web = await door_with_setup(
        nursery, tmp_path / "door", {"home": home.address}, "  - user: alice\n    server: home\n"
    )
    # A second door (a stale copy of the table) serves the documents.
    _, stale = await door_with_setup(
        nursery, tmp_path / "stale", {"home": other.address}, "  - user: alice\n    server: home\n"
    )
    got = await probe(
        tmp_path,
        f"127.0.0.1:{door.port}",
        "alice",
        USERS["alice"],
        "--autoconfig",
        "alice@example.org",
        "--web",
        stale,
    )
    assert got.code == 9
    assert got.result["status"] == "setup-mismatch"
    assert got.result["message"] == (
        f"autoconfig names 127.0.0.1:{other.port} STARTTLS, but port {other.port}, the referral "
        f"{home.port} (IMAP: SELECT INBOX at 127.0.0.1:{home.port} as alice: EXISTS 0, "
        f"UIDVALIDITY {got.result['data']['uidvalidity']})"
    )
    # Another user's address: the document's login name is not the referral's.
    carol = await probe(
        tmp_path,
        f"127.0.0.1:{door.port}",
        "alice",
        USERS["alice"],
        "--autoconfig",
        "carol@example.org",
        "--web",
        web,
    )
    assert carol.code == 9
    assert carol.result["message"].startswith(
        f"autoconfig names 127.0.0.1:{home.port} STARTTLS, but login name carol, the referral alice"
    )


async def test_no_document_is_exit_10_and_a_failed_login_is_not_compared(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    home = dovecot_factory()
    door, web = await door_with_setup(
        nursery, tmp_path / "door", {"home": home.address}, "  - user: alice\n    server: home\n"
    )
    where = f"127.0.0.1:{door.port}"
    closed = f"http://127.0.0.1:{free_port()}"
    got = await probe(
        tmp_path,
        where,
        "alice",
        USERS["alice"],
        "--autoconfig",
        "alice@example.org",
        "--web",
        closed,
    )
    assert got.code == 10
    assert got.result["message"].startswith(f"autoconfig: GET {closed}/mail/config-v1.1.xml")
    assert "Connection refused" in got.result["message"]
    # A domain the door does not serve: its Host is misdirected (421), exit 10.
    missing = await probe(
        tmp_path, where, "alice", USERS["alice"], "--autoconfig", "alice@other.test", "--web", web
    )
    assert missing.code == 10
    assert "HTTP 421 Misdirected Request" in missing.result["message"]
    # A wrong password: nothing to compare with, the IMAP verdict stands.
    wrong = await probe(
        tmp_path, where, "alice", "wrong", "--autoconfig", "alice@example.org", "--web", web
    )
    assert wrong.code == 3
    assert wrong.doc["setup"] == {"address": "alice@example.org", "checked": False}
