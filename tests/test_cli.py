"""The ``refd`` command as an admin runs it: real processes, exit codes, output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from refd import __version__
from refd.cli import main
from refd.config.loader import DEMO_CONFIG
from tests.conftest import EXPECTED_BUILD
from tests.procs import Daemon, free_port, session

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"refd {__version__} ({EXPECTED_BUILD})\n"


def test_check_shipped_examples(capsys: pytest.CaptureFixture[str]) -> None:
    files = [CONFIG / "refd.yaml", CONFIG / "routing.yaml", DEMO_CONFIG]
    assert main(["check", *map(str, files)]) == 0
    # Each file's OK line; what was checked follows it, indented.
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("  ")]
    assert out[0].startswith(f"{CONFIG / 'refd.yaml'}: OK (daemon config; routing table sha256 ")
    assert out[1].startswith(f"{CONFIG / 'routing.yaml'}: OK (routing table sha256 ")
    assert out[2].startswith(f"{DEMO_CONFIG}: OK (daemon config; ")


BROKEN = [
    (
        "servers:\n  m1: {host: a.example, port: 0143}\nversion: 1\n",
        "routing.yaml:2: servers.m1.port: write 143, leading zeros are not allowed",
    ),
    ("version: 1\nservers: [\n", "routing.yaml:3: invalid YAML"),
    (
        "version: 1\nservers:\n  m1: {host: a.example}\nusers:\n  - user: x\n    server: m2\n",
        "routing.yaml:6: ",
    ),
]


@pytest.mark.parametrize(("text", "error"), BROKEN)
def test_check_broken_routing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"refd check: {tmp_path}/{error}"), err


def test_check_broken_daemon_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "refd.yaml"
    cfg.write_text(
        "routing: routing.yaml\nauth: {source: passwd-file, passwd_file: users.passwd}\n"
        "listeners:\n  - {address: 127.0.0.1, port: 1143, tls: maybe}\n"
    )
    assert main(["check", str(cfg)]) == 1
    assert capsys.readouterr().err == (
        f"refd check: {cfg}:4: tls must be one of none, starttls, implicit, not 'maybe'\n"
    )


def test_check_missing_file_named_by_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "refd.yaml"
    shutil.copy(CONFIG / "routing.yaml", tmp_path / "routing.yaml")
    shutil.copy(CONFIG / "users.map", tmp_path / "users.map")
    cfg.write_text(
        "routing: routing.yaml\nauth: {source: passwd-file, passwd_file: nope.passwd}\n"
        "listeners:\n  - {address: 127.0.0.1, port: 1143}\n"
    )
    assert main(["check", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"refd check: {cfg}:2: cannot read {tmp_path}/nope.passwd: No such file or directory\n"
    )


def test_explain_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "bob", "Shared/Sales"]) == 0
    out = capsys.readouterr().out
    assert (
        "NO [REFERRAL imap://bob;AUTH=*@shared1.example.org/Shared/Sales "
        "imap://bob;AUTH=*@shared2.example.org/Shared/Sales]" in out
    )
    assert main(["explain", "nobody"]) == 2


def test_explain_routing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-r", str(CONFIG / "routing.yaml"), "alice@example.org"]) == 0
    out = capsys.readouterr().out
    assert "NO [REFERRAL imap://alice%40example.org;AUTH=*@mail1.example.org/]" in out


# --- the daemon as a real process -------------------------------------------


@pytest.fixture
def demo_copy(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    text = DEMO_CONFIG.read_text().replace("port: 1143", f"port: {port}")
    text = text.replace("port: 9143", f"port: {free_port()}").replace("port: 1180", "port: 0")
    text = text.replace("failure_delay_s: 2", "failure_delay_s: 0.1")
    (tmp_path / "refd.yaml").write_text(text)
    yield tmp_path / "refd.yaml", port


def test_serve_refer_reload_and_stop(demo_copy: tuple[Path, int]) -> None:
    cfg, port = demo_copy
    daemon = Daemon(["serve", "-c", str(cfg)])
    try:
        daemon.wait_log("refd ready")
        out = session(port, b"a1 LOGIN alice secret", b"a2 LOGIN alice wrong")
        assert out[1] == (
            b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
            b"Your mail is on mail1.example.org; connect there.\r\n"
        )
        assert out[2] == b"a2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"

        # A broken table is refused on SIGHUP; the one in service stays.
        routing = cfg.parent / "routing.yaml"
        good = routing.read_text()
        routing.write_text(
            good.replace("host: mail1.example.org", "host: mail1.example.org\n    port: 0143")
        )
        daemon.proc.send_signal(signal.SIGHUP)
        line = daemon.wait_log("reload failed")
        assert f"{routing}:" in line and "leading zeros" in line
        assert session(port, b"a1 LOGIN alice secret")[1].startswith(
            b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]"
        )
        # A good new table goes into service without a restart.
        routing.write_text(good.replace("host: mail1.example.org", "host: mail9.example.org"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload ok")
        assert session(port, b"a1 LOGIN alice secret")[1].startswith(
            b"a1 NO [REFERRAL imap://alice;AUTH=*@mail9.example.org/]"
        )
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=20) == 0
        daemon.wait_log("stopping on SIGTERM")
    finally:
        daemon.stop()
    # Passwords never reach the log, right or wrong.
    everything = "".join(daemon.log) + "".join(daemon.lines.queue)
    assert "user=alice" in everything
    assert "secret" not in everything and "wrong" not in everything


#: what the embedded demo listens on: IMAP, autodiscovery (HTTP), metrics
DEMO_PORTS = (1143, 1180, 9143)


def skip_unless_demo_ports_free() -> None:
    for port in DEMO_PORTS:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is taken on this machine")


def test_serve_without_config_runs_the_demo() -> None:
    port = 1143
    skip_unless_demo_ports_free()
    daemon = Daemon(["serve"])
    try:
        daemon.wait_log("refd ready")
        out = session(port, b"a1 LOGIN bob secret", b"a2 SELECT Shared/Sales", b"a3 LOGOUT")
        assert out[0].startswith(b"* OK [CAPABILITY IMAP4rev1 ")
        assert out[2].startswith(b"a1 OK [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/]")
        assert out[3].startswith(
            b"a2 NO [REFERRAL imap://bob;AUTH=*@shared1.example.org/Shared/Sales "
        )
        assert out[-1] == b"a3 OK LOGOUT completed.\r\n"
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(timeout=20) == 0
    finally:
        daemon.stop()


AUTODISCOVER_ALICE = (
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/'
    'requestschema/2006"><Request><EMailAddress>alice@example.org</EMailAddress>'
    "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/"
    "responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"
)


def curl(*args: str) -> str:
    """curl as the README runs it: the body, exit 0 (-f: an HTTP error fails)."""
    done = subprocess.run(
        ["curl", "-sS", "-f", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stderr) == (0, ""), done
    return done.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_lines_against_the_demo() -> None:
    """Right after ``refd serve`` (no -c): the three account-setup lines of the README."""
    skip_unless_demo_ports_free()
    daemon = Daemon(["serve"])
    try:
        daemon.wait_log("refd ready")
        alice = curl("http://127.0.0.1:1180/mail/config-v1.1.xml?emailaddress=alice@example.org")
        assert "<hostname>mail1.example.org</hostname>" in alice
        assert '<incomingServer type="imap">' in alice
        bob = curl("http://127.0.0.1:1180/mail/config-v1.1.xml?emailaddress=bob@example.org")
        incoming = bob.split('<incomingServer type="imap">')[1].split("</incomingServer>")[0]
        assert "<hostname>mail2.example.org</hostname>" in incoming
        assert "<port>10143</port>" in incoming
        answer = curl(
            "-u",
            "alice:secret",
            "-d",
            AUTODISCOVER_ALICE,
            "http://127.0.0.1:1180/autodiscover/autodiscover.xml",
        )
        imap = answer.split("<Type>IMAP</Type>")[1].split("</Protocol>")[0]
        assert "<Server>mail1.example.org</Server>" in imap
        assert "<LoginName>alice</LoginName>" in imap
        daemon.wait_log("protocol=autodiscover method=POST result=ok status=200 user=alice")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=20) == 0
    finally:
        daemon.stop()
    everything = "".join(daemon.log) + "".join(daemon.lines.queue)
    assert "secret" not in everything


def test_json_logs(demo_copy: tuple[Path, int]) -> None:
    cfg, port = demo_copy
    daemon = Daemon(["serve", "-c", str(cfg), "--log-format", "json"])
    try:
        daemon.wait_log('"refd ready')
        session(port, b"a1 LOGIN alice secret", b"a2 LOGIN alice wrong")
        daemon.wait_log("session end")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=20) == 0
    finally:
        daemon.stop()
    lines = daemon.log + list(daemon.lines.queue)
    records = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    events: dict[str, list[dict[str, object]]] = {}
    for r in records:
        events.setdefault(str(r.get("event")), []).append(r)
    # The start-up line: version, config path, table and config hashes.
    (start,) = events["start"]
    assert start["version"] == __version__
    assert start["config"] == str(cfg)
    assert re.fullmatch(r"[0-9a-f]{64}", str(start["routing_sha256"]))
    assert re.fullmatch(r"[0-9a-f]{64}", str(start["config_sha256"]))
    # One process: it hashes on every core it may run on.
    assert start["hash_threads"] == len(os.sched_getaffinity(0))
    assert start["msg"].startswith(f"refd {__version__} starting config={cfg} ")  # type: ignore[union-attr]
    # The ready line names the build that runs (refd/compiled.py).
    (ready,) = events["ready"]
    assert ready["build"] == EXPECTED_BUILD
    assert (
        ready["msg"]
        == f"refd ready routing_sha256={start['routing_sha256']} build={EXPECTED_BUILD}"
    )
    # A login referral and its plain success are DEBUG lines: at INFO the
    # session end line names the user and the server.
    assert "referral" not in events
    (end,) = events["session_end"]
    assert {k: end[k] for k in ("client", "listener", "tls", "user", "outcome", "server")} == {
        "client": "127.0.0.1",
        "listener": "imap",
        "tls": False,
        "user": "alice",  # referred away, still named
        "outcome": "login-referral",
        "server": "mail1",
    }
    assert isinstance(end["duration_s"], float) and isinstance(end["conn"], str)
    assert end["msg"] == (  # the text format's line
        f"session end conn={end['conn']} addr=127.0.0.1 listener=imap tls=no user=alice "
        f"outcome=login-referral server=mail1 duration={end['duration_s']:.3f}"
    )
    (auth,) = events["auth"]  # the failure only
    assert {k: auth[k] for k in ("outcome", "source", "reason")} == {
        "outcome": "failed",
        "source": "passwd-file",
        "reason": "password mismatch",
    }
    assert not any("secret" in line or "wrong" in line for line in lines)


def test_probe_is_dispatched(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's own --command option must not clash with the subcommand.
    assert main(["probe", "--door", "127.0.0.1:1", "--user", "x", "--password-env", "NOPE"]) == 2
    assert "the variable NOPE is not set" in capsys.readouterr().err
    monkeypatch.setenv("PW", "x")
    port = free_port()  # nobody listens there
    args = ["probe", "--door", f"127.0.0.1:{port}", "--user", "x", "--password-env", "PW"]
    assert main([*args, "--command", "EXAMINE", "--timeout", "2"]) == 8
    assert f"door 127.0.0.1:{port}: connection refused" in capsys.readouterr().out
