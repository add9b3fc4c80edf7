"""Tier (a): bytes in, command or BAD text out, for the parser alone."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refd.protocol import commands as c
from refd.protocol.commands import (
    CommandError,
    parse_append_mailbox,
    parse_arguments,
    parse_command,
    parse_simple,
)

GOOD = [
    (b"a1 CAPABILITY", c.Capability("a1")),
    (b"a1 capability", c.Capability("a1")),
    (b"x.y NOOP", c.Noop("x.y")),
    (b"a LOGOUT", c.Logout("a")),
    (b"a STARTTLS", c.Starttls("a")),
    (b"a ID NIL", c.Id("a", None)),
    (b"a ID nil", c.Id("a", None)),
    (b"a ID ()", c.Id("a", ())),
    (
        b'a ID ("name" "Mutt" "version" NIL)',
        c.Id("a", (("name", "Mutt"), ("version", None))),
    ),
    (b"a LOGIN alice secret", c.Login("a", "alice", "secret")),
    (
        b'a LOGIN "alice@example.org" "se\\"c\\\\ret"',
        c.Login("a", "alice@example.org", 'se"c\\ret'),
    ),
    (b"a LOGIN {5}\r\nalice {6}\r\nsecret", c.Login("a", "alice", "secret")),
    (b"a LOGIN {5+}\r\nalice pw]x", c.Login("a", "alice", "pw]x")),
    (b"a LOGIN {5}\r\nJos\xc3\xa9 x", c.Login("a", "Jos\u00e9", "x")),
    (b"a AUTHENTICATE PLAIN", c.Authenticate("a", "PLAIN", None)),
    (b"a authenticate plain =", c.Authenticate("a", "PLAIN", b"")),
    (
        b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==",
        c.Authenticate("a", "PLAIN", b"\x00alice\x00secret"),
    ),
    (b"a SELECT INBOX", c.Select("a", "INBOX")),
    (b"a SELECT inbox", c.Select("a", "INBOX")),
    (b'a SELECT "InBoX"', c.Select("a", "INBOX")),
    (b"a SELECT inbox/Sub", c.Select("a", "INBOX/Sub")),
    (b"a SELECT inboxes", c.Select("a", "inboxes")),
    (b'a EXAMINE "Shared/Caf&AOk- Menu"', c.Examine("a", "Shared/Caf\u00e9 Menu")),
    (b"a CREATE {8}\r\n100% &-x", c.Create("a", "100% &x")),
    (b"a DELETE Shared/x]", c.Delete("a", "Shared/x]")),
    (b"a RENAME foo bar", c.Rename("a", "foo", "bar")),
    (b"a SUBSCRIBE Shared/Sales", c.Subscribe("a", "Shared/Sales")),
    (b"a UNSUBSCRIBE Shared/Sales", c.Unsubscribe("a", "Shared/Sales")),
    (
        b"a STATUS Shared/Sales (MESSAGES unseen)",
        c.Status("a", "Shared/Sales", ("MESSAGES", "UNSEEN")),
    ),
    (b"a APPEND Drafts {3+}\r\nabc", c.Append("a", "Drafts", 3)),
    (
        b'a APPEND Drafts (\\Seen $Junk) " 7-Feb-1994 21:52:25 -0800" {3+}\r\nabc',
        c.Append("a", "Drafts", 3),
    ),
    (b'a LIST "" ""', c.List("a", "", ("",))),
    (b'a LIST "" *', c.List("a", "", ("*",))),
    (b"a LIST Shared/ %", c.List("a", "Shared/", ("%",))),
    (
        b'a LIST (REMOTE) "" "*"',
        c.List("a", "", ("*",), frozenset({"REMOTE"})),
    ),
    (
        b'a LIST (remote subscribed) "" ("a*" b%) RETURN (CHILDREN)',
        c.List("a", "", ("a*", "b%"), frozenset({"REMOTE", "SUBSCRIBED"}), frozenset({"CHILDREN"})),
    ),
    (b'a LIST () "" ""', c.List("a", "", ("",))),
    (b'a LSUB "" *', c.Lsub("a", "", "*")),
    (b'a RLIST "" "*"', c.Rlist("a", "", "*")),
    (b"a RLSUB Shared/ %", c.Rlsub("a", "Shared/", "%")),
    (b"a NAMESPACE", c.Namespace("a")),
    (b"a FETCH 1:* (FLAGS)", c.Unselected("a", "FETCH")),
    (b"a uid fetch 1 body[]", c.Unselected("a", "UID")),
    (b"a COPY 1 Trash", c.Unselected("a", "COPY")),
    (b"a MOVE 1 Trash", c.Unselected("a", "MOVE")),
]


@pytest.mark.parametrize(("wire", "expected"), GOOD)
def test_parses(wire: bytes, expected: c.Command) -> None:
    assert parse_command(wire + b"\r\n") == expected


BAD = [
    (b"", None, "Empty command line."),
    (b"* LOGIN", None, "Invalid tag: invalid character '*' in tag."),
    (b"a+ NOOP", None, "Invalid tag: invalid character '+' in tag."),
    (b"a\xff NOOP", None, "Invalid tag: invalid character '8-bit' in tag."),
    (b"a", "a", "Missing command name."),
    (b"a  NOOP", "a", "Two spaces in a row."),
    (b"a FROB", "a", "Unknown command FROB."),
    (b"a NOOP x", "a", "Too many arguments."),
    (b"a LOGIN alice", "a", "Missing password."),
    (b"a LOGIN", "a", "Missing user name."),
    (b'a LOGIN "alice secret', "a", "Unterminated quoted user name."),
    (b'a LOGIN "al\\ice" x', "a", 'Invalid escape in quoted user name: only \\\\ and \\" exist.'),
    (b"a LOGIN al\x00ice x", "a", "NUL character in user name."),
    (b"a LOGIN al\xe9 x", "a", "8-bit character in user name."),
    (b'a LOGIN "al\xe9" x', "a", "8-bit character in quoted user name; use a literal."),
    (b"a LOGIN {x}\r\n", "a", "Invalid literal for user name."),
    (b"a LOGIN {9}\r\nab", "a", "Literal for user name is shorter than announced."),
    (b"a LOGIN {2}\r\n\xff\xfe x", "a", "User name is not valid UTF-8."),
    (b"a SELECT", "a", "Missing mailbox name."),
    (b"a SELECT a b", "a", "Too many arguments."),
    (b"a SELECT &Jjo", "a", "Invalid mailbox name: unterminated '&' shift in modified UTF-7."),
    (b"a SELECT {4}\r\nCaf\xe9", "a", "8-bit characters in mailbox name; use modified UTF-7."),
    (b"a SELECT (x)", "a", "Invalid character '(' in mailbox name."),
    (b"a STATUS x ()", "a", "STATUS needs at least one status item."),
    (b"a STATUS x (FOO)", "a", "Unknown STATUS item FOO."),
    (b"a STATUS x MESSAGES", "a", "Expected '(' to open the status item list."),
    (b"a STATUS x (MESSAGES", "a", "Unterminated status item list."),
    (b"a APPEND x abc", "a", "APPEND needs the message as a literal."),
    (b'a APPEND x "bad date" {1+}\r\nx', "a", "Invalid date-time in APPEND."),
    (b'a LIST (FOO) "" *', "a", "Unknown LIST selection option FOO."),
    (b'a LIST (RECURSIVEMATCH) "" *', "a", "RECURSIVEMATCH needs another selection option."),
    (b'a LIST "" * RETURN (BAR)', "a", "Unknown LIST return option BAR."),
    (b'a LIST "" * FOO (BAR)', "a", "Expected RETURN after the LIST patterns."),
    (b"a ID", "a", "Missing ID parameter list."),
    (b'a ID ("a")', "a", "Expected a space before the ID value."),
    (
        b'a ID ("' + b"f" * 31 + b'" "v")',
        "a",
        "ID field longer than 30 octets (RFC 2971 section 3.3).",
    ),
    (b"a AUTHENTICATE", "a", "Missing authentication mechanism."),
    (b"a AUTHENTICATE PLAIN ***", "a", "Invalid character '*' in initial response."),
    (b"a AUTHENTICATE PLAIN AGFsaWNl=x", "a", "Invalid base64 in initial response."),
    (b"a RENAME foo", "a", "Missing new mailbox name."),
]


@pytest.mark.parametrize(("wire", "tag", "text"), BAD)
def test_bad(wire: bytes, tag: str | None, text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(wire + b"\r\n")
    assert (info.value.tag, info.value.text) == (tag, text)


SIMPLE = {b"a1 CAPABILITY", b"a1 capability", b"x.y NOOP", b"a LOGOUT", b"a STARTTLS"}
SIMPLE |= {b"a NAMESPACE", b"a LOGIN alice secret"}


@pytest.mark.parametrize(("wire", "expected"), GOOD)
def test_the_one_match_reads_simple_lines_as_the_reader_does(
    wire: bytes, expected: c.Command
) -> None:
    simple = parse_simple(wire + b"\r\n")
    if wire in SIMPLE:
        assert simple == expected and type(simple) is type(expected)
    else:
        assert simple is None


@pytest.mark.parametrize(("wire", "tag", "text"), BAD)
def test_the_one_match_leaves_every_bad_line_to_the_reader(
    wire: bytes, tag: str | None, text: str
) -> None:
    assert parse_simple(wire + b"\r\n") is None


# token bytes the grammar allows, and those it refuses somewhere
_TOKEN_BYTES = st.sampled_from(
    [
        *(b"a", b"Z", b"0", b".", b"+", b"]", b"*", b"%", b"(", b'"', b"\\", b"{", b"}"),
        *(b"\xe9", b"\x00", b"\x7f", b"\t", b"\r", b"\n", b" ", b"  "),
    ]
)
_TOKEN = st.lists(_TOKEN_BYTES, min_size=0, max_size=6).map(b"".join)
_NAME = st.sampled_from([b"LOGIN", b"login", b"LOGOUT", b"NOOP", b"SELECT", b"CAPABILITY", b"X"])


@settings(max_examples=400, deadline=None)
@given(_TOKEN, _NAME, st.lists(_TOKEN, max_size=3))
def test_the_one_match_never_reads_a_line_otherwise_than_the_reader(
    tag: bytes, name: bytes, arguments: list[bytes]
) -> None:
    wire = b" ".join([tag, name, *arguments]) + b"\r\n"
    simple = parse_simple(wire)
    try:
        expected: c.Command | None = parse_command(wire)
    except CommandError:
        expected = None
    assert simple is None or (simple == expected and type(simple) is type(expected))


def test_id_pair_limit() -> None:
    pairs = b" ".join(b'"f%d" "v"' % i for i in range(31))
    with pytest.raises(CommandError, match="More than 30"):
        parse_command(b"a ID (" + pairs + b")\r\n")


def test_append_mailbox_from_prefix() -> None:
    prefix = b'a7 APPEND "Shared/Caf&AOk- Menu" (\\Seen) {310}\r\n'
    assert parse_append_mailbox(prefix) == "Shared/Caf\u00e9 Menu"


def test_password_not_in_repr() -> None:
    cmd = parse_command(b"a LOGIN alice hunter2\r\n")
    assert "hunter2" not in repr(cmd)
    auth = parse_command(b"a AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n")
    assert "hunter2" not in repr(auth) and "AGFsaWNl" not in repr(auth)


def test_dispatch_tables_cover_the_same_commands() -> None:
    from refd.protocol.connection import _BY_NAME
    from refd.session import HANDLERS

    # Every wire name has a state rule, and every state rule a handler.
    assert set(_BY_NAME) == set(c.PARSERS)
    assert set(HANDLERS) == set(c.ALLOWED) == set(_BY_NAME.values())


@pytest.mark.parametrize(
    ("wire", "patterns"),
    [
        # At the limit: read whole, RETURN options included.
        (b'a LIST (REMOTE) "" (a b) RETURN (CHILDREN)', ("a", "b")),
        # One over: read whole too (the session refuses it).
        (b'a LIST (REMOTE) "" (a b c)', ("a", "b", "c")),
        # Further over: reading stops one past the limit, whatever follows.
        (b'a LIST (REMOTE) "" (a b c d e f) RETURN (CHILDREN)', ("a", "b", "c")),
        (b'a LIST (REMOTE) "" (a b c "d" {1+}\r\ne \x00garbage', ("a", "b", "c")),
    ],
)
def test_list_patterns_are_read_one_past_the_limit(wire: bytes, patterns: tuple[str, ...]) -> None:
    cmd = parse_arguments(wire + b"\r\n", "a", "LIST", 2)
    assert isinstance(cmd, c.List)
    assert cmd.patterns == patterns


def test_without_a_limit_every_list_pattern_is_read() -> None:
    wire = b'a LIST "" (' + b" ".join(b"p%d" % i for i in range(500)) + b")\r\n"
    cmd = parse_command(wire)
    assert isinstance(cmd, c.List)
    assert len(cmd.patterns) == 500
