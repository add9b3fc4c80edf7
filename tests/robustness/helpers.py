"""Shared pieces of the robustness tests: line clients, a login prober, refd processes.

``LineClient`` is a trio client over a real socket that reads CRLF lines with
a deadline on every read.  ``LoginProber`` is the "other client" of every
robustness test: a task that logs alice in on fresh connections the whole
time and records each answer and how long it took, so a test can assert
that everybody else was served while it attacked the door.
``RefdProcess`` runs ``refd serve`` as a subprocess on chosen ports (via
``tests.procs.Daemon``) for the tests whose server must own its own file
descriptors, core or fate (it may be hung or killed).  For the public HTTP
side: ``HttpClient`` (one connection, exact responses), ``start_http_door``
(``serve_autodiscovery`` in-process on port 0) and request builders.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from refd.config.loader import DEMO_CONFIG, DaemonConfig, ListenerConfig
from refd.door import DoorState
from refd.runtime import Service, ServiceRef
from tests.procs import Daemon, free_port

ALICE_REFERRAL = (
    b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
    b"Your mail is on mail1.example.org; connect there.\r\n"
)
BOB_LOGIN = [
    b"* CAPABILITY IMAP4rev1 LITERAL- SASL-IR ID NAMESPACE LIST-EXTENDED LOGIN-REFERRALS "
    b"MAILBOX-REFERRALS\r\n",
    b"b1 OK [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/] Logged in. "
    b"Your mailboxes are on mail2.example.org.\r\n",
]
IDLE_BYE = b"* BYE Autologout; idle for too long.\r\n"


class LineClient:
    """One IMAP client connection: send bytes, read CRLF lines, each read bounded."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> LineClient:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
        self.buf += data

    async def line(self, timeout: float = 10) -> bytes:
        """The next line, CRLF included; ``b""`` once the server has closed."""
        with trio.fail_after(timeout):
            while b"\n" not in self.buf and not self.eof:
                await self._fill()
        if b"\n" not in self.buf:
            rest, self.buf = bytes(self.buf), bytearray()
            return rest
        i = self.buf.index(b"\n") + 1
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    async def lines(self, n: int, timeout: float = 10) -> list[bytes]:
        return [await self.line(timeout) for _ in range(n)]

    async def rest(self, timeout: float = 10) -> bytes:
        """Everything until the server closes (fails if it does not within ``timeout``)."""
        with trio.fail_after(timeout):
            while not self.eof:
                await self._fill()
        rest, self.buf = bytes(self.buf), bytearray()
        return rest

    async def aclose(self) -> None:
        with trio.move_on_after(2):
            await self.stream.aclose()


@dataclass
class LoginProber:
    """Logs alice in, one fresh connection after another, until stopped."""

    port: int
    expected: bytes = ALICE_REFERRAL
    answers: list[bytes] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    pause_s: float = 0.0

    async def run(self, stop: trio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            client = await LineClient.connect(self.port)
            try:
                greeting = await client.line()
                assert greeting.startswith(b"* OK "), greeting
                await client.send(b"a1 LOGIN alice secret\r\n")
                self.answers.append(await client.line())
            finally:
                await client.aclose()
            self.latencies.append(time.monotonic() - started)
            if self.pause_s:
                await trio.sleep(self.pause_s)

    def check(self, *, at_least: int = 1, max_latency_s: float = 5.0) -> None:
        """Every login was answered with the referral, promptly."""
        assert len(self.answers) >= at_least, f"only {len(self.answers)} logins served"
        wrong = [a for a in self.answers if a != self.expected]
        assert not wrong, f"{len(wrong)} wrong answers, first: {wrong[0]!r}"
        worst = max(self.latencies)
        assert worst < max_latency_s, f"a login took {worst:.2f} s"


def write_config(
    tmp: Path,
    *,
    imap_port: int = 0,
    metrics_port: int = 0,
    limits: dict[str, object] | None = None,
    extra: str = "",
) -> Path:
    """A daemon config in ``tmp`` from the demo one: loopback, fast failures."""
    for name in ("routing.yaml", "users.passwd"):
        if not (tmp / name).exists():
            shutil.copy(DEMO_CONFIG.parent / name, tmp / name)
    text = DEMO_CONFIG.read_text()
    text = text.replace("port: 1143", f"port: {imap_port}")
    text = text.replace("port: 9143", f"port: {metrics_port}")
    text = text.replace("port: 1180", "port: 0")  # the demo's autodiscovery
    text = text.replace("failure_delay_s: 2", "failure_delay_s: 0.01")
    if limits:
        text += "limits:\n" + "".join(f"  {k}: {v}\n" for k, v in limits.items())
    (tmp / "refd.yaml").write_text(text + extra)
    return tmp / "refd.yaml"


class RefdProcess:
    """``refd serve`` in a subprocess on fixed free ports, ready when it answers."""

    def __init__(
        self,
        tmp: Path,
        *,
        limits: dict[str, object] | None = None,
        extra: str = "",
        log_level: str = "info",
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = write_config(
            tmp, imap_port=self.port, metrics_port=self.metrics_port, limits=limits, extra=extra
        )
        self.daemon = Daemon(["serve", "-c", str(self.config), f"--log-level={log_level}"])
        self.pid = self.daemon.proc.pid

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.daemon.proc.poll() is None, "refd exited at start"
            try:
                with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=2) as s:
                    s.sendall(b"GET /readyz HTTP/1.1\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "refd did not become ready"
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.daemon.proc.poll() is None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        self.daemon.stop()

    def __enter__(self) -> RefdProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_get(
    port: int, path: str, timeout: float = 10, host: str = "localhost"
) -> tuple[int, bytes]:
    """One GET on a fresh connection (``Connection: close``): status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def scrape(port: int) -> bytes:
    """The metrics endpoint's text, fetched from a thread (the door may be in-process)."""
    status, body = await trio.to_thread.run_sync(http_get, port, "/metrics")
    assert status == 200
    return body


def metric(text: bytes, name: str, **labels: str) -> float:
    """One sample from Prometheus text, 0 when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


# -- the public HTTP side (autodiscovery) -------------------------------------------


@dataclass
class HttpReply:
    """One HTTP response as received: status line, headers in order, body."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def without_date(self) -> list[tuple[bytes, bytes]]:
        """The headers bar ``Date`` (its value is the moment), which must be present."""
        assert self.header(b"date") is not None
        return [(k, v) for k, v in self.headers if k.lower() != b"date"]


class HttpClient(LineClient):
    """One HTTP/1.1 connection over a real socket, every read bounded."""

    async def reply(self, *, head: bool = False, timeout: float = 10) -> HttpReply:
        """The next response; ``head``: it answers a HEAD (no body, whatever it says)."""
        status_line = await self.line(timeout)
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        _, code, reason = status_line.rstrip(b"\r\n").split(b" ", 2)
        headers = []
        while (line := await self.line(timeout)) not in (b"\r\n", b""):
            key, _, value = line.rstrip(b"\r\n").partition(b":")
            headers.append((key, value.strip()))
        out = HttpReply(int(code), reason, headers, b"")
        length = int(out.header(b"content-length") or 0)
        if head:
            return out
        with trio.fail_after(timeout):
            while len(self.buf) < length and not self.eof:
                await self._fill()
        out.body, self.buf = bytes(self.buf[:length]), self.buf[length:]
        return out

    async def closed(self, timeout: float = 10) -> bool:
        """True once the server has closed and said nothing more."""
        return await self.rest(timeout) == b""


async def http_request(
    port: int, raw: bytes, *, head: bool = False, timeout: float = 10
) -> HttpReply:
    """Send ``raw`` on a fresh connection; the one response."""
    client = await HttpClient.connect(port)
    try:
        await client.send(raw)
        return await client.reply(head=head, timeout=timeout)
    finally:
        await client.aclose()


def get(target: str, host: str = "autoconfig.example.org", *extra: str) -> bytes:
    """A GET request's bytes."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *extra, "", ""]
    return "\r\n".join(lines).encode()


def post(target: str, body: bytes, host: str = "autodiscover.example.org", *extra: str) -> bytes:
    """A POST request's bytes with ``body``."""
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: text/xml",
        f"Content-Length: {len(body)}",
        *extra,
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header line (RFC 7617)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {token}"


AUTODISCOVER_REQUEST = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/'
    b'requestschema/2006"><Request><EMailAddress>%s</EMailAddress>'
    b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/"
    b"responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"
)


@dataclass
class HttpDoor:
    """The HTTP side in-process on loopback port 0: its listeners, door and service."""

    ports: dict[str, int]
    door: DoorState
    ref: ServiceRef
    config: DaemonConfig

    @property
    def port(self) -> int:
        return self.ports["http"]


async def start_http_door(
    nursery: trio.Nursery,
    config: DaemonConfig,
    service: Service,
    *,
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig("http", "127.0.0.1", 0),),
    policy: dict[str, Any] | None = None,
    http_limits: dict[str, Any] | None = None,
    **autodiscovery: Any,
) -> HttpDoor:
    """``serve_autodiscovery`` on the demo config, with settings changed.

    ``policy``: session policy (auth delays, trusted networks); ``http_limits``:
    ``autodiscovery.limits``; other keywords: the autodiscovery policy.
    """
    from refd.autodiscovery.server import serve_autodiscovery

    assert config.autodiscovery is not None
    ad = config.autodiscovery.policy
    ad = dataclasses.replace(
        ad, limits=dataclasses.replace(ad.limits, **(http_limits or {})), **autodiscovery
    )
    config = dataclasses.replace(
        config, autodiscovery=dataclasses.replace(config.autodiscovery, listeners=listeners)
    )
    service = dataclasses.replace(
        service,
        policy=dataclasses.replace(
            service.policy, **{"auth_failure_delay_s": 0.05, **(policy or {})}
        ),
        autodiscovery=ad,
    )
    ref = ServiceRef(service)
    door = DoorState()
    bound = await nursery.start(partial(serve_autodiscovery, config, ref, door=door))
    return HttpDoor({b.config.name: b.port for b in bound}, door, ref, config)
