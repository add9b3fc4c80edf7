"""``refd explain`` agrees with the daemon, byte for byte.

One table of users -- letter-case variants, every login mode, user-map hits,
no route, unknown and locked users -- goes through ``refd explain`` (a
subprocess, its printed output) and through a live ``refd serve`` (a real
socket LOGIN, then the SELECT explain shows).  Explain prints the client's
commands as ``C:`` lines and the door's answers as ``S:`` lines; the test
sends those very commands and asserts the door's bytes are the ``S:`` lines.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Daemon, free_port, session

ROUTING = """\
version: 1
servers:
  mail1: {host: mail1.example.org}
  mail2: {host: mail2.example.org, port: 10143, replicas: [mail2b]}
  mail2b: {host: mail2b.example.org}
  mail3: {host: mail3.example.org}
  shared1: {host: shared1.example.org}
user_map:
  Dave@ACME.test: mail3
users:
  - user: Alice@acme.TEST
    server: mail1
    login: refer
  - glob: "*@Sales.acme.test"
    server: mail2
    login: accept
  - regex: "^[A-C].*@stay\\\\.acme\\\\.test$"
    server: mail2
    login: stay
mailboxes:
  - match: "Shared/*"
    servers: [shared1]
    rename: "Public/*"
"""

PASSWD = """\
alice@acme.test:{PLAIN}secret
Bob@sales.acme.test:{PLAIN}secret
carol@Stay.acme.test:{PLAIN}secret
DAVE@acme.test:{PLAIN}secret
erin@nowhere.test:{PLAIN}secret
locked@acme.test:
"""

# (typed user, mailbox, exit code of explain, how the login answer starts)
CASES = [
    # The case: passwd-file and routing both ignore case.
    ("Alice@ACME.test", None, 0, "a1 NO [REFERRAL imap://alice%40acme.test;AUTH=*@mail1."),
    ("alice@acme.test", "INBOX", 0, "a1 NO [REFERRAL imap://alice%40acme.test;AUTH=*@mail1."),
    ("ALICE@ACME.TEST", None, 0, "a1 NO [REFERRAL imap://alice%40acme.test;"),
    ("bob@SALES.acme.test", "Shared/Sales", 0, "* CAPABILITY IMAP4rev1 "),
    ("BOB@sales.ACME.test", "INBOX", 0, "* CAPABILITY IMAP4rev1 "),
    # login: stay is a plain OK [CAPABILITY ...], never OK [REFERRAL ...].
    ("Carol@stay.acme.test", "Shared/Sales", 0, "a1 OK [CAPABILITY IMAP4rev1 "),
    ("carol@STAY.acme.test", "Archive", 0, "a1 OK [CAPABILITY IMAP4rev1 "),
    # user_map hits, in any case.
    ("dave@acme.test", None, 0, "a1 NO [REFERRAL imap://DAVE%40acme.test;AUTH=*@mail3."),
    ("Dave@Acme.Test", "Shared/x", 0, "a1 NO [REFERRAL imap://DAVE%40acme.test;AUTH=*@mail3."),
    # In the passwd-file, not in the routing table.
    ("erin@nowhere.test", None, 2, "a1 NO [UNAVAILABLE] "),
    ("zed@acme.test", None, 2, "a1 NO [AUTHENTICATIONFAILED] "),
    ("locked@acme.test", None, 2, "a1 NO [AUTHENTICATIONFAILED] "),
]


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    tmp = tmp_path_factory.mktemp("explain")
    (tmp / "routing.yaml").write_text(ROUTING)
    (tmp / "users.passwd").write_text(PASSWD)
    port = free_port()
    (tmp / "refd.yaml").write_text(
        "routing: routing.yaml\n"
        "auth: {source: passwd-file, passwd_file: users.passwd, failure_delay_s: 0}\n"
        f"listeners:\n  - {{name: imap, address: 127.0.0.1, port: {port}}}\n"
    )
    daemon = Daemon(["serve", "-c", str(tmp / "refd.yaml")])
    try:
        daemon.wait_log("refd ready")
        yield tmp / "refd.yaml", port
    finally:
        daemon.stop()


def run_explain(config: Path, *args: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "refd", "explain", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr == ""
    return done.returncode, done.stdout.splitlines()


@pytest.mark.parametrize(("user", "mailbox", "code", "start"), CASES)
def test_explain_agrees_with_the_daemon(
    door: tuple[Path, int], user: str, mailbox: str | None, code: int, start: str
) -> None:
    config, port = door
    rc, lines = run_explain(config, user, *([mailbox] if mailbox else []))
    assert rc == code
    # The dialogue explain shows: C: lines to send, S: lines to expect.
    exchanges: list[tuple[bytes, list[str]]] = []
    for line in lines:
        if line.startswith("C: "):
            command = line[3:].replace("<password>", "secret").encode()
            exchanges.append((command, []))
        elif line.startswith("S: "):
            exchanges[-1][1].append(line[3:])
    assert exchanges, lines
    assert exchanges[0][1][0].startswith(start), lines
    live = session(port, *(command for command, _ in exchanges))
    got = [line.decode().removesuffix("\r\n") for line in live[1:]]
    assert got == [s for _, expected in exchanges for s in expected]


def test_a_mailbox_after_a_login_referral_is_not_asked_here(door: tuple[Path, int]) -> None:
    config, _ = door
    rc, lines = run_explain(config, "Alice@ACME.test", "Shared/Sales")
    assert rc == 0
    assert lines[-4:] == [
        'mailbox "Shared/Sales" -> mailboxes[1] match "Shared/*" '
        f"({config.parent / 'routing.yaml'}:21)",
        'remote name: "Public/Sales"',
        "servers: shared1 (shared1.example.org:143)",
        "(no mailbox command reaches this door: the login referral sends the client to its "
        "home server)",
    ]
    assert lines[0] == f'auth: passwd-file {config.parent / "users.passwd"}:1 "alice@acme.test"'
