"""``refd explain --setup ADDRESS``: what each setup document names, read back
from the documents themselves, and why (per user or domain level)."""

from __future__ import annotations

from pathlib import Path

import pytest

from refd.cli import main
from refd.explain import explain_setup
from tests.routing._support import load

from ._support import FACTS, domain, example_table, table_with, with_facts
from .test_documents import NO_DEFAULT


def test_a_user_rule_starttls_server_and_its_own_submission() -> None:
    found = explain_setup(example_table(), "carol@example.org")
    assert found.referred
    assert found.lines == [
        'address "carol@example.org": domains.example.org (routing.yaml:30), '
        'login name "carol@example.org" (login_name: address)',
        'answer: per user, users[1] user "carol@example.org" (routing.yaml:7)',
        "login referral: imap://carol%40example.org;AUTH=*@mail2.example.org:10143/",
        "autoconfig: incomingServer imap mail2.example.org:10143 socketType STARTTLS "
        "username %EMAILADDRESS%",
        "autoconfig: outgoingServer smtp smtp2.example.org:465 socketType SSL "
        "username %EMAILADDRESS%",
        "autodiscover: IMAP mail2.example.org:10143 SSL on Encryption TLS "
        "LoginName carol@example.org",
        "autodiscover: SMTP smtp2.example.org:465 SSL on Encryption SSL "
        "LoginName carol@example.org",
        "mobileconfig: IncomingMailServer mail2.example.org:10143 UseSSL true "
        "Username carol@example.org",
        "mobileconfig: OutgoingMailServer smtp2.example.org:465 UseSSL true "
        "Username carol@example.org",
    ]


def test_local_part_login_plaintext_no_submission() -> None:
    assert explain_setup(example_table(), "dave@other.test").lines == [
        'address "dave@other.test": domains.other.test (routing.yaml:35), '
        'login name "dave" (login_name: local_part)',
        'answer: per user, users[2] user "dave" (routing.yaml:9)',
        "login referral: imap://dave;AUTH=*@mail3.example.org/",
        "autoconfig: incomingServer imap mail3.example.org:143 socketType plain "
        "username %EMAILLOCALPART%",
        "autoconfig: no outgoingServer (no submission server known)",
        "autodiscover: IMAP mail3.example.org:143 SSL off Encryption None LoginName dave",
        "autodiscover: no SMTP (no submission server known)",
        "mobileconfig: IncomingMailServer mail3.example.org:143 UseSSL false Username dave",
        "mobileconfig: no OutgoingMailServer (no submission server known)",
    ]


def test_an_unrouted_address_gets_the_domain_level_answer() -> None:
    base = with_facts(load(NO_DEFAULT), FACTS)
    table = table_with(domain(base, "other.test", "mail3", login_name="local_part"), base=base)
    lines = explain_setup(table, "zed@other.test").lines
    assert lines[:3] == [
        'address "zed@other.test": domains.other.test (routing.yaml:40), '
        'login name "zed" (login_name: local_part)',
        'answer: domain level, no rule routes "zed" -> domains.other.test (routing.yaml:40)',
        # no login referral line: a login as zed gets none
        "autoconfig: incomingServer imap mail3.example.org:143 socketType plain "
        "username %EMAILLOCALPART%",
    ]


def test_domain_level_switch_and_bare_domain() -> None:
    lines = explain_setup(example_table(), "carol@example.org", per_user=False).lines
    assert lines[1:4] == [
        "answer: domain level, per-user answers are off -> domains.example.org (routing.yaml:30)",
        # the login referral still names the user's home server; the documents do not
        "login referral: imap://carol%40example.org;AUTH=*@mail2.example.org:10143/",
        "autoconfig: incomingServer imap mail1.example.org:993 socketType SSL "
        "username %EMAILADDRESS%",
    ]
    assert explain_setup(example_table(), "Example.ORG").lines == [
        "domain example.org: domains.example.org (routing.yaml:30), login_name: address",
        "answer: domain level, no address -> domains.example.org (routing.yaml:30)",
        "autoconfig: incomingServer imap mail1.example.org:993 socketType SSL "
        "username %EMAILADDRESS%",
        "autoconfig: outgoingServer smtp smtp.example.org:587 socketType STARTTLS "
        "username %EMAILADDRESS%",
        "autodiscover: IMAP mail1.example.org:993 SSL on Encryption SSL "
        "LoginName (none: the client uses the address)",
        "autodiscover: SMTP smtp.example.org:587 SSL on Encryption TLS "
        "LoginName (none: the client uses the address)",
        "mobileconfig: IncomingMailServer mail1.example.org:993 UseSSL true "
        "Username (asked on the device)",
        "mobileconfig: OutgoingMailServer smtp.example.org:587 UseSSL true "
        "Username (asked on the device)",
    ]


@pytest.mark.parametrize(
    ("question", "line"),
    [
        ("alice@elsewhere.test", 'no "domains:" entry serves "elsewhere.test": no document'),
        ("elsewhere.test", 'no "domains:" entry serves "elsewhere.test": no document'),
        ("a@b@example.org", "address refused: more than one @ in the address (HTTP 400)"),
        ("alice@example.org\r\n", "address refused: control character in the address (HTTP 400)"),
    ],
)
def test_no_document(question: str, line: str) -> None:
    found = explain_setup(example_table(), question)
    assert (found.referred, found.lines) == (False, [line])


def test_cli_setup_exit_code_and_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text(NO_DEFAULT)
    assert main(["explain", "-r", str(routing), "--setup", "zed@example.org"]) == 2
    assert capsys.readouterr().out == 'no "domains:" entry serves "example.org": no document\n'


USAGE = "refd: error: explain takes USER [MAILBOX] or --setup ADDRESS"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["explain"], USAGE),
        (["explain", "alice", "--setup", "alice@example.org"], USAGE),
        (["explain", "alice", "--domain-level"], "refd: error: --domain-level goes with --setup"),
    ],
)
def test_cli_usage_errors(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == error
