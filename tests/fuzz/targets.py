"""The fuzz targets: one strategy and one check per property.

The pytest modules in this folder run each target with a small, fixed
number of examples (``CI``); ``python -m tests.fuzz.run`` runs the same
targets for minutes (see README.md).  A check raises AssertionError (or
anything else) when the property fails; hypothesis shrinks the input.

- ``parser``: :func:`parse_command` on anything returns a command or raises
  :class:`CommandError` — never another exception.
- ``mutf7``: modified UTF-7 round-trips, raises only MUTF7Error, and has
  exactly one spelling per name (what the routing table matches on).
- ``mailbox_round_trip``: any name the door prints (``wire_mailbox``) reads
  back as the same mailbox.
- ``framing``: any bytes in any chunking through :class:`Connection` give
  only events and NEED_DATA, never an exception; buffered bytes stay
  within the limits; EOF always ends in CONNECTION_CLOSED; ``bad_commands``
  bad inputs always end in a BYE.
- ``framing_chunking``: away from the line limit, the events do not depend
  on how the bytes were split into segments.
- ``session``: the real per-connection loop (:func:`handle_connection`) on
  memory streams with a MockClock, fed chunks and pauses, often after a
  login that works (so mailbox commands with edge names reach their
  handlers): no internal error (no error logged, the session's outcome is
  not ``internal-error``, no ``* BYE Internal server error``), every line
  printable ASCII in the shape of an IMAP response, and once the client
  falls silent the door ends the session with a BYE.
- ``mailbox_session``: the same checks on a login that works followed by
  well-formed mailbox commands (SELECT ... RLSUB) whose names are drawn
  from the edges: empty, the delimiter alone, INBOX cased oddly, control
  characters through modified UTF-7, names as long as a line.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import trio
import trio.testing
from hypothesis import strategies as st

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.config.loader import DEMO_CONFIG, load_config, load_service
from refd.config.yamltree import parse_yaml
from refd.door import DoorState
from refd.limits import Limits
from refd.protocol import commands as c
from refd.protocol import mutf7
from refd.protocol.commands import CommandError, State, parse_command
from refd.protocol.connection import (
    CONNECTION_CLOSED,
    NEED_DATA,
    NONSYNC_LITERAL_MAX,
    BadInput,
    Connection,
    LiteralRequest,
    ProtocolLimits,
    SaslResponse,
)
from refd.protocol.grammar import canonical_mailbox
from refd.protocol.responses import wire_mailbox
from refd.routing import load_table
from refd.runtime import ClientInfo, Service, ServiceRef
from refd.server import handle_connection
from tests.fuzz.strategies import (
    chunkings,
    client_bytes,
    command_line,
    logins,
    mailbox_command,
    session_bytes,
)

# -- parser -------------------------------------------------------------------

parser_input = st.one_of(
    command_line().map(lambda b: b if b.endswith(b"\n") else b + b"\r\n"),
    command_line(),
    st.binary(max_size=200),
)


def check_parser(data: bytes) -> None:
    try:
        cmd = parse_command(data)
    except CommandError as exc:
        assert exc.text and "\r" not in exc.text and "\n" not in exc.text
        return
    assert isinstance(cmd, c.Command)
    assert type(cmd) in c.ALLOWED


# -- modified UTF-7 ---------------------------------------------------------------

mutf7_input = st.one_of(
    st.text(max_size=20).map(lambda s: ("name", s)),
    st.text(alphabet="&-+,/=ABab09AOkJjo2D ~", max_size=20).map(lambda s: ("wire", s)),
    st.text(max_size=10).map(lambda s: ("wire", s)),
)


def check_mutf7(item: tuple[str, str]) -> None:
    kind, text = item
    if kind == "name":
        wire = mutf7.encode(text)
        assert wire.isascii() and all(" " <= ch <= "~" for ch in wire)
        assert mutf7.decode(wire) == text
        return
    try:
        name = mutf7.decode(text)
    except mutf7.MUTF7Error:
        return
    # One spelling per name: whatever decodes must be what encode writes.
    assert mutf7.encode(name) == text


mailbox_names = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


def check_mailbox_round_trip(name: str) -> None:
    wire = wire_mailbox(name).encode("ascii")
    cmd = parse_command(b"t SELECT " + wire + b"\r\n")
    assert cmd == c.Select("t", canonical_mailbox(name))
    rename = parse_command(b"t RENAME " + wire + b" " + wire + b"\r\n")
    assert rename == c.Rename("t", canonical_mailbox(name), canonical_mailbox(name))


# -- framing ------------------------------------------------------------------------

LIMIT_PRESETS = [
    ProtocolLimits(),
    ProtocolLimits(max_line_bytes=512, max_literal_bytes=64, max_command_bytes=1024),
    ProtocolLimits(max_line_bytes=600, max_literal_bytes=0, max_command_bytes=2000, bad_commands=3),
]


@st.composite
def framing_input(draw: st.DrawFn) -> tuple[ProtocolLimits, list[bytes]]:
    limits = draw(st.sampled_from(LIMIT_PRESETS))
    data = draw(client_bytes)
    return limits, draw(chunkings(data))


def decide(conn: Connection, event: object) -> str | None:
    """What the session would do next, as a pure function of the event.

    Returns "close" when the server would close the connection.
    """
    if isinstance(event, LiteralRequest):
        # Accept within the limit, except some (as APPEND's referral would).
        if event.within_limit and len(event.prefix) % 3:
            conn.accept_literal()
        else:
            conn.refuse_literal()
    elif isinstance(event, c.Authenticate) and event.initial is None:
        conn.expect_sasl_response(event.tag)
    elif isinstance(event, c.Login) and event.user == "bob":
        conn.state = State.AUTHENTICATED
    elif isinstance(event, c.Logout) or (isinstance(event, BadInput) and event.bye):
        return "close"
    return None


def _comparable(event: object) -> object:
    """Events as values (CommandError, an exception, compares by identity)."""
    if isinstance(event, BadInput):
        err = event.error
        return ("BAD", err.tag, err.text, err.code, err.command, event.bye, event.limit)
    return event


def frame(limits: ProtocolLimits, chunks: list[bytes], *, eof: bool = True) -> list[object]:
    """Feed ``chunks`` (then EOF); return the events, checking the invariants."""
    conn = Connection(limits)
    held_max = limits.max_command_bytes + max(limits.max_literal_bytes, NONSYNC_LITERAL_MAX)
    events: list[object] = []
    for chunk in [*chunks, b""] if eof else chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                assert chunk, "NEED_DATA after EOF"
                # a line of max_line_bytes may wait for its LF with its CR
                assert conn.buffered <= limits.max_line_bytes + 1, conn.buffered
                held = sum(len(p) for p in conn._parts)
                assert held <= held_max, held
                break
            if event is CONNECTION_CLOSED:
                assert not chunk, "CONNECTION_CLOSED before EOF"
                return events
            assert isinstance(event, c.Command | BadInput | LiteralRequest | SaslResponse)
            if isinstance(event, BadInput) and conn.bad_commands >= limits.bad_commands:
                assert event.bye is not None
            events.append(_comparable(event))
            if decide(conn, event) == "close":
                return events
    return events


def check_framing(item: tuple[ProtocolLimits, list[bytes]]) -> None:
    limits, chunks = item
    frame(limits, chunks)


@st.composite
def chunking_input(draw: st.DrawFn) -> tuple[ProtocolLimits, bytes, list[bytes]]:
    limits = draw(st.sampled_from(LIMIT_PRESETS))
    data = draw(client_bytes)
    return limits, data, draw(chunkings(data))


def check_chunking(item: tuple[ProtocolLimits, bytes, list[bytes]]) -> None:
    limits, data, chunks = item
    assert frame(limits, [data]) == frame(limits, chunks)


# -- the whole session ------------------------------------------------------------------


@dataclass(frozen=True)
class FakeAuth:
    """Passwords without threads (MockClock-friendly): secret, down, or wrong."""

    name: str = "fake"

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        await trio.sleep(0.01)
        if request.password == "down":
            return AuthResult(AuthStatus.UNAVAILABLE, request.user, "backend down")
        if request.password == "secret":
            return AuthResult(AuthStatus.SUCCESS, request.user, "ok")
        return AuthResult(AuthStatus.FAILURE, request.user, "wrong")


#: The demo table plus a ``default`` user rule, so that any name that logs
#: in (FakeAuth takes "secret" for every name, "" too) has a route to try.
_DEFAULT_RULE = "  - default: true\n    server: mail1\n    login: stay\nmailboxes:"


@cache
def fuzz_service(table: str = "demo") -> Service:
    service = load_service(load_config(DEMO_CONFIG))
    if table == "default":
        text = (DEMO_CONFIG.parent / "routing.yaml").read_text(encoding="utf-8")
        text = text.replace("mailboxes:", _DEFAULT_RULE, 1)
        root = parse_yaml(text, "routing.yaml")
        service = dataclasses.replace(
            service, table=load_table(root, "routing.yaml", source_text=text)
        )
    return dataclasses.replace(service, auth=FakeAuth())


SESSION_LIMITS = [
    Limits(),
    Limits(
        max_line_bytes=512,
        max_literal_bytes=64,
        max_command_bytes=1024,
        bad_commands=3,
        max_list_patterns=2,
    ),
]
#: Longest silence the door may take to end a session: the post-login idle
#: timeout plus the longest failure delays of what was pipelined before.
SILENCE_LIMIT_S = 1800 + 15 * 40 + 60

_RESPONSE = re.compile(
    rb"(\* (OK|NO|BAD|BYE|PREAUTH|CAPABILITY|LIST|LSUB|NAMESPACE|ID) .*"
    rb"|\+ .*|\+ "
    rb"|[!#$&'*,\-./0-9:;<=>?@A-Z\[^_`a-z|}~\]]+ (OK|NO|BAD) .*)\r\n"
)


@st.composite
def session_input(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(session_bytes)
    chunks = draw(chunkings(data))
    pauses = draw(
        st.lists(
            st.sampled_from([0.0, 0.0, 0.0, 0.5, 30.0, 61.0, 2000.0]),
            min_size=len(chunks),
            max_size=len(chunks),
        )
    )
    return {
        "plan": list(zip(chunks, pauses, strict=True)),
        "address": draw(st.sampled_from(["127.0.0.1", "203.0.113.9"])),
        "limits": draw(st.sampled_from(SESSION_LIMITS)),
        "table": draw(st.sampled_from(["demo", "default"])),
    }


class _Errors(logging.Handler):
    """Error records, and each session's outcome from its "session end" line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.outcomes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
        elif isinstance(record.msg, str) and record.msg.startswith("session end "):
            self.outcomes.append(record.getMessage().split(" outcome=")[1].split()[0])


def run_session(item: dict[str, Any]) -> bytes:
    """Play ``item`` into the per-connection loop; return what the door said."""
    service = dataclasses.replace(fuzz_service(item.get("table", "demo")), limits=item["limits"])
    out = bytearray()

    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        info = ClientInfo(conn_id="fuzz", address=item["address"])
        done = trio.Event()

        async def door_side() -> None:
            await handle_connection(server, info, ServiceRef(service), DoorState())
            done.set()

        async def read() -> None:
            while True:
                try:
                    data = await client.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                out.extend(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(door_side)
            nursery.start_soon(read)
            for chunk, pause in item["plan"]:
                if done.is_set():
                    break
                try:
                    await client.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if pause:
                    await trio.sleep(pause)
            # The client falls silent: the door must end the session itself
            # (and the reader then sees EOF after the last line).
            nursery.cancel_scope.deadline = trio.current_time() + SILENCE_LIMIT_S
        assert done.is_set(), "the door did not end the session"
        await client.aclose()

    errors = _Errors()
    logger = logging.getLogger("refd")
    # "session end" is an INFO line of refd.server; let it through for the outcome.
    server_log = logging.getLogger("refd.server")
    level = server_log.level
    server_log.setLevel(logging.INFO)
    logger.addHandler(errors)
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(errors)
        server_log.setLevel(level)
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert len(errors.outcomes) == 1, errors.outcomes
    assert errors.outcomes[0] != "internal-error", errors.outcomes
    return bytes(out)


def check_session(item: dict[str, Any]) -> None:
    out = run_session(item)
    lines = out.split(b"\r\n")
    assert lines[-1] == b"", f"unterminated last line {lines[-1]!r}"
    lines = [line + b"\r\n" for line in lines[:-1]]
    for line in lines:
        assert all(0x20 <= b <= 0x7E for b in line[:-2]), f"not printable ASCII: {line!r}"
        assert _RESPONSE.fullmatch(line), f"not an IMAP response: {line!r}"
    assert b"Internal server error" not in out
    # The session ended with a BYE: the last line, or LOGOUT's tagged OK after it.
    byes = [i for i, line in enumerate(lines) if line.startswith(b"* BYE ")]
    assert byes, f"the session ended without a BYE: {lines[-3:]!r}"
    after = lines[byes[-1] + 1 :]
    assert after == [] or (len(after) == 1 and after[0].endswith(b" OK LOGOUT completed.\r\n")), (
        after
    )


@st.composite
def mailbox_session_input(draw: st.DrawFn) -> dict[str, Any]:
    """A login that works, then well-formed mailbox commands with edge names."""
    login = draw(logins.filter(bool))
    commands = draw(st.lists(mailbox_command(), min_size=1, max_size=6))
    return {
        "plan": [(login + b"".join(commands), 0.0)],
        "address": "127.0.0.1",
        "limits": Limits(),
        "table": draw(st.sampled_from(["demo", "default"])),
    }


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


TARGETS = {
    t.name: t
    for t in [
        Target("parser", parser_input, check_parser),
        Target("mutf7", mutf7_input, check_mutf7),
        Target("mailbox_round_trip", mailbox_names, check_mailbox_round_trip),
        Target("framing", framing_input(), check_framing),
        Target("framing_chunking", chunking_input(), check_chunking),
        Target("session", session_input(), check_session),
        Target("mailbox_session", mailbox_session_input(), check_session),
    ]
}
