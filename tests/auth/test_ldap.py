"""The ldap source's pure parts and its config: values in, values out.

The exchange with a directory is tested against a real slapd in
tests/interop/test_ldap.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refd.auth import ldap as ldap_module
from refd.auth.ldap import (
    LdapServer,
    LdapSource,
    check_filter_template,
    escape_filter_value,
    expand_filter,
    normalize_dn,
)
from refd.config.loader import DEMO_CONFIG, load_config, load_service
from refd.config.tree import TreeError


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("alice", "alice"),
        ("*", "\\2a"),
        ("a*)(uid=*", "a\\2a\\29\\28uid=\\2a"),
        ("back\\slash", "back\\5cslash"),
        ("nul\0", "nul\\00"),
        ("\\2a", "\\5c2a"),  # an escape typed by the user stays text
        ("jürgen", "jürgen"),  # UTF-8 is sent as it is (RFC 4515 §3)
    ],
)
def test_rfc_4515_escaping(value: str, escaped: str) -> None:
    assert escape_filter_value(value) == escaped


def test_filter_template_variables() -> None:
    template = "(&(uid=%u)(|(mailLocal=%n)(domain=%d))(pct=100%%))"
    assert expand_filter(template, "a*@ex(ample).org") == (
        "(&(uid=a\\2a@ex\\28ample\\29.org)(|(mailLocal=a\\2a)(domain=ex\\28ample\\29.org))"
        "(pct=100%))"
    )
    assert expand_filter("(uid=%n)(d=%d)", "alice") == "(uid=alice)(d=)"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("uid=%u", "a filter is written in parentheses, e.g. (uid=%u)"),
        ("(uid=%x)", "unknown variable after % (known: %u, %n, %d, %%)"),
        ("(&(uid=%u)", "unbalanced parentheses"),
        ("(uid=%u))(x=1)", "unbalanced parentheses"),
    ],
)
def test_bad_filter_templates(template: str, problem: str) -> None:
    got = check_filter_template(template)
    assert got is not None and got.startswith(problem[:20]), got


def test_good_filter_templates() -> None:
    for template in (
        "(uid=%u)",
        "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))",
        "(!(pwdAccountLockedTime=*))",
    ):
        assert check_filter_template(template) is None, template


def test_dn_normalisation() -> None:
    # The server's escaping, case and spacing do not make another entry.
    assert normalize_dn("UID=J\\C3\\BCrgen, OU=People,dc=Example,DC=org") == normalize_dn(
        "uid=jürgen,ou=people,dc=example,dc=org"
    )
    assert normalize_dn("cn=a\\2Cb,dc=x") == normalize_dn("CN=A\\,B,DC=X")
    assert normalize_dn("cn=a\\2Cb,dc=x") != normalize_dn("cn=a,cn=b,dc=x")
    assert normalize_dn("uid=alice,ou=people,dc=example,dc=org") == (
        "uid=alice,ou=people,dc=example,dc=org"
    )


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("ldap://ldap1.example.org", LdapServer("ldap1.example.org", 389, False)),
        ("ldaps://ldap1.example.org", LdapServer("ldap1.example.org", 636, True)),
        ("LDAP://[2001:db8::1]:1389/", LdapServer("2001:db8::1", 1389, False)),
    ],
)
def test_server_urls(url: str, server: LdapServer) -> None:
    assert LdapServer.from_url(url) == server


@pytest.mark.parametrize(
    ("url", "starttls", "error"),
    [
        ("http://x", False, "'http://x': an ldap:// or ldaps:// URL"),
        ("ldap://x/dc=org", False, "only ldap[s]://host[:port]"),
        ("ldaps://x", True, "starttls is for ldap:// URLs"),
        ("ldap://x:99999", False, "the port is not a number from 1 to 65535"),
        ("ldap://", False, "no host"),
    ],
)
def test_bad_server_urls(url: str, starttls: bool, error: str) -> None:
    with pytest.raises(ValueError) as info:
        LdapServer.from_url(url, starttls=starttls)
    assert error in str(info.value)


# -- config -------------------------------------------------------------------------

CONFIG = """\
routing: routing.yaml
auth:
  source: ldap
  ldap:
    servers: [ldap://127.0.0.1:1389, ldap://127.0.0.2:1389]
    starttls: true
    ca_file: ca.pem
    bind_dn: cn=refd,ou=services,dc=example,dc=org
    bind_password_file: ldap.secret
    base: ou=people,dc=example,dc=org
    user_filter: "(&(objectClass=inetOrgPerson)(uid=%u))"
    usable_filter: "(!(employeeType=disabled))"
    route_attribute: mailHost
    pool_size: 4
    timeout_s: 8
listeners:
  - {address: 127.0.0.1, port: 1143}
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    shutil.copy(DEMO_CONFIG.parent / "routing.yaml", tmp_path / "routing.yaml")
    (tmp_path / "ldap.secret").write_text("service-secret\n")
    import trustme

    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def test_a_complete_config_builds_the_source(cfgdir: Path) -> None:
    (cfgdir / "refd.yaml").write_text(CONFIG)
    service = load_service(load_config(cfgdir / "refd.yaml"))
    source = service.auth
    assert isinstance(source, LdapSource)
    s = source.settings
    assert s.servers == (
        LdapServer("127.0.0.1", 1389, False, True),
        LdapServer("127.0.0.2", 1389, False, True),
    )
    assert (s.bind_dn, s.bind_password) == (
        "cn=refd,ou=services,dc=example,dc=org",
        "service-secret",
    )
    assert "service-secret" not in repr(s)
    assert (s.mode, s.scope, s.route_attribute, s.route_first) == (
        "bind",
        "subtree",
        "mailHost",
        True,
    )
    assert (s.pool_size, s.connect_timeout_s, s.operation_timeout_s, s.timeout_s) == (
        4,
        3.0,
        5.0,
        8.0,
    )
    source.close()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("    servers: [ldap://127.0.0.1:1389, ldap://127.0.0.2:1389]", "    servers: [http://x]"),
         ":5: auth.ldap.servers: 'http://x': an ldap:// or ldaps:// URL"),
        (('    user_filter: "(&(objectClass=inetOrgPerson)(uid=%u))"', '    user_filter: "uid=%u"'),
         ":11: auth.ldap.user_filter: a filter is written in parentheses"),
        (('    usable_filter: "(!(employeeType=disabled))"', '    usable_filter: "(!(a=%q))"'),
         ":12: auth.ldap.usable_filter: unknown variable after %"),
        (("    bind_password_file: ldap.secret\n", ""),
         ":5: auth.ldap: bind_dn and bind_password_file go together"),
        (("    base: ou=people,dc=example,dc=org\n", ""),
         ":5: auth.ldap: missing key 'base'"),
        (("    timeout_s: 8", "    timeout_s: 2"),
         ":5: auth.ldap: connect_timeout_s and operation_timeout_s must not exceed timeout_s"),
        (("    pool_size: 4", "    pool_size: 0"), ":14: auth.ldap.pool_size"),
        (("    pool_size: 4", "    mode: guess"), ":14: mode must be one of bind, compare"),
        (("    starttls: true\n", ""), ":6: auth.ldap.ca_file: no server uses TLS"),
        (("    pool_size: 4", "    bind_password: x"),
         ':14: unknown key "bind_password" in auth.ldap'),
    ],
)  # fmt: skip
def test_config_errors_name_file_and_line(
    cfgdir: Path, change: tuple[str, str], error: str
) -> None:
    old, new = change
    assert old in CONFIG
    (cfgdir / "refd.yaml").write_text(CONFIG.replace(old, new))
    with pytest.raises(TreeError) as info:
        load_config(cfgdir / "refd.yaml")
    assert str(info.value).startswith(f"{cfgdir}/refd.yaml{error}"), str(info.value)


def test_a_missing_password_file_is_reported_at_build(cfgdir: Path) -> None:
    (cfgdir / "ldap.secret").unlink()
    (cfgdir / "refd.yaml").write_text(CONFIG)
    with pytest.raises(TreeError) as info:
        load_service(load_config(cfgdir / "refd.yaml"))
    assert str(info.value) == (
        f"{cfgdir}/refd.yaml:5: cannot read {cfgdir}/ldap.secret: No such file or directory"
    )


def test_the_commented_example_in_config_parses(cfgdir: Path) -> None:
    example = Path(__file__).parents[2] / "config" / "refd.yaml"
    lines = example.read_text().splitlines()
    start = lines.index(
        '  # ldap:                            # for source: ldap (a directory; README "LDAP")'
    )
    block = ["  ldap:"]
    for line in lines[start + 1 :]:
        if not line.startswith("  #   "):
            break
        block.append("    " + line[len("  #   ") :])
    text = CONFIG[: CONFIG.index("  ldap:")] + "\n".join(block) + "\nlisteners:\n"
    text += "  - {address: 127.0.0.1, port: 1143}\n"
    (cfgdir / "refd.yaml").write_text(text)
    config = load_config(cfgdir / "refd.yaml")
    ldap = config.auth
    assert ldap.servers == (
        LdapServer("ldap1.example.org", 636, True),
        LdapServer("ldap2.example.org", 636, True),
    )
    assert (ldap.route_attribute, ldap.usable_filter) == ("mailHost", "(!(pwdAccountLockedTime=*))")
    # Every key of auth.ldap is in the example.
    assert {line.split(":")[0].strip() for line in block[1:]} == set(ldap_module._LDAP_KEYS)


def test_refd_check_names_the_directory(cfgdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from refd.cli import main

    path = cfgdir / "refd.yaml"
    path.write_text(CONFIG.replace("port: 1143", "port: 0"))
    assert main(["check", "-c", str(path)]) == 0
    assert (
        "  auth: ldap ldap://127.0.0.1:1389, ldap://127.0.0.2:1389 (StartTLS): bind mode, "
        "base ou=people,dc=example,dc=org, home from mailHost"
    ) in capsys.readouterr().out.splitlines()
