"""Tier (a): framing, literals, limits and state legality of the connection."""

import pytest

from refd.protocol import commands as c
from refd.protocol.commands import State
from refd.protocol.connection import (
    CONNECTION_CLOSED,
    LOST_SYNC_BYE,
    NEED_DATA,
    BadInput,
    Connection,
    LiteralRequest,
    ProtocolLimits,
    SaslResponse,
)
from refd.protocol.responses import Bye, Cond, Tagged


def events(conn: Connection) -> list[object]:
    out = []
    while True:
        ev = conn.next_event()
        out.append(ev)
        if ev is NEED_DATA or ev is CONNECTION_CLOSED or isinstance(ev, LiteralRequest):
            return out


def bad(ev: object) -> tuple[str | None, str, str | None]:
    assert isinstance(ev, BadInput), ev
    return ev.error.tag, ev.error.text, ev.bye


def test_pipelined_commands_and_partial_lines() -> None:
    conn = Connection()
    conn.receive_data(b"a1 NOOP\r\na2 CAPA")
    assert events(conn) == [c.Noop("a1"), NEED_DATA]
    conn.receive_data(b"BILITY\r")
    assert events(conn) == [NEED_DATA]
    conn.receive_data(b"\n")
    assert events(conn) == [c.Capability("a2"), NEED_DATA]


def test_bare_lf_is_accepted() -> None:
    conn = Connection()
    conn.receive_data(b"a1 NOOP\n")
    assert events(conn) == [c.Noop("a1"), NEED_DATA]


def test_synchronizing_literal_waits_for_a_decision() -> None:
    conn = Connection()
    conn.receive_data(b"a LOGIN {5}\r\n")
    req = conn.next_event()
    assert req == LiteralRequest("a", "LOGIN", 5, b"a LOGIN {5}\r\n", True, credentials=True)
    with pytest.raises(RuntimeError):
        conn.next_event()
    conn.accept_literal()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"alice pass\r\n")
    assert events(conn) == [c.Login("a", "alice", "pass"), NEED_DATA]


def test_literal_split_across_reads() -> None:
    conn = Connection()
    conn.receive_data(b"a LOGIN {10}\r\n")
    assert isinstance(conn.next_event(), LiteralRequest)
    conn.accept_literal()
    for chunk in (b"al", b"ice@ex", b"am", b" x\r\n"):
        conn.receive_data(chunk)
    # The literal is 10 octets: "alice@exam" — then " x" completes the line.
    assert events(conn) == [c.Login("a", "alice@exam", "x"), NEED_DATA]


def test_refused_literal_drops_the_command() -> None:
    conn = Connection()
    conn.state = State.AUTHENTICATED
    conn.receive_data(b"a APPEND Drafts {99999}\r\nb NOOP\r\n")
    req = conn.next_event()
    assert isinstance(req, LiteralRequest) and req.name == "APPEND"
    conn.refuse_literal()
    assert events(conn) == [c.Noop("b"), NEED_DATA]


def test_literal_over_limit_is_flagged() -> None:
    conn = Connection(ProtocolLimits(max_literal_bytes=100))
    conn.receive_data(b"a LOGIN {101}\r\n")
    req = conn.next_event()
    assert isinstance(req, LiteralRequest) and not req.within_limit


def test_nonsync_literal_is_read_without_asking() -> None:
    conn = Connection()
    conn.receive_data(b"a LOGIN {5+}\r\nalice {4+}\r\npass\r\n")
    assert events(conn) == [c.Login("a", "alice", "pass"), NEED_DATA]


def test_nonsync_literal_over_4096_closes() -> None:
    conn = Connection()
    conn.receive_data(b"a LOGIN {4097+}\r\n")
    assert bad(conn.next_event()) == (
        "a",
        "Non-synchronizing literal over 4096 octets (LITERAL-).",
        LOST_SYNC_BYE,
    )


def test_literal_for_unknown_command_is_refused_before_continuation() -> None:
    conn = Connection()
    conn.receive_data(b"a FROB {5}\r\nb NOOP\r\n")
    assert bad(conn.next_event()) == ("a", "Unknown command FROB.", None)
    assert events(conn) == [c.Noop("b"), NEED_DATA]


def test_literal_for_command_in_wrong_state_is_refused() -> None:
    conn = Connection()
    conn.receive_data(b"a SELECT {5}\r\n")
    assert bad(conn.next_event()) == (
        "a",
        "SELECT needs an authenticated session: log in first.",
        None,
    )


def test_overlong_line_is_skipped_then_answered() -> None:
    conn = Connection(ProtocolLimits(max_line_bytes=1024))
    conn.receive_data(b"t1 LOGIN " + b"x" * 5000)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0  # nothing of the overlong line is kept
    conn.receive_data(b"y" * 100_000)
    assert conn.next_event() is NEED_DATA and conn.buffered == 0
    conn.receive_data(b"\r\nt2 NOOP\r\n")
    assert bad(conn.next_event()) == ("t1", "Command line too long.", None)
    assert events(conn) == [c.Noop("t2"), NEED_DATA]


def test_overlong_complete_line() -> None:
    conn = Connection(ProtocolLimits(max_line_bytes=600))
    conn.receive_data(b"t1 NOOP " + b"x" * 700 + b"\r\n")
    ev = conn.next_event()
    assert isinstance(ev, BadInput) and ev.error.code == "TOOBIG"


def test_command_size_limit_counts_literals() -> None:
    conn = Connection(ProtocolLimits(max_command_bytes=1024))
    conn.receive_data(b"a LOGIN {1000+}\r\n" + b"u" * 1000 + b" {100+}\r\n")
    # The {100+} literal is on its way: the stream is lost.
    assert bad(conn.next_event()) == ("a", "Command too long.", LOST_SYNC_BYE)


def test_state_legality() -> None:
    conn = Connection()
    conn.receive_data(b'a SELECT INBOX\r\nb FETCH 1 FLAGS\r\nc RLIST "" *\r\n')
    assert [bad(e)[1] for e in events(conn)[:-1]] == [
        "SELECT needs an authenticated session: log in first.",
        "FETCH needs an authenticated session: log in first.",
        "RLIST needs an authenticated session: log in first.",
    ]
    conn.state = State.AUTHENTICATED
    conn.receive_data(b"d LOGIN a b\r\ne STARTTLS\r\nf FETCH 1 FLAGS\r\n")
    evs = events(conn)
    assert bad(evs[0])[1] == "LOGIN is not allowed: already authenticated."
    assert bad(evs[1])[1] == "STARTTLS is not allowed: already authenticated."
    assert evs[2] == c.Unselected("f", "FETCH")


def test_bad_command_budget() -> None:
    conn = Connection(ProtocolLimits(bad_commands=3))
    conn.receive_data(b"a FROB\r\nb FROB\r\nc FROB\r\n")
    evs = events(conn)
    assert [bad(e)[2] for e in evs[:3]] == [None, None, "Too many invalid commands."]
    # The budget is a limit of its own, reported besides any the command hit.
    assert [(e.limit, e.too_many_bad) for e in evs[:3] if isinstance(e, BadInput)] == [
        (None, False),
        (None, False),
        (None, True),
    ]
    conn = Connection(ProtocolLimits(bad_commands=2, max_line_bytes=64))
    conn.receive_data(b"a FROB\r\nb NOOP " + b"x" * 100 + b"\r\n")
    last = events(conn)[1]
    assert isinstance(last, BadInput)
    assert (last.error.code, last.bye, last.limit, last.too_many_bad) == (
        "TOOBIG",
        "Too many invalid commands.",
        "line_length",
        True,
    )


def test_sasl_response_line() -> None:
    conn = Connection()
    conn.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    assert conn.next_event() == c.Authenticate("a", "PLAIN", None)
    conn.expect_sasl_response("a")
    conn.receive_data(b"AGFsaWNlAHNlY3JldA==\r\n*\r\n")
    assert conn.next_event() == SaslResponse("a", b"AGFsaWNlAHNlY3JldA==")
    # Out of SASL mode the "*" line is an ordinary (bad) command again.
    assert bad(conn.next_event())[0] is None


def test_sasl_cancel() -> None:
    conn = Connection()
    conn.expect_sasl_response("z")
    conn.receive_data(b"*\r\n")
    assert conn.next_event() == SaslResponse("z", None)


def test_discard_after_starttls() -> None:
    conn = Connection()
    conn.receive_data(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    assert conn.next_event() == c.Starttls("a")
    assert conn.discard_buffered() == len(b"b LOGIN alice secret\r\n")
    assert conn.next_event() is NEED_DATA


def test_eof() -> None:
    conn = Connection()
    conn.receive_data(b"a NOOP\r\nb NO")
    conn.receive_data(b"")
    assert events(conn) == [c.Noop("a"), CONNECTION_CLOSED]


def test_send_bye_moves_to_logout() -> None:
    conn = Connection()
    assert conn.send(Tagged("a", Cond.OK, "done")) == b"a OK done\r\n"
    assert conn.send(Bye("bye", "UNAVAILABLE")) == b"* BYE [UNAVAILABLE] bye\r\n"
    assert conn.state is State.LOGOUT


def test_nul_in_line() -> None:
    conn = Connection()
    conn.receive_data(b"a LOGIN al\x00ice x\r\n")
    assert bad(conn.next_event()) == ("a", "NUL character in user name.", None)


def test_huge_literal_announcement() -> None:
    conn = Connection()
    conn.state = State.AUTHENTICATED
    conn.receive_data(b"a APPEND x {2147483648}\r\n")
    req = conn.next_event()
    assert isinstance(req, LiteralRequest)
    assert req.size == 2147483648 and not req.within_limit


# -- framing paths: which refusals can resynchronise, which end the connection --------

LINE = ProtocolLimits(max_line_bytes=1024, max_command_bytes=3072)
LONG = b"a LOGIN " + b"x" * 2000  # over LINE.max_line_bytes without its end


def feed(conn: Connection, segments: list[bytes]) -> list[object]:
    """Feed ``segments`` one by one; the events, BadInput as tuples, until a BYE."""
    out: list[object] = []
    for segment in segments:
        conn.receive_data(segment)
        while (ev := conn.next_event()) is not NEED_DATA:
            if isinstance(ev, BadInput):
                err = ev.error
                out.append((err.tag, err.text, err.code, ev.bye, ev.limit))
                if ev.bye:
                    return out
            else:
                out.append(ev)
            if isinstance(ev, LiteralRequest):
                conn.refuse_literal()  # as the session does for a refused command
    return out


TOOBIG_LINE = ("a", "Command line too long.", "TOOBIG")
TOOBIG_COMMAND = ("a", "Command too long.", "TOOBIG")


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        pytest.param(
            [LONG + b" {5+}\r\nb NOOP\r\n"],
            [(*TOOBIG_LINE, LOST_SYNC_BYE, "line_length")],
            id="overlong-line-nonsync-whole",
        ),
        pytest.param(
            [LONG, b" {5+}\r\n", b"b NOOP\r\n"],
            [(*TOOBIG_LINE, LOST_SYNC_BYE, "line_length")],
            id="overlong-line-nonsync-skipped-then-tail",
        ),
        pytest.param(
            # The announcement itself is cut, its digits padded with zeros
            # past anything a fixed-size tail would keep.
            [LONG + b" {" + b"0" * 3000, b"0" * 3000, b"5", b"+", b"}", b"\r", b"\nb NOOP\r\n"],
            [(*TOOBIG_LINE, LOST_SYNC_BYE, "line_length")],
            id="overlong-line-nonsync-announcement-split",
        ),
        pytest.param(
            [LONG + b" {5}\r\nb NOOP\r\n"],
            [(*TOOBIG_LINE, None, "line_length"), c.Noop("b")],
            id="overlong-line-sync-whole",
        ),
        pytest.param(
            [LONG, b" {5}", b"\r\n", b"b NOOP\r\n"],
            [(*TOOBIG_LINE, None, "line_length"), c.Noop("b")],
            id="overlong-line-sync-split",
        ),
        pytest.param(
            [LONG, b" {5+} x\r\nb NOOP\r\n"],
            [(*TOOBIG_LINE, None, "line_length"), c.Noop("b")],
            id="overlong-line-announcement-not-at-end",
        ),
        pytest.param(
            [LONG + b" {5+", b"}x\r\nb NOOP\r\n"],
            [(*TOOBIG_LINE, None, "line_length"), c.Noop("b")],
            id="overlong-line-announcement-broken-in-next-segment",
        ),
        pytest.param(
            [LONG + b"\r\nb NOOP\r\n"],
            [(*TOOBIG_LINE, None, "line_length"), c.Noop("b")],
            id="overlong-line-no-literal",
        ),
        pytest.param(
            [b"a LOGIN {3070+}\r\n" + b"u" * 3070 + b" {5+}\r\nb NOOP\r\n"],
            [(*TOOBIG_COMMAND, LOST_SYNC_BYE, "command_size")],
            id="command-size-nonsync",
        ),
        pytest.param(
            [b"a LOGIN {3070+}\r\n" + b"u" * 3070 + b" {5}\r\nb NOOP\r\n"],
            [(*TOOBIG_COMMAND, None, "command_size"), c.Noop("b")],
            id="command-size-sync",
        ),
        pytest.param(
            [b"a LOGIN {3070+}\r\n" + b"u" * 3070 + b" pass\r\nb NOOP\r\n"],
            [(*TOOBIG_COMMAND, None, "command_size"), c.Noop("b")],
            id="command-size-no-literal",
        ),
        pytest.param(
            [b"a LOGIN {4097+}\r\nb NOOP\r\n"],
            [
                (
                    "a",
                    "Non-synchronizing literal over 4096 octets (LITERAL-).",
                    "TOOBIG",
                    LOST_SYNC_BYE,
                    "literal_size",
                )
            ],
            id="literal-size-nonsync",
        ),
        pytest.param(
            [b"a FROB {5+}\r\nb NOOP\r\n"],
            [("a", "Unknown command FROB.", None, LOST_SYNC_BYE, None)],
            id="unknown-command-nonsync",
        ),
        pytest.param(
            [b"a FROB {5}\r\nb NOOP\r\n"],
            [("a", "Unknown command FROB.", None, None, None), c.Noop("b")],
            id="unknown-command-sync",
        ),
        pytest.param(
            [b"a SELECT {5+}\r\nb NOOP\r\n"],
            [
                (
                    "a",
                    "SELECT needs an authenticated session: log in first.",
                    None,
                    LOST_SYNC_BYE,
                    None,
                )
            ],
            id="wrong-state-nonsync",
        ),
        pytest.param(
            [b"a LOGIN {70000}\r\nb NOOP\r\n"],
            [LiteralRequest("a", "LOGIN", 70000, b"a LOGIN {70000}\r\n", False, True), c.Noop("b")],
            id="literal-size-sync-refused-before-plus",
        ),
    ],
)
def test_framing_paths(segments: list[bytes], expected: list[object]) -> None:
    assert feed(Connection(LINE), segments) == expected


def test_overlong_sasl_response_is_not_a_literal() -> None:
    # SASL responses are one base64 line (RFC 3501 §6.2.2): "{5+}" there
    # announces nothing, and the exchange just ends with BAD.
    conn = Connection(LINE)
    conn.expect_sasl_response("a")
    segments = [b"A" * 2000, b"{5+}\r\nb NOOP\r\n"]
    assert feed(conn, segments) == [
        ("a", "Authentication response too long.", "TOOBIG", None, "line_length"),
        c.Noop("b"),
    ]


def test_skipped_line_keeps_a_few_octets_of_its_end() -> None:
    conn = Connection(LINE)
    conn.receive_data(LONG + b" {" + b"9" * 100_000)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0 and len(conn._skip_tail) <= 5


def test_literal_request_says_whether_it_carries_credentials() -> None:
    conn = Connection()
    conn.receive_data(b"a AUTHENTICATE PLAIN {20}\r\n")
    req = conn.next_event()
    assert isinstance(req, LiteralRequest) and req.credentials
    conn.refuse_literal()
    conn.state = State.AUTHENTICATED
    conn.receive_data(b"b APPEND INBOX {20}\r\n")
    req = conn.next_event()
    assert isinstance(req, LiteralRequest) and not req.credentials
