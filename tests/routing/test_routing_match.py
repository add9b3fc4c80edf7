"""refd.routing.match: users, mailboxes, referrals, RLIST, RENAME and explain."""

from __future__ import annotations

import random

import pytest

from refd.routing import LoginMode, Referral, RoutingTable, UserRoute
from refd.routing.load import compile_mailbox_pattern

from ._support import CONFIG, load, load_example

EXAMPLE = load_example()
_LINES = (CONFIG / "routing.yaml").read_text(encoding="utf-8").splitlines()


def at(fragment: str) -> str:
    """``routing.yaml:N`` for the first example line starting with ``fragment``."""
    number = next(i for i, line in enumerate(_LINES, 1) if line.startswith(fragment))
    return f"routing.yaml:{number}"


ALICE = f'users[1] user "alice@example.org" ({at("  - user: alice@example.org")})'
SALES = f'users[2] glob "*@sales.example.org" ({at("  - glob:")})'
REGEX = f'users[3] regex "^[a-m].*@example\\.org$" ({at("  - regex:")})'
DEFAULT = f"users[4] default ({at('  - default: true')})"
SHARED = 'mailboxes[1] match "Shared/*" (' + at('  - match: "Shared/*"') + ")"
ARCHIVE = 'mailboxes[2] match "Archive/%" (' + at('  - match: "Archive/%"') + ")"
NEWS = 'mailboxes[3] match "#news.*" (' + at('  - match: "#news.*"') + ")"


# -- users ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "server", "login", "rule"),
    [
        ("alice@example.org", "mail1", LoginMode.REFER, ALICE),
        # One case rule: the whole name is compared lower-cased.
        ("alice@EXAMPLE.ORG", "mail1", LoginMode.REFER, ALICE),
        ("Alice@example.org", "mail1", LoginMode.REFER, ALICE),
        ("zoe@sales.example.org", "mail2", LoginMode.ACCEPT, SALES),
        ("zoe@Sales.Example.Org", "mail2", LoginMode.ACCEPT, SALES),
        # The user_map comes before every rule, even a matching glob.
        (
            "dave@sales.example.org",
            "mail1",
            LoginMode.REFER,
            'user_map users.map "dave@sales.example.org"',
        ),
        (
            "Dave@Sales.example.org",
            "mail1",
            LoginMode.REFER,
            'user_map users.map "dave@sales.example.org"',
        ),
        ("bob@EXAMPLE.org", "mail2", LoginMode.REFER, 'user_map users.map "bob@example.org"'),
        ("carol@example.org", "mail2b", LoginMode.REFER, 'user_map users.map "carol@example.org"'),
        # The regex sees the normalised name; first match wins over the default.
        ("kim@Example.org", "mail1", LoginMode.REFER, REGEX),
        ("Kim@example.org", "mail1", LoginMode.REFER, REGEX),
        ("mike@example.org", "mail1", LoginMode.REFER, REGEX),
        ("nina@example.org", "mail2", LoginMode.REFER, DEFAULT),
        ("kim@example.org.evil", "mail2", LoginMode.REFER, DEFAULT),
        ("localonly", "mail2", LoginMode.REFER, DEFAULT),
    ],
)
def test_route_user(user: str, server: str, login: LoginMode, rule: str) -> None:
    route = EXAMPLE.route_user(user)
    assert route is not None
    assert (route.server.name, route.login, route.why(user)) == (server, login, rule)


RULES = """\
version: 1
servers:
  a: {host: a.example.org}
  b: {host: b.example.org}
  c: {host: c.example.org}
users:
  - glob: "x*"
    server: a
  - user: xavier@example.org
    server: b
  - regex: "[0-9]+"
    server: b
  - glob: "[!a-m]?"
    server: c
  - glob: "*@*.EXAMPLE.org"
    server: c
"""


@pytest.mark.parametrize(
    ("user", "server"),
    [
        ("xavier@example.org", "a"),  # first match wins: the glob comes first
        ("x", "a"),
        ("123", "b"),
        ("123a", None),  # regexes match the whole name
        ("zz", "c"),
        ("bz", None),
        ("zzz", None),
        ("q@mail.example.org", "c"),  # the glob's domain was lower-cased at load
        ("q@MAIL.example.ORG", "c"),
        ("ZZ", "c"),  # every rule sees the lower-cased name (normalise_user)
        ("q@example.org", None),
    ],
)
def test_first_match_wins_and_no_default(user: str, server: str | None) -> None:
    table = load(RULES)
    route = table.route_user(user)
    assert (route.server.name if route else None) == server
    if server is None:
        assert table.login_referral(user) is None
        assert table.mailbox_referral(user, "INBOX") is None
        assert table.rename_referral(user, "a", "b") is None
        assert table.remote_mailboxes(user) == ()


DOMAIN_GLOBS = """\
version: 1
servers:
  a: {host: a.example.org}
  b: {host: b.example.org}
  c: {host: c.example.org}
  d: {host: d.example.org}
users:
  - regex: "^vip[0-9]*@.*$"
    server: a
  - glob: "*@one.example"
    server: b
  - user: boss@two.example
    server: a
  - glob: "*@two.example"
    server: c
  - glob: "sales-*@one.example"
    server: d
  - glob: "*@ONE.example"
    server: d
  - glob: "*@*.three.example"
    server: a
  - glob: "*@x.three.example"
    server: b
  - glob: "*@"
    server: c
  - glob: "*@a?c.example"
    server: d
  - default: true
    server: d
"""


@pytest.mark.parametrize(
    ("user", "server", "rule"),
    [
        # a rule before the domain's glob still wins
        ("vip7@one.example", "a", 1),
        ("VIP7@Two.Example", "a", 1),
        ("boss@two.example", "a", 3),
        ("x@one.example", "b", 2),
        ("X@ONE.EXAMPLE", "b", 2),
        # the domain glob comes before a later, narrower glob of its domain
        ("sales-x@one.example", "b", 2),
        ("x@two.example", "c", 4),
        # the part after the last "@" is the domain, as for the glob
        ("a@b@two.example", "c", 4),
        ("@two.example", "c", 4),
        # a glob with a wildcard in the domain is tried in its place
        ("x@x.three.example", "a", 7),
        # "*@" takes names that end with "@"
        ("x@", "c", 9),
        ("abc.example", "d", 11),
        ("x@abc.example", "d", 10),
        # no "@": no domain, never a domain glob
        ("two.example", "d", 11),
        ("one.example", "d", 11),
        ("x@sub.one.example", "d", 11),
        ("x@one.example.org", "d", 11),
    ],
)
def test_domain_globs_keep_the_first_match(user: str, server: str, rule: int) -> None:
    table = load(DOMAIN_GLOBS)
    route = table.route_user(user)
    assert route is not None
    assert (route.server.name, route.rule.split()[0]) == (server, f"users[{rule}]")
    # the rule a plain scan of every rule in file order picks
    first = next(r for r in table.user_rules if r.matches(user.lower()))
    assert route.rule == first.description


def test_domain_globs_in_any_order_match_a_plain_scan() -> None:
    """Every order of mixed rules routes every name as a scan in file order does."""
    rules = [
        '{glob: "*@d1.example", server: a}',
        '{glob: "*@d2.example", server: b}',
        '{glob: "*@d1.example", server: c}',
        '{glob: "u*@d2.example", server: c}',
        '{regex: "^u1@", server: a}',
        "{user: u2@d1.example, server: b}",
        '{glob: "*@*", server: c}',
        '{glob: "*@d?.example", server: a}',
    ]
    names = [
        f"{local}@{domain}"
        for local in ("u1", "u2", "v")
        for domain in ("d1.example", "d2.example", "d3.example", "D1.example")
    ] + ["d1.example", "u1@", "@d1.example", "u1@x@d2.example"]
    rng = random.Random(13)
    orders = [rules, rules[::-1]] + [rng.sample(rules, len(rules)) for _ in range(40)]
    for order in orders:
        text = "version: 1\nservers:\n  a: {host: a}\n  b: {host: b}\n  c: {host: c}\nusers:\n"
        table = load(text + "".join(f"  - {rule}\n" for rule in order))
        for name in names:
            route = table.route_user(name)
            first = next((r for r in table.user_rules if r.matches(name.lower())), None)
            assert (route.rule if route else None) == (first.description if first else None), (
                order,
                name,
            )


def test_user_map_hits_share_one_route_per_server() -> None:
    """A user-map hit allocates nothing: one route per server; why() names the entry."""
    table = load(
        "version: 1\nservers:\n  m: {host: m}\n  n: {host: n}\nuser_map: users.map\n",
        user_map="bob@example.org m\ndave@example.org m\nerin@example.org n\n",
    )
    one, two = table.route_user("bob@example.org"), table.route_user("DAVE@example.org")
    assert one is not None and two is not None
    assert one is two and one.server is table.servers["m"]
    assert table.route_user("erin@example.org") == UserRoute(
        table.servers["n"], LoginMode.REFER, "user_map users.map", per_user=True
    )
    assert one.why("Dave@Example.org") == 'user_map users.map "dave@example.org"'
    one = EXAMPLE.route_user("bob@example.org")
    assert one is not None
    assert (one.rule, one.per_user) == ("user_map users.map", True)
    assert one.why("Bob@Example.org") == 'user_map users.map "bob@example.org"'
    assert EXAMPLE.route_user("zoe@sales.example.org") is EXAMPLE.route_user(
        "amy@sales.example.org"
    )


# -- login referrals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "servers", "urls", "rule"),
    [
        (
            "alice@example.org",
            ("mail1",),
            ("imap://alice%40example.org;AUTH=*@mail1.example.org/",),
            ALICE,
        ),
        (
            "zoe@Sales.example.org",
            ("mail2", "mail2b"),
            (
                "imap://zoe%40Sales.example.org;AUTH=*@mail2.example.org/",
                "imap://zoe%40Sales.example.org;AUTH=*@mail2b.example.org/",
            ),
            SALES,
        ),
        (
            "erin@example.org",
            ("shared1",),
            ("imap://erin%40example.org;AUTH=*@shared1.example.org:1143/",),
            'user_map users.map "erin@example.org"',
        ),
    ],
)
def test_login_referral(
    user: str, servers: tuple[str, ...], urls: tuple[str, ...], rule: str
) -> None:
    referral = EXAMPLE.login_referral(user)
    assert referral is not None
    assert referral.urls == urls
    assert tuple(s.name for s in referral.servers) == servers
    assert referral.rule == rule
    assert referral.remote_names == ("",) * len(urls)


# -- mailbox referrals ---------------------------------------------------------------

A = "imap://alice%40example.org;AUTH=*@"
HOME_ALICE = f"home server ({ALICE})"
NO_RULE = f"no mailbox rule matched: {HOME_ALICE}"


@pytest.mark.parametrize(
    ("mailbox", "urls", "remote", "rule"),
    [
        ("INBOX", (f"{A}mail1.example.org/INBOX",), "INBOX", f"INBOX: always the {HOME_ALICE}"),
        ("inbox", (f"{A}mail1.example.org/INBOX",), "INBOX", f"INBOX: always the {HOME_ALICE}"),
        ("InBoX", (f"{A}mail1.example.org/INBOX",), "INBOX", f"INBOX: always the {HOME_ALICE}"),
        (
            "Shared/Sales",
            (f"{A}shared1.example.org:1143/Public/Sales",),
            "Public/Sales",
            SHARED,
        ),
        (
            "Shared/Café Menu",
            (f"{A}shared1.example.org:1143/Public/Caf%C3%A9%20Menu",),
            "Public/Café Menu",
            SHARED,
        ),
        (
            "Shared/a/b",
            (f"{A}shared1.example.org:1143/Public/a/b",),
            "Public/a/b",
            SHARED,
        ),
        # "Shared/*" does not match "Shared" itself, nor other case.
        (
            "Shared",
            (f"{A}mail1.example.org/Shared",),
            "Shared",
            NO_RULE,
        ),
        (
            "shared/x",
            (f"{A}mail1.example.org/shared/x",),
            "shared/x",
            NO_RULE,
        ),
        # "%" stops at the delimiter.
        (
            "Archive/2020",
            (f"{A}mail2.example.org/Archive/2020", f"{A}mail2b.example.org/Archive/2020"),
            "Archive/2020",
            ARCHIVE,
        ),
        (
            "Archive/2020/Q1",
            (f"{A}mail1.example.org/Archive/2020/Q1",),
            "Archive/2020/Q1",
            NO_RULE,
        ),
        (
            "#news.comp.lang",
            (f"{A}mail2.example.org/%23news.comp.lang", f"{A}mail2b.example.org/%23news.comp.lang"),
            "#news.comp.lang",
            NEWS,
        ),
        (
            "INBOX/Sub",
            (f"{A}mail1.example.org/INBOX/Sub",),
            "INBOX/Sub",
            NO_RULE,
        ),
    ],
)
def test_mailbox_referral(mailbox: str, urls: tuple[str, ...], remote: str, rule: str) -> None:
    referral = EXAMPLE.mailbox_referral("alice@example.org", mailbox)
    assert referral is not None
    assert (referral.urls, referral.remote_names, referral.rule) == (
        urls,
        (remote,) * len(urls),
        rule,
    )


@pytest.mark.parametrize(
    ("pattern", "delimiter", "name", "groups"),
    [
        ("Shared/*", "/", "Shared/a", ("a",)),
        ("Shared/*", "/", "Shared/a/b", ("a/b",)),
        ("Shared/*", "/", "Shared/", ("",)),
        ("Shared/*", "/", "Shared", None),
        ("Shared/*", "/", "XShared/a", None),
        ("Shared/%", "/", "Shared/a", ("a",)),
        ("Shared/%", "/", "Shared/a/b", None),
        ("%", "/", "top", ("top",)),
        ("%", "/", "a/b", None),
        ("%", ".", "a/b", ("a/b",)),
        ("%", ".", "a.b", None),
        ("*", "/", "anything/at/all", ("anything/at/all",)),
        ("%/*", "/", "u/x/y", ("u", "x/y")),
        ("*/%", "/", "a/b/c", ("a/b", "c")),
        ("a.b", "/", "a.b", ()),
        ("a.b", "/", "axb", None),  # "." is literal, not a regex dot
        ("[x]+(y)?", "/", "[x]+(y)?", ()),
        ("line*", "/", "line\nbreak", ("\nbreak",)),
        ("Team-%", "-", "Team-a", ("a",)),
        ("Team-%", "-", "Team-a-b", None),
        ("Team]%", "]", "Team]a]b", None),
        ("Team^%", "^", "Team^ab", ("ab",)),
    ],
)
def test_mailbox_pattern(
    pattern: str, delimiter: str, name: str, groups: tuple[str, ...] | None
) -> None:
    found = compile_mailbox_pattern(pattern, delimiter).fullmatch(name)
    assert (found.groups() if found else None) == groups


def _table(mailboxes: str, servers: str = "") -> RoutingTable:
    return load(
        "version: 1\n"
        "servers:\n"
        "  home: {host: home.example.org}\n"
        "  a: {host: a.example.org, replicas: [b, c]}\n"
        "  b: {host: b.example.org, replicas: [d]}\n"
        "  c: {host: c.example.org, replicas: [d]}\n"
        "  d: {host: d.example.org}\n"
        "  e: {host: e.example.org}\n"
        f"{servers}"
        "users:\n"
        "  - default: true\n"
        "    server: home\n"
        f"mailboxes:\n{mailboxes}"
    )


@pytest.mark.parametrize(
    ("mailboxes", "mailbox", "servers", "remote"),
    [
        # Replicas flatten depth-first in order, without repeats.
        ("  - {match: 'X', servers: a}\n", "X", ("a", "b", "d", "c"), "X"),
        ("  - {match: 'X', servers: [e, c, a]}\n", "X", ("e", "c", "d", "a", "b"), "X"),
        ("  - {match: 'X', servers: [d, b]}\n", "X", ("d", "b"), "X"),
        # First mailbox rule wins.
        (
            "  - {match: 'T/*', servers: e}\n  - {match: 'T/x', servers: d}\n",
            "T/x",
            ("e",),
            "T/x",
        ),
        # rename: captures fill the same-position wildcards.
        (
            "  - {match: 'Users/%/*', servers: e, rename: 'home/%/mail/*'}\n",
            "Users/kim/Sent/2020",
            ("e",),
            "home/kim/mail/Sent/2020",
        ),
        (
            "  - {match: 'Users/%/*', servers: e, rename: '*-%'}\n",
            "Users/kim/Sent",
            ("e",),
            "kim-Sent",
        ),
        ("  - {match: 'Old', servers: e, rename: 'New'}\n", "Old", ("e",), "New"),
        ("  - {match: 'Shared/*', servers: e, rename: '*'}\n", "Shared/Sales", ("e",), "Sales"),
        # A rename that would leave an empty name does not apply.
        ("  - {match: 'Shared/*', servers: e, rename: '*'}\n", "Shared/", ("home",), "Shared/"),
        # INBOX never follows mailbox rules, in any ASCII case.
        ("  - {match: '*', servers: e}\n", "Inbox", ("home",), "INBOX"),
        # U+0131 DOTLESS I upper-cases to "I": still not INBOX.
        ("  - {match: '*', servers: e}\n", "\u0131nbox", ("e",), "\u0131nbox"),
    ],
)
def test_mailbox_rules(mailboxes: str, mailbox: str, servers: tuple[str, ...], remote: str) -> None:
    referral = _table(mailboxes).mailbox_referral("u", mailbox)
    assert referral is not None
    assert tuple(s.name for s in referral.servers) == servers
    assert referral.remote_names == (remote,) * len(servers)
    assert len(referral.urls) == len(servers)


def test_other_delimiter_urls() -> None:
    table = load(
        "version: 1\n"
        "delimiter: '.'\n"
        "servers: {home: {host: h}, news: {host: n}}\n"
        "users: [{default: true, server: home}]\n"
        "mailboxes: [{match: 'news.%', servers: news}]\n"
    )
    cases = {
        "news.comp": "imap://u;AUTH=*@n/news.comp",
        "news.comp.lang": "imap://u;AUTH=*@h/news.comp.lang",
        "a/b": "imap://u;AUTH=*@h/a%2Fb",
    }
    for mailbox, url in cases.items():
        referral = table.mailbox_referral("u", mailbox)
        assert referral is not None
        assert referral.urls == (url,)


# -- RENAME (RFC 2193 §4.3) -------------------------------------------------------------

U = "imap://u;AUTH=*@"


@pytest.mark.parametrize(
    ("old", "new", "pairs", "cross"),
    [
        # Both at home: one same-server pair.
        ("Foo", "Bar", ((f"{U}home.example.org/Foo", f"{U}home.example.org/Bar"),), False),
        # Both on e, each renamed by the rule.
        (
            "Shared/x",
            "Shared/y",
            ((f"{U}e.example.org/Public/x", f"{U}e.example.org/Public/y"),),
            False,
        ),
        # Different servers: one pair of the preferred URLs, cross-server.
        (
            "Foo",
            "Shared/y",
            ((f"{U}home.example.org/Foo", f"{U}e.example.org/Public/y"),),
            True,
        ),
        # Replicated both sides: a pair for every common server, old's order.
        (
            "R/x",
            "R/y",
            (
                (f"{U}a.example.org/R/x", f"{U}a.example.org/R/y"),
                (f"{U}b.example.org/R/x", f"{U}b.example.org/R/y"),
                (f"{U}d.example.org/R/x", f"{U}d.example.org/R/y"),
                (f"{U}c.example.org/R/x", f"{U}c.example.org/R/y"),
            ),
            False,
        ),
        # Partly overlapping: only the servers holding both names.
        (
            "R/x",
            "C/y",
            (
                (f"{U}d.example.org/R/x", f"{U}d.example.org/C/y"),
                (f"{U}c.example.org/R/x", f"{U}c.example.org/C/y"),
            ),
            False,
        ),
    ],
)
def test_rename_referral(
    old: str, new: str, pairs: tuple[tuple[str, str], ...], cross: bool
) -> None:
    table = _table(
        "  - {match: 'Shared/*', servers: e, rename: 'Public/*'}\n"
        "  - {match: 'R/*', servers: a}\n"
        "  - {match: 'C/*', servers: c}\n"
    )
    rename = table.rename_referral("u", old, new)
    assert rename is not None
    assert (rename.pairs, rename.cross_server) == (pairs, cross)
    assert rename.urls == tuple(url for pair in pairs for url in pair)
    assert rename.old == table.mailbox_referral("u", old)
    assert rename.new == table.mailbox_referral("u", new)


# -- RLIST, NAMESPACE ---------------------------------------------------------------------


def test_remote_mailboxes() -> None:
    found = EXAMPLE.remote_mailboxes("bob@example.org")
    b = "imap://bob%40example.org;AUTH=*@"
    assert [(m.name, m.referral.urls) for m in found] == [
        ("INBOX", (f"{b}mail2.example.org/INBOX", f"{b}mail2b.example.org/INBOX")),
        ("Shared/Sales", (f"{b}shared1.example.org:1143/Public/Sales",)),
        ("Shared/Café Menu", (f"{b}shared1.example.org:1143/Public/Caf%C3%A9%20Menu",)),
    ]
    assert isinstance(found[0].referral, Referral)


# -- explain ---------------------------------------------------------------------------------
# The routing trace only; what is sent is refd.answers' (tests/test_explain.py).


@pytest.mark.parametrize(
    ("user", "lines"),
    [
        (
            "alice@example.org",
            [
                f'user "alice@example.org" -> {ALICE}',
                "home server: mail1 (mail1.example.org:143)",
                "login: refer",
            ],
        ),
        (
            "Zoe@Sales.Example.org",
            [
                f'user "Zoe@Sales.Example.org" (looked up as "zoe@sales.example.org") -> {SALES}',
                "home server: mail2 (mail2.example.org:143), then mail2b (mail2b.example.org:143)",
                "login: accept",
            ],
        ),
        (
            "erin@example.org",
            [
                'user "erin@example.org" -> user_map users.map "erin@example.org"',
                "home server: shared1 (shared1.example.org:1143)",
                "login: refer",
            ],
        ),
    ],
)
def test_explain_user(user: str, lines: list[str]) -> None:
    assert EXAMPLE.explain_user(user) == lines


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ("{host: h}", None),
        ("{host: h, imaps_port: 993}", "m for clients: IMAP h:993 implicit TLS"),
        ("{host: h, imaps_port: 993, client_tls: starttls}", "m for clients: IMAP h:143 STARTTLS"),
        ("{host: h, port: 10143, client_tls: none}", "m for clients: IMAP h:10143 no TLS"),
        (
            "{host: h, imaps_port: 993, submission: 's:465'}",
            "m for clients: IMAP h:993 implicit TLS, submission s:465 implicit TLS",
        ),
        (
            "{host: h, submission: s}",
            "m for clients: IMAP h:143 STARTTLS, submission s:587 STARTTLS",
        ),
    ],
)
def test_explain_user_shows_what_clients_are_offered(spec: str, line: str | None) -> None:
    table = load(f"version: 1\nservers:\n  m: {spec}\nusers:\n  - {{default: true, server: m}}\n")
    trace = table.explain_user("u")
    expected = ["home server: m (h:143)" if "10143" not in spec else "home server: m (h:10143)"]
    expected += [line] if line else []
    assert trace[1:] == [*expected, "login: refer"]


@pytest.mark.parametrize(
    ("user", "mailbox", "lines"),
    [
        (
            "Zoe@Sales.Example.org",
            "Shared/Sales",
            [
                f'mailbox "Shared/Sales" -> {SHARED}',
                'remote name: "Public/Sales"',
                "servers: shared1 (shared1.example.org:1143)",
            ],
        ),
        (
            "erin@example.org",
            "Notes",
            [
                'mailbox "Notes" -> no mailbox rule matched: home server '
                '(user_map users.map "erin@example.org")',
                "servers: shared1 (shared1.example.org:1143)",
            ],
        ),
    ],
)
def test_explain_mailbox(user: str, mailbox: str, lines: list[str]) -> None:
    assert EXAMPLE.explain_mailbox(user, mailbox) == lines


def test_explain_without_a_route() -> None:
    table = load(RULES)
    assert table.explain_user("nobody@example.org") == [
        'user "nobody@example.org": no rule matched',
        "no referral: the user has no home server in this table",
    ]
    assert table.explain_mailbox("nobody@example.org", "INBOX") == []


# -- names no URL can carry (issue 9: they ended in an internal error) ----------------------


def test_empty_user_has_no_route_even_with_a_default() -> None:
    # users[4] is "default: true", yet "" is not routed: enc-user = 1*achar.
    assert EXAMPLE.route_user("Anyone") is not None
    assert EXAMPLE.route_user("") is None
    assert EXAMPLE.login_referral("") is None
    assert EXAMPLE.remote_mailboxes("") == ()
    assert EXAMPLE.explain_user("") == [
        'user "": an IMAP URL cannot name it',
        "no referral: the user has no home server in this table",
    ]


def test_explain_empty_mailbox() -> None:
    assert EXAMPLE.explain_mailbox("alice@example.org", "") == [
        'mailbox "": no referral, an IMAP URL cannot name it'
    ]
