"""The daemon config loader: values, defaults, and file:line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refd.auth.imap_backend import ID_FIELDS, ImapBackendSource
from refd.auth.trust import TrustSource
from refd.config.loader import DEMO_CONFIG, load_config, load_service
from refd.config.tree import TreeError
from refd.limits import Limits

BASE = """\
routing: routing.yaml
auth:
  source: passwd-file
  passwd_file: users.passwd
listeners:
  - {address: 127.0.0.1, port: 1143}
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    return tmp_path


def write(cfgdir: Path, text: str) -> Path:
    path = cfgdir / "refd.yaml"
    path.write_text(text)
    return path


def test_defaults(cfgdir: Path) -> None:
    config = load_config(write(cfgdir, BASE))
    assert config.limits == Limits()
    assert (
        config.policy.auth_failure_delay_s == 2.0 and config.policy.auth_failure_delay_max_s == 15.0
    )
    assert [str(n) for n in config.policy.trusted_networks] == ["127.0.0.0/8", "::1/128"]
    assert config.listeners[0].tls == "none" and not config.listeners[0].proxy_protocol
    assert config.auth.path == cfgdir / "users.passwd"


def test_limits_and_proxy(cfgdir: Path) -> None:
    text = BASE.replace("port: 1143}", "port: 1143, proxy_protocol: true}") + (
        "proxy_networks: [10.0.0.0/8]\n"
        "limits:\n  max_connections_per_address: 5\n  preauth_idle_timeout_s: 30\n"
        "  max_password_bytes: 4096\n"
    )
    config = load_config(write(cfgdir, text))
    assert config.limits.max_password_bytes == 4096
    assert config.listeners[0].proxy_protocol
    assert config.limits.max_connections_per_address == 5
    assert config.limits.preauth_idle_timeout_s == 30.0


BAD = [
    (BASE + "limits:\n  max_connections: 0143\n", ":8: "),
    (BASE + "limits:\n  bogus: 1\n", ":8: "),
    (BASE + "limits:\n  idle_timeout_s: 0\n", ":8: limits.idle_timeout_s must be more than 0"),
    (BASE + "limits:\n  max_password_bytes: 0\n", ":8: limits.max_password_bytes"),
    (BASE + "limits:\n  max_password_bytes: 4097\n", ":8: limits.max_password_bytes"),
    (
        BASE.replace("port: 1143}", "port: 1143, proxy_protocol: true}"),
        ":6: listener imap0 accepts PROXY headers but proxy_networks is empty",
    ),
    (
        BASE.replace("port: 1143}", "port: 1143, tls: implicit}"),
        ":6: listener imap0 uses TLS but there is no tls: section",
    ),
    (
        BASE + "trusted_networks: [10.0.0.1/8]\n",
        ":7: trusted_networks: 10.0.0.1/8 has host bits set",
    ),
    (
        BASE.replace("source: passwd-file\n  passwd_file: users.passwd", "source: kerberos"),
        ":3: source must be one of passwd-file, imap, trust, auth_http, ldap, not 'kerberos'",
    ),
    (
        BASE.replace(
            "source: passwd-file\n  passwd_file: users.passwd",
            "source: trust\n  trust_networks: [0.0.0.0/0]",
        ),
        ":4: auth.trust_networks: 0.0.0.0/0 reaches beyond private address space; "
        "anyone there could log in as anyone (set trust_allow_public: true if meant)",
    ),
    (BASE.replace("auth:", "auth:\n  advertise_plain: yes"), ":3: "),
]


@pytest.mark.parametrize(("text", "error"), BAD)
def test_bad_config(cfgdir: Path, text: str, error: str) -> None:
    path = write(cfgdir, text)
    with pytest.raises(TreeError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}{error}"), str(info.value)


def test_trust_source(cfgdir: Path) -> None:
    text = BASE.replace(
        "source: passwd-file\n  passwd_file: users.passwd",
        "source: trust\n  trust_networks: [10.1.0.0/16]",
    )
    service = load_service(load_config(write(cfgdir, text)))
    assert service.auth == TrustSource((__import__("ipaddress").ip_network("10.1.0.0/16"),))


def test_bad_tls_files(cfgdir: Path) -> None:
    (cfgdir / "cert.pem").write_text("not a certificate\n")
    text = BASE + "tls:\n  cert: cert.pem\n  key: cert.pem\n"
    config = load_config(write(cfgdir, text))
    with pytest.raises(TreeError) as info:
        load_service(config)
    assert str(info.value).startswith(f"{cfgdir / 'refd.yaml'}:8: cannot load TLS certificate")


IMAP = BASE.replace(
    "source: passwd-file\n  passwd_file: users.passwd",
    "source: imap\n  imap:\n    server: 127.0.0.1:143",
)


@pytest.mark.parametrize(
    ("setting", "fields"),
    [
        ("", ()),  # off by default: the backend must trust refd first
        ("    send_id: false\n", ()),
        ("    send_id: true\n", ID_FIELDS),
        (
            "    send_id: [x-originating-ip, X-Session-ID]\n",
            ("x-originating-ip", "x-session-id"),
        ),
    ],
)
def test_imap_send_id(cfgdir: Path, setting: str, fields: tuple[str, ...]) -> None:
    text = IMAP.replace("    server: 127.0.0.1:143\n", "    server: 127.0.0.1:143\n" + setting)
    config = load_config(write(cfgdir, text))
    assert config.auth.send_id == fields
    source = load_service(config).auth
    assert isinstance(source, ImapBackendSource) and source.send_id == fields


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("[x-originating-ip, x-forward-user]", ":6: auth.imap.send_id: unknown field"),
        ("[x-session-id, x-session-id]", ":6: auth.imap.send_id: a field is named twice"),
        ("yes", ":6: "),
    ],
)
def test_imap_send_id_errors(cfgdir: Path, setting: str, error: str) -> None:
    text = IMAP.replace("127.0.0.1:143\n", f"127.0.0.1:143\n    send_id: {setting}\n")
    path = write(cfgdir, text)
    with pytest.raises(TreeError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}{error}"), str(info.value)
