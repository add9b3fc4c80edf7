"""The `imap` auth source without Dovecot: its dialogue against a scripted fake backend.

The fake runs over in-memory streams under trio's autojump clock, so
timeouts cost no real time. It covers what a real Dovecot will not do
(garbage, a close mid-dialogue, endless lines, STARTTLS injection, slow
answers on cue); tests/interop/test_imap_auth.py covers the real thing.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.imap_backend import ImapBackendSource, TlsMode
from refd.protocol.client import MAX_LINE_BYTES
from tests.protocol.test_client import parse_login

BACKEND = ("mail1.example.org", 143)
GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] fake ready\r\n"
SECRET = "correct horse battery staple"

# -- the fake backend ------------------------------------------------------------------


class FakeConn:
    """The server end of one connection, with line reading and IMAP literals."""

    def __init__(self, stream: trio.abc.Stream, log: list[str]) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.log = log
        self.early_literal_data = False

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def line(self) -> bytes:
        """One line; b"" at EOF."""
        while b"\n" not in self.buffer:
            if not await self._fill():
                return b""
        end = self.buffer.index(b"\n") + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._fill():
                raise trio.BrokenResourceError("EOF inside a literal")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def command(self) -> bytes:
        """A whole command, literals included; sends "+" for synchronizing ones."""
        wire = b""
        while True:
            line = await self.line()
            if not line:
                return b""
            wire += line
            literal = re.search(rb"\{([0-9]+)(\+?)\}\r\n\Z", line)
            if literal is None:
                name = (wire.split(None, 2)[1:2] or [b""])[0]
                self.log.append(name.decode().upper())
                return wire
            if not literal.group(2):
                # The client must wait for "+": nothing may arrive before it.
                with trio.move_on_after(1):
                    while not self.buffer:
                        if not await self._fill():
                            break
                self.early_literal_data |= bool(self.buffer)
                await self.send(b"+ go ahead\r\n")
            wire += await self.exactly(int(literal.group(1)))


Handler = Callable[[FakeConn], Awaitable[None]]


class FakeBackends:
    """`open_tcp_stream` for the source: each connect runs a handler on the server end."""

    def __init__(self, nursery: trio.Nursery, handler: Handler) -> None:
        self.nursery = nursery
        self.handler = handler
        self.connects: list[tuple[str, int]] = []
        self.commands: list[str] = []  # command names as the backend received them
        self.early_literal_data = False

    async def open(self, host: str, port: int) -> trio.abc.Stream:
        self.connects.append((host, port))
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, server: trio.abc.Stream) -> None:
        conn = FakeConn(server, self.commands)
        try:
            await self.handler(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.early_literal_data |= conn.early_literal_data
            await trio.aclose_forcefully(server)


def imap_server(
    passwords: dict[str, str],
    *,
    greeting: bytes = GREETING,
    login_delay_s: float = 0.0,
    no_answer: bytes = b"NO [AUTHENTICATIONFAILED] Authentication failed.",
    on_login: Callable[[], None] | None = None,
    on_answer: Callable[[], None] | None = None,
) -> Handler:
    """A well-behaved backend: CAPABILITY, LOGIN (checked against `passwords`), LOGOUT."""

    async def handler(conn: FakeConn) -> None:
        await conn.send(greeting)
        while wire := await conn.command():
            tag = wire.split(b" ", 1)[0]
            name = conn.log[-1]
            if name == "CAPABILITY":
                caps = b"IMAP4rev1 LITERAL+ AUTH=PLAIN"
                await conn.send(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
            elif name == "LOGIN":
                _, user, password = parse_login(wire)
                if on_login:
                    on_login()
                await trio.sleep(login_delay_s)
                if on_answer:
                    on_answer()
                if passwords.get(user) == password:
                    await conn.send(tag + b" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
                else:
                    await conn.send(tag + b" " + no_answer + b"\r\n")
            elif name == "LOGOUT":
                await conn.send(b"* BYE Logging out\r\n" + tag + b" OK Logout completed.\r\n")
                return
            else:
                await conn.send(tag + b" BAD unknown command\r\n")

    return handler


def scripted(*steps: bytes | None) -> Handler:
    """Send each step (None: read one command instead); then hold the connection."""

    async def handler(conn: FakeConn) -> None:
        for step in steps:
            if step is None:
                await conn.command()
            else:
                await conn.send(step)
        await trio.sleep_forever()

    return handler


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


Factory = Callable[..., tuple[ImapBackendSource, FakeBackends]]


@pytest.fixture
def make(nursery: trio.Nursery) -> Factory:
    def make(
        handler: Handler, backend: object = BACKEND, **options: object
    ) -> tuple[ImapBackendSource, FakeBackends]:
        fake = FakeBackends(nursery, handler)
        source = ImapBackendSource(backend, open_tcp_stream=fake.open, **options)  # type: ignore[arg-type]
        return source, fake

    return make


async def check(
    source: ImapBackendSource, user: str = "alice", password: str = SECRET
) -> AuthResult:
    return await source.authenticate(AuthRequest(user, password, client_address="192.0.2.7"))


# -- the dialogue against a fake ---------------------------------------------------------------


async def test_success_failure_and_logout(make: Factory, autojump_clock: trio.abc.Clock) -> None:
    source, fake = make(imap_server({"alice": SECRET}))
    assert await check(source, "alice") == AuthResult(
        AuthStatus.SUCCESS, "alice", "backend accepted credentials"
    )
    assert await check(source, "alice", "wrong") == AuthResult(
        AuthStatus.FAILURE, "alice", "backend rejected credentials"
    )
    assert fake.commands == ["LOGIN", "LOGOUT", "LOGIN", "LOGOUT"]
    assert fake.connects == [BACKEND, BACKEND]


async def test_user_name_is_returned_as_given(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make(imap_server({"Alice@Example.ORG": SECRET}))
    assert (await check(source, "Alice@Example.ORG")).user == "Alice@Example.ORG"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"NO Authentication failed.", AuthStatus.FAILURE),
        (b"NO [AUTHENTICATIONFAILED] Authentication failed.", AuthStatus.FAILURE),
        (b"NO [EXPIRED] Password expired.", AuthStatus.FAILURE),
        (b"NO [UNAVAILABLE] Temporary authentication failure.", AuthStatus.UNAVAILABLE),
        (b"NO [SERVERBUG] Internal error.", AuthStatus.UNAVAILABLE),
        (b"NO [LIMIT] Too many connections.", AuthStatus.UNAVAILABLE),
        (b"BAD Error in IMAP command.", AuthStatus.UNAVAILABLE),
    ],
)
async def test_tagged_answers(
    make: Factory, autojump_clock: trio.abc.Clock, answer: bytes, status: AuthStatus
) -> None:
    source, _ = make(imap_server({}, no_answer=answer))
    result = await check(source)
    assert result.status is status
    if status is AuthStatus.UNAVAILABLE:
        assert result.reason.startswith("mail1.example.org:143: backend answered")


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (scripted(b"* BYE Too many connections\r\n"), "backend said BYE: 'Too many connections'"),
        (scripted(b"* PREAUTH welcome\r\n"), "backend greeted with PREAUTH"),
        (scripted(b"SSH-2.0-OpenSSH_9.2\r\n"), "greeting: not an IMAP response"),
        (scripted(b"HTTP/1.1 400 Bad\r\n"), "greeting: not an IMAP response"),
        (scripted(b"r4 OK hello\r\n"), "greeting: not an IMAP greeting: OK hello"),
        (scripted(b"* OK " + b"x" * MAX_LINE_BYTES), "longer than 65536 bytes"),
        (scripted(GREETING, None, b"\x00\x01garbage\r\n"), "not an IMAP response"),
        (scripted(GREETING, None, b"r4 PERHAPS\r\n"), "not an IMAP response (no OK/NO/BAD)"),
        (
            scripted(GREETING, None, b"zz OK yes\r\n"),
            "LOGIN: unexpected response 'OK yes' (tag zz)",
        ),
        (scripted(GREETING, None, b"+ more?\r\n"), "LOGIN: unexpected response 'more?' (tag +)"),
        (
            scripted(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n"),
            "backend advertises LOGINDISABLED",
        ),
    ],
)
async def test_backend_misbehaviour_is_unavailable(
    make: Factory, autojump_clock: trio.abc.Clock, handler: Handler, reason: str
) -> None:
    source, fake = make(handler)
    result = await check(source)
    assert result.status is AuthStatus.UNAVAILABLE
    assert reason in result.reason
    assert result.reason.startswith("mail1.example.org:143: ")
    if "LOGINDISABLED" in reason:
        assert "LOGIN" not in fake.commands


async def _close_now(conn: FakeConn) -> None:
    await conn.stream.aclose()


async def _close_after_login(conn: FakeConn) -> None:
    await conn.send(GREETING)
    await conn.command()
    await conn.stream.aclose()


async def _bye_during_login(conn: FakeConn) -> None:
    # RFC 9051 §7.1.5: BYE, then the server closes; the reason names the BYE.
    await conn.send(GREETING)
    await conn.command()
    await conn.send(b"* BYE going down\r\n")
    await conn.stream.aclose()


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (_close_now, "greeting: the server closed the connection"),
        (_close_after_login, "LOGIN: the server closed the connection"),
        (_bye_during_login, "LOGIN: the server closed the connection after * BYE going down"),
    ],
)
async def test_closed_mid_dialogue_is_unavailable(
    make: Factory, autojump_clock: trio.abc.Clock, handler: Handler, reason: str
) -> None:
    source, _ = make(handler)
    assert await check(source) == AuthResult(
        AuthStatus.UNAVAILABLE, "alice", f"mail1.example.org:143: {reason}"
    )


async def test_capability_is_asked_when_the_greeting_has_none(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, fake = make(imap_server({"alice": SECRET}, greeting=b"* OK ready\r\n"))
    assert (await check(source)).status is AuthStatus.SUCCESS
    assert fake.commands[:2] == ["CAPABILITY", "LOGIN"]


async def test_synchronizing_literal_waits_for_the_continuation(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1] no literal+ here\r\n"
    source, fake = make(imap_server({"jörg": "pässwörd"}, greeting=greeting))
    assert (await check(source, "jörg", "pässwörd")).status is AuthStatus.SUCCESS
    assert (await check(source, "jörg", "pässwort")).status is AuthStatus.FAILURE
    assert not fake.early_literal_data


# -- timeouts and the concurrency bound ------------------------------------------------------


async def test_silent_backend_times_out_on_the_greeting(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make(scripted(), response_timeout_s=3)
    started = trio.current_time()
    result = await check(source)
    assert result.reason == "mail1.example.org:143: greeting: timed out after 3 s"
    assert trio.current_time() - started == pytest.approx(3)


async def test_each_answer_has_its_own_timeout(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make(imap_server({"alice": SECRET}, login_delay_s=2.5), response_timeout_s=3)
    assert (await check(source)).status is AuthStatus.SUCCESS
    source, _ = make(imap_server({"alice": SECRET}, login_delay_s=3.5), response_timeout_s=3)
    result = await check(source)
    assert result.reason == "mail1.example.org:143: LOGIN: timed out after 3 s"


async def test_connect_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def black_hole(host: str, port: int) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    source = ImapBackendSource(BACKEND, connect_timeout_s=2, open_tcp_stream=black_hole)
    started = trio.current_time()
    result = await check(source)
    assert result == AuthResult(
        AuthStatus.UNAVAILABLE, "alice", "mail1.example.org:143: connect: timed out after 2 s"
    )
    assert trio.current_time() - started == pytest.approx(2)


async def test_connection_refused() -> None:
    async def refused(host: str, port: int) -> trio.abc.Stream:
        raise OSError(errno.ECONNREFUSED, "Connection refused")

    source = ImapBackendSource(BACKEND, open_tcp_stream=refused)
    assert (await check(source)).reason == "mail1.example.org:143: connect: connection refused"


async def test_at_most_limit_checks_in_flight(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    pending = peak = 0

    def on_login() -> None:
        nonlocal pending, peak
        pending += 1
        peak = max(peak, pending)

    def on_answer() -> None:
        nonlocal pending
        pending -= 1

    handler = imap_server(
        {"alice": SECRET}, login_delay_s=1, on_login=on_login, on_answer=on_answer
    )
    source, fake = make(handler, max_concurrent_per_backend=3, connect_timeout_s=60)
    statuses = []

    async def one() -> None:
        statuses.append((await check(source)).status)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(one)
    assert statuses == [AuthStatus.SUCCESS] * 10
    assert peak == 3
    assert trio.current_time() - started == pytest.approx(4)  # ceil(10 / 3) rounds of 1 s
    assert len(fake.connects) == 10


async def test_waiting_for_a_slot_counts_against_the_connect_timeout(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    handler = imap_server({"alice": SECRET}, login_delay_s=8)
    source, _ = make(
        handler, max_concurrent_per_backend=1, connect_timeout_s=5, response_timeout_s=10
    )
    results: dict[str, tuple[AuthResult, float]] = {}

    async def one(name: str) -> None:
        result = await check(source)
        results[name] = (result, trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(one, "second")
    assert results["first"][0].status is AuthStatus.SUCCESS
    assert results["first"][1] == pytest.approx(8)
    assert results["second"][0].reason == (
        "mail1.example.org:143: no free slot within 5s (1 checks in flight)"
    )
    assert results["second"][1] == pytest.approx(5)


async def test_each_backend_has_its_own_limit(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    homes = {"alice": ("mail1", 143), "bob": ("mail2", 143)}
    source, fake = make(
        imap_server({"alice": SECRET, "bob": SECRET}, login_delay_s=1),
        backend=homes.get,
        max_concurrent_per_backend=1,
    )
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(check, source, "alice")
        nursery.start_soon(check, source, "bob")
    assert trio.current_time() - started == pytest.approx(1)  # in parallel, not 2 s
    assert sorted(fake.connects) == [("mail1", 143), ("mail2", 143)]


# -- STARTTLS before the handshake -------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (scripted(GREETING), "STARTTLS: the server does not offer STARTTLS"),
        (
            scripted(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n", None, b"r2 NO not now\r\n"),
            "STARTTLS: STARTTLS refused: NO not now",
        ),
        (
            # Plaintext queued behind the OK would be read as if it came over TLS.
            scripted(
                b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
                None,
                b"r2 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n",
            ),
            "STARTTLS: data after the STARTTLS answer (injection?)",
        ),
    ],
)
async def test_starttls_refusals(
    make: Factory, autojump_clock: trio.abc.Clock, handler: Handler, reason: str
) -> None:
    source, fake = make(handler, tls=TlsMode.STARTTLS)
    result = await check(source)
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason.endswith(reason)
    assert "LOGIN" not in fake.commands


def test_verify_certificate_false_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    source = ImapBackendSource(BACKEND, tls=TlsMode.IMPLICIT, verify_certificate=False)
    assert source.ssl_context is not None
    assert source.ssl_context.verify_mode is ssl.CERT_NONE
    assert "NOT verified" in caplog.text


@pytest.mark.parametrize(
    "options",
    [
        {"connect_timeout_s": 0},
        {"response_timeout_s": -1},
        {"max_concurrent_per_backend": 0},
        {"cache_ttl_s": -1},
        {"cache_max_entries": 0},
        {"ssl_context": ssl.create_default_context()},  # with tls=NONE
        {"verify_certificate": False},  # with tls=NONE
        {
            "tls": TlsMode.STARTTLS,
            "ssl_context": ssl.create_default_context(),
            "verify_certificate": False,
        },
    ],
)
def test_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImapBackendSource(BACKEND, **options)  # type: ignore[arg-type]


# -- routing, refusals before any connection, never raising ------------------------------


async def test_no_route_is_a_failure_without_connecting(make: Factory) -> None:
    source, fake = make(imap_server({}), backend=lambda user: None)
    assert await check(source) == AuthResult(AuthStatus.FAILURE, "alice", "no route")
    assert fake.connects == []


async def test_a_failing_resolve_is_unavailable(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    def resolve(user: str) -> tuple[str, int]:
        raise KeyError(user)

    source, _ = make(imap_server({}), backend=resolve)
    assert await check(source) == AuthResult(
        AuthStatus.UNAVAILABLE, "alice", "backend lookup failed"
    )


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "a\x00b"), ("alice", "a\r\nb"), ("a\nb", "pw")]
)
async def test_nul_cr_lf_fail_without_connecting(make: Factory, user: str, password: str) -> None:
    source, fake = make(imap_server({}))
    result = await check(source, user, password)
    assert result.status is AuthStatus.FAILURE
    assert fake.connects == []


class Exploding(trio.abc.Stream):
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise ValueError("a bug somewhere")

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise ValueError("a bug somewhere")

    async def aclose(self) -> None:
        pass


async def test_a_bug_is_unavailable_not_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    async def exploding(host: str, port: int) -> trio.abc.Stream:
        return Exploding()

    source = ImapBackendSource(BACKEND, open_tcp_stream=exploding)
    assert await check(source) == AuthResult(
        AuthStatus.UNAVAILABLE, "alice", "internal error: ValueError"
    )
    assert "internal error" in caplog.text


# -- the positive cache ---------------------------------------------------------------------


async def test_cache_hit_skips_the_backend_until_the_ttl(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, fake = make(imap_server({"alice": SECRET}), cache_ttl_s=30)
    assert (await check(source)).reason == "backend accepted credentials"
    hit = await check(source)
    assert hit == AuthResult(AuthStatus.SUCCESS, "alice", "cached success (mail1.example.org:143)")
    assert len(fake.connects) == 1
    await trio.sleep(31)
    assert (await check(source)).reason == "backend accepted credentials"
    assert len(fake.connects) == 2


async def test_cache_keeps_no_failure_and_no_other_password(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, fake = make(imap_server({"alice": SECRET}), cache_ttl_s=30)
    for _ in range(2):
        assert (await check(source, "alice", "wrong")).status is AuthStatus.FAILURE
    assert (await check(source)).status is AuthStatus.SUCCESS
    assert (await check(source, "alice", SECRET + "x")).status is AuthStatus.FAILURE
    assert len(fake.connects) == 4


async def test_cache_is_off_by_default(make: Factory, autojump_clock: trio.abc.Clock) -> None:
    source, fake = make(imap_server({"alice": SECRET}))
    await check(source)
    await check(source)
    assert len(fake.connects) == 2


async def test_cache_is_per_backend(make: Factory, autojump_clock: trio.abc.Clock) -> None:
    homes = {"alice": ("mail1", 143)}
    source, fake = make(imap_server({"alice": SECRET}), backend=homes.get, cache_ttl_s=30)
    await check(source)
    homes["alice"] = ("mail2", 143)  # the routing table was reloaded
    assert (await check(source)).reason == "backend accepted credentials"
    assert fake.connects == [("mail1", 143), ("mail2", 143)]


async def test_cache_evicts_the_least_recently_used(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    users = {"u1": "p1", "u2": "p2", "u3": "p3"}
    source, fake = make(imap_server(users), cache_ttl_s=30, cache_max_entries=2)
    await check(source, "u1", "p1")
    await check(source, "u2", "p2")
    await check(source, "u1", "p1")  # hit: u1 is now the most recent
    await check(source, "u3", "p3")  # evicts u2
    assert len(fake.connects) == 3
    assert (await check(source, "u1", "p1")).reason.startswith("cached")
    assert not (await check(source, "u2", "p2")).reason.startswith("cached")


async def test_cache_holds_neither_the_password_nor_a_plain_hash(
    make: Factory, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make(imap_server({"alice": SECRET}), cache_ttl_s=30)
    await check(source)
    cache = source._cache
    assert cache is not None and len(cache) == 1
    contents = repr(cache._entries).encode() + b"".join(cache._entries)
    contents += repr(vars(cache)).encode()
    secret = SECRET.encode()
    for digest in (
        hashlib.sha256(secret).digest(),
        hashlib.sha256(b"alice\x00" + secret).digest(),
    ):
        assert digest not in contents
        assert digest.hex().encode() not in contents
    assert secret not in contents


# -- the password stays out of logs and reasons ----------------------------------------------


async def test_password_is_never_logged(
    make: Factory, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def echoing(conn: FakeConn) -> None:
        # A hostile backend that quotes the command back in its answer.
        await conn.send(GREETING)
        wire = await conn.command()
        await conn.send(b"r4 BAD [SERVERBUG] You sent: " + wire.strip() + b"\r\n")

    results = []
    for handler, options in [
        (imap_server({"alice": SECRET}), {"cache_ttl_s": 30}),
        (imap_server({"alice": "other"}), {}),
        (imap_server({}, no_answer=b"NO [UNAVAILABLE] later"), {}),
        (scripted(b"garbage " + SECRET.encode() + b"\r\n"), {}),
        (echoing, {}),
        (scripted(), {"response_timeout_s": 1}),
    ]:
        source, _ = make(handler, **options)
        results.append(await check(source))
        results.append(await check(source))  # a cache hit for the first
    results.append(await check(source, "alice", SECRET + "\x00"))
    assert {r.status for r in results} == set(AuthStatus)
    assert "reason withheld" in caplog.text
    assert SECRET not in caplog.text
    assert all(SECRET not in r.reason for r in results)
