"""End to end: clients through the door to two Dovecot backends, effect checked there.

One door (in-process, as in test_door_with_dovecot.py) and two private
Dovecots: ``mail`` (everyone's home) and ``shared`` (``Shared/*``), plus a
stopped third one, ``dead``, listed first for ``Mirror/*`` with ``shared``
as its replica. alice gets a login referral (``NO [REFERRAL]``); bob is
accepted (``OK [REFERRAL]``) and gets a mailbox referral per command.

Every flow is driven twice, by two independent referral-following clients:

- ``refd.probe`` (the ``refd probe`` command), and
- ``Follower``, a plain ``imaplib`` client written here that does what an
  RFC 2221 / RFC 2193 client does: read the ``[REFERRAL ...]`` of a NO,
  parse the RFC 5092 URL, connect to its first reachable server, LOGIN as
  the URL's user, and re-issue the command on the URL's mailbox.

and each test asserts the effect on the right backend through a third,
direct connection (imapclient), and its absence on the other. Clients
reach the door through a recording TCP tap, so a test can show which bytes
the door received (APPEND: the command, never the message).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import imaplib
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imapclient  # type: ignore[import-untyped]
import pytest
import trio
import trustme

from refd.probe import TEST_SUBJECT
from refd.protocol.responses import wire_mailbox
from refd.routing.url import ImapUrl, imap_url, parse_imap_url

from .conftest import USERS, DovecotFactory
from .dovecot import DovecotInstance, ServerCert
from .test_probe import Probed, probe, start_door, write_door

pytestmark = pytest.mark.interop

SPECIAL = [
    "Shared/Café Menu",
    "Shared/with space",
    "Shared/100% sure",
    "Shared/Q&A",
    "Shared/日本語",
]
REFERRAL = re.compile(r"\[REFERRAL ([^\]]*)\]")


# -- the site: door, tap, backends ---------------------------------------------------------


async def start_tap(nursery: trio.Nursery, port: int) -> tuple[int, bytearray]:
    """A TCP relay to 127.0.0.1:``port``; returns its port and the bytes clients sent."""
    received = bytearray()

    async def relay(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", port)
        async with client, server, trio.open_nursery() as pumps:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream, record: bool) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    async for chunk in src:
                        if record:
                            received.extend(chunk)
                        await dst.send_all(chunk)
                pumps.cancel_scope.cancel()

            pumps.start_soon(pump, client, server, True)
            pumps.start_soon(pump, server, client, False)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], received


@dataclass
class Site:
    tmp: Path
    mail: DovecotInstance
    shared: DovecotInstance
    dead_port: int
    door_port: int  # the tap in front of the door
    received: bytearray  # what clients sent to the door

    @property
    def door(self) -> str:
        return f"127.0.0.1:{self.door_port}"

    async def probe(self, user: str, *argv: str) -> Probed:
        return await probe(self.tmp, self.door, user, USERS[user], *argv)

    def follower(self, user: str) -> Follower:
        return Follower(user, USERS[user], self.door_port)


@pytest.fixture
async def site(nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory) -> Site:
    mail = dovecot_factory(name="mail")
    shared = dovecot_factory(name="shared")
    dead = dovecot_factory(name="dead")
    dead.stop()
    mail.seed("alice", "INBOX", "alice home 1")
    mail.seed("alice", "INBOX", "alice home 2")
    shared.seed("alice", "INBOX", "alice decoy")
    mail.seed("bob", "INBOX", "bob home")
    shared.seed("bob", "INBOX", "bob decoy")
    shared.seed("bob", "Shared/Sales", "sales 1")
    shared.seed("bob", "Mirror/Sales", "mirror sales")
    table = f"""\
version: 1
servers:
  mail: {{host: 127.0.0.1, port: {mail.port}}}
  shared: {{host: 127.0.0.1, port: {shared.port}}}
  dead: {{host: 127.0.0.1, port: {dead.port}, replicas: [shared]}}
users:
  - user: alice
    server: mail
  - user: bob
    server: mail
    login: accept
mailboxes:
  - match: "Shared/*"
    servers: [shared]
  - match: "Mirror/*"
    servers: [dead]
published:
  - Shared/Sales
  - Shared/Café Menu
  - Mirror/Sales
"""
    door = await start_door(nursery, write_door(tmp_path / "door", table))
    port, received = await start_tap(nursery, door.port)
    return Site(tmp_path, mail, shared, dead.port, port, received)


# -- direct looks at a backend ------------------------------------------------------------


@contextlib.contextmanager
def direct(backend: DovecotInstance, user: str) -> Iterator[imapclient.IMAPClient]:
    client = imapclient.IMAPClient(backend.host, port=backend.port, ssl=False, timeout=10)
    client.login(user, USERS[user])
    try:
        yield client
    finally:
        client.logout()


def folders(backend: DovecotInstance, user: str) -> set[str]:
    with direct(backend, user) as client:
        return {name for _, _, name in client.list_folders()}


def subscribed(backend: DovecotInstance, user: str) -> set[str]:
    with direct(backend, user) as client:
        return {name for _, _, name in client.list_sub_folders()}


def status(backend: DovecotInstance, user: str, mailbox: str) -> dict[str, int]:
    with direct(backend, user) as client:
        got = client.folder_status(mailbox, ["MESSAGES", "UIDNEXT", "UIDVALIDITY"])
        return {k.decode().lower(): int(v) for k, v in got.items()}


# -- an imaplib client that follows referrals ----------------------------------------------


def referral_urls(data: Any) -> list[str]:
    match = REFERRAL.search(str(data))
    return match.group(1).split() if match else []


@dataclass
class Follower:
    """What a referral-aware client does, on plain imaplib (see the module docstring)."""

    user: str
    password: str
    door_port: int
    # none | implicit | starttls at the door; referred servers are opened in
    # plaintext and upgraded with STARTTLS, as alpine does (a URL cannot say TLS)
    tls: str = "none"
    context: ssl.SSLContext | None = None
    referrals: list[list[str]] = field(default_factory=list)
    visited: list[tuple[str, int]] = field(default_factory=list)
    connections: list[imaplib.IMAP4] = field(default_factory=list)

    def connect(self, host: str, port: int, *, at_door: bool = False) -> imaplib.IMAP4:
        conn: imaplib.IMAP4
        if self.tls == "implicit" and at_door:
            conn = imaplib.IMAP4_SSL(host, port, ssl_context=self.context, timeout=10)
        else:
            conn = imaplib.IMAP4(host, port, timeout=10)
            if self.tls != "none":
                conn.starttls(self.context)
        self.connections.append(conn)
        return conn

    def login(self) -> imaplib.IMAP4:
        """LOGIN at the door: follow a NO [REFERRAL]; stay after OK [REFERRAL]."""
        door = self.connect("127.0.0.1", self.door_port, at_door=True)
        try:
            door.login(self.user, self.password)
        except imaplib.IMAP4.error as exc:
            urls = referral_urls(exc)
            if not urls:
                raise
            self.referrals.append(urls)
            return self.follow(urls)[0]
        return door

    def follow(self, urls: list[str]) -> tuple[imaplib.IMAP4, ImapUrl]:
        """Connect to the first reachable URL (replicas in order) and log in there."""
        errors: list[OSError] = []
        for text in urls:
            url = parse_imap_url(text)
            try:
                conn = self.connect(url.host, url.port)
            except OSError as exc:
                errors.append(exc)
                continue
            conn.login(url.user or self.user, self.password)
            self.visited.append((url.host, url.port))
            return conn, url
        raise ConnectionError(f"no URL of {urls} reachable: {errors}")

    def command(
        self, conn: imaplib.IMAP4, command: str, mailbox: str, *rest: Any
    ) -> tuple[str, list[Any], imaplib.IMAP4]:
        """Run a mailbox command; on NO [REFERRAL] re-issue it where the URL says."""
        typ, data = self.send(conn, command, mailbox, *rest)
        urls = referral_urls(data) if typ == "NO" else []
        if not urls:
            return typ, data, conn
        self.referrals.append(urls)
        remote, url = self.follow(urls)
        assert url.mailbox is not None
        typ, data = self.send(remote, command, url.mailbox, *rest)
        return typ, data, remote

    @staticmethod
    def send(conn: imaplib.IMAP4, command: str, mailbox: str, *rest: Any) -> tuple[str, list[Any]]:
        wire = wire_mailbox(mailbox)  # modified UTF-7, quoted as needed
        calls: dict[str, Callable[[], tuple[str, list[Any]]]] = {
            "SELECT": lambda: conn.select(wire),
            "EXAMINE": lambda: conn.select(wire, readonly=True),
            "STATUS": lambda: conn.status(wire, "(MESSAGES UIDNEXT UIDVALIDITY)"),
            "CREATE": lambda: conn.create(wire),
            "DELETE": lambda: conn.delete(wire),
            "SUBSCRIBE": lambda: conn.subscribe(wire),
            "UNSUBSCRIBE": lambda: conn.unsubscribe(wire),
            "APPEND": lambda: conn.append(wire, "", "", rest[0]),  # synchronizing literal
        }
        return calls[command]()

    @staticmethod
    def subject(conn: imaplib.IMAP4, number: int = 1) -> str:
        typ, data = conn.fetch(str(number), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", data
        subject = email.message_from_bytes(data[0][1], policy=email.policy.default)["Subject"]
        return str(subject)  # RFC 2047 encoded words decoded

    def close(self) -> None:
        for conn in self.connections:
            with contextlib.suppress(Exception):
                conn.logout()


async def in_thread(fn: Callable[[], Any]) -> Any:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


def hosts(urls: list[str]) -> list[int]:
    return [parse_imap_url(u).port for u in urls]


# -- login referral, accept mode ------------------------------------------------------------


async def test_login_referral_lands_in_the_home_inbox(site: Site) -> None:
    got = await site.probe("alice")
    assert got.code == 0
    assert got.result["server"] == f"127.0.0.1:{site.mail.port}"
    assert got.result["data"]["exists"] == 2

    def follow() -> tuple[str, list[list[str]], list[tuple[str, int]]]:
        client = site.follower("alice")
        try:
            home = client.login()
            assert home.select("INBOX")[0] == "OK"
            return client.subject(home), client.referrals, client.visited
        finally:
            client.close()

    subject, referrals, visited = await in_thread(follow)
    assert referrals == [[f"imap://alice;AUTH=*@127.0.0.1:{site.mail.port}/"]]
    assert visited == [site.mail.address]
    assert subject == "alice home 1"  # not "alice decoy", on the other backend


async def test_accept_mode_inbox_and_shared_land_on_different_backends(site: Site) -> None:
    inbox = await site.probe("bob")
    sales = await site.probe("bob", "--mailbox", "Shared/Sales")
    assert inbox.code == sales.code == 0
    assert inbox.steps()[1][1:] == (
        "LOGIN bob",
        f"OK [REFERRAL imap://bob;AUTH=*@127.0.0.1:{site.mail.port}/] Logged in. Your mailboxes "
        "are on 127.0.0.1.",
    )
    assert inbox.result["server"] == f"127.0.0.1:{site.mail.port}"
    assert sales.result["server"] == f"127.0.0.1:{site.shared.port}"
    assert sales.steps()[2][1] == "SELECT Shared/Sales"  # at the door, hop 1
    assert sales.steps()[2][2].startswith(
        f"NO [REFERRAL imap://bob;AUTH=*@127.0.0.1:{site.shared.port}/Shared/Sales] "
    )

    def follow() -> tuple[str, str, list[tuple[str, int]]]:
        client = site.follower("bob")
        try:
            door = client.login()
            _, _, home = client.command(door, "SELECT", "INBOX")
            _, _, remote = client.command(door, "SELECT", "Shared/Sales")
            return client.subject(home), client.subject(remote), client.visited
        finally:
            client.close()

    home_subject, sales_subject, visited = await in_thread(follow)
    assert visited == [site.mail.address, site.shared.address]
    assert (home_subject, sales_subject) == ("bob home", "sales 1")


# -- EXAMINE, STATUS, SUBSCRIBE, CREATE, DELETE ---------------------------------------------


async def test_examine_and_status(site: Site) -> None:
    examine = await site.probe("bob", "--command", "EXAMINE", "--mailbox", "Shared/Sales")
    assert examine.code == 0
    shared_sales = status(site.shared, "bob", "Shared/Sales")
    assert examine.result["data"] == {
        "exists": 1,
        "uidvalidity": shared_sales["uidvalidity"],
        "access": "READ-ONLY",
    }
    got = await site.probe("bob", "--command", "STATUS")
    assert got.code == 0 and got.result["server"] == f"127.0.0.1:{site.mail.port}"
    assert got.result["data"] == status(site.mail, "bob", "INBOX")

    def follow() -> tuple[list[Any], str]:
        client = site.follower("bob")
        try:
            door = client.login()
            typ, data, _ = client.command(door, "STATUS", "Shared/Sales")
            assert typ == "OK"
            typ, _, remote = client.command(door, "EXAMINE", "INBOX")
            assert typ == "OK"
            return data, client.subject(remote)
        finally:
            client.close()

    data, subject = await in_thread(follow)
    uidvalidity = shared_sales["uidvalidity"]
    assert data == [f"Shared/Sales (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {uidvalidity})".encode()]
    assert subject == "bob home"


async def test_subscribe_and_unsubscribe_show_in_the_backends_lsub(site: Site) -> None:
    got = await site.probe("bob", "--command", "SUBSCRIBE", "--mailbox", "Shared/Sales")
    assert got.code == 0 and got.result["server"] == f"127.0.0.1:{site.shared.port}"
    assert "Shared/Sales" in subscribed(site.shared, "bob")
    assert "Shared/Sales" not in subscribed(site.mail, "bob")

    def follow(command: str, mailbox: str) -> Callable[[], str]:
        def run() -> str:
            client = site.follower("bob")
            try:
                typ, _, _ = client.command(client.login(), command, mailbox)
                return typ
            finally:
                client.close()

        return run

    assert await in_thread(follow("UNSUBSCRIBE", "Shared/Sales")) == "OK"
    assert "Shared/Sales" not in subscribed(site.shared, "bob")

    site.mail.seed("bob", "Notes", "a note")  # Dovecot subscribes existing mailboxes only
    assert await in_thread(follow("SUBSCRIBE", "Notes")) == "OK"  # home: mail
    assert "Notes" in subscribed(site.mail, "bob")
    assert "Notes" not in subscribed(site.shared, "bob")
    got = await site.probe("bob", "--command", "UNSUBSCRIBE", "--mailbox", "Notes")
    assert got.code == 0 and got.result["server"] == f"127.0.0.1:{site.mail.port}"
    assert "Notes" not in subscribed(site.mail, "bob")


async def test_create_and_delete_on_the_right_backend_only(site: Site) -> None:
    got = await site.probe("bob", "--command", "CREATE", "--mailbox", "Shared/Reports")
    assert got.code == 0
    assert got.steps()[2][2].startswith("NO [REFERRAL ")  # the door said where
    assert "Mailbox should be created on 127.0.0.1." in got.steps()[2][2]
    assert "Shared/Reports" in folders(site.shared, "bob")
    assert "Shared/Reports" not in folders(site.mail, "bob")

    def follow(command: str, mailbox: str) -> Callable[[], str]:
        def run() -> str:
            client = site.follower("bob")
            try:
                typ, _, _ = client.command(client.login(), command, mailbox)
                return typ
            finally:
                client.close()

        return run

    assert await in_thread(follow("CREATE", "Projects")) == "OK"
    assert "Projects" in folders(site.mail, "bob")
    assert "Projects" not in folders(site.shared, "bob")

    got = await site.probe("bob", "--command", "DELETE", "--mailbox", "Projects")
    assert got.code == 0
    assert "Projects" not in folders(site.mail, "bob")
    assert await in_thread(follow("DELETE", "Shared/Reports")) == "OK"
    assert "Shared/Reports" not in folders(site.shared, "bob")


# -- RENAME (RFC 2193 §4.3) ------------------------------------------------------------------


async def test_rename_pairs_same_server_reissued_cross_server_refused(site: Site) -> None:
    shared, mail = site.shared.port, site.mail.port

    def rename(old: str, new: str, *, reissue: bool) -> tuple[list[Any], str | None]:
        client = site.follower("bob")
        try:
            door = client.login()
            typ, data = door.rename(wire_mailbox(old), wire_mailbox(new))
            assert typ == "NO"
            urls = referral_urls(data)
            if not reissue:
                return data, None
            # Same server: connect there and re-issue RENAME with the URLs' names.
            old_url, new_url = parse_imap_url(urls[0]), parse_imap_url(urls[1])
            assert (old_url.host, old_url.port) == (new_url.host, new_url.port)
            remote, _ = client.follow(urls[:1])
            assert old_url.mailbox is not None and new_url.mailbox is not None
            typ, _ = remote.rename(wire_mailbox(old_url.mailbox), wire_mailbox(new_url.mailbox))
            return data, typ
        finally:
            client.close()

    data, typ = await in_thread(lambda: rename("Shared/Sales", "Shared/Sales 2024", reissue=True))
    assert data == [
        (
            f"[REFERRAL imap://bob;AUTH=*@127.0.0.1:{shared}/Shared/Sales "
            f"imap://bob;AUTH=*@127.0.0.1:{shared}/Shared/Sales%202024] "
            "Unable to rename mailbox located on 127.0.0.1; rename it there."
        ).encode()
    ]
    assert typ == "OK"
    assert {"Shared/Sales 2024"} <= folders(site.shared, "bob")
    assert "Shared/Sales" not in folders(site.shared, "bob")

    # Across servers the pair names two servers: the client would have to copy.
    before = (folders(site.shared, "bob"), folders(site.mail, "bob"))
    data, _ = await in_thread(lambda: rename("Shared/Sales 2024", "Archive/Sales", reissue=False))
    urls = referral_urls(data)
    assert urls == [
        f"imap://bob;AUTH=*@127.0.0.1:{shared}/Shared/Sales%202024",
        f"imap://bob;AUTH=*@127.0.0.1:{mail}/Archive/Sales",
    ]
    assert "Unable to rename mailbox across servers." in str(data)
    assert (folders(site.shared, "bob"), folders(site.mail, "bob")) == before

    renamed = await site.probe("bob", "--mailbox", "Shared/Sales 2024")
    assert renamed.code == 0 and renamed.result["data"]["exists"] == 1
    gone = await site.probe("bob", "--mailbox", "Shared/Sales")
    assert gone.code == 7


# -- APPEND: the body goes to the backend, never to the door -------------------------------------


async def test_append_is_stored_on_the_backend_and_never_sent_to_the_door(site: Site) -> None:
    site.received.clear()
    got = await site.probe("bob", "--command", "APPEND", "--mailbox", "Shared/Sales")
    assert got.code == 0 and got.result["server"] == f"127.0.0.1:{site.shared.port}"
    message_id = got.result["data"]["message_id"]
    assert site.shared.subjects("bob", "Shared/Sales") == ["sales 1", TEST_SUBJECT]
    assert TEST_SUBJECT not in site.mail.subjects("bob")

    marker = "e2e body marker 7f3a"
    message = f"Subject: {marker}\r\nFrom: bob@example.org\r\n\r\n{marker} body\r\n".encode()

    def follow() -> str:
        client = site.follower("bob")
        try:
            typ, data, _ = client.command(client.login(), "APPEND", "INBOX", message)
            assert client.referrals[0] == [f"imap://bob;AUTH=*@127.0.0.1:{site.mail.port}/INBOX"], (
                data
            )
            return typ
        finally:
            client.close()

    assert await in_thread(follow) == "OK"
    assert site.mail.subjects("bob") == ["bob home", marker]

    door_saw = bytes(site.received)
    assert b"APPEND Shared/Sales {" in door_saw  # the probe's command ...
    assert re.search(rb" APPEND INBOX \{\d+\}\r\n", door_saw)  # ... and imaplib's
    for secret in (message_id.encode(), b"appended by refd probe", marker.encode()):
        assert secret not in door_saw


# -- RLIST / RLSUB / LIST (REMOTE) vs LIST ----------------------------------------------------


async def test_rlist_rlsub_and_list_remote_show_the_table_list_does_not(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(imaplib.Commands, "RLIST", ("AUTH", "SELECTED"))
    monkeypatch.setitem(imaplib.Commands, "RLSUB", ("AUTH", "SELECTED"))
    published = ["INBOX", "Shared/Sales", "Shared/Café Menu", "Mirror/Sales"]

    def at_door() -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        client = site.follower("bob")
        try:
            door = client.login()
            for name, args in (
                ("RLIST", ('""', '"*"')),
                ("RLSUB", ('""', '"*"')),
                ("LIST", ("(REMOTE)", '""', '"*"')),
                ("LIST", ('""', '"*"')),
                ("RLIST", ('""', '"%"')),
            ):
                typ, _ = door._simple_command(name, *args)
                assert typ == "OK"
                kind = "LSUB" if name == "RLSUB" else "LIST"
                key = f"{name} {' '.join(args)}"
                out[key] = list(door.untagged_responses.pop(kind, []))
            return out
        finally:
            client.close()

    got = await in_thread(at_door)
    names = [f'() "/" {wire_mailbox(m)}'.encode() for m in published]
    assert got['RLIST "" "*"'] == names
    assert got['RLSUB "" "*"'] == names
    assert got['LIST (REMOTE) "" "*"'] == [n.replace(b"()", b"(\\Remote)") for n in names]
    assert got['LIST "" "*"'] == []  # RFC 2193 §4: LIST never shows remote mailboxes
    assert got['RLIST "" "%"'] == [
        b'() "/" INBOX',
        b'(\\Noselect \\HasChildren) "/" Shared',
        b'(\\Noselect \\HasChildren) "/" Mirror',
    ]

    # The probe lists with RLIST at a MAILBOX-REFERRALS door, with LIST elsewhere.
    listed = await site.probe("bob", "--command", "LIST", "--mailbox", "*")
    assert listed.code == 0 and listed.result["referrals"] == 0
    assert listed.steps()[-1][1] == 'RLIST "" "*"'
    entries = listed.result["data"]["entries"]
    assert [e["name"] for e in entries] == published
    listed = await site.probe("alice", "--command", "LIST", "--mailbox", "*")
    assert listed.code == 0 and listed.result["server"] == f"127.0.0.1:{site.mail.port}"
    assert listed.steps()[-1][1] == 'LIST "" "*"'
    assert [e["name"] for e in listed.result["data"]["entries"]] == ["INBOX"]


# -- names: modified UTF-7 -> percent-encoded UTF-8 -> modified UTF-7 -----------------------------


async def test_special_names_round_trip_to_the_right_mailbox(site: Site) -> None:
    for i, name in enumerate(SPECIAL):
        for k in range(i + 1):
            site.shared.seed("bob", name, f"{name} #{k}")
    site.shared.seed("bob", "Shared/Caf", "a prefix, not the mailbox")
    for i, name in enumerate(SPECIAL):
        got = await site.probe("bob", "--mailbox", name)
        assert got.code == 0, got.result
        url = imap_url("bob", "127.0.0.1", site.shared.port, name)
        hop, label, answer = got.steps()[2]
        assert (hop, label) == (1, f"SELECT {wire_mailbox(name)}")
        assert answer.startswith(f"NO [REFERRAL {url}] ")
        assert got.steps()[-1][1] == f"SELECT {wire_mailbox(name)}"  # at the backend
        assert got.result["data"]["exists"] == i + 1
    assert imap_url("bob", "h", 143, SPECIAL[0]).endswith("/Shared/Caf%C3%A9%20Menu")
    assert imap_url("bob", "h", 143, "Shared/100% sure").endswith("/Shared/100%25%20sure")
    assert wire_mailbox("Shared/Q&A") == "Shared/Q&-A"

    def follow() -> list[str]:
        client = site.follower("bob")
        try:
            door = client.login()
            subjects = []
            for name in SPECIAL:
                typ, _, remote = client.command(door, "SELECT", name)
                assert typ == "OK"
                subjects.append(client.subject(remote))
            return subjects
        finally:
            client.close()

    assert await in_thread(follow) == [f"{name} #0" for name in SPECIAL]


# -- replicas ------------------------------------------------------------------------------------


async def test_first_replica_stopped_second_url_used(site: Site) -> None:
    got = await site.probe("bob", "--mailbox", "Mirror/Sales")
    assert got.code == 0
    dead = f"imap://bob;AUTH=*@127.0.0.1:{site.dead_port}/Mirror/Sales"
    live = f"imap://bob;AUTH=*@127.0.0.1:{site.shared.port}/Mirror/Sales"
    assert [(h["hop"], h["url"], h["error"]) for h in got.hops] == [
        (1, None, None),
        (2, dead, "connection refused"),
        (2, live, None),
    ]
    assert got.result["server"] == f"127.0.0.1:{site.shared.port}"

    def follow() -> tuple[list[list[str]], list[tuple[str, int]], str]:
        client = site.follower("bob")
        try:
            _, _, remote = client.command(client.login(), "SELECT", "Mirror/Sales")
            return client.referrals, client.visited, client.subject(remote)
        finally:
            client.close()

    referrals, visited, subject = await in_thread(follow)
    assert referrals == [[dead, live]]
    assert visited == [site.shared.address]
    assert subject == "mirror sales"


# -- TLS: implicit and STARTTLS, at the door and at the backend ------------------------------


async def test_login_referral_over_implicit_tls_and_starttls(
    nursery: trio.Nursery,
    tmp_path: Path,
    dovecot_factory: DovecotFactory,
    dovecot_cert: ServerCert,
    tls_ca: trustme.CA,
    client_ssl_context: ssl.SSLContext,
) -> None:
    # Dovecot on 127.0.0.2 refuses LOGIN before TLS (see start_dovecot).
    backend = dovecot_factory(cert=dovecot_cert, host="127.0.0.2", plaintext_auth=False)
    # An IMAP URL cannot say "TLS": a client that follows one opens the
    # port in plaintext and upgrades with STARTTLS, whichever way it came in
    # (alpine does; tests/interop/test_alpine_tls.py). So both doors refer
    # to the backend's STARTTLS port, never to its implicit-TLS one.
    table = f"""\
version: 1
servers:
  imap: {{host: 127.0.0.2, port: {backend.port}, imaps_port: {backend.tls_port}}}
users:
  - user: alice
    server: imap
  - user: bob
    server: imap
"""
    leaf = tls_ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    listeners = (
        "  - {name: imap, address: 127.0.0.1, port: 0, tls: starttls}\n"
        "  - {name: imaps, address: 127.0.0.1, port: 0, tls: implicit}\n"
    )
    config = write_door(
        tmp_path / "door",
        table,
        listeners=listeners,
        tls=(chain, leaf.private_key_pem.bytes()),
        trusted_networks=[],  # no plaintext LOGIN from loopback either
    )
    door = await start_door(nursery, config)
    starttls_door, implicit_door = (f"127.0.0.1:{port}" for port in door.ports)
    cafile = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    ca = ("--cafile", str(cafile))

    for user, where, mode in (
        ("alice", implicit_door, "--tls"),
        ("bob", starttls_door, "--starttls"),
    ):
        appended = await probe(tmp_path, where, user, USERS[user], mode, *ca, "--command", "APPEND")
        assert appended.code == 0, appended.result
        got = await probe(tmp_path, where, user, USERS[user], mode, *ca)
        assert got.code == 0, got.result
        assert got.result["data"]["exists"] == 1
        assert got.result["server"] == f"127.0.0.2:{backend.port}"
        # STARTTLS at the door only when asked; at the backend always.
        upgraded = [(1, "STARTTLS")] if mode == "--starttls" else []
        assert [s[:2] for s in got.steps() if s[1] == "STARTTLS"] == [*upgraded, (2, "STARTTLS")]

    # The same flows with imaplib.
    def follow(user: str, port: int, tls: str) -> str:
        client = Follower(user, USERS[user], port, tls=tls, context=client_ssl_context)
        try:
            home = client.login()
            assert home.select("INBOX")[0] == "OK"
            return client.subject(home)
        finally:
            client.close()

    assert await in_thread(lambda: follow("alice", door.ports[1], "implicit")) == TEST_SUBJECT
    assert await in_thread(lambda: follow("bob", door.ports[0], "starttls")) == TEST_SUBJECT

    # Without TLS the door refuses LOGIN (LOGINDISABLED), so the probe never sends it.
    plain = await probe(tmp_path, starttls_door, "bob", USERS["bob"])
    assert plain.code == 3
    assert plain.result["message"].endswith("advertises LOGINDISABLED: use --tls or --starttls")
    # An untrusted certificate stops the probe at the door ...
    untrusted = await probe(tmp_path, implicit_door, "alice", USERS["alice"], "--tls")
    assert untrusted.code == 8
    assert "TLS certificate not accepted" in untrusted.result["message"]
    # ... unless --insecure, which says loudly what it gives up.
    insecure = await probe(tmp_path, implicit_door, "alice", USERS["alice"], "--tls", "--insecure")
    assert insecure.code == 0
    assert "WARNING: --insecure: TLS certificates are NOT verified" in insecure.err
