"""``refd probe``: follow a route from the outside, exactly as a client sees it.

The probe is a small referral-following IMAP client. It connects to the
door, logs in, follows the referrals it gets (RFC 2221 login referrals,
RFC 2193 mailbox referrals) to whichever server they name, logs in there
with the same credentials and runs one mailbox command, printing every hop::

    hop 1 door 127.0.0.1:1143: LOGIN alice -> NO [REFERRAL imap://alice;AUTH=*@mail1/] ...
    hop 2 imap://alice;AUTH=*@mail1/: LOGIN alice -> OK [CAPABILITY ...] Logged in
    hop 2 imap://alice;AUTH=*@mail1/: SELECT INBOX -> OK [READ-WRITE] Select completed.
    result: ok (exit 0): SELECT INBOX on mail1:143 as alice: EXISTS 2, UIDVALIDITY 1700000000

At each server: connect (and TLS), read the greeting (``* BYE [REFERRAL]``
is followed, RFC 2221 §4.2), STARTTLS if asked, LOGIN, then the command.

- ``NO [REFERRAL url ...]`` to LOGIN or to the command: follow. The URLs are
  RFC 5092 server or mailbox URLs (``parse_imap_url``); several are replicas,
  preferred first (RFC 2193 §3): they are tried in order and the first one
  that answers wins. A URL "fails" on a refused or timed-out connection, a
  TLS error, a greeting other than ``* OK``/``* PREAUTH``, a closed
  connection or an answer that is not IMAP, at any point of its session.
- ``OK [REFERRAL url]`` to LOGIN (accept mode, RFC 2221 §4.1): logged in
  here; stay and run the command here (it will usually be referred).
- The command runs on the mailbox the last followed URL named, else on
  ``--mailbox``. SELECT and EXAMINE report EXISTS and UIDVALIDITY; STATUS
  asks for MESSAGES UIDNEXT UIDVALIDITY; APPEND sends a small test message
  (Subject ``refd probe test message``) with a synchronizing literal, so a
  door answers with its referral instead of ``+`` and never gets the body;
  LIST sends ``RLIST "" <mailbox>`` to a server advertising
  MAILBOX-REFERRALS (RFC 2193 §5.1: a referral client lists with RLIST) and
  ``LIST "" <mailbox>`` elsewhere, so ``--mailbox`` may hold wildcards.
  The others report the tagged answer.

Decisions:

- **The URL's user is the login name** at that server (RFC 5092 §3.2: the
  URL's user name "is used in the LOGIN command"); the password stays the
  one given. A URL without a user keeps the current name. refd's URLs carry
  the name it authenticated (domain lower-cased), so the two agree. A URL
  without ``;AUTH=*`` would ask for anonymous login (RFC 5092 §3.2); the
  probe checks a user's route, so it logs in as the user anyway.
- **TLS: the same mode at every hop as at the door** (``--tls``: implicit
  TLS, ``--starttls``: STARTTLS, neither: plaintext), verifying each
  server's certificate against the host in its URL (``--cafile``, else the
  system CAs; ``--insecure`` verifies nothing). An IMAP URL cannot say
  "TLS", and the port is taken from the URL as it is: a door meant for
  implicit-TLS clients must refer to implicit-TLS ports.
- **Loops** (RFC 2221 §3: "MUST NOT follow more than 10 levels"): every
  server visited is remembered as (host, port, user, mailbox the URL named);
  a referral naming one of them again, or a hop beyond ``--max-hops`` (the
  door is hop 1), stops the probe with exit 5. Hosts are compared as
  written (lower-cased): two spellings of one host are caught by the hop
  bound.
- **Strict and bounded**: ``--timeout`` bounds the connect, each read of
  a TLS handshake, and each response as a whole (one deadline however
  slowly its bytes drip in); a logical response line (literals included)
  is at most 64 KiB, a command's whole answer at most 16 MiB. A connection
  that failed gets no LOGOUT; others get one, waited for at most 1 s.
- **Never the password** in output: LOGIN is shown as ``LOGIN <user>``; a
  password goes as a quoted string, or as a literal when it is 8-bit
  (``refd.auth.imap_backend.login_chunks``).

Exit codes (each means one thing; ``--json`` carries it too):

== =====================================================================
0  the command succeeded where the referrals led -- or at the door
   itself, which then gave no referral (``referrals: 0``; a plain IMAP
   server, or LIST/RLIST, which RFC 2193 answers at the door)
2  usage or configuration error (bad option, password or CA file)
3  authentication failed: LOGIN refused without a referral, at the door
   (``[AUTHENTICATIONFAILED]``, ``[AUTHORIZATIONFAILED]``, ``[EXPIRED]``,
   ``[PRIVACYREQUIRED]``, no code, or BAD) or at any later server (any NO
   or BAD); or LOGINDISABLED advertised
4  no referral where one was expected: the door refused LOGIN with
   another code (refd: ``[UNAVAILABLE]``, no route for the user or its
   password check down), or refused the command without a referral
5  referral loop: a URL already visited, or more than ``--max-hops`` hops
6  backend unreachable: every URL of a referral failed (see above), or
   none of them could be used
7  a server the probe was referred to refused the command (tagged NO or
   BAD without a referral), e.g. ``[NONEXISTENT]``
8  the door itself unreachable (connect, TLS, timeout, not IMAP)
== =====================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import itertools
import json
import os
import re
import secrets
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TextIO

from refd.auth.imap_backend import (
    BackendProtocolError,
    LineReader,
    Response,
    capabilities,
    login_chunks,
    parse_response,
)
from refd.protocol import mutf7
from refd.protocol.responses import wire_mailbox
from refd.routing.url import DEFAULT_PORT, parse_imap_url, split_host_port, url_host

__all__ = [
    "COMMANDS",
    "EPILOG",
    "Exit",
    "Hop",
    "HopKey",
    "Options",
    "Report",
    "Target",
    "UsageError",
    "add_arguments",
    "command_chunks",
    "command_verdict",
    "login_verdict",
    "options_from_args",
    "parse_data",
    "parse_hostport",
    "plan_referral",
    "probe",
    "run",
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
IMPLICIT_TLS_PORT = 993  # RFC 8314 §3.3
MAX_LINE_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 16 * 1024 * 1024
LOGOUT_GRACE_S = 1.0
TEXT_MAX = 300  # server text quoted in the output is cut to this
TEST_SUBJECT = "refd probe test message"

# LOGIN refused with these (or none, or BAD) at the door: the password.
_AUTH_CODES = frozenset({"", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED"})
_AUTH_CODES |= {"PRIVACYREQUIRED"}
_UNSENDABLE = frozenset("\x00\r\n")


class Exit(enum.IntEnum):
    """The probe's exit codes; see the module docstring."""

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


EPILOG = """\
exit codes:
  0  the command succeeded where the referrals led, or at the door itself,
     which then gave no referral (the result says "answered by the door
     itself"; JSON: "referrals": 0)
  2  usage or configuration error (bad option, password file, CA file)
  3  authentication failed: LOGIN refused without a referral, at the door
     ([AUTHENTICATIONFAILED], [AUTHORIZATIONFAILED], [EXPIRED],
     [PRIVACYREQUIRED], no code, BAD) or at a server referred to (any NO or
     BAD); or LOGINDISABLED advertised
  4  no referral where one was expected: the door refused LOGIN with another
     code (refd: [UNAVAILABLE], no route for the user), or refused the
     command without a referral
  5  referral loop: a URL (host, port, user, mailbox) already visited, or
     more than --max-hops hops (the door is hop 1)
  6  backend unreachable: every URL of a referral failed (connect, TLS,
     timeout, not IMAP) or none was usable
  7  a server referred to refused the command (NO or BAD without referral)
  8  the door itself unreachable (connect, TLS, timeout, not IMAP)

Referrals are followed with the same TLS mode as the door, to the port in
the URL; the URL's user name is the login name there, with the same
password. The password is read from --password-file (one trailing newline
stripped) or --password-env, never from the command line, and never shown.
"""


class UsageError(Exception):
    """A bad option or an unreadable file: exit 2."""


class TlsMode(enum.Enum):
    NONE = "none"
    IMPLICIT = "implicit"
    STARTTLS = "starttls"


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


# -- arguments ------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600: {text!r}")
    return value


def _hops(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 1 to 100: {text!r}")
    return value


def _command(text: str) -> str:
    value = text.upper()
    if value not in COMMANDS:
        raise argparse.ArgumentTypeError(f"one of {', '.join(COMMANDS)}, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the probe's options to ``parser`` (and its description and exit-code epilog)."""
    parser.description = parser.description or (
        "Log in at the door as USER, follow its referrals (RFC 2221 login and\n"
        "RFC 2193 mailbox referrals) as a referral-aware client does, run one\n"
        "mailbox command where they lead, and print every hop."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--door",
        required=True,
        metavar="HOST:PORT",
        help="the door to start at (IPv6 as [::1]:143; port default 143, 993 with --tls)",
    )
    parser.add_argument("--user", required=True, metavar="USER", help="the login name")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from FILE (one trailing newline is stripped)",
    )
    secret.add_argument(
        "--password-env", metavar="VAR", help="read the password from environment variable VAR"
    )
    parser.add_argument(
        "--mailbox", default="INBOX", help="the mailbox (LIST: a pattern) (default: INBOX)"
    )
    parser.add_argument(
        "--command",
        type=_command,
        default="SELECT",
        metavar="COMMAND",
        help=f"{', '.join(COMMANDS[:-1])} or {COMMANDS[-1]}, run where the referrals lead "
        "(default: SELECT)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="implicit TLS, at the door and every hop")
    tls.add_argument("--starttls", action="store_true", help="STARTTLS, at the door and every hop")
    parser.add_argument(
        "--cafile", metavar="FILE", help="trust the CAs in FILE (PEM) instead of the system's"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify TLS certificates (anyone on the path can read the password)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="deadline for the connect, each TLS handshake read and each response (default: 10)",
    )
    parser.add_argument(
        "--max-hops",
        type=_hops,
        default=10,
        metavar="N",
        help="stop after N servers, the door included (default: 10, RFC 2221 §3)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of the hop lines"
    )


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` or ``[v6][:port]`` -> (host without brackets, port)."""
    try:
        host, port_text = split_host_port(text)
    except ValueError as exc:
        raise UsageError(f"--door {text!r}: {exc}") from None
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"--door {text!r} is not HOST:PORT")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"--door {text!r}: the port must be 1 to 65535")
    return host, int(port_text)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8", newline="") as f:
                password = f.read(64 * 1024 + 1)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(
                f"cannot read --password-file {args.password_file}: {reason}"
            ) from None
        if len(password) > 64 * 1024:
            raise UsageError(f"--password-file {args.password_file}: more than 64 KiB")
        if password.endswith("\n"):  # one line ending, LF or CRLF
            password = password[:-2] if password.endswith("\r\n") else password[:-1]
        where = f"--password-file {args.password_file}"
    else:
        value = os.environ.get(args.password_env)
        if value is None:
            raise UsageError(f"--password-env: the variable {args.password_env} is not set")
        password = value
        where = f"--password-env {args.password_env}"
    if not password:
        raise UsageError(f"{where}: the password is empty")
    if _UNSENDABLE & set(password):
        raise UsageError(f"{where}: the password contains NUL, CR or LF (IMAP cannot send it)")
    return password


def options_from_args(args: argparse.Namespace) -> Options:
    """Check parsed arguments and read the password; raises UsageError."""
    tls = TlsMode.IMPLICIT if args.tls else TlsMode.STARTTLS if args.starttls else TlsMode.NONE
    host, port = parse_hostport(
        args.door, IMPLICIT_TLS_PORT if tls is TlsMode.IMPLICIT else DEFAULT_PORT
    )
    if not args.user or _UNSENDABLE & set(args.user):
        raise UsageError("--user: empty, or contains NUL, CR or LF")
    if not args.mailbox:
        raise UsageError("--mailbox: empty")
    if tls is TlsMode.NONE and (args.cafile is not None or args.insecure):
        raise UsageError("--cafile and --insecure need --tls or --starttls")
    if args.cafile is not None and args.insecure:
        raise UsageError("--cafile and --insecure exclude each other")
    if args.cafile is not None:
        try:
            ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UsageError(f"cannot load --cafile {args.cafile}: {reason}") from None
    return Options(
        door_host=host,
        door_port=port,
        user=args.user,
        password=_read_password(args),
        mailbox=args.mailbox,
        command=args.command,
        tls=tls,
        cafile=args.cafile,
        insecure=args.insecure,
        timeout_s=args.timeout,
        max_hops=args.max_hops,
        json=args.json,
    )


def client_context(options: Options) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- pure protocol parts ------------------------------------------------------------------


class Verdict(enum.Enum):
    """What to do after an answer that does not end the probe."""

    FOLLOW = "follow"  # NO [REFERRAL ...]: go where it says
    CONTINUE = "continue"  # OK (with or without a referral): go on here


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
        return self.url or f"door {url_host(self.host)}:{self.port}"

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
        if not user or _UNSENDABLE & set(user):
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


# A parsed value of untagged data: atom or string (str), NIL (None), or a list.
Value = str | None | list["Value"]

_LITERAL_HEAD = re.compile(rb"\{([0-9]{1,10})\+?\}\r\n")


def parse_data(data: bytes) -> list[Value]:
    """Tokens of one untagged line (after ``* ``): atoms, strings, NIL, lists.

    Quoted strings lose their escapes, literals (``{n}`` CRLF and n octets)
    become strings, an unquoted NIL becomes None, and atoms keep brackets
    (``BODY[TEXT]``). Raises BackendProtocolError on bad syntax.
    """
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    stack: list[list[Value]] = [[]]
    pos = 0
    n = len(data)
    while pos < n:
        c = data[pos]
        if c == 0x20:
            pos += 1
        elif c == 0x28:  # (
            new: list[Value] = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise BackendProtocolError("unbalanced ')' in a response")
            stack.pop()
            pos += 1
        elif c == 0x22:  # "
            out = bytearray()
            pos += 1
            while True:
                if pos >= n:
                    raise BackendProtocolError("unterminated quoted string in a response")
                ch = data[pos]
                if ch == 0x5C and pos + 1 < n:  # backslash
                    out.append(data[pos + 1])
                    pos += 2
                elif ch == 0x22:
                    pos += 1
                    break
                else:
                    out.append(ch)
                    pos += 1
            stack[-1].append(out.decode("utf-8", "replace"))
        elif c == 0x7B:  # {
            match = _LITERAL_HEAD.match(data, pos)
            if match is None:
                raise BackendProtocolError("bad literal in a response")
            size = int(match.group(1))
            start = match.end()
            if start + size > n:
                raise BackendProtocolError("literal longer than the response")
            stack[-1].append(data[start : start + size].decode("utf-8", "replace"))
            pos = start + size
        else:
            end = pos
            while end < n and data[end] not in b" ()":
                end += 1
            atom = data[pos:end].decode("utf-8", "replace")
            stack[-1].append(None if atom.upper() == "NIL" else atom)
            pos = end
    if len(stack) != 1:
        raise BackendProtocolError("unbalanced '(' in a response")
    return stack[0]


def _untagged_body(raw: bytes) -> bytes:
    return raw[2:] if raw.startswith(b"* ") else raw


def _decode_name(name: str) -> str:
    try:
        return mutf7.decode(name)
    except mutf7.MUTF7Error:
        return name


def result_data(
    command: str, untagged: Sequence[tuple[Response, bytes]], tagged: Response
) -> dict[str, object]:
    """What the probe reports from a successful command's answer."""
    out: dict[str, object] = {}
    if command in ("SELECT", "EXAMINE"):
        for resp, _ in untagged:
            if resp.condition == "" and resp.text.upper().endswith(" EXISTS"):
                count = resp.text.split(" ", 1)[0]
                if count.isdigit():
                    out["exists"] = int(count)
            elif resp.code == "UIDVALIDITY" and resp.code_args.isdigit():
                out["uidvalidity"] = int(resp.code_args)
        if tagged.code in ("READ-WRITE", "READ-ONLY"):
            out["access"] = tagged.code
    elif command == "STATUS":
        for resp, raw in untagged:
            if resp.condition or not resp.text.upper().startswith("STATUS "):
                continue
            tokens = parse_data(_untagged_body(raw))
            items = tokens[-1] if len(tokens) >= 3 and isinstance(tokens[-1], list) else []
            pairs = zip(items[0::2], items[1::2], strict=False)
            for name, value in pairs:
                if isinstance(name, str) and isinstance(value, str) and value.isdigit():
                    out[name.lower()] = int(value)
    elif command == "LIST":
        entries: list[dict[str, object]] = []
        for resp, raw in untagged:
            if resp.condition or not resp.text.upper().startswith("LIST "):
                continue
            tokens = parse_data(_untagged_body(raw))
            if len(tokens) >= 4 and isinstance(tokens[1], list) and isinstance(tokens[3], str):
                flags = [f for f in tokens[1] if isinstance(f, str)]
                delimiter = tokens[2] if isinstance(tokens[2], str) else None
                name = _decode_name(tokens[3])
                entries.append({"flags": flags, "delimiter": delimiter, "name": name})
        out["entries"] = entries
    elif command == "APPEND" and tagged.code == "APPENDUID":
        out["appenduid"] = tagged.code_args
    return out


def _describe_data(command: str, data: dict[str, object]) -> str:
    if command in ("SELECT", "EXAMINE", "STATUS"):
        keys = ("exists", "messages", "uidnext", "uidvalidity")
        parts = [f"{k.upper()} {data[k]}" for k in keys if k in data]
        return ", ".join(parts) or "no counts reported"
    if command == "LIST":
        entries = data.get("entries")
        assert isinstance(entries, list)
        names = [str(e["name"]) for e in entries[:10]]
        more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
        return f"{len(entries)} mailbox(es)" + (f": {', '.join(names)}{more}" if names else "")
    if command == "APPEND":
        uid = data.get("appenduid")
        return f"appended ({data.get('message_id')})" + (f", APPENDUID {uid}" if uid else "")
    return "done"


def _clean(text: str) -> str:
    """Server text made printable and short for one output line."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.rstrip("\r\n"))
    return shown if len(shown) <= TEXT_MAX else shown[:TEXT_MAX] + "..."


def render(resp: Response) -> str:
    """A status response as one line; CAPABILITY lists are elided."""
    parts = [resp.condition] if resp.condition else []
    if resp.code:
        args = (
            " ..."
            if resp.code == "CAPABILITY"
            else (f" {resp.code_args}" if resp.code_args else "")
        )
        parts.append(f"[{resp.code}{args}]")
    if resp.text:
        parts.append(resp.text)
    return _clean(" ".join(parts))


# -- I/O: one connection ---------------------------------------------------------------


class ProtocolError(Exception):
    """The server said something the probe cannot go on with."""


@dataclass
class Answer:
    untagged: list[tuple[Response, bytes]]
    tagged: Response


class _Connection:
    """A blocking IMAP client connection with a deadline on every response."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.sock = sock
        self.timeout_s = timeout_s
        self.reader = LineReader(MAX_LINE_BYTES)
        self._tags = itertools.count(1)
        self.bye: str | None = None

    def tag(self) -> str:
        return f"p{next(self._tags)}"

    def read(self) -> tuple[Response, bytes]:
        deadline = time.monotonic() + self.timeout_s
        while (line := self.reader.next_line()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete response in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                said = f" after * BYE {self.bye}" if self.bye else ""
                raise ConnectionError(f"the server closed the connection{said}")
            self.reader.feed(data)
        resp = parse_response(line)
        if resp.tag == "*" and resp.condition == "BYE":
            self.bye = render(resp)[4:]
        return resp, line

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout_s)
        self.sock.sendall(data)

    def command(self, tag: str, chunks: Sequence[bytes]) -> Answer:
        """Send a command chunk by chunk; return its untagged data and tagged answer."""
        untagged: list[tuple[Response, bytes]] = []
        total = 0
        for i, chunk in enumerate(chunks):
            self.send(chunk)
            last = i == len(chunks) - 1
            while True:
                resp, raw = self.read()
                total += len(raw)
                if total > MAX_ANSWER_BYTES:
                    raise ProtocolError(f"answer longer than {MAX_ANSWER_BYTES} bytes")
                if resp.tag == tag:
                    return Answer(untagged, resp)
                if resp.tag == "*":
                    untagged.append((resp, raw))
                elif resp.tag == "+" and not last:
                    break
                else:
                    raise ProtocolError(f"unexpected response {render(resp)!r} (tag {resp.tag})")
        raise AssertionError("unreachable")  # pragma: no cover

    def capability(self) -> frozenset[str]:
        tag = self.tag()
        answer = self.command(tag, [f"{tag} CAPABILITY\r\n".encode()])
        for resp, _ in answer.untagged:
            caps = capabilities(resp)
            if caps is not None:
                return caps
        return capabilities(answer.tagged) or frozenset()

    def logout(self) -> None:
        """Say LOGOUT and wait a little for the answer; never raises."""
        try:
            self.timeout_s = min(self.timeout_s, LOGOUT_GRACE_S)
            tag = self.tag()
            self.command(tag, [f"{tag} LOGOUT\r\n".encode()])
        except (OSError, BackendProtocolError, ProtocolError):
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


# -- the probe -----------------------------------------------------------------------


@dataclass
class Hop:
    """One server visited (or tried): what was said there."""

    hop: int
    server: str
    url: str | None
    user: str
    mailbox: str | None
    steps: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "hop": self.hop,
            "server": self.server,
            "url": self.url,
            "user": self.user,
            "mailbox": self.mailbox,
            "steps": self.steps,
            "error": self.error,
        }


@dataclass
class Report:
    """The whole run: every hop and the result."""

    options: Options
    hops: list[Hop] = field(default_factory=list)
    exit_code: Exit = Exit.OK
    message: str = ""
    final: Target | None = None
    referrals: int = 0
    data: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        o = self.options
        final = self.final
        return {
            "door": o.door,
            "user": o.user,
            "command": o.command,
            "mailbox": o.mailbox,
            "tls": o.tls.value,
            "hops": [h.to_json() for h in self.hops],
            "result": {
                "exit_code": int(self.exit_code),
                "status": self.exit_code.label,
                "message": self.message,
                "referrals": self.referrals,
                "server": final.server if final else None,
                "url": final.url if final else None,
                "user": final.user if final else None,
                "mailbox": final.mailbox if final else None,
                "data": self.data,
            },
        }


@dataclass(frozen=True)
class _Referred:
    urls: tuple[str, ...]


@dataclass(frozen=True)
class _Done:
    exit_code: Exit
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Failed:
    reason: str


class _Prober:
    def __init__(self, options: Options, emit: Callable[[str], None]) -> None:
        self.options = options
        self.emit = emit
        self.context = client_context(options) if options.tls is not TlsMode.NONE else None
        self.report = Report(options)

    def step(self, hop: Hop, target: Target, label: str, answer: str) -> None:
        hop.steps.append({"command": label, "response": answer})
        self.emit(f"hop {hop.hop} {target.where}: {label} -> {answer}")

    def run(self) -> Report:
        o = self.options
        door = Target(o.door_host, o.door_port, o.user, o.mailbox)
        visited: dict[HopKey, int] = {door.key: 1}
        candidates: tuple[Target, ...] = (door,)
        number = 1
        while True:
            outcome: _Referred | _Done | _Failed | None = None
            source = door
            failures: list[str] = []
            for target in candidates:
                source = target
                outcome = self.visit(number, target)
                if not isinstance(outcome, _Failed):
                    break
                failures.append(f"{target.where}: {outcome.reason}")
            if outcome is None or isinstance(outcome, _Failed):
                if number == 1:
                    reason = outcome.reason if outcome else "not tried"
                    return self.finish(Exit.DOOR_UNREACHABLE, f"door {o.door}: {reason}", None)
                tried = "; ".join(failures) or "no usable URL"
                return self.finish(
                    Exit.UNREACHABLE,
                    f"no server of the referral at hop {number - 1} answered ({tried})",
                    None,
                )
            if isinstance(outcome, _Done):
                return self.finish(outcome.exit_code, outcome.message, source, outcome.data)
            plan = plan_referral(
                outcome.urls,
                current=source,
                visited=visited,
                next_hop=number + 1,
                max_hops=o.max_hops,
            )
            if plan.stop is not None:
                return self.finish(plan.stop[0], plan.stop[1], source)
            for url, reason in plan.unusable:
                hop = Hop(number + 1, "-", url, source.user, None, error=reason)
                self.report.hops.append(hop)
                self.emit(f"hop {number + 1} {url}: unusable URL -> {reason}")
            if not plan.targets:
                reasons = "; ".join(f"{u}: {r}" for u, r in plan.unusable) or "no URL"
                return self.finish(
                    Exit.UNREACHABLE,
                    f"no usable URL in the referral at hop {number} ({reasons})",
                    None,
                )
            number += 1
            self.report.referrals += 1
            for target in plan.targets:
                visited.setdefault(target.key, number)
            candidates = plan.targets

    def finish(
        self,
        code: Exit,
        message: str,
        final: Target | None,
        data: dict[str, object] | None = None,
    ) -> Report:
        report = self.report
        report.exit_code = code
        report.message = message
        report.final = final
        report.data = data or {}
        return report

    def open(self, target: Target) -> _Connection:
        sock = socket.create_connection((target.host, target.port), timeout=self.options.timeout_s)
        try:
            if self.options.tls is TlsMode.IMPLICIT:
                assert self.context is not None
                sock = self.context.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock, self.options.timeout_s)

    def visit(self, number: int, target: Target) -> _Referred | _Done | _Failed:
        o = self.options
        at_door = target.url is None
        hop = Hop(number, target.server, target.url, target.user, target.url_mailbox)
        self.report.hops.append(hop)
        conn: _Connection | None = None
        stage = "connect"
        broken = False
        try:
            conn = self.open(target)
            greeting, _ = conn.read()
            self.step(hop, target, "connect", render(greeting))
            if greeting.tag != "*" or greeting.condition not in ("OK", "PREAUTH", "BYE"):
                raise ProtocolError(f"not an IMAP greeting: {render(greeting)}")
            if greeting.condition == "BYE":
                if greeting.code == "REFERRAL":  # RFC 2221 §4.2
                    return _Referred(tuple(greeting.code_args.split()))
                raise ProtocolError(f"the server said {render(greeting)}")
            caps = capabilities(greeting)
            if o.tls is TlsMode.STARTTLS:
                stage = "STARTTLS"
                if greeting.condition == "PREAUTH":
                    raise ProtocolError("PREAUTH greeting: STARTTLS is no longer possible")
                if caps is None:
                    caps = conn.capability()
                if "STARTTLS" not in caps:
                    raise ProtocolError("the server does not offer STARTTLS")
                tag = conn.tag()
                answer = conn.command(tag, [f"{tag} STARTTLS\r\n".encode()])
                self.step(hop, target, "STARTTLS", render(answer.tagged))
                if answer.tagged.condition != "OK":
                    raise ProtocolError(f"STARTTLS refused: {render(answer.tagged)}")
                if conn.reader.buffered:
                    # Bytes before the handshake would be trusted as if under TLS.
                    raise ProtocolError("data after the STARTTLS answer (injection?)")
                assert self.context is not None
                conn.sock.settimeout(o.timeout_s)  # not what the last read left of its deadline
                conn.sock = self.context.wrap_socket(conn.sock, server_hostname=target.host)
                caps = None
            if greeting.condition != "PREAUTH":
                stage = f"LOGIN {target.user}"
                if caps is None:
                    caps = conn.capability()
                if "LOGINDISABLED" in caps:
                    self.step(hop, target, stage, "not sent: the server advertises LOGINDISABLED")
                    return _Done(
                        Exit.AUTH_FAILED,
                        f"{target.where} advertises LOGINDISABLED: use --tls or --starttls",
                    )
                tag = conn.tag()
                answer = conn.command(tag, login_chunks(tag, target.user, o.password, caps))
                tagged = answer.tagged
                self.step(hop, target, stage, render(tagged))
                verdict = login_verdict(tagged.condition, tagged.code, at_door=at_door)
                if verdict is Verdict.FOLLOW:
                    return _Referred(tuple(tagged.code_args.split()))
                if isinstance(verdict, Exit):
                    place = "the door" if at_door else target.server
                    return _Done(verdict, f"LOGIN as {target.user} at {place}: {render(tagged)}")
                for resp, _ in answer.untagged:
                    caps = capabilities(resp) or caps
                caps = capabilities(tagged) or caps
            return self.run_command(conn, hop, target, caps or frozenset(), at_door)
        except (OSError, UnicodeError, BackendProtocolError, ProtocolError) as exc:
            # ProtocolError: raised above for an answer the probe cannot go on
            # with; UnicodeError: a host name IDNA cannot encode ("a..b").
            broken = True  # no LOGOUT on a connection that failed
            reason = _describe(exc, o.timeout_s)
            self.step(hop, target, stage, f"failed: {reason}")
            if stage != "connect":
                reason = f"{reason} (at {stage})"
            hop.error = reason
            return _Failed(reason)
        finally:
            if conn is not None:
                if not broken:
                    conn.logout()
                conn.close()

    def run_command(
        self, conn: _Connection, hop: Hop, target: Target, caps: frozenset[str], at_door: bool
    ) -> _Referred | _Done:
        command = self.options.command
        message, message_id = probe_message(target.user) if command == "APPEND" else (b"", "")
        tag = conn.tag()
        chunks = command_chunks(tag, command, target.mailbox, caps, message)
        label = chunks[0][len(tag) + 1 :].decode("ascii").split("\r\n")[0]
        answer = conn.command(tag, chunks)
        tagged = answer.tagged
        self.step(hop, target, label, render(tagged))
        verdict = command_verdict(tagged.condition, tagged.code, at_door=at_door)
        if verdict is Verdict.FOLLOW:
            return _Referred(tuple(tagged.code_args.split()))
        place = "the door" if at_door else target.server
        what = f"{command} {target.mailbox} at {place} as {target.user}"
        if verdict is Exit.OK:
            data = result_data(command, answer.untagged, tagged)
            if command == "APPEND":
                data["message_id"] = message_id
            summary = _describe_data(command, data)
            if at_door:
                summary += " (answered by the door itself: no referral)"
            return _Done(Exit.OK, f"{what}: {summary}", data)
        assert isinstance(verdict, Exit)
        return _Done(verdict, f"{what}: {render(tagged)}")


def probe(options: Options, emit: Callable[[str], None] | None = None) -> Report:
    """Run the probe; ``emit`` gets each hop line as it happens."""
    return _Prober(options, emit or (lambda _line: None)).run()


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``refd probe``: run with parsed arguments; print hops and result; return the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        options = options_from_args(args)
    except UsageError as exc:
        print(f"refd probe: {exc}", file=err)
        return int(Exit.USAGE)
    if options.insecure:
        print(
            "refd probe: WARNING: --insecure: TLS certificates are NOT verified; anyone on the "
            "path can pose as the door or a backend and read the password",
            file=err,
        )

    def emit(line: str) -> None:
        print(line, file=out, flush=True)

    report = probe(options, None if options.json else emit)
    if options.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2), file=out)
    else:
        code = report.exit_code
        print(f"result: {code.label} (exit {int(code)}): {report.message}", file=out)
    return int(report.exit_code)
