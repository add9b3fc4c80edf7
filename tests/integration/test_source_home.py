"""A home server named by the authentication source, end to end through a session.

A directory's ``mailHost`` or an auth service's ``Auth-Server`` becomes an
`AuthResult.home`; the session routes it through the table in service
(`RoutingTable.route_user`).  Transcripts over memory streams, mock clock;
the source is the demo passwd-file with a home added to its successes.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
from trio.testing import MockClock

from refd.auth.base import AuthRequest, AuthResult, AuthSource, AuthStatus, DirectoryOp
from refd.routing.model import Home
from refd.runtime import Service
from tests.conftest import make_door

CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
GREETING = f"S: * OK [CAPABILITY {CAPS}] localhost refd IMAP referral service ready."


@dataclasses.dataclass
class Homing:
    """The demo source, naming ``home`` for every user it accepts."""

    inner: AuthSource
    home: Home

    @property
    def name(self) -> str:
        return self.inner.name

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        result = await self.inner.authenticate(request)
        ops = (DirectoryOp("search", "ok", 0.002), DirectoryOp("bind", result.status.value, 0.2))
        if result.status is AuthStatus.SUCCESS:
            return dataclasses.replace(result, home=self.home, ops=ops)
        return dataclasses.replace(result, ops=ops)


def homed(service: Service, home: Home) -> Service:
    return dataclasses.replace(service, auth=Homing(service.auth, home))


async def test_the_source_home_is_the_login_referral(
    demo_service: Service, clock: MockClock
) -> None:
    # carol's rule says "login: stay" on mail2; the directory says shared1.
    door = make_door(homed(demo_service, Home("shared1.example.org", "ldap uid=carol")))
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN carol secret
        S: a1 NO [REFERRAL imap://carol;AUTH=*@shared1.example.org/ imap://carol;AUTH=*@shared2.example.org/] Your mail is on shared1.example.org or shared2.example.org; connect there.
    """)  # noqa: E501


async def test_after_the_rules_the_rules_decide(demo_service: Service, clock: MockClock) -> None:
    door = make_door(homed(demo_service, Home("shared1", "ldap uid=carol", first=False)))
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN carol secret
        S: a1 OK [CAPABILITY {CAPS}] Logged in. Your mail is on mail2.example.org.
        C: a2 SELECT INBOX
        S: a2 NO [REFERRAL imap://carol;AUTH=*@mail2.example.org:10143/INBOX] Remote mailbox. Try mail2.example.org.
    """)  # noqa: E501


async def test_a_home_the_table_lacks_is_unavailable_and_logged(
    demo_service: Service, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    door = make_door(homed(demo_service, Home("mail9.example.org", "ldap uid=alice")))
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice secret
        S: a1 NO [UNAVAILABLE] No mail server is configured for this account.
    """)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("no route")]
    assert lines == [
        "no route conn=t-1 user=alice reason=ldap uid=alice names 'mail9.example.org': "
        "no server of the table"
    ]
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("no route")] == [
        "ERROR"
    ]


async def test_the_source_requests_are_counted(demo_service: Service, clock: MockClock) -> None:
    door = make_door(homed(demo_service, Home("mail1", "ldap uid=alice")))
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a2 LOGIN alice secret
        S: a2 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] Your mail is on mail1.example.org; connect there.
    """)  # noqa: E501
    registry = door.door.metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"source": "passwd-file", **labels})

    assert value("refd_directory_requests_total", operation="search", result="ok") == 2
    assert value("refd_directory_requests_total", operation="bind", result="success") == 1
    assert value("refd_directory_requests_total", operation="bind", result="failure") == 1
    assert value("refd_directory_request_duration_seconds_count", operation="bind") == 2
    assert value("refd_directory_request_duration_seconds_sum", operation="bind") == 0.4
