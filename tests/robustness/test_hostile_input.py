"""Hostile input over real sockets: every case gets its exact answer, others are served.

The door runs in-process (``refd.server.serve``) on four loopback listeners:
plain, implicit TLS, STARTTLS, and a PROXY-protocol listener whose
``proxy_networks`` do not include loopback (so a PROXY header from here is
an untrusted peer's).  Each case connects, reads the greeting, plays its
script and checks every line the door answers byte for byte, then checks
how the connection ends: still answering (``z NOOP``), closed, or closed
by the pre-auth idle timeout.  While a case runs, a ``LoginProber`` logs
alice in on fresh connections the whole time and every one of its answers
must be the referral.  ``test_everything_at_once`` then runs the whole
corpus concurrently, several times over, with the prober alongside.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from refd.config.loader import DaemonConfig, ListenerConfig, make_tls_context
from refd.door import DoorState
from refd.runtime import ClientInfo, Service, ServiceRef
from refd.server import handle_connection, serve
from tests.robustness.helpers import (
    ALICE_REFERRAL,
    BOB_LOGIN,
    IDLE_BYE,
    LineClient,
    LoginProber,
    RefdProcess,
)

GREETING_CAPS = (
    b"* OK [CAPABILITY IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS "
    b"MAILBOX-REFERRALS"
)
NOOP_OK = b"z OK NOOP completed.\r\n"
PREAUTH_IDLE_S = 2.0


@dataclasses.dataclass(frozen=True)
class Case:
    """Send each chunk, expect its lines exactly; then check how it ends."""

    name: str
    script: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    #: "alive": z NOOP is answered; "closed": EOF, nothing more; "idle": the
    #: pre-auth idle timeout's BYE, then EOF.
    end: str = "alive"
    listener: str = "imap"


def case(name: str, *script: tuple[bytes, list[bytes]], end: str = "alive", **kw: str) -> Case:
    return Case(name, tuple((send, tuple(lines)) for send, lines in script), end, **kw)


def bob(*script: tuple[bytes, list[bytes]]) -> tuple[tuple[bytes, list[bytes]], ...]:
    return ((b"b1 LOGIN bob secret\r\n", BOB_LOGIN), *script)


def garbage_lines() -> tuple[bytes, list[bytes]]:
    """256-octet blocks of every byte value: one bad line per LF, then BYE."""
    payload = bytes(range(256)) * 12
    first = b"* BAD Invalid tag: NUL character where tag was expected.\r\n"
    # Each later line starts at 0x0b (after the LF): a control character.
    other = b"* BAD Invalid tag: invalid character '\\x0b' in tag.\r\n"
    return payload, [first, *[other] * 9, b"* BYE Too many invalid commands.\r\n"]


V2_HEADER = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
    + bytes([203, 0, 113, 7, 192, 0, 2, 1])
    + b"\xc7\x38\x00\x8f"
)
V2_ANSWER = [
    b"* BAD Empty command line.\r\n",
    b"* BAD Empty command line.\r\n",
    b"* BAD Invalid tag: NUL character where tag was expected.\r\n",
    b"QUIT BAD Missing command name.\r\n",
    b"* BAD Invalid tag: invalid character '\\x11' in tag.\r\n",
]
PROXY_V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 143\r\n"
MIB = 1 << 20


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


CASES = [
    case("binary-garbage", garbage_lines(), end="closed"),
    case(
        "nul-only-line",
        (b"\x00\r\n", [b"* BAD Invalid tag: NUL character where tag was expected.\r\n"]),
    ),
    case(
        "nul-in-argument",
        (b"a1 LOGIN al\x00ice secret\r\n", [b"a1 BAD NUL character in user name.\r\n"]),
    ),
    case(
        "nul-in-literal",
        (
            b"a1 LOGIN {5+}\r\nal\x00ce secret\r\n",
            [b"a1 BAD NUL character in literal user name.\r\n"],
        ),
    ),
    case(
        "8bit-tag",
        (
            b"\xff\xfe LOGIN alice secret\r\n",
            [b"* BAD Invalid tag: 8-bit character where tag was expected.\r\n"],
        ),
    ),
    case(
        "empty-lines",
        (
            b"\r\n" * 10,
            [b"* BAD Empty command line.\r\n"] * 10 + [b"* BYE Too many invalid commands.\r\n"],
        ),
        end="closed",
    ),
    case(
        "1mib-line-tagged",
        (b"a1 LOGIN " + b"x" * MIB + b"\r\n", [b"a1 BAD [TOOBIG] Command line too long.\r\n"]),
    ),
    case(
        "1mib-line-untagged", (b"x" * MIB + b"\r\n", [b"* BAD [TOOBIG] Command line too long.\r\n"])
    ),
    case("1mib-no-newline", (b"a1 LOGIN " + b"x" * MIB, []), end="idle"),
    case(
        "1mib-of-lf",
        (
            b"\n" * MIB,
            [b"* BAD Empty command line.\r\n"] * 10 + [b"* BYE Too many invalid commands.\r\n"],
        ),
        end="closed",
    ),
    case(
        "2gib-literal",
        (
            b"a1 LOGIN {2147483648}\r\n",
            [b"a1 NO [TOOBIG] Literal of 2147483648 octets is over the limit.\r\n"],
        ),
    ),
    case(
        "2gib-nonsync-literal",
        (
            b"a1 LOGIN {2147483648+}\r\n",
            [
                b"a1 BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-).\r\n",
                b"* BYE Cannot resynchronize after a refused non-synchronizing literal.\r\n",
            ],
        ),
        end="closed",
    ),
    case(
        "2gib-append-is-referred",
        *bob(
            (
                b"b2 APPEND INBOX {2147483648}\r\n",
                [
                    b"b2 NO [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/INBOX] "
                    b"Remote mailbox. Try mail2.example.org.\r\n"
                ],
            )
        ),
    ),
    case(
        "2gib-append-before-login",
        (
            b"a1 APPEND INBOX {2147483648}\r\n",
            [b"a1 BAD APPEND needs an authenticated session: log in first.\r\n"],
        ),
    ),
    case(
        "literal-of-5000-digits",
        (
            b"a1 LOGIN {" + b"9" * 5000 + b"}\r\n",
            [b"a1 NO [TOOBIG] Literal size out of range.\r\n"],
        ),
    ),
    case(
        "literal-over-limit-then-sent-anyway",
        (
            b"a1 LOGIN {70000}\r\n" + b"y" * 70000 + b"\r\n",
            [
                b"a1 NO [TOOBIG] Literal of 70000 octets is over the limit.\r\n",
                b"* BAD [TOOBIG] Command line too long.\r\n",
            ],
        ),
    ),
    case(
        "unterminated-literal-silence",
        (b"a1 LOGIN {5}\r\n", [b"+ Ready for literal data\r\n"]),
        (b"abc", []),
        end="idle",
    ),
    case("unterminated-nonsync-literal-silence", (b"a1 LOGIN {10+}\r\nabc", []), end="idle"),
    case(
        "unterminated-literal-hangup",
        (b"a1 LOGIN {5}\r\n", [b"+ Ready for literal data\r\n"]),
        (b"abc", []),
        end="hangup",
    ),
    case(
        "literal-then-junk-on-the-same-line",
        (b"a1 LOGIN {3+}\r\nabcdef\r\n", [b"a1 BAD Expected a space before the password.\r\n"]),
    ),
    case(
        "nested-parens-id",
        (
            b"a1 ID " + b"(" * 4000 + b")" * 4000 + b"\r\n",
            [b"a1 BAD Expected a quoted string or a literal for ID field.\r\n"],
        ),
    ),
    case(
        "nested-parens-status",
        *bob(
            (
                b"b2 STATUS INBOX " + b"(" * 4000 + b"MESSAGES" + b")" * 4000 + b"\r\n",
                [b"b2 BAD Invalid character '(' in status item list.\r\n"],
            )
        ),
    ),
    case(
        "nested-parens-list",
        *bob(
            (
                b"b2 LIST " + b"(" * 4000 + b"REMOTE" + b")" * 4000 + b' "" *\r\n',
                [b"b2 BAD Invalid character '(' in LIST selection options.\r\n"],
            )
        ),
    ),
    case(
        "nested-parens-append",
        *bob(
            (
                b"b2 APPEND INBOX " + b"(" * 4000 + b")" * 4000 + b" {5}\r\n",
                [b"b2 BAD Invalid character '(' in flag list.\r\n"],
            )
        ),
    ),
    case(
        "nested-parens-over-line-limit",
        *bob(
            (
                b"b2 STATUS INBOX " + b"(" * 50000 + b")" * 50000 + b"\r\n",
                [b"b2 BAD [TOOBIG] Command line too long.\r\n"],
            )
        ),
    ),
    case(
        "mutf7-unterminated",
        *bob(
            (
                b"b2 SELECT &Jjo\r\n",
                [b"b2 BAD Invalid mailbox name: unterminated '&' shift in modified UTF-7.\r\n"],
            )
        ),
    ),
    case(
        "mutf7-shifted-ascii",
        *bob(
            (
                b"b2 SELECT &AGE-\r\n",
                [b"b2 BAD Invalid mailbox name: modified UTF-7 shift encodes printable ASCII.\r\n"],
            )
        ),
    ),
    case(
        "mutf7-adjacent-shifts",
        *bob(
            (
                b"b2 SELECT &AOk-&AOk-\r\n",
                [b"b2 BAD Invalid mailbox name: two adjacent shifted runs in modified UTF-7.\r\n"],
            )
        ),
    ),
    case(
        "mutf7-stray-bits",
        *bob(
            (
                b"b2 SELECT &AOl-\r\n",
                [b"b2 BAD Invalid mailbox name: modified UTF-7 shift has stray bits.\r\n"],
            )
        ),
    ),
    case(
        "mutf7-odd-octets",
        *bob(
            (
                b"b2 SELECT &AOkA-\r\n",
                [
                    b"b2 BAD Invalid mailbox name: "
                    b"modified UTF-7 shift is not whole UTF-16 units.\r\n"
                ],
            )
        ),
    ),
    case(
        "mutf7-lone-surrogate",
        *bob(
            (
                b"b2 SELECT &2D0-\r\n",
                [b"b2 BAD Invalid mailbox name: modified UTF-7 shift is not valid UTF-16.\r\n"],
            )
        ),
    ),
    case(
        "mutf7-slash-in-shift",
        *bob(
            (
                b'b2 RENAME INBOX "&AO/k-"\r\n',
                [b"b2 BAD Invalid new mailbox name: '/' or '=' inside a modified UTF-7 shift.\r\n"],
            )
        ),
    ),
    case(
        "8bit-mailbox",
        *bob((b"b2 SELECT caf\xc3\xa9\r\n", [b"b2 BAD 8-bit character in mailbox name.\r\n"])),
    ),
    case(
        "8bit-mailbox-literal",
        *bob(
            (
                b"b2 SELECT {5+}\r\ncaf\xc3\xa9\r\n",
                [b"b2 BAD 8-bit characters in mailbox name; use modified UTF-7.\r\n"],
            )
        ),
    ),
    case(
        "sasl-ir-invalid-base64",
        (
            b"a1 AUTHENTICATE PLAIN !!!notbase64\r\n",
            [b"a1 BAD Invalid base64 in initial response.\r\n"],
        ),
    ),
    case(
        "sasl-ir-unpadded-base64",
        (
            b"a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA\r\n",
            [b"a1 BAD Invalid base64 in initial response.\r\n"],
        ),
    ),
    case(
        "sasl-continuation-invalid-base64",
        (b"a1 AUTHENTICATE PLAIN\r\n", [b"+ \r\n"]),
        (b"!!!\r\n", [b"a1 BAD Invalid base64 in AUTHENTICATE response.\r\n"]),
    ),
    case(
        "sasl-base64-of-garbage",
        (
            b"a1 AUTHENTICATE PLAIN " + b64(b"garbage") + b"\r\n",
            [b"a1 BAD Malformed PLAIN message (RFC 4616).\r\n"],
        ),
    ),
    case(
        "sasl-base64-of-8bit",
        (
            b"a1 AUTHENTICATE PLAIN " + b64(b"\x00al\xffce\x00secret") + b"\r\n",
            [b"a1 BAD PLAIN message is not valid UTF-8.\r\n"],
        ),
    ),
    case(
        "sasl-cancel",
        (b"a1 AUTHENTICATE PLAIN\r\n", [b"+ \r\n"]),
        (b"*\r\n", [b"a1 BAD Authentication cancelled.\r\n"]),
    ),
    case(
        "sasl-unknown-mechanism",
        (
            b"a1 AUTHENTICATE GSSAPI\r\n",
            [b"a1 NO [CANNOT] Unsupported authentication mechanism.\r\n"],
        ),
    ),
    pytest.param(
        case(
            "sasl-response-over-line-limit",
            (b"a1 AUTHENTICATE PLAIN\r\n", [b"+ \r\n"]),
            (b"A" * 10000 + b"\r\n", [b"a1 BAD [TOOBIG] Authentication response too long.\r\n"]),
        ),
    ),
    case("proxy-v1-from-untrusted-peer", (PROXY_V1, [b"PROXY BAD Unknown command TCP4.\r\n"])),
    case("proxy-v2-from-untrusted-peer", (V2_HEADER + b"\r\n", V2_ANSWER)),
    case(
        "proxy-v1-untrusted-on-proxy-listener",
        (PROXY_V1, [b"PROXY BAD Unknown command TCP4.\r\n"]),
        listener="lb",
    ),
    case("proxy-v2-untrusted-on-proxy-listener", (V2_HEADER + b"\r\n", V2_ANSWER), listener="lb"),
    case(
        "proxy-header-does-not-make-a-login-trusted",
        (
            PROXY_V1 + b"a1 LOGIN alice secret\r\n",
            [
                b"PROXY BAD Unknown command TCP4.\r\n",
                b"a1 NO [PRIVACYREQUIRED] Log in over TLS: "
                b"use STARTTLS or the implicit-TLS port first.\r\n",
            ],
        ),
        listener="lb-strict",
    ),
    case(
        "login-literal-refused-before-plus-when-untrusted",
        (
            b"a1 LOGIN {5}\r\n",
            [
                b"a1 NO [PRIVACYREQUIRED] Log in over TLS: "
                b"use STARTTLS or the implicit-TLS port first.\r\n"
            ],
        ),
        listener="lb-strict",
    ),
    case(
        "tls-garbage-on-implicit-port",
        (b"\x16\x03\x01\x00\x05garbage" + bytes(range(256)) * 4, []),
        end="closed",
        listener="imaps",
    ),
    case(
        "imap-in-clear-on-implicit-port",
        (b"a1 LOGIN alice secret\r\n", []),
        end="closed",
        listener="imaps",
    ),
    case("silence-on-implicit-port", end="closed", listener="imaps"),
    case(
        "starttls-unavailable",
        (b"a1 STARTTLS\r\n", [b"a1 NO STARTTLS is not available on this listener.\r\n"]),
    ),
    case(
        "starttls-then-garbage-not-tls",
        (b"a1 STARTTLS\r\n", [b"a1 OK Begin TLS negotiation now.\r\n"]),
        (b"a2 LOGIN alice secret\r\n", []),
        end="closed",
        listener="starttls",
    ),
    case(
        "selected-state-command-unauthenticated",
        (
            b"a1 FETCH 1:* (BODY[])\r\n",
            [b"a1 BAD FETCH needs an authenticated session: log in first.\r\n"],
        ),
    ),
    case(
        "login-after-logout",
        (
            b"a1 LOGOUT\r\na2 LOGIN alice secret\r\n",
            [b"* BYE Logging out.\r\n", b"a1 OK LOGOUT completed.\r\n"],
        ),
        end="closed",
    ),
]


# -- issue 9: what an attack found ----------------------------------------------------------

LOST_SYNC = b"* BYE Cannot resynchronize after a refused non-synchronizing literal.\r\n"
#: What a refused command's non-synchronizing literal carries: a command the
#: door must never run (it would answer with alice's referral).
SMUGGLED = b"a2 LOGIN alice secret\r\n"
NONSYNC_4096 = b"z2 NOOP\r\n" * 455 + b"\n"  # 4096 octets of would-be commands
CANNOT = b" NO [CANNOT] A mailbox name cannot be empty.\r\n"
PRIVACY = b" NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS or the implicit-TLS port first.\r\n"

ISSUE9_CASES = [
    # Finding 2: an empty mailbox name is a policy NO, the session goes on.
    *(
        case(f"empty-mailbox-{name}", *bob((b"b2 " + command + b"\r\n", [b"b2" + answer])))
        for name, command, answer in [
            ("select", b'SELECT ""', CANNOT),
            ("examine", b'EXAMINE ""', CANNOT),
            ("create", b'CREATE ""', CANNOT),
            ("delete", b'DELETE ""', CANNOT),
            ("subscribe", b'SUBSCRIBE ""', CANNOT),
            ("unsubscribe", b'UNSUBSCRIBE ""', CANNOT),
            ("status", b'STATUS "" (MESSAGES)', CANNOT),
            ("append-sync", b'APPEND "" {5}', CANNOT),
            ("append-nonsync", b'APPEND "" {5+}\r\nhello', CANNOT),
            ("rename-from", b'RENAME "" Archive', CANNOT),
            ("rename-to", b'RENAME Archive ""', CANNOT),
            ("rename-both", b'RENAME "" ""', CANNOT),
            ("select-literal", b"SELECT {0+}\r\n", CANNOT),
        ]
    ),
    # Finding 3: a refused command whose {n+} literal is on its way ends the
    # connection; the literal's octets (a LOGIN here) never run.
    case(
        "overlong-line-nonsync-literal-one-read",
        (
            b"a1 LOGIN " + b"x" * 10000 + b" {23+}\r\n" + SMUGGLED,
            [b"a1 BAD [TOOBIG] Command line too long.\r\n", LOST_SYNC],
        ),
        end="closed",
    ),
    case(
        "overlong-line-nonsync-literal-1mib",
        (
            b"a1 LOGIN " + b"x" * MIB + b" {23+}\r\n" + SMUGGLED,
            [b"a1 BAD [TOOBIG] Command line too long.\r\n", LOST_SYNC],
        ),
        end="closed",
    ),
    case(
        "overlong-line-nonsync-literal-announcement-split",
        # 200,000 leading zeros: the "{" and the "23+}" arrive in different reads.
        (
            b"a1 LOGIN " + b"x" * 9000 + b" {" + b"0" * 200_000 + b"23+}\r\n" + SMUGGLED,
            [b"a1 BAD [TOOBIG] Command line too long.\r\n", LOST_SYNC],
        ),
        end="closed",
    ),
    case(
        "command-too-long-nonsync-literal",
        (
            b"a1 LOGIN {4096+}\r\n" + (NONSYNC_4096 + b" {4096+}\r\n") * 64 + NONSYNC_4096,
            [b"a1 BAD [TOOBIG] Command too long.\r\n", LOST_SYNC],
        ),
        end="closed",
    ),
    case(
        "unknown-command-nonsync-literal",
        (b"a1 FROB {23+}\r\n" + SMUGGLED, [b"a1 BAD Unknown command FROB.\r\n", LOST_SYNC]),
        end="closed",
    ),
    case(
        "overlong-line-sync-literal-resynchronises",
        (
            b"a1 LOGIN " + b"x" * MIB + b" {23}\r\n",
            [b"a1 BAD [TOOBIG] Command line too long.\r\n"],
        ),
    ),
    # Finding 4: no "+" for a literal that would carry credentials in clear.
    case(
        "authenticate-literal-refused-before-plus-when-untrusted",
        (b"a1 AUTHENTICATE PLAIN {20}\r\n", [b"a1" + PRIVACY]),
        listener="lb-strict",
    ),
    case(
        "authenticate-mechanism-literal-refused-before-plus-when-untrusted",
        (b"a1 AUTHENTICATE {5}\r\n", [b"a1" + PRIVACY]),
        listener="lb-strict",
    ),
]
CASES += ISSUE9_CASES


@dataclasses.dataclass
class Doors:
    ports: dict[str, int]
    door: DoorState
    client_context: ssl.SSLContext


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def doors(
    nursery: trio.Nursery,
    tmp_path: Path,
    ca: trustme.CA,
    demo_config: DaemonConfig,
    demo_service: Service,
) -> Doors:
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    config = dataclasses.replace(
        demo_config,
        listeners=(
            ListenerConfig("imap", "127.0.0.1", 0, "none"),
            ListenerConfig("imaps", "127.0.0.1", 0, "implicit"),
            ListenerConfig("starttls", "127.0.0.1", 0, "starttls"),
            ListenerConfig("lb", "127.0.0.1", 0, "none", proxy_protocol=True),
        ),
        # The balancers are elsewhere: a PROXY header from loopback is untrusted.
        proxy_networks=(ipaddress.ip_network("192.0.2.0/24"),),
    )
    service = dataclasses.replace(
        demo_service,
        tls_context=make_tls_context(str(tmp_path / "server.pem"), str(tmp_path / "server.pem")),
        policy=dataclasses.replace(demo_service.policy, auth_failure_delay_s=0.01),
        limits=dataclasses.replace(
            demo_service.limits,
            preauth_idle_timeout_s=PREAUTH_IDLE_S,
            tls_handshake_timeout_s=1.0,
            max_connections_per_address=1000,
        ),
    )
    door = DoorState()
    bound = await nursery.start(
        lambda task_status: serve(config, ServiceRef(service), door=door, task_status=task_status)
    )
    ports = {b.config.name: b.port for b in bound}
    # A door that trusts 203.0.113.0/24 for plaintext logins, not loopback: a
    # PROXY header from loopback claiming 203.0.113.7 must not make it trusted.
    strict = dataclasses.replace(
        service,
        policy=dataclasses.replace(
            service.policy, trusted_networks=(ipaddress.ip_network("203.0.113.0/24"),)
        ),
    )
    config2 = dataclasses.replace(
        config,
        listeners=(ListenerConfig("lb-strict", "127.0.0.1", 0, "none", proxy_protocol=True),),
    )
    bound2 = await nursery.start(
        lambda task_status: serve(config2, ServiceRef(strict), task_status=task_status)
    )
    ports["lb-strict"] = bound2[0].port
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return Doors(ports, door, ctx)


async def play(doors: Doors, c: Case) -> None:
    client = await LineClient.connect(doors.ports[c.listener])
    try:
        if c.listener != "imaps":
            assert (await client.line()).startswith(GREETING_CAPS)
        for n, (send, expected) in enumerate(c.script):
            async with trio.open_nursery() as nursery:
                # Big payloads are sent while the answers are read.
                nursery.start_soon(send_ignoring_resets, client, send)
                got = [await client.line() for _ in expected]
            assert got == list(expected), f"{c.name} step {n}"
        if c.end == "alive":
            await client.send(b"z NOOP\r\n")
            assert await client.line() == NOOP_OK, c.name
        elif c.end == "idle":
            with trio.fail_after(PREAUTH_IDLE_S + 5):
                assert await client.line() == IDLE_BYE, c.name
                assert await client.rest() == b"", c.name
        elif c.end == "closed":
            assert await client.rest(timeout=5) == b"", c.name
        else:
            assert c.end == "hangup"
    finally:
        await client.aclose()


async def send_ignoring_resets(client: LineClient, data: bytes) -> None:
    # The door may close before it has read everything (BYE after 10 bad
    # lines): the rest of a big payload then meets a reset, which is fine.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await client.send(data)


def case_ids(cases: list[object]) -> Iterator[str]:
    for c in cases:
        yield (c.values[0] if hasattr(c, "values") else c).name  # type: ignore[union-attr, attr-defined]


@pytest.mark.parametrize("c", CASES, ids=list(case_ids(CASES)))
async def test_hostile_case(doors: Doors, c: Case) -> None:
    prober = LoginProber(doors.ports["imap"], pause_s=0.01)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prober.run, stop)
        with trio.fail_after(30):
            await play(doors, c)
        stop.set()
    prober.check(at_least=1, max_latency_s=5.0)


async def test_everything_at_once(doors: Doors) -> None:
    """The whole corpus, five times over, concurrently; the prober still gets its referrals."""
    good = [c for c in CASES if isinstance(c, Case)]
    prober = LoginProber(doors.ports["imap"])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prober.run, stop)
        with trio.fail_after(60):
            async with trio.open_nursery() as attack:
                for _ in range(5):
                    for c in good:
                        attack.start_soon(play, doors, c)
        stop.set()
    prober.check(at_least=5, max_latency_s=10.0)
    registry = doors.door.metrics.registry
    with trio.fail_after(10):  # every session is closed, none leaked
        while registry.get_sample_value("refd_connections_active", {"listener": "imap"}):
            await trio.sleep(0.05)


async def test_starttls_injection_while_others_are_served(doors: Doors) -> None:
    """CVE-2011-0411 style: what is pipelined after STARTTLS in clear never runs."""
    prober = LoginProber(doors.ports["imap"], pause_s=0.01)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prober.run, stop)
        with trio.fail_after(30):
            for injected in (
                b"b LOGIN alice secret\r\nc LOGOUT\r\n",
                b"b AUTHENTICATE PLAIN " + b64(b"\x00alice\x00secret") + b"\r\n",
                b"\x16\x03\x01\x00\x05hello",  # a fake TLS record in clear
            ):
                client = await LineClient.connect(doors.ports["starttls"])
                assert (await client.line()).startswith(GREETING_CAPS)
                await client.send(b"a STARTTLS\r\n" + injected)
                assert await client.line() == b"a OK Begin TLS negotiation now.\r\n"
                assert client.buf == b""  # nothing else was answered in clear
                tls = trio.SSLStream(
                    client.stream, doors.client_context, server_hostname="localhost"
                )
                await tls.do_handshake()
                over_tls = LineClient(tls)
                await over_tls.send(b"d NOOP\r\n")
                # The first answer over TLS is to "d": "b" and "c" were dropped.
                assert await over_tls.line() == b"d OK NOOP completed.\r\n"
                await over_tls.send(b"e LOGIN alice secret\r\n")
                assert await over_tls.line() == (
                    b"e NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
                    b"Your mail is on mail1.example.org; connect there.\r\n"
                )
                await over_tls.aclose()
        stop.set()
    prober.check()


async def test_overlong_sasl_response_ends_authenticate(door: object) -> None:
    sp = " "
    await door.transcript(  # type: ignore[attr-defined]
        f"""
        S: {GREETING_CAPS.decode()}] localhost refd IMAP referral service ready.
        C: a1 AUTHENTICATE PLAIN
        S: +{sp}
        C: {"A" * 10000}
        S: a1 BAD [TOOBIG] Authentication response too long.
        C: b1 NOOP
        S: b1 OK NOOP completed.
        C: b2 LOGOUT
        S: * BYE Logging out.
        S: b2 OK LOGOUT completed.
        S: <closed>
        """
    )


async def test_list_pattern_cannot_stall_the_door(tmp_path: Path) -> None:
    # A subprocess: the stalled door is killed at the end, not waited for.
    with RefdProcess(tmp_path) as refd:
        bob_client = await LineClient.connect(refd.port)
        other = await LineClient.connect(refd.port)
        try:
            await bob_client.line()
            await other.line()
            await bob_client.send(b"b1 LOGIN bob secret\r\n")
            assert await bob_client.lines(2) == BOB_LOGIN
            await bob_client.send(b'b2 RLIST "" "' + b"*" * 24 + b'x"\r\n')
            await trio.sleep(0.2)
            # Everybody else must still be served promptly.
            with trio.move_on_after(3) as waited:
                await other.send(b"a1 LOGIN alice secret\r\n")
                answer = await other.line()
            assert not waited.cancelled_caught, "a login waited 3 s behind one RLIST"
            assert answer == ALICE_REFERRAL
            assert await bob_client.line() == b"b2 OK LIST completed.\r\n"
        finally:
            await bob_client.aclose()
            await other.aclose()


async def answer_to(service: Service, data: bytes) -> list[bytes]:
    """What the per-connection loop answers to ``data`` then LOGOUT (memory streams)."""
    client, server = trio.testing.memory_stream_pair()
    out = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            handle_connection, server, ClientInfo("t-1", "127.0.0.1"), ServiceRef(service)
        )
        await client.send_all(data + b"zz LOGOUT\r\n")
        with trio.fail_after(10):
            while chunk := await client.receive_some(65536):
                out += chunk
    return out.split(b"\r\n")[1:-3]


@pytest.mark.parametrize(
    "command",
    [
        b'a1 ID ("' + b"f" * 31 + b'" NIL)\r\n',
        b'a1 ID ("name" {1025+}\r\n' + b"v" * 1025 + b")\r\n",
        b"a1 ID (" + b'"f" NIL ' * 30 + b'"f" NIL)\r\n',
    ],
    ids=["long-field", "long-value", "31-pairs"],
)
async def test_response_text_is_7bit(demo_service: Service, command: bytes) -> None:
    [answer] = await answer_to(demo_service, command)
    assert answer.startswith(b"a1 BAD ")
    assert answer.isascii(), answer
