"""The ldap auth source against a real OpenLDAP slapd (tests/interop/slapd.py).

One session-wide slapd holds the named users below and 1,000 bulk users
(all loaded with slapadd); tests that stop a server start their own. The
source talks to slapd over loopback with real TLS (LDAPS and StartTLS)
against the session's test CA.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from trio.testing import MockClock

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.ldap import LdapServer, LdapSettings, LdapSource
from refd.auth.schemes import hash_password
from refd.routing.model import Home
from refd.runtime import Service
from tests.conftest import make_door
from tests.interop.dovecot import ServerCert
from tests.interop.slapd import (
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    LdapUser,
    SlapdInstance,
    ssha,
    start_slapd,
)

pytestmark = pytest.mark.interop

BULK = 1000

USERS = [
    LdapUser("alice", ssha("alice-pw"), mail_host="mail1.example.org", extra_uids=("alice.s",)),
    LdapUser("bob", hash_password("SSHA512", "bob-pw")),
    LdapUser("carol", "{CRYPT}" + hash_password("SHA512-CRYPT", "carol-pw").split("}", 1)[1]),
    LdapUser("dave", ssha("dave-pw"), mail_host="mail1.example.org", disabled=True),
    # Two entries answer to uid=twin: ambiguous.
    LdapUser("twin", ssha("twin-pw"), rdn="cn=twin one"),
    LdapUser("twin", ssha("twin-pw"), rdn="cn=twin two"),
    LdapUser("jürgen", ssha("jü-pw"), mail_host="mail2"),
    LdapUser("erin", ssha("erin-pw"), mail_host="mail9.example.org"),
    *(
        LdapUser(f"user{n:04d}", ssha(f"pw-{n:04d}"), mail_host=f"mail{n % 2 + 1}.example.org")
        for n in range(BULK)
    ),
]


@pytest.fixture(scope="session")
def ldap_cert(tls_ca: trustme.CA) -> ServerCert:
    leaf = tls_ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    return ServerCert(chain_pem=chain, key_pem=leaf.private_key_pem.bytes())


@pytest.fixture(scope="session")
def directory(
    slapd_binary: str, tmp_path_factory: pytest.TempPathFactory, ldap_cert: ServerCert, tls_ca: Any
) -> Iterator[SlapdInstance]:
    instance = start_slapd(
        slapd_binary,
        tmp_path_factory.mktemp("slapd"),
        ldap_cert,
        tls_ca.cert_pem.bytes(),
        USERS,
    )
    yield instance
    instance.stop()


@pytest.fixture
def own_directory(
    slapd_binary: str, tmp_path: Path, ldap_cert: ServerCert, tls_ca: Any
) -> Iterator[SlapdInstance]:
    """A slapd of this test's own, to stop and start."""
    instance = start_slapd(
        slapd_binary, tmp_path / "slapd", ldap_cert, tls_ca.cert_pem.bytes(), USERS[:8]
    )
    yield instance
    instance.stop()


@pytest.fixture
def ca_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls_ca.cert_pem.bytes().decode("ascii"))
    return context


def settings(*urls: str, starttls: bool = False, **changes: Any) -> LdapSettings:
    base = LdapSettings(
        servers=tuple(LdapServer.from_url(u, starttls=starttls) for u in urls),
        base=PEOPLE,
        user_filter="(&(objectClass=inetOrgPerson)(uid=%u))",
        usable_filter="(!(employeeType=disabled))",
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        route_attribute="mailHost",
        pool_size=4,
        connect_timeout_s=2.0,
        operation_timeout_s=2.0,
        timeout_s=4.0,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def sources() -> Iterator[list[LdapSource]]:
    made: list[LdapSource] = []
    yield made
    for source in made:
        source.close()


def make(
    sources: list[LdapSource], s: LdapSettings, context: ssl.SSLContext | None = None
) -> LdapSource:
    source = LdapSource(s, ssl_context=context)
    sources.append(source)
    return source


async def login(source: LdapSource, user: str, password: str) -> AuthResult:
    return await source.authenticate(AuthRequest(user, password, "203.0.113.7"))


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- bind mode -------------------------------------------------------------------------


async def test_bind_mode_over_ldaps_accepts_and_names_the_home(
    directory: SlapdInstance, sources: list[LdapSource], ca_context: ssl.SSLContext
) -> None:
    source = make(sources, settings(directory.ldaps_url), ca_context)
    ok = await login(source, "alice", "alice-pw")
    assert ok.status is AuthStatus.SUCCESS
    assert ok.user == "alice"
    assert ok.home == Home("mail1.example.org", f"ldap uid=alice,{PEOPLE}", first=True)
    assert [(op.operation, op.result) for op in ok.ops] == [
        ("connect", "ok"),
        ("bind", "ok"),
        ("search", "ok"),
        ("connect", "ok"),
        ("bind", "ok"),
    ]
    wrong = await login(source, "alice", "nope")
    assert (wrong.status, wrong.home) == (AuthStatus.FAILURE, None)
    # Pooled connections: no connect, no service bind the second time.
    assert [(op.operation, op.result) for op in wrong.ops] == [
        ("search", "ok"),
        ("bind", "failure"),
    ]


async def test_bind_mode_over_starttls(
    directory: SlapdInstance, sources: list[LdapSource], ca_context: ssl.SSLContext
) -> None:
    source = make(sources, settings(directory.url, starttls=True), ca_context)
    ok = await login(source, "alice", "alice-pw")
    assert ok.status is AuthStatus.SUCCESS
    assert [op.operation for op in ok.ops][:3] == ["connect", "starttls", "bind"]
    assert (await login(source, "alice", "alice-pwx")).status is AuthStatus.FAILURE


async def test_a_certificate_from_another_ca_is_unavailable(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    other = trustme.CA()
    context = ssl.create_default_context(cadata=other.cert_pem.bytes().decode("ascii"))
    for s in (settings(directory.ldaps_url), settings(directory.url, starttls=True)):
        result = await login(make(sources, s, context), "alice", "alice-pw")
        assert result.status is AuthStatus.UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in result.reason


async def test_unknown_user_and_wrong_password_make_the_same_requests(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(sources, settings(directory.url))
    await login(source, "alice", "warm-up")
    wrong = await login(source, "alice", "wrong")
    unknown = await login(source, "nobody-here", "wrong")
    assert wrong.status is unknown.status is AuthStatus.FAILURE
    shape = [(op.operation, op.result) for op in wrong.ops]
    assert shape == [(op.operation, op.result) for op in unknown.ops]
    assert shape == [("search", "ok"), ("bind", "failure")]


async def test_names_are_matched_by_the_directory_and_routed_by_the_entry(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(sources, settings(directory.url))
    for typed in ("ALICE", " alice ", "Alice"):
        result = await login(source, typed, "alice-pw")
        assert (result.status, result.user) == (AuthStatus.SUCCESS, "alice"), typed
        assert result.home is not None and result.home.origin == f"ldap uid=alice,{PEOPLE}"
    # A second uid of the same entry logs in under that name, same home.
    other = await login(source, "alice.s", "alice-pw")
    assert (other.status, other.user) == (AuthStatus.SUCCESS, "alice.s")


async def test_non_ascii_user_name(directory: SlapdInstance, sources: list[LdapSource]) -> None:
    source = make(sources, settings(directory.url))
    result = await login(source, "jürgen", "jü-pw")
    assert (result.status, result.user) == (AuthStatus.SUCCESS, "jürgen")
    # The DN comes back from slapd as it spells it; the origin is its normal form.
    assert result.home == Home("mail2", f"ldap uid=jürgen,{PEOPLE}", first=True)
    # NFD spelling of the same name (u + combining diaeresis): slapd matches it.
    decomposed = await login(source, "ju\u0308rgen", "jü-pw")
    assert (decomposed.status, decomposed.user) == (AuthStatus.SUCCESS, "jürgen")
    assert (await login(source, "jürgen", "ju-pw")).status is AuthStatus.FAILURE


@pytest.mark.parametrize("name", ["*", "a*)(uid=*", "*)(|(uid=*", "al*", "\\2a", "alice)(", "\0"])
async def test_filter_injection_matches_nobody(
    directory: SlapdInstance, sources: list[LdapSource], name: str
) -> None:
    source = make(sources, settings(directory.url, usable_filter=None))
    result = await login(source, name, "alice-pw")
    assert result.status is AuthStatus.FAILURE
    assert result.home is None
    if "\0" not in name:
        assert result.reason == "no usable entry matches the name"


async def test_disabled_account_fails_like_a_wrong_password(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    open_source = make(sources, settings(directory.url, usable_filter=None))
    assert (await login(open_source, "dave", "dave-pw")).status is AuthStatus.SUCCESS
    source = make(sources, settings(directory.url))
    await login(source, "alice", "warm-up")  # the pools hold a connection each now
    disabled = await login(source, "dave", "dave-pw")
    wrong = await login(source, "alice", "wrong")
    assert disabled.status is wrong.status is AuthStatus.FAILURE
    assert disabled.home is None
    assert disabled.reason == "no usable entry matches the name"
    shape = [(o.operation, o.result) for o in disabled.ops]
    assert shape == [(o.operation, o.result) for o in wrong.ops]
    assert shape == [("search", "ok"), ("bind", "failure")]


async def test_two_entries_for_one_name_fail_and_are_logged(
    directory: SlapdInstance, sources: list[LdapSource], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "refd.auth.ldap")
    source = make(sources, settings(directory.url))
    result = await login(source, "twin", "twin-pw")
    assert result.status is AuthStatus.FAILURE
    assert result.reason == (
        f"ambiguous: 2 entries match (cn=twin one,{PEOPLE}, cn=twin two,{PEOPLE})"
    )
    assert [r.getMessage() for r in caplog.records] == [
        "ldap: user='twin' is ambiguous: 2 entries match: "
        f"cn=twin one,{PEOPLE}, cn=twin two,{PEOPLE}"
    ]


async def test_empty_password_is_never_an_unauthenticated_bind(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(sources, settings(directory.url))
    result = await login(source, "alice", "")
    assert (result.status, result.reason, result.ops) == (AuthStatus.FAILURE, "empty password", ())


async def test_a_wrong_service_password_is_unavailable_and_not_logged(
    directory: SlapdInstance, sources: list[LdapSource], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = make(sources, settings(directory.url, bind_password="not-the-service-pw"))
    result = await login(source, "alice", "alice-pw")
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason.endswith(
        f"the service account {SERVICE_DN} cannot bind: 49 invalidCredentials"
    )
    assert "not-the-service-pw" not in caplog.text + result.reason
    assert "alice-pw" not in caplog.text


# -- compare mode ------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), [("bob", "bob-pw"), ("carol", "carol-pw")])
async def test_compare_mode_over_ldaps_and_starttls(
    directory: SlapdInstance,
    sources: list[LdapSource],
    ca_context: ssl.SSLContext,
    user: str,
    password: str,
) -> None:
    for s in (settings(directory.ldaps_url), settings(directory.url, starttls=True)):
        source = make(sources, dataclasses.replace(s, mode="compare"), ca_context)
        ok = await login(source, user, password)
        assert (ok.status, ok.user) == (AuthStatus.SUCCESS, user), ok.reason
        # One search, no user bind: the password was read and checked here.
        assert [op.operation for op in ok.ops if op.operation != "connect"] == [
            *(["starttls"] if s.servers[0].starttls else []),
            "bind",
            "search",
        ]
        bad = await login(source, user, password + "x")
        assert bad.status is AuthStatus.FAILURE
        assert [op.operation for op in bad.ops] == ["search"]


async def test_compare_mode_without_read_access_fails(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    # Anonymous may not read userPassword (the ACL says auth only): nothing to compare.
    source = make(
        sources, settings(directory.url, mode="compare", bind_dn=None, bind_password=None)
    )
    assert (await login(source, "bob", "bob-pw")).status is AuthStatus.FAILURE


# -- routing through the door --------------------------------------------------------


async def test_mailhost_is_the_login_referral(
    directory: SlapdInstance,
    sources: list[LdapSource],
    demo_service: Service,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    source = make(sources, settings(directory.url))
    door = make_door(dataclasses.replace(demo_service, auth=source))
    caps = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
    await door.transcript(f"""
        S: * OK [CAPABILITY {caps}] localhost refd IMAP referral service ready.
        C: a1 LOGIN ALICE alice-pw
        S: a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
        C: a2 LOGIN user0001 pw-0001
        S: a2 NO [REFERRAL imap://user0001;AUTH=*@mail2.example.org:10143/] Your mail is on mail2.example.org; connect there.
        C: a3 LOGIN erin erin-pw
        S: a3 NO [UNAVAILABLE] No mail server is configured for this account.
    """)  # noqa: E501
    assert (
        f"no route conn=t-1 user=erin reason=ldap uid=erin,{PEOPLE} names 'mail9.example.org': "
        "no server of the table"
    ) in caplog.text
    registry = door.door.metrics.registry
    assert (
        registry.get_sample_value(
            "refd_directory_requests_total", {"source": "ldap", "operation": "bind", "result": "ok"}
        )
        >= 4
    )  # the service bind, alice, user0001, erin


# -- failover, a server gone, timeouts --------------------------------------------------


async def test_failover_when_the_first_server_is_down(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    dead = f"ldap://127.0.0.1:{unused_port()}"
    source = make(sources, settings(dead, directory.url, retry_after_s=60.0))
    first = await login(source, "alice", "alice-pw")
    assert first.status is AuthStatus.SUCCESS
    assert [(op.operation, op.result) for op in first.ops][:2] == [
        ("connect", "error"),
        ("connect", "ok"),
    ]
    # Within retry_after_s the dead server is not tried first.
    second = await login(source, "alice", "alice-pw")
    assert second.status is AuthStatus.SUCCESS
    assert all(op.result == "ok" for op in second.ops)


async def test_a_server_down_is_logged_once_not_per_login(
    sources: list[LdapSource], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "refd.auth.ldap")
    dead = f"ldap://127.0.0.1:{unused_port()}"
    source = make(sources, settings(dead, retry_after_s=60.0))
    for _ in range(3):
        result = await login(source, "alice", "alice-pw")
        assert result.status is AuthStatus.UNAVAILABLE
        assert result.reason.startswith(f"{dead}: connect: ")
    failed = [r for r in caplog.records if r.getMessage().startswith(f"ldap server {dead}")]
    assert [r.levelname for r in failed] == ["WARNING", "DEBUG", "DEBUG"]


async def test_a_server_that_never_answers_times_out_within_timeout_s(
    own_directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(sources, settings(own_directory.url, operation_timeout_s=1.0, timeout_s=1.5))
    assert (await login(source, "alice", "alice-pw")).status is AuthStatus.SUCCESS
    own_directory.pause()  # accepts (the kernel does), answers nothing
    try:
        started = time.monotonic()
        result = await login(source, "alice", "alice-pw")
        elapsed = time.monotonic() - started
    finally:
        own_directory.resume()
    assert result.status is AuthStatus.UNAVAILABLE
    assert elapsed < 1.5 + 1.0  # timeout_s, and a margin for a loaded machine
    assert "timed out" in result.reason
    # The search's own timeout (1 s) ends it; on a very busy machine the
    # whole-exchange one (1.5 s) may come first, and then no request is reported.
    assert [op.result for op in result.ops] in (["timeout"], [])


async def test_slapd_stopped_mid_test_then_back(
    own_directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(sources, settings(own_directory.url, retry_after_s=0.01))
    assert (await login(source, "alice", "alice-pw")).status is AuthStatus.SUCCESS
    own_directory.stop()
    started = time.monotonic()
    gone = await login(source, "alice", "alice-pw")
    assert time.monotonic() - started < source.settings.timeout_s + 0.5
    assert gone.status is AuthStatus.UNAVAILABLE
    assert "connect" in gone.reason
    own_directory.start()
    back = await login(source, "alice", "alice-pw")
    assert back.status is AuthStatus.SUCCESS, back.reason


async def test_the_event_loop_runs_while_the_directory_is_stuck(
    own_directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(sources, settings(own_directory.url, operation_timeout_s=1.0, timeout_s=1.0))
    own_directory.pause()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.05)
            ticks += 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            results = []

            async def one() -> None:
                results.append(await login(source, "alice", "alice-pw"))

            async with trio.open_nursery() as logins:
                for _ in range(8):  # more than pool_size: some wait for a slot
                    logins.start_soon(one)
            nursery.cancel_scope.cancel()
    finally:
        own_directory.resume()
    assert [r.status for r in results] == [AuthStatus.UNAVAILABLE] * 8
    assert ticks >= 10


# -- TCP_NODELAY ------------------------------------------------------------------------


async def test_every_connection_sets_tcp_nodelay(
    directory: SlapdInstance, sources: list[LdapSource], ca_context: ssl.SSLContext
) -> None:
    for s in (settings(directory.ldaps_url), settings(directory.url, starttls=True)):
        source = make(sources, s, ca_context)
        assert (await login(source, "alice", "alice-pw")).status is AuthStatus.SUCCESS
        conns = source._directory.pooled()
        assert len(conns) == 2  # the search connection and the bind connection
        for conn in conns:
            assert conn.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert isinstance(conn.socket, ssl.SSLSocket)


# -- load ------------------------------------------------------------------------------


async def test_a_thousand_users_log_in_concurrently(
    directory: SlapdInstance, sources: list[LdapSource], ca_context: ssl.SSLContext
) -> None:
    source = make(
        sources,
        settings(directory.url, starttls=True, pool_size=16, timeout_s=30.0),
        ca_context,
    )
    results: dict[int, AuthResult] = {}

    async def one(n: int) -> None:
        results[n] = await login(source, f"user{n:04d}", f"pw-{n:04d}")

    started = time.monotonic()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for n in range(BULK):
                nursery.start_soon(one, n)
    elapsed = time.monotonic() - started
    assert len(results) == BULK
    failed = {n: r.reason for n, r in results.items() if r.status is not AuthStatus.SUCCESS}
    assert failed == {}
    assert all(
        results[n].home == Home(f"mail{n % 2 + 1}.example.org", f"ldap uid=user{n:04d},{PEOPLE}")
        for n in range(BULK)
    )
    print(
        f"\n{BULK} concurrent LDAP logins (StartTLS, bind mode, pool 16): "
        f"{elapsed:.2f}s, {BULK / elapsed:.0f}/s"
    )


# -- lookups without a password: the route cache -----------------------------------------


async def test_lookup_reads_the_entry_and_caches_found_and_not_found(
    directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    now = [0.0]
    s = settings(directory.url, route_cache_ttl_s=60.0, route_cache_negative_ttl_s=10.0)
    source = LdapSource(s, clock=lambda: now[0])
    sources.append(source)
    first = await source.lookup("Alice")
    assert (first.status, first.user, first.cached) == (AuthStatus.SUCCESS, "alice", False)
    assert first.home == Home("mail1.example.org", f"ldap uid=alice,{PEOPLE}")
    assert [op.operation for op in first.ops] == ["connect", "bind", "search"]  # no user bind
    again = await source.lookup("alice ")
    assert (again.status, again.home, again.cached, again.ops) == (
        AuthStatus.SUCCESS,
        first.home,
        True,
        (),
    )
    # Not found: cached for the negative TTL, even once the entry exists.
    name = "newcomer"
    missing = await source.lookup(name)
    assert (missing.status, missing.cached) == (AuthStatus.FAILURE, False)
    directory.ldapadd(LdapUser(name, ssha("n-pw"), mail_host="mail2").ldif())
    assert (await source.lookup(name)).cached is True
    # A login never reads the cache.
    assert (await login(source, name, "n-pw")).home == Home("mail2", f"ldap uid={name},{PEOPLE}")
    now[0] += 10.0
    found = await source.lookup(name)
    assert (found.status, found.home, found.cached) == (
        AuthStatus.SUCCESS,
        Home("mail2", f"ldap uid={name},{PEOPLE}"),
        False,
    )
    # Found entries live route_cache_ttl_s.
    now[0] += 59.0
    assert (await source.lookup("alice")).cached is False
    assert (await source.lookup(name)).cached is True
    # Ambiguous and disabled are "not found" for a lookup too.
    assert (await source.lookup("twin")).reason.startswith("ambiguous: 2 entries match")
    assert (await source.lookup("dave")).status is AuthStatus.FAILURE


async def test_the_route_cache_is_bounded_and_never_keeps_unavailable(
    own_directory: SlapdInstance, sources: list[LdapSource]
) -> None:
    source = make(
        sources,
        settings(own_directory.url, route_cache_max_entries=2, retry_after_s=0.01),
    )
    for name in ("alice", "jürgen", "erin"):
        assert (await source.lookup(name)).status is AuthStatus.SUCCESS
    assert len(source.routes) == 2
    assert (await source.lookup("alice")).cached is False  # the oldest went first
    assert (await source.lookup("erin")).cached is True
    own_directory.stop()
    down = await source.lookup("bob")
    assert down.status is AuthStatus.UNAVAILABLE
    own_directory.start()
    assert (await source.lookup("bob")).cached is False


# -- refd explain ------------------------------------------------------------------------


def explain_config(tmp_path: Path, directory: SlapdInstance, **extra: str) -> Path:
    import shutil

    from refd.config.loader import DEMO_CONFIG

    shutil.copy(DEMO_CONFIG.parent / "routing.yaml", tmp_path / "routing.yaml")
    (tmp_path / "ldap.secret").write_text(SERVICE_PASSWORD + "\n")
    more = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    (tmp_path / "refd.yaml").write_text(
        "routing: routing.yaml\n"
        "auth:\n"
        "  source: ldap\n"
        "  ldap:\n"
        f"    servers: [{directory.url}]\n"
        f"    bind_dn: {SERVICE_DN}\n"
        "    bind_password_file: ldap.secret\n"
        f"    base: {PEOPLE}\n"
        '    user_filter: "(&(objectClass=inetOrgPerson)(uid=%u))"\n'
        '    usable_filter: "(!(employeeType=disabled))"\n'
        "    route_attribute: mailHost\n"
        f"{more}"
        "listeners:\n"
        "  - {address: 127.0.0.1, port: 1143}\n"
    )
    return tmp_path / "refd.yaml"


def refd_explain(config: Path, *args: str) -> tuple[int, list[str]]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "refd", "explain", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.splitlines()


def test_explain_says_which_entry_gave_the_home(directory: SlapdInstance, tmp_path: Path) -> None:
    config = explain_config(tmp_path, directory)
    code, lines = refd_explain(config, "ALICE")
    assert code == 0
    assert lines == [
        f'auth: ldap: entry uid=alice,{PEOPLE}: authenticated as "alice"',
        f"home from the directory: ldap uid=alice,{PEOPLE} names 'mail1.example.org' "
        "(before the table's users: rules)",
        f"home server: mail1 (ldap uid=alice,{PEOPLE} names 'mail1.example.org')",
        "C: a1 LOGIN ALICE <password>",
        "S: a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
        "Your mail is on mail1.example.org; connect there.",
    ]
    code, lines = refd_explain(config, "erin")
    assert code == 2
    assert lines[2:] == [
        f"no route: ldap uid=erin,{PEOPLE} names 'mail9.example.org': no server of the table",
        "C: a1 LOGIN erin <password>",
        "S: a1 NO [UNAVAILABLE] No mail server is configured for this account.",
    ]
    code, lines = refd_explain(config, "*")
    assert (code, lines[0]) == (
        2,
        "auth: ldap: no usable entry matches the name: every LOGIN fails",
    )
    assert lines[-1] == "S: a1 NO [AUTHENTICATIONFAILED] Authentication failed."


def test_explain_with_the_directory_down(tmp_path: Path) -> None:
    down = SlapdInstance("slapd", tmp_path, unused_port(), unused_port())
    config = explain_config(
        tmp_path, down, timeout_s="2", connect_timeout_s="1", operation_timeout_s="1"
    )
    code, lines = refd_explain(config, "alice")
    assert code == 2
    assert lines[0].startswith(f"auth: ldap: the directory did not answer: {down.url}: connect: ")
    assert lines[-1] == (
        "S: a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later."
    )


# -- the daemon over sockets ----------------------------------------------------------------


def test_the_daemon_refers_by_mailhost_over_starttls_and_counts_requests(
    directory: SlapdInstance, tmp_path: Path, tls_ca: trustme.CA
) -> None:
    import signal

    from tests.procs import Daemon, free_ports, session
    from tests.robustness.helpers import http_get

    config = explain_config(tmp_path, directory)
    tls_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port, metrics = free_ports(2)
    text = config.read_text().replace(
        "    route_attribute: mailHost\n",
        "    route_attribute: mailHost\n    starttls: true\n    ca_file: ca.pem\n",
    )
    text = text.replace("port: 1143}", f"port: {port}}}")
    text += f"metrics: {{address: 127.0.0.1, port: {metrics}}}\n"
    text = text.replace("  source: ldap\n", "  source: ldap\n  failure_delay_s: 0.1\n")
    config.write_text(text)
    daemon = Daemon(["serve", "-c", str(config)])
    try:
        daemon.wait_log("refd ready")
        out = session(port, b"a1 LOGIN ALICE alice-pw", b"a2 LOGIN alice wrong")
        assert out[1:] == [
            b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
            b"Your mail is on mail1.example.org; connect there.\r\n",
            b"a2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ]
        status, body = http_get(metrics, "/metrics")
        assert status == 200
        lines = body.decode().splitlines()
        for sample in (
            'refd_directory_requests_total{operation="starttls",result="ok",source="ldap"} 2.0',
            'refd_directory_requests_total{operation="search",result="ok",source="ldap"} 2.0',
            'refd_directory_requests_total{operation="bind",result="failure",source="ldap"} 1.0',
            # the service account's bind and alice's
            'refd_directory_requests_total{operation="bind",result="ok",source="ldap"} 2.0',
        ):
            assert sample in lines, sample
        # A reload builds a new source (new pools, an empty route cache); logins go on.
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload ok")
        assert session(port, b"a1 LOGIN user0002 pw-0002")[1] == (
            b"a1 NO [REFERRAL imap://user0002;AUTH=*@mail1.example.org/] "
            b"Your mail is on mail1.example.org; connect there.\r\n"
        )
    finally:
        daemon.stop()
