"""``refd dns``: zone-file records for the routing table's domains (exact output, exit codes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refd.cli import main
from refd.config.loader import DEMO_CONFIG

DEMO_ROUTING = DEMO_CONFIG.parent / "routing.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dns", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    line = next(
        i for i, t in enumerate(DEMO_ROUTING.read_text().splitlines(), 1) if t == "  example.org:"
    )
    assert out == (
        f"; refd dns: records for the mail domains of {DEMO_ROUTING} (routing of {DEMO_CONFIG})\n"
        f"; example.org: server mail1 ({DEMO_ROUTING}:{line}), "
        "setup documents offer IMAP mail1.example.org:143 starttls\n"
        "_imap._tcp.example.org.         IN SRV   0 1 143 mail1.example.org.\n"
        "_imaps._tcp.example.org.        IN SRV   0 0 0 .  ; server mail1 has no imaps_port\n"
        "_submission._tcp.example.org.   IN SRV   0 1 587 smtp.example.org.\n"
        "_submissions._tcp.example.org.  IN SRV   0 0 0 .  "
        "; submission is smtp.example.org:587 only\n"
        "autoconfig.example.org.         IN CNAME localhost.\n"
        "autodiscover.example.org.       IN CNAME localhost.\n"
        "_autodiscover._tcp.example.org. IN SRV   0 1 443 localhost.\n"
    )


RICH = """\
version: 1
servers:
  mail1:
    host: imap1.example.net
    port: 143
    imaps_port: 993
    submission: smtp1.example.net:465
  mail2:
    host: imap2.example.net
    port: 10143
    imaps_port: 10993
    client_tls: starttls
  lab:
    host: "2001:db8::5"
users:
  - {glob: "*@b.example", server: mail2}
  - {default: true, server: lab}
domains:
  A.Example:
    server: mail1
    submission: smtp.a.example
  b.example:
    submission: {host: smtp.b.example, port: 2525, tls: implicit}
  lab.example: {}
"""


def test_a_richer_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(RICH)
    code, out, err = run(capsys, "-r", str(path), "--web-host", "Setup.Example.NET")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"; refd dns: records for the mail domains of {path}",
        f"; a.example: server mail1 ({path}:19), setup documents offer IMAP "
        "imap1.example.net:993 implicit",
        "_imap._tcp.a.example.           IN SRV   10 1 143 imap1.example.net.",
        "_imaps._tcp.a.example.          IN SRV   0 1 993 imap1.example.net.",
        # the server's own submission wins over the domain's
        "_submissions._tcp.a.example.    IN SRV   0 1 465 smtp1.example.net.",
        "_submission._tcp.a.example.     IN SRV   0 0 0 .  "
        "; submission is smtp1.example.net:465 only",
        "autoconfig.a.example.           IN CNAME setup.example.net.",
        "autodiscover.a.example.         IN CNAME setup.example.net.",
        "_autodiscover._tcp.a.example.   IN SRV   0 1 443 setup.example.net.",
        "",
        f"; b.example: server mail2 ({path}:22), setup documents offer IMAP "
        "imap2.example.net:10143 starttls",
        "_imap._tcp.b.example.           IN SRV   0 1 10143 imap2.example.net.",
        "_imaps._tcp.b.example.          IN SRV   10 1 10993 imap2.example.net.",
        "_submissions._tcp.b.example.    IN SRV   0 1 2525 smtp.b.example.",
        "_submission._tcp.b.example.     IN SRV   0 0 0 .  "
        "; submission is smtp.b.example:2525 only",
        "autoconfig.b.example.           IN CNAME setup.example.net.",
        "autodiscover.b.example.         IN CNAME setup.example.net.",
        "_autodiscover._tcp.b.example.   IN SRV   0 1 443 setup.example.net.",
        "",
        f"; lab.example: server lab ({path}:24), setup documents offer IMAP "
        "[2001:db8::5]:143 starttls",
        "; _imap._tcp.lab.example. not published: the host of server lab is the IP address "
        "2001:db8::5, and an SRV target must be a host name (RFC 2782)",
        "_imaps._tcp.lab.example.        IN SRV   0 0 0 .  ; server lab has no imaps_port",
        "; _submission._tcp.lab.example. no submission records: neither domains.lab.example "
        "nor server lab names a submission server",
        "autoconfig.lab.example.         IN CNAME setup.example.net.",
        "autodiscover.lab.example.       IN CNAME setup.example.net.",
        "_autodiscover._tcp.lab.example. IN SRV   0 1 443 setup.example.net.",
    ]


def test_an_ip_web_host_gets_address_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "-c", str(DEMO_CONFIG), "--web-host", "2001:DB8::80")
    assert code == 0
    lines = out.splitlines()
    assert "autoconfig.example.org.         IN AAAA 2001:db8::80" in lines
    assert "autodiscover.example.org.       IN AAAA 2001:db8::80" in lines
    assert lines[-1] == (
        "; _autodiscover._tcp.example.org. not published: the autodiscovery host is the IP "
        "address 2001:db8::80, and an SRV target must be a host name (RFC 2782)"
    )


def test_a_bad_table_exits_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(RICH.replace("    server: mail1\n", "    server: mail9\n"))
    code, out, err = run(capsys, "-r", str(path), "--web-host", "setup.example.net")
    assert (code, out) == (2, "")
    assert err == (
        f'refd dns: {path}:20: domains.a.example.server: unknown server "mail9" '
        "(servers: mail1, mail2, lab)\n"
    )


def test_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "refd.yaml"
    config.write_text(DEMO_CONFIG.read_text().replace("hostname: localhost", "hostname: [a]"))
    code, out, err = run(capsys, "-c", str(config))
    assert (code, out) == (2, "")
    assert err.startswith(f"refd dns: {config}:4: hostname must be a single value")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("-r", "ROUTING"),
            "refd dns: with --routing, name the autodiscovery host: --web-host HOST",
        ),
        (
            ("--web-host", "setup.example.net:443"),
            'refd dns: --web-host "setup.example.net:443": a host name, without a port',
        ),
        (
            ("--web-host", "a:b:c"),
            'refd dns: --web-host "a:b:c": write an IPv6 address in brackets, [::1]:143',
        ),
    ],
)
def test_bad_arguments_exit_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = tuple(str(DEMO_ROUTING) if a == "ROUTING" else a for a in argv)
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (2, "", message + "\n")


def test_no_domains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("version: 1\nservers: {m: {host: h}}\n")
    code, out, err = run(capsys, "-r", str(path), "--web-host", "w.example")
    assert (code, out) == (1, "")
    assert err == (f"refd dns: {path} has no domains: section; add one (see config/routing.yaml)\n")


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    # `refd dns | head -1` on a table whose records outgrow the pipe (64 KiB):
    # the write fails once the reader has gone.
    domains = "".join(f"  d{n}.example: {{server: m}}\n" for n in range(2000))
    path = tmp_path / "routing.yaml"
    path.write_text(f"version: 1\nservers: {{m: {{host: mail.example}}}}\ndomains:\n{domains}")
    with subprocess.Popen(
        [sys.executable, "-m", "refd", "dns", "-r", str(path), "--web-host", "w.example"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        first = reader.stdout.readline()
        reader.stdout.close()
        err = reader.stderr.read()
        assert reader.wait(timeout=60) == 1
    assert first.startswith(b"; refd dns: records for the mail domains of ")
    assert err == b""
