"""Which real IMAP clients follow refd's referrals: measured, not assumed.

Each test runs one client (the Debian package's binary) against a refd door
running as a process (``python -m refd serve``) whose routing table points
at two private Dovecot backends:

- **home** holds alice's and bob's INBOX;
- **shared** holds bob's ``Shared/Sales`` (the table's ``Shared/*`` rule);
- alice is ``login: refer`` -> ``NO [REFERRAL imap://alice;AUTH=*@home/]``;
- bob is ``login: accept`` -> ``OK [REFERRAL imap://bob;AUTH=*@home/]``,
  and then gets ``NO [REFERRAL ...]`` per mailbox;
- carol (tried with alpine only, her mail seeded by that test) is
  ``login: stay`` -> a plain ``OK``, and then ``NO [REFERRAL ...]`` per
  mailbox.

Door and backends share the passwords, so a client that follows a referral
can log in where it is sent. "Followed" means the backend logged the
user's login (``DovecotInstance`` log) after the client started and the
client shows that backend's mail; the door's log shows which referral the
client received. Batch clients run as subprocesses; interactive ones
(alpine, mutt, neomutt) in a private tmux server, read as the rendered
screen, with passwords typed at their prompts. Every wait is for durable
state (a message list, a status bar, a log line), never for a status-line
message, which the client replaces at its next event.

Results (Debian 12 packages; "login" = follows the login referral,
"mailbox" = follows a mailbox referral):

- alpine 2.26 (``alpine``): login yes; mailbox yes with ``login: stay``,
  n/a with ``login: accept``. Follows ``NO`` and ``OK [REFERRAL]`` after
  LOGIN alike: logs out of the door, asks for the password again for the
  backend, logs in there and opens INBOX -- even when the user asked the
  door for another mailbox (see below). After a plain ``OK`` it stays,
  lists the door's folders with ``RLIST`` and follows each ``SELECT``
  referral the same way.
  Over TLS (implicit-TLS and STARTTLS doors, STARTTLS backends) the
  same: see ``test_alpine_tls.py``.
- mutt 2.2.12 (``mutt``): no, no. Shows "Login failed." (not the referral
  text) for the login referral, and the SELECT's text ("Remote mailbox.
  Try ...") for the mailbox referral.
- neomutt 20220429 (``neomutt``): no, no. Tries ``AUTHENTICATE PLAIN``
  with SASL-IR first (not advertised, accepted), then LOGIN; shows "Login
  failed", then "Unable to open mailbox ...".
- curl 7.88.1 (``curl``): no, no. Exit 67 (CURLE_LOGIN_DENIED) for both.
- fetchmail 6.4.37 (``fetchmail``): no, no. Exit 3 ("Authorization
  failure"), exit 7 ("mailbox selection failed").
- mbsync 1.4.4 (``isync``): no, no. Prints the NO text; exit 1.
- offlineimap 8.0.0 (``offlineimap3`` 0.0~git20211018): no, n/a. Reports
  the login referral's text as an authentication failure; a user accepted
  at the door sees no folders (LIST there shows no remote mailbox, RFC 2193
  §3), so offlineimap never SELECTs.
- Python 3.11 imaplib: no, no. Raises / returns the NO text.

"n/a" for alpine's mailbox referrals: c-client (alpine's IMAP library)
treats ``OK [REFERRAL]`` after LOGIN as a login referral too (its
``REFAUTH`` case) and leaves the door at once, so with refd's
``login: accept`` it never sends SELECT or RLIST to the door and never
meets a mailbox referral; ``login: stay`` (a plain ``OK``) is for it. The
tests below pin both down.

Observed by hand, not tested here:

- A draining door's ``* BYE [REFERRAL imap://;AUTH=*@host:port/]``
  greeting (RFC 2221 §4.2) is followed by neither alpine ("No folder is
  currently open") nor curl (exit 8, "Got unexpected imap-server
  response").
"""

from __future__ import annotations

import imaplib
import os
import queue
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from refd.config.loader import DEMO_CONFIG
from tests.procs import Daemon, free_port

from .conftest import DovecotFactory, under_ci
from .dovecot import DovecotInstance

pytestmark = pytest.mark.interop

#: the demo passwd-file's password for alice, bob and carol; the backends use it too
PASSWORD = "secret"
USERS = {"alice": PASSWORD, "bob": PASSWORD}
#: carol (``login: stay``) only meets alpine, the one client that stays and follows
BACKEND_USERS = {**USERS, "carol": PASSWORD}
CLIENT_TIMEOUT_S = 15.0

HOME_ALICE = "alice INBOX on home"
HOME_BOB = "bob INBOX on home"
HOME_CAROL = "carol INBOX on home"
SHARED_SALES = "Sales on shared"


def need(binary: str, package: str) -> str:
    """The client's path; skip without it, but fail under CI=true."""
    path = shutil.which(binary)
    if path is None:
        hint = f"{binary} not installed: apt-get install {package}"
        if under_ci():
            pytest.fail(f"{hint} (CI=true: interop tests may not skip)")
        pytest.skip(hint)
    return path


# -- the door and its backends ----------------------------------------------------------


@dataclass
class Lab:
    """A refd door process in front of the home and shared backends."""

    port: int
    home: DovecotInstance
    shared: DovecotInstance
    daemon: Daemon
    directory: Path

    def logins(self, backend: DovecotInstance, user: str) -> int:
        return len(backend.wait_for_log(f"Login: user=<{user}>", timeout_s=0))

    def logged_in_since(
        self, backend: DovecotInstance, user: str, before: int, timeout_s: float = 2.0
    ) -> bool:
        """Whether ``backend`` logged a login of ``user`` beyond the first ``before``."""
        lines = backend.wait_for_log(f"Login: user=<{user}>", before + 1, timeout_s)
        return len(lines) > before

    def door_said(self, needle: str) -> str:
        return door_said(self.daemon, needle)

    def door_session(self, needle: str) -> str:
        return door_session(self.daemon, needle)

    def logs(self) -> str:
        return recent_logs(self.daemon, [self.home, self.shared])


def door_said(daemon: Daemon, needle: str) -> str:
    """A line of the door's log containing ``needle`` (waiting for it)."""
    for line in daemon.log:
        if needle in line:
            return line
    return daemon.wait_log(needle, timeout=5)


def door_session(daemon: Daemon, needle: str) -> str:
    """Every door log line of the connection that logged ``needle``, once it has ended.

    The door logs ``session end conn=ID`` last for each connection, so
    what a finished session did not log, it never will.
    """
    found = re.search(r" conn=(\S+) ", door_said(daemon, needle))
    assert found is not None, needle
    door_said(daemon, f"session end conn={found[1]} ")
    return "".join(line for line in daemon.log if f" conn={found[1]} " in line)


def recent_logs(daemon: Daemon, backends: list[DovecotInstance], lines: int = 12) -> str:
    """The last ``lines`` of the door's and each backend's log, for a failure message."""
    while True:
        try:
            daemon.log.append(daemon.lines.get_nowait())
        except queue.Empty:
            break
    parts = [f"--- door log ---\n{''.join(daemon.log[-lines:])}"]
    for backend in backends:
        tail = backend.log().splitlines()[-lines:]
        parts.append(f"--- {backend.name} log ---\n" + "\n".join(tail))
    return "\n".join(parts)


def seed(backend: DovecotInstance, user: str, mailbox: str, subject: str) -> None:
    """APPEND a message as ``user``; return once ``backend`` has logged that login.

    Dovecot logs asynchronously: logins counted afterwards are the client's.
    """
    needle = f"Login: user=<{user}>"
    before = len(backend.wait_for_log(needle, timeout_s=0))
    backend.seed(user, mailbox, subject)
    assert len(backend.wait_for_log(needle, before + 1)) > before, backend.log()


@pytest.fixture
def lab(tmp_path: Path, dovecot_factory: DovecotFactory) -> Iterator[Lab]:
    home = dovecot_factory(name="home", users=BACKEND_USERS)
    shared = dovecot_factory(name="shared", users=BACKEND_USERS)
    seed(home, "alice", "INBOX", HOME_ALICE)
    seed(home, "bob", "INBOX", HOME_BOB)
    seed(shared, "bob", "Shared/Sales", SHARED_SALES)
    port = free_port()
    (tmp_path / "routing.yaml").write_text(
        "version: 1\n"
        "servers:\n"
        f"  home: {{host: {home.host}, port: {home.port}}}\n"
        f"  shared: {{host: {shared.host}, port: {shared.port}}}\n"
        "users:\n"
        "  - {user: alice, server: home, login: refer}\n"
        "  - {user: bob, server: home, login: accept}\n"
        "  - {user: carol, server: home, login: stay}\n"
        "mailboxes:\n"
        '  - {match: "Shared/*", servers: [shared]}\n'
        "published:\n"
        "  - Shared/Sales\n"
    )
    config = DEMO_CONFIG.read_text().replace("port: 1143", f"port: {port}")
    config = config.replace("port: 9143", "port: 0").replace("port: 1180", "port: 0")
    (tmp_path / "refd.yaml").write_text(config)
    shutil.copy(DEMO_CONFIG.parent / "users.passwd", tmp_path / "users.passwd")
    daemon = Daemon(["serve", "-c", str(tmp_path / "refd.yaml")])
    try:
        daemon.wait_log("refd ready")
        yield Lab(port, home, shared, daemon, tmp_path)
    finally:
        daemon.stop()


def run(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run a batch client with ``home`` as HOME (no user config leaks in)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# -- interactive clients in a private tmux server --------------------------------------------


#: how alpine (c-client) ends a password prompt; the echo of what was typed follows it
PASSWORD_PROMPT = "ENTER PASSWORD:"


class Terminal:
    """One interactive client in its own tmux server, read as the rendered screen.

    The server's socket is in ``home`` (``-S``), private to this test, and
    :meth:`close` stops only that server. ``context`` adds the logs that
    matter (the door's and the backends') to a timeout's message.
    """

    def __init__(
        self,
        argv: list[str],
        home: Path,
        context: Callable[[], str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        need("tmux", "tmux")
        self.socket = str(home / "tmux.sock")
        self.context = context
        #: the password prompts answered, in order (alpine's
        #: ``HOST: ... USER: ... ENTER PASSWORD:`` lines, without the echo)
        self.prompts: list[str] = []
        variables = {"HOME": str(home), **(env or {})}
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
        command = " ".join(shlex.quote(a) for a in argv)
        # The shell stays after the client exits, so its last screen can be read.
        shell = f"env {assignments} {command}; echo '[client exited]'; sleep 600"
        self.tmux("new-session", "-d", "-s", "main", "-x", "200", "-y", "50", shell)

    def tmux(self, *args: str) -> str:
        argv = ["tmux", "-S", self.socket, "-f", "/dev/null", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "main")

    def keys(self, *keys: str) -> None:
        """Press ``keys`` (tmux key names: ``L``, ``Enter``)."""
        self.tmux("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "main", "-l", text)
        self.keys("Enter")

    def wait(self, done: Callable[[str], bool], *, password: str | None = None) -> str:
        """Poll the screen until ``done(screen)``; return that screen.

        ``done`` must test durable state: the message list, a title or status
        bar, a backend's log. A status-line message ("opened with ...",
        "Found on line 1") lasts only until the client's next event or key.

        With ``password``, each new password prompt is answered once. A
        prompt is known by its text up to ``ENTER PASSWORD:``, without the
        echo: a screen polled after the password was typed but before the
        client took the Enter shows ``ENTER PASSWORD: ******``, and answering
        that again sends the password as keystrokes into the next screen
        (in alpine's message index, ``s`` opens "Save to folder").
        """
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while True:
            screen = self.screen()
            if done(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {CLIENT_TIMEOUT_S} s; prompts answered {self.prompts}; "
                    f"last screen:\n{screen.rstrip()}\n{self.context()}"
                )
            for line in screen.splitlines():
                head, found, _ = line.partition(PASSWORD_PROMPT)
                prompt = (head + found).strip()
                if found and password is not None and prompt not in self.prompts:
                    self.prompts.append(prompt)
                    self.type(password)
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
        )


@pytest.fixture
def terminals(lab: Lab) -> Iterator[Callable[[list[str], Path], Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(argv: list[str], home: Path) -> Terminal:
        terminal = Terminal(argv, home, context=lab.logs)
        opened.append(terminal)
        return terminal

    yield open_terminal
    for terminal in opened:
        terminal.close()


# -- alpine (c-client) ------------------------------------------------------------------------


def alpine_home(lab: Lab, user: str, *, door_folders: bool = False) -> Path:
    """A HOME with a pinerc whose INBOX is ``user``'s INBOX at the door.

    ``door_folders``: the folder list (``L``) is the door's, listed there
    with RLIST.
    """
    door = f"{{127.0.0.1:{lab.port}/user={user}/norsh/notls}}"
    return pinerc_home(lab.directory / f"alpine-{user}", door, door_folders=door_folders)


def pinerc_home(home: Path, door: str, *, door_folders: bool = False) -> Path:
    """``home`` with a pinerc whose INBOX is ``{door}INBOX``; see `alpine_home`."""
    home.mkdir()
    # An existing ~/mail spares the "Creating subdirectory" message, which
    # holds the start for 4 s.
    (home / "mail").mkdir()
    # last-version-used skips the greeting screen; busy-cue-rate=0 and
    # status-message-delay=-1 keep status messages from hiding or delaying
    # the password prompts; no password file, so no "save it?" question.
    lines = [
        "personal-name=Test",
        "user-domain=example.org",
        "last-version-used=6.26",
        f"inbox-path={door}INBOX",
        "feature-list=quit-without-confirm,disable-password-file-saving",
        "busy-cue-rate=0",
        "status-message-delay=-1",
    ]
    if door_folders:
        lines.append(f"folder-collections=Door {door}[]")
    (home / "pinerc").write_text("".join(f"{line}\n" for line in lines))
    return home


def alpine(terminals: Callable[[list[str], Path], Terminal], home: Path, *args: str) -> Terminal:
    """alpine in ``home``; see `alpine_argv`."""
    return terminals(alpine_argv(home, *args), home)


def alpine_argv(home: Path, *args: str) -> list[str]:
    """alpine with ``home``'s pinerc, tracing IMAP (``-d flush,imap=4``), at the index (``-i``)."""
    binary = need("alpine", "alpine")
    return [binary, "-p", str(home / "pinerc"), "-d", "flush,imap=4", "-i", *args]


def alpine_trace(home: Path) -> str:
    """alpine's IMAP protocol trace (``-d flush,imap=4``), passwords suppressed."""
    lines = (home / ".pine-debug1").read_text(errors="replace").splitlines()
    return "\n".join(line.partition(": ")[2] for line in lines if line.startswith("IMAP DEBUG"))


def prompt_ports(terminal: Terminal) -> list[str]:
    """The port of each password prompt answered
    ("HOST: localhost:PORT (INSECURE)  USER: alice  ENTER PASSWORD:")."""
    return [p.split()[1].rpartition(":")[2] for p in terminal.prompts]


def test_alpine_follows_login_referral(
    lab: Lab, terminals: Callable[[list[str], Path], Terminal]
) -> None:
    home = alpine_home(lab, "alice")
    before = lab.logins(lab.home, "alice")
    terminal = alpine(terminals, home)

    # Durable proof of the follow: home logged alice in, and her INBOX's
    # message list is on screen.
    screen = terminal.wait(
        lambda s: HOME_ALICE in s and lab.logins(lab.home, "alice") > before,
        password=PASSWORD,
    )

    assert "Folder: INBOX" in screen
    lab.door_said("user=alice outcome=login-referral server=home")
    # The password was asked twice: once for the door, once for home.
    assert prompt_ports(terminal) == [str(lab.port), str(lab.home.port)], terminal.prompts
    referral = f"NO [REFERRAL imap://alice;AUTH=*@127.0.0.1:{lab.home.port}/]"
    trace = alpine_trace(home)
    assert referral in trace
    assert trace.index("LOGOUT") > trace.index(referral)


def test_alpine_follows_ok_login_referral_and_opens_home_inbox(
    lab: Lab, terminals: Callable[[list[str], Path], Terminal]
) -> None:
    # bob asks the door for Shared/Sales. c-client takes the OK [REFERRAL]
    # after LOGIN as a login referral (REFAUTH): it logs out of the door,
    # logs in at home and opens INBOX there, still labelled Shared/Sales.
    # No SELECT (so no mailbox referral) and no RLIST ever reach the door,
    # and the shared backend is never contacted.
    home = alpine_home(lab, "bob")
    folder = f"{{127.0.0.1:{lab.port}/user=bob/norsh/notls}}Shared/Sales"
    home_before = lab.logins(lab.home, "bob")
    shared_before = lab.logins(lab.shared, "bob")
    terminal = alpine(terminals, home, "-f", folder)

    screen = terminal.wait(
        lambda s: HOME_BOB in s and lab.logins(lab.home, "bob") > home_before,
        password=PASSWORD,
    )

    assert f"Folder: {folder}" in screen  # the title bar
    assert SHARED_SALES not in screen
    assert not lab.logged_in_since(lab.shared, "bob", shared_before, timeout_s=0.5)
    door = lab.door_session("user=bob outcome=accepted server=home")
    assert "kind=mailbox" not in door
    trace = alpine_trace(home)
    ok = f"OK [REFERRAL imap://bob;AUTH=*@127.0.0.1:{lab.home.port}/]"
    assert ok in trace
    at_door = trace[: trace.index("refd-test home ready")]
    assert "SELECT" not in at_door
    assert "RLIST" not in at_door
    assert "LOGOUT" in at_door.partition(ok)[2]


def test_alpine_stays_and_follows_mailbox_referrals(
    lab: Lab, terminals: Callable[[list[str], Path], Terminal]
) -> None:
    # carol is login: stay: a plain OK at LOGIN, so c-client stays at the
    # door. Its INBOX's SELECT is referred to home; the folder list is the
    # door's RLIST; opening Shared/Sales there is referred to shared. Each
    # referral is followed, with the password asked again at the backend.
    seed(lab.home, "carol", "INBOX", HOME_CAROL)
    seed(lab.shared, "carol", "Shared/Sales", SHARED_SALES)
    home = alpine_home(lab, "carol", door_folders=True)
    home_before = lab.logins(lab.home, "carol")
    shared_before = lab.logins(lab.shared, "carol")
    terminal = alpine(terminals, home)

    terminal.wait(
        lambda s: HOME_CAROL in s and lab.logins(lab.home, "carol") > home_before,
        password=PASSWORD,
    )
    terminal.keys("L")  # the folder list: RLIST "" % at the door
    terminal.wait(lambda s: "FOLDER LIST" in s and "Shared/" in s)
    terminal.keys("W")  # whereis: put the cursor on Shared/
    terminal.wait(lambda s: "Word to search for" in s)
    terminal.type("Shared")
    terminal.wait(lambda s: "Word to search for" not in s)
    terminal.keys("Enter")  # into Shared/: RLIST Shared/ %
    terminal.wait(lambda s: "Dir: Shared/" in s and "Sales" in s)
    terminal.keys("Enter")  # open Shared/Sales, the one folder there
    screen = terminal.wait(
        lambda s: SHARED_SALES in s and lab.logins(lab.shared, "carol") > shared_before,
        password=PASSWORD,
    )

    assert "Folder: Shared/Sales" in screen  # the title bar
    # The door once (its password is kept for the RLIST connection), then
    # each backend a referral led to.
    ports = [str(lab.port), str(lab.home.port), str(lab.shared.port)]
    assert prompt_ports(terminal) == ports, terminal.prompts
    first = lab.door_session("kind=mailbox command=SELECT server=home user=carol")
    assert "outcome=accepted server=-" in first  # a plain OK: no login referral
    lab.door_said("kind=mailbox command=SELECT server=shared user=carol")
    trace = alpine_trace(home)
    inbox = f"NO [REFERRAL imap://carol;AUTH=*@127.0.0.1:{lab.home.port}/INBOX]"
    sales = f"NO [REFERRAL imap://carol;AUTH=*@127.0.0.1:{lab.shared.port}/Shared/Sales]"
    order = [
        "SELECT INBOX",
        inbox,
        "refd-test home ready",
        'RLIST "" %',
        '* LIST (\\Noselect \\HasChildren) "/" Shared',
        "RLIST Shared/ %",
        '* LIST () "/" Shared/Sales',
        "SELECT Shared/Sales",
        sales,
        "refd-test shared ready",
    ]
    at = [trace.find(step) for step in order]
    assert -1 not in at and at == sorted(at), dict(zip(order, at, strict=True))


# -- mutt and neomutt -------------------------------------------------------------------


def muttrc(lab: Lab, user: str) -> Path:
    home = lab.directory / f"mutt-{user}"
    home.mkdir(exist_ok=True)
    rc = home / "muttrc"
    rc.write_text(
        f'set folder="imap://{user}@127.0.0.1:{lab.port}/"\n'
        'set spoolfile="+INBOX"\n'
        f'set imap_pass="{PASSWORD}"\n'
        "set ssl_starttls=no\n"
        "set ssl_force_tls=no\n"
        'set header_cache=""\n'
        'set message_cachedir=""\n'
    )
    return rc


@pytest.mark.parametrize(
    ("binary", "package", "user", "shown"),
    [
        pytest.param("mutt", "mutt", "alice", "Login failed.", id="mutt-login"),
        pytest.param("mutt", "mutt", "bob", "Remote mailbox. Try 127.0.0.1.", id="mutt-mailbox"),
        pytest.param("neomutt", "neomutt", "alice", "Unable to open mailbox", id="neomutt-login"),
        pytest.param("neomutt", "neomutt", "bob", "Unable to open mailbox", id="neomutt-mailbox"),
    ],
)
def test_mutt_does_not_follow_referrals(
    lab: Lab,
    terminals: Callable[[list[str], Path], Terminal],
    binary: str,
    package: str,
    user: str,
    shown: str,
) -> None:
    # alice: the login referral; bob: logged in at the door, the mailbox
    # referral for INBOX. Neither client connects to the backend.
    client = need(binary, package)
    rc = muttrc(lab, user)
    before = lab.logins(lab.home, user)
    terminal = terminals([client, "-n", "-F", str(rc)], rc.parent)

    # The status bar says the client has given up ("Mutt: (no mailbox)");
    # the message line keeps its last message until a key is pressed.
    screen = terminal.wait(lambda s: "(no mailbox) [Msgs:0]" in s and shown in s)

    if user == "alice":
        # mutt keeps the door connection after "Login failed."; the session
        # end line, which names the referral's server, comes when it goes.
        terminal.close()
        lab.door_said("user=alice outcome=login-referral server=home")
    else:
        lab.door_said("kind=mailbox command=SELECT server=home user=bob")
    assert not lab.logged_in_since(lab.home, user, before, timeout_s=0.5), screen


# -- batch clients ------------------------------------------------------------------------------


def test_curl_does_not_follow_referrals(lab: Lab) -> None:
    curl = need("curl", "curl")
    url = f"imap://127.0.0.1:{lab.port}/INBOX?ALL"
    before = {u: lab.logins(lab.home, u) for u in USERS}
    login = run([curl, "-sv", "-u", f"alice:{PASSWORD}", url], lab.directory)
    select = run([curl, "-sv", "-u", f"bob:{PASSWORD}", url], lab.directory)

    # curl 7.88 answers both with exit 67 (CURLE_LOGIN_DENIED).
    assert login.returncode == 67, login.stderr
    assert f"NO [REFERRAL imap://alice;AUTH=*@127.0.0.1:{lab.home.port}/]" in login.stderr
    assert select.returncode == 67, select.stderr
    assert f"NO [REFERRAL imap://bob;AUTH=*@127.0.0.1:{lab.home.port}/INBOX]" in select.stderr
    for user in USERS:
        assert not lab.logged_in_since(lab.home, user, before[user], timeout_s=0.5)


def fetchmailrc(lab: Lab, user: str) -> Path:
    rc = lab.directory / f"fetchmailrc-{user}"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {lab.port} protocol imap auth password\n"
        f"  user {user} password {PASSWORD} is root here\n"
        "  sslproto '' no sslcertck keep\n"
        '  mda "/bin/cat >/dev/null"\n'
    )
    rc.chmod(0o600)  # fetchmail refuses a readable rc file
    return rc


def test_fetchmail_does_not_follow_referrals(lab: Lab) -> None:
    fetchmail = need("fetchmail", "fetchmail")
    before = {u: lab.logins(lab.home, u) for u in USERS}
    done = {}
    for user in USERS:
        argv = [fetchmail, "-v", "-f", str(fetchmailrc(lab, user))]
        argv += ["--idfile", str(lab.directory / f"fetchids-{user}")]
        done[user] = run(argv, lab.directory)

    # Exit 3: authentication failed; exit 7: an error during the poll.
    alice, bob = done["alice"], done["bob"]
    assert alice.returncode == 3, alice.stdout + alice.stderr
    assert "NO [REFERRAL imap://alice;AUTH=*@127.0.0.1:" in alice.stdout + alice.stderr
    assert bob.returncode == 7, bob.stdout + bob.stderr
    assert "mailbox selection failed" in bob.stdout + bob.stderr
    lab.door_said("kind=mailbox command=SELECT server=home user=bob")
    for user in USERS:
        assert not lab.logged_in_since(lab.home, user, before[user], timeout_s=0.5)


def mbsyncrc(lab: Lab, user: str) -> Path:
    maildir = lab.directory / f"mbsync-{user}"
    maildir.mkdir()
    rc = lab.directory / f"mbsyncrc-{user}"
    rc.write_text(
        f"IMAPAccount door\nHost 127.0.0.1\nPort {lab.port}\nUser {user}\n"
        f"Pass {PASSWORD}\nSSLType None\nAuthMechs LOGIN\n\n"
        "IMAPStore remote\nAccount door\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\n\n"
        "Channel door\nFar :remote:\nNear :local:\nPatterns INBOX\n"
        "Create Near\nSyncState *\n"
    )
    return rc


def test_mbsync_does_not_follow_referrals(lab: Lab) -> None:
    mbsync = need("mbsync", "isync")
    before = {u: lab.logins(lab.home, u) for u in USERS}
    alice = run([mbsync, "-c", str(mbsyncrc(lab, "alice")), "-a"], lab.directory)
    bob = run([mbsync, "-c", str(mbsyncrc(lab, "bob")), "-a"], lab.directory)

    assert alice.returncode == 1
    assert "NO [REFERRAL imap://alice;AUTH=*@127.0.0.1:" in alice.stderr
    assert bob.returncode == 1
    assert "far side box INBOX cannot be opened" in bob.stderr
    lab.door_said("kind=mailbox command=SELECT server=home user=bob")
    for user in USERS:
        assert not lab.logged_in_since(lab.home, user, before[user], timeout_s=0.5)


def offlineimaprc(lab: Lab, user: str) -> Path:
    rc = lab.directory / f"offlineimaprc-{user}"
    rc.write_text(
        f"[general]\naccounts = door\nmetadata = {lab.directory}/offlineimap-{user}\n\n"
        "[Account door]\nlocalrepository = local\nremoterepository = remote\n\n"
        f"[Repository local]\ntype = Maildir\nlocalfolders = {lab.directory}/oi-mail-{user}\n\n"
        f"[Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {lab.port}\n"
        f"remoteuser = {user}\nremotepass = {PASSWORD}\nssl = no\nstarttls = no\n"
        "auth_mechanisms = LOGIN\n"
    )
    return rc


def test_offlineimap_does_not_follow_referrals(lab: Lab) -> None:
    offlineimap = need("offlineimap", "offlineimap3")
    before = {u: lab.logins(lab.home, u) for u in USERS}
    alice = run(
        [offlineimap, "-c", str(offlineimaprc(lab, "alice")), "-o", "-u", "basic"], lab.directory
    )
    bob = run(
        [offlineimap, "-c", str(offlineimaprc(lab, "bob")), "-o", "-u", "basic"], lab.directory
    )

    assert "[REFERRAL imap://alice;AUTH=*@127.0.0.1:" in alice.stdout + alice.stderr
    # bob is logged in at the door; LIST there shows no remote mailbox
    # (RFC 2193 §3), so offlineimap finds nothing to sync and never SELECTs.
    assert "no folder to sync" in bob.stdout + bob.stderr
    door = lab.door_session("user=bob outcome=accepted server=home")
    assert "kind=mailbox" not in door
    for user in USERS:
        assert not lab.logged_in_since(lab.home, user, before[user], timeout_s=0.5)


def test_python_imaplib_does_not_follow_referrals(lab: Lab) -> None:
    before = {u: lab.logins(lab.home, u) for u in USERS}
    referral = r"\[REFERRAL imap://alice;AUTH=\*@"
    with (
        imaplib.IMAP4("127.0.0.1", lab.port, timeout=10) as client,
        pytest.raises(imaplib.IMAP4.error, match=referral),
    ):
        client.login("alice", PASSWORD)
    with imaplib.IMAP4("127.0.0.1", lab.port, timeout=10) as client:
        client.login("bob", PASSWORD)
        status, data = client.select("INBOX")
        assert status == "NO"
        assert data[0].startswith(b"[REFERRAL imap://bob;AUTH=*@127.0.0.1:")
    for user in USERS:
        assert not lab.logged_in_since(lab.home, user, before[user], timeout_s=0.5)
