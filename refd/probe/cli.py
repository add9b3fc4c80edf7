"""``refd probe`` on the command line: its options, the password, and what it prints.

`add_arguments` adds the options to an argparse parser (``refd.cli`` does
that for ``refd probe``); `run` checks them (exit 2 with one line on
stderr for a bad one), runs the probe (`refd.probe.run.probe`) and prints
a line per hop and the result line, or one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from typing import TextIO

from refd.imap_client import TlsMode, client_tls_context
from refd.probe.plan import COMMANDS, Exit, Options
from refd.probe.report import result_line
from refd.probe.run import probe
from refd.protocol.client import UNSENDABLE
from refd.routing.url import DEFAULT_PORT, split_host_port

__all__ = [
    "EPILOG",
    "IMPLICIT_TLS_PORT",
    "UsageError",
    "add_arguments",
    "options_from_args",
    "parse_hostport",
    "run",
]

IMPLICIT_TLS_PORT = 993  # RFC 8314 §3.3

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

Referrals are followed to the port in the URL, in plaintext, upgraded with
STARTTLS when the door was reached with --tls or --starttls (a URL cannot
say "TLS": referral-following clients do the same); the URL's user name
is the login name there, with the same password. The password is read
from --password-file (one trailing newline stripped) or --password-env,
never from the command line, and never shown.
"""


class UsageError(Exception):
    """A bad option or an unreadable file: exit 2."""


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
    tls.add_argument(
        "--tls", action="store_true", help="implicit TLS at the door, STARTTLS at every later hop"
    )
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
    if UNSENDABLE & set(password):
        raise UsageError(f"{where}: the password contains NUL, CR or LF (IMAP cannot send it)")
    return password


def options_from_args(args: argparse.Namespace) -> Options:
    """Check parsed arguments and read the password; raises UsageError."""
    tls = TlsMode.IMPLICIT if args.tls else TlsMode.STARTTLS if args.starttls else TlsMode.NONE
    host, port = parse_hostport(
        args.door, IMPLICIT_TLS_PORT if tls is TlsMode.IMPLICIT else DEFAULT_PORT
    )
    if not args.user or UNSENDABLE & set(args.user):
        raise UsageError("--user: empty, or contains NUL, CR or LF")
    if not args.mailbox:
        raise UsageError("--mailbox: empty")
    if tls is TlsMode.NONE and (args.cafile is not None or args.insecure):
        raise UsageError("--cafile and --insecure need --tls or --starttls")
    if args.cafile is not None and args.insecure:
        raise UsageError("--cafile and --insecure exclude each other")
    if args.cafile is not None:
        try:
            client_tls_context(args.cafile)
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
        print(result_line(report), file=out)
    return int(report.exit_code)
