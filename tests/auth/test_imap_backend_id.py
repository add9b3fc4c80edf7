"""The `imap` source tells the backend who the client is: RFC 2971 ID before LOGIN.

Pure tables for `id_params` and `id_chunks`, then the dialogue against the
scripted fake backend of test_imap_backend.py (memory streams, autojump
clock). tests/interop/test_imap_auth.py and test_door_with_dovecot.py show
that a real Dovecot logs and penalises the address refd names.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio

from refd.auth.base import AuthRequest, AuthStatus
from refd.auth.imap_backend import ID_FIELDS, ImapBackendSource, id_params
from refd.protocol.client import id_chunks
from tests.auth.test_imap_backend import BACKEND, SECRET, FakeBackends, FakeConn, parse_login

FULL = AuthRequest(
    "alice",
    SECRET,
    client_address="203.0.113.7",
    client_port=51234,
    local_address="192.0.2.1",
    local_port=143,
    session_id="3d3a-2",
)
FULL_PARAMS = (
    ("x-originating-ip", "203.0.113.7"),
    ("x-originating-port", "51234"),
    ("x-connected-ip", "192.0.2.1"),
    ("x-connected-port", "143"),
    ("x-session-id", "3d3a-2"),
)
WITH_ID = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ID] fake ready\r\n"
WITHOUT_ID = b"* OK [CAPABILITY IMAP4rev1 LITERAL+] fake ready\r\n"


def test_id_params_in_the_order_asked() -> None:
    assert id_params(FULL, ID_FIELDS) == FULL_PARAMS
    assert id_params(FULL, ("x-session-id", "x-originating-ip")) == (
        ("x-session-id", "3d3a-2"),
        ("x-originating-ip", "203.0.113.7"),
    )
    assert id_params(FULL, ()) == ()


@pytest.mark.parametrize(
    ("request_", "params"),
    [
        # Unknown values are left out (RFC 2971 §2: MAY send less), not guessed.
        (AuthRequest("a", "p", "198.51.100.9"), (("x-originating-ip", "198.51.100.9"),)),
        (AuthRequest("a", "p", "unknown", client_port=5), (("x-originating-port", "5"),)),
        (AuthRequest("a", "p", "2001:db8::7"), (("x-originating-ip", "2001:db8::7"),)),
        (AuthRequest("a", "p", "2001:DB8:0::7"), (("x-originating-ip", "2001:db8::7"),)),
        (AuthRequest("a", "p", "10.0.0.1", client_port=0, local_port=65536), (
            ("x-originating-ip", "10.0.0.1"),
        )),
        (AuthRequest("a", "p", "10.0.0.1", session_id="a\r\nb"), (
            ("x-originating-ip", "10.0.0.1"),
        )),
    ],
)  # fmt: skip
def test_id_params_leave_out_what_is_not_known(
    request_: AuthRequest, params: tuple[tuple[str, str], ...]
) -> None:
    assert id_params(request_, ID_FIELDS) == params


def test_id_chunks_quote_as_imap_strings() -> None:
    assert id_chunks("r6", FULL_PARAMS[:2], frozenset()) == (
        b'r6 ID ("x-originating-ip" "203.0.113.7" "x-originating-port" "51234")\r\n',
    )
    # Quoting is the LOGIN's (RFC 9051 §4.3): specials escaped, 8-bit as literals.
    assert id_chunks("r6", [("x-session-id", 'a"b\\c')], frozenset()) == (
        b'r6 ID ("x-session-id" "a\\"b\\\\c")\r\n',
    )
    assert id_chunks("r6", [("x-session-id", "é")], frozenset()) == (
        b'r6 ID ("x-session-id" {2}\r\n',
        b"\xc3\xa9)\r\n",
    )
    with pytest.raises(ValueError, match="NUL, CR or LF"):
        id_chunks("r6", [("x-session-id", "a\nb")], frozenset())


def test_send_id_takes_known_fields_once() -> None:
    assert ImapBackendSource(BACKEND, send_id=ID_FIELDS).send_id == ID_FIELDS
    for bad in (["x-forward-foo"], ["x-originating-ip", "x-originating-ip"]):
        with pytest.raises(ValueError, match="send_id"):
            ImapBackendSource(BACKEND, send_id=bad)


# -- the dialogue ------------------------------------------------------------------------


def backend(greeting: bytes, id_answer: bytes, seen: list[bytes]) -> object:
    """LOGIN alice/SECRET; ID recorded and answered `id_answer`; LOGOUT."""

    async def handler(conn: FakeConn) -> None:
        await conn.send(greeting)
        while wire := await conn.command():
            seen.append(wire)
            tag = wire.split(b" ", 1)[0]
            name = conn.log[-1]
            if name == "ID":
                await conn.send(tag + b" " + id_answer + b"\r\n")
            elif name == "LOGIN":
                ok = parse_login(wire)[1:] == ("alice", SECRET)
                await conn.send(tag + (b" OK Logged in\r\n" if ok else b" NO Failed\r\n"))
            elif name == "LOGOUT":
                await conn.send(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return

    return handler


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


def source_for(nursery: trio.Nursery, handler: object, **options: object) -> ImapBackendSource:
    fake = FakeBackends(nursery, handler)  # type: ignore[arg-type]
    return ImapBackendSource(BACKEND, open_tcp_stream=fake.open, **options)  # type: ignore[arg-type]


async def test_id_goes_before_login_when_configured(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    seen: list[bytes] = []
    handler = backend(WITH_ID, b"OK ID completed.", seen)
    source = source_for(nursery, handler, send_id=ID_FIELDS)
    assert (await source.authenticate(FULL)).status is AuthStatus.SUCCESS
    assert seen[:2] == [
        b'r6 ID ("x-originating-ip" "203.0.113.7" "x-originating-port" "51234" '
        b'"x-connected-ip" "192.0.2.1" "x-connected-port" "143" "x-session-id" "3d3a-2")\r\n',
        b'r4 LOGIN "alice" "correct horse battery staple"\r\n',
    ]


async def test_no_id_by_default(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    seen: list[bytes] = []
    source = source_for(nursery, backend(WITH_ID, b"OK ID completed.", seen))
    assert (await source.authenticate(FULL)).status is AuthStatus.SUCCESS
    assert [w.split()[1] for w in seen] == [b"LOGIN", b"LOGOUT"]


@pytest.mark.parametrize(
    ("greeting", "id_answer", "warning"),
    [
        (WITHOUT_ID, b"BAD never sent", "does not advertise ID"),
        (WITH_ID, b"BAD Unknown command.", "answered ID with BAD: 'Unknown command.'"),
    ],
)
async def test_without_id_the_login_goes_on_and_is_warned_once(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    greeting: bytes,
    id_answer: bytes,
    warning: str,
) -> None:
    seen: list[bytes] = []
    source = source_for(nursery, backend(greeting, id_answer, seen), send_id=ID_FIELDS)
    wrong = AuthRequest("alice", "wrong", "203.0.113.7")
    assert (await source.authenticate(FULL)).status is AuthStatus.SUCCESS
    assert (await source.authenticate(wrong)).status is AuthStatus.FAILURE
    one_check = [b"LOGIN", b"LOGOUT"] if greeting == WITHOUT_ID else [b"ID", b"LOGIN", b"LOGOUT"]
    assert [w.split()[1] for w in seen] == one_check * 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"auth source imap: backend mail1.example.org:143 {warning}; "
        "it cannot tell clients apart (send_id)"
    ]
