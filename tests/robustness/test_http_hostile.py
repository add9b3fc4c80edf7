"""Hostile input to the public HTTP side: each case gets its 4xx, the door serves on.

The HTTP side runs in-process (``serve_autodiscovery``) on a plain and an
implicit-TLS listener with short timeouts.  Each case sends its bytes
(numbers in a script are pauses, in seconds), checks the one answer it
gets (status, body and ``Connection: close`` where the connection must
end), how the connection ends, and then that a good request on a fresh
connection is still answered.  Limit hits are read from the metrics and
the ``limit hit`` log line.  ``test_everything_at_once`` runs the corpus
concurrently, with good requests alongside.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from refd.config.loader import DaemonConfig, ListenerConfig, make_tls_context
from refd.runtime import Service
from tests.conftest import hits
from tests.robustness.helpers import (
    HttpClient,
    HttpDoor,
    get,
    http_request,
    post,
    start_http_door,
)

GOOD = get("/mail/config-v1.1.xml?emailaddress=bob@example.org")
REQUEST_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 1.5

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Autodiscover [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
<Request><EMailAddress>&xxe;</EMailAddress></Request></Autodiscover>"""
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n<Autodiscover><Request><EMailAddress>&lol9;</EMailAddress></Request></Autodiscover>"
)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    #: bytes to send, and pauses (seconds) between them
    script: tuple[bytes | float, ...]
    #: the answer's status (None: no answer at all) and body (None: not checked)
    status: int | None
    body: bytes | None = None
    #: "closed": the door closes after the answer; "alive": the connection serves GOOD next
    end: str = "closed"
    listener: str = "http"
    #: the limit counted (refd_limit_hits_total), if one
    limit: str | None = None


def bad_address(query: str, reason: bytes) -> Case:
    return Case(
        f"emailaddress {query[:30]}",
        (get(f"/mail/config-v1.1.xml?emailaddress={query}"),),
        400,
        b"bad emailaddress: " + reason + b"\n",
        end="alive",
    )


CASES = [
    Case(
        "oversized header",
        (b"GET / HTTP/1.1\r\nHost: example.org\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",),
        431,
        b"request header fields too large\n",
        limit="http_header_size",
    ),
    Case(
        "oversized request line",
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: example.org\r\n\r\n",),
        431,
        b"request header fields too large\n",
        limit="http_header_size",
    ),
    Case(
        "slowloris headers",
        (b"GET / HTTP/1.1\r\nHost: example.org\r\n", *(0.3, b"X-A: b\r\n") * 6),
        408,
        b"request not complete in time\n",
        limit="http_request_timeout",
    ),
    Case(
        "slowloris body",
        (
            post("/autodiscover/autodiscover.xml", b"")[:-2].replace(
                b"Content-Length: 0", b"Content-Length: 500"
            )
            + b"\r\n"
            + b"<Autodiscover>",
            0.5,
            b"<Request>",
        ),
        408,
        b"request not complete in time\n",
        limit="http_request_timeout",
    ),
    Case("silent client", (2.0,), None, limit="http_idle_timeout"),
    Case(
        "XXE body",
        (post("/autodiscover/autodiscover.xml", XXE),),
        400,
        b"bad Autodiscover request: document type declarations are refused\n",
        end="alive",
    ),
    Case(
        "billion laughs",
        (post("/autodiscover/autodiscover.xml", LAUGHS),),
        400,
        b"bad Autodiscover request: document type declarations are refused\n",
        end="alive",
    ),
    Case(
        "not XML",
        (post("/autodiscover/autodiscover.xml", b"\x00\xff<<<"),),
        400,
        None,
        end="alive",
    ),
    Case(
        "bad Host",
        (get("/mail/config-v1.1.xml", "evil.example"),),
        421,
        b"this server does not serve that host\n",
        end="alive",
    ),
    Case(
        "Host with a path",
        (get("/mail/config-v1.1.xml", "example.org/x"),),
        400,
        b"the Host header is not a host name\n",
        end="alive",
    ),
    Case(
        "two Host headers",
        (b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: example.org\r\nHost: evil\r\n\r\n",),
        400,
        None,
    ),
    Case("no Host (HTTP/1.1)", (b"GET /mail/config-v1.1.xml HTTP/1.1\r\n\r\n",), 400, None),
    bad_address("alice%0D%0A@example.org", b"control character in the address"),
    bad_address("alice%00@example.org", b"control character in the address"),
    bad_address("a" * 2048 + "@example.org", b"address longer than 254 octets"),
    # 10 KB is over the head cap (max_header_bytes, 8192 by default): 431.
    Case(
        "emailaddress 10 KB",
        (get("/mail/config-v1.1.xml?emailaddress=" + "a" * 10240 + "@example.org"),),
        431,
        b"request header fields too large\n",
        limit="http_header_size",
    ),
    bad_address("%FF@example.org", b"emailaddress is not UTF-8"),
    bad_address(
        "alice@example.org&emailaddress=bob@example.org", b"emailaddress is given more than once"
    ),
    bad_address("alice@example.org" + "&x=1" * 20, b"too many query parameters"),
    Case(
        "over-size body",
        (
            post("/autodiscover/autodiscover.xml", b"")[:-4].replace(
                b"Content-Length: 0", b"Content-Length: 1000000"
            )
            + b"\r\n\r\n",
        ),
        413,
        b"request body too large\n",
        limit="http_body_size",
    ),
    Case(
        "over-size chunked body",
        (
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: example.org\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"4000\r\n"
            + b"x" * 0x4000
            + b"\r\n"
            + b"10\r\n"
            + b"x" * 16
            + b"\r\n0\r\n\r\n",
        ),
        413,
        b"request body too large\n",
        limit="http_body_size",
    ),
    Case("pipelined garbage", (GOOD + b"\x00\x01\x02 garbage\r\n\r\n",), 200, None),
    Case("binary garbage", (bytes(range(256)) * 4,), 400, None),
    Case(
        "HTTP/2 preface",
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",),
        400,
        b"the request target is not a path or URL\n",
    ),
    Case(
        "smuggling: Content-Length and chunked",
        (
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: example.org\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        400,
        b"bad request: both Content-Length and Transfer-Encoding\n",
    ),
    Case("TLS garbage on the TLS port", (GOOD,), None, listener="https"),
]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def door(
    nursery: trio.Nursery,
    tmp_path: Path,
    ca: trustme.CA,
    demo_config: DaemonConfig,
    demo_service: Service,
) -> HttpDoor:
    pem = tmp_path / "server.pem"
    ca.issue_cert("example.org").private_key_and_cert_chain_pem.write_to_path(str(pem))
    service = dataclasses.replace(
        demo_service,
        tls_context=make_tls_context(str(pem), str(pem)),
        limits=dataclasses.replace(demo_service.limits, tls_handshake_timeout_s=0.5),
    )
    out = await start_http_door(
        nursery,
        demo_config,
        service,
        listeners=(
            ListenerConfig("http", "127.0.0.1", 0),
            ListenerConfig("https", "127.0.0.1", 0, "implicit"),
        ),
        http_limits={
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "idle_timeout_s": IDLE_TIMEOUT_S,
            # test_everything_at_once opens the corpus twice at once, and a
            # prober, from one address: over the default cap of 20.
            "max_connections_per_address": 100,
        },
    )
    out.ca = ca  # type: ignore[attr-defined]
    return out


async def play(door: HttpDoor, case: Case) -> None:
    client = await HttpClient.connect(door.ports[case.listener])
    try:
        for step in case.script:
            if isinstance(step, float):
                await trio.sleep(step)
            else:
                try:
                    await client.send(step)
                except trio.BrokenResourceError:
                    break  # the door answered and closed before the rest was sent
        if case.status is None:
            assert await client.closed(timeout=5), case.name
            return
        reply = await client.reply(timeout=5)
        assert reply.status == case.status, (case.name, reply)
        if case.body is not None:
            assert reply.body == case.body, (case.name, reply.body)
        assert b"Traceback" not in reply.body
        if case.end == "closed":
            if case.status != 200:
                assert reply.header(b"connection") == b"close", case.name
                assert await client.closed(timeout=5), case.name
        else:
            await client.send(GOOD)
            assert (await client.reply(timeout=5)).status == 200, case.name
    finally:
        await client.aclose()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_hostile_case(door: HttpDoor, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(10):
        await play(door, case)
    if case.limit is not None:
        assert hits(door.door, case.limit) == 1
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("limit hit")]
        assert len(lines) == 1 and f" limit={case.limit} reason=" in lines[0], lines
    if case.listener == "https":
        assert (
            door.door.metrics.registry.get_sample_value(
                "refd_tls_handshake_failures_total", {"listener": "https"}
            )
            == 1
        )
    # The daemon still answers a good request, on both listeners.
    reply = await http_request(door.port, GOOD)
    assert reply.status == 200 and b"mail2.example.org" in reply.body
    assert await https_good(door) == 200


async def https_good(door: HttpDoor) -> int:
    ctx = ssl.create_default_context()
    door.ca.configure_trust(ctx)
    ctx.check_hostname = False  # the certificate names example.org; we dial 127.0.0.1
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", door.ports["https"], ssl_context=ctx, https_compatible=True
    )
    client = HttpClient(stream)
    try:
        await client.send(GOOD)
        return (await client.reply()).status
    finally:
        await client.aclose()


async def test_xxe_reads_no_file(door: HttpDoor, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    body = XXE.replace(b"file:///etc/passwd", f"file://{secret}".encode())
    reply = await http_request(door.port, post("/autodiscover/autodiscover.xml", body))
    assert reply.status == 400 and b"TOP-SECRET" not in reply.body


async def test_everything_at_once(door: HttpDoor) -> None:
    """The whole corpus concurrently, twice, while good requests are answered."""
    good: list[int] = []
    stop = trio.Event()

    async def prober() -> None:
        while not stop.is_set():
            good.append((await http_request(door.port, GOOD)).status)
            await trio.sleep(0.02)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(prober)
            async with trio.open_nursery() as attackers:
                for _ in range(2):
                    for case in CASES:
                        attackers.start_soon(play, door, case)
            stop.set()
    assert len(good) >= 5 and set(good) == {200}
