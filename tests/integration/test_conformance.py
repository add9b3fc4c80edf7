"""The example dialogues of RFC 2193 and RFC 2221, replayed against refd.

Each test quotes the RFC's example in a comment and plays refd's answer to
the same command byte for byte (the ``Door.transcript`` runner of
``tests/conftest.py``), over a routing table whose names mirror the RFCs
(``conformance_routing.yaml``): users MIKE, MATTHEW and user (password
PASSWORD), servers SERVER1..SERVER3, mailboxes REMOTE, SHARED/FOO, FOO, BAR.

Differences that hold for every example, so they are said once here:

- **Scheme case.** The RFCs write ``IMAP://``; refd writes ``imap://``.
  Schemes are case-insensitive (RFC 3986 §3.1), and the lower case is the
  canonical form (RFC 5092 writes ``imap://`` throughout).
- **``;AUTH=*`` always.** RFC 2193 §3 asks for it ("user;AUTH=* is
  specified as required by [RFC-2192] to avoid a client falling back to
  anonymous login"); RFC 2221's login examples leave it out
  (``IMAP://MIKE@SERVER2/``) or name the mechanism used
  (``;AUTH=GSSAPI``). refd always sends ``;AUTH=*``: any mechanism the
  backend offers, never anonymous.
- **Human text.** The text after the response code is free (RFC 3501
  §7.1); refd's text always names the server(s), because most clients
  show only the text and never follow the referral. Where an RFC's text
  already does that ("Remote mailbox. Try SERVER2."), refd's is the same.
- **The home server.** In the RFCs the client talks to its home server,
  which holds INBOX. refd holds no mail: "user" is logged in at the door
  (``login: accept``) and INBOX is referred to the home backend, SERVER1.
- **Capabilities.** After a successful login that keeps the client (the
  ``OK [REFERRAL]`` form) refd sends an untagged CAPABILITY first, since
  the list changes with the state. RFC 3501 §6.2.3 suggests a CAPABILITY
  response code in the tagged OK instead, but that response's one code is
  the REFERRAL; untagged data is always allowed (RFC 3501 §7: "The client
  MUST be prepared to accept any response at all times").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from trio.testing import MockClock

from refd.auth.passwd_file import PasswdFileSource
from refd.config.loader import load_routing
from refd.runtime import Service
from tests.conftest import Door, make_door

TABLE = Path(__file__).with_name("conformance_routing.yaml")
PASSWD = "MIKE:{PLAIN}PASSWORD\nMATTHEW:{PLAIN}PASSWORD\nuser:{PLAIN}PASSWORD\n"

CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
# The AUTHENTICATE continuation, "+" and a space (RFC 3501 §7.5: "+" SP).
CONTINUE = "+ "
GREETING = f"S: * OK [CAPABILITY {CAPS}] localhost refd IMAP referral service ready."

# URL prefixes of RFC 2193's "user" on each server.
U1 = "imap://user;AUTH=*@SERVER1/"
U2 = "imap://user;AUTH=*@SERVER2/"
U3 = "imap://user;AUTH=*@SERVER3/"

# "user" logs in at the door and stays (RFC 2221 §4.1's OK [REFERRAL] form):
# the RFC 2193 dialogues all start "<IMAP4 connection to home server>".
USER_IN = f"""
{GREETING}
C: L1 LOGIN user PASSWORD
S: * CAPABILITY {CAPS}
S: L1 OK [REFERRAL {U1}] Logged in. Your mailboxes are on SERVER1.
"""


def conformance_service(demo_service: Service, table: Path = TABLE) -> Service:
    """The demo service with the RFC-named routing table and users."""
    auth = PasswdFileSource.from_text(PASSWD, "test.passwd")
    return dataclasses.replace(demo_service, table=load_routing(table), auth=auth)


@pytest.fixture
def door(demo_service: Service) -> Door:
    return Door(conformance_service(demo_service))


# -- RFC 2193 §4.1: SELECT, EXAMINE, DELETE, SUBSCRIBE, UNSUBSCRIBE, STATUS, APPEND


async def test_rfc2193_4_1_delete_example(door: Door, clock: MockClock) -> None:
    # RFC 2193 §4.1, first example:
    #   C: A001 DELETE "SHARED/FOO"
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=*@SERVER2/SHARED/FOO]
    #          Remote mailbox. Try SERVER2.
    # refd: the same referral and the same text; only the scheme's case differs.
    await door.transcript(f"""
        {USER_IN}
        C: A001 DELETE "SHARED/FOO"
        S: A001 NO [REFERRAL {U2}SHARED/FOO] Remote mailbox. Try SERVER2.
    """)


async def test_rfc2193_4_1_select_example_with_replica(door: Door, clock: MockClock) -> None:
    # RFC 2193 §4.1, second example:
    #   C: A001 SELECT REMOTE
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=*@SERVER2/REMOTE
    #       IMAP://user;AUTH=*@SERVER3/REMOTE] Remote mailbox.
    #       Try SERVER2 or SERVER3.
    #   <client works on REMOTE over a second connection, then:>
    #   C: A002 SELECT INBOX
    #   S: * 16 EXISTS  ...  A002 OK [READ-WRITE] Selected completed
    # refd: the same two URLs in the same order (SERVER2 preferred, RFC 2193
    # §3) and the same text. A002 differs by design: in the RFC the home
    # server holds INBOX and selects it; refd holds no mail, so INBOX too is
    # a referral, to the user's home backend SERVER1. The connection to the
    # door stays usable after a referral, as the RFC's A002 assumes.
    await door.transcript(f"""
        {USER_IN}
        C: A001 SELECT REMOTE
        S: A001 NO [REFERRAL {U2}REMOTE {U3}REMOTE] Remote mailbox. Try SERVER2 or SERVER3.
        C: A002 SELECT INBOX
        S: A002 NO [REFERRAL {U1}INBOX] Remote mailbox. Try SERVER1.
    """)


async def test_rfc2193_4_1_every_command_of_the_section(door: Door, clock: MockClock) -> None:
    # RFC 2193 §4.1: "An IMAP4 server MAY respond to the SELECT, EXAMINE,
    # DELETE, SUBSCRIBE, UNSUBSCRIBE, STATUS or APPEND command with one or
    # more IMAP mailbox referrals". refd answers each with the same referral.
    # APPEND with a synchronizing literal gets the referral in place of the
    # "+" continuation, so the message is never sent to the door.
    foo = f"NO [REFERRAL {U2}SHARED/FOO] Remote mailbox. Try SERVER2."
    await door.transcript(f"""
        {USER_IN}
        C: A001 SELECT "SHARED/FOO"
        S: A001 {foo}
        C: A002 EXAMINE "SHARED/FOO"
        S: A002 {foo}
        C: A003 DELETE "SHARED/FOO"
        S: A003 {foo}
        C: A004 SUBSCRIBE "SHARED/FOO"
        S: A004 {foo}
        C: A005 UNSUBSCRIBE "SHARED/FOO"
        S: A005 {foo}
        C: A006 STATUS "SHARED/FOO" (MESSAGES UNSEEN)
        S: A006 {foo}
        C: A007 APPEND "SHARED/FOO" (\\Seen) {{310}}
        S: A007 {foo}
        C: A008 APPEND "SHARED/FOO" {{5+}}
        C: hello
        S: A008 {foo}
    """)


# -- RFC 2193 §4.2: CREATE --------------------------------------------------------


async def test_rfc2193_4_2_create_example(door: Door, clock: MockClock) -> None:
    # RFC 2193 §4.2, first example:
    #   C: A001 CREATE "SHARED/FOO"
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=*@SERVER2/SHARED/FOO]
    #      Mailbox should be created on remote server
    # refd: the same referral; its text names the server instead of
    # "remote server".
    #
    # The section's second example ("A001 OK CREATE succeeded", and a
    # referral on the later SELECT) is the MAY alternative for a home server
    # that keeps a list of remote mailboxes it creates. refd keeps no state
    # and creates nothing, so it always answers as in the first example.
    await door.transcript(f"""
        {USER_IN}
        C: A001 CREATE "SHARED/FOO"
        S: A001 NO [REFERRAL {U2}SHARED/FOO] Mailbox should be created on SERVER2.
        C: A002 SELECT "SHARED/FOO"
        S: A002 NO [REFERRAL {U2}SHARED/FOO] Remote mailbox. Try SERVER2.
    """)


# -- RFC 2193 §4.3: RENAME -----------------------------------------------------------


async def test_rfc2193_4_3_rename_across_servers(door: Door, clock: MockClock) -> None:
    # RFC 2193 §4.3, first example:
    #   C: A001 RENAME FOO BAR
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=*@SERVER1/FOO
    #           IMAP://user;AUTH=*@SERVER2/BAR] Unable to rename mailbox
    #           across servers
    # refd: the same pair (existing name first, new name second) and the
    # same text, with a final period. FOO has no rule: the home server,
    # SERVER1; BAR has a rule: SERVER2.
    await door.transcript(f"""
        {USER_IN}
        C: A001 RENAME FOO BAR
        S: A001 NO [REFERRAL {U1}FOO {U2}BAR] Unable to rename mailbox across servers.
    """)


async def test_rfc2193_4_3_rename_on_one_remote_server(
    demo_service: Service, clock: MockClock, tmp_path: Path
) -> None:
    # RFC 2193 §4.3, second example:
    #   C: A001 RENAME FOO BAR
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=*@SERVER2/FOO
    #           IMAP://user;AUTH=*@SERVER2/BAR] Unable to rename mailbox
    #           located on SERVER2
    # Here FOO is on SERVER2 as well, so this example needs the fixture table
    # with "user"'s home server moved from SERVER1 to SERVER2 (FOO has no
    # rule and follows the home server). refd: the same pair and the same
    # text, plus "; rename it there." telling the user what to do.
    text = TABLE.read_text()
    home = "  - user: user\n    server: SERVER1\n"
    assert home in text
    same_server = "Unable to rename mailbox located on SERVER2; rename it there."
    variant = tmp_path / "routing.yaml"
    variant.write_text(text.replace(home, home.replace("SERVER1", "SERVER2")))
    door = Door(conformance_service(demo_service, variant))
    await door.transcript(f"""
        {GREETING}
        C: L1 LOGIN user PASSWORD
        S: * CAPABILITY {CAPS}
        S: L1 OK [REFERRAL {U2}] Logged in. Your mailboxes are on SERVER2.
        C: A001 RENAME FOO BAR
        S: A001 NO [REFERRAL {U2}FOO {U2}BAR] {same_server}
    """)


# -- RFC 2193 §4.4: COPY ------------------------------------------------------------------


async def test_rfc2193_4_4_copy_does_not_apply(door: Door, clock: MockClock) -> None:
    # RFC 2193 §4.4:
    #   C: A001 COPY 1 "SHARED/STUFF"
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=*@SERVER2/SHARED/STUFF]
    #           Unable to copy message(s) to SERVER2.
    # COPY is a selected-state command (RFC 3501 §6.4.7): the messages come
    # from the mailbox selected on the connection, and the referral names
    # only the destination. refd never has a mailbox selected -- SELECT and
    # EXAMINE are always referred (§4.1) -- so a COPY at the door has no
    # source messages and no referral can make it work: the client copies
    # on the server where it selected the source mailbox, and if the
    # destination is elsewhere, that server gives the §4.4 referral. refd
    # answers COPY (and UID COPY) like any selected-state command in the
    # authenticated state: BAD, with a text saying why (RFC 3501 §3: a
    # command in the wrong state gets "a BAD or NO ... command completion
    # result").
    await door.transcript(f"""
        {USER_IN}
        C: A001 COPY 1 "SHARED/STUFF"
        S: A001 BAD COPY: no mailbox is selected; refd refers every mailbox to its server.
        C: A002 UID COPY 1 "SHARED/STUFF"
        S: A002 BAD UID: no mailbox is selected; refd refers every mailbox to its server.
        C: A003 SELECT "SHARED/STUFF"
        S: A003 NO [REFERRAL {U2}SHARED/STUFF] Remote mailbox. Try SERVER2.
    """)


# -- RFC 2193 §3 and §5: LIST / LSUB hide remote mailboxes, RLIST / RLSUB show them


async def test_rfc2193_5_rlist_rlsub(door: Door, clock: MockClock) -> None:
    # RFC 2193 §3: "Remote mailboxes and their inferiors, that are accessible
    # only via referrals SHOULD NOT appear in LIST and LSUB responses issued
    # against the user's home server. They MUST appear in RLIST and RLSUB
    # responses". §5.1: RLIST "behaves identically to its LIST counterpart,
    # except remote mailboxes are returned in addition to local mailboxes in
    # the LIST responses" (and §5.2 the same for RLSUB with LSUB responses).
    # The RFC gives no dialogue; §3 mentions RLIST "" "#SHARED/%".
    # refd: every mailbox is remote, so LIST and LSUB show none (LIST "" ""
    # still answers the delimiter, RFC 3501 §6.3.8); RLIST and RLSUB show
    # INBOX and the table's published mailboxes, and a "%" pattern shows the
    # level above SHARED/FOO as \Noselect. The door keeps no subscriptions,
    # so RLSUB shows the same set as RLIST.
    await door.transcript(f"""
        {USER_IN}
        C: A001 LIST "" "*"
        S: A001 OK LIST completed.
        C: A002 LSUB "" "*"
        S: A002 OK LSUB completed (remote mailboxes: use RLSUB).
        C: A003 LIST "" ""
        S: * LIST (\\Noselect) "/" ""
        S: A003 OK LIST completed.
        C: A004 RLIST "" "*"
        S: * LIST () "/" INBOX
        S: * LIST () "/" REMOTE
        S: * LIST () "/" SHARED/FOO
        S: A004 OK LIST completed.
        C: A005 RLIST "" "SHARED/%"
        S: * LIST () "/" SHARED/FOO
        S: A005 OK LIST completed.
        C: A006 RLIST "" "%"
        S: * LIST () "/" INBOX
        S: * LIST () "/" REMOTE
        S: * LIST (\\Noselect \\HasChildren) "/" SHARED
        S: A006 OK LIST completed.
        C: A007 RLSUB "" "*"
        S: * LSUB () "/" INBOX
        S: * LSUB () "/" REMOTE
        S: * LSUB () "/" SHARED/FOO
        S: A007 OK LSUB completed.
        C: A008 RLSUB "SHARED/" "%"
        S: * LSUB () "/" SHARED/FOO
        S: A008 OK LSUB completed.
    """)


# -- RFC 2221 §4.1: LOGIN and AUTHENTICATE referrals -----------------------------------


async def test_rfc2221_4_1_login_no_referral(door: Door, clock: MockClock) -> None:
    # RFC 2221 §4.1, first example:
    #   C: A001 LOGIN MIKE PASSWORD
    #   S: A001 NO [REFERRAL IMAP://MIKE@SERVER2/] Specified user
    #           is invalid on this server. Try SERVER2.
    # refd: a server URL (no mailbox) with ";AUTH=*" added, the user name as
    # the client gave it -- the same URL in RFC 5092's terms (§3.2: "If a
    # user name is included with no authentication mechanism, then ";AUTH=*"
    # is assumed"). The text says where the mail is rather than that the
    # user is invalid. The session stays not authenticated (§4: a NO
    # referral means this server has no mailboxes for the user).
    await door.transcript(f"""
        {GREETING}
        C: A001 LOGIN MIKE PASSWORD
        S: A001 NO [REFERRAL imap://MIKE;AUTH=*@SERVER2/] Your mail is on SERVER2; connect there.
        C: A002 SELECT INBOX
        S: A002 BAD SELECT needs an authenticated session: log in first.
    """)


async def test_rfc2221_4_1_login_ok_referral(door: Door, clock: MockClock) -> None:
    # RFC 2221 §4.1, second example:
    #   C: A001 LOGIN MATTHEW PASSWORD
    #   S: A001 OK [REFERRAL IMAP://MATTHEW@SERVER2/] Specified
    #           user's personal mailboxes located on Server2, but
    #           public mailboxes are available.
    # refd (``login: accept``): the same OK with a referral, ";AUTH=*" added,
    # after an untagged CAPABILITY. The user is logged in at the door, which
    # then answers mailbox commands with RFC 2193 referrals -- here
    # MATTHEW's INBOX on SERVER2.
    m2 = "imap://MATTHEW;AUTH=*@SERVER2/"
    await door.transcript(f"""
        {GREETING}
        C: A001 LOGIN MATTHEW PASSWORD
        S: * CAPABILITY {CAPS}
        S: A001 OK [REFERRAL {m2}] Logged in. Your mailboxes are on SERVER2.
        C: A002 SELECT INBOX
        S: A002 NO [REFERRAL {m2}INBOX] Remote mailbox. Try SERVER2.
    """)


async def test_rfc2221_4_1_authenticate_referral(door: Door, clock: MockClock) -> None:
    # RFC 2221 §4.1, third example:
    #   C: A001 AUTHENTICATE GSSAPI
    #   <authentication exchange>
    #   S: A001 NO [REFERRAL IMAP://user;AUTH=GSSAPI@SERVER2/]
    #           Specified user is invalid on this server. Try
    #           SERVER2.
    # refd offers PLAIN only (not GSSAPI, which would need a Kerberos realm);
    # the same referral follows AUTHENTICATE PLAIN, as an initial response
    # (SASL-IR) or after the "+" continuation. The URL says ";AUTH=*", not
    # ";AUTH=PLAIN": the backend may offer other mechanisms, and "*" lets the
    # client pick any of them. base64("\0MIKE\0PASSWORD") = AE1JS0UAUEFTU1dPUkQ=
    mike = "NO [REFERRAL imap://MIKE;AUTH=*@SERVER2/] Your mail is on SERVER2; connect there."
    await door.transcript(f"""
        {GREETING}
        C: A001 AUTHENTICATE GSSAPI
        S: A001 NO [CANNOT] Unsupported authentication mechanism.
        C: A002 AUTHENTICATE PLAIN AE1JS0UAUEFTU1dPUkQ=
        S: A002 {mike}
        C: A003 AUTHENTICATE PLAIN
        S: {CONTINUE}
        C: AE1JS0UAUEFTU1dPUkQ=
        S: A003 {mike}
    """)


async def test_rfc2221_6_no_referral_after_failed_login(door: Door, clock: MockClock) -> None:
    # RFC 2221 §6: "A server MUST NOT give a login referral if authentication
    # for that user fails." refd: the same answer for a wrong password and
    # an unknown user, after the same delay, and no referral.
    await door.transcript(f"""
        {GREETING}
        C: A001 LOGIN MIKE WRONG
        S: A001 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: A002 LOGIN NOBODY PASSWORD
        S: A002 NO [AUTHENTICATIONFAILED] Authentication failed.
    """)


# -- RFC 2221 §4.2: BYE at connection startup --------------------------------------------


async def test_rfc2221_4_2_bye_referral_at_startup(demo_service: Service, clock: MockClock) -> None:
    # RFC 2221 §4.2:
    #   S: * BYE [REFERRAL IMAP://user;AUTH=*@SERVER2/] Server not
    #        accepting connections.  Try SERVER2
    # refd in drain mode (its sibling door is SERVER2): the same BYE in place
    # of the greeting, then the connection closes. The URL has no user name:
    # the client has not said who it is yet (the RFC's "user" can only be a
    # placeholder there). The grammar allows ";AUTH=*" without a user
    # (RFC 5092 §11: iuserinfo = enc-user [iauth] / [enc-user] iauth), and
    # RFC 5092 §3.2 has the client obtain a name "from the mechanism or
    # requested from the user/configuration". Caveat, same section: "If no
    # user name is specified and no appropriate authentication mechanisms
    # are available, the client SHOULD fall back to anonymous login" -- and
    # a door advertises no AUTH= mechanism by default (LOGIN only).
    service = conformance_service(demo_service)
    door = make_door(service, policy={"drain": True, "sibling": ("SERVER2", 143)})
    await door.transcript("""
        S: * BYE [REFERRAL imap://;AUTH=*@SERVER2/] Server not accepting connections. Try SERVER2.
        S: <closed>
    """)
