"""The auth_http source against a real nginx-style auth service on loopback.

The service (tests/auth_http_service.py) answers by nginx's protocol from a
dict of users; time is trio's MockClock (it jumps while everything waits,
sockets included), so timeouts and Auth-Wait cost no real time.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trustme
from trio.testing import MockClock

from refd.auth.auth_http import (
    HEADERS_MAX_BYTES,
    SPEC,
    Answer,
    AuthHttpSource,
    GarbageAnswer,
    escape,
    read_answer,
)
from refd.auth.base import AuthRequest, AuthStatus, DirectoryOp
from refd.config.loader import load_config, load_service
from refd.config.tree import TreeError
from refd.routing.model import Home
from tests.auth_http_service import AuthService

PASSWORD = "open sesame%1"
USERS = {"alice": PASSWORD, "bob": "b0b", "jörg": "pässword"}


def request(user: str = "alice", password: str = PASSWORD, **kw: object) -> AuthRequest:
    return AuthRequest(user=user, password=password, client_address="192.0.2.42", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def service() -> AsyncIterator[AuthService]:
    svc = AuthService(dict(USERS), homes={"alice": ("192.0.2.10", "143")})
    async with trio.open_nursery() as nursery:
        svc.port = await nursery.start(svc.serve)  # type: ignore[attr-defined]
        yield svc
        nursery.cancel_scope.cancel()


def source_for(svc: AuthService, **kw: object) -> AuthHttpSource:
    return AuthHttpSource(f"http://127.0.0.1:{svc.port}/auth", **kw)  # type: ignore[attr-defined, arg-type]


# -- the escaping and the answer, values in and out -------------------------------


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("alice", b"alice"),
        ("open sesame%1", b"open%20sesame%251"),
        ("tab\there\r\n", b"tab%09here%0D%0A"),
        ("nul\x00", b"nul%00"),
        ("+=&?:/@#", b"+=&?:/@#"),  # nginx leaves these alone
        ("pässword", "pässword".encode()),  # bytes >= 0x80 as they are
        ("del\x7f", b"del%7F"),  # DEL: no HTTP field value carries it
    ],
)
def test_user_and_password_are_escaped_as_nginx_escapes_them(text: str, wire: bytes) -> None:
    assert escape(text) == wire


@pytest.mark.parametrize(
    ("headers", "answer"),
    [
        ([(b"Auth-Status", b"OK")], Answer("OK")),
        (
            [(b"auth-status", b"OK"), (b"AUTH-SERVER", b"192.0.2.10"), (b"Auth-Port", b"143")],
            Answer("OK", server="192.0.2.10", port=143),
        ),
        (
            [(b"Auth-Status", b"OK"), (b"Auth-Server", b"2001:db8::1"), (b"Auth-Port", b"993")],
            Answer("OK", server="2001:db8::1", port=993),
        ),
        ([(b"Auth-Status", b"OK"), (b"Auth-Server", b"mail1")], Answer("OK", server="mail1")),
        ([(b"Auth-Status", b"OK"), (b"Auth-User", b"alice@x")], Answer("OK", user="alice@x")),
        (
            [(b"Auth-Status", b"Invalid login or password"), (b"Auth-Wait", b"3")],
            Answer("Invalid login or password", wait_s=3),
        ),
        ([(b"Auth-Status", b"No"), (b"Auth-Wait", b"soon")], Answer("No")),  # ignored, as nginx
        ([(b"Auth-Status", b"WAIT"), (b"Auth-Wait", b"1")], Answer("WAIT", wait_s=1)),
        # a refusal anywhere wins, as in nginx
        ([(b"Auth-Status", b"Locked"), (b"Auth-Status", b"OK")], Answer("Locked")),
    ],
)
def test_the_answer_is_read_as_nginx_reads_it(
    headers: list[tuple[bytes, bytes]], answer: Answer
) -> None:
    assert read_answer(headers) == answer


def test_the_home_is_server_colon_port_with_ipv6_in_brackets() -> None:
    assert Answer("OK", server="192.0.2.10", port=143).home_value == "192.0.2.10:143"
    assert Answer("OK", server="2001:db8::1", port=993).home_value == "[2001:db8::1]:993"
    assert Answer("OK", server="mail1").home_value == "mail1"
    assert Answer("OK").home_value is None


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([(b"Content-Length", b"0")], "no Auth-Status header"),
        ([(b"Auth-Status", b"OK"), (b"Auth-Server", b"a"), (b"Auth-Port", b"x")], "is not a port"),
        ([(b"Auth-Status", b"OK"), (b"Auth-Server", b"a"), (b"Auth-Port", b"0")], "is not a port"),
        ([(b"Auth-Status", b"OK"), (b"Auth-Port", b"143")], "Auth-Port without Auth-Server"),
        ([(b"Auth-Status", b"OK"), (b"Auth-User", b"")], "empty Auth-User"),
        ([(b"Auth-Status", b"OK"), (b"Auth-User", b"\xff")], "Auth-User is not UTF-8"),
    ],
)
def test_answers_refd_cannot_act_on(headers: list[tuple[bytes, bytes]], why: str) -> None:
    with pytest.raises(GarbageAnswer, match=why):
        read_answer(headers)


# -- against the service ---------------------------------------------------------------


async def test_success_names_the_home_from_auth_server_and_port(
    service: AuthService, clock: MockClock
) -> None:
    source = source_for(service)
    result = await source.authenticate(request())
    assert result.status is AuthStatus.SUCCESS
    assert result.user == "alice"
    assert result.home == Home("192.0.2.10:143", f"auth_http {source.url}")
    assert result.reason == "service accepted credentials, Auth-Server 192.0.2.10:143"
    assert result.ops == (DirectoryOp("http", "ok", 0.0),)


async def test_the_request_is_what_nginx_sends(service: AuthService, clock: MockClock) -> None:
    source = source_for(service, headers=(("X-Auth-Key", "secret_string"),))
    await source.authenticate(request(attempt=2, tls=True))
    await source.authenticate(request("jörg", "pässword"))
    first, second = service.seen
    assert first.raw == (
        b"GET /auth HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Auth-Method: plain\r\n"
        b"Auth-User: alice\r\n"
        b"Auth-Pass: open%%20sesame%%251\r\n"
        b"Auth-Protocol: imap\r\n"
        b"Auth-Login-Attempt: 2\r\n"
        b"Client-IP: 192.0.2.42\r\n"
        b"Auth-SSL: on\r\n"
        b"X-Auth-Key: secret_string\r\n"
        b"Connection: close\r\n"
        b"\r\n" % service.port  # type: ignore[attr-defined]
    )
    assert second.header(b"Auth-User") == "jörg".encode()
    assert second.header(b"Auth-Pass") == "pässword".encode()
    assert second.header(b"Auth-Login-Attempt") == b"1"
    assert second.header(b"Auth-SSL") is None


async def test_success_without_auth_server_leaves_routing_to_the_table(
    service: AuthService, clock: MockClock
) -> None:
    result = await source_for(service).authenticate(request("bob", "b0b"))
    assert (result.status, result.home, result.reason) == (
        AuthStatus.SUCCESS,
        None,
        "service accepted credentials",
    )


async def test_auth_user_in_the_answer_replaces_the_login_name(
    service: AuthService, clock: MockClock
) -> None:
    service.ok_headers = [("Auth-User", "bob@example.org")]
    result = await source_for(service).authenticate(request("bob", "b0b"))
    assert result.status is AuthStatus.SUCCESS
    assert result.user == "bob@example.org"
    assert result.reason == "service accepted credentials, Auth-User 'bob@example.org' for 'bob'"


async def test_a_refusal_is_a_failure_with_the_status_text_and_auth_wait(
    service: AuthService, clock: MockClock
) -> None:
    service.wait_on_failure = "7"
    result = await source_for(service).authenticate(request(password="wrong"))
    assert result.status is AuthStatus.FAILURE
    assert result.reason == "service refused: Auth-Status 'Invalid login or password', Auth-Wait 7"
    assert result.wait_s == 7.0
    assert result.home is None
    assert result.ops == (DirectoryOp("http", "failure", 0.0),)


async def test_wait_asks_again_after_auth_wait(service: AuthService, clock: MockClock) -> None:
    service.first = [b"HTTP/1.0 200 OK\r\nAuth-Status: WAIT\r\nAuth-Wait: 2\r\n\r\n"]
    started = trio.current_time()
    result = await source_for(service).authenticate(request())
    assert result.status is AuthStatus.SUCCESS
    assert trio.current_time() - started == pytest.approx(2, abs=0.5)
    assert len(service.seen) == 2
    assert [op.result for op in result.ops] == ["ok", "ok"]


async def test_wait_past_the_deadline_is_unavailable(
    service: AuthService, clock: MockClock
) -> None:
    service.raw = b"HTTP/1.0 200 OK\r\nAuth-Status: WAIT\r\nAuth-Wait: 30\r\n\r\n"
    result = await source_for(service, timeout_s=5).authenticate(request())
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason.endswith("Auth-Status WAIT, Auth-Wait 30: past the 5 s deadline")


async def test_a_slow_service_is_unavailable_within_the_timeout(
    service: AuthService, clock: MockClock
) -> None:
    service.delay_s = 60
    source = source_for(service, timeout_s=3)
    started = trio.current_time()
    result = await source.authenticate(request())
    elapsed = trio.current_time() - started
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason == f"{source.url}: no answer: timed out after 3 s"
    assert 3 <= elapsed < 3.5
    assert [(op.operation, op.result) for op in result.ops] == [("http", "timeout")]


GARBAGE = {
    "not HTTP": (b"220 smtp.example.org ESMTP\r\n\r\n", "not an HTTP answer: illegal status line"),
    "no Auth-Status": (
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "answer not understood: no Auth-Status header",
    ),
    "bad status line": (
        b"HTTP/1.0 OK\r\nAuth-Status: OK\r\n\r\n",
        "not an HTTP answer: illegal status line",
    ),
    "non-numeric Auth-Port": (
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 192.0.2.10\r\nAuth-Port: imap\r\n\r\n",
        "answer not understood: Auth-Port 'imap' is not a port",
    ),
    "oversized headers": (
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nX-Pad: " + b"a" * HEADERS_MAX_BYTES + b"\r\n\r\n",
        f"answer headers over {HEADERS_MAX_BYTES} bytes",
    ),
    "closed without a word": (b"", "the service closed the connection after 0 bytes"),
    "closed mid-answer": (
        b"HTTP/1.0 200 OK\r\nAuth-Sta",
        "the service closed the connection after 25 bytes, before the answer's headers",
    ),
}


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_garbage_and_closed_connections_are_unavailable(
    service: AuthService, clock: MockClock, case: str
) -> None:
    service.raw, why = GARBAGE[case]
    source = source_for(service)
    result = await source.authenticate(request())
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason.startswith(f"{source.url}: {why}")
    assert [(op.operation, op.result) for op in result.ops] == [("http", "error")]


async def test_a_refused_connection_is_unavailable(clock: MockClock) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nobody listens there now
    source = AuthHttpSource(f"http://127.0.0.1:{port}/auth")
    result = await source.authenticate(request())
    assert result.status is AuthStatus.UNAVAILABLE
    assert result.reason == f"{source.url}: connect: connection refused"
    assert [op.result for op in result.ops] == ["error"]


async def test_concurrency_is_bounded(service: AuthService, clock: MockClock) -> None:
    service.delay_s = 1
    source = source_for(service, max_concurrent=2, connect_timeout_s=10, timeout_s=20)
    results = []

    async def one() -> None:
        results.append(await source.authenticate(request()))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
    assert [r.status for r in results] == [AuthStatus.SUCCESS] * 6
    assert service.max_in_flight == 2


async def test_no_free_slot_within_the_connect_timeout_is_unavailable(
    service: AuthService, clock: MockClock
) -> None:
    service.delay_s = 30
    source = source_for(service, max_concurrent=1, connect_timeout_s=2, timeout_s=60)
    results = []

    async def one() -> None:
        results.append(await source.authenticate(request()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.sleep(0.5)
        nursery.start_soon(one)
    waited = results[0]
    assert waited.status is AuthStatus.UNAVAILABLE
    assert waited.reason.endswith("no free slot within 2 s (1 requests in flight)")
    assert waited.ops == ()
    assert results[1].status is AuthStatus.SUCCESS


async def test_the_password_never_reaches_a_reason_or_a_log_line(
    service: AuthService, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A careless service that echoes what it got, raw and escaped.
    service.raw = b"HTTP/1.0 200 OK\r\nAuth-Status: bad password open%20sesame%251\r\n\r\n"
    result = await source_for(service).authenticate(request())
    assert result.status is AuthStatus.FAILURE
    assert result.reason == "reason withheld: it contained the password"
    service.raw = b"HTTP/1.0 200 OK\r\nAuth-Status: bad password open sesame%1\r\n\r\n"
    result = await source_for(service).authenticate(request())
    assert result.reason == "reason withheld: it contained the password"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "auth source auth_http: user=alice status=failure" in text
    assert PASSWORD not in text and "open%20sesame" not in text


# -- https ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def https_service(
    nursery: trio.Nursery, svc: AuthService, ca: trustme.CA
) -> tuple[int, Callable[[], None]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")
    port = listeners[0].transport_listener.socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, svc.handle, listeners)
    return port, nursery.cancel_scope.cancel


async def test_https_with_the_ca_file_and_without_it(ca: trustme.CA, tmp_path: Path) -> None:
    svc = AuthService(dict(USERS), homes={"alice": ("192.0.2.10", "143")})
    async with trio.open_nursery() as nursery:
        port, stop = await https_service(nursery, svc, ca)
        url = f"https://127.0.0.1:{port}/auth"
        context = ssl.create_default_context()
        ca.configure_trust(context)
        good = await AuthHttpSource(url, ssl_context=context).authenticate(request())
        bad = await AuthHttpSource(url).authenticate(request())  # system CAs only
        stop()
    assert good.status is AuthStatus.SUCCESS
    assert good.home == Home("192.0.2.10:143", f"auth_http {url}")
    assert bad.status is AuthStatus.UNAVAILABLE
    assert bad.reason.startswith(f"{url}: connect: TLS certificate not accepted")
    assert [op.result for op in bad.ops] == ["error"]
    assert svc.seen[0].request_line == b"GET /auth HTTP/1.1"


# -- configuration --------------------------------------------------------------------

ROUTING = """\
version: 1
servers:
  mail1: {host: 192.0.2.10}
users:
  - default: true
    server: mail1
"""


def write_config(tmp_path: Path, auth_http: str) -> Path:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    (tmp_path / "refd.yaml").write_text(
        "routing: routing.yaml\n"
        "auth:\n"
        "  source: auth_http\n"
        "  auth_http:\n"
        + "".join(f"    {line}\n" for line in auth_http.splitlines())
        + "listeners:\n"
        "  - {address: 127.0.0.1, port: 0}\n"
    )
    return tmp_path / "refd.yaml"


def test_a_config_builds_the_source(tmp_path: Path, ca: trustme.CA) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    path = write_config(
        tmp_path,
        "url: https://auth.example.org/mail/auth?v=1\n"
        "headers:\n  X-Auth-Key: s3cret\n  X-Door: refd\n"
        "ca_file: ca.pem\nconnect_timeout_s: 2\ntimeout_s: 4\nmax_concurrent: 3\n"
        "home_first: false",
    )
    source = load_service(load_config(path)).auth
    assert isinstance(source, AuthHttpSource)
    assert (source.name, source.host, source.port, source.target) == (
        "auth_http",
        "auth.example.org",
        443,
        "/mail/auth?v=1",
    )
    assert source.host_header == "auth.example.org"
    assert source.headers == (("X-Auth-Key", "s3cret"), ("X-Door", "refd"))
    assert (source.connect_timeout_s, source.timeout_s, source.limiter.total_tokens) == (2, 4, 3)
    assert source.home_first is False


@pytest.mark.parametrize(
    ("settings", "line", "message"),
    [
        ("url: ftp://x/", 5, "auth.auth_http.url: write http://HOST[:PORT]/PATH or https://..."),
        ("url: http://u:p@x/", 5, "auth.auth_http.url: no user or password in the URL"),
        ("url: http://x:99999/", 5, "auth.auth_http.url: bad port: "),
        ("url: http://x/\nca_file: ca.pem", 6, "auth.auth_http.ca_file: only for an https:// url"),
        ("url: http://x/\nheaders:\n  Auth-Pass: x", 7, "auth.auth_http.headers: refd sends"),
        ("url: http://x/\nheaders:\n  'X A': x", 7, "auth.auth_http.headers: 'X A' is not a"),
        ("url: http://x/\nheaders:\n  X-A: ' x'", 7, "auth.auth_http.headers.X-A: printable"),
        ("url: http://x/\ntimeout_s: 0", 6, "auth.auth_http.timeout_s must be more than 0"),
        (
            "url: http://x/\nurl2: y",
            6,
            'unknown key "url2" in auth.auth_http (known keys: ca_file,',
        ),
        ("headers: {}", 5, 'auth.auth_http needs "url"'),
    ],
)
def test_config_errors_name_the_line(
    tmp_path: Path, settings: str, line: int, message: str
) -> None:
    path = write_config(tmp_path, settings)
    with pytest.raises(TreeError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:{line}: {message}")


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://127.0.0.1:9000/auth", False),
        ("http://[::1]/auth", False),
        ("http://localhost/auth", False),
        ("https://auth.example.org/auth", False),
        ("http://auth.example.org/auth", True),
        ("http://192.0.2.5/auth", True),
    ],
)
def test_passwords_in_clear_beyond_this_host_are_warned_about(
    tmp_path: Path, url: str, warned: bool
) -> None:
    config = load_config(write_config(tmp_path, f"url: {url}"))
    warning = SPEC.warning(config.auth)
    if warned:
        assert warning is not None
        assert warning.startswith("auth_http sends every password in clear to ")
        assert warning.endswith(f"({url}); use https:// or a service on loopback")
    else:
        assert warning is None
