"""The sans-IO IMAP client core: bytes in, events out, commands to bytes.

Tables of (bytes from the server, events) for `Client`, and the pure
helpers it is built from: line splitting with literals, response parsing,
string and literal encoding. The trio adapter and the two users of the
core are tested in tests/test_imap_client.py, tests/auth/test_imap_backend.py
and tests/test_probe_unit.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refd.protocol.client import (
    NEED_DATA,
    Answer,
    Client,
    Continue,
    Greeting,
    LineReader,
    Response,
    ResponseError,
    Untagged,
    capabilities,
    check_greeting,
    id_chunks,
    login_chunks,
    parse_response,
    printable,
    render,
    show,
)

# -- a reference parser for what the client sends (the fake backends use it too) ------

_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\r\n")


def _astring(data: bytes) -> tuple[bytes, bytes]:
    """One astring (RFC 9051 §9) from the front of `data`: (value, rest)."""
    if data[:1] == b'"':
        out, i = bytearray(), 1
        while data[i : i + 1] != b'"':
            if data[i : i + 1] == b"\\":
                assert data[i + 1 : i + 2] in (b"\\", b'"'), "only quoted-specials are escaped"
                i += 1
            assert data[i] < 0x80 and data[i] not in b"\r\n\x00", "QUOTED-CHAR is 7-bit TEXT-CHAR"
            out.append(data[i])
            i += 1
        return bytes(out), data[i + 1 :]
    literal = _LITERAL.match(data)
    if literal:
        size = int(literal.group(1))
        return data[literal.end() : literal.end() + size], data[literal.end() + size :]
    atom = re.match(rb"[^ \r\n(){%*\"\\\]]+", data)
    assert atom, f"not an astring: {data[:20]!r}"
    return atom.group(0), data[atom.end() :]


def parse_login(wire: bytes) -> tuple[str, str, str]:
    """tag, user, password from one complete `tag LOGIN user password` CRLF."""
    tag, _, rest = wire.partition(b" ")
    command, _, rest = rest.partition(b" ")
    assert command.upper() == b"LOGIN"
    user, rest = _astring(rest)
    assert rest[:1] == b" "
    password, rest = _astring(rest[1:])
    assert rest == b"\r\n", rest
    return tag.decode(), user.decode("utf-8"), password.decode("utf-8")


# -- pure: LineReader -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("feeds", "lines"),
    [
        ([b"* OK hi\r\n"], [b"* OK hi\r\n"]),
        ([b"* OK", b" hi\r", b"\n"], [b"* OK hi\r\n"]),
        ([b"a OK x\r\nb NO y\r\n"], [b"a OK x\r\n", b"b NO y\r\n"]),
        ([b"* OK bare LF\n"], [b"* OK bare LF\n"]),
        # A literal is part of the logical line, CRLF inside it included.
        ([b"* 1 FETCH (BODY {4}\r\n", b"a\r\nb)\r\n"], [b"* 1 FETCH (BODY {4}\r\na\r\nb)\r\n"]),
        ([b"* X {0}\r\n)\r\n"], [b"* X {0}\r\n)\r\n"]),
        ([b"* OK no end yet"], []),
    ],
)
def test_line_reader(feeds: list[bytes], lines: list[bytes]) -> None:
    reader = LineReader()
    got = []
    for data in feeds:
        reader.feed(data)
        while (line := reader.next_line()) is not None:
            got.append(line)
    assert got == lines


def test_line_reader_refuses_endless_lines_before_they_end() -> None:
    reader = LineReader(max_line_bytes=100)
    reader.feed(b"* OK " + b"x" * 95)  # 100 bytes, no newline: still fine
    assert reader.next_line() is None
    reader.feed(b"x")
    with pytest.raises(ResponseError, match="longer than 100 bytes"):
        reader.next_line()


def test_line_reader_refuses_a_literal_that_would_overflow_at_once() -> None:
    reader = LineReader(max_line_bytes=100)
    reader.feed(b"* X {1000}\r\n")
    with pytest.raises(ResponseError):
        reader.next_line()


def test_line_reader_takes_a_line_of_exactly_the_limit() -> None:
    reader = LineReader(max_line_bytes=100)
    line = b"* OK " + b"x" * 93 + b"\r\n"
    reader.feed(line)
    assert reader.next_line() == line


# -- pure: parse_response ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "response"),
    [
        (
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n",
            Response("*", "OK", "CAPABILITY", "IMAP4rev1 LITERAL+", "ready"),
        ),
        (b"* BYE shutting down\r\n", Response("*", "BYE", "", "", "shutting down")),
        (b"* PREAUTH hi\r\n", Response("*", "PREAUTH", "", "", "hi")),
        (b"* CAPABILITY IMAP4rev1\r\n", Response("*", "", "", "", "CAPABILITY IMAP4rev1")),
        (b"+ go ahead\r\n", Response("+", "", "", "", "go ahead")),
        (b"+\r\n", Response("+", "", "", "", "")),
        (
            b"r4 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            Response("r4", "NO", "AUTHENTICATIONFAILED", "", "Authentication failed."),
        ),
        (
            b"r4 no [unavailable] try later\r\n",
            Response("r4", "NO", "UNAVAILABLE", "", "try later"),
        ),
        (b"r4 OK\r\n", Response("r4", "OK", "", "", "")),
        (b"r4 BAD [oops\r\n", Response("r4", "BAD", "", "", "[oops")),
    ],
)
def test_parse_response(line: bytes, response: Response) -> None:
    assert parse_response(line) == response


@pytest.mark.parametrize(
    "line",
    [
        b"\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"r4 MAYBE\r\n",
        b"(x) OK\r\n",
        b"* \r\n",
        b"r4\r\n",
    ],
)
def test_parse_response_refuses_garbage(line: bytes) -> None:
    with pytest.raises(ResponseError):
        parse_response(line)


def test_capabilities_from_code_or_data() -> None:
    assert capabilities(parse_response(b"* OK [CAPABILITY imap4rev1 Literal+] hi\r\n")) == (
        frozenset({"IMAP4REV1", "LITERAL+"})
    )
    assert capabilities(parse_response(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n")) == (
        frozenset({"IMAP4REV1", "STARTTLS"})
    )
    assert capabilities(parse_response(b"* OK hi\r\n")) is None


# -- pure: login_chunks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password", "caps", "chunks"),
    [
        ("alice", "pw", set(), [b'r4 LOGIN "alice" "pw"\r\n']),
        ("a", 'q"b\\s', set(), [b'r4 LOGIN "a" "q\\"b\\\\s"\r\n']),
        ("a", "", set(), [b'r4 LOGIN "a" ""\r\n']),
        ("a", "pä", {"LITERAL+"}, [b'r4 LOGIN "a" {3+}\r\np\xc3\xa4\r\n']),
        ("a", "pä", {"LITERAL-"}, [b'r4 LOGIN "a" {3+}\r\np\xc3\xa4\r\n']),
        ("a", "pä", set(), [b'r4 LOGIN "a" {3}\r\n', b"p\xc3\xa4\r\n"]),
        ("jö", "pä", set(), [b"r4 LOGIN {3}\r\n", b"j\xc3\xb6 {3}\r\n", b"p\xc3\xa4\r\n"]),
    ],
)
def test_login_chunks(user: str, password: str, caps: set[str], chunks: list[bytes]) -> None:
    assert list(login_chunks("r4", user, password, frozenset(caps))) == chunks


def test_literal_minus_only_up_to_4096_octets() -> None:
    big = "ä" * 2049  # 4098 octets
    chunks = login_chunks("r4", "a", big, frozenset({"LITERAL-"}))
    assert chunks[0] == b'r4 LOGIN "a" {4098}\r\n'


@pytest.mark.parametrize("bad", ["a\x00b", "a\rb", "a\nb"])
def test_login_chunks_refuse_nul_cr_lf(bad: str) -> None:
    with pytest.raises(ValueError, match="NUL, CR or LF") as info:
        login_chunks("r4", "alice", bad, frozenset())
    assert bad not in str(info.value)
    with pytest.raises(ValueError):
        login_chunks("r4", bad, "pw", frozenset())


@given(
    user=st.text(st.characters(blacklist_characters="\x00\r\n", blacklist_categories=["Cs"])),
    password=st.text(st.characters(blacklist_characters="\x00\r\n", blacklist_categories=["Cs"])),
    caps=st.sampled_from([frozenset(), frozenset({"LITERAL+"}), frozenset({"LITERAL-"})]),
)
def test_login_chunks_round_trip(user: str, password: str, caps: frozenset[str]) -> None:
    assert parse_login(b"".join(login_chunks("r4", user, password, caps))) == ("r4", user, password)


# -- the Client state machine --------------------------------------------------------------

GREETING = b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"


def drain(client: Client, data: bytes = b"") -> list[object]:
    """Feed `data`; collect events up to NEED_DATA (included)."""
    if data:
        client.receive_data(data)
    out: list[object] = []
    while True:
        event = client.next_event()
        out.append(event)
        if event is NEED_DATA or isinstance(event, (Answer, Greeting)):
            return out


def greeted(data: bytes = GREETING) -> Client:
    client = Client()
    events = drain(client, data)
    assert isinstance(events[-1], Greeting)
    return client


def ok(tag: str, text: str = "done", code: str = "", args: str = "") -> Response:
    return Response(tag, "OK", code, args, text)


@pytest.mark.parametrize(
    ("feeds", "want"),
    [
        ([b"* OK ready\r\n"], [Greeting(Response("*", "OK", "", "", "ready"))]),
        ([b"* OK re", b"ady\r\n"], [NEED_DATA, Greeting(Response("*", "OK", "", "", "ready"))]),
        ([b"* PREAUTH hi\r\n"], [Greeting(Response("*", "PREAUTH", "", "", "hi"))]),
        # judged by check_greeting, not refused by the state machine
        ([b"a1 OK hello\r\n"], [Greeting(Response("a1", "OK", "", "", "hello"))]),
    ],
)
def test_greeting_events(feeds: list[bytes], want: list[object]) -> None:
    client = Client()
    got: list[object] = []
    for data in feeds:
        got += drain(client, data)
    assert got == want
    assert client.idle


def test_greeting_capabilities_and_preauth() -> None:
    assert greeted().capabilities == frozenset({"IMAP4REV1", "STARTTLS"})
    assert greeted(b"* OK hi\r\n").capabilities is None
    assert greeted(b"* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n").preauth
    assert not greeted().preauth


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"a1 OK hello\r\n", "not an IMAP greeting: OK hello"),
        (b"* NO go away\r\n", "not an IMAP greeting: NO go away"),
        (b"* CAPABILITY IMAP4rev1\r\n", "not an IMAP greeting: "),
    ],
)
def test_check_greeting_refuses(line: bytes, error: str) -> None:
    with pytest.raises(ResponseError, match=re.escape(error)):
        check_greeting(parse_response(line))
    for good in (b"* OK x\r\n", b"* PREAUTH x\r\n", b"* BYE x\r\n"):
        check_greeting(parse_response(good))


def test_command_collects_untagged_lines_until_its_tag() -> None:
    client = greeted()
    assert client.send_command("a1", [b"a1 SELECT INBOX\r\n"]) == b"a1 SELECT INBOX\r\n"
    assert not client.idle
    data = b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] u\r\na1 OK [READ-WRITE] done\r\n"
    events = drain(client, data)
    exists = Untagged(Response("*", "", "", "", "3 EXISTS"), b"* 3 EXISTS\r\n")
    uidvalidity = Untagged(
        Response("*", "OK", "UIDVALIDITY", "7", "u"), b"* OK [UIDVALIDITY 7] u\r\n"
    )
    tagged = Response("a1", "OK", "READ-WRITE", "", "done")
    assert events == [exists, uidvalidity, Answer(tagged, (exists, uidvalidity))]
    assert client.idle


def test_synchronizing_literal_chunk_waits_for_the_continuation() -> None:
    client = greeted()
    chunks = login_chunks("a1", "jö", "pä", frozenset())
    assert client.send_command("a1", chunks) == b"a1 LOGIN {3}\r\n"
    assert drain(client) == [NEED_DATA]  # nothing more goes out before "+"
    assert drain(client, b"+ go\r\n") == [Continue(b"j\xc3\xb6 {3}\r\n"), NEED_DATA]
    assert drain(client, b"+\r\n") == [Continue(b"p\xc3\xa4\r\n"), NEED_DATA]
    assert drain(client, b"a1 OK in\r\n") == [Answer(ok("a1", "in"), ())]


def test_a_refused_literal_ends_the_command_without_its_body() -> None:
    client = greeted()
    client.send_command("a2", [b"a2 APPEND INBOX {5}\r\n", b"hello\r\n"])
    answer = Response("a2", "NO", "REFERRAL", "imap://h/INBOX", "go")
    assert drain(client, b"a2 NO [REFERRAL imap://h/INBOX] go\r\n") == [Answer(answer, ())]
    assert client.idle


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"zz OK yes\r\n", "unexpected response 'OK yes' (tag zz)"),
        (b"+ more?\r\n", "unexpected response 'more?' (tag +)"),  # nothing left to send
        (b"\x00\x01garbage\r\n", "not an IMAP response"),
        (b"a1 PERHAPS\r\n", "not an IMAP response (no OK/NO/BAD)"),
        (b"* \r\n", "empty untagged response"),
    ],
)
def test_command_answer_errors(data: bytes, error: str) -> None:
    client = greeted()
    client.send_command("a1", [b"a1 NOOP\r\n"])
    with pytest.raises(ResponseError, match=re.escape(error)):
        drain(client, data)


def test_end_of_stream_names_the_bye_before_it() -> None:
    client = greeted()
    client.send_command("a1", [b"a1 LOGIN a b\r\n"])
    # RFC 9051 §7.1.5: BYE is data like any other; read on until the close.
    assert drain(client, b"* BYE [ALERT] going down\r\n")[-1] is NEED_DATA
    assert client.bye == Response("*", "BYE", "ALERT", "", "going down")
    client.receive_data(b"")
    with pytest.raises(ResponseError) as info:
        client.next_event()
    assert str(info.value) == "the server closed the connection after * BYE [ALERT] going down"

    quiet = Client()
    quiet.receive_data(b"* OK hal")
    quiet.receive_data(b"")
    with pytest.raises(ResponseError, match=r"^the server closed the connection$"):
        quiet.next_event()


def test_bye_then_the_tagged_answer_still_ends_the_command() -> None:
    client = greeted()
    client.send_command("a9", [b"a9 LOGOUT\r\n"])
    events = drain(client, b"* BYE Logging out\r\na9 OK Logout completed.\r\n")
    assert isinstance(events[-1], Answer) and events[-1].tagged.condition == "OK"


def test_answer_size_is_bounded_over_all_lines() -> None:
    client = Client(max_answer_bytes=100)
    drain(client, GREETING)
    client.send_command("a1", [b'a1 LIST "" *\r\n'])
    line = b'* LIST () "/" ' + b"x" * 30 + b"\r\n"  # 46 bytes
    drain(client, line + line)
    with pytest.raises(ResponseError, match="answer longer than 100 bytes"):
        drain(client, line)


def test_capabilities_follow_the_latest_response_that_lists_them() -> None:
    client = greeted()
    client.send_command("a1", [b"a1 CAPABILITY\r\n"])
    drain(client, b"* CAPABILITY IMAP4rev1 LOGINDISABLED STARTTLS\r\na1 OK done\r\n")
    assert client.capabilities == frozenset({"IMAP4REV1", "LOGINDISABLED", "STARTTLS"})
    client.send_command("a2", [b"a2 LOGIN a b\r\n"])
    drain(client, b"a2 OK [CAPABILITY IMAP4rev1 IDLE] in\r\n")
    assert client.capabilities == frozenset({"IMAP4REV1", "IDLE"})


def test_start_tls_forgets_capabilities_and_refuses_injected_bytes() -> None:
    client = greeted()
    client.send_command("a1", [b"a1 STARTTLS\r\n"])
    drain(client, b"a1 OK Begin TLS\r\n")
    client.start_tls()
    assert client.capabilities is None

    injected = greeted()
    injected.send_command("a1", [b"a1 STARTTLS\r\n"])
    drain(injected, b"a1 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n")
    with pytest.raises(
        ResponseError, match=re.escape("data after the STARTTLS answer (injection?)")
    ):
        injected.start_tls()


def test_misuse_is_a_programming_error() -> None:
    client = Client()
    with pytest.raises(RuntimeError):
        client.send_command("a1", [b"a1 NOOP\r\n"])  # before the greeting
    client = greeted()
    with pytest.raises(RuntimeError):
        client.next_event()  # no command in flight
    client.send_command("a1", [b"a1 NOOP\r\n"])
    with pytest.raises(RuntimeError):
        client.send_command("a2", [b"a2 NOOP\r\n"])  # one at a time


# -- text for people -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "want"),
    [
        # more cases in tests/test_probe_unit.py, whose output this is
        (b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n", "OK [CAPABILITY ...] Logged in"),
        (b"* BYE " + b"x" * 400 + b"\r\n", "BYE " + "x" * 296 + "..."),
    ],
)
def test_render(line: bytes, want: str) -> None:
    assert render(parse_response(line)) == want


def test_show_and_printable() -> None:
    assert show(b"SSH-2.0\x07\r\n") == "'SSH-2.0\\\\x07'"
    assert show("x" * 300) == repr("x" * 200 + "...")
    assert printable("tab\there\r\n", 100) == "tab\\there"


# -- ID ------------------------------------------------------------------------------------


def test_id_chunks_use_literals_like_login() -> None:
    assert id_chunks("r6", [("x-session-id", "é")], frozenset({"LITERAL+"})) == (
        b'r6 ID ("x-session-id" {2+}\r\n\xc3\xa9)\r\n',
    )
