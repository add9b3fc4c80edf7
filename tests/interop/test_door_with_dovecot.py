"""The whole door, with the ``imap`` auth source checking passwords on Dovecot.

refd runs in-process on 127.0.0.1:0 with a routing table whose home server
is a private Dovecot; clients are plain sockets.  What the client sees is
checked byte for byte: the referral only after Dovecot accepted the
password, the same failure as a wrong password for an unknown user, and
``NO [UNAVAILABLE]`` (never a referral, never a hang) with the backend gone.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
from pathlib import Path

import pytest
import trio

from refd.config.loader import DEMO_CONFIG, load_config, load_service
from refd.daemon import Daemon
from tests.procs import exchange, in_thread

from .conftest import DovecotFactory

pytestmark = pytest.mark.interop


def write_door(tmp: Path, host: str, port: int, login: str = "refer") -> Path:
    (tmp / "routing.yaml").write_text(
        "version: 1\n"
        "servers:\n"
        f"  home: {{host: {host}, port: {port}}}\n"
        "users:\n"
        "  - default: true\n"
        "    server: home\n"
        f"    login: {login}\n"
    )
    text = DEMO_CONFIG.read_text().replace("port: 1143", "port: 0").replace("port: 9143", "port: 0")
    text = text.replace("port: 1180", "port: 0")
    text = text.replace(
        "  source: passwd-file\n  passwd_file: users.passwd\n",
        "  source: imap\n  imap:\n    connect_timeout_s: 1\n    response_timeout_s: 2\n",
    )
    text = text.replace("failure_delay_s: 2", "failure_delay_s: 0.01")
    (tmp / "refd.yaml").write_text(text)
    shutil.copy(DEMO_CONFIG.parent / "users.passwd", tmp / "users.passwd")
    return tmp / "refd.yaml"


def login(port: int, user: str, password: str) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as sock,
        sock.makefile("rb") as f,
    ):
        f.readline()
        sock.sendall(f'a1 LOGIN {user} "{password}"\r\n'.encode())
        return f.readline()


async def test_door_checks_passwords_on_dovecot(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    backend = dovecot_factory(users={"alice": "alice-password"})
    host, port = backend.address
    config = load_config(write_door(tmp_path, host, port))
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    door = bound[0][0].port
    where = f"imap://alice;AUTH=*@{host}:{port}/"

    assert await in_thread(login, door, "alice", "alice-password") == (
        f"a1 NO [REFERRAL {where}] Your mail is on {host}; connect there.\r\n".encode()
    )
    failed = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert await in_thread(login, door, "alice", "wrong") == failed
    assert await in_thread(login, door, "mallory", "alice-password") == failed

    backend.stop()
    assert await in_thread(login, door, "alice", "alice-password") == (
        b"a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.\r\n"
    )
    daemon.door.stop()


@pytest.mark.parametrize(
    ("listener", "hello", "lip"),
    [
        # A load balancer on loopback names the client in a PROXY header ...
        (
            "    proxy_protocol: true\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 143\r\n",
            "192.0.2.1",
        ),
        # ... or a webmail on loopback with ID, as Dovecot accepts it.
        (
            "",
            b'i1 ID ("x-originating-ip" "203.0.113.7" "x-originating-port" "51234")\r\n',
            "127.0.0.1",
        ),
    ],
    ids=["proxy-header", "id-from-trusted-peer"],
)
async def test_dovecot_sees_the_real_client_with_send_id(
    nursery: trio.Nursery,
    tmp_path: Path,
    dovecot_factory: DovecotFactory,
    caplog: pytest.LogCaptureFixture,
    listener: str,
    hello: bytes,
    lip: str,
) -> None:
    # Dovecot takes x-originating-ip from login_trusted_networks only.
    backend = dovecot_factory(
        users={"alice": "alice-password"}, extra_config="login_trusted_networks = 127.0.0.0/8\n"
    )
    host, port = backend.address
    cfg = write_door(tmp_path, host, port)
    timeouts = "    response_timeout_s: 2\n"
    text = cfg.read_text().replace(timeouts, timeouts + "    send_id: true\n")
    text = text.replace("    tls: none\n", "    tls: none\n" + listener)
    # The proxied client may log in without TLS here (it stands for a webmail network).
    text += "proxy_networks: [127.0.0.0/8]\ntrusted_networks: [127.0.0.0/8, 203.0.113.0/24]\n"
    cfg.write_text(text)
    config = load_config(cfg)
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    door = bound[0][0].port
    caplog.set_level(logging.INFO)
    got = await in_thread(exchange, door, hello + b"a1 LOGIN alice alice-password\r\n")
    assert f"a1 NO [REFERRAL imap://alice;AUTH=*@{host}:{port}/]".encode() in got
    await trio.sleep(0.1)
    (conn,) = [
        m.group(1)
        for r in caplog.records
        if (m := re.match(r"session end conn=(\S+) addr=203\.0\.113\.7 ", r.getMessage()))
    ]
    (line,) = backend.wait_for_log("imap-login: Info: Login:")
    assert f"user=<alice>, method=PLAIN, rip=203.0.113.7, lip={lip}, " in line
    assert line.endswith(f"session=<{conn}>")
    daemon.door.stop()


EMPTY_NAME_COMMANDS = [
    b'SELECT ""',
    b'EXAMINE ""',
    b'CREATE ""',
    b'DELETE ""',
    b'RENAME "" Archive',
    b'RENAME INBOX ""',
    b'STATUS "" (MESSAGES)',
    b'APPEND "" {1+}\r\nx',
]


def empty_name_answers(port: int) -> list[bytes]:
    """The tagged answers to EMPTY_NAME_COMMANDS, logged in as alice."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as sock,
        sock.makefile("rb") as f,
    ):
        f.readline()
        sock.sendall(b'a1 LOGIN alice "alice-password"\r\n')
        while not f.readline().startswith(b"a1 OK"):
            pass
        answers = []
        for n, command in enumerate(EMPTY_NAME_COMMANDS, 2):
            tag = f"a{n}".encode()
            sock.sendall(tag + b" " + command + b"\r\n")
            while not (line := f.readline()).startswith(tag + b" "):
                assert line, "connection closed"
            answers.append(line)
        return answers


async def test_empty_mailbox_name_is_answered_as_dovecot_answers(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    # Issue 9: the door ended these sessions with an internal error.  Now
    # the response code is the backend's own: NO [CANNOT], never NONEXISTENT
    # (SUBSCRIBE is left out: Dovecot answers it without a code).
    backend = dovecot_factory(users={"alice": "alice-password"})
    host, port = backend.address
    config = load_config(write_door(tmp_path, host, port, login="stay"))
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    from_door = await in_thread(empty_name_answers, bound[0][0].port)
    from_dovecot = await in_thread(empty_name_answers, port)
    for n, (door_line, dovecot_line) in enumerate(zip(from_door, from_dovecot, strict=True), 2):
        assert door_line == f"a{n} NO [CANNOT] A mailbox name cannot be empty.\r\n".encode()
        assert dovecot_line.startswith(f"a{n} NO [CANNOT] ".encode()), dovecot_line
    daemon.door.stop()
