"""The probe's decisions, as values: options, exit codes, where a referral leads, what to send.

Pure: no I/O. `run` asks these functions what a tagged answer means
(`login_verdict`, `command_verdict`), where the URLs of a referral lead and
whether that is a loop (`plan_referral`), and which bytes the mailbox
command is (`command_chunks`).
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate

from refd.imap_client import TlsMode
from refd.protocol.client import UNSENDABLE
from refd.protocol.responses import wire_mailbox
from refd.routing.url import parse_imap_url, url_host

__all__ = [
    "COMMANDS",
    "TEST_SUBJECT",
    "Exit",
    "HopKey",
    "Options",
    "Plan",
    "Target",
    "Verdict",
    "command_chunks",
    "command_verdict",
    "hop_tls",
    "login_verdict",
    "plan_referral",
    "probe_message",
]

COMMANDS = (
    "SELECT",
    "EXAMINE",
    "STATUS",
    "CREATE",
    "DELETE",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "APPEND",
    "LIST",
)
TEST_SUBJECT = "refd probe test message"

# LOGIN refused with these (or none, or BAD) at the door: the password.
_AUTH_CODES = frozenset({"", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED"})
_AUTH_CODES |= {"PRIVACYREQUIRED"}


class Exit(enum.IntEnum):
    """The probe's exit codes; see the `refd.probe` docstring."""

    OK = 0
    USAGE = 2
    AUTH_FAILED = 3
    NO_REFERRAL = 4
    LOOP = 5
    UNREACHABLE = 6
    REFUSED = 7
    DOOR_UNREACHABLE = 8

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class Options:
    """Validated options of one probe run."""

    door_host: str
    door_port: int
    user: str
    password: str = field(repr=False)
    mailbox: str = "INBOX"
    command: str = "SELECT"
    tls: TlsMode = TlsMode.NONE
    cafile: str | None = None
    insecure: bool = False
    timeout_s: float = 10.0
    max_hops: int = 10
    json: bool = False

    @property
    def door(self) -> str:
        return f"{url_host(self.door_host)}:{self.door_port}"


class Verdict(enum.Enum):
    """What to do after an answer that does not end the probe."""

    FOLLOW = "follow"  # NO [REFERRAL ...]: go where it says
    CONTINUE = "continue"  # OK (with or without a referral): go on here


def hop_tls(mode: TlsMode, *, at_door: bool) -> TlsMode:
    """How the probe secures one hop: the door as asked; a referred server with STARTTLS.

    An IMAP URL cannot say "TLS", so a client that follows it (alpine) opens
    the URL's port in plaintext and upgrades with STARTTLS, whichever way it
    reached the door; refd's referral URLs therefore name STARTTLS ports
    (``port``), and the probe checks them as such a client uses them.
    """
    if at_door or mode is TlsMode.NONE:
        return mode
    return TlsMode.STARTTLS


def login_verdict(condition: str, code: str, *, at_door: bool) -> Verdict | Exit:
    """The tagged answer to LOGIN -> follow, go on, or the exit code."""
    if code == "REFERRAL" and condition == "NO":
        return Verdict.FOLLOW
    if condition == "OK":
        return Verdict.CONTINUE
    if at_door and condition == "NO" and code not in _AUTH_CODES:
        return Exit.NO_REFERRAL
    return Exit.AUTH_FAILED


def command_verdict(condition: str, code: str, *, at_door: bool) -> Verdict | Exit:
    """The tagged answer to the mailbox command -> follow, or the exit code."""
    if code == "REFERRAL" and condition == "NO":
        return Verdict.FOLLOW
    if condition == "OK":
        return Exit.OK
    return Exit.NO_REFERRAL if at_door else Exit.REFUSED


@dataclass(frozen=True, slots=True)
class HopKey:
    """What identifies a visited server (for loop detection)."""

    host: str
    port: int
    user: str
    mailbox: str | None  # the mailbox the URL named; None for the door and server URLs


@dataclass(frozen=True, slots=True)
class Target:
    """One server to visit: where, as whom, and which mailbox the command uses."""

    host: str
    port: int
    user: str
    mailbox: str
    url: str | None = None  # None: the door
    url_mailbox: str | None = None

    @property
    def key(self) -> HopKey:
        return HopKey(self.host.lower(), self.port, self.user, self.url_mailbox)

    @property
    def where(self) -> str:
        return self.url or f"door {self.server}"

    @property
    def server(self) -> str:
        return f"{url_host(self.host)}:{self.port}"


@dataclass(frozen=True)
class Plan:
    """The targets of one referral, the URLs that could not be used, or why to stop."""

    targets: tuple[Target, ...] = ()
    unusable: tuple[tuple[str, str], ...] = ()  # (url, reason)
    stop: tuple[Exit, str] | None = None


def plan_referral(
    urls: Sequence[str],
    *,
    current: Target,
    visited: dict[HopKey, int],
    next_hop: int,
    max_hops: int,
) -> Plan:
    """Turn the URLs of a referral into targets, refusing loops and deep chains."""
    targets: list[Target] = []
    unusable: list[tuple[str, str]] = []
    for text in urls:
        try:
            url = parse_imap_url(text)
        except ValueError as exc:
            unusable.append((text, str(exc)))
            continue
        user = url.user if url.user is not None else current.user
        if not user or UNSENDABLE & set(user):
            unusable.append((text, "the user name in the URL cannot be sent in LOGIN"))
            continue
        mailbox = url.mailbox if url.mailbox is not None else current.mailbox
        target = Target(url.host, url.port, user, mailbox, url=text, url_mailbox=url.mailbox)
        seen = visited.get(target.key)
        if seen is not None:
            return Plan(
                stop=(Exit.LOOP, f"referral loop: {text} was already visited at hop {seen}")
            )
        targets.append(target)
    if targets and next_hop > max_hops:
        return Plan(
            stop=(
                Exit.LOOP,
                f"more than --max-hops {max_hops} hops: not following {targets[0].url}",
            )
        )
    return Plan(targets=tuple(targets), unusable=tuple(unusable))


def command_chunks(
    tag: str, command: str, mailbox: str, caps: Iterable[str], message: bytes = b""
) -> tuple[bytes, ...]:
    """The command as chunks; after each but the last, wait for ``+`` (or the answer).

    Mailbox names go out in modified UTF-7, as an atom or a quoted string
    (``wire_mailbox``); modified UTF-7 is printable ASCII, so no literal is
    ever needed for a name.
    """
    wire = wire_mailbox(mailbox).encode("ascii")
    head = tag.encode("ascii") + b" "
    if command == "STATUS":
        return (head + b"STATUS " + wire + b" (MESSAGES UIDNEXT UIDVALIDITY)\r\n",)
    if command == "LIST":
        verb = b"RLIST" if "MAILBOX-REFERRALS" in set(caps) else b"LIST"
        return (head + verb + b' "" ' + wire + b"\r\n",)
    if command == "APPEND":
        # Synchronizing: a door answers the referral instead of "+" (RFC 2193 §4.1).
        return (head + b"APPEND " + wire + b" {%d}\r\n" % len(message), message + b"\r\n")
    return (head + command.encode("ascii") + b" " + wire + b"\r\n",)


def probe_message(user: str) -> tuple[bytes, str]:
    """A small RFC 5322 message for APPEND, and its Message-ID."""
    message_id = f"<refd-probe.{int(time.time())}.{secrets.token_hex(6)}@refd.invalid>"
    lines = [
        "From: refd probe <probe@refd.invalid>",
        "To: probe@refd.invalid",
        f"Subject: {TEST_SUBJECT}",
        f"Date: {formatdate()}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This message was appended by refd probe to check a route; delete it.",
        "",
    ]
    return "\r\n".join(lines).encode("ascii"), message_id
