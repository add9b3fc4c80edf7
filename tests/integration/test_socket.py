"""Tier (c): a real server on 127.0.0.1:0, driven by real client libraries.

Python's ``imaplib`` and ``imapclient`` do not follow referrals; they report
the tagged answer, which lets the tests assert the exact ``[REFERRAL ...]``
each library received.  The libraries block, so they run in threads while
the server runs on the trio loop.
"""

from __future__ import annotations

import dataclasses
import imaplib
import logging
from typing import Any

import imapclient
import pytest
import trio
from imapclient.exceptions import IMAPClientError, LoginError

from refd.config.loader import DaemonConfig, ListenerConfig
from refd.runtime import Service, ServiceRef
from refd.server import serve
from tests.procs import exchange, in_thread

ALICE_REFERRAL = (
    "[REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
    "Your mail is on mail1.example.org; connect there."
)
BOB_HOME = "imap://bob;AUTH=*@mail2.example.org:10143/"
SALES = (
    "imap://bob;AUTH=*@shared1.example.org/Shared/Sales "
    "imap://bob;AUTH=*@shared2.example.org/Shared/Sales"
)


@pytest.fixture
async def port(nursery: trio.Nursery, demo_config: DaemonConfig, demo_service: Service) -> int:
    config = dataclasses.replace(
        demo_config, listeners=(ListenerConfig("imap", "127.0.0.1", 0, "none"),)
    )
    policy = dataclasses.replace(demo_service.policy, auth_failure_delay_s=0.01)
    ref = ServiceRef(dataclasses.replace(demo_service, policy=policy))
    bound = await nursery.start(lambda task_status: serve(config, ref, task_status=task_status))
    assert bound[0].host == "127.0.0.1"
    return int(bound[0].port)


def imaplib_login(port: int, user: str, password: str) -> tuple[str, str]:
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        try:
            typ, data = imap.login(user, password)
        except imap.error as exc:
            return "NO", str(exc)
        return typ, data[0].decode()
    finally:
        imap.shutdown()


async def test_imaplib_login_referral(port: int) -> None:
    typ, text = await in_thread(imaplib_login, port, "alice", "secret")
    assert (typ, text) == ("NO", repr(ALICE_REFERRAL.encode()))


async def test_imaplib_wrong_password_gets_no_referral(port: int) -> None:
    for user in ("alice", "nobody"):
        typ, text = await in_thread(imaplib_login, port, user, "wrong")
        assert (typ, text) == ("NO", repr(b"[AUTHENTICATIONFAILED] Authentication failed."))


def imaplib_bob(port: int) -> dict[str, Any]:
    # imaplib knows no RLIST; teaching it the state is how it is extended.
    imaplib.Commands.setdefault("RLIST", ("AUTH", "SELECTED"))
    imap = imaplib.IMAP4("127.0.0.1", port)
    out: dict[str, Any] = {"caps": imap.capabilities}
    try:
        out["login"] = imap.login("bob", "secret")
        out["select"] = imap.select('"Shared/Sales"')
        out["rlist"] = imap._simple_command("RLIST", '""', '"*"')
        out["rlist_data"] = imap.untagged_responses.pop("LIST", None)
        out["list"] = imap.list()
        out["status"] = imap.status("INBOX", "(MESSAGES)")
        out["logout"] = imap.logout()
    finally:
        if imap.state != "LOGOUT":
            imap.shutdown()
    return out


async def test_imaplib_accept_mode_and_mailbox_referrals(port: int) -> None:
    out = await in_thread(imaplib_bob, port)
    assert "LOGIN-REFERRALS" in out["caps"] and "MAILBOX-REFERRALS" in out["caps"]
    assert out["login"] == (
        "OK",
        [f"[REFERRAL {BOB_HOME}] Logged in. Your mailboxes are on mail2.example.org.".encode()],
    )
    assert out["select"] == (
        "NO",
        [
            f"[REFERRAL {SALES}] Remote mailbox. Try shared1.example.org or "
            "shared2.example.org.".encode()
        ],
    )
    assert out["rlist"][0] == "OK"
    assert out["rlist_data"] == [
        b'() "/" INBOX',
        b'() "/" Shared/Sales',
        b'() "/" "Shared/Caf&AOk- Menu"',
    ]
    assert out["list"] == ("OK", [None])
    assert out["logout"] == ("BYE", [b"Logging out."])
    assert out["status"] == (
        "NO",
        [f"[REFERRAL {BOB_HOME}INBOX] Remote mailbox. Try mail2.example.org.".encode()],
    )


def imapclient_session(port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as client:
        out["caps"] = client.capabilities()
        try:
            client.login("alice", "secret")
        except LoginError as exc:
            out["alice"] = str(exc)
        out["bob"] = client.login("bob", "secret")
        out["namespace"] = client.namespace()
        try:
            client.select_folder("Shared/Café Menu")
        except IMAPClientError as exc:
            out["select"] = str(exc)
        out["folders"] = client.list_folders()
    return out


async def test_imapclient(port: int) -> None:
    out = await in_thread(imapclient_session, port)
    assert b"LOGIN-REFERRALS" in out["caps"]
    assert out["alice"] == repr(ALICE_REFERRAL.encode())
    assert out["bob"] == (
        f"[REFERRAL {BOB_HOME}] Logged in. Your mailboxes are on mail2.example.org.".encode()
    )
    assert out["namespace"].personal == (("", "/"),)
    assert out["namespace"].shared == (("Shared/", "/"),)
    cafe = "Shared/Caf%C3%A9%20Menu"
    assert out["select"] == (
        "select failed: [REFERRAL imap://bob;AUTH=*@shared1.example.org/"
        f"{cafe} imap://bob;AUTH=*@shared2.example.org/{cafe}] Remote mailbox. "
        "Try shared1.example.org or shared2.example.org."
    )
    assert out["folders"] == []


async def test_hostile_input_then_daemon_still_serves(port: int) -> None:
    garbage = b"\x00\xff\xfe garbage\r\n" + b"x" * 20000 + b"\r\n" + b"a1 LOGIN {4097+}\r\n"
    got = await in_thread(lambda: exchange(port, garbage, until=b"* BYE"))
    lines = got.split(b"\r\n")
    assert lines[1] == b"* BAD Invalid tag: NUL character where tag was expected."
    assert lines[2] == b"* BAD [TOOBIG] Command line too long."
    assert lines[3] == b"a1 BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)."
    assert lines[4] == b"* BYE Cannot resynchronize after a refused non-synchronizing literal."
    # A client that vanishes mid-literal does not disturb anyone either.
    await in_thread(lambda: exchange(port, b"a1 LOGIN {5}\r\n", until=b"+ "))
    assert await in_thread(imaplib_login, port, "alice", "secret") == (
        "NO",
        repr(ALICE_REFERRAL.encode()),
    )


class _BrokenSource:
    """An authentication source that fails, to prove one session's bug stays there.

    (A source, not a routing table: in the compiled build, refd.compiled,
    the service's table must be a real `RoutingTable`; a source is any object
    with the `AuthSource` protocol's members.)
    """

    name = "broken"

    async def authenticate(self, request: object) -> object:
        raise RuntimeError("injected source failure")


async def test_internal_error_is_contained(
    nursery: trio.Nursery,
    demo_config: DaemonConfig,
    demo_service: Service,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = dataclasses.replace(
        demo_config, listeners=(ListenerConfig("imap", "127.0.0.1", 0, "none"),)
    )
    policy = dataclasses.replace(demo_service.policy, auth_failure_delay_s=0.01)
    good = dataclasses.replace(demo_service, policy=policy)
    ref = ServiceRef(dataclasses.replace(good, auth=_BrokenSource()))  # type: ignore[arg-type]
    bound = await nursery.start(lambda task_status: serve(config, ref, task_status=task_status))
    port = bound[0].port
    with caplog.at_level(logging.ERROR, logger="refd.server"):
        got = await in_thread(lambda: exchange(port, b"a1 LOGIN alice secret\r\n", until=b"* BYE"))
    assert got.endswith(b"\r\n* BYE Internal server error; closing.\r\n")
    assert b"Traceback" not in got and b"injected" not in got
    [record] = [r for r in caplog.records if r.message.startswith("internal error conn=")]
    assert "injected source failure" in (record.exc_text or "")
    assert "secret" not in caplog.text
    # The daemon is still up: the next client is served normally.
    ref.current = good
    assert await in_thread(imaplib_login, port, "alice", "secret") == (
        "NO",
        repr(ALICE_REFERRAL.encode()),
    )
