"""limits.max_password_bytes: an over-long password fails like a wrong one and is never hashed.

Transcripts over memory streams into the real per-connection loop (mock
clock).  The auth source is the demo passwd-file behind a recorder, so a
test sees exactly which passwords reached it.  The client is a webmail's
user named by ``ID ("x-originating-ip" ...)`` from loopback: plaintext
login is allowed and the throttle applies, as for any remote client.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import logging

import pytest
from trio.testing import MockClock

from refd.auth.base import AuthRequest, AuthResult, AuthSource
from refd.limits import Limits
from refd.runtime import Service
from tests.conftest import hits, make_door

CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
GREETING = f"S: * OK [CAPABILITY {CAPS}] localhost refd IMAP referral service ready."
FORWARDED = """
C: i1 ID ("x-originating-ip" "198.51.100.9")
S: * ID ("name" "refd" "version" "0.1.0")
S: i1 OK ID completed.
"""
CONTINUE = "S: + "  # RFC 3501 §7.5: "+" SP, and no text
FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed."
REFERRAL = (
    "NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
    "Your mail is on mail1.example.org; connect there."
)
LIMIT = Limits().max_password_bytes
LONGEST = "p" * LIMIT
OVER = "p" * (LIMIT + 1)


@dataclasses.dataclass
class Recorder:
    """An AuthSource that keeps every request it is asked about, then asks ``inner``."""

    inner: AuthSource
    requests: list[AuthRequest] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def lengths(self) -> list[int]:
        """The length in bytes of each password asked about."""
        return [len(r.password.encode("utf-8")) for r in self.requests]

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        self.requests.append(request)
        return await self.inner.authenticate(request)


def recorded(service: Service) -> tuple[Service, Recorder]:
    recorder = Recorder(service.auth)
    return dataclasses.replace(service, auth=recorder), recorder


def plain(password: str) -> str:
    return base64.b64encode(b"\0alice\0" + password.encode()).decode()


def test_the_default_keeps_sha_crypt_in_libxcrypt() -> None:
    # libxcrypt refuses 512 bytes and more (CRYPT_MAX_PASSPHRASE_SIZE).
    assert LIMIT == 511


async def test_over_long_password_fails_like_a_wrong_one_unhashed(
    demo_service: Service, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service, recorder = recorded(demo_service)
    door = make_door(service)
    times = await door.transcript(f"""
        {GREETING}
        {FORWARDED}
        C: a1 LOGIN alice wrong
        S: a1 {FAILED}
        C: a2 LOGIN alice "{OVER}"
        S: a2 {FAILED}
        C: a3 LOGIN alice {{{LIMIT + 3}+}}
        C: {OVER}é
        S: a3 {FAILED}
        C: a4 LOGIN alice "{LONGEST}"
        S: a4 {FAILED}
        C: a5 LOGIN alice secret
        S: a5 {REFERRAL}
    """)
    # Counted by the throttle like any failure: 2, 4, 8, 15 s; the success
    # then waits what the address has earned (refd.throttle), 15 s.
    waits = [round(b - a) for a, b in itertools.pairwise(times[2:])]
    assert waits == [2, 4, 8, 15, 15]
    # Only the wrong, the longest allowed and the right password were checked.
    assert recorder.lengths == [5, LIMIT, 6]
    assert hits(door.door, "password_length") == 2
    lines = [r.getMessage() for r in caplog.records if "limit=password_length" in r.getMessage()]
    assert lines == [
        "limit hit conn=t-1 addr=198.51.100.9 limit=password_length "
        f"reason=a password of {LIMIT + 1} bytes; limits.max_password_bytes is {LIMIT}"
    ]
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth failed")]
    assert failures[1] == (
        "auth failed conn=t-1 addr=198.51.100.9 source=passwd-file reason=password too long "
        "delay=4.000 rule=address"
    )
    assert not [r for r in caplog.records if "p" * 64 in r.getMessage()]


async def test_authenticate_plain_initial_response_and_continuation(
    demo_service: Service, clock: MockClock
) -> None:
    service, recorder = recorded(demo_service)
    door = make_door(service)
    await door.transcript(f"""
        {GREETING}
        {FORWARDED}
        C: a1 AUTHENTICATE PLAIN {plain(OVER)}
        S: a1 {FAILED}
        C: a2 AUTHENTICATE PLAIN
        {CONTINUE}
        C: {plain(OVER)}
        S: a2 {FAILED}
        C: a3 AUTHENTICATE PLAIN {plain("secret")}
        S: a3 {REFERRAL}
    """)
    assert recorder.lengths == [6]
    assert hits(door.door, "password_length") == 2


async def test_the_limit_is_a_setting(demo_service: Service, clock: MockClock) -> None:
    service, recorder = recorded(demo_service)
    door = make_door(service, max_password_bytes=6)
    await door.transcript(f"""
        {GREETING}
        {FORWARDED}
        C: a1 LOGIN alice secret7
        S: a1 {FAILED}
        C: a2 LOGIN alice secret
        S: a2 {REFERRAL}
    """)
    assert recorder.lengths == [6]
