"""The table of authentication sources: ``auth.source`` -> the module that brings it.

Each module named in :data:`AUTH_SOURCES` defines ``SPEC``, an
:class:`AuthSourceSpec`: the keys it adds to the ``auth:`` section, the
parser from that section to its settings value, the builder from settings
to the :class:`~refd.auth.base.AuthSource`, the files a reload watches and
the warnings the daemon logs at start.  A new source (LDAP, HTTP) is one
entry here and one module in ``refd/auth/``; ``refd.config`` and
``refd.daemon`` only ever go through this table.

A module is imported when a config names it, so importing the config
loader does not import the sources (nor trio).
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from refd.auth.base import AuthSource
from refd.config.tree import Map, Reader, TreeError
from refd.routing import RoutingTable

__all__ = ["AUTH_SOURCES", "AuthSourceSpec", "BuildContext", "ParseContext", "source_spec"]

#: ``auth.source`` -> the module whose ``SPEC`` describes it
AUTH_SOURCES: dict[str, str] = {
    "passwd-file": "refd.auth.passwd_file",
    "imap": "refd.auth.imap_backend",
    "trust": "refd.auth.trust",
    "auth_http": "refd.auth.auth_http",
    "ldap": "refd.auth.ldap",
}

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a source's parser gets: the reader and the file (paths are relative to it)."""

    reader: Reader
    file: Path
    auth: Map


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a source's builder gets: the config file (for errors) and the table it serves."""

    file: Path
    table: RoutingTable

    def client_tls(self, ca_file: Path | None, line: int) -> ssl.SSLContext | None:
        """A client TLS context trusting ``ca_file`` (None: none given); a
        TreeError at ``line`` when the file cannot be loaded."""
        if ca_file is None:
            return None
        from refd.imap_client import client_tls_context  # noqa: PLC0415 (needs trio)

        try:
            return client_tls_context(str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TreeError(str(self.file), line, f"cannot load {ca_file}: {reason}") from None


def _no_files(settings: Any) -> tuple[Path, ...]:
    return ()


def _no_warning(settings: Any) -> str | None:
    return None


def _no_problems(source: Any) -> list[TreeError]:
    return []


@dataclass(frozen=True, slots=True)
class AuthSourceSpec(Generic[S]):
    """One authentication source, as the config loader and the daemon see it."""

    name: str
    #: the keys this source adds to ``auth:`` (beyond the common ones)
    keys: frozenset[str]
    #: ``auth:`` -> the source's settings (raises TreeError, ``file:line: message``)
    parse: Callable[[ParseContext], S]
    #: settings -> the source in service (raises TreeError); runs on every (re)load
    build: Callable[[S, BuildContext], AuthSource]
    #: the files a reload reads for this source
    watched: Callable[[S], tuple[Path, ...]] = _no_files
    #: what the daemon warns about at start and on reload, if anything
    warning: Callable[[S], str | None] = _no_warning
    #: what a built source serves without (``file:line: message``, e.g. a
    #: passwd-file line with an unknown scheme): logged as a warning at every
    #: (re)load and reported by ``refd check``
    problems: Callable[[Any], list[TreeError]] = _no_problems


def source_spec(name: str) -> AuthSourceSpec[Any]:
    """The spec of ``auth.source: name`` (a name in :data:`AUTH_SOURCES`)."""
    spec: AuthSourceSpec[Any] = importlib.import_module(AUTH_SOURCES[name]).SPEC
    return spec
