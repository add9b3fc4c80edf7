"""Private OpenLDAP slapd instances for interop tests.

`start_slapd(directory, cert, users)` writes a ``slapd.conf`` into
`directory` (mdb backend in its own database directory, the core, cosine,
inetorgperson, nis and misc schemas, TLS with a certificate from the test CA,
an ACL that lets only the service account read ``userPassword``), loads the
entries with ``slapadd`` while slapd is not running, starts ``slapd`` in the
foreground in its own session on loopback ``ldap://`` and ``ldaps://`` on
free ports, and returns once it answers a search. Tests stop it by PID:
`stop()` (SIGTERM, then SIGKILL), `kill()`; `start()` brings it back on the
same ports with the same data. `ldapadd(ldif)` adds entries to the running
server with ldapadd as the directory manager.

The tree (``dc=example,dc=org``):

- ``cn=refd,ou=services``: the service account refd searches with
  (`SERVICE_DN`, `SERVICE_PASSWORD`);
- ``ou=people``: one entry per `LdapUser` (``inetOrgPerson`` plus
  ``inetLocalMailRecipient`` for ``mailHost``); ``employeeType: disabled``
  marks an account a ``usable_filter`` rejects.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.interop.dovecot import ServerCert
from tests.procs import free_ports

INSTALL_HINT = "slapd not installed: apt-get install slapd ldap-utils"
HOST = "127.0.0.1"
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
MANAGER_DN = f"cn=manager,{SUFFIX}"
MANAGER_PASSWORD = "manager-secret"
SERVICE_DN = f"cn=refd,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
SCHEMAS = ("core", "cosine", "inetorgperson", "nis", "misc")


def find_slapd() -> str | None:
    """slapd: $REFD_SLAPD if set, else on PATH or in /usr/sbin."""
    override = os.environ.get("REFD_SLAPD")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("slapd")
    if found:
        return found
    return "/usr/sbin/slapd" if os.access("/usr/sbin/slapd", os.X_OK) else None


def _tool(name: str, slapd: str) -> str:
    """slapadd next to slapd, ldapadd and friends on PATH or in /usr/bin."""
    beside = Path(slapd).with_name(name)
    if beside.exists():
        return str(beside)
    return shutil.which(name) or f"/usr/bin/{name}"


def ssha(password: str, salt: bytes = b"s4lt") -> str:
    """RFC 2307 style {SSHA}: base64(SHA1(password + salt) + salt), as slappasswd makes."""
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


@dataclass(frozen=True)
class LdapUser:
    """One entry under ou=people: rdn ``uid=<uid>`` unless `rdn` says otherwise."""

    uid: str
    #: the userPassword value, scheme prefix included (e.g. ``{SSHA}...``)
    user_password: str
    mail_host: str | None = None
    disabled: bool = False
    rdn: str | None = None
    extra_uids: tuple[str, ...] = ()
    #: sn/cn; entries that share it collide on a ``(cn=...)`` filter
    cn: str | None = None

    def ldif(self) -> str:
        rdn = self.rdn or f"uid={self.uid}"
        lines = [
            f"dn: {rdn},{PEOPLE}",
            "objectClass: inetOrgPerson",
            "objectClass: inetLocalMailRecipient",
            f"uid{_ldif_attr(self.uid)}",
            *(f"uid{_ldif_attr(u)}" for u in self.extra_uids),
            f"cn{_ldif_attr(self.cn or self.uid)}",
            f"sn{_ldif_attr(self.cn or self.uid)}",
            f"userPassword{_ldif_attr(self.user_password)}",
        ]
        if self.mail_host is not None:
            lines.append(f"mailHost: {self.mail_host}")
        if self.disabled:
            lines.append("employeeType: disabled")
        return "\n".join(lines) + "\n"


def _ldif_attr(value: str) -> str:
    """`: value`, or `:: base64` when LDIF (RFC 2849) cannot carry it plain."""
    raw = value.encode("utf-8")
    if not value.isascii() or value[:1] in (" ", ":", "<") or value.endswith(" "):
        return ":: " + base64.b64encode(raw).decode("ascii")
    return ": " + value


def _base_ldif() -> str:
    return f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: refd
userPassword: {ssha(SERVICE_PASSWORD)}

"""


def _entries_ldif(users: Iterable[LdapUser]) -> str:
    """The users' LDIF, with non-ASCII DNs written base64 (``dn::``)."""
    out = []
    for user in users:
        text = user.ldif()
        first, rest = text.split("\n", 1)
        dn = first[len("dn: ") :]
        if not dn.isascii():
            first = "dn:: " + base64.b64encode(dn.encode("utf-8")).decode("ascii")
        out.append(first + "\n" + rest)
    return "\n".join(out) + "\n"


@dataclass
class SlapdInstance:
    binary: str
    directory: Path
    port: int
    ldaps_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"ldap://{HOST}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{HOST}:{self.ldaps_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return (self.directory / "slapd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _answers(self) -> bool:
        try:
            done = subprocess.run(
                [
                    _tool("ldapsearch", self.binary),
                    "-x",
                    "-H",
                    self.url,
                    "-b",
                    SUFFIX,
                    "-s",
                    "base",
                    "-o",
                    "nettimeout=1",
                    "(objectClass=*)",
                    "dn",
                ],
                capture_output=True,
                timeout=5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def start(self) -> None:
        urls = f"ldap://{HOST}:{self.port}/ ldaps://{HOST}:{self.ldaps_port}/"
        with (self.directory / "slapd.log").open("ab") as log:
            self.process = subprocess.Popen(
                # -d 0: stay in the foreground (so the PID is slapd's), log nothing extra.
                [self.binary, "-d", "0", "-f", str(self.directory / "slapd.conf"), "-h", urls],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not start: {self.log()[-3000:]}")
            time.sleep(0.05)

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def pause(self) -> None:
        """SIGSTOP: slapd accepts connections (the kernel does) and never answers.

        Returns once every slapd thread is stopped: ``kill`` returns before
        the signal has stopped them all, and on a loaded machine a thread
        still running could answer one more request.
        """
        self._signal(signal.SIGSTOP)
        if self.process is None or self.process.poll() is not None:
            return
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + 10
        while not all(_stopped(task) for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise AssertionError(f"slapd {self.process.pid} did not stop on SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT), then SIGKILL. Idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def ldapadd(self, ldif: str) -> None:
        """Add entries to the running server with ldapadd, as the directory manager."""
        subprocess.run(
            [
                _tool("ldapadd", self.binary),
                "-x",
                "-H",
                self.url,
                "-D",
                MANAGER_DN,
                "-w",
                MANAGER_PASSWORD,
            ],
            input=ldif.encode("utf-8"),
            capture_output=True,
            timeout=30,
            check=True,
        )


def _config(directory: Path, cert: ServerCert, ca_pem: bytes) -> str:
    tls = directory / "tls"
    tls.mkdir(exist_ok=True)
    (tls / "cert.pem").write_bytes(cert.chain_pem)
    (tls / "key.pem").write_bytes(cert.key_pem)
    (tls / "ca.pem").write_bytes(ca_pem)
    (directory / "db").mkdir(exist_ok=True)
    schemas = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    return f"""{schemas}
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel none
TLSCertificateFile {tls}/cert.pem
TLSCertificateKeyFile {tls}/key.pem
TLSCACertificateFile {tls}/ca.pem
# Many concurrent binds: more threads than the default 16.
threads 32

database mdb
maxsize 268435456
suffix "{SUFFIX}"
rootdn "{MANAGER_DN}"
rootpw {MANAGER_PASSWORD}
directory {directory}/db
index uid eq
index cn eq
index objectClass eq
access to attrs=userPassword
  by dn.exact="{SERVICE_DN}" read
  by anonymous auth
  by * none
access to *
  by * read
"""


def start_slapd(
    binary: str, directory: Path, cert: ServerCert, ca_pem: bytes, users: Iterable[LdapUser]
) -> SlapdInstance:
    """A running slapd in `directory` with the base tree and `users`, loaded by slapadd."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "slapd.conf"
    conf.write_text(_config(directory, cert, ca_pem))
    ldif = directory / "data.ldif"
    ldif.write_text(_base_ldif() + _entries_ldif(users), encoding="utf-8")
    done = subprocess.run(
        [_tool("slapadd", binary), "-q", "-f", str(conf), "-l", str(ldif)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"slapadd failed: {done.stderr.decode(errors='replace')[-3000:]}")
    instance = SlapdInstance(binary, directory, *free_ports(2, HOST))
    instance.start()
    return instance


def _stopped(task: Path) -> bool:
    """Whether the thread ``/proc/PID/task/TID`` is stopped (state ``T``), or gone."""
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return True
