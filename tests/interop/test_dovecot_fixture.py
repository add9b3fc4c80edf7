"""The Dovecot fixture itself: several instances, seeded mail, a clean stop."""

from __future__ import annotations

import socket

import pytest

from .conftest import USERS, DovecotFactory
from .dovecot import DovecotInstance, ServerCert

pytestmark = pytest.mark.interop


def test_two_instances_keep_their_own_mail(dovecot_factory: DovecotFactory) -> None:
    one = dovecot_factory()
    two = dovecot_factory()
    assert one.port != two.port
    one.seed("alice", "Shared/Sales", "on backend1")
    two.seed("alice", "Shared/Sales", "on backend2")
    two.seed("alice", "Shared/Sales", "also on backend2")
    one.seed("bob", "INBOX", "bob's inbox")
    assert one.subjects("alice", "Shared/Sales") == ["on backend1"]
    assert two.subjects("alice", "Shared/Sales") == ["on backend2", "also on backend2"]
    assert one.subjects("bob") == ["bob's inbox"]
    assert two.subjects("bob") == []
    # Each greets with its own name, so a client can tell where it landed.
    for instance in (one, two):
        with socket.create_connection(instance.address, timeout=2) as s:
            assert f"refd-test {instance.name} ready.".encode() in s.recv(4096)


def test_startup_is_fast(dovecot: DovecotInstance) -> None:
    print(f"dovecot ready in {dovecot.startup_s * 1000:.0f} ms")
    assert dovecot.startup_s < 2.0


def test_stop_leaves_no_process_and_no_listener(dovecot: DovecotInstance) -> None:
    dovecot.seed("alice", "INBOX", "make it spawn an imap process")
    group = dovecot.process.pid
    dovecot.stop()
    assert not dovecot.running
    assert dovecot.process.returncode is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(dovecot.address, timeout=2)
    for stat in __import__("pathlib").Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        assert not (int(fields[2]) == group and fields[0] != "Z"), f"left over: {stat}"
    dovecot.stop()  # idempotent


def test_seed_uses_the_password_given(dovecot_factory: DovecotFactory) -> None:
    backend = dovecot_factory(users={"alice": USERS["alice"]})
    backend.seed("alice", "INBOX", "x", password=USERS["alice"])
    assert backend.subjects("alice") == ["x"]


def test_ssl_required_refuses_authentication_before_tls(
    dovecot_factory: DovecotFactory, dovecot_cert: ServerCert
) -> None:
    # On 127.0.0.2 (clients come from 127.0.0.1): Dovecot counts equal
    # addresses as secured. Seeding goes over implicit TLS.
    backend = dovecot_factory(host="127.0.0.2", cert=dovecot_cert, ssl_required=True)
    backend.seed("alice", "INBOX", "seeded over TLS")
    with socket.create_connection(backend.address, timeout=2) as s, s.makefile("rb") as f:
        assert b" STARTTLS LOGINDISABLED] " in f.readline()
        s.sendall(b"a AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk\r\n")  # alice's
        assert f.readline() == (
            b"a NO [PRIVACYREQUIRED] Authentication not allowed until SSL/TLS is enabled.\r\n"
        )
    assert backend.subjects("alice") == ["seeded over TLS"]
