"""``refd probe`` without real peers: the pure parts as tables, and a scripted server.

Tables: arguments and their errors, the exit-code mapping of tagged
answers, loop detection over referral URLs, response parsing and command
encoding. The scripted server (a thread on 127.0.0.1 answering from a
script) covers what no real Dovecot or refd does on cue: a ``* BYE
[REFERRAL]`` greeting, literals in untagged data, a server that goes
silent, an endless line, bytes injected after STARTTLS's OK.
tests/interop/test_probe.py and test_e2e.py cover the real thing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from refd import probe as p
from refd.probe.plan import (
    Exit,
    HopKey,
    Plan,
    Target,
    Verdict,
    command_chunks,
    command_verdict,
    hop_tls,
    login_verdict,
    plan_referral,
    probe_message,
)
from refd.probe.report import result_data
from refd.protocol import client
from refd.protocol.client import ResponseError, parse_response

# -- arguments -------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refd probe")
    p.add_arguments(parser)
    return parser


def parse(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


BASE = ("--door", "127.0.0.1:1143", "--user", "alice", "--password-env", "PROBE_PW")


@pytest.mark.parametrize(
    ("text", "default", "want"),
    [
        ("127.0.0.1:1143", 143, ("127.0.0.1", 1143)),
        ("imap.example.org", 143, ("imap.example.org", 143)),
        ("imap.example.org", 993, ("imap.example.org", 993)),
        ("[::1]:143", 143, ("::1", 143)),
        ("[::1]", 993, ("::1", 993)),
        ("[2001:db8::1]:10143", 143, ("2001:db8::1", 10143)),
    ],
)
def test_parse_hostport(text: str, default: int, want: tuple[str, int]) -> None:
    assert p.parse_hostport(text, default) == want


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("::1", "write an IPv6 address in brackets"),
        ("[::1", "write [IPv6]:PORT"),
        ("[::1]143", "write [IPv6]:PORT"),
        ("[::1]:", "empty port"),
        ("host:", "empty port"),
        (":143", "is not HOST:PORT"),
        ("host:0", "the port must be 1 to 65535"),
        ("host:65536", "the port must be 1 to 65535"),
        ("host:x1", "the port must be 1 to 65535"),
        ("a b:143", "is not HOST:PORT"),
    ],
)
def test_parse_hostport_errors(text: str, error: str) -> None:
    with pytest.raises(p.UsageError, match=re.escape(error)):
        p.parse_hostport(text, 143)


def test_defaults() -> None:
    args = parse(*BASE)
    assert (args.mailbox, args.command, args.timeout, args.max_hops) == ("INBOX", "SELECT", 10, 10)
    assert not (args.tls or args.starttls or args.insecure or args.json)
    assert parse(*BASE, "--command", "status").command == "STATUS"


@pytest.mark.parametrize(
    "argv",
    [
        (),  # --door, --user and a password source are required
        ("--door", "h:1", "--user", "u"),  # no password source
        (*BASE, "--password-file", "f"),  # two password sources
        (*BASE, "--tls", "--starttls"),
        (*BASE, "--command", "FETCH"),
        (*BASE, "--timeout", "0"),
        (*BASE, "--timeout", "soon"),
        (*BASE, "--max-hops", "0"),
        (*BASE, "--max-hops", "101"),
        (*BASE, "--password", "secret"),  # never on the command line
    ],
)
def test_usage_errors_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    capsys.readouterr()


def test_help_documents_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code in Exit:
        assert re.search(rf"^  {int(code)}  ", text, re.MULTILINE), code
        assert re.search(rf"^{int(code)}  ", p.__doc__ or "", re.MULTILINE), code
    assert len({int(c) for c in Exit}) == len(Exit)  # distinct


@pytest.mark.parametrize(
    ("content", "want"),
    [
        ("secret\n", "secret"),
        ("secret\r\n", "secret"),
        ("secret", "secret"),
        ("secret\n\n", "secret\n"),  # one newline only: the rest is refused below
        ("  spaced  \n", "  spaced  "),
        ("pässwörd\n", "pässwörd"),
    ],
)
def test_password_file_strips_one_newline(tmp_path: Path, content: str, want: str) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content.encode())
    args = parse("--door", "h", "--user", "u", "--password-file", str(path))
    if "\n" in want:
        with pytest.raises(p.UsageError, match="NUL, CR or LF"):
            p.options_from_args(args)
    else:
        assert p.options_from_args(args).password == want


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_PW", "from-env")
    options = p.options_from_args(parse(*BASE))
    assert options.password == "from-env"
    assert "from-env" not in repr(options)


@pytest.mark.parametrize(
    ("extra", "env", "error"),
    [
        ((), None, "the variable PROBE_PW is not set"),
        ((), "", "the password is empty"),
        ((), "a\rb", "contains NUL, CR or LF"),
        (("--cafile", "ca.pem"), "pw", "--cafile and --insecure need --tls or --starttls"),
        (("--insecure",), "pw", "--cafile and --insecure need --tls or --starttls"),
        (("--tls", "--insecure", "--cafile", "x"), "pw", "exclude each other"),
        (("--tls", "--cafile", "/nonexistent/ca.pem"), "pw", "cannot load --cafile"),
        (("--mailbox", ""), "pw", "--mailbox: empty"),
    ],
)
def test_option_errors(
    monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], env: str | None, error: str
) -> None:
    if env is None:
        monkeypatch.delenv("PROBE_PW", raising=False)
    else:
        monkeypatch.setenv("PROBE_PW", env)
    with pytest.raises(p.UsageError, match=re.escape(error)):
        p.options_from_args(parse(*BASE, *extra))


def test_tls_default_port_and_run_usage_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_PW", "pw")
    options = p.options_from_args(parse("--door", "h", "--user", "u", "--password-env", "PROBE_PW"))
    assert (options.door_port, options.tls) == (143, p.TlsMode.NONE)
    options = p.options_from_args(
        parse("--door", "h", "--user", "u", "--password-env", "PROBE_PW", "--tls")
    )
    assert (options.door_port, options.tls) == (993, p.TlsMode.IMPLICIT)

    out, err = io.StringIO(), io.StringIO()
    args = parse("--door", "[::1", "--user", "u", "--password-env", "PROBE_PW")
    assert p.run(args, stdout=out, stderr=err) == 2
    assert err.getvalue() == "refd probe: --door '[::1': write [IPv6]:PORT\n"
    assert out.getvalue() == ""


# -- exit-code mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "code", "at_door", "want"),
    [
        ("NO", "REFERRAL", True, Verdict.FOLLOW),
        ("NO", "REFERRAL", False, Verdict.FOLLOW),
        ("OK", "REFERRAL", True, Verdict.CONTINUE),  # accept mode: stay
        ("OK", "", True, Verdict.CONTINUE),
        ("OK", "CAPABILITY", False, Verdict.CONTINUE),
        ("NO", "AUTHENTICATIONFAILED", True, Exit.AUTH_FAILED),
        ("NO", "AUTHORIZATIONFAILED", True, Exit.AUTH_FAILED),
        ("NO", "EXPIRED", True, Exit.AUTH_FAILED),
        ("NO", "PRIVACYREQUIRED", True, Exit.AUTH_FAILED),
        ("NO", "", True, Exit.AUTH_FAILED),
        ("BAD", "", True, Exit.AUTH_FAILED),
        ("NO", "UNAVAILABLE", True, Exit.NO_REFERRAL),  # refd: no route for the user
        ("NO", "UNAVAILABLE", False, Exit.AUTH_FAILED),
        ("NO", "AUTHENTICATIONFAILED", False, Exit.AUTH_FAILED),
    ],
)
def test_login_verdict(condition: str, code: str, at_door: bool, want: Verdict | Exit) -> None:
    assert login_verdict(condition, code, at_door=at_door) is want


@pytest.mark.parametrize(
    ("condition", "code", "at_door", "want"),
    [
        ("NO", "REFERRAL", True, Verdict.FOLLOW),
        ("NO", "REFERRAL", False, Verdict.FOLLOW),
        ("OK", "READ-WRITE", False, Exit.OK),
        ("OK", "", True, Exit.OK),  # the door served it itself
        ("NO", "NONEXISTENT", False, Exit.REFUSED),
        ("BAD", "", False, Exit.REFUSED),
        ("NO", "UNAVAILABLE", True, Exit.NO_REFERRAL),
        ("NO", "NONEXISTENT", True, Exit.NO_REFERRAL),
        ("BAD", "", True, Exit.NO_REFERRAL),
    ],
)
def test_command_verdict(condition: str, code: str, at_door: bool, want: Verdict | Exit) -> None:
    assert command_verdict(condition, code, at_door=at_door) is want


# -- referrals and loops ------------------------------------------------------------------

DOOR = Target("door.example.org", 143, "alice", "INBOX")


def plan(urls: list[str], visited: dict[HopKey, int] | None = None, **kw: int) -> Plan:
    return plan_referral(
        urls,
        current=kw.pop("current", DOOR),  # type: ignore[arg-type]
        visited=visited if visited is not None else {DOOR.key: 1},
        next_hop=kw.get("next_hop", 2),
        max_hops=kw.get("max_hops", 10),
    )


@pytest.mark.parametrize(
    ("url", "host", "port", "user", "mailbox", "url_mailbox"),
    [
        (
            "imap://alice;AUTH=*@mail1.example.org/",
            "mail1.example.org",
            143,
            "alice",
            "INBOX",
            None,
        ),
        (
            "imap://alice;AUTH=*@m:10143/Shared/Sales",
            "m",
            10143,
            "alice",
            "Shared/Sales",
            "Shared/Sales",
        ),
        ("imap://a%40b.org;AUTH=*@m/", "m", 143, "a@b.org", "INBOX", None),  # URL user wins
        ("imap://;AUTH=*@m/", "m", 143, "alice", "INBOX", None),  # no user: keep ours
        ("imap://m/Caf%C3%A9%20Menu", "m", 143, "alice", "Café Menu", "Café Menu"),
        ("imap://alice;AUTH=*@[::1]:1143/", "::1", 1143, "alice", "INBOX", None),
    ],
)
def test_referral_targets(
    url: str, host: str, port: int, user: str, mailbox: str, url_mailbox: str | None
) -> None:
    got = plan([url])
    assert got.stop is None and got.unusable == ()
    assert got.targets == (Target(host, port, user, mailbox, url=url, url_mailbox=url_mailbox),)


def test_referral_keeps_replica_order_and_reports_unusable_urls() -> None:
    urls = ["http://example.org/", "imap://alice;AUTH=*@a/X", "imap://al%0Aice@b/", "imap://c/X"]
    got = plan(urls)
    assert [t.host for t in got.targets] == ["a", "c"]
    assert [u for u, _ in got.unusable] == [urls[0], urls[2]]
    assert "not an imap:// URL" in got.unusable[0][1]
    assert got.unusable[1][1] == "the user name in the URL cannot be sent in LOGIN"


@pytest.mark.parametrize(
    ("visited", "url", "looped"),
    [
        # the door itself, spelt the same way (host case does not matter)
        (
            {HopKey("door.example.org", 143, "alice", None): 1},
            "imap://alice@DOOR.example.org/",
            True,
        ),
        # same server, another mailbox: not a loop
        ({HopKey("m", 143, "alice", "A"): 2}, "imap://alice@m/B", False),
        # same server and mailbox, another user: not a loop
        ({HopKey("m", 143, "alice", "A"): 2}, "imap://bob@m/A", False),
        # same server and mailbox and user: a loop
        ({HopKey("m", 143, "alice", "A"): 2}, "imap://alice;AUTH=*@m:143/A", True),
        # another port: not a loop
        ({HopKey("m", 143, "alice", None): 2}, "imap://alice@m:144/", False),
    ],
)
def test_loop_detection(visited: dict[HopKey, int], url: str, looped: bool) -> None:
    got = plan([url], visited)
    if looped:
        seen = next(iter(visited.values()))
        assert got.stop == (Exit.LOOP, f"referral loop: {url} was already visited at hop {seen}")
    else:
        assert got.stop is None and len(got.targets) == 1


def test_loop_in_any_replica_stops() -> None:
    visited = {DOOR.key: 1, HopKey("m2", 143, "alice", "X"): 2}
    got = plan(["imap://alice@m1/X", "imap://alice@m2/X"], visited)
    assert got.stop is not None and got.stop[0] is Exit.LOOP


@pytest.mark.parametrize(
    ("next_hop", "max_hops", "stops"), [(2, 2, False), (3, 2, True), (2, 1, True)]
)
def test_max_hops(next_hop: int, max_hops: int, stops: bool) -> None:
    got = plan(["imap://alice@m/"], next_hop=next_hop, max_hops=max_hops)
    if stops:
        assert got.stop == (
            Exit.LOOP,
            f"more than --max-hops {max_hops} hops: not following imap://alice@m/",
        )
    else:
        assert got.stop is None


# -- responses and commands ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"3 EXISTS", ["3", "EXISTS"]),
        (b'LIST (\\HasNoChildren) "/" INBOX', ["LIST", ["\\HasNoChildren"], "/", "INBOX"]),
        (b'LIST (\\Noselect) NIL ""', ["LIST", ["\\Noselect"], None, ""]),
        (b'LIST () "/" "a \\"q\\" \\\\ b"', ["LIST", [], "/", 'a "q" \\ b']),
        (b'LIST () "/" {9}\r\nwith\r\nCR!', ["LIST", [], "/", "with\r\nCR!"]),
        (
            b'STATUS "A B" (MESSAGES 2 UIDNEXT 7)',
            ["STATUS", "A B", ["MESSAGES", "2", "UIDNEXT", "7"]],
        ),
        (b"STATUS INBOX (MESSAGES 2)\r\n", ["STATUS", "INBOX", ["MESSAGES", "2"]]),
        (b'X ((a) (b c)) nil "NIL"', ["X", [["a"], ["b", "c"]], None, "NIL"]),
        (b"FETCH (BODY[TEXT] {2+}\r\nhi)", ["FETCH", ["BODY[TEXT]", "hi"]]),
    ],
)
def test_parse_data(data: bytes, want: list[client.Value]) -> None:
    assert client.parse_data(data) == want


@pytest.mark.parametrize(
    "data", [b"(a", b"a)", b'"open', b"{5}\r\nab", b"{x}\r\nab", b'LIST () "/" {3}abc']
)
def test_parse_data_errors(data: bytes) -> None:
    with pytest.raises(ResponseError):
        client.parse_data(data)


def answers(*lines: bytes) -> list[client.Untagged]:
    return [client.Untagged(parse_response(line), line) for line in lines]


def test_result_data() -> None:
    select = answers(
        b"* FLAGS (\\Seen)\r\n",
        b"* 12 EXISTS\r\n",
        b"* 1 RECENT\r\n",
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
    )
    tagged = parse_response(b"p3 OK [READ-ONLY] Examine completed\r\n")
    assert result_data("EXAMINE", select, tagged) == {
        "exists": 12,
        "uidvalidity": 3857529045,
        "access": "READ-ONLY",
    }
    status = answers(b'* STATUS "Shared/Caf&AOk- Menu" (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 9)\r\n')
    ok = parse_response(b"p3 OK done\r\n")
    assert result_data("STATUS", status, ok) == {"messages": 2, "uidnext": 3, "uidvalidity": 9}
    listing = answers(
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n',
        b'* LIST () "/" "Shared/Caf&AOk- Menu"\r\n',
        b'* LIST () "/" {4}\r\nA&-B\r\n',
        b"* OK [ALERT] not a list\r\n",
    )
    assert result_data("LIST", listing, ok) == {
        "entries": [
            {"flags": ["\\HasNoChildren"], "delimiter": "/", "name": "INBOX"},
            {"flags": [], "delimiter": "/", "name": "Shared/Café Menu"},
            {"flags": [], "delimiter": "/", "name": "A&B"},
        ]
    }
    appended = parse_response(b"p3 OK [APPENDUID 38505 3955] APPEND completed\r\n")
    assert result_data("APPEND", [], appended) == {"appenduid": "38505 3955"}


MESSAGE = b"Subject: x\r\n\r\nhi\r\n"


@pytest.mark.parametrize(
    ("command", "mailbox", "caps", "want"),
    [
        ("SELECT", "INBOX", (), (b"p1 SELECT INBOX\r\n",)),
        ("EXAMINE", "Shared/Café Menu", (), (b'p1 EXAMINE "Shared/Caf&AOk- Menu"\r\n',)),
        ("CREATE", "Q&A", (), (b"p1 CREATE Q&-A\r\n",)),
        ("DELETE", "100% sure", (), (b'p1 DELETE "100% sure"\r\n',)),
        ("SUBSCRIBE", 'say "hi"', (), (b'p1 SUBSCRIBE "say \\"hi\\""\r\n',)),
        ("UNSUBSCRIBE", "NIL", (), (b'p1 UNSUBSCRIBE "NIL"\r\n',)),
        ("STATUS", "INBOX", (), (b"p1 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)\r\n",)),
        ("LIST", "Shared/*", ("MAILBOX-REFERRALS",), (b'p1 RLIST "" "Shared/*"\r\n',)),
        ("LIST", "*", ("IMAP4REV1",), (b'p1 LIST "" "*"\r\n',)),
        ("APPEND", "日本", (), (b"p1 APPEND &ZeVnLA- {18}\r\n", MESSAGE + b"\r\n")),
    ],
)
def test_command_chunks(
    command: str, mailbox: str, caps: tuple[str, ...], want: tuple[bytes, ...]
) -> None:
    assert command_chunks("p1", command, mailbox, caps, MESSAGE) == want


def test_probe_message_is_small_ascii_with_a_unique_id() -> None:
    message, message_id = probe_message("alice")
    other = probe_message("alice")[1]
    assert message.isascii() and len(message) < 1024 and message_id != other
    assert f"Message-ID: {message_id}\r\n".encode() in message
    assert b"Subject: refd probe test message\r\n" in message


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n", "OK [CAPABILITY ...] Logged in"),
        (b"a1 NO [REFERRAL imap://a@b/] Go\r\n", "NO [REFERRAL imap://a@b/] Go"),
        (b"a1 NO [NONEXISTENT] \x1b[31mred\r\n", "NO [NONEXISTENT] \\x1b[31mred"),
        (b"* OK [READ-WRITE]\r\n", "OK [READ-WRITE]"),
    ],
)
def test_render(line: bytes, want: str) -> None:
    assert client.render(parse_response(line)) == want


# -- a scripted server ---------------------------------------------------------------------

Script = Callable[[socket.socket, "Lines"], None]


class Lines:
    """Read the client's lines on the fake server's side."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.seen: list[bytes] = []

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        self.seen.append(line)
        return line

    def tag(self) -> bytes:
        return self.line().split(b" ", 1)[0]


@pytest.fixture
def fake() -> Iterator[Callable[[Script], int]]:
    """Serve one script per connection, in threads; yields ``start(script) -> port``."""
    servers: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(script: Script) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn, contextlib.suppress(EOFError, OSError):
                    script(conn, Lines(conn))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return int(server.getsockname()[1])

    yield start
    for server in servers:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() of its thread
        server.close()
    for thread in threads:
        thread.join(5)


def logout(conn: socket.socket, lines: Lines) -> None:
    tag = lines.tag()
    conn.sendall(b"* BYE bye\r\n" + tag + b" OK LOGOUT done\r\n")


def run_json(monkeypatch: pytest.MonkeyPatch, port: int, *argv: str) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("PROBE_PW", "s3cret-pw")
    out = io.StringIO()
    args = parse(
        "--door",
        f"127.0.0.1:{port}",
        "--user",
        "alice",
        "--password-env",
        "PROBE_PW",
        "--json",
        *argv,
    )
    code = p.run(args, stdout=out, stderr=io.StringIO())
    assert "s3cret-pw" not in out.getvalue()
    doc = json.loads(out.getvalue())
    return code, doc


def test_bye_referral_greeting_is_followed_and_literals_parsed(
    fake: Callable[[Script], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def backend(conn: socket.socket, lines: Lines) -> None:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1] fake backend\r\n")
        tag = lines.tag()  # LOGIN
        conn.sendall(tag + b" OK logged in\r\n")
        tag = lines.tag()  # LIST "" "*"
        conn.sendall(
            b'* LIST () "/" {10}\r\nodd\r\n"name\r\n* LIST (\\Noselect) "/" Archive\r\n'
            + tag
            + b" OK done\r\n"
        )
        logout(conn, lines)

    backend_port = fake(backend)

    def draining(conn: socket.socket, lines: Lines) -> None:
        url = f"imap://alice;AUTH=*@127.0.0.1:{backend_port}/"
        conn.sendall(f"* BYE [REFERRAL {url}] Server not accepting connections.\r\n".encode())

    code, doc = run_json(monkeypatch, fake(draining), "--command", "LIST", "--mailbox", "*")
    assert code == 0
    assert doc["result"]["data"] == {
        "entries": [
            {"flags": [], "delimiter": "/", "name": 'odd\r\n"name'},
            {"flags": ["\\Noselect"], "delimiter": "/", "name": "Archive"},
        ]
    }


def test_silent_server_times_out_and_endless_line_is_refused(
    fake: Callable[[Script], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()

    def silent(conn: socket.socket, lines: Lines) -> None:
        conn.sendall(b"* OK fake\r\n")
        lines.tag()
        stop.wait(5)  # never answers LOGIN

    port = fake(silent)
    code, doc = run_json(monkeypatch, port, "--timeout", "0.3")
    stop.set()
    assert code == 8
    assert (
        doc["result"]["message"] == f"door 127.0.0.1:{port}: timed out after 0.3 s (at LOGIN alice)"
    )

    def endless(conn: socket.socket, lines: Lines) -> None:
        conn.sendall(b"* OK " + b"x" * (client.MAX_LINE_BYTES + 10))
        stop.wait(5)

    stop.clear()
    code, doc = run_json(monkeypatch, fake(endless), "--timeout", "2")
    stop.set()
    assert code == 8
    assert "longer than 65536 bytes" in doc["result"]["message"]


def test_bytes_after_starttls_ok_are_refused(
    fake: Callable[[Script], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def injecting(conn: socket.socket, lines: Lines) -> None:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] fake\r\n")
        tag = lines.tag()
        conn.sendall(tag + b" OK Begin TLS\r\n* OK [REFERRAL imap://evil/] injected\r\n")
        lines.line()

    port = fake(injecting)
    code, doc = run_json(monkeypatch, port, "--starttls", "--insecure")
    assert code == 8
    assert doc["result"]["message"] == (
        f"door 127.0.0.1:{port}: data after the STARTTLS answer (injection?) (at STARTTLS)"
    )
    assert doc["hops"][0]["steps"][-1] == {
        "command": "STARTTLS",
        "response": "failed: data after the STARTTLS answer (injection?)",
    }


def test_append_sends_no_body_when_refused_before_continuation(
    fake: Callable[[Script], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[bytes] = []

    def door(conn: socket.socket, lines: Lines) -> None:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 MAILBOX-REFERRALS] fake door\r\n")
        tag = lines.tag()
        conn.sendall(tag + b" OK [REFERRAL imap://alice;AUTH=*@127.0.0.1:1/] in\r\n")
        line = lines.line()
        tag = line.split(b" ")[0]
        conn.sendall(tag + b" NO [UNAVAILABLE] No mail server is configured.\r\n")
        tag = lines.tag()  # LOGOUT: record what came before answering it
        got.extend(lines.seen)
        conn.sendall(b"* BYE bye\r\n" + tag + b" OK LOGOUT done\r\n")

    code, doc = run_json(monkeypatch, fake(door), "--command", "APPEND")
    assert code == 4
    assert doc["result"]["message"].startswith(
        "APPEND INBOX at the door as alice: NO [UNAVAILABLE]"
    )
    assert re.fullmatch(rb"p2 APPEND INBOX \{\d+\}", got[1])
    assert got[2] == b"p3 LOGOUT"  # the message was never sent


@pytest.mark.parametrize(
    ("mode", "door", "later"),
    [
        (p.TlsMode.NONE, p.TlsMode.NONE, p.TlsMode.NONE),
        (p.TlsMode.STARTTLS, p.TlsMode.STARTTLS, p.TlsMode.STARTTLS),
        # A URL cannot say TLS: after an implicit-TLS door, STARTTLS on the URL's port.
        (p.TlsMode.IMPLICIT, p.TlsMode.IMPLICIT, p.TlsMode.STARTTLS),
    ],
)
def test_referred_servers_are_upgraded_with_starttls(
    mode: p.TlsMode, door: p.TlsMode, later: p.TlsMode
) -> None:
    assert hop_tls(mode, at_door=True) is door
    assert hop_tls(mode, at_door=False) is later
