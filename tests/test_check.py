"""``refd check`` as an admin runs it: each trap, exact output and exit code.

Every test runs the command as a process.  Traps: the file kind (explicit
``-c`` / ``--routing``, an empty file, a passwd-file or a key given by
mistake -- never quoted), a tab in the YAML, passwd-file users without a
route, start-up failures found before ``serve`` (port clashes, metrics on an
IMAP port, an address the host lacks), public ``trusted_networks`` on a
listener without TLS, and a world-readable TLS key.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.procs import free_port, free_ports

ROUTING = """\
version: 1
servers:
  mail1: {host: mail1.example.org}
users:
  - user: alice@example.org
    server: mail1
"""
HASH = (
    "{SHA512-CRYPT}$6$S6xSR8Vf3sGBY/eN$hRrH0Eovl2jQA9vTOYs5yLW/8tVOLpLQgbAy49u9azT8aGqVhR7q"
    "WRVhX0kDB6rxu31wOSwaSLkeXrY/eyOKu0"
)
PASSWD = f"alice@example.org:{HASH}\n"


def refd(*args: str | Path) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "refd", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def config(tmp_path: Path, extra: str = "", *, listeners: str | None = None) -> Path:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    if not (tmp_path / "users.passwd").exists():
        (tmp_path / "users.passwd").write_text(PASSWD)
    if listeners is None:
        listeners = f"  - {{name: imap, address: 127.0.0.1, port: {free_port()}}}\n"
    path = tmp_path / "refd.yaml"
    path.write_text(
        "routing: routing.yaml\n"
        "auth: {source: passwd-file, passwd_file: users.passwd}\n"
        f"listeners:\n{listeners}{extra}"
    )
    return path


# -- what kind of file, and what was checked ------------------------------------------


def test_explicit_kinds_and_what_was_checked(tmp_path: Path) -> None:
    cfg = config(tmp_path, listeners="  - {name: imap, address: 127.0.0.1, port: 0}\n")
    routing = tmp_path / "routing.yaml"
    sha = hashlib.sha256(ROUTING.encode()).hexdigest()[:12]
    code, out, err = refd("check", "-c", cfg, "--routing", routing)
    assert (code, err) == (0, "")
    table = "1 server, 1 user rule, 0 user_map entries, 0 mailbox rules, 0 published mailboxes"
    assert out.splitlines() == [
        f"{cfg}: OK (daemon config; routing table sha256 {sha})",
        f"  routing table {routing}: {table}",
        f"  auth: passwd-file {tmp_path / 'users.passwd'}: 1 user",
        "  listeners: imap 127.0.0.1:0 tls none",
        f"{routing}: OK (routing table sha256 {sha})",
        f"  {table}",
    ]


def test_an_empty_daemon_config_is_called_empty(tmp_path: Path) -> None:
    empty = tmp_path / "refd.yaml"
    empty.write_text("# nothing yet\n")
    assert refd("check", "-c", empty) == (
        1,
        "",
        f"refd check: {empty}:1: the daemon configuration is empty: "
        "it needs routing, auth, listeners\n",
    )
    assert refd("check", empty) == (
        1,
        "",
        f"refd check: {empty}: the file is empty, neither a daemon config nor a routing "
        "table; name its kind: refd check -c CONFIG, or refd check --routing FILE\n",
    )


def test_no_secret_from_a_file_given_by_mistake(tmp_path: Path) -> None:
    passwd = tmp_path / "users.passwd"
    passwd.write_text(PASSWD + "bob:{PLAIN}hunter2\n")
    key = tmp_path / "key.pem"
    trustme.CA().issue_cert("imap.example.org").private_key_pem.write_to_path(str(key))
    secrets = ["S6xSR8Vf3sGBY", "hunter2", "$6$", key.read_text().splitlines()[1][:20]]
    assert refd("check", passwd) == (
        1,
        "",
        f"refd check: {passwd}: this looks like a passwd-file (user:password lines), not a "
        "refd file; a passwd-file is checked with the daemon config that names it: "
        "refd check -c CONFIG\n",
    )
    assert refd("check", key) == (
        1,
        "",
        f"refd check: {key}: this is a PEM certificate or key, not a refd file\n",
    )
    not_a_mapping = (
        "must be a YAML mapping (key: value), and this file is plain text (is it the right file?)"
    )
    assert refd("check", "--routing", passwd) == (
        1,
        "",
        f"refd check: {passwd}:1: the routing file {not_a_mapping}\n",
    )
    for args in (["-c", passwd], ["-c", key], ["--routing", key]):
        code, out, err = refd("check", *args)
        assert code == 1 and not_a_mapping in err
        assert not any(s in out + err for s in secrets), err


def test_a_tab_is_named_a_tab(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text("version: 1\nservers:\n\tmail1: {host: mail1.example.org}\n")
    assert refd("check", "--routing", routing) == (
        1,
        "",
        f"refd check: {routing}:3: invalid YAML: a tab character at column 1; "
        "YAML indents with spaces only, so replace the tab with spaces\n",
    )


# -- the password source against the routing table -------------------------------------


def test_passwd_users_without_a_route_are_a_warning(tmp_path: Path) -> None:
    users = ["alice@example.org", *(f"user{i}@elsewhere.example" for i in range(1, 8))]
    (tmp_path / "users.passwd").write_text(
        "".join(f"{u}:{HASH}\n" for u in users) + "locked@elsewhere.example:\n"
    )
    cfg = config(tmp_path)
    code, out, err = refd("check", cfg)
    assert code == 0
    assert out.startswith(f"{cfg}: OK (daemon config; ")
    assert err == (
        f"refd check: {cfg}:2: warning: 7 of 8 users in {tmp_path / 'users.passwd'} have no "
        f"route in {tmp_path / 'routing.yaml'}; their logins get NO [UNAVAILABLE]: "
        "user1@elsewhere.example, user2@elsewhere.example, user3@elsewhere.example, "
        "user4@elsewhere.example, user5@elsewhere.example, ...\n"
    )


def test_unusable_lines_and_weak_schemes_are_warnings(tmp_path: Path) -> None:
    passwd = tmp_path / "users.passwd"
    passwd.write_text(
        f"alice@example.org:{HASH}\n"
        "bob@example.org:{SSHA}L9qz7gS7Wx/7R+nSHJoizbiCfso2d8zh\n"
        "carol@example.org:{NOPE}hunter2\n"
        "dave@example.org:{PLAIN}hunter2\n"
        "erin@example.org:{SSHA.B64}oyU8jzeQc4q5yCb6JnLvFcDYxtZdQK/g\n"
        "# a comment\n"
        "frank@example.org:d.eSsVuuYTv7I\n"
        "grace@example.org:{PBKDF2}$1$HzZ7EaTyGN74L820$5000$"
        "9169f636ff2699a4714f50dec6b75b07bbd9d87d\n"
        "heidi@example.org:{SHA256}hunter2\n"
        "ivan@example.org:{MD5}$1$lG1onFDv$QfarpVJvFNK4Vh3f/nQIN1\n"
        "judy@example.org:{MD5-CRYPT}$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.\n"
    )
    cfg = config(tmp_path)
    (tmp_path / "routing.yaml").write_text(ROUTING + "  - default: true\n    server: mail1\n")
    code, out, err = refd("check", cfg)
    assert code == 0  # warnings do not change the exit code: refd serve starts
    assert out.startswith(f"{cfg}: OK (daemon config; ")
    assert "  auth: passwd-file " + str(passwd) + ": 10 users" in out.splitlines()
    rehash = (
        "refd verifies it, but rehash with ARGON2ID, BLF-CRYPT or SHA512-CRYPT "
        "(doveadm pw -s SCHEME)"
    )
    schemes = (
        "ARGON2I, ARGON2ID, BLF-CRYPT, CLEAR, CLEARTEXT, CRYPT, DES-CRYPT, LDAP-MD5, MD5, "
        "MD5-CRYPT, PBKDF2, PLAIN, PLAIN-MD5, PLAIN-TRUNC, SHA, SHA1, SHA256, SHA256-CRYPT, "
        "SHA512, SHA512-CRYPT, SMD5, SSHA, SSHA256, SSHA512"
    )
    assert err.splitlines() == [
        f"refd check: {passwd}:3: warning: user carol@example.org cannot log in: "
        f"unsupported scheme NOPE; refd verifies {schemes}",
        f"refd check: {passwd}:9: warning: user heidi@example.org cannot log in: "
        f"malformed SHA256 password: digest is 5 bytes, expected 32; refd verifies {schemes}",
        f"refd check: {passwd}:2: warning: weak scheme SSHA: one salted SHA-1; 2 users, "
        f"the first on this line; {rehash}",
        f"refd check: {passwd}:4: warning: weak scheme PLAIN: the password is stored in clear; "
        f"1 user, the first on this line; {rehash}",
        f"refd check: {passwd}:7: warning: weak scheme CRYPT (DES-CRYPT): DES crypt, only 8 "
        f"characters of the password count; 1 user, the first on this line; {rehash}",
        f"refd check: {passwd}:10: warning: weak scheme MD5 (MD5-CRYPT): MD5-crypt, 1000 MD5 "
        f"rounds; 1 user, the first on this line; {rehash}",
        f"refd check: {passwd}:11: warning: weak scheme MD5-CRYPT: MD5-crypt, 1000 MD5 rounds; "
        f"1 user, the first on this line; {rehash}",
    ]
    assert "hunter2" not in out + err


# -- what would stop refd serve on this host ------------------------------------------------


def clashes(port: int, metrics: int) -> list[tuple[str, str, str]]:
    """(listeners, extra config, the message at line 5 of the config)."""
    return [
        (
            f"  - {{name: a, address: 127.0.0.1, port: {port}}}\n"
            f"  - {{name: b, address: 127.0.0.1, port: {port}}}\n",
            "",
            f"listener b on 127.0.0.1:{port} clashes with listener a on 127.0.0.1:{port} "
            "(line 4): two listeners cannot share a port",
        ),
        (
            f"  - {{name: a, address: 0.0.0.0, port: {port}}}\n"
            f"  - {{name: b, address: 127.0.0.1, port: {port}}}\n",
            "",
            f"listener b on 127.0.0.1:{port} clashes with listener a on 0.0.0.0:{port} "
            "(line 4): two listeners cannot share a port",
        ),
        (
            f"  - {{name: a, address: 127.0.0.1, port: {port}}}\n"
            f"  - {{name: b, address: 127.0.0.1, port: {metrics}}}\n",
            f"metrics: {{address: 127.0.0.1, port: {port}}}\n",
            f"metrics on 127.0.0.1:{port} clashes with listener a on 127.0.0.1:{port} "
            "(line 4): metrics and IMAP need a port each",
        ),
    ]


@pytest.mark.parametrize("case", range(3))
def test_port_clashes_are_found_by_check_and_serve(tmp_path: Path, case: int) -> None:
    listeners, extra, message = clashes(*free_ports(2))[case]
    cfg = config(tmp_path, extra, listeners=listeners)
    line = 6 if extra else 5
    assert refd("check", "-c", cfg) == (1, "", f"refd check: {cfg}:{line}: {message}\n")
    assert refd("serve", "-c", cfg) == (1, "", f"refd: {cfg}:{line}: {message}\n")


def test_an_address_the_host_does_not_have(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): on no host's interfaces.
    cfg = config(tmp_path, listeners="  - {name: imap, address: 192.0.2.1, port: 143}\n")
    assert refd("check", cfg) == (
        1,
        "",
        f"refd check: {cfg}:4: listener imap: 192.0.2.1 is not an address of this host "
        "(Cannot assign requested address)\n",
    )


# -- allowed, but probably not meant --------------------------------------------------------


def test_public_trusted_networks_on_a_listener_without_tls(tmp_path: Path) -> None:
    port = free_port()
    public = config(
        tmp_path,
        "trusted_networks: [10.0.0.0/8, 0.0.0.0/0]\n",
        listeners=f"  - {{name: imap, address: 0.0.0.0, port: {port}}}\n",
    )
    code, _, err = refd("check", public)
    assert code == 0
    assert err == (
        f"refd check: {public}:5: warning: trusted_networks: 0.0.0.0/0 reaches beyond private "
        f"address space, and listener imap (0.0.0.0:{port}, tls: none) lets trusted clients "
        "log in without TLS: passwords from there may cross the internet in clear\n"
    )
    private = config(tmp_path, "trusted_networks: [10.0.0.0/8]\n")
    assert refd("check", private)[::2] == (0, "")


def test_a_world_readable_tls_key(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("imap.example.org")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    key = tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    cfg = config(
        tmp_path,
        "tls: {cert: cert.pem, key: key.pem}\n",
        listeners=f"  - {{name: imaps, address: 127.0.0.1, port: {free_port()}, tls: implicit}}\n",
    )
    key.chmod(0o644)
    assert refd("check", cfg)[::2] == (
        0,
        f"refd check: {cfg}:5: warning: tls.key {key} is readable by every user "
        f"(mode 0644); chmod o-r {key}\n",
    )
    key.chmod(0o640)
    assert refd("check", cfg)[::2] == (0, "")


# -- referral ports that are implicit-TLS ports -----------------------------------------

IMPLICIT_ROUTING = """\
version: 1
servers:
  mail1: {host: mail1.example.org}
  tls993:
    host: mail2.example.org
    port: 993
  same:
    host: mail3.example.org
    port: 10993
    imaps_port: 10993
  fine:
    host: mail4.example.org
    port: 143
    imaps_port: 993
users:
  - user: alice@example.org
    server: mail1
"""
ALPINE = (
    ": referral URLs name this port, and alpine rebuilds the connection from the URL "
    "alone, connects in plaintext and hangs until the server drops it (3 minutes with "
    "Dovecot); name the STARTTLS port in port and the implicit-TLS one in imaps_port\n"
)


def test_a_referral_port_that_is_an_implicit_tls_port_is_a_warning(tmp_path: Path) -> None:
    routing = tmp_path / "table.yaml"
    routing.write_text(IMPLICIT_ROUTING)
    warnings = (
        f"refd check: {routing}:6: warning: servers.tls993.port 993 is 993, the implicit-TLS "
        f"IMAP port{ALPINE}"
        f"refd check: {routing}:9: warning: servers.same.port 10993 equals its imaps_port, an "
        f"implicit-TLS port{ALPINE}"
    )
    code, out, err = refd("check", "--routing", routing)
    assert (code, err) == (0, warnings)
    assert out.startswith(f"{routing}: OK (routing table sha256 ")
    # with the daemon config that names the table: the same warnings, still exit 0
    cfg = config(tmp_path)
    (tmp_path / "routing.yaml").write_text(IMPLICIT_ROUTING)
    code, out, err = refd("check", "-c", cfg)
    assert (code, err) == (0, warnings.replace(str(routing), str(tmp_path / "routing.yaml")))
    assert out.startswith(f"{cfg}: OK (daemon config; ")


def test_the_shipped_tables_have_no_implicit_tls_referral_port() -> None:
    root = Path(__file__).resolve().parents[1]
    for path in (root / "config" / "routing.yaml", root / "refd" / "demo" / "routing.yaml"):
        code, _, err = refd("check", "--routing", path)
        assert (code, err) == (0, ""), path


def test_autodiscovery_is_summarised_and_a_table_without_domains_warned(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "autodiscovery:\n"
        "  listeners: [{name: web, address: 127.0.0.1, port: 0}]\n"
        "  require_auth: []\n",
    )
    code, out, err = refd("check", "-c", cfg)
    assert code == 0
    assert (
        "  autodiscovery: web 127.0.0.1:0 tls none; 0 domains; per_user yes; require_auth none"
        in (out.splitlines())
    )
    assert err == (
        f"refd check: {cfg}:6: warning: autodiscovery is served but the routing table has no "
        "domains: section, so every setup request gets 404 (add the mail domains to the "
        "routing table)\n"
    )


def test_a_domain_without_a_submission_server_is_a_warning(tmp_path: Path) -> None:
    routing = tmp_path / "table.yaml"
    routing.write_text(
        "version: 1\n"
        "servers:\n"
        "  mail1: {host: mail1.example.org}\n"
        "  mail2: {host: mail2.example.org, submission: smtp2.example.org}\n"
        "users:\n"
        "  - default: true\n"
        "    server: mail1\n"
        "domains:\n"
        "  a.example: {}\n"
        "  b.example: {server: mail2}\n"
    )
    code, _, err = refd("check", "--routing", routing)
    assert (code, err) == (
        0,
        f"refd check: {routing}:9: warning: domains.a.example has no submission (nor has its "
        "server mail1): setup documents then name no outgoing server, which Thunderbird "
        "refuses and Apple profiles require; add submission: host[:port]\n",
    )
