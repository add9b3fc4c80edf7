"""refd.routing.load: validation errors (exact text) and the compiled table."""

from __future__ import annotations

import hashlib

import pytest

from refd.config.tree import TreeError
from refd.config.yamltree import parse_yaml
from refd.routing import (
    LoginMode,
    Namespaces,
    RoutingError,
    Server,
    load_table,
    parse_user_map,
    read_user_map_name,
)
from refd.routing.model import ClientTls, Domain, Endpoint

from ._support import CONFIG, load, load_example

KNOWN_TOP = (
    "delimiter, domains, mailboxes, namespaces, published, self, servers, user_map, users, version"
)
SERVERS = (
    "version: 1",  # 1
    "servers:",  # 2
    "  mail1: {host: mail1.example.org}",  # 3
    "  mail2:",  # 4
    "    host: mail2.example.org",  # 5
)


def doc(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def failure(text: str, **kwargs: object) -> str:
    with pytest.raises(TreeError) as info:
        load(text, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


ERRORS = [
    # -- structure and unknown keys -------------------------------------------
    (
        doc(*SERVERS, "user: []"),
        f'routing.yaml:6: unknown key "user" in the routing file (known keys: {KNOWN_TOP})',
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    prot: 143"),
        'routing.yaml:5: unknown key "prot" in servers.mail1 '
        "(known keys: client_tls, host, imaps_port, port, replicas, submission)",
    ),
    (
        doc(*SERVERS, "users:", "  - user: a@example.org", "    server: mail1", "    lgoin: refer"),
        'routing.yaml:9: unknown key "lgoin" in users[1] '
        "(known keys: default, glob, login, regex, server, user)",
    ),
    (
        doc(*SERVERS, "mailboxes:", "  - match: Shared/*", "    server: mail1"),
        'routing.yaml:8: unknown key "server" in mailboxes[1] (known keys: match, rename, servers)',
    ),
    (
        doc(*SERVERS, "namespaces:", "  public: []"),
        'routing.yaml:7: unknown key "public" in namespaces (known keys: other, personal, shared)',
    ),
    ("servers: {}\n", 'routing.yaml:1: the routing file needs "version"'),
    (
        "- a\n",
        "routing.yaml:1: the routing file must be a YAML mapping (key: value), "
        "and this file is a list (is it the right file?)",
    ),
    ("version: 2\nservers: {a: {host: h}}\n", "routing.yaml:1: version must be 1"),
    ("version: 1\n", 'routing.yaml:1: the routing file needs "servers"'),
    ("version: 1\nservers: {}\n", "routing.yaml:2: servers must name at least one server"),
    # -- servers -------------------------------------------------------------------
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    port: 0143"),
        "routing.yaml:5: servers.mail1.port: write 143, leading zeros are not allowed "
        "(YAML 1.1 would read 0143 as octal)",
    ),
    (
        doc("version: 1", "servers:", "  mail1: {host: h, port: 0}"),
        "routing.yaml:3: servers.mail1.port must be between 1 and 65535, got 0",
    ),
    (
        doc("version: 1", "servers:", "  mail1: {host: h, port: 70000}"),
        "routing.yaml:3: servers.mail1.port must be between 1 and 65535, got 70000",
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    port: 143"),
        'routing.yaml:4: servers.mail1 needs "host"',
    ),
    (
        doc("version: 1", "servers:", "  mail1: {host: mail 1.example.org}"),
        'routing.yaml:3: servers.mail1.host "mail 1.example.org" is not a host name or IP address',
    ),
    (
        doc("version: 1", "servers:", '  mail1: {host: "[mail1]"}'),
        'routing.yaml:3: servers.mail1.host "[mail1]" is not a host name or IP address',
    ),
    (
        doc("version: 1", "servers:", '  mail1: {host: "::g"}'),
        'routing.yaml:3: servers.mail1.host "::g" is not a host name or IP address',
    ),
    (
        doc("version: 1", "servers:", "  mail1: {host: h}", '  "mail 2": {host: h2}'),
        'routing.yaml:4: server name "mail 2" may use only letters, digits, "_", "." and "-"',
    ),
    (
        doc("version: 1", "servers:", "  mail1: mail1.example.org"),
        'routing.yaml:3: servers.mail1 must be a mapping (key: value), got "mail1.example.org"',
    ),
    # -- client-facing TLS facts ---------------------------------------------------
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    client_tls: implicit"),
        "routing.yaml:5: servers.mail1.client_tls: implicit needs imaps_port, the server's "
        "implicit-TLS port (e.g. imaps_port: 993)",
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    client_tls: ssl"),
        'routing.yaml:5: servers.mail1.client_tls must be implicit, starttls or none, got "ssl"',
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    imaps_port: 99999"),
        "routing.yaml:5: servers.mail1.imaps_port must be between 1 and 65535, got 99999",
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    submission: smtp:0465"),
        "routing.yaml:5: servers.mail1.submission port: write 465, leading zeros are not "
        "allowed (YAML 1.1 would read 0465 as octal)",
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", '    submission: "::1:465"'),
        'routing.yaml:5: servers.mail1.submission "::1:465": write an IPv6 address in '
        "brackets, [::1]:143",
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h", "    submission: smtp host"),
        'routing.yaml:5: servers.mail1.submission "smtp host" is not a host name or IP address',
    ),
    (
        doc(
            "version: 1", "servers:", "  mail1:", "    host: h", "    submission:", "      port: 1"
        ),
        'routing.yaml:6: servers.mail1.submission needs "host"',
    ),
    (
        doc("version: 1", "servers:", "  m:", "    host: h", "    submission: {host: s, tsl: x}"),
        'routing.yaml:5: unknown key "tsl" in servers.m.submission (known keys: host, port, tls)',
    ),
    (
        doc("version: 1", "servers:", "  m:", "    host: h", "    submission: {host: s, tls: ssl}"),
        'routing.yaml:5: servers.m.submission.tls must be implicit, starttls or none, got "ssl"',
    ),
    # -- domains ------------------------------------------------------------------------
    (
        doc(*SERVERS, "domains:", "  example.org:", "    server: mail1", "    login: address"),
        'routing.yaml:9: unknown key "login" in domains.example.org '
        "(known keys: display_name, login_name, server, submission)",
    ),
    (
        doc(*SERVERS, "domains:", "  example.org:", "    server: mail9"),
        'routing.yaml:8: domains.example.org.server: unknown server "mail9" '
        "(servers: mail1, mail2)",
    ),
    (
        doc(*SERVERS, "domains:", "  example.org:", "    submission: smtp.example.org"),
        "routing.yaml:7: domains.example.org: no server for the domain-level answer: write "
        'server: NAME, or add a users: rule glob: "*@example.org" or a default rule',
    ),
    (
        doc(
            *SERVERS, "domains:", "  example.org: {server: mail1}", "  Example.ORG: {server: mail2}"
        ),
        'routing.yaml:8: domain "Example.ORG" is listed twice (first at line 7)',
    ),
    (
        doc(*SERVERS, "domains:", "  ex_ample.org: {server: mail1}"),
        'routing.yaml:7: domain "ex_ample.org" is not a DNS name: labels of letters, digits '
        'and "-" separated by dots (an internationalised name in its xn-- form)',
    ),
    (
        doc(*SERVERS, "domains:", "  -example.org: {server: mail1}"),
        'routing.yaml:7: domain "-example.org" is not a DNS name: labels of letters, digits '
        'and "-" separated by dots (an internationalised name in its xn-- form)',
    ),
    (
        doc(*SERVERS, "domains:", "  bücher.example: {server: mail1}"),
        'routing.yaml:7: domain "bücher.example" is not a DNS name: labels of letters, digits '
        'and "-" separated by dots (an internationalised name in its xn-- form)',
    ),
    (
        doc(*SERVERS, "domains:", "  example.org.: {server: mail1}"),
        'routing.yaml:7: domain "example.org." is not a DNS name: labels of letters, digits '
        'and "-" separated by dots (an internationalised name in its xn-- form)',
    ),
    (
        doc(*SERVERS, "domains:", "  example.org:", "    server: mail1", "    login_name: uid"),
        'routing.yaml:9: domains.example.org.login_name must be address or local_part, got "uid"',
    ),
    (
        doc(
            *SERVERS, "domains:", "  example.org:", "    server: mail1", '    display_name: "a\\tb"'
        ),
        "routing.yaml:9: domains.example.org.display_name must not contain control characters",
    ),
    (
        doc(*SERVERS, "domains:", "  example.org:", "    server: mail1", "    submission: s:0"),
        "routing.yaml:9: domains.example.org.submission port must be between 1 and 65535, got 0",
    ),
    (
        doc(*SERVERS, "domains: [example.org]"),
        "routing.yaml:6: domains must be a mapping (key: value), got a list",
    ),
    # -- replicas -------------------------------------------------------------------
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h1", "    replicas: [mail9]"),
        "routing.yaml:5: servers.mail1.replicas: unknown server mail9 (servers: mail1)",
    ),
    (
        doc("version: 1", "servers:", "  mail1:", "    host: h1", "    replicas: mail1"),
        "routing.yaml:5: servers.mail1.replicas lists mail1 itself",
    ),
    (
        doc(
            "version: 1",
            "servers:",
            "  a: {host: ha, replicas: [b]}",
            "  b: {host: hb, replicas: [c]}",
            "  c:",
            "    host: hc",
            "    replicas: [a]",
        ),
        "routing.yaml:3: replica cycle: a -> b -> c -> a",
    ),
    (
        doc("version: 1", "servers:", "  a: {host: ha, replicas: [b, b]}", "  b: {host: hb}"),
        "routing.yaml:3: servers.a.replicas lists b twice",
    ),
    # -- self: referral loops ----------------------------------------------------------
    (
        doc(
            "version: 1",
            "self: [imap.example.org:143, imap.example.org:993]",
            "servers:",
            "  mail1: {host: mail1.example.org}",
            "  door:",
            "    host: IMAP.Example.ORG",
        ),
        "routing.yaml:5: server door (IMAP.Example.ORG:143) is this door itself: "
        "a referral there would loop",
    ),
    (
        doc(
            "version: 1",
            "self: imap.example.org",
            "servers:",
            "  door: {host: imap.example.org, port: 143}",
        ),
        "routing.yaml:4: server door (imap.example.org:143) is this door itself: "
        "a referral there would loop",
    ),
    (
        doc("version: 1", 'self: ["[::1]:993"]', "servers:", '  v6: {host: "0:0::1", port: 993}'),
        "routing.yaml:4: server v6 ([::1]:993) is this door itself: a referral there would loop",
    ),
    (
        doc("version: 1", "self:", "  - imap.example.org:0143", "servers: {a: {host: h}}"),
        "routing.yaml:3: self[1] port: write 143, leading zeros are not allowed "
        "(YAML 1.1 would read 0143 as octal)",
    ),
    (
        doc("version: 1", "self:", "  - imap example.org", "servers: {a: {host: h}}"),
        'routing.yaml:3: self[1] "imap example.org" is not a host name or IP address',
    ),
    # -- delimiter ------------------------------------------------------------------
    (
        doc("version: 1", 'delimiter: "::"', "servers: {a: {host: h}}"),
        'routing.yaml:2: delimiter must be one punctuation character such as "/" or ".", got "::"',
    ),
    (
        doc("version: 1", 'delimiter: "%"', "servers: {a: {host: h}}"),
        'routing.yaml:2: delimiter must be one punctuation character such as "/" or ".", got "%"',
    ),
    # -- users -------------------------------------------------------------------------
    (
        doc(*SERVERS, "users:", "  - user: alice@example.org", "    server: mail3"),
        'routing.yaml:8: users[1].server: unknown server "mail3" (servers: mail1, mail2)',
    ),
    (
        doc(*SERVERS, "users:", "  - user: alice@example.org"),
        'routing.yaml:7: users[1] needs "server"',
    ),
    (
        doc(*SERVERS, "users:", "  - user: a@example.org", "    server: mail1", "    login: no"),
        'routing.yaml:9: users[1].login must be refer, accept or stay, got "no"',
    ),
    (
        doc(*SERVERS, "users:", '  - regex: "(a"', "    server: mail1"),
        'routing.yaml:7: users[1].regex "(a" does not compile: '
        "missing ), unterminated subpattern at position 0",
    ),
    (
        doc(
            *SERVERS,
            "users:",
            "  - default: true",
            "    server: mail1",
            "  - user: late@example.org",
            "    server: mail2",
        ),
        "routing.yaml:7: users[1]: the default rule must be the last one "
        "(the rules after it could never match)",
    ),
    (
        doc(*SERVERS, "users:", "  - default: false", "    server: mail1"),
        "routing.yaml:7: users[1]: write default: true, or remove the rule",
    ),
    (
        doc(*SERVERS, "users:", "  - default: yes", "    server: mail1"),
        'routing.yaml:7: users[1].default: write true or false, not "yes" '
        "(YAML 1.1 reads it as a boolean, other tools as text)",
    ),
    (
        doc(*SERVERS, "users:", "  - user: a@example.org", "    glob: '*'", "    server: mail1"),
        "routing.yaml:7: users[1] needs exactly one of user, glob, regex, default "
        "(got user and glob)",
    ),
    (
        doc(*SERVERS, "users:", "  - server: mail1"),
        "routing.yaml:7: users[1] needs exactly one of user, glob, regex, default (got none)",
    ),
    (
        doc(*SERVERS, "users: alice"),
        'routing.yaml:6: users must be a list, got "alice"',
    ),
    # -- mailboxes ---------------------------------------------------------------------
    (
        doc(*SERVERS, "mailboxes:", "  - match: Shared/*", "    servers: [mail1, nope]"),
        'routing.yaml:8: mailboxes[1].servers: unknown server "nope" (servers: mail1, mail2)',
    ),
    (
        doc(*SERVERS, "mailboxes:", "  - match: Shared/*", "    servers: []"),
        "routing.yaml:8: mailboxes[1].servers must name at least one server",
    ),
    (
        doc(*SERVERS, "mailboxes:", "  - match: inbox", "    servers: mail2"),
        "routing.yaml:7: mailboxes[1]: INBOX always goes to the user's home server; "
        "remove this rule",
    ),
    (
        doc(
            *SERVERS,
            "mailboxes:",
            "  - match: Shared/%/*",
            "    servers: mail2",
            "    rename: Public/*",
        ),
        'routing.yaml:9: mailboxes[1].rename "Public/*" has 1 wildcard(s) but match '
        '"Shared/%/*" has 2: each wildcard of match fills the wildcard at the same position '
        "in rename",
    ),
    (
        doc(*SERVERS, "mailboxes:", "  - servers: mail2"),
        'routing.yaml:7: mailboxes[1] needs "match"',
    ),
    # -- published ---------------------------------------------------------------------
    (
        doc(*SERVERS, "published:", "  - Shared/Sales", "  - INBOX"),
        "routing.yaml:8: INBOX is always listed first; remove it from published",
    ),
    (
        doc(*SERVERS, "published:", "  - Shared/Sales", "  - Other", "  - Shared/Sales"),
        'routing.yaml:9: "Shared/Sales" is published twice (first at line 7)',
    ),
    # -- user_map ----------------------------------------------------------------------
    (
        doc(*SERVERS, "user_map: users.map"),
        'routing.yaml:6: user_map "users.map" was not read (the caller must pass its text)',
    ),
    (
        doc(*SERVERS, "user_map:", "  bob@example.org: mail1", "  eve@example.org: mail7"),
        'routing.yaml:8: user_map "eve@example.org": unknown server "mail7" '
        "(servers: mail1, mail2)",
    ),
    (
        doc(*SERVERS, "user_map:", "  bob@example.org: mail1", "  bob@EXAMPLE.org: mail2"),
        'routing.yaml:8: user "bob@EXAMPLE.org" is listed twice (first at line 7)',
    ),
    # -- YAML-level errors come through as they are -------------------------------------
    (
        doc(*SERVERS, "  mail1: {host: again.example.org}"),
        'routing.yaml:6: duplicate key "mail1" (first defined at line 3)',
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_validation_errors(text: str, message: str) -> None:
    assert failure(text) == message


def test_several_errors_are_reported_together() -> None:
    text = doc(
        "version: 1",  # 1
        "servers:",  # 2
        "  mail1: {host: h1, port: 0143}",  # 3
        "  mail2: {host: h2}",  # 4
        "users:",  # 5
        "  - user: a@example.org",  # 6
        "    server: mail2",  # 7
        "    login: no",  # 8
        "  - glob: '*@x.org'",  # 9
        "    server: mail1",  # 10 -- mail1 is broken: not reported again
        "mailboxes:",  # 11
        "  - match: A/*",  # 12
        "    servers: [mail9]",  # 13
    )
    with pytest.raises(RoutingError) as info:
        load(text)
    err = info.value
    assert str(err).splitlines() == [
        "routing.yaml:3: servers.mail1.port: write 143, leading zeros are not allowed "
        "(YAML 1.1 would read 0143 as octal)",
        'routing.yaml:8: users[1].login must be refer, accept or stay, got "no"',
        'routing.yaml:13: mailboxes[1].servers: unknown server "mail9" (servers: mail2)',
    ]
    assert (err.file, err.line) == ("routing.yaml", 3)
    assert err.message.startswith("servers.mail1.port: write 143")
    assert len(err.errors) == 3


def test_self_addresses_from_the_caller() -> None:
    text = doc("version: 1", "servers:", "  a: {host: a.example.org}", "  b: {host: B.example.org}")
    assert failure(text, self_addresses=frozenset({("b.example.org", 143)})) == (
        "routing.yaml:4: server b (B.example.org:143) is this door itself: "
        "a referral there would loop"
    )
    # Another port on the same host is another service: no loop.
    load(text, self_addresses=frozenset({("b.example.org", 993)}))


# -- the bulk user map ---------------------------------------------------------------------

MAP_BASE = doc(*SERVERS, "user_map: users.map")


@pytest.mark.parametrize(
    ("map_text", "message"),
    [
        (
            "a@example.org mail1\nb@example.org mail3\n",
            'users.map:2: unknown server "mail3" for user "b@example.org" (servers: mail1, mail2)',
        ),
        (
            "# users\nBob@Example.org mail1\n\nx@example.org mail2\nbob@example.ORG mail2\n",
            # One case rule (normalise_user): the whole name is compared lower-cased.
            'users.map:5: user "bob@example.ORG" is listed twice (first at line 2)',
        ),
        ("a@example.org\n", "users.map:1: expected USER SERVER, got 1 field(s)"),
        ("a@example.org mail1 extra\n", "users.map:1: expected USER SERVER, got 3 field(s)"),
    ],
)
def test_user_map_errors(map_text: str, message: str) -> None:
    assert failure(MAP_BASE, user_map=map_text) == message


def test_user_map_parsing() -> None:
    table = load(
        MAP_BASE,
        user_map=(
            "# comment line\n"
            "   # indented comment\n"
            "\n"
            "a@example.org mail1\n"
            "B@EXAMPLE.ORG\tmail2   # trailing comment\n"
            "  c@Example.Org   mail2\r\n"
            "plain mail1\n"
            "x@y@Z.org mail1\n"
        ),
    )
    assert {user: server.name for user, server in table.user_map.items()} == {
        "a@example.org": "mail1",
        "b@example.org": "mail2",
        "c@example.org": "mail2",
        "plain": "mail1",
        "x@y@z.org": "mail1",
    }
    # Values are the table's own Server objects, not copies.
    assert table.user_map["a@example.org"] is table.servers["mail1"]
    assert table.user_map_file == "users.map"


def test_user_map_in_pieces_is_the_same_map() -> None:
    """Pieces that end at line ends: the same entries, line numbers and sha256."""
    servers = {"mail1": Server("mail1", "h", 143, (), 1), "mail2": Server("mail2", "i", 143, (), 2)}
    text = "# users\na@x mail1\n\nB@x mail2  # moved\r\nc@x mail1\x0bd@x mail2\n"
    pieces = ["# users\na@x mail1\n", "\nB@x mail2  # moved\r\n", "c@x mail1\x0bd@x mail2\n"]
    assert parse_user_map(pieces, "users.map", servers) == parse_user_map(
        text, "users.map", servers
    )
    root = parse_yaml(MAP_BASE, "routing.yaml")
    whole = load_table(root, "routing.yaml", user_map_text=text, source_text=MAP_BASE)
    split = load_table(root, "routing.yaml", user_map_text=pieces, source_text=MAP_BASE)
    assert split.user_map == whole.user_map and split.sha256 == whole.sha256
    with pytest.raises(RoutingError) as info:
        parse_user_map([*pieces, "x mail1\n", "zz\nA@X mail2\n"], "users.map", servers)
    assert [str(e) for e in info.value.errors] == [
        "users.map:8: expected USER SERVER, got 1 field(s)",
        'users.map:9: user "A@X" is listed twice (first at line 2)',
    ]


def test_user_map_error_count_is_capped() -> None:
    servers = {"mail1": Server("mail1", "h", 143, (), 1)}
    with pytest.raises(RoutingError) as info:
        parse_user_map("x\n" * 1000, "users.map", servers)
    assert len(info.value.errors) == 50


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("version: 1\nuser_map: users.map\n", "users.map"),
        ("version: 1\nuser_map: maps/big users.map\n", "maps/big users.map"),
        ("version: 1\n", None),
        ("version: 1\nuser_map: {a: b}\n", None),
        ("", None),
    ],
)
def test_read_user_map_name(text: str, name: str | None) -> None:
    assert read_user_map_name(parse_yaml(text, "r.yaml"), "r.yaml") == name


def test_read_user_map_name_errors() -> None:
    with pytest.raises(RoutingError) as info:
        read_user_map_name(parse_yaml("version: 1\nuser_map: [a]\n", "r.yaml"), "r.yaml")
    assert str(info.value) == "r.yaml:2: user_map must be a single value, got a list"


# -- the compiled example ----------------------------------------------------------------


def test_example_servers_and_chains() -> None:
    table = load_example()
    text = (CONFIG / "routing.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()

    def line_of(fragment: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if line.startswith(fragment))

    assert table.servers == {
        "mail1": Server("mail1", "mail1.example.org", 143, (), line_of("  mail1:")),
        "mail2": Server("mail2", "mail2.example.org", 143, ("mail2b",), line_of("  mail2:")),
        "mail2b": Server("mail2b", "mail2b.example.org", 143, (), line_of("  mail2b:")),
        "shared1": Server("shared1", "shared1.example.org", 1143, (), line_of("  shared1:")),
    }
    assert {name: tuple(s.name for s in chain) for name, chain in table.chains.items()} == {
        "mail1": ("mail1",),
        "mail2": ("mail2", "mail2b"),
        "mail2b": ("mail2b",),
        "shared1": ("shared1",),
    }
    assert [(r.kind, r.text, r.server.name, r.login) for r in table.user_rules] == [
        ("user", "alice@example.org", "mail1", LoginMode.REFER),
        ("glob", "*@sales.example.org", "mail2", LoginMode.ACCEPT),
        ("regex", "^[a-m].*@example\\.org$", "mail1", LoginMode.REFER),
        ("default", "", "mail2", LoginMode.REFER),
    ]
    assert [(r.match, [s.name for s in r.servers], r.rename) for r in table.mailbox_rules] == [
        ("Shared/*", ["shared1"], "Public/*"),
        ("Archive/%", ["mail2", "mail2b"], None),
        ("#news.*", ["mail2", "mail2b"], None),
    ]
    assert table.published == ("Shared/Sales", "Shared/Café Menu")
    assert table.delimiter == "/"
    assert table.namespaces() == Namespaces(
        personal=(("", "/"),), other=(), shared=(("Shared/", "/"),)
    )
    map_text = (CONFIG / "users.map").read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode() + b"\0" + map_text.encode()).hexdigest()
    assert table.sha256 == digest
    assert len(table.user_map) == 4


def test_sha256_given_by_the_caller_wins() -> None:
    text = doc(*SERVERS)
    root = parse_yaml(text, "r.yaml")
    assert load_table(root, "r.yaml", sha256="abc").sha256 == "abc"
    assert load_table(root, "r.yaml", source_text=text).sha256 == (
        hashlib.sha256(text.encode()).hexdigest()
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # Derived: personal "", shared = literal prefix of "<prefix>/*" rules only.
        (
            (
                "mailboxes:",
                "  - {match: Shared/*, servers: mail2}",
                "  - {match: 'Shared/*', servers: mail1}",
                "  - {match: Team/%, servers: mail2}",
                "  - {match: '#news.*', servers: mail2}",
                "  - {match: Pub/*/x/*, servers: mail2}",
                "  - {match: Public Folders/*, servers: mail2}",
            ),
            Namespaces((("", "/"),), (), (("Shared/", "/"), ("Public Folders/", "/"))),
        ),
        ((), Namespaces((("", "/"),), (), ())),
        # Explicit classes replace the derived ones; missing classes stay derived.
        (
            (
                "mailboxes: [{match: Shared/*, servers: mail2}]",
                "namespaces:",
                "  other: ['~']",
            ),
            Namespaces((("", "/"),), (("~", "/"),), (("Shared/", "/"),)),
        ),
        (
            ("namespaces:", "  personal: ['', 'INBOX/']", "  shared: []"),
            Namespaces((("", "/"), ("INBOX/", "/")), (), ()),
        ),
        (
            (
                "delimiter: '.'",
                "mailboxes: [{match: '#news.*', servers: mail2}]",
            ),
            Namespaces((("", "."),), (), (("#news.", "."),)),
        ),
    ],
)
def test_namespaces(extra: tuple[str, ...], expected: Namespaces) -> None:
    assert load(doc(*SERVERS, *extra)).namespaces() == expected


@pytest.mark.parametrize(
    ("host", "stored", "authority"),
    [
        ("mail.example.org", "mail.example.org", "mail.example.org:143"),
        ("192.0.2.1", "192.0.2.1", "192.0.2.1:143"),
        ('"::1"', "::1", "[::1]:143"),
        ('"[::1]"', "::1", "[::1]:143"),
        ('"[2001:DB8:0:0::1]"', "2001:db8::1", "[2001:db8::1]:143"),
        ("Mail_1.Example.org.", "Mail_1.Example.org.", "Mail_1.Example.org.:143"),
    ],
)
def test_hosts(host: str, stored: str, authority: str) -> None:
    table = load(doc("version: 1", "servers:", f"  s: {{host: {host}}}"))
    assert (table.servers["s"].host, table.servers["s"].authority) == (stored, authority)


# -- servers' client-facing facts and domains ------------------------------------------

TLS = ClientTls


@pytest.mark.parametrize(
    ("spec", "imaps_port", "client_tls", "endpoint", "submission"),
    [
        ("{host: h}", None, TLS.STARTTLS, Endpoint("h", 143, TLS.STARTTLS), None),
        ("{host: h, port: 10143}", None, TLS.STARTTLS, Endpoint("h", 10143, TLS.STARTTLS), None),
        ("{host: h, imaps_port: 993}", 993, TLS.IMPLICIT, Endpoint("h", 993, TLS.IMPLICIT), None),
        (
            "{host: h, imaps_port: 993, client_tls: starttls}",
            993,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            None,
        ),
        ("{host: h, client_tls: none}", None, TLS.NONE, Endpoint("h", 143, TLS.NONE), None),
        (
            "{host: h, submission: smtp.example.org}",
            None,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            Endpoint("smtp.example.org", 587, TLS.STARTTLS),
        ),
        (
            "{host: h, submission: 'smtp.example.org:465'}",
            None,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            Endpoint("smtp.example.org", 465, TLS.IMPLICIT),
        ),
        (
            "{host: h, submission: '[2001:db8::1]:2525'}",
            None,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            Endpoint("2001:db8::1", 2525, TLS.STARTTLS),
        ),
        (
            "{host: h, submission: {host: s, port: 465, tls: starttls}}",
            None,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            Endpoint("s", 465, TLS.STARTTLS),
        ),
        (
            "{host: h, submission: {host: s, port: 465}}",
            None,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            Endpoint("s", 465, TLS.IMPLICIT),
        ),
        (
            "{host: h, submission: {host: s, tls: none}}",
            None,
            TLS.STARTTLS,
            Endpoint("h", 143, TLS.STARTTLS),
            Endpoint("s", 587, TLS.NONE),
        ),
    ],
)
def test_server_client_facts(
    spec: str,
    imaps_port: int | None,
    client_tls: ClientTls,
    endpoint: Endpoint,
    submission: Endpoint | None,
) -> None:
    server = load(doc("version: 1", "servers:", f"  m: {spec}")).servers["m"]
    assert server.imaps_port == imaps_port
    assert server.client_tls is client_tls
    assert server.imap_endpoint == endpoint
    assert server.submission == submission


DOMAIN_BASE = (
    *SERVERS,  # 1-5
    "users:",  # 6
    "  - {user: boss@example.org, server: mail2}",  # 7
    '  - {glob: "*@example.org", server: mail1}',  # 8
    '  - {glob: "*@other.example", server: mail2}',  # 9
    '  - {glob: "*@other.example", server: mail1}',  # 10
    "  - {default: true, server: mail2}",  # 11
    "domains:",  # 12
)


def test_domains() -> None:
    table = load(
        doc(
            *DOMAIN_BASE,
            "  Example.ORG:",  # 13
            "    login_name: local_part",
            "    display_name: Example Org",
            "    submission: smtp.example.org:465",
            "  other.example:",  # 17
            "  third.example: {server: mail1, login_name: address}",  # 18
        )
    )
    mail1, mail2 = table.servers["mail1"], table.servers["mail2"]
    assert table.domains == {
        "example.org": Domain(
            "example.org",
            "local_part",
            "Example Org",
            mail1,
            Endpoint("smtp.example.org", 465, TLS.IMPLICIT),
            13,
        ),
        # the first glob "*@other.example" rule's server, not the default's
        "other.example": Domain("other.example", "address", "other.example", mail2, None, 17),
        "third.example": Domain("third.example", "address", "third.example", mail1, None, 18),
    }
    assert table.domains["example.org"].login_for("alice@example.org") == "alice"
    assert table.domains["other.example"].login_for("bob@other.example") == "bob@other.example"


def test_domain_server_falls_back_to_the_default_rule() -> None:
    table = load(doc(*DOMAIN_BASE, "  elsewhere.example: {}"))
    assert table.domains["elsewhere.example"].server.name == "mail2"


def test_no_domains_section_means_no_domains() -> None:
    assert load(doc(*SERVERS)).domains == {}
    assert load(doc(*SERVERS, "domains:")).domains == {}


def test_a_domain_naming_a_broken_server_is_reported_once() -> None:
    text = doc(
        "version: 1", "servers:", "  m: {host: h, port: 0}", "domains:", "  d.example: {server: m}"
    )
    assert failure(text) == "routing.yaml:3: servers.m.port must be between 1 and 65535, got 0"


def test_the_demo_and_example_domains() -> None:
    from refd.config.loader import DEMO_CONFIG, load_routing

    demo = load_routing(DEMO_CONFIG.parent / "routing.yaml")
    (domain,) = demo.domains.values()
    assert domain == Domain(
        "example.org",
        "local_part",
        "example.org",
        demo.servers["mail1"],
        Endpoint("smtp.example.org", 587, TLS.STARTTLS),
        domain.line,
    )
    assert demo.servers["mail1"].imap_endpoint == Endpoint("mail1.example.org", 143, TLS.STARTTLS)
    assert demo.servers["mail2"].imap_endpoint == Endpoint("mail2.example.org", 10143, TLS.STARTTLS)
    assert set(load_example().domains) == {"example.org"}
