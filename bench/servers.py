"""The servers under test: a tuned private Dovecot and refd, plus /proc probes.

Both read the *same* passwd-file (Dovecot's format; refd reads the first two
fields and ignores Dovecot's extra fields), so both check the same hashes:

    plain-000000:{PLAIN}secret::::::host=mail1.example.org nologin=y
    sha-000000:{SHA512-CRYPT}$6$...::::::host=mail1.example.org nologin=y
    blf-000000:{BLF-CRYPT}$2b$10$...::::::host=mail1.example.org nologin=y
    mbx-000000:{PLAIN}secret::::::host=mail2.example.org

Dovecot (docs: "Login referrals", passdb extra fields ``host`` and
``nologin``) answers the first three with ``NO [REFERRAL imap://...]`` and
the ``mbx-`` users with ``OK [REFERRAL ...] Logged in, but you should use
this server instead.`` - and then really logs them in (an imap process).
refd routes ``plain-``/``sha-``/``blf-`` through an exact ``user_map`` (login:
refer) and ``mbx-*`` through a glob rule with ``login: accept``; ``Shared/*``
mailboxes go to ``shared1``.

Everything binds 127.0.0.1; every directory is under /tmp with mode 0755 so
Dovecot's unprivileged helpers (dovecot, dovenull) can read it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
#: Where refd is imported from (PYTHONPATH); the harness points it at a
#: snapshot of refd/ taken at the start of the run, so commits landing in
#: the checkout during a 20-minute run cannot mix two versions.
SOURCE = {"path": REPO}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- /proc probes ---------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid ...; comm may hold spaces and ")".
    return text.rpartition(")")[2].split()


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime (+ waited-for children's) of ``pids``, in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
            total += sum(int(x) for x in fields[11:15])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    """Sum of VmRSS over ``pids`` (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        try:
            statm = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(statm[1]) * PAGE
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat, in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port *below* the ephemeral range: ports from bind(0) are the
    same ones client sockets (ours at tens of thousands per second, and other
    jobs') use, and a client's TIME_WAIT there makes a later listen() fail."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_greeting(
    port: int, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(4096).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no greeting on {HOST}:{port} within {timeout_s}s")


def served_certificate(port: int) -> dict[str, str]:
    """What an implicit-TLS port serves, as ``openssl s_client`` (default client
    settings, like the load generator's) and ``openssl x509`` see it: protocol
    and cipher, the server's signature type, its key algorithm and size/curve."""
    hello = subprocess.run(
        ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost"],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    text = hello.stdout.decode(errors="replace")
    out: dict[str, str] = {}
    for line in text.splitlines():
        for prefix, key in (("Peer signature type:", "signature"), ("New, ", "session"),
                            ("Server public key is ", "key_bits")):  # fmt: skip
            if line.startswith(prefix):
                out[key] = line[len(prefix) :].strip()
    pem = text[text.find("-----BEGIN CERTIFICATE-----") : text.find("-----END CERTIFICATE-----")]
    if pem:
        x509 = subprocess.run(
            ["openssl", "x509", "-noout", "-text"],
            input=(pem + "-----END CERTIFICATE-----\n").encode(),
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        for raw in x509.stdout.decode(errors="replace").splitlines():
            line = raw.strip()
            if line.startswith("Public Key Algorithm:"):
                out["key_algorithm"] = line.split(":", 1)[1].strip()
            elif line.startswith(("NIST CURVE:", "Public-Key:")):
                out.setdefault("key", line)
            elif line.startswith("Subject:"):
                out["subject"] = line.split(":", 1)[1].strip()
    return out


def kill_tree(pid: int, proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the leader (refd's supervisor forwards it; Dovecot's master stops
    its helpers), then SIGKILL whatever is left of the group after 3 s. We
    start servers as session leaders, so the group id is the leader's pid."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def stop_for_stats(srv: Server | Refd, timeout_s: float) -> None:
    """SIGTERM the server's own process and wait for it to exit by itself, so a
    profiler or callgrind around it writes its file; the whole tree is killed
    (`kill_tree`) only if it has not exited after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(srv.proc.pid, signal.SIGTERM)
    try:
        srv.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        srv.stop()


# -- the fixture: users, certificate, routing ----------------------------------------------

SCHEMES = {"plain": "PLAIN", "sha": "SHA512-CRYPT", "blf": "BLF-CRYPT"}
PASSWORD = "secret"


#: The certificates of the fixture: ``openssl req -newkey`` arguments, by name.
#: Both self-signed for CN=localhost; the client does not verify (both servers alike).
CERT_KINDS = {
    "rsa": ["-newkey", "rsa:2048"],
    "ecdsa": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
}


@dataclass
class Fixture:
    directory: Path
    nusers: int
    cert: Path = field(init=False)  # RSA-2048: every TLS cell but tls-ecdsa
    key: Path = field(init=False)
    passwd: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cert = self.directory / "cert.pem"
        self.key = self.directory / "key.pem"
        self.passwd = self.directory / "users.passwd"

    def cert_pair(self, kind: str = "rsa") -> tuple[Path, Path]:
        """(certificate, key) of ``kind`` (a key of `CERT_KINDS`)."""
        if kind == "rsa":
            return self.cert, self.key
        return self.directory / f"cert-{kind}.pem", self.directory / f"key-{kind}.pem"


def make_fixture(directory: Path, nusers: int) -> Fixture:
    sys.path.insert(0, str(SOURCE["path"]))
    from refd.auth.schemes import hash_password

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    fx = Fixture(directory, nusers)
    for kind, newkey in CERT_KINDS.items():
        cert, key = fx.cert_pair(kind)
        subprocess.run(
            ["openssl", "req", "-x509", *newkey, "-nodes", "-sha256", "-keyout", str(key),
             "-out", str(cert), "-days", "7", "-subj", "/CN=localhost"],
            check=True, capture_output=True,
        )  # fmt: skip
        key.chmod(0o644)  # Dovecot reads it as root at start; refd as root too
    lines = []
    # One hash per scheme, shared by all users of that scheme: hashing 1000
    # bcrypt cost-10 passwords would take a minute, and sharing a hash
    # changes nothing for verification (neither server caches).
    hashes = {
        "plain": hash_password("PLAIN", PASSWORD),
        "sha": hash_password("SHA512-CRYPT", PASSWORD),  # 5000 rounds, as doveadm pw
        "blf": "{BLF-CRYPT}" + _bcrypt10(PASSWORD),
    }
    for prefix, stored in hashes.items():
        for i in range(nusers):
            lines.append(f"{prefix}-{i:06d}:{stored}::::::host=mail1.example.org nologin=y\n")
    for i in range(nusers):
        lines.append(f"mbx-{i:06d}:{hashes['plain']}::::::host=mail2.example.org\n")
    fx.passwd.write_text("".join(lines))
    fx.passwd.chmod(0o644)
    return fx


def _bcrypt10(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()


def write_routing(directory: Path, nusers: int, *, extra_map: Path | None = None) -> Path:
    """routing.yaml + users.map for the bench users (and optionally a big map)."""
    umap = directory / "users.map"
    with umap.open("w") as f:
        for prefix in SCHEMES:
            for i in range(nusers):
                f.write(f"{prefix}-{i:06d} mail1\n")
        if extra_map is not None:
            with extra_map.open() as big:
                shutil.copyfileobj(big, f)
    routing = directory / "routing.yaml"
    servers = "".join(f"  mail{i}: {{host: mail{i}.example.org}}\n" for i in range(1, 11))
    routing.write_text(
        """version: 1
servers:
MAILSERVERS  shared1: {host: shared1.example.org}
user_map: users.map
users:
  - glob: "mbx-*"
    server: mail2
    login: accept
mailboxes:
  - match: "Shared/*"
    servers: [shared1]
""".replace("MAILSERVERS", servers)
    )
    return routing


# -- refd ---------------------------------------------------------------------------


@dataclass
class Refd:
    name: str
    directory: Path
    port: int
    tls_port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def metrics(self) -> str:
        url = f"http://{HOST}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        kill_tree(self.proc.pid, self.proc)

    def log_text(self) -> str:
        return (self.directory / "refd.log").read_text(errors="replace")


T = TypeVar("T")


def _retrying_port_clash(*logs: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a ``start_*(binary, fx, directory, ...)``: if a freshly picked
    port was taken meanwhile (other jobs on the machine pick ports too), as
    ``logs`` (files in ``directory``) say, start again with new ones."""

    def decorate(start: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(start)
        def retrying(binary: str, fx: Fixture, directory: Path, *args: Any, **kwargs: Any) -> T:
            for attempt in range(4):
                try:
                    return start(binary, fx, directory, *args, **kwargs)
                except RuntimeError:
                    text = ""
                    for name in logs:
                        with contextlib.suppress(OSError):
                            text += (directory / name).read_text(errors="replace")
                    if attempt == 3 or "Address already in use" not in text:
                        raise
                    for name in logs:
                        with contextlib.suppress(OSError):
                            (directory / name).unlink()
            raise AssertionError("unreachable")

        return retrying

    return decorate


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


@_retrying_port_clash("refd.log")
def start_refd(
    python: str,
    fx: Fixture,
    directory: Path,
    *,
    workers: int,
    routing: Path,
    name: str = "refd",
    log_level: str = "info",
    auth: str | None = None,
    cert: str = "rsa",
) -> Refd:
    """``auth``: the config's ``auth:`` block (YAML, indented two spaces under
    it); default the bench passwd-file. ``cert``: which of the fixture's
    certificates (`CERT_KINDS`) the TLS listener serves."""
    directory.mkdir(parents=True, exist_ok=True)
    port, tls_port, mport = free_ports(3)
    cert_file, key_file = fx.cert_pair(cert)
    config = directory / "refd.yaml"
    if auth is None:
        auth = f"""  source: passwd-file
  passwd_file: {fx.passwd}
  failure_delay_s: 2          # irrelevant: every login in the bench succeeds
"""
    config.write_text(
        f"""# written by bench/servers.py
hostname: bench.refd.invalid
routing: {routing}
auth:
{auth.rstrip()}
listeners:
  - {{name: imap, address: {HOST}, port: {port}, tls: none}}
  - {{name: imaps, address: {HOST}, port: {tls_port}, tls: implicit}}
tls:
  cert: {cert_file}
  key: {key_file}
limits:
  max_connections: 1000000
  max_connections_per_address: 1000000   # every bench client is 127.0.0.1
  max_auth_in_flight: 100000             # Dovecot queues without a cap: so do we
  preauth_idle_timeout_s: 900            # idle-memory test holds connections
  tls_handshake_timeout_s: 60
metrics:
  address: {HOST}
  port: {mport}
workers: {workers}
log:
  level: {log_level}
  format: text
"""
    )
    env = {**os.environ, "PYTHONPATH": str(SOURCE["path"])}
    with open(directory / "refd.log", "ab") as logf:
        proc = subprocess.Popen(
            [python, "-m", "refd", "serve", "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, env=env, cwd=str(directory),
        )  # fmt: skip
    server = Refd(name, directory, port, tls_port, mport, proc, workers)
    try:
        wait_greeting(port, 120, proc)
        # with N workers, wait until each has bound (the supervisor says ready)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = server.log_text()
            if workers == 1 or "supervisor ready" in text:
                break
            time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
    return server


@_retrying_port_clash("floor.log")
def start_floor(python: str, fx: Fixture, directory: Path, *, processes: int = 1) -> Server:
    """`floor_server.py` in ``processes`` processes on one listening socket: trio
    alone, serving the login flow's bytes (no TLS port: -1)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(directory / "floor.log", "ab") as logf:
        proc = subprocess.Popen(
            [python, str(Path(__file__).with_name("floor_server.py")), str(port), str(processes)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, cwd=str(directory),
        )  # fmt: skip
    server = Server(f"trio-floor-w{processes}", directory, port, -1, proc)
    try:
        wait_greeting(port, 60, proc)
    except BaseException:
        server.stop()
        raise
    return server


# -- Dovecot --------------------------------------------------------------------------


@dataclass
class Server:
    """A server the bench started: its ports and its process tree."""

    name: str
    directory: Path
    port: int
    tls_port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def stop(self) -> None:
        kill_tree(self.proc.pid, self.proc)


class Dovecot(Server):
    """Dovecot as `start_dovecot` runs it (master, imap-login and auth processes)."""


def find_dovecot() -> str | None:
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None


def dovecot_version(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()


@_retrying_port_clash("dovecot.log", "dovecot.stderr")
def start_dovecot(
    binary: str,
    fx: Fixture,
    directory: Path,
    *,
    cores: int,
    passdb: str | None = None,
    cert: str = "rsa",
) -> Dovecot:
    """``passdb``: the ``passdb { ... }`` block; default the bench passwd-file.
    ``cert``: which of the fixture's certificates (`CERT_KINDS`) it serves."""
    cert_file, key_file = fx.cert_pair(cert)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    home = directory / "home"
    home.mkdir(exist_ok=True)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    port, tls_port = free_ports(2)
    conf = directory / "dovecot.conf"
    if passdb is None:
        passdb = f"""passdb {{
  driver = passwd-file
  args = scheme=PLAIN {fx.passwd}
}}"""
    conf.write_text(
        f"""# written by bench/servers.py: login referrals, tuned for throughput
base_dir = {directory}/run
state_dir = {directory}/state
instance_name = refd-bench-{port}
protocols = imap
listen = {HOST}
log_path = {directory}/dovecot.log
ssl = yes
ssl_cert = <{cert_file}
ssl_key = <{key_file}
auth_mechanisms = plain login
disable_plaintext_auth = no
# no auth cache on either side (Dovecot's default, stated here)
auth_cache_size = 0
mail_max_userip_connections = 100000
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
{passdb}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={home}/%u
}}
# High-performance login mode: long-lived imap-login processes, one per core.
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cores}
}}
# For the mailbox flow (a real login): keep imap processes warm and reuse them.
service imap {{
  process_min_avail = {cores}
  service_count = 1000
}}
"""
    )
    with open(directory / "dovecot.stderr", "ab") as err:
        proc = subprocess.Popen(
            [binary, "-F", "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
        )  # fmt: skip
    server = Dovecot("dovecot", directory, port, tls_port, proc)
    try:
        wait_greeting(port, 30, proc)
    except BaseException:
        server.stop()
        raise
    return server


# -- the directory: a private slapd (tests/interop/slapd.py) -------------------------------

LDAP_PREFIX = "ldap-"
#: the users' mailHost values: two servers of the bench routing table
LDAP_HOSTS = ("mail1.example.org", "mail2.example.org")
LDAP_FILTER = "(&(objectClass=inetOrgPerson)(uid=%u))"


def ldap_mail_host(i: int) -> str:
    return LDAP_HOSTS[i % len(LDAP_HOSTS)]


def _interop() -> Any:
    """tests.interop.slapd from this checkout (it needs refd's test extras)."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    import tests.interop.slapd as slapd_fixture

    return slapd_fixture


def find_slapd() -> str | None:
    try:
        return _interop().find_slapd()  # type: ignore[no-any-return]
    except ImportError:
        return None


def start_directory(binary: str, fx: Fixture, directory: Path, nusers: int) -> Any:
    """A running slapd with ``nusers`` entries ``uid=ldap-NNNNNN``: password
    ``secret`` as {SSHA} with a salt of its own each, and a ``mailHost``
    (``mail1``/``mail2.example.org``, alternately). Returns the
    ``SlapdInstance`` (``.url``, ``.pid``, ``.stop()``)."""
    sf = _interop()
    from tests.interop.dovecot import ServerCert

    cert = ServerCert(fx.cert.read_bytes(), fx.key.read_bytes())
    users = [
        sf.LdapUser(f"{LDAP_PREFIX}{i:06d}", sf.ssha(PASSWORD, salt=os.urandom(4)),
                    mail_host=ldap_mail_host(i))
        for i in range(nusers)
    ]  # fmt: skip
    return sf.start_slapd(binary, directory, cert, fx.cert.read_bytes(), users)


def refd_ldap_auth(url: str, directory: Path) -> str:
    """refd's ``auth:`` block: the ldap source in bind mode, routes from mailHost."""
    sf = _interop()
    secret = directory / "ldap.secret"
    directory.mkdir(parents=True, exist_ok=True)
    secret.write_text(sf.SERVICE_PASSWORD + "\n")
    return f"""  source: ldap
  failure_delay_s: 2          # irrelevant: every login in the bench succeeds
  ldap:
    servers: [{url}]
    mode: bind
    bind_dn: "{sf.SERVICE_DN}"
    bind_password_file: {secret}
    base: "{sf.PEOPLE}"
    user_filter: "{LDAP_FILTER}"
    route_attribute: mailHost   # names a host of the routing table
    # pool_size (8 per worker), timeouts, route cache: the defaults
"""


def dovecot_ldap_passdb(url: str, directory: Path) -> str:
    """Dovecot's ``passdb``: driver ldap with auth_bind (search as the service
    account, then bind as the user's DN), ``host`` from mailHost and
    ``nologin=y``: its login referral, as for the passwd-file users."""
    sf = _interop()
    directory.mkdir(parents=True, exist_ok=True)
    args = directory / "dovecot-ldap.conf.ext"
    args.write_text(
        f"""# written by bench/servers.py
uris = {url}
ldap_version = 3
dn = {sf.SERVICE_DN}
dnpass = {sf.SERVICE_PASSWORD}
auth_bind = yes
base = {sf.PEOPLE}
scope = subtree
pass_filter = {LDAP_FILTER}
pass_attrs = uid=user, mailHost=host, =nologin=y
"""
    )
    args.chmod(0o600)
    return f"""passdb {{
  driver = ldap
  args = {args}
}}"""


__all__ = [
    "CERT_KINDS",
    "HOST",
    "Dovecot",
    "Fixture",
    "Refd",
    "cpu_seconds",
    "descendants",
    "dovecot_version",
    "find_dovecot",
    "machine_cpu",
    "make_fixture",
    "rss_bytes",
    "served_certificate",
    "start_directory",
    "start_dovecot",
    "start_refd",
    "write_routing",
]
