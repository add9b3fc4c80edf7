"""One ``host[:port]`` reader, and every place that reads the notation agrees with it.

`refd.routing.url.split_host_port` is the reader; the daemon config
(``sibling``, ``auth.imap.server``), the routing table (``self``) and
``refd probe --door`` each put their own words in front of its message.
The table of refusals runs through all four.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refd.config.loader import DEMO_CONFIG, load_config
from refd.config.tree import TreeError
from refd.probe import UsageError, parse_hostport
from refd.routing.url import split_host_port
from tests.routing._support import load

ACCEPTED = [
    ("mail.example.org", "mail.example.org", None, 143),
    ("mail.example.org:10143", "mail.example.org", "10143", 10143),
    ("192.0.2.1:993", "192.0.2.1", "993", 993),
    ("[::1]", "::1", None, 143),
    ("[2001:db8::1]:993", "2001:db8::1", "993", 993),
]

REFUSED = [
    # Address, or address and port? Brackets say which (RFC 3986 §3.2.2).
    ("2001:db8::1:143", "write an IPv6 address in brackets, [::1]:143"),
    ("::1", "write an IPv6 address in brackets, [::1]:143"),
    ("[::1", "write [IPv6]:PORT"),
    ("[::1]143", "write [IPv6]:PORT"),
    ("[::1]:", "empty port"),
    ("mail.example.org:", "empty port"),
    ("[mail.example.org]:143", "brackets are only for IPv6 addresses"),
]


@pytest.mark.parametrize(("text", "host", "port", "_number"), ACCEPTED)
def test_split_host_port(text: str, host: str, port: str | None, _number: int) -> None:
    assert split_host_port(text) == (host, port)


@pytest.mark.parametrize(("text", "error"), REFUSED)
def test_split_host_port_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^" + error.replace("[", r"\[").replace("]", r"\]")):
        split_host_port(text)


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    return tmp_path


def daemon_config(cfgdir: Path, key: str, text: str) -> Path:
    """refd.yaml whose line 7 is `key: "text"` (sibling or auth.imap.server)."""
    if key == "sibling":
        auth = "auth:\n  source: passwd-file\n  passwd_file: users.passwd\n"
        tail = f'sibling: "{text}"\n'
    else:
        auth = f'auth:\n  source: imap\n  imap:\n    server: "{text}"\n'
        tail = ""
    head = "routing: routing.yaml\nlisteners:\n  - {address: 127.0.0.1, port: 1143}\n"
    path = cfgdir / "refd.yaml"
    path.write_text(head + auth + tail)
    return path


@pytest.mark.parametrize(("text", "host", "_port", "number"), ACCEPTED)
def test_every_reader_accepts_alike(
    cfgdir: Path, text: str, host: str, _port: str | None, number: int
) -> None:
    assert load_config(daemon_config(cfgdir, "sibling", text)).policy.sibling == (host, number)
    imap = load_config(daemon_config(cfgdir, "auth.imap.server", text)).auth
    assert imap is not None and imap.server == (host, number)
    load(f'version: 1\nself: ["{text}"]\nservers: {{a: {{host: h}}}}\n')
    assert parse_hostport(text, 143) == (host, number)


@pytest.mark.parametrize(("text", "error"), REFUSED)
def test_every_reader_refuses_alike(cfgdir: Path, text: str, error: str) -> None:
    path = daemon_config(cfgdir, "sibling", text)
    with pytest.raises(TreeError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:7: sibling: {error}"

    path = daemon_config(cfgdir, "auth.imap.server", text)
    with pytest.raises(TreeError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:7: auth.imap.server: {error}"

    with pytest.raises(TreeError) as info:
        load(f'version: 1\nself: ["{text}"]\nservers: {{a: {{host: h}}}}\n')
    assert str(info.value) == f"routing.yaml:2: self[1]: {error}"

    with pytest.raises(UsageError) as usage:
        parse_hostport(text, 143)
    assert str(usage.value) == f"--door {text!r}: {error}"
