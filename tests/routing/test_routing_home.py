"""A home server named by the authentication source (a directory, an auth service).

`RoutingTable.server_for` maps what the source says (a server name, a host,
``host:port``) to a server of the table; `route_user` takes it before or
after the ``users:`` rules; a value that names no server is `UnknownHome`.
"""

from __future__ import annotations

import pytest

from refd.routing.model import Home, LoginMode, UnknownHome
from tests.routing._support import load

TABLE = """
version: 1
servers:
  mail1: {host: mail1.example.org}
  mail2: {host: Mail2.Example.org, port: 10143}
  a1: {host: shared.example.org, port: 143}
  a2: {host: shared.example.org, port: 1143}
  v6: {host: "[2001:db8::1]", port: 143}
users:
  - user: carol
    server: mail2
    login: stay
  - default: true
    server: mail1
"""


@pytest.mark.parametrize(
    ("value", "server"),
    [
        ("mail2", "mail2"),
        ("mail2.example.org", "mail2"),
        ("MAIL2.example.ORG:10143", "mail2"),
        ("shared.example.org:1143", "a2"),
        ("[2001:db8::1]:143", "v6"),
        ("2001:db8::1", "v6"),
        # Not one server: unknown, a host two servers share, a wrong port, junk.
        ("mail9.example.org", None),
        ("shared.example.org", None),
        ("mail2.example.org:143", None),
        ("mail2.example.org:x", None),
        ("[::1", None),
        ("", None),
    ],
)
def test_server_for(value: str, server: str | None) -> None:
    found = load(TABLE).server_for(value)
    assert (found.name if found else None) == server


def test_a_source_home_comes_before_the_rules_and_is_a_login_referral() -> None:
    table = load(TABLE)
    home = Home("mail2.example.org", "ldap uid=carol,ou=people,dc=example,dc=org")
    route = table.route_user("carol", home)
    assert route is not None
    assert (route.server.name, route.login) == ("mail2", LoginMode.REFER)
    assert route.rule == ("ldap uid=carol,ou=people,dc=example,dc=org names 'mail2.example.org'")
    referral = table.mailbox_referral("carol", "INBOX", home)
    assert referral is not None
    assert referral.urls == ("imap://carol;AUTH=*@Mail2.Example.org:10143/INBOX",)


def test_after_the_rules_a_source_home_only_answers_for_unmatched_users() -> None:
    table = load(TABLE.replace("  - default: true\n    server: mail1\n", ""))
    last = Home("mail1", "auth_http http://127.0.0.1:9000/", first=False)
    carol = table.route_user("carol", last)
    dave = table.route_user("dave", last)
    assert carol is not None and dave is not None
    assert (carol.server.name, carol.login) == ("mail2", LoginMode.STAY)
    assert dave.server.name == "mail1"
    assert dave.rule == "auth_http http://127.0.0.1:9000/ names 'mail1'"
    assert table.route_user("dave") is None


def test_a_home_the_table_does_not_have_is_an_error_not_a_rule_fallback() -> None:
    table = load(TABLE)
    with pytest.raises(UnknownHome, match=r"ldap uid=x names 'mail9\.example\.org': no server"):
        table.route_user("carol", Home("mail9.example.org", "ldap uid=x"))
    # Not even the default rule catches it: the source's data is wrong.
    with pytest.raises(UnknownHome):
        table.login_referral("dave", table.route_user("dave", Home("mail9", "ldap uid=x")))


def test_an_empty_name_has_no_route_whatever_the_source_says() -> None:
    assert load(TABLE).route_user("", Home("mail1", "x")) is None
