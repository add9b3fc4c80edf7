"""The door with the auth_http source: what the IMAP client gets, the log, the metrics.

The service is the nginx-style one of tests/auth_http_service.py on real
loopback sockets; the door is the per-connection loop driven by RFC-style
transcripts (tests/conftest.py), on trio's MockClock: the transcript's
times are mock seconds since the session began.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from refd.auth.auth_http import AuthHttpSource
from refd.config.loader import load_routing
from refd.runtime import Service
from tests.auth_http_service import AuthService
from tests.conftest import Door, make_door

CAPS = "IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS MAILBOX-REFERRALS"
GREETING = f"S: * OK [CAPABILITY {CAPS}] localhost refd IMAP referral service ready."
PASSWORD = "open sesame"

ROUTING = """\
version: 1
servers:
  mail1: {host: 192.0.2.10}
  mail2: {host: 192.0.2.20, port: 10143}
users:
  - user: bob
    server: mail2
    login: refer
"""


@pytest.fixture
async def service() -> AsyncIterator[AuthService]:
    svc = AuthService(
        {"alice": PASSWORD, "bob": "b0b", "carol": "c"},
        homes={"alice": ("192.0.2.10", "143"), "carol": ("192.0.2.99", "143")},
    )
    async with trio.open_nursery() as nursery:
        svc.port = await nursery.start(svc.serve)  # type: ignore[attr-defined]
        yield svc
        nursery.cancel_scope.cancel()


def door_for(
    demo_service: Service, svc: AuthService, tmp_path: Path, **source: object
) -> tuple[Door, str]:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    url = f"http://127.0.0.1:{svc.port}/auth"  # type: ignore[attr-defined]
    auth = AuthHttpSource(url, **source)  # type: ignore[arg-type]
    table = load_routing(tmp_path / "routing.yaml")
    return make_door(dataclasses.replace(demo_service, table=table, auth=auth)), url


async def test_auth_server_and_port_are_the_login_referral(
    demo_service: Service, service: AuthService, tmp_path: Path, clock: MockClock
) -> None:
    door, _ = door_for(demo_service, service, tmp_path)
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice "{PASSWORD}"
        S: a1 NO [REFERRAL imap://alice;AUTH=*@192.0.2.10/] Your mail is on 192.0.2.10; connect there.
        C: a2 LOGIN alice "{PASSWORD}"
        S: a2 NO [REFERRAL imap://alice;AUTH=*@192.0.2.10/] Your mail is on 192.0.2.10; connect there.
    """)  # noqa: E501
    # the second login is the connection's second attempt
    assert [s.header(b"Auth-Login-Attempt") for s in service.seen] == [b"1", b"2"]
    assert service.seen[0].header(b"Auth-Pass") == b"open%20sesame"
    assert service.seen[0].header(b"Client-IP") == b"127.0.0.1"


async def test_without_auth_server_the_table_routes(
    demo_service: Service, service: AuthService, tmp_path: Path, clock: MockClock
) -> None:
    door, _ = door_for(demo_service, service, tmp_path)
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN bob b0b
        S: a1 NO [REFERRAL imap://bob;AUTH=*@192.0.2.20:10143/] Your mail is on 192.0.2.20; connect there.
    """)  # noqa: E501


async def test_an_auth_server_the_table_lacks_is_unavailable(
    demo_service: Service,
    service: AuthService,
    tmp_path: Path,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    door, url = door_for(demo_service, service, tmp_path)
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN carol c
        S: a1 NO [UNAVAILABLE] No mail server is configured for this account.
    """)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"no route conn=t-1 user=carol reason=auth_http {url} names '192.0.2.99:143': "
        "no server of the table"
    ]


async def test_a_refusal_is_the_usual_failure_after_the_delay(
    demo_service: Service,
    service: AuthService,
    tmp_path: Path,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    door, _ = door_for(demo_service, service, tmp_path)
    times = await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
    """)
    assert times[1] == pytest.approx(2.0, abs=0.3)  # the demo's failure_delay_s
    auth = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth ")]
    assert auth == [
        "auth failed conn=t-1 addr=127.0.0.1 source=auth_http reason=service refused: "
        "Auth-Status 'Invalid login or password' delay=2.000 rule=trusted"
    ]


@pytest.mark.parametrize(
    ("wait", "answered_at", "rule"),
    [("7", 7.0, "auth_wait"), ("60", 15.0, "auth_wait"), ("1", 2.0, "trusted")],
)
async def test_auth_wait_delays_the_failure_up_to_the_maximum(
    demo_service: Service,
    service: AuthService,
    tmp_path: Path,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
    wait: str,
    answered_at: float,
    rule: str,
) -> None:
    caplog.set_level(logging.INFO)
    service.wait_on_failure = wait
    door, _ = door_for(demo_service, service, tmp_path)
    times = await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.
    """)
    assert times[1] == pytest.approx(answered_at, abs=0.3)
    auth = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth ")]
    assert auth[0].endswith(f"delay={answered_at:.3f} rule={rule}")


async def test_a_slow_service_is_unavailable_within_its_timeout(
    demo_service: Service, service: AuthService, tmp_path: Path, clock: MockClock
) -> None:
    service.delay_s = 120
    door, _ = door_for(demo_service, service, tmp_path, timeout_s=4)
    times = await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice "{PASSWORD}"
        S: a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.
    """)
    assert 4 <= times[1] < 4.5


async def test_garbage_is_unavailable_never_a_referral(
    demo_service: Service,
    service: AuthService,
    tmp_path: Path,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service.raw = b"HTTP/1.0 200 OK\r\nAuth-Server: 192.0.2.10\r\nAuth-Port: 143\r\n\r\n"
    door, url = door_for(demo_service, service, tmp_path)
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice "{PASSWORD}"
        S: a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.
    """)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"auth unavailable conn=t-1 source=auth_http reason={url}: answer not understood: "
        "no Auth-Status header"
    ]


async def test_metrics_count_each_request_and_logs_never_hold_the_password(
    demo_service: Service,
    service: AuthService,
    tmp_path: Path,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    door, _ = door_for(demo_service, service, tmp_path)
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice "{PASSWORD}"
        S: a1 NO [REFERRAL imap://alice;AUTH=*@192.0.2.10/] Your mail is on 192.0.2.10; connect there.
        C: a2 LOGIN alice "wrong {PASSWORD}"
        S: a2 NO [AUTHENTICATIONFAILED] Authentication failed.
        C: a3 LOGIN bob b0b
        S: a3 NO [REFERRAL imap://bob;AUTH=*@192.0.2.20:10143/] Your mail is on 192.0.2.20; connect there.
    """)  # noqa: E501
    service.raw = b""  # the service hangs up
    await door.transcript(f"""
        {GREETING}
        C: a1 LOGIN alice "{PASSWORD}"
        S: a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.
    """)
    registry = door.door.metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(
            name, {"source": "auth_http", "operation": "http", **labels}
        )

    assert value("refd_directory_requests_total", result="ok") == 2
    assert value("refd_directory_requests_total", result="failure") == 1
    assert value("refd_directory_requests_total", result="error") == 1
    assert value("refd_directory_requests_total", result="timeout") is None
    assert value("refd_directory_request_duration_seconds_count") == 4
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "source=auth_http" in text
    assert PASSWORD not in text and "open%20sesame" not in text
