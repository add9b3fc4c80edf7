"""refd.autodiscovery.answer: address validation and which server an address gets."""

from __future__ import annotations

import pytest

from refd.autodiscovery.answer import BadAddress, SetupAnswer, parse_address, setup_answer
from refd.routing.model import ClientTls, Endpoint

from ._support import example_table

SMTP = Endpoint("smtp.example.org", 587, ClientTls.STARTTLS)
MAIL1 = Endpoint("mail1.example.org", 993, ClientTls.IMPLICIT)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("alice@example.org", "alice@example.org"),
        ("Alice@EXAMPLE.Org", "Alice@example.org"),  # the local part keeps its case
        ("a.b+tag@mail.example.org", "a.b+tag@mail.example.org"),
        ("x@a-b.example", "x@a-b.example"),
        ("o'neil!#$%&*/=?^_`{|}~-@example.org", "o'neil!#$%&*/=?^_`{|}~-@example.org"),
        ("ünï@example.org", "ünï@example.org"),  # RFC 6531 local parts are UTF-8
        ("a" * 64 + "@example.org", "a" * 64 + "@example.org"),
    ],
)
def test_parse_address_accepts(text: str, parsed: str) -> None:
    assert parse_address(text) == parsed


LONG_DOMAIN = ".".join(["a" * 60] * 4) + ".org"  # 247 octets, a valid host name
BAD = [
    ("alice@example.org\r\nX-Evil: 1", "control character in the address"),
    ("alice@example.org\n", "control character in the address"),
    ("alice\x00@example.org", "control character in the address"),
    ("alice\x1b[31m@example.org", "control character in the address"),
    ("alice\x85@example.org", "control character in the address"),
    ("alice @example.org", "space in the address"),
    ("alice@example.org\u00a0", "space in the address"),
    ("al\udcffice@example.org", "the address is not valid Unicode"),
    ("alice", "no @ in the address"),
    ("", "no @ in the address"),
    ("a@b@example.org", "more than one @ in the address"),
    ("@example.org", "empty local part"),
    ("alice@", "empty domain"),
    ("x" * 10240 + "@example.org", "address longer than 254 octets"),
    ("a" * 8 + "@" + LONG_DOMAIN, "address longer than 254 octets"),
    ("a" * 65 + "@example.org", "local part longer than 64 octets"),
    ('"alice"@example.org', "the local part has a character an address cannot carry"),
    ("<alice>@example.org", "the local part has a character an address cannot carry"),
    ("alice\\@example.org", "the local part has a character an address cannot carry"),
    ("alice,bob@example.org", "the local part has a character an address cannot carry"),
    ("alice@localhost", "the domain is not a valid host name"),
    ("alice@example..org", "the domain is not a valid host name"),
    ("alice@-example.org", "the domain is not a valid host name"),
    ("alice@example.org.", "the domain is not a valid host name"),
    ("alice@exa_mple.org", "the domain is not a valid host name"),
    ("alice@[192.0.2.1]", "the domain is not a valid host name"),
    ("alice@bücher.example", "the domain is not a valid host name"),
    ("alice@" + "a" * 64 + ".org", "the domain is not a valid host name"),
    ("alice@example.org/../x", "the domain is not a valid host name"),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_parse_address_refuses_with_a_short_reason(text: str, reason: str) -> None:
    with pytest.raises(BadAddress) as info:
        parse_address(text)
    assert str(info.value) == reason
    # The reason never carries the input (it lands in a 400 body and a log line).
    assert "alice" not in str(info.value)
    assert "example" not in str(info.value)


def test_a_user_rule_chooses_the_server() -> None:
    answer = setup_answer(example_table(), "carol@example.org")
    assert answer == SetupAnswer(
        domain=example_table().domains["example.org"],
        address="carol@example.org",
        login="carol@example.org",
        imap=Endpoint("mail2.example.org", 10143, ClientTls.STARTTLS),
        # the server's own submission comes before the domain's
        submission=Endpoint("smtp2.example.org", 465, ClientTls.IMPLICIT),
        per_user=True,
        rule='users[1] user "carol@example.org" (routing.yaml:7)',
    )


def test_the_domain_is_lower_cased_and_the_login_keeps_its_case() -> None:
    answer = setup_answer(example_table(), "Carol@EXAMPLE.org")
    assert answer is not None
    assert (answer.address, answer.login, answer.imap.host) == (
        "Carol@example.org",
        "Carol@example.org",
        "mail2.example.org",  # routing compares names case-insensitively
    )


def test_local_part_logins_are_routed_by_their_login_name() -> None:
    answer = setup_answer(example_table(), "dave@other.test")
    assert answer is not None
    assert (answer.login, answer.imap, answer.submission, answer.per_user) == (
        "dave",
        Endpoint("mail3.example.org", 143, ClientTls.NONE),
        None,
        True,
    )
    assert answer.rule == 'users[2] user "dave" (routing.yaml:9)'


def test_the_default_rule_is_a_per_user_answer() -> None:
    answer = setup_answer(example_table(), "nobody@example.org")
    assert answer is not None
    assert (answer.imap, answer.submission, answer.per_user, answer.rule) == (
        MAIL1,
        SMTP,
        True,
        "users[4] default (routing.yaml:13)",
    )


def test_per_user_off_gives_the_domain_level_server() -> None:
    answer = setup_answer(example_table(), "carol@example.org", per_user=False)
    assert answer is not None
    assert (answer.login, answer.imap, answer.submission, answer.per_user, answer.rule) == (
        "carol@example.org",
        MAIL1,
        SMTP,
        False,
        "per-user answers are off -> domains.example.org (routing.yaml:30)",
    )


def test_no_address_gives_the_domain_level_answer() -> None:
    answer = setup_answer(example_table(), None, domain="Example.ORG")
    assert answer is not None
    assert (answer.address, answer.login, answer.imap, answer.per_user, answer.rule) == (
        None,
        None,
        MAIL1,
        False,
        "no address -> domains.example.org (routing.yaml:30)",
    )


def test_an_unknown_domain_has_no_answer() -> None:
    assert setup_answer(example_table(), "alice@elsewhere.test") is None
    assert setup_answer(example_table(), None, domain="elsewhere.test") is None


def test_a_bad_address_is_refused_before_any_lookup() -> None:
    with pytest.raises(BadAddress, match=r"^more than one @ in the address$"):
        setup_answer(example_table(), "carol@example.org@example.org")


def test_a_question_needs_an_address_or_a_domain() -> None:
    with pytest.raises(ValueError, match="needs an address or a domain"):
        setup_answer(example_table(), None)
