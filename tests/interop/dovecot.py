"""Private Dovecot instances for interop tests.

`start_dovecot(...)` writes a config, a passwd-file and a mail home into a
fresh directory, starts `dovecot -F -c CONF` (foreground: the master is our
child, in its own process group) and returns once the IMAP port answers with
its greeting. `DovecotInstance.stop()` ends it (SIGTERM, then SIGKILL to the
whole group) and waits until no process of the group is left.

What the config does, and why:
- `listen = 127.0.0.1` (or another loopback address), `protocols = imap`,
  free ports picked here: IMAP, and with a certificate also implicit TLS
  (`imaps`) plus STARTTLS on IMAP. No pop3, lmtp or submission.
- base_dir and state_dir inside the instance directory, so instances never
  meet each other or a system Dovecot (state_dir also keeps Dovecot's list of
  instances out of /var/lib/dovecot).
- passwd-file passdb, static userdb. As root, Dovecot runs its helpers as the
  users the dovecot-core package creates (`dovecot`, `dovenull`) and refuses
  uid 0 for mail, so mail belongs to `nobody:nogroup` (uid/gid 65534, always
  present on Debian via base-passwd); the instance directory is created
  directly under /tmp (whose parents everyone can traverse, unlike pytest's
  0700 tmp_path) and made world-readable so those users reach the passwd-file
  and the sockets. As a normal user, every Dovecot process and the mail run
  as that user (login/internal user and group set to it, no chroot).
- `/` as the hierarchy separator, as in refd's routing tables.
- `auth_failure_delay = 0` and the anvil `auth-penalty` listener renamed so
  the auth process cannot find it: otherwise Dovecot 2.3 makes every failed
  login from 127.0.0.1 wait 2, 4, 8, then 15 s. A failure still takes up to
  0.5 s (Dovecot flushes delayed failures on a 500 ms timer).
- `mail_max_userip_connections` raised: tests log one user in many times.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import imapclient  # type: ignore[import-untyped]

from refd.auth.schemes import hash_password
from tests.procs import free_ports

INSTALL_HINT = "dovecot not installed: apt-get install dovecot-imapd"
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 0.25
STOP_TIMEOUT_S = 5.0


def find_dovecot() -> str | None:
    """The dovecot binary: $REFD_DOVECOT if set, else on PATH or in /usr/sbin."""
    override = os.environ.get("REFD_DOVECOT")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None


@dataclass(frozen=True)
class ServerCert:
    """A certificate chain and its private key, PEM (e.g. from trustme)."""

    chain_pem: bytes
    key_pem: bytes


class DovecotStartError(RuntimeError):
    pass


@dataclass
class DovecotInstance:
    """A running (or stopped) private Dovecot; see `start_dovecot`."""

    name: str
    directory: Path
    port: int
    tls_port: int | None
    users: dict[str, str]  # user -> plaintext password
    process: subprocess.Popen[bytes]
    startup_s: float
    host: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def tls_address(self) -> tuple[str, int]:
        if self.tls_port is None:
            raise ValueError(f"{self.name} was started without a certificate")
        return (self.host, self.tls_port)

    @property
    def log_path(self) -> Path:
        return self.directory / "dovecot.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str, count: int = 1, timeout_s: float = 2.0) -> list[str]:
        """Log lines containing `needle`, once there are `count` (Dovecot logs asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = [line for line in self.log().splitlines() if needle in line]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return not self._stopped and self.process.poll() is None

    def stop(self) -> None:
        """Stop Dovecot; return when none of its processes is left. Idempotent.

        SIGTERM first: the master stops its helpers within a few ms. Dovecot
        2.3's master then sleeps a fixed second before exiting (it SIGQUITs
        the log process and waits), so after `STOP_GRACE_S` whatever is left
        of the process group gets SIGKILL.
        """
        if self._stopped:
            return
        self._stopped = True
        group = self.process.pid  # started as a session leader: pgid == pid
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_GRACE_S)
        _kill_group(group)
        self.process.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _group_alive(group):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot {self.name}: processes of group {group} survive")
            _kill_group(group)
            time.sleep(0.01)

    # -- mail, over IMAP as the user ------------------------------------------------

    def _client(self, user: str, password: str | None) -> imapclient.IMAPClient:
        if self.tls_port is None:
            client = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        else:
            # Implicit TLS, so that `ssl_required` and LOGINDISABLED do not stop
            # the seeding; this is the test's own backend, so no verification.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client = imapclient.IMAPClient(
                self.host, port=self.tls_port, ssl=True, ssl_context=context, timeout=10
            )
        client.login(user, self.users[user] if password is None else password)
        return client

    def seed(
        self,
        user: str,
        mailbox: str,
        subject: str,
        *,
        body: str = "seeded by the refd interop tests\n",
        password: str | None = None,
    ) -> None:
        """APPEND a message with `subject` to `mailbox` as `user`, creating the mailbox."""
        message = email.message.EmailMessage()
        message["From"] = f"{user}@example.org"
        message["To"] = f"{user}@example.org"
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate()
        message["Message-ID"] = email.utils.make_msgid(domain="refd.test")
        message.set_content(body)
        client = self._client(user, password)
        try:
            if not client.folder_exists(mailbox):
                client.create_folder(mailbox)
            client.append(mailbox, message.as_bytes())
        finally:
            client.logout()

    def subjects(
        self, user: str, mailbox: str = "INBOX", *, password: str | None = None
    ) -> list[str]:
        """The Subject of every message in `mailbox`, in UID order."""
        client = self._client(user, password)
        try:
            client.select_folder(mailbox, readonly=True)
            uids = client.search("ALL")
            fetched = client.fetch(uids, ["ENVELOPE"]) if uids else {}
            return [
                (fetched[uid][b"ENVELOPE"].subject or b"").decode("utf-8", "replace")
                for uid in sorted(fetched)
            ]
        finally:
            client.logout()


def _group_alive(group: int) -> bool:
    """Whether a live (non-zombie) process is left in `group`.

    Zombies do not count: once the master is gone its children belong to
    init, and some inits (containers, micro-VMs) reap them only every second.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...; comm may hold spaces and ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


@dataclass(frozen=True)
class _Identity:
    """Who owns mail, and as whom Dovecot runs its helper processes."""

    uid: int
    gid: int
    settings: str


def _identity() -> _Identity:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        # default_login_user (dovenull) and default_internal_user (dovecot)
        # keep their defaults: dovecot-core creates both.
        return _Identity(nobody.pw_uid, nobody.pw_gid, "")
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(os.getegid()).gr_name
    settings = f"""\
default_login_user = {me.pw_name}
default_internal_user = {me.pw_name}
default_internal_group = {group}
service imap-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
"""
    return _Identity(me.pw_uid, me.pw_gid, settings)


def _config(
    directory: Path,
    host: str,
    name: str,
    port: int,
    tls_port: int | None,
    identity: _Identity,
    plaintext_auth: bool,
    ssl_required: bool,
    extra_config: str,
) -> str:
    if tls_port is None:
        ssl_settings = "ssl = no\n"
    else:
        ssl = "required" if ssl_required else "yes"
        ssl_settings = (
            f"ssl = {ssl}\nssl_cert = <{directory}/cert.pem\nssl_key = <{directory}/key.pem\n"
        )
    return f"""\
# refd interop test instance {name!r}; written by tests/interop/dovecot.py
base_dir = {directory}/run
state_dir = {directory}/state
instance_name = refd-{name}-{port}
protocols = imap
listen = {host}
log_path = {directory}/dovecot.log
login_greeting = refd-test {name} ready.
{ssl_settings}
auth_mechanisms = plain login
disable_plaintext_auth = {"no" if plaintext_auth else "yes"}
auth_failure_delay = 0
mail_max_userip_connections = 10000
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
{identity.settings}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {directory}/users.passwd
}}
userdb {{
  driver = static
  args = uid={identity.uid} gid={identity.gid} home={directory}/home/%u
}}

service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port or 0}
  }}
}}

# No auth penalty: Dovecot finds no anvil-auth-penalty socket and skips it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}

{extra_config.replace("{directory}", str(directory))}
"""


def _wait_ready(process: subprocess.Popen[bytes], host: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DovecotStartError(f"dovecot exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                greeting = s.recv(4096)
                if greeting.startswith(b"* OK"):
                    return
                raise DovecotStartError(f"unexpected greeting {greeting!r}")
        except ConnectionRefusedError:
            time.sleep(0.005)
    raise DovecotStartError(f"no greeting on port {port} within {START_TIMEOUT_S}s")


def start_dovecot(
    binary: str,
    *,
    name: str = "backend",
    host: str = HOST,
    users: Mapping[str, str] | None = None,
    scheme: str = "PLAIN",
    cert: ServerCert | None = None,
    plaintext_auth: bool = True,
    ssl_required: bool = False,
    extra_config: str = "",
    files: Mapping[str, bytes] | None = None,
    attempts: int = 3,
) -> DovecotInstance:
    """Start a private Dovecot; see the module docstring.

    `users` maps user names to plaintext passwords, written to the
    passwd-file hashed with `scheme` (any scheme refd's `hash_password`
    makes). `cert` turns on TLS: implicit TLS on `tls_port` and STARTTLS on
    `port`. `plaintext_auth=False` sets `disable_plaintext_auth = yes`
    (LOGINDISABLED before TLS); `ssl_required=True` (with `cert`) sets
    `ssl = required`, which also refuses AUTHENTICATE before TLS
    (PRIVACYREQUIRED). Dovecot counts a connection whose remote IP equals
    its local IP as secured, so listen on another loopback address
    (`host="127.0.0.2"`; clients then connect from 127.0.0.1) to see either.
    With `cert`, `seed` and `subjects` log in over implicit TLS. `host` is
    the listen address. `files` are written into the instance directory
    (mode 0755) before start; `extra_config` (appended to the config) names
    them as `{directory}/NAME`.
    """
    users = dict(users if users is not None else {"alice": "alice-password"})
    identity = _identity()
    directory = Path(tempfile.mkdtemp(prefix="refd-dovecot-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        home = directory / "home"
        home.mkdir()
        os.chown(home, identity.uid, identity.gid)
        home.chmod(0o700)
        lines = [f"{user}:{hash_password(scheme, password)}\n" for user, password in users.items()]
        (directory / "users.passwd").write_text("".join(lines))
        (directory / "users.passwd").chmod(0o644)
        for file_name, content in (files or {}).items():
            (directory / file_name).write_bytes(content)
            (directory / file_name).chmod(0o755)
        if cert is not None:
            (directory / "cert.pem").write_bytes(cert.chain_pem)
            (directory / "key.pem").write_bytes(cert.key_pem)
            (directory / "key.pem").chmod(0o600)
        last_error: DovecotStartError | None = None
        for _ in range(attempts):  # a picked port may be taken before Dovecot binds it
            port, *more = free_ports(1 if cert is None else 2, host)
            tls_port = more[0] if more else None
            config = directory / "dovecot.conf"
            text = _config(
                directory,
                host,
                name,
                port,
                tls_port,
                identity,
                plaintext_auth,
                ssl_required,
                extra_config,
            )
            config.write_text(text)
            started = time.monotonic()
            with open(directory / "dovecot.stderr", "ab") as stderr:
                process = subprocess.Popen(
                    [binary, "-F", "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,
                )
            instance = DovecotInstance(
                name, directory, port, tls_port, users, process, startup_s=0.0, host=host
            )
            try:
                _wait_ready(process, host, port)
            except DovecotStartError as exc:
                instance.stop()
                stderr_text = (directory / "dovecot.stderr").read_text(errors="replace")
                last_error = DovecotStartError(
                    f"{exc}\n--- stderr ---\n{stderr_text}\n--- log ---\n{instance.log()}"
                )
                if "Address already in use" not in stderr_text + instance.log():
                    break
                continue
            instance.startup_s = time.monotonic() - started
            return instance
        assert last_error is not None
        raise last_error
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
