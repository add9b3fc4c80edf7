"""The `imap` auth source against real Dovecot backends (tier c: real sockets, real TLS).

Time here is real (Dovecot is a real process), so timeouts are small and
every test stays well under two seconds. Dovecot answers a failed login
after up to 0.5 s (its failure-delay timer), which bounds several tests.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterator
from typing import TypedDict

import pytest
import trio
import trustme

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.imap_backend import ID_FIELDS, ImapBackendSource, TlsMode

from .conftest import USERS, DovecotFactory
from .dovecot import DovecotInstance, ServerCert

pytestmark = pytest.mark.interop


# Dovecot may hold a failed LOGIN for 0.5 s: answers need more than that.
class Timeouts(TypedDict):
    connect_timeout_s: float
    response_timeout_s: float


FAST: Timeouts = {"connect_timeout_s": 0.5, "response_timeout_s": 1.0}


async def check(source: ImapBackendSource, user: str, password: str) -> AuthResult:
    return await source.authenticate(AuthRequest(user, password, client_address="192.0.2.7"))


def login_lines(instance: DovecotInstance, count: int = 1) -> list[str]:
    """Dovecot's successful-login log lines, waiting for at least `count` of them."""
    return instance.wait_for_log("imap-login: Info: Login:", count)


# -- plain TCP -----------------------------------------------------------------------


async def test_right_password_succeeds_with_the_user_as_given(dovecot: DovecotInstance) -> None:
    source = ImapBackendSource(dovecot.address)
    result = await check(source, "alice", USERS["alice"])
    assert result == AuthResult(AuthStatus.SUCCESS, "alice", "backend accepted credentials")
    assert len(login_lines(dovecot)) == 1


async def test_wrong_password_and_unknown_user_get_the_same_failure(
    dovecot: DovecotInstance,
) -> None:
    source = ImapBackendSource(dovecot.address)
    wrong = await check(source, "alice", "not-" + USERS["alice"])
    unknown = await check(source, "mallory", USERS["alice"])
    assert wrong == AuthResult(AuthStatus.FAILURE, "alice", "backend rejected credentials")
    assert unknown == AuthResult(AuthStatus.FAILURE, "mallory", "backend rejected credentials")


@pytest.mark.parametrize(
    "password",
    [
        'with "quotes" and \\backslash\\',
        "with spaces and {braces} and (parens) %*",
        "pässwörd ☃ with UTF-8",  # 8-bit: a literal, {n+} since Dovecot has LITERAL+
        "x" * 200,
    ],
)
async def test_passwords_that_need_quoting_or_literals(
    dovecot_factory: DovecotFactory, password: str
) -> None:
    backend = dovecot_factory(users={"alice": password})
    source = ImapBackendSource(backend.address)
    assert (await check(source, "alice", password)).status is AuthStatus.SUCCESS
    assert (await check(source, "alice", password + "!")).status is AuthStatus.FAILURE


async def test_synchronizing_literal_when_the_backend_lacks_literal_plus(
    dovecot_factory: DovecotFactory,
) -> None:
    # imap_capability replaces what imap-login advertises before login;
    # an empty auth_username_chars lets a UTF-8 user name through, so both
    # user and password go as {n} literals, each waiting for "+".
    backend = dovecot_factory(
        users={"jörg": "pässwörd"},
        extra_config="imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID\n"
        "auth_username_chars =\n",
    )
    with socket.create_connection(backend.address, timeout=2) as s:
        assert b"LITERAL" not in s.recv(4096)
    source = ImapBackendSource(backend.address)
    assert await check(source, "jörg", "pässwörd") == AuthResult(
        AuthStatus.SUCCESS, "jörg", "backend accepted credentials"
    )


async def test_hashed_passwd_file(dovecot_factory: DovecotFactory) -> None:
    backend = dovecot_factory(users={"alice": "s3cret"}, scheme="SHA512-CRYPT")
    assert "{SHA512-CRYPT}$6$" in (backend.directory / "users.passwd").read_text()
    source = ImapBackendSource(backend.address)
    assert (await check(source, "alice", "s3cret")).status is AuthStatus.SUCCESS


# -- send_id: Dovecot sees, logs and penalises the real client ---------------------------

# Dovecot believes x-originating-* and x-connected-* only from these.
TRUSTS_REFD = "login_trusted_networks = 127.0.0.0/8\n"
# The fixture hides anvil's auth-penalty socket; these tests put it back.
PENALTY_ON = """service anvil {
  unix_listener anvil-auth-penalty {
    path = anvil-auth-penalty
  }
}
"""


def client(address: str, user: str, password: str, session: str) -> AuthRequest:
    return AuthRequest(
        user,
        password,
        client_address=address,
        client_port=51234,
        local_address="192.0.2.1",
        local_port=143,
        session_id=session,
    )


async def test_send_id_makes_dovecot_log_the_real_client(
    dovecot_factory: DovecotFactory,
) -> None:
    backend = dovecot_factory(extra_config=TRUSTS_REFD)
    source = ImapBackendSource(backend.address, send_id=ID_FIELDS)
    ok = await source.authenticate(client("203.0.113.7", "alice", USERS["alice"], "3d3a-2"))
    bad = await source.authenticate(client("2001:db8::7", "alice", "wrong", "3d3a-3"))
    assert (ok.status, bad.status) == (AuthStatus.SUCCESS, AuthStatus.FAILURE)
    (login,) = login_lines(backend)
    assert login.endswith(
        "imap-login: Info: Login: user=<alice>, method=PLAIN, rip=203.0.113.7, "
        f"lip=192.0.2.1, mpid={login.split('mpid=')[1].split(',')[0]}, secured, "
        "session=<3d3a-2>"
    )
    (failed,) = backend.wait_for_log("(auth failed, 1 attempts")
    assert failed.endswith(
        "user=<alice>, method=PLAIN, rip=2001:db8::7, lip=192.0.2.1, secured, session=<3d3a-3>"
    )


@pytest.mark.parametrize("send_id", [ID_FIELDS, ()], ids=["send_id", "default"])
async def test_send_id_makes_dovecot_penalise_the_attacker_not_everybody(
    dovecot_factory: DovecotFactory, send_id: tuple[str, ...]
) -> None:
    # One wrong password from an attacker, then bob from elsewhere. Dovecot's
    # auth penalty (per remote IP, 2 s and more after a failure) falls on
    # bob too when both come from refd's address: what send_id prevents.
    backend = dovecot_factory(extra_config=TRUSTS_REFD + PENALTY_ON)
    source = ImapBackendSource(backend.address, send_id=send_id, response_timeout_s=10)
    attack = await source.authenticate(client("203.0.113.66", "alice", "guess", "a-1"))
    assert attack.status is AuthStatus.FAILURE
    started = time.monotonic()
    bob = await source.authenticate(client("198.51.100.9", "bob", USERS["bob"], "b-1"))
    waited = time.monotonic() - started
    assert bob.status is AuthStatus.SUCCESS
    if send_id:
        assert waited < 1.0, f"bob waited {waited:.2f} s for the attacker's penalty"
    else:
        assert waited > 1.5, f"penalty not active in this Dovecot ({waited:.2f} s)"


# -- backend down, silent ---------------------------------------------------------------


async def test_stopped_backend_is_unavailable_fast(dovecot: DovecotInstance) -> None:
    source = ImapBackendSource(dovecot.address, **FAST)
    assert (await check(source, "alice", USERS["alice"])).status is AuthStatus.SUCCESS
    dovecot.stop()
    started = time.monotonic()
    result = await check(source, "alice", USERS["alice"])
    elapsed = time.monotonic() - started
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason == f"127.0.0.1:{dovecot.port}: connect: connection refused"
    assert elapsed < 0.25


@pytest.fixture
def silent_listener() -> Iterator[tuple[str, int]]:
    """A socket that accepts TCP connections (the kernel does) and never speaks."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()


async def test_backend_that_never_greets_is_unavailable_within_the_timeout(
    silent_listener: tuple[str, int],
) -> None:
    source = ImapBackendSource(silent_listener, connect_timeout_s=0.5, response_timeout_s=0.5)
    started = time.monotonic()
    result = await check(source, "alice", USERS["alice"])
    elapsed = time.monotonic() - started
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason.endswith(": greeting: timed out after 0.5 s")
    assert 0.45 < elapsed < 1.5


async def test_backend_temporary_failure_is_unavailable(dovecot_factory: DovecotFactory) -> None:
    # Users not in the passwd-file fall through to a checkpassword passdb
    # that exits 111, which Dovecot reports as NO [UNAVAILABLE].
    backend = dovecot_factory(
        files={"tempfail": b"#!/bin/sh\nexit 111\n"},
        extra_config="passdb {\n  driver = checkpassword\n  args = {directory}/tempfail\n}\n",
    )
    source = ImapBackendSource(backend.address, **FAST)
    assert (await check(source, "alice", USERS["alice"])).status is AuthStatus.SUCCESS
    result = await check(source, "carol", "any")
    assert result.status is AuthStatus.UNAVAILABLE
    assert "backend answered NO [UNAVAILABLE] to LOGIN" in result.reason


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture
def tls_dovecot(dovecot_factory: DovecotFactory, dovecot_cert: ServerCert) -> DovecotInstance:
    return dovecot_factory(cert=dovecot_cert)


async def test_starttls(tls_dovecot: DovecotInstance, client_ssl_context: ssl.SSLContext) -> None:
    source = ImapBackendSource(
        tls_dovecot.address, tls=TlsMode.STARTTLS, ssl_context=client_ssl_context
    )
    assert (await check(source, "alice", USERS["alice"])).status is AuthStatus.SUCCESS
    assert (await check(source, "alice", "wrong")).status is AuthStatus.FAILURE
    assert "TLS" in login_lines(tls_dovecot)[0]


async def test_implicit_tls(
    tls_dovecot: DovecotInstance, client_ssl_context: ssl.SSLContext
) -> None:
    source = ImapBackendSource(
        tls_dovecot.tls_address, tls=TlsMode.IMPLICIT, ssl_context=client_ssl_context
    )
    assert (await check(source, "bob", USERS["bob"])).status is AuthStatus.SUCCESS
    assert (await check(source, "bob", "wrong")).status is AuthStatus.FAILURE
    assert "TLS" in login_lines(tls_dovecot)[0]


@pytest.mark.parametrize("mode", [TlsMode.STARTTLS, TlsMode.IMPLICIT])
async def test_untrusted_certificate_is_unavailable_unless_verification_is_off(
    tls_dovecot: DovecotInstance, mode: TlsMode
) -> None:
    address = tls_dovecot.address if mode is TlsMode.STARTTLS else tls_dovecot.tls_address
    # The default context trusts the system CAs, not the test CA.
    strict = ImapBackendSource(address, tls=mode, **FAST)
    result = await check(strict, "alice", USERS["alice"])
    assert result.status is AuthStatus.UNAVAILABLE
    stage = "STARTTLS" if mode is TlsMode.STARTTLS else "TLS handshake"
    assert result.reason.endswith(
        f": {stage}: TLS certificate not accepted: unable to get local issuer certificate"
    )
    lab = ImapBackendSource(address, tls=mode, verify_certificate=False, **FAST)
    assert (await check(lab, "alice", USERS["alice"])).status is AuthStatus.SUCCESS
    assert len(login_lines(tls_dovecot)) == 1  # only the lab's: strict never logged in


async def test_wrong_host_name_in_certificate_is_unavailable(
    dovecot_factory: DovecotFactory, tls_ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    leaf = tls_ca.issue_cert("mail.example.org")
    cert = ServerCert(
        b"".join(pem.bytes() for pem in leaf.cert_chain_pems), leaf.private_key_pem.bytes()
    )
    backend = dovecot_factory(cert=cert)
    source = ImapBackendSource(
        backend.tls_address, tls=TlsMode.IMPLICIT, ssl_context=client_ssl_context, **FAST
    )
    result = await check(source, "alice", USERS["alice"])
    assert result.status is AuthStatus.UNAVAILABLE
    assert ": TLS handshake: TLS certificate not accepted: IP address mismatch" in result.reason


async def test_logindisabled_backend_gets_no_password_in_plaintext(
    dovecot_factory: DovecotFactory, dovecot_cert: ServerCert, client_ssl_context: ssl.SSLContext
) -> None:
    # Not 127.0.0.1: Dovecot takes a connection from its own address as secure.
    backend = dovecot_factory(cert=dovecot_cert, plaintext_auth=False, host="127.0.0.2")
    plain = ImapBackendSource(backend.address, **FAST)
    result = await check(plain, "alice", USERS["alice"])
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason.endswith("backend advertises LOGINDISABLED: it wants TLS before LOGIN")
    # The fixture's readiness probe and this check: both left without a LOGIN.
    assert len(backend.wait_for_log("no auth attempts", count=2)) == 2
    assert "user=<alice>" not in backend.log()
    upgraded = ImapBackendSource(
        backend.address, tls=TlsMode.STARTTLS, ssl_context=client_ssl_context
    )
    assert (await check(upgraded, "alice", USERS["alice"])).status is AuthStatus.SUCCESS


# -- routing, cache, concurrency -----------------------------------------------------------


async def test_resolve_picks_each_users_home_backend(dovecot_factory: DovecotFactory) -> None:
    one = dovecot_factory(users={"alice": "a-pw"})
    two = dovecot_factory(users={"bob": "b-pw"})
    homes = {"alice": one.address, "bob": two.address}
    source = ImapBackendSource(homes.get)
    assert (await check(source, "alice", "a-pw")).status is AuthStatus.SUCCESS
    assert (await check(source, "bob", "b-pw")).status is AuthStatus.SUCCESS
    assert await check(source, "carol", "c-pw") == AuthResult(
        AuthStatus.FAILURE, "carol", "no route"
    )
    assert len(login_lines(one)) == len(login_lines(two)) == 1


async def test_cache_serves_a_success_without_the_backend_but_never_a_failure(
    dovecot: DovecotInstance,
) -> None:
    source = ImapBackendSource(dovecot.address, cache_ttl_s=60, **FAST)
    assert (await check(source, "alice", USERS["alice"])).status is AuthStatus.SUCCESS
    assert (await check(source, "bob", "wrong")).status is AuthStatus.FAILURE
    dovecot.stop()
    cached = await check(source, "alice", USERS["alice"])
    assert cached.status is AuthStatus.SUCCESS
    assert cached.reason.startswith("cached success")
    # The failure was not cached: asking again goes to the (now stopped) backend.
    assert (await check(source, "bob", "wrong")).status is AuthStatus.UNAVAILABLE
    # A different password for a cached user is not a hit either.
    assert (await check(source, "alice", "other")).status is AuthStatus.UNAVAILABLE


class LoginCountingRelay:
    """A TCP relay in front of a backend that counts LOGINs awaiting their answer.

    A LOGIN is pending from the client line that carries it until the
    backend's next tagged line. The source releases its slot only after
    reading that answer, so `peak` can never exceed the source's limit by a
    scheduling race.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.pending = 0
        self.peak = 0
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        waiting = False

        async def upstream_to(backend: trio.SocketStream) -> None:
            nonlocal waiting
            async for data in client:
                if b" LOGIN " in data.upper() and not waiting:
                    waiting = True
                    self.pending += 1
                    self.peak = max(self.peak, self.pending)
                await backend.send_all(data)
            nursery.cancel_scope.cancel()

        async def downstream_from(backend: trio.SocketStream) -> None:
            nonlocal waiting
            async for data in backend:
                tagged = any(line[:1] not in (b"*", b"+", b"") for line in data.split(b"\r\n"))
                if waiting and tagged:
                    waiting = False
                    self.pending -= 1
                await client.send_all(data)
            nursery.cancel_scope.cancel()

        async with client, await trio.open_tcp_stream(*self.target) as backend:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(upstream_to, backend)
                    nursery.start_soon(downstream_from, backend)
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                if waiting:
                    self.pending -= 1


async def test_at_most_limit_logins_in_flight_per_backend(dovecot: DovecotInstance) -> None:
    limit, checks = 2, 3
    relay = LoginCountingRelay(dovecot.address)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        source = ImapBackendSource(
            ("127.0.0.1", relay.port), max_concurrent_per_backend=limit, response_timeout_s=2
        )
        results: list[AuthResult] = []

        async def one(n: int) -> None:
            # Wrong passwords: Dovecot holds each answer up to 0.5 s, so checks overlap.
            results.append(await check(source, "alice", f"wrong-{n}"))

        async with trio.open_nursery() as checks_nursery:
            for n in range(checks):
                checks_nursery.start_soon(one, n)
        nursery.cancel_scope.cancel()
    assert [r.status for r in results] == [AuthStatus.FAILURE] * checks
    assert relay.peak == limit


async def test_password_never_logged(
    dovecot: DovecotInstance, caplog: pytest.LogCaptureFixture
) -> None:
    secret = USERS["alice"]
    caplog.set_level(logging.DEBUG)
    source = ImapBackendSource(dovecot.address, **FAST)
    results = [
        await check(source, "alice", secret),
        await check(source, "bob", secret),
    ]
    dovecot.stop()
    results.append(await check(source, "alice", secret))
    assert [r.status for r in results] == [
        AuthStatus.SUCCESS,
        AuthStatus.FAILURE,
        AuthStatus.UNAVAILABLE,
    ]
    assert "alice" in caplog.text
    assert secret not in caplog.text
    assert all(secret not in r.reason for r in results)
