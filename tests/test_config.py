"""The daemon config loader: values, defaults, and file:line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refd.auth.imap_backend import ID_FIELDS, ImapBackendSource
from refd.auth.trust import TrustSource
from refd.config import loader
from refd.config.loader import DEMO_CONFIG, load_config, load_service, read_text, read_text_pieces
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
    *(
        (BASE + "autodiscovery:\n  listeners:\n" + text, error)
        for text, error in [
            (
                "    - {name: imap0, address: 127.0.0.1, port: 80}\n",
                ":9: listener name 'imap0' is used twice (first at line 6)",
            ),
            (
                "    - {address: 127.0.0.1, port: 80, tls: starttls}\n",
                ":9: tls must be one of none, implicit, not 'starttls'",
            ),
            (
                "    - {address: 127.0.0.1, port: 443, tls: implicit}\n",
                ":9: listener http0 uses TLS but there is no tls: section",
            ),
            (
                "    - {address: 127.0.0.1, port: 80, proxy_protocol: true}\n",
                ":9: listener http0 accepts PROXY headers but proxy_networks is empty",
            ),
            (
                "    - {address: www.example.org, port: 80}\n",
                ":9: autodiscovery.listeners[0].address 'www.example.org' is not an IP address",
            ),
            (
                "    - {address: 127.0.0.1, port: 80}\n  sign_profiles: true\n",
                ":10: autodiscovery.sign_profiles signs with the TLS certificate, "
                "and there is no tls: section",
            ),
            (
                "    - {address: 127.0.0.1, port: 80}\n  hosts: [autoconfig.example.org:80]\n",
                ":10: autodiscovery.hosts: 'autoconfig.example.org:80' is not a host name",
            ),
            (
                "    - {address: 127.0.0.1, port: 80}\n  require_auth: [autoconfig]\n",
                ":10: autodiscovery.require_auth: 'autoconfig' is not one of autodiscover, "
                "mobileconfig (autoconfig is never authenticated)",
            ),
            (
                "    - {address: 127.0.0.1, port: 80}\n  limits: {max_body_bytes: 100}\n",
                ":10: autodiscovery.limits.max_body_bytes must be between 256 and 16777216",
            ),
            (
                "    - {address: 127.0.0.1, port: 80}\n  limits: {idle_timeout_s: 0}\n",
                ":10: autodiscovery.limits.idle_timeout_s must be more than 0",
            ),
            ("  per_user: true\n", ":8: autodiscovery.listeners: at least one listener is needed"),
        ]
    ),
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


def test_autodiscovery_values(cfgdir: Path) -> None:
    text = BASE + (
        "autodiscovery:\n"
        "  listeners: [{name: web, address: '::1', port: 0}]\n"
        "  per_user: false\n"
        "  require_auth: mobileconfig\n"
        "  hosts: [Setup.Example.ORG, '[2001:db8::1]', 192.0.2.1]\n"
        "  limits: {max_header_bytes: 4096, request_timeout_s: 2.5}\n"
    )
    config = load_config(write(cfgdir, text))
    ad = config.autodiscovery
    assert ad is not None and config.http_listeners == ad.listeners
    assert ad.listeners[0].name == "web" and ad.listeners[0].address == "::1"
    assert ad.policy.per_user is False and ad.policy.require_auth == ("mobileconfig",)
    assert ad.policy.hosts == ("setup.example.org", "2001:db8::1", "192.0.2.1")
    assert (ad.policy.limits.max_header_bytes, ad.policy.limits.request_timeout_s) == (4096, 2.5)
    assert ad.policy.limits.max_body_bytes == 16384  # the default
    # What a request consults goes into the service (a reload replaces it).
    assert load_service(config).autodiscovery == ad.policy
    assert load_config(write(cfgdir, BASE)).autodiscovery is None


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


def test_read_text_pieces_is_read_text_cut_at_line_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "PIECE_CHARS", 7)
    path = tmp_path / "users.map"
    path.write_bytes(b"a@x mail1\r\nb@x m\xc3\xa4il2\rc@x mail1\nlong-line-without-end")
    pieces = read_text_pieces(path)
    assert (
        "".join(pieces)
        == read_text(path)
        == ("a@x mail1\nb@x m\u00e4il2\nc@x mail1\nlong-line-without-end")
    )
    assert len(pieces) > 3 and all(p.endswith("\n") for p in pieces[:-1])
    path.write_bytes(b"a@x mail1\n" * 5 + b"\xff mail1\n")
    with pytest.raises(TreeError) as err:
        read_text_pieces(path, referer="routing.yaml", line=3)
    assert str(err.value) == (
        f"routing.yaml:3: cannot read {path}: 'utf-8' codec can't decode byte 0xff "
        "in position 50: invalid start byte"
    )
    with pytest.raises(TreeError) as err:
        read_text_pieces(tmp_path / "nope", referer="routing.yaml", line=3)
    assert (
        str(err.value) == f"routing.yaml:3: cannot read {tmp_path}/nope: No such file or directory"
    )


def test_read_text_pieces_paced_pauses_between_pieces_and_keeps_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `bulk_pacing` (a reload's thread) the read, and each walk of its
    pieces, sleeps the pause once per ``work_s`` of work: here, work_s=0, once
    per piece.  Without it nothing sleeps."""
    monkeypatch.setattr(loader, "PIECE_CHARS", 10)
    slept: list[float] = []
    monkeypatch.setattr(loader.time, "sleep", slept.append)
    path = tmp_path / "users.map"
    path.write_text("".join(f"u{i}@x mail\n" for i in range(5)))  # 10 characters a line
    plain = read_text_pieces(path)
    assert list(plain) == [f"u{i}@x mail\n" for i in range(5)] and slept == []
    token = loader.bulk_pacing.set(loader.Pacing(work_s=0.0, pause_s=0.25))
    try:
        paced = read_text_pieces(path)
    finally:
        loader.bulk_pacing.reset(token)
    assert slept == [0.25] * 5  # one per block read
    assert paced == plain and "".join(paced) == path.read_text()
    assert slept == [0.25] * 10  # the join walked the pieces, pausing after each
    for _ in plain:
        pass
    assert len(slept) == 10  # the read that was not paced is not paced to walk
