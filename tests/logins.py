"""Logins over implicit TLS from a chosen loopback address, and the throttle's log lines.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client can
bind 127.0.1.9 and come from "another network" than 127.0.2.9.  With only
127.0.0.1 trusted, these clients are untrusted, so they log in over TLS and
the throttle counts them, as it would count clients on the internet.

Every login is answered after the throttle's delay, and the door logs
``auth failed|ok conn=... addr=... delay=S rule=R`` first: tests read the
delays there (exact, unlike a wall clock).

Doors: :func:`start_tls_door` serves in this process (one ``DoorState``);
:func:`start_door` runs ``refd serve`` (``workers: N`` included) from a
config written by :func:`write_door_config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trio
import trustme
from prometheus_client.parser import text_string_to_metric_families

from refd.config.loader import DEMO_CONFIG, DaemonConfig, ListenerConfig, make_tls_context
from refd.door import DoorState
from refd.runtime import Service, ServiceRef
from refd.server import serve
from tests.procs import Daemon
from tests.robustness.helpers import http_get

AUTH_LINE = re.compile(
    r"auth (?P<result>failed|ok) conn=(?P<conn>\S+) addr=(?P<addr>\S+) .*"
    r" delay=(?P<delay>[0-9.]+) rule=(?P<rule>\w+)"
)


@dataclass(frozen=True)
class AuthLine:
    result: str  # failed | ok
    conn: str  # the connection id: "<worker pid, hex>-<n>"
    addr: str
    delay: float
    rule: str
    degraded: bool  # "store=unavailable"

    @property
    def pid(self) -> int:
        return int(self.conn.split("-")[0], 16)


def parse_auth(line: str) -> AuthLine | None:
    m = AUTH_LINE.search(line)
    if m is None:
        return None
    return AuthLine(
        m["result"],
        m["conn"],
        m["addr"],
        float(m["delay"]),
        m["rule"],
        "store=unavailable" in line,
    )


def write_cert(ca: trustme.CA, directory: Path) -> Path:
    """A server certificate for 127.0.0.1 and localhost (chain and key in one PEM)."""
    path = directory / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def tls_login(port: int, ctx: ssl.SSLContext, source: str, user: str, password: str) -> bytes:
    """Connect from ``source``, LOGIN, return the tagged answer line."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock, sock.makefile("rb") as f:
        if not f.readline():
            return b"<closed before the greeting>"
        sock.sendall(f"a1 LOGIN {user} {password}\r\n".encode())
        while line := f.readline():
            if line.startswith(b"a1 "):
                return line
        return b"<closed>"


NO = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
ALICE = (
    b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
    b"Your mail is on mail1.example.org; connect there.\r\n"
)
UNAVAILABLE = b"a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.\r\n"


async def start_tls_door(
    nursery: trio.Nursery,
    directory: Path,
    ca: trustme.CA,
    demo_config: DaemonConfig,
    demo_service: Service,
    door: DoorState,
    *,
    base_s: float,
    max_s: float,
) -> int:
    """Serve the demo tables on an implicit-TLS port, only 127.0.0.1 trusted; the port."""
    pem = str(write_cert(ca, directory))
    config = dataclasses.replace(
        demo_config, listeners=(ListenerConfig("imaps", "127.0.0.1", 0, "implicit"),)
    )
    policy = dataclasses.replace(
        demo_service.policy,
        auth_failure_delay_s=base_s,
        auth_failure_delay_max_s=max_s,
        trusted_networks=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    service = dataclasses.replace(
        demo_service, policy=policy, tls_context=make_tls_context(pem, pem)
    )
    bound = await nursery.start(
        lambda task_status: serve(config, ServiceRef(service), door=door, task_status=task_status)
    )
    return int(bound[0].port)


def write_door_config(
    directory: Path,
    ca: trustme.CA,
    *,
    workers: int,
    extra: str = "",
    base_s: float = 0.05,
    max_s: float = 0.4,
) -> Path:
    """A daemon config for ``refd serve``: demo tables, one implicit-TLS listener."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, directory / name)
    write_cert(ca, directory)
    path = directory / "refd.yaml"
    path.write_text(
        f"""\
hostname: localhost
routing: routing.yaml
auth:
  source: passwd-file
  passwd_file: users.passwd
  failure_delay_s: {base_s}
  failure_delay_max_s: {max_s}
listeners:
  - {{name: imaps, address: 127.0.0.1, port: 0, tls: implicit}}
tls: {{cert: server.pem, key: server.pem}}
trusted_networks: [127.0.0.1/32]
metrics: {{address: 127.0.0.1, port: 0}}
workers: {workers}
shutdown_grace_s: 1
log: {{level: debug}}  # the tests read every login's auth line; a plain success is DEBUG
{extra}"""
    )
    return path


@dataclass
class ProcessDoor:
    daemon: Daemon
    port: int
    metrics_port: int
    #: worker pids (the door's own pid with one worker)
    pids: set[int]

    def next_auth(self, addr: str, timeout: float = 20) -> AuthLine:
        """The next ``auth`` log line for ``addr``."""
        while True:
            line = parse_auth(self.daemon.wait_log(f"addr={addr} ", timeout))
            if line is not None:
                return line

    def drain(self, quiet_s: float = 0.5) -> str:
        """Read every log line written so far (until ``quiet_s`` passes without one)."""
        while True:
            try:
                self.daemon.log.append(self.daemon.lines.get(timeout=quiet_s))
            except queue.Empty:
                return "".join(self.daemon.log)

    def stop(self) -> None:
        """SIGTERM, as an operator would (the supervisor stops its workers)."""
        if self.daemon.proc.poll() is None:
            self.daemon.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.proc.wait(timeout=30)
        self.daemon.stop()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = http_get(self.metrics_port, "/metrics")
        assert status == 200
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid")))
                out[key] = out.get(key, 0.0) + s.value
        return out


def start_door(config: Path, workers: int) -> ProcessDoor:
    """``refd serve -c config``; returns once it (and every worker) is ready."""
    daemon = Daemon(["serve", "-c", str(config)])
    try:
        if workers > 1:
            ready = daemon.wait_log(f"supervisor ready workers={workers}", timeout=60)
            port = int(re.search(r"'imaps': (\d+)", ready).group(1))  # type: ignore[union-attr]
        else:
            port = int(re.search(r"port=(\d+)", daemon.wait_log("listening name=imaps")).group(1))  # type: ignore[union-attr]
            daemon.wait_log("refd ready")
        log = "".join(daemon.log)
        metrics_port = int(re.search(r"metrics listening .* port=(\d+)", log).group(1))  # type: ignore[union-attr]
        if workers > 1:
            pids = {int(p) for p in re.findall(r"worker \d started pid=(\d+)", log)}
        else:
            pids = {daemon.proc.pid}
    except BaseException:
        daemon.stop()
        raise
    return ProcessDoor(daemon, port, metrics_port, pids)


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll ``predicate()`` until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
