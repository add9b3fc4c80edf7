"""Tier (b): RFC-style transcripts of every command, over memory streams.

The table is the embedded demo (``refd/demo/routing.yaml``): alice is
login-referred to mail1, bob is accepted with ``OK [REFERRAL]`` and lives on
mail2:10143, ``Shared/*`` is on shared1 with replica shared2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools

import pytest
import trio
from trio.testing import MockClock

from refd.auth.base import AuthRequest
from refd.auth.trust import TrustSource
from refd.config.yamltree import parse_yaml
from refd.routing import load_table
from refd.runtime import Service
from tests.conftest import Door, hits, make_door

CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
GREETING = f"S: * OK [CAPABILITY {CAPS}] localhost refd IMAP referral service ready."
BOB_IN = f"""
C: b1 LOGIN bob secret
S: * CAPABILITY {CAPS}
S: b1 OK [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/] Logged in. Your mailboxes are on mail2.example.org.
"""
SHARED = "imap://bob;AUTH=*@shared1.example.org/{0} imap://bob;AUTH=*@shared2.example.org/{0}"


async def test_greeting_capability_noop_logout(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        C: a1 CAPABILITY
        S: * CAPABILITY {CAPS}
        S: a1 OK CAPABILITY completed.
        C: a2 NOOP
        S: a2 OK NOOP completed.
        C: a3 LOGOUT
        S: * BYE Logging out.
        S: a3 OK LOGOUT completed.
        S: <closed>
    """)


async def test_id_any_state(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        C: a1 ID ("name" "test" "version" "1")
        S: * ID ("name" "refd" "version" "0.1.0")
        S: a1 OK ID completed.
        {BOB_IN}
        C: a2 ID NIL
        S: * ID ("name" "refd" "version" "0.1.0")
        S: a2 OK ID completed.
    """)


async def test_login_referral_rfc2221_4_1(door: Door, clock: MockClock) -> None:
    # RFC 2221 §4.1: "A001 NO [REFERRAL IMAP://MIKE@SERVER2/] Specified user
    # is invalid on this server. Try SERVER2." — server-only URL, ;AUTH=*.
    await door.transcript(f"""
        {GREETING}
        C: A001 LOGIN alice secret
        S: A001 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
        C: A002 SELECT INBOX
        S: A002 BAD SELECT needs an authenticated session: log in first.
    """)


async def test_failed_login_gets_no_referral_after_delay(door: Door, clock: MockClock) -> None:
    start = trio.current_time()
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a2 LOGIN mallory secret
        S: a2 NO [AUTHENTICATIONFAILED] Authentication failed.
    """)
    # Two failures, each after the configured 2 s delay (mock clock).
    assert trio.current_time() - start >= 4


async def test_accept_mode_rfc2221_ok_referral(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 CAPABILITY
        S: * CAPABILITY {CAPS}
        S: b2 OK CAPABILITY completed.
        C: b3 LOGIN bob secret
        S: b3 BAD LOGIN is not allowed: already authenticated.
    """)


async def test_mailbox_referrals_rfc2193_4_1(door: Door, clock: MockClock) -> None:
    sales = SHARED.format("Shared/Sales")
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 SELECT INBOX
        S: b2 NO [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/INBOX] Remote mailbox. Try mail2.example.org.
        C: b3 SELECT inbox
        S: b3 NO [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/INBOX] Remote mailbox. Try mail2.example.org.
        C: b4 SELECT Shared/Sales
        S: b4 NO [REFERRAL {sales}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b5 EXAMINE Shared/Sales
        S: b5 NO [REFERRAL {sales}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b6 DELETE Shared/Sales
        S: b6 NO [REFERRAL {sales}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b7 SUBSCRIBE Shared/Sales
        S: b7 NO [REFERRAL {sales}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b8 UNSUBSCRIBE Shared/Sales
        S: b8 NO [REFERRAL {sales}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b9 STATUS Shared/Sales (MESSAGES UNSEEN)
        S: b9 NO [REFERRAL {sales}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b10 SELECT Drafts
        S: b10 NO [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/Drafts] Remote mailbox. Try mail2.example.org.
    """)


async def test_create_referral_rfc2193_4_2(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: A001 CREATE "Shared/FOO"
        S: A001 NO [REFERRAL {SHARED.format("Shared/FOO")}] Mailbox should be created on shared1.example.org or shared2.example.org.
    """)


async def test_rename_referral_pairs_rfc2193_4_3(door: Door, clock: MockClock) -> None:
    home = "imap://bob;AUTH=*@mail2.example.org:10143/"
    s1 = "imap://bob;AUTH=*@shared1.example.org/"
    s2 = "imap://bob;AUTH=*@shared2.example.org/"
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: A001 RENAME FOO BAR
        S: A001 NO [REFERRAL {home}FOO {home}BAR] Unable to rename mailbox located on mail2.example.org; rename it there.
        C: A002 RENAME FOO Shared/BAR
        S: A002 NO [REFERRAL {home}FOO {s1}Shared/BAR] Unable to rename mailbox across servers.
        C: A003 RENAME Shared/A Shared/B
        S: A003 NO [REFERRAL {s1}Shared/A {s1}Shared/B {s2}Shared/A {s2}Shared/B] Unable to rename mailbox located on shared1.example.org or shared2.example.org; rename it there.
    """)


async def test_empty_mailbox_name_rfc5530(door: Door, clock: MockClock) -> None:
    # "" is a valid astring but no URL names it (RFC 5092 §11: enc-mailbox =
    # 1*bchar): NO [CANNOT] (RFC 5530 §3) for every command, as Dovecot
    # answers; the session goes on.
    cannot = "NO [CANNOT] A mailbox name cannot be empty."
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 SELECT ""
        S: b2 {cannot}
        C: b3 CREATE ""
        S: b3 {cannot}
        C: b4 RENAME "" Archive
        S: b4 {cannot}
        C: b5 RENAME Archive ""
        S: b5 {cannot}
        C: b6 APPEND "" {{310}}
        S: b6 {cannot}
        C: b7 STATUS {{0+}}
        C:  (MESSAGES)
        S: b7 {cannot}
        C: b8 NOOP
        S: b8 OK NOOP completed.
    """)


async def test_empty_user_name_has_no_referral(demo_service: Service, clock: MockClock) -> None:
    # An authenticating proxy in front (the trust source) may vouch for any
    # name, even "": no URL can name it (RFC 5092 §11), so no referral.
    table = load_table(
        parse_yaml(EVERYONE_HOME, "routing.yaml"), "routing.yaml", source_text=EVERYONE_HOME
    )
    trusting = dataclasses.replace(
        demo_service, table=table, auth=TrustSource((ipaddress.ip_network("127.0.0.0/8"),))
    )
    await Door(trusting).transcript(f"""
        {GREETING}
        C: a1 LOGIN "" anything
        S: a1 NO [UNAVAILABLE] No mail server is configured for this account.
        C: a2 LOGIN zoe anything
        S: a2 NO [REFERRAL imap://zoe;AUTH=*@home.example.org/] Your mail is on home.example.org; connect there.
    """)


EVERYONE_HOME = """\
version: 1
servers:
  home:
    host: home.example.org
users:
  - default: true
    server: home
"""


async def test_append_sync_literal_is_answered_with_referral(door: Door, clock: MockClock) -> None:
    # The body is never sent: the referral replaces the "+" continuation.
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 APPEND Shared/Sales (\\Seen) {{310}}
        S: b2 NO [REFERRAL {SHARED.format("Shared/Sales")}] Remote mailbox. Try shared1.example.org or shared2.example.org.
        C: b3 NOOP
        S: b3 OK NOOP completed.
    """)


async def test_append_nonsync_literal(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 APPEND Drafts {{5+}}
        C: hello
        S: b2 NO [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/Drafts] Remote mailbox. Try mail2.example.org.
    """)


async def test_list_hides_remote_and_rlist_shows_them(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 LIST "" ""
        S: * LIST (\\Noselect) "/" ""
        S: b2 OK LIST completed.
        C: b3 LIST "" "*"
        S: b3 OK LIST completed.
        C: b4 LSUB "" "*"
        S: b4 OK LSUB completed (remote mailboxes: use RLSUB).
        C: b5 RLIST "" "*"
        S: * LIST () "/" INBOX
        S: * LIST () "/" Shared/Sales
        S: * LIST () "/" "Shared/Caf&AOk- Menu"
        S: b5 OK LIST completed.
        C: b6 RLIST "" "%"
        S: * LIST () "/" INBOX
        S: * LIST (\\Noselect \\HasChildren) "/" Shared
        S: b6 OK LIST completed.
        C: b7 RLSUB "Shared/" "%"
        S: * LSUB () "/" Shared/Sales
        S: * LSUB () "/" "Shared/Caf&AOk- Menu"
        S: b7 OK LSUB completed.
        C: b8 LIST (REMOTE) "" "Shared/*" RETURN (CHILDREN)
        S: * LIST (\\HasNoChildren \\Remote) "/" Shared/Sales
        S: * LIST (\\HasNoChildren \\Remote) "/" "Shared/Caf&AOk- Menu"
        S: b8 OK LIST completed.
        C: b9 RLIST "" "Nothing*"
        S: b9 OK LIST completed.
    """)


async def test_list_answers_each_mailbox_once(door: Door, clock: MockClock) -> None:
    # RFC 5258 §3: "If a mailbox name matches multiple mailbox patterns from
    # the list, the server SHOULD return only a single LIST response."
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 LIST (REMOTE) "" ("*" "%" Shared/* INBOX "*" Shared/% *Sales)
        S: * LIST (\\Remote) "/" INBOX
        S: * LIST (\\Remote) "/" Shared/Sales
        S: * LIST (\\Remote) "/" "Shared/Caf&AOk- Menu"
        S: * LIST (\\NonExistent \\HasChildren) "/" Shared
        S: b2 OK LIST completed.
        C: b3 RLIST "" "*"
        S: * LIST () "/" INBOX
        S: * LIST () "/" Shared/Sales
        S: * LIST () "/" "Shared/Caf&AOk- Menu"
        S: b3 OK LIST completed.
    """)


async def test_list_over_the_pattern_limit_is_refused(
    demo_service: Service, clock: MockClock
) -> None:
    # RFC 5530 §3 LIMIT: "The operation ran up against an implementation
    # limit of some kind"; the command is valid, so NO, not BAD.
    door = make_door(demo_service, max_list_patterns=3)
    many = " ".join(["*"] * 1000)
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 LIST (REMOTE) "" (INBOX Nothing Shared/Sales)
        S: * LIST (\\Remote) "/" INBOX
        S: * LIST (\\Remote) "/" Shared/Sales
        S: b2 OK LIST completed.
        C: b3 LIST (REMOTE) "" (INBOX Nothing Shared/Sales Other)
        S: b3 NO [LIMIT] Too many patterns: at most 3 in one LIST.
        C: b4 LIST (REMOTE) "" ({many}) RETURN (CHILDREN)
        S: b4 NO [LIMIT] Too many patterns: at most 3 in one LIST.
        C: b5 NOOP
        S: b5 OK NOOP completed.
    """)
    assert hits(door.door, "list_patterns") == 2


async def test_list_over_the_matching_budget_is_refused(
    demo_service: Service, clock: MockClock
) -> None:
    # Bob has three published names: one pattern costs 3 tests, two cost 6.
    # The work is bounded before any is done (RFC 5530 §3 LIMIT).
    door = make_door(demo_service, max_list_tests=5)
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 RLIST "" INBOX
        S: * LIST () "/" INBOX
        S: b2 OK LIST completed.
        C: b3 LIST (REMOTE) "" (INBOX Shared/*)
        S: b3 NO [LIMIT] Too much matching: 2 patterns over 3 mailboxes.
        C: b4 LIST (REMOTE) "" (INBOX INBOX)
        S: * LIST (\\Remote) "/" INBOX
        S: b4 OK LIST completed.
    """)
    assert hits(door.door, "list_tests") == 1


async def test_namespace(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        C: b2 NAMESPACE
        S: * NAMESPACE (("" "/")) NIL (("Shared/" "/"))
        S: b2 OK NAMESPACE completed.
    """)


async def test_selected_state_commands(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        C: a1 FETCH 1 FLAGS
        S: a1 BAD FETCH needs an authenticated session: log in first.
        {BOB_IN}
        C: b2 FETCH 1 FLAGS
        S: b2 BAD FETCH: no mailbox is selected; refd refers every mailbox to its server.
        C: b3 UID COPY 1 Trash
        S: b3 BAD UID: no mailbox is selected; refd refers every mailbox to its server.
        C: b4 CLOSE
        S: b4 BAD CLOSE: no mailbox is selected; refd refers every mailbox to its server.
    """)


async def test_authenticate_plain_sasl_ir_and_continuation(door: Door, clock: MockClock) -> None:
    # base64("\0alice\0secret") and base64("bob\0bob\0secret")
    await door.transcript(f"""
        {GREETING}
        C: a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==
        S: a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
        C: a2 AUTHENTICATE PLAIN
        S: + 
        C: AGFsaWNlAHNlY3JldA==
        S: a2 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
        C: a3 AUTHENTICATE PLAIN
        S: + 
        C: *
        S: a3 BAD Authentication cancelled.
        C: a4 AUTHENTICATE PLAIN
        S: + 
        C: not base64!
        S: a4 BAD Invalid base64 in AUTHENTICATE response.
        C: a5 AUTHENTICATE PLAIN AGFsaWNlAHdyb25n
        S: a5 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a6 AUTHENTICATE CRAM-MD5
        S: a6 NO [CANNOT] Unsupported authentication mechanism.
        C: a7 AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==
        S: a7 NO [AUTHORIZATIONFAILED] Acting as another user is not supported.
        C: a8 AUTHENTICATE PLAIN Ym9iAGJvYgBzZWNyZXQ=
        S: * CAPABILITY {CAPS}
        S: a8 OK [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/] Logged in. Your mailboxes are on mail2.example.org.
    """)


async def test_login_with_literals(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN {{5}}
        S: + Ready for literal data
        C: alice {{6}}
        S: + Ready for literal data
        C: secret
        S: a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
        C: a2 LOGIN {{5+}}
        C: alice "secret"
        S: a2 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
    """)


async def test_plaintext_login_refused_outside_trusted_networks(
    door: Door, clock: MockClock
) -> None:
    caps = CAPS + " LOGINDISABLED"
    await door.transcript(
        f"""
        S: * OK [CAPABILITY {caps}] localhost refd IMAP referral service ready.
        C: a1 LOGIN alice secret
        S: a1 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.
        C: a2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==
        S: a2 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.
        C: a3 STARTTLS
        S: a3 NO STARTTLS is not available on this listener.
        C: a4 LOGIN {{5}}
        S: a4 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.
        C: a5 AUTHENTICATE PLAIN {{20}}
        S: a5 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.
        C: a6 AUTHENTICATE PLAIN
        S: a6 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.
        C: a7 NOOP
        S: a7 OK NOOP completed.
        """,
        address="192.0.2.7",
    )


async def test_bad_input_table_and_budget(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        C: a1 FROB
        S: a1 BAD Unknown command FROB.
        C: a2 LOGIN "alice
        S: a2 BAD Unterminated quoted user name.
        C: a3 LOGIN {{x}}
        S: a3 BAD Invalid literal for user name.
        C: a4 NOOP extra
        S: a4 BAD Too many arguments.
        C: *
        S: * BAD Invalid tag: invalid character '*' in tag.
        C: a6 LOGIN alice
        S: a6 BAD Missing password.
        C: a7 LOGIN {{99999999}}
        S: a7 NO [TOOBIG] Literal of 99999999 octets is over the limit.
        C: a8 NOOP
        S: a8 OK NOOP completed.
        C: a9 SELECT INBOX
        S: a9 BAD SELECT needs an authenticated session: log in first.
        C: b1 FROB
        S: b1 BAD Unknown command FROB.
        C: b2 FROB
        S: b2 BAD Unknown command FROB.
        C: b3 FROB
        S: b3 BAD Unknown command FROB.
        S: * BYE Too many invalid commands.
        S: <closed>
    """)


async def test_refused_command_with_nonsync_literal_closes(door: Door, clock: MockClock) -> None:
    # RFC 7888 §4: the {n+} literal's octets follow at once; once its command
    # is refused they would run as commands, so the door says BYE instead.
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN {"x" * 9000} {{23+}}
        C: a2 LOGIN alice secret
        S: a1 BAD [TOOBIG] Command line too long.
        S: * BYE Cannot resynchronize after a refused non-synchronizing literal.
        S: <closed>
    """)


async def test_refused_command_with_sync_literal_goes_on(door: Door, clock: MockClock) -> None:
    # RFC 3501 §7.5: a tagged answer instead of "+", so the client sends no
    # literal and the stream stays in step.
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN {"x" * 9000} {{23}}
        S: a1 BAD [TOOBIG] Command line too long.
        C: a2 NOOP
        S: a2 OK NOOP completed.
    """)


async def test_nonsync_literal_too_big_closes(door: Door, clock: MockClock) -> None:
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN {{5000+}}
        S: a1 BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-).
        S: * BYE Cannot resynchronize after a refused non-synchronizing literal.
        S: <closed>
    """)


async def test_preauth_idle_timeout(demo_service: Service, clock: MockClock) -> None:
    door = make_door(demo_service, preauth_idle_timeout_s=60.0)
    start = trio.current_time()
    await door.transcript(f"""
        {GREETING}
        S: * BYE Autologout; idle for too long.
        S: <closed>
    """)
    assert 60 <= trio.current_time() - start < 65


async def test_postauth_idle_timeout_is_30_minutes(door: Door, clock: MockClock) -> None:
    start = trio.current_time()
    await door.transcript(f"""
        {GREETING}
        {BOB_IN}
        S: * BYE Autologout; idle for too long.
        S: <closed>
    """)
    assert 1800 <= trio.current_time() - start < 1805


FORWARDED = """
C: i1 ID ("name" "webmail" "x-originating-ip" "198.51.100.9")
S: * ID ("name" "refd" "version" "0.1.0")
S: i1 OK ID completed.
"""


async def test_failed_logins_from_one_address_wait_longer(
    demo_service: Service, clock: MockClock
) -> None:
    # A webmail on loopback names its real client; the throttle then counts
    # failures against that address: 2, 4, 8, 15, 15 s.  alice's correct
    # login waits what the address has earned (15 s), then forgives only
    # alice's own four failures there: nobody's stays, so the next is 4 s.
    door = make_door(demo_service)
    times = await door.transcript(f"""
        {GREETING}
        {FORWARDED}
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a2 LOGIN nobody wrong
        S: a2 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a3 LOGIN alice wrong
        S: a3 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a4 LOGIN alice wrong
        S: a4 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a5 LOGIN alice wrong
        S: a5 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a6 LOGIN alice secret
        S: a6 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
        C: a7 LOGIN alice wrong
        S: a7 NO [AUTHENTICATIONFAILED] Authentication failed.
    """)
    waits = [round(b - a) for a, b in itertools.pairwise(times[2:])]
    assert waits == [2, 4, 8, 15, 15, 15, 4]
    assert hits(door.door, "auth_failures") == 5


async def test_trusted_network_is_exempt_from_growing_delay(door: Door, clock: MockClock) -> None:
    times = await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a2 LOGIN alice wrong
        S: a2 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a3 LOGIN alice wrong
        S: a3 NO [AUTHENTICATIONFAILED] Authentication failed.
    """)
    assert [round(b - a) for a, b in itertools.pairwise(times)] == [2, 2, 2]


async def test_forwarded_address_claim_ignored_from_untrusted_peer(
    door: Door, clock: MockClock
) -> None:
    # The claim is ignored, so the peer stays an untrusted plaintext client.
    await door.transcript(
        f"""
        S: * OK [CAPABILITY {CAPS} LOGINDISABLED] localhost refd IMAP referral service ready.
        {FORWARDED}
        C: a1 LOGIN alice secret
        S: a1 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.
        """,
        address="192.0.2.7",
    )


class GatedAuth:
    """An auth source that holds every check until released (in-flight cap test)."""

    name = "gated"

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.release = trio.Event()
        self.waiting = 0

    async def authenticate(self, request: object) -> object:
        self.waiting += 1
        await self.release.wait()
        return await self.inner.authenticate(request)  # type: ignore[attr-defined]


async def test_auth_in_flight_cap(demo_service: Service, clock: MockClock) -> None:
    gated = GatedAuth(demo_service.auth)
    service = dataclasses.replace(demo_service, auth=gated)  # type: ignore[arg-type]
    door = make_door(service, max_auth_in_flight=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            door.transcript,
            f"""
            {GREETING}
            C: a1 LOGIN alice secret
            S: a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
            """,
        )
        while gated.waiting == 0:
            await trio.sleep(0.01)
        await door.transcript(f"""
            {GREETING}
            C: b1 LOGIN alice secret
            S: b1 NO [UNAVAILABLE] Too many logins in progress; try again shortly.
        """)
        gated.release.set()
    assert hits(door.door, "auth_in_flight") == 1


class CostlyAuth:
    """An auth source whose check of ``alice`` costs 0.7 s (a slow hash), others none."""

    name = "costly"

    def __init__(self, inner: object) -> None:
        self.inner = inner

    async def authenticate(self, request: AuthRequest) -> object:
        if request.user == "alice":
            await trio.sleep(0.7)
        return await self.inner.authenticate(request)  # type: ignore[attr-defined]


async def test_failed_logins_are_answered_at_one_time_whatever_the_check_costs(
    demo_service: Service, clock: MockClock
) -> None:
    # The failure delay counts from the start of the check, so a wrong
    # password for a costly hash and an unknown user are answered alike.
    service = dataclasses.replace(demo_service, auth=CostlyAuth(demo_service.auth))  # type: ignore[arg-type]
    door = make_door(service)
    for user in ("alice", "nobody"):
        greeted, answered = await door.transcript(f"""
            {GREETING}
            C: a1 LOGIN {user} wrong
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
        """)
        assert answered - greeted == pytest.approx(2.0)


async def test_login_phase_is_bounded_even_for_busy_clients(door: Door, clock: MockClock) -> None:
    # A client that never logs in but never goes idle either: one NOOP every
    # 50 s (under the 60 s idle timeout) is cut off at the 180 s login limit.
    start = trio.current_time()
    await door.transcript(f"""
        {GREETING}
        W: 50
        C: a1 NOOP
        S: a1 OK NOOP completed.
        W: 50
        C: a2 NOOP
        S: a2 OK NOOP completed.
        W: 50
        C: a3 NOOP
        S: a3 OK NOOP completed.
        S: * BYE Login timeout; log in sooner.
        S: <closed>
    """)
    assert 180 <= trio.current_time() - start < 181
    assert hits(door.door, "login_timeout") == 1


async def test_slowloris_command_is_bounded(door: Door, clock: MockClock) -> None:
    # A byte every 30 s never trips the 60 s idle timeout; the command
    # deadline (60 s from its first byte) does.
    start = trio.current_time()
    await door.transcript(f"""
        {GREETING}
        P: a
        W: 30
        P: 1
        W: 29
        P: N
        S: * BYE Command not completed in time.
        S: <closed>
    """)
    assert 60 <= trio.current_time() - start < 61
    assert hits(door.door, "command_timeout") == 1


async def test_stay_mode_plain_ok_then_mailbox_referrals(door: Door, clock: MockClock) -> None:
    # login: stay: a plain OK (c-client clients stay, then use RLIST and
    # follow each mailbox referral); INBOX too is referred to the home.
    await door.transcript(f"""
        {GREETING}
        C: c1 LOGIN carol secret
        S: c1 OK [CAPABILITY {CAPS}] Logged in. Your mail is on mail2.example.org.
        C: c2 SELECT INBOX
        S: c2 NO [REFERRAL imap://carol;AUTH=*@mail2.example.org:10143/INBOX] Remote mailbox. Try mail2.example.org.
        C: c3 RLIST "" "%"
        S: * LIST () "/" INBOX
        S: * LIST (\\Noselect \\HasChildren) "/" Shared
        S: c3 OK LIST completed.
    """)
