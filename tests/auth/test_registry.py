"""The table of authentication sources: a new source is one entry and one module."""

from __future__ import annotations

import importlib
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.registry import AUTH_SOURCES, AuthSourceSpec, BuildContext, ParseContext
from refd.config.loader import DEMO_CONFIG, load_config, load_service, resolve_path
from refd.config.tree import TreeError
from refd.daemon import watched_files


def test_every_entry_names_a_module_with_its_spec() -> None:
    for name, module in AUTH_SOURCES.items():
        spec = importlib.import_module(module).SPEC
        assert isinstance(spec, AuthSourceSpec) and spec.name == name


@dataclass(frozen=True)
class TokenConfig:
    token_file: Path
    line: int


@dataclass(frozen=True)
class TokenSource:
    """A source that accepts the one password in a file (for this test only)."""

    token: str
    name: str = "token"

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        ok = request.password == self.token
        status = AuthStatus.SUCCESS if ok else AuthStatus.FAILURE
        return AuthResult(status, request.user, "token")


def _parse(ctx: ParseContext) -> TokenConfig:
    node = ctx.reader.require(ctx.auth, "token_file", "auth")
    path = resolve_path(ctx.file, ctx.reader.as_str(node, "auth.token_file"))
    return TokenConfig(path, node.line)


def _build(settings: TokenConfig, ctx: BuildContext) -> TokenSource:
    try:
        return TokenSource(settings.token_file.read_text().strip())
    except OSError:
        raise TreeError(str(ctx.file), settings.line, "cannot read the token file") from None


@pytest.fixture
def token_source(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("refd_test_token_source")
    module.SPEC = AuthSourceSpec(  # type: ignore[attr-defined]
        name="token",
        keys=frozenset({"token_file"}),
        parse=_parse,
        build=_build,
        watched=lambda s: (s.token_file,),
        warning=lambda s: "token source in use",
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(AUTH_SOURCES, "token", module.__name__)


CONFIG = """\
routing: routing.yaml
auth:
  source: token
  token_file: token.txt
listeners:
  - {address: 127.0.0.1, port: 1143}
"""


def test_a_registered_source_is_parsed_built_and_watched(
    token_source: None, tmp_path: Path
) -> None:
    shutil.copy(DEMO_CONFIG.parent / "routing.yaml", tmp_path / "routing.yaml")
    (tmp_path / "token.txt").write_text("s3cret\n")
    (tmp_path / "refd.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "refd.yaml")
    assert config.auth == TokenConfig(tmp_path / "token.txt", 4)
    service = load_service(config)
    assert isinstance(service.auth, TokenSource)
    result = trio.run(service.auth.authenticate, AuthRequest("alice", "s3cret", "127.0.0.1"))
    assert result.status is AuthStatus.SUCCESS
    assert tmp_path / "token.txt" in watched_files(config, service)


def test_a_registered_source_reports_its_errors(token_source: None, tmp_path: Path) -> None:
    shutil.copy(DEMO_CONFIG.parent / "routing.yaml", tmp_path / "routing.yaml")
    (tmp_path / "refd.yaml").write_text(CONFIG.replace("  token_file: token.txt\n", ""))
    with pytest.raises(TreeError) as err:
        load_config(tmp_path / "refd.yaml")
    assert "token_file" in str(err.value) and str(err.value).startswith(f"{tmp_path}/refd.yaml:")
    (tmp_path / "refd.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "refd.yaml")
    with pytest.raises(TreeError) as err:
        load_service(config)
    assert str(err.value) == f"{tmp_path / 'refd.yaml'}:4: cannot read the token file"


def test_unknown_keys_and_sources_name_the_registered_ones(tmp_path: Path) -> None:
    (tmp_path / "refd.yaml").write_text(CONFIG.replace("token_file: token.txt", "x: 1"))
    with pytest.raises(TreeError) as err:
        load_config(tmp_path / "refd.yaml")
    assert str(err.value) == (
        f'{tmp_path}/refd.yaml:4: unknown key "x" in auth (known keys: advertise_plain, auth_http, '
        "failure_delay_max_s, failure_delay_s, imap, ldap, passwd_file, source, "
        "trust_allow_public, trust_networks)"
    )
    (tmp_path / "refd.yaml").write_text(CONFIG.replace("  token_file: token.txt\n", ""))
    with pytest.raises(TreeError) as err:
        load_config(tmp_path / "refd.yaml")
    assert str(err.value) == (
        f"{tmp_path}/refd.yaml:3: source must be one of passwd-file, imap, trust, auth_http, "
        "ldap, not 'token'"
    )


def test_a_source_ca_file_that_cannot_be_loaded_names_file_and_line(tmp_path: Path) -> None:
    # One loader for every source's ca_file (imap, auth_http, ldap).
    from refd.auth.registry import BuildContext
    from refd.config.tree import TreeError
    from tests.routing._support import load

    ctx = BuildContext(tmp_path / "refd.yaml", load("version: 1\nservers: {m: {host: h}}\n"))
    assert ctx.client_tls(None, 3) is None
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", garbage):
        with pytest.raises(TreeError) as info:
            ctx.client_tls(path, 7)
        assert str(info.value).startswith(f"{tmp_path}/refd.yaml:7: cannot load {path}: ")
