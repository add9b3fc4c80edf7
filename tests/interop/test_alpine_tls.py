"""alpine follows refd's referrals over TLS, to Dovecot backends that require TLS.

The door (``python -m refd serve``) listens twice on 127.0.0.1: implicit TLS
and STARTTLS, with ``trusted_networks: []``, so it takes no plaintext LOGIN.
The backend is a private Dovecot on 127.0.0.2 with ``ssl = required``: its
referral port (the one the URLs name) offers STARTTLS and LOGINDISABLED.
(Dovecot counts a connection whose remote and local address are equal as
secured and would take plaintext from 127.0.0.1 to 127.0.0.1.) Its login
log line names the local port and ends in ``TLS`` for a TLS login.

Door and backend certificates come from one test CA, which alpine trusts
through ``SSL_CERT_FILE``: c-client calls OpenSSL's
``SSL_CTX_set_default_verify_paths``, which reads that variable. Without
it, alpine stops at "unable to get local issuer certificate" (the first
test checks that). The certificates are made with `c_client_cert`: alpine
2.26 matches an IP address literal only against a DNS-name entry.

What alpine 2.26 does (Debian 12 package):

- It rebuilds the connection to the backend from the referral URL alone,
  with none of the door's TLS options. At a STARTTLS port it upgrades by
  itself (it sends STARTTLS whenever the greeting offers it) and verifies
  the certificate against the URL's host, so a login or mailbox referral
  to the backend's STARTTLS port is followed over TLS.
- At an implicit-TLS-only port it connects in plaintext, sends nothing and
  waits for a greeting that never comes ("No reply in 60 seconds from
  server ... Still Waiting...") until the server drops the connection:
  seen by hand with Dovecot's imaps port, 180 s ("Disconnected: Inactivity
  (no auth attempts in 180 secs) ... TLS handshaking"). The last test
  shows the silence in 3 s.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from refd.config.loader import DEMO_CONFIG
from tests.procs import Daemon, free_ports

from .conftest import DovecotFactory, c_client_cert
from .dovecot import DovecotInstance
from .test_clients import (
    PASSWORD,
    Terminal,
    alpine_argv,
    alpine_trace,
    door_session,
    pinerc_home,
    prompt_ports,
    recent_logs,
    seed,
)

pytestmark = pytest.mark.interop

DOOR_HOST = "127.0.0.1"
BACKEND_HOST = "127.0.0.2"
#: Dovecot's default login line with the local port added (``lport=``), so
#: that a login through the referral port is told from one through ``imaps``
LOGIN_LOG_FORMAT = (
    "login_log_format_elements = user=<%u> method=%m rip=%r lip=%l lport=%{lport} "
    "mpid=%e %c session=<%{session}>\n"
)
ALICE_MAIL = "alice INBOX on the TLS backend"
CAROL_MAIL = "carol INBOX on the TLS backend"
#: how long the implicit-TLS observation listens to alpine
SILENCE_S = 3.0


@dataclass
class TlsLab:
    directory: Path
    daemon: Daemon
    implicit_port: int
    starttls_port: int
    backend: DovecotInstance
    #: a port on BACKEND_HOST that only listens (what an implicit-TLS-only
    #: port looks like to a client that waits for a greeting)
    silent: socket.socket
    ca_file: Path

    def tls_logins(self, user: str) -> list[str]:
        """The backend's login lines for ``user`` through its referral (STARTTLS) port."""
        needle = f"Login: user=<{user}>, method=PLAIN, rip={DOOR_HOST}, lip={BACKEND_HOST}, "
        needle += f"lport={self.backend.port}, "
        return self.backend.wait_for_log(needle, timeout_s=0)

    def door_session(self, needle: str) -> str:
        return door_session(self.daemon, needle)

    def logs(self) -> str:
        return recent_logs(self.daemon, [self.backend])


@pytest.fixture
def tls_lab(
    tmp_path: Path, dovecot_factory: DovecotFactory, tls_ca: trustme.CA
) -> Iterator[TlsLab]:
    backend = dovecot_factory(
        name="home",
        host=BACKEND_HOST,
        users={"alice": PASSWORD, "carol": PASSWORD},
        cert=c_client_cert(tls_ca, BACKEND_HOST),
        ssl_required=True,
        extra_config=LOGIN_LOG_FORMAT,
    )
    seed(backend, "alice", "INBOX", ALICE_MAIL)
    seed(backend, "carol", "INBOX", CAROL_MAIL)
    # Closed at teardown, so nothing is left listening.
    with socket.socket() as silent:
        silent.bind((BACKEND_HOST, 0))
        silent.listen(1)
        door_cert = c_client_cert(tls_ca, DOOR_HOST)
        (tmp_path / "door.pem").write_bytes(door_cert.chain_pem + door_cert.key_pem)
        ca_file = tmp_path / "ca.pem"
        tls_ca.cert_pem.write_to_path(str(ca_file))
        implicit_port, starttls_port = free_ports(2)
        (tmp_path / "routing.yaml").write_text(
            "version: 1\n"
            "servers:\n"
            f"  home: {{host: {BACKEND_HOST}, port: {backend.port}}}\n"
            f"  implicit_only: {{host: {BACKEND_HOST}, port: {silent.getsockname()[1]}}}\n"
            "users:\n"
            "  - {user: alice, server: home, login: refer}\n"
            "  - {user: carol, server: home, login: stay}\n"
            "  - {user: bob, server: implicit_only, login: refer}\n"
        )
        shutil.copy(DEMO_CONFIG.parent / "users.passwd", tmp_path / "users.passwd")
        (tmp_path / "refd.yaml").write_text(
            "hostname: localhost\n"
            "routing: routing.yaml\n"
            "auth: {source: passwd-file, passwd_file: users.passwd, failure_delay_s: 0.1}\n"
            "listeners:\n"
            f"  - {{name: imaps, address: {DOOR_HOST}, port: {implicit_port}, tls: implicit}}\n"
            f"  - {{name: imap, address: {DOOR_HOST}, port: {starttls_port}, tls: starttls}}\n"
            "tls: {cert: door.pem, key: door.pem}\n"
            "trusted_networks: []\n"
            "metrics: {address: 127.0.0.1, port: 0}\n"
        )
        daemon = Daemon(["serve", "-c", str(tmp_path / "refd.yaml")])
        try:
            daemon.wait_log("refd ready")
            yield TlsLab(tmp_path, daemon, implicit_port, starttls_port, backend, silent, ca_file)
        finally:
            daemon.stop()


@pytest.fixture
def open_alpine(tls_lab: TlsLab) -> Iterator[Callable[..., tuple[Terminal, Path]]]:
    opened: list[Terminal] = []

    def start(user: str, door: str, *, trust_ca: bool = True) -> tuple[Terminal, Path]:
        """alpine with its INBOX ``{door}INBOX`` at the door, as ``user``."""
        home = pinerc_home(tls_lab.directory / f"alpine-{user}-{len(opened)}", door)
        env = {"SSL_CERT_FILE": str(tls_lab.ca_file)} if trust_ca else {}
        terminal = Terminal(alpine_argv(home), home, context=tls_lab.logs, env=env)
        opened.append(terminal)
        return terminal, home

    yield start
    for terminal in opened:
        terminal.close()


def followed(lab: TlsLab, terminal: Terminal, user: str, mail: str, before: int) -> str:
    """Wait until alpine shows ``mail`` and the backend logged ``user``'s login; the screen."""
    return terminal.wait(
        lambda s: mail in s and len(lab.tls_logins(user)) > before, password=PASSWORD
    )


def assert_tls_login(lab: TlsLab, user: str, before: int) -> None:
    """The backend's new login line for ``user`` came through its STARTTLS port, over TLS."""
    lines = lab.tls_logins(user)
    assert len(lines) == before + 1, lines
    assert re.search(r", mpid=\d+, TLS, session=<", lines[-1]), lines[-1]


def assert_backend_over_starttls(home: Path, referral: str) -> None:
    """alpine's trace: the referral, then at the backend STARTTLS before any login."""
    trace = alpine_trace(home)
    greeting = trace.index("refd-test home ready", trace.index(referral))
    backend = trace[trace.rindex("\n", 0, greeting) + 1 :]
    assert "STARTTLS LOGINDISABLED" in backend.splitlines()[0]  # ssl = required
    assert backend.index("STARTTLS\n") < backend.index("AUTHENTICATE PLAIN"), backend[:600]


def test_alpine_follows_login_referral_from_implicit_tls_door(
    tls_lab: TlsLab, open_alpine: Callable[..., tuple[Terminal, Path]]
) -> None:
    lab = tls_lab
    door = f"{{{DOOR_HOST}:{lab.implicit_port}/user=alice/ssl}}"
    # Without the test CA, alpine stops at the door's certificate.
    untrusted, _ = open_alpine("alice", door, trust_ca=False)
    untrusted.wait(lambda s: "unable to get local issuer certificate" in s)
    untrusted.close()

    before = len(lab.tls_logins("alice"))
    terminal, home = open_alpine("alice", door)
    screen = followed(lab, terminal, "alice", ALICE_MAIL, before)

    assert "Folder: INBOX" in screen
    assert_tls_login(lab, "alice", before)
    assert prompt_ports(terminal) == [str(lab.implicit_port), str(lab.backend.port)]
    assert not [p for p in terminal.prompts if "INSECURE" in p], terminal.prompts
    session = lab.door_session("user=alice outcome=login-referral server=home")
    assert "listener=imaps tls=yes user=alice outcome=login-referral" in session
    referral = f"NO [REFERRAL imap://alice;AUTH=*@{BACKEND_HOST}:{lab.backend.port}/]"
    assert_backend_over_starttls(home, referral)


def test_alpine_follows_login_referral_from_starttls_door(
    tls_lab: TlsLab, open_alpine: Callable[..., tuple[Terminal, Path]]
) -> None:
    lab = tls_lab
    before = len(lab.tls_logins("alice"))
    # No /tls in the folder name: alpine upgrades the door connection by itself.
    terminal, home = open_alpine("alice", f"{{{DOOR_HOST}:{lab.starttls_port}/user=alice}}")
    screen = followed(lab, terminal, "alice", ALICE_MAIL, before)

    assert "Folder: INBOX" in screen
    assert_tls_login(lab, "alice", before)
    assert prompt_ports(terminal) == [str(lab.starttls_port), str(lab.backend.port)]
    assert not [p for p in terminal.prompts if "INSECURE" in p], terminal.prompts
    session = lab.door_session("user=alice outcome=login-referral server=home")
    assert "listener=imap tls=yes user=alice outcome=login-referral" in session
    trace = alpine_trace(home)
    referral = f"NO [REFERRAL imap://alice;AUTH=*@{BACKEND_HOST}:{lab.backend.port}/]"
    at_door = trace[: trace.index(referral)]
    assert "STARTTLS LOGINDISABLED" in at_door.splitlines()[0]  # the door's greeting
    assert at_door.index("00000000 STARTTLS") < at_door.index("OK Begin TLS negotiation now.")
    assert_backend_over_starttls(home, referral)


def test_alpine_stays_and_follows_mailbox_referral_over_tls(
    tls_lab: TlsLab, open_alpine: Callable[..., tuple[Terminal, Path]]
) -> None:
    # carol is login: stay: a plain OK at the implicit-TLS door, then the
    # SELECT of her INBOX is referred to the backend's STARTTLS port.
    lab = tls_lab
    before = len(lab.tls_logins("carol"))
    terminal, home = open_alpine("carol", f"{{{DOOR_HOST}:{lab.implicit_port}/user=carol/ssl}}")
    screen = followed(lab, terminal, "carol", CAROL_MAIL, before)

    assert "Folder: INBOX" in screen
    assert_tls_login(lab, "carol", before)
    assert prompt_ports(terminal) == [str(lab.implicit_port), str(lab.backend.port)]
    assert not [p for p in terminal.prompts if "INSECURE" in p], terminal.prompts
    session = lab.door_session("kind=mailbox command=SELECT server=home user=carol")
    assert "outcome=accepted server=-" in session  # a plain OK: no login referral
    assert "listener=imaps tls=yes user=carol" in session
    referral = f"NO [REFERRAL imap://carol;AUTH=*@{BACKEND_HOST}:{lab.backend.port}/INBOX]"
    trace = alpine_trace(home)
    assert trace.index("SELECT INBOX") < trace.index(referral)
    assert_backend_over_starttls(home, referral)


def test_alpine_referred_to_implicit_tls_port_sends_nothing(
    tls_lab: TlsLab, open_alpine: Callable[..., tuple[Terminal, Path]]
) -> None:
    # Why referral URLs must name STARTTLS ports (and why `refd check` warns
    # about 993): alpine drops the door's /ssl when it follows the referral,
    # connects in plaintext and waits for a greeting. An implicit-TLS server
    # waits for a TLS ClientHello, so both wait until the server gives up.
    # Here the port only listens, and records what arrives.
    lab = tls_lab
    lab.silent.settimeout(15)
    terminal, home = open_alpine("bob", f"{{{DOOR_HOST}:{lab.implicit_port}/user=bob/ssl}}")
    terminal.wait(lambda s: bool(terminal.prompts), password=PASSWORD)  # the door's
    connection, _ = lab.silent.accept()  # alpine followed the referral
    with connection:
        connection.settimeout(0.1)
        received = b""
        deadline = time.monotonic() + SILENCE_S
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        screen = terminal.screen()
        terminal.close()  # ends alpine, which would wait as long as the port stays open

    assert received == b""  # no TLS ClientHello (0x16 0x03 ...), no IMAP command
    assert prompt_ports(terminal) == [str(lab.implicit_port)]  # no password asked for bob there
    assert "Please wait, opening mail folder" in screen, screen
    referral = f"NO [REFERRAL imap://bob;AUTH=*@{BACKEND_HOST}:{lab.silent.getsockname()[1]}/]"
    assert referral in alpine_trace(home)
