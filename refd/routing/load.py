"""Validate a routing tree and compile it into a `RoutingTable`.

The caller does all I/O. The daemon (and ``refd check`` / ``refd explain``)
loads a table in two phases::

    text = routing_path.read_text()
    root = refd.config.yamltree.parse_yaml(text, str(routing_path))
    name = read_user_map_name(root, str(routing_path))   # None, or a path relative
    map_text = (routing_path.parent / name).read_text() if name else None
    # (or the text in pieces that end at line ends: refd.config.loader.read_text_pieces)
    table = load_table(root, str(routing_path), source_text=text,
                       user_map_text=map_text, user_map_file=name or "",
                       self_addresses=...)

Every check runs at load, so a table that loads cannot produce a broken
referral: servers named anywhere exist; replica lists have no cycles; no
server is this door itself (a referral loop); regexes compile; rename
patterns fit their match patterns; unknown keys anywhere are refused
(a misspelt ``replicsa:`` must not be silently ignored). Problems are
collected -- as many as can be found without guessing -- into one
`RoutingError` whose ``str()`` has one ``FILE:LINE: message`` line each.

The bulk user map (``users.map``) is one ``USER SERVER`` pair per line,
with ``#`` comment lines and blank lines ignored, and an optional trailing
``# comment``. It is parsed with a plain loop into a `UserMap` whose
values are the servers' shared name strings, so a million users cost their
name strings and dict slots, nothing per entry; a lookup is one hash probe
(`refd.routing.usermap` says why the map is 64 dicts, not one).

The format itself is documented in ``config/routing.yaml``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import ParamSpec, TypeVar

from refd.config.tree import Map, Node, Reader, Scalar, Seq, TreeError, get, is_null
from refd.routing.match import RoutingTable
from refd.routing.model import (
    ClientTls,
    Domain,
    Endpoint,
    LoginMode,
    MailboxRule,
    Namespaces,
    Server,
    UserRule,
    UserRuleKind,
    is_inbox,
    normalise_user,
)
from refd.routing.url import DEFAULT_PORT, split_host_port, url_host
from refd.routing.usermap import SHARD_SHIFT, UserMap

__all__ = [
    "RoutingError",
    "compile_mailbox_pattern",
    "load_table",
    "parse_user_map",
    "read_user_map_name",
]

FORMAT_VERSION = 1
_EMPTY = 'it needs "version" and "servers"'
MAX_ERRORS = 50  # a broken 1M-line map must not produce 1M messages

_TOP_KEYS = frozenset(
    {
        "version",
        "delimiter",
        "self",
        "servers",
        "user_map",
        "users",
        "mailboxes",
        "published",
        "namespaces",
        "domains",
    }
)
_SERVER_KEYS = frozenset({"host", "port", "replicas", "imaps_port", "client_tls", "submission"})
_ENDPOINT_KEYS = frozenset({"host", "port", "tls"})
_DOMAIN_KEYS = frozenset({"login_name", "display_name", "server", "submission"})
_LOGIN_NAMES = ("address", "local_part")
#: The submission port when ``submission`` names none (RFC 6409 §1).
SUBMISSION_PORT = 587
#: The implicit-TLS submission port (RFC 8314): its endpoint defaults to tls implicit.
SUBMISSIONS_PORT = 465
# One DNS label: letters, digits and "-", not at either end (RFC 1123 §2.1).
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SELECTORS: tuple[UserRuleKind, ...] = ("user", "glob", "regex", "default")
_USER_KEYS = frozenset({*_SELECTORS, "server", "login"})
_MAILBOX_KEYS = frozenset({"match", "servers", "rename"})
_NAMESPACE_KEYS = frozenset({"personal", "other", "shared"})

# Server names end up in logs and metric labels: keep them tame.
_SERVER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_WILDCARDS = re.compile(r"[*%]")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class RoutingError(TreeError):
    """The routing table is invalid. ``errors`` lists every problem found;
    ``file``/``line``/``message`` are the first one's."""

    errors: tuple[TreeError, ...]

    def __init__(self, errors: Iterable[TreeError]) -> None:
        found = tuple(errors)
        if not found:
            raise ValueError("RoutingError needs at least one error")
        first = found[0]
        super().__init__(first.file, first.line, first.message)
        self.errors = found

    def __str__(self) -> str:
        return "\n".join(TreeError.__str__(e) for e in self.errors)


def read_user_map_name(root: Node | None, file: str) -> str | None:
    """The ``user_map`` file name as written (relative to ``file``), or None.

    None also when ``user_map`` is an inline mapping. Raises `RoutingError`
    if the value is neither.
    """
    reader = Reader(file)
    try:
        if root is None:
            return None
        top = reader.as_root(root, "the routing file", empty=_EMPTY)
        node = get(top, "user_map")
        if node is None or isinstance(node, Map):
            return None
        return reader.as_str(node, "user_map")
    except RoutingError:
        raise
    except TreeError as exc:
        raise RoutingError([exc]) from None


def load_table(
    root: Node | None,
    file: str,
    *,
    self_addresses: frozenset[tuple[str, int]] = frozenset(),
    user_map_text: str | Sequence[str] | None = None,
    user_map_file: str = "",
    source_text: str = "",
    sha256: str | None = None,
) -> RoutingTable:
    """Validate ``root`` (the parsed routing file) and compile the table.

    ``self_addresses`` are (host, port) pairs of this door, added to the
    file's ``self:`` list. ``user_map_text`` is the content of the file named
    by ``user_map`` (see `read_user_map_name`): one string, or the text in
    pieces that each end at a line end (a big map then never passes through
    one long C call: see `parse_user_map`); ``user_map_file`` is the name
    used in messages. The table's ``sha256`` is ``sha256`` when given, else
    the hex SHA-256 of ``source_text`` + NUL + ``user_map_text`` (when there
    is one). Raises `RoutingError`.
    """
    loader = _Loader(Reader(file))
    table = loader.load(root, self_addresses, user_map_text, user_map_file)
    if loader.errors or table is None:
        raise RoutingError(_ordered(loader.errors, file))
    if sha256 is None:
        digest = hashlib.sha256(source_text.encode("utf-8", "surrogatepass"))
        if user_map_text is not None:
            digest.update(b"\0")
            pieces = (user_map_text,) if isinstance(user_map_text, str) else user_map_text
            for piece in pieces:
                digest.update(piece.encode("utf-8", "surrogatepass"))
        sha256 = digest.hexdigest()
    return dataclasses.replace(table, sha256=sha256)


def _ordered(errors: list[TreeError], file: str) -> list[TreeError]:
    # Routing-file errors by line, then the user map's (in its own order).
    own = sorted((e for e in errors if e.file == file), key=lambda e: e.line)
    return own + [e for e in errors if e.file != file]


@dataclass
class _Loader:
    """One load: the reader, the errors found so far, the servers defined."""

    r: Reader
    errors: list[TreeError] = field(default_factory=list)
    servers: dict[str, Server] = field(default_factory=dict)
    # Names defined but invalid: references to them are not reported again.
    broken: set[str] = field(default_factory=set)

    def attempt(self, step: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
        """``step(...)``, or None with its error(s) recorded."""
        try:
            return step(*args, **kwargs)
        except RoutingError as exc:
            self.errors.extend(exc.errors)
        except TreeError as exc:
            self.errors.append(exc)
        return None

    # -- top level ------------------------------------------------------------

    def load(
        self,
        root: Node | None,
        self_addresses: frozenset[tuple[str, int]],
        user_map_text: str | Sequence[str] | None,
        user_map_file: str,
    ) -> RoutingTable | None:
        r = self.r
        try:
            top = r.as_root(root, "the routing file", empty=_EMPTY)
            r.reject_unknown(top, _TOP_KEYS, "the routing file")
            version = r.require(top, "version", "the routing file")
            if r.as_int(version, "version", 1, 1_000_000) != FORMAT_VERSION:
                raise r.error(version, f"version must be {FORMAT_VERSION}")
            servers_node = r.as_map(r.require(top, "servers", "the routing file"), "servers")
        except TreeError as exc:
            self.errors.append(exc)
            return None
        if not servers_node.items:
            self.errors.append(r.error(servers_node, "servers must name at least one server"))

        delimiter = "/"
        node = get(top, "delimiter")
        if node is not None:
            try:
                delimiter = self.delimiter(node)
            except TreeError as exc:
                self.errors.append(exc)

        loops = {_address_key(h, p) for h, p in self_addresses}
        node = get(top, "self")
        if node is not None:
            loops.update(self.attempt(self.self_list, node) or ())

        for key, value in servers_node.items:
            self.attempt(partial(self.server, key, value))
        chains = self.chains(servers_node)
        for server in self.servers.values():
            if _address_key(server.host, server.port) in loops:
                self.errors.append(
                    r.error(
                        server.line,
                        f"server {server.name} ({server.authority}) is this door itself: "
                        "a referral there would loop",
                    )
                )

        user_rules: list[UserRule] = []
        node = get(top, "users")
        users_ok = True
        if node is not None:
            before = len(self.errors)
            user_rules.extend(self.attempt(self.user_rules, node) or ())
            users_ok = len(self.errors) == before

        domains: dict[str, Domain] = {}
        node = get(top, "domains")
        if node is not None:
            self.attempt(self.domains, node, user_rules, users_ok, domains)

        user_map: UserMap | None = None
        map_file = user_map_file
        node = get(top, "user_map")
        if isinstance(node, Map):
            map_file = r.file
            inline = self.attempt(self.inline_user_map, node)
            user_map = UserMap.of(inline or {}, self.servers)
        elif node is not None:
            name_node = node

            def bulk() -> UserMap:
                nonlocal map_file
                name = r.as_str(name_node, "user_map")
                if user_map_text is None:
                    raise r.error(
                        name_node, f'user_map "{name}" was not read (the caller must pass its text)'
                    )
                map_file = map_file or name
                return parse_user_map(user_map_text, map_file, self.servers, skip=self.broken)

            user_map = self.attempt(bulk)

        mailbox_rules: list[MailboxRule] = []
        node = get(top, "mailboxes")
        if node is not None:
            mailbox_rules.extend(self.attempt(self.mailbox_rules, node, delimiter, chains) or ())

        published: list[str] = []
        node = get(top, "published")
        if node is not None:
            published.extend(self.attempt(self.published, node) or ())

        namespaces = _default_namespaces(mailbox_rules, delimiter)
        node = get(top, "namespaces")
        if node is not None:
            try:
                namespaces = self.namespaces(node, delimiter, namespaces)
            except TreeError as exc:
                self.errors.append(exc)

        if self.errors:
            return None
        return RoutingTable(
            file=r.file,
            delimiter=delimiter,
            servers=dict(self.servers),
            chains=chains,
            user_rules=tuple(user_rules),
            user_map=user_map if user_map is not None else UserMap(self.servers),
            user_map_file=map_file,
            mailbox_rules=tuple(mailbox_rules),
            published=tuple(published),
            declared_namespaces=namespaces,
            sha256="",
            domains=domains,
        )

    def delimiter(self, node: Node) -> str:
        text = self.r.as_str(node, "delimiter")
        if (
            len(text) != 1
            or not text.isascii()
            or not text.isprintable()
            or text.isalnum()
            or text in ' *%"\\'
        ):
            raise self.r.error(
                node,
                f'delimiter must be one punctuation character such as "/" or ".", got "{text}"',
            )
        return text

    def self_list(self, node: Node) -> set[tuple[str, int]]:
        r = self.r
        found = set()
        if isinstance(node, Seq) or is_null(node):
            items: tuple[Node, ...] = r.as_seq(node, "self").items
        else:
            items = (node,)
        for i, item in enumerate(items, 1):
            what = f"self[{i}]"
            text = r.as_str(item, what)
            try:
                host, port_text = split_host_port(text)
            except ValueError as exc:
                raise r.error(item, f"{what}: {exc}") from None
            port = DEFAULT_PORT
            if port_text is not None:
                port = r.as_int(Scalar(port_text, item.line, False), f"{what} port", 1, 65535)
            found.add(_address_key(self.host(item, url_host(host), what), port))
        return found

    # -- servers ------------------------------------------------------------------

    def host(self, node: Node, text: str, what: str) -> str:
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if ":" in bare:
            try:
                return ipaddress.IPv6Address(bare).compressed
            except ValueError:
                pass
        elif _HOST_NAME.fullmatch(bare) and bare == text:
            return bare
        raise self.r.error(node, f'{what} "{text}" is not a host name or IP address')

    def server(self, key: Scalar, value: Node) -> None:
        r = self.r
        name = key.value
        what = f"servers.{name}"
        if not _SERVER_NAME.fullmatch(name):
            self.broken.add(name)
            raise r.error(
                key, f'server name "{name}" may use only letters, digits, "_", "." and "-"'
            )
        self.broken.add(name)  # until it is fully valid
        spec = r.as_map(value, what)
        r.reject_unknown(spec, _SERVER_KEYS, what)
        host_node = r.require(spec, "host", what)
        host = self.host(host_node, r.as_str(host_node, f"{what}.host"), f"{what}.host")
        port = DEFAULT_PORT
        node = get(spec, "port")
        if node is not None:
            port = r.as_int(node, f"{what}.port", 1, 65535)
        replicas: tuple[str, ...] = ()
        node = get(spec, "replicas")
        if node is not None:
            replicas = r.as_str_list(node, f"{what}.replicas")
            if name in replicas:
                raise r.error(node, f"{what}.replicas lists {name} itself")
            dupes = sorted({n for n in replicas if replicas.count(n) > 1})
            if dupes:
                raise r.error(node, f"{what}.replicas lists {dupes[0]} twice")
        imaps_port: int | None = None
        node = get(spec, "imaps_port")
        if node is not None:
            imaps_port = r.as_int(node, f"{what}.imaps_port", 1, 65535)
        client_tls = ClientTls.STARTTLS if imaps_port is None else ClientTls.IMPLICIT
        node = get(spec, "client_tls")
        if node is not None:
            client_tls = self.tls_mode(node, f"{what}.client_tls")
            if client_tls is ClientTls.IMPLICIT and imaps_port is None:
                raise r.error(
                    node,
                    f"{what}.client_tls: implicit needs imaps_port, the server's "
                    "implicit-TLS port (e.g. imaps_port: 993)",
                )
        submission: Endpoint | None = None
        node = get(spec, "submission")
        if node is not None:
            submission = self.endpoint(node, f"{what}.submission")
        self.broken.discard(name)
        self.servers[name] = Server(
            name,
            host,
            port,
            replicas,
            key.line,
            imaps_port=imaps_port,
            client_tls=client_tls,
            submission=submission,
        )

    def tls_mode(self, node: Node, what: str) -> ClientTls:
        value = self.r.as_str(node, what)
        try:
            return ClientTls(value)
        except ValueError:
            raise self.r.error(
                node, f'{what} must be implicit, starttls or none, got "{value}"'
            ) from None

    def endpoint(self, node: Node, what: str) -> Endpoint:
        """A submission endpoint: ``host[:port]`` or ``{host, port, tls}``.

        The port defaults to 587; the TLS mode to implicit on port 465 and
        starttls on any other (RFC 8314: 465 is implicit TLS, 587 STARTTLS).
        """
        r = self.r
        if isinstance(node, Map):
            r.reject_unknown(node, _ENDPOINT_KEYS, what)
            host_node = r.require(node, "host", what)
            host = self.host(host_node, r.as_str(host_node, f"{what}.host"), f"{what}.host")
            port = SUBMISSION_PORT
            port_node = get(node, "port")
            if port_node is not None:
                port = r.as_int(port_node, f"{what}.port", 1, 65535)
            tls_node = get(node, "tls")
            if tls_node is not None:
                return Endpoint(host, port, self.tls_mode(tls_node, f"{what}.tls"))
        else:
            text = r.as_str(node, what)
            try:
                host_text, port_text = split_host_port(text)
            except ValueError as exc:
                raise r.error(node, f'{what} "{text}": {exc}') from None
            host = self.host(node, url_host(host_text), what)
            port = SUBMISSION_PORT
            if port_text is not None:
                port = r.as_int(Scalar(port_text, node.line, False), f"{what} port", 1, 65535)
        tls = ClientTls.IMPLICIT if port == SUBMISSIONS_PORT else ClientTls.STARTTLS
        return Endpoint(host, port, tls)

    def chains(self, servers_node: Map) -> dict[str, tuple[Server, ...]]:
        """Check replica references and cycles; flatten each server's chain."""
        r = self.r
        ok: dict[str, Server] = {}
        for server in self.servers.values():
            missing = [n for n in server.replicas if n not in self.servers]
            unknown = [n for n in missing if n not in self.broken]
            if unknown:
                self.errors.append(
                    r.error(
                        _value_line(servers_node, server.name, "replicas", server.line),
                        f"servers.{server.name}.replicas: unknown server {unknown[0]}"
                        f"{_known(self.servers)}",
                    )
                )
            if not missing:
                ok[server.name] = server
        # Cycle check (depth-first, colouring): report each cycle once.
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        reported: set[frozenset[str]] = set()

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            for nxt in ok[name].replicas:
                if nxt not in ok:
                    continue
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        first = self.servers[cycle[0]]
                        self.errors.append(
                            r.error(
                                _value_line(servers_node, first.name, "replicas", first.line),
                                "replica cycle: " + " -> ".join(cycle),
                            )
                        )
                elif nxt not in state:
                    visit(nxt, [*path, nxt])
            state[name] = 2

        for name in ok:
            if name not in state:
                visit(name, [name])

        chains: dict[str, tuple[Server, ...]] = {}

        def flatten(name: str, seen: list[Server], depth: int) -> None:
            server = self.servers[name]
            if server in seen or depth > len(self.servers):
                return
            seen.append(server)
            for nxt in server.replicas:
                if nxt in self.servers:
                    flatten(nxt, seen, depth + 1)

        for name in self.servers:
            chain: list[Server] = []
            flatten(name, chain, 0)
            chains[name] = tuple(chain)
        return chains

    def server_ref(self, node: Node, name: str, what: str) -> Server | None:
        """The server called ``name``; None (already reported) if it is broken."""
        server = self.servers.get(name)
        if server is not None:
            return server
        if name in self.broken:
            return None
        raise self.r.error(node, f'{what}: unknown server "{name}"{_known(self.servers)}')

    # -- domains ----------------------------------------------------------------------

    def domains(
        self, node: Node, rules: list[UserRule], users_ok: bool, found: dict[str, Domain]
    ) -> None:
        spec = self.r.as_map(node, "domains")
        first_line: dict[str, int] = {}
        for key, value in spec.items:
            self.attempt(self.domain, key, value, rules, users_ok, found, first_line)

    def domain(
        self,
        key: Scalar,
        value: Node,
        rules: list[UserRule],
        users_ok: bool,
        found: dict[str, Domain],
        first_line: dict[str, int],
    ) -> None:
        r = self.r
        name = key.value.lower()
        if not _is_domain_name(name):
            raise r.error(
                key,
                f'domain "{key.value}" is not a DNS name: labels of letters, digits and "-" '
                "separated by dots (an internationalised name in its xn-- form)",
            )
        if name in first_line:
            raise r.error(
                key, f'domain "{key.value}" is listed twice (first at line {first_line[name]})'
            )
        first_line[name] = key.line
        what = f"domains.{name}"
        spec = r.as_map(value, what)
        r.reject_unknown(spec, _DOMAIN_KEYS, what)
        login_name = "address"
        node = get(spec, "login_name")
        if node is not None:
            login_name = r.as_str(node, f"{what}.login_name")
            if login_name not in _LOGIN_NAMES:
                raise r.error(
                    node, f'{what}.login_name must be address or local_part, got "{login_name}"'
                )
        display_name = name
        node = get(spec, "display_name")
        if node is not None:
            display_name = r.as_str(node, f"{what}.display_name")
            if not display_name.isprintable():
                raise r.error(node, f"{what}.display_name must not contain control characters")
        submission: Endpoint | None = None
        node = get(spec, "submission")
        if node is not None:
            submission = self.endpoint(node, f"{what}.submission")
        node = get(spec, "server")
        server: Server | None
        if node is not None:
            server = self.server_ref(node, r.as_str(node, f"{what}.server"), f"{what}.server")
        else:
            server = _domain_server(rules, name)
            if server is None and users_ok:
                raise r.error(
                    key,
                    f"{what}: no server for the domain-level answer: write server: NAME, "
                    f'or add a users: rule glob: "*@{name}" or a default rule',
                )
        if server is None:
            return
        assert login_name in _LOGIN_NAMES
        found[name] = Domain(
            name,
            "local_part" if login_name == "local_part" else "address",
            display_name,
            server,
            submission,
            key.line,
        )

    # -- users ------------------------------------------------------------------------

    def user_rules(self, node: Node) -> list[UserRule]:
        seq = self.r.as_seq(node, "users")
        rules: list[UserRule] = []
        for i, item in enumerate(seq.items, 1):

            def one(i: int = i, item: Node = item) -> None:
                rule = self.user_rule(i, item, last=i == len(seq.items))
                if rule is not None:
                    rules.append(rule)

            self.attempt(one)
        return rules

    def user_rule(self, i: int, node: Node, *, last: bool) -> UserRule | None:
        r = self.r
        what = f"users[{i}]"
        spec = r.as_map(node, what)
        r.reject_unknown(spec, _USER_KEYS, what)
        present = [k for k in _SELECTORS if get(spec, k) is not None]
        if len(present) != 1:
            got = " and ".join(present) if present else "none"
            raise r.error(
                spec, f"{what} needs exactly one of user, glob, regex, default (got {got})"
            )
        kind = present[0]
        selector = get(spec, kind)
        assert selector is not None
        pattern: re.Pattern[str] | None = None
        if kind == "default":
            if not r.as_bool(selector, f"{what}.default"):
                raise r.error(selector, f"{what}: write default: true, or remove the rule")
            if not last:
                raise r.error(
                    spec,
                    f"{what}: the default rule must be the last one "
                    "(the rules after it could never match)",
                )
            text = ""
            description = f"users[{i}] default ({r.file}:{spec.line})"
        else:
            text = r.as_str(selector, f"{what}.{kind}")
            if kind != "regex":
                # User names are compared lower-cased (model.normalise_user).
                text = normalise_user(text)
            if kind == "glob":
                pattern = re.compile(fnmatch.translate(text))
            elif kind == "regex":
                try:
                    # It sees the lower-cased name: [A-Z] must match it too.
                    pattern = re.compile(text, re.IGNORECASE)
                except re.error as exc:
                    raise r.error(
                        selector, f'{what}.regex "{text}" does not compile: {exc}'
                    ) from None
            description = f'users[{i}] {kind} "{text}" ({r.file}:{spec.line})'
        server_node = r.require(spec, "server", what)
        server = self.server_ref(
            server_node, r.as_str(server_node, f"{what}.server"), f"{what}.server"
        )
        login = LoginMode.REFER
        login_node = get(spec, "login")
        if login_node is not None:
            value = r.as_str(login_node, f"{what}.login")
            try:
                login = LoginMode(value)
            except ValueError:
                raise r.error(
                    login_node, f'{what}.login must be refer, accept or stay, got "{value}"'
                ) from None
        if server is None:
            return None
        return UserRule(kind, text, pattern, server, login, description)

    def inline_user_map(self, node: Map) -> dict[str, Server]:
        r = self.r
        found: dict[str, Server] = {}
        first_line: dict[str, int] = {}
        for key, value in node.items:
            user = normalise_user(key.value)
            what = f'user_map "{key.value}"'
            server = self.server_ref(value, r.as_str(value, what), what)
            if user in found:
                raise r.error(
                    key, f'user "{key.value}" is listed twice (first at line {first_line[user]})'
                )
            if server is not None:
                found[user] = server
                first_line[user] = key.line
        return found

    # -- mailboxes ------------------------------------------------------------------------

    def mailbox_rules(
        self, node: Node, delimiter: str, chains: Mapping[str, tuple[Server, ...]]
    ) -> list[MailboxRule]:
        seq = self.r.as_seq(node, "mailboxes")
        rules: list[MailboxRule] = []
        for i, item in enumerate(seq.items, 1):

            def one(i: int = i, item: Node = item) -> None:
                rule = self.mailbox_rule(i, item, delimiter, chains)
                if rule is not None:
                    rules.append(rule)

            self.attempt(one)
        return rules

    def mailbox_rule(
        self, i: int, node: Node, delimiter: str, chains: Mapping[str, tuple[Server, ...]]
    ) -> MailboxRule | None:
        r = self.r
        what = f"mailboxes[{i}]"
        spec = r.as_map(node, what)
        r.reject_unknown(spec, _MAILBOX_KEYS, what)
        match_node = r.require(spec, "match", what)
        match = r.as_str(match_node, f"{what}.match")
        if is_inbox(match):
            raise r.error(
                match_node, f"{what}: INBOX always goes to the user's home server; remove this rule"
            )
        servers_node = r.require(spec, "servers", what)
        names = r.as_str_list(servers_node, f"{what}.servers")
        if not names:
            raise r.error(servers_node, f"{what}.servers must name at least one server")
        servers: list[Server] = []
        complete = True
        for name in names:
            server = self.server_ref(servers_node, name, f"{what}.servers")
            if server is None:
                complete = False
                continue
            for member in chains[server.name]:
                if member not in servers:
                    servers.append(member)
        rename: str | None = None
        rename_parts: tuple[str, ...] = ()
        rename_node = get(spec, "rename")
        if rename_node is not None:
            rename = r.as_str(rename_node, f"{what}.rename")
            wanted = len(_WILDCARDS.findall(match))
            got = len(_WILDCARDS.findall(rename))
            if wanted != got:
                raise r.error(
                    rename_node,
                    f'{what}.rename "{rename}" has {got} wildcard(s) but match "{match}" has '
                    f"{wanted}: each wildcard of match fills the wildcard at the same position "
                    "in rename",
                )
            rename_parts = tuple(_WILDCARDS.split(rename))
        if not complete:
            return None
        description = f'mailboxes[{i}] match "{match}" ({r.file}:{spec.line})'
        return MailboxRule(
            match=match,
            pattern=compile_mailbox_pattern(match, delimiter),
            servers=tuple(servers),
            rename=rename,
            rename_parts=rename_parts,
            description=description,
        )

    def published(self, node: Node) -> list[str]:
        r = self.r
        seq = r.as_seq(node, "published")
        names: list[str] = []
        lines: dict[str, int] = {}
        for i, item in enumerate(seq.items, 1):
            name = r.as_str(item, f"published[{i}]")
            if is_inbox(name):
                raise r.error(item, "INBOX is always listed first; remove it from published")
            if name in lines:
                raise r.error(item, f'"{name}" is published twice (first at line {lines[name]})')
            lines[name] = item.line
            names.append(name)
        return names

    def namespaces(self, node: Node, delimiter: str, default: Namespaces) -> Namespaces:
        r = self.r
        spec = r.as_map(node, "namespaces")
        r.reject_unknown(spec, _NAMESPACE_KEYS, "namespaces")

        def one(key: str, fallback: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
            value = get(spec, key)
            if value is None:
                return fallback
            prefixes = r.as_str_list(value, f"namespaces.{key}", empty_ok=True)
            return tuple((prefix, delimiter) for prefix in prefixes)

        return Namespaces(
            personal=one("personal", default.personal),
            other=one("other", default.other),
            shared=one("shared", default.shared),
        )


# -- the bulk user map ---------------------------------------------------------------


def parse_user_map(
    text: str | Sequence[str],
    file: str,
    servers: Mapping[str, Server],
    *,
    skip: Collection[str] = (),
) -> UserMap:
    """Parse ``USER SERVER`` lines into a `UserMap` (normalised user -> Server).

    ``text`` is the map's text, or that text in pieces that each end at a
    line end (see `load_table`). Raises `RoutingError` (at most `MAX_ERRORS`
    problems) naming ``file``. Entries naming a server in ``skip`` (defined
    but invalid, so already reported) are dropped without a message.
    """
    table = UserMap(servers)
    errors: list[TreeError] = []
    pieces = (text,) if isinstance(text, str) else text
    find = servers.get
    shards = table.shards
    for number, line in enumerate(_lines(pieces), 1):
        fields = line.split()
        if not fields or fields[0][0] == "#":
            continue
        if len(fields) != 2:
            if len(fields) > 2 and fields[2][0] == "#":
                fields = fields[:2]
            else:
                errors.append(
                    TreeError(file, number, f"expected USER SERVER, got {len(fields)} field(s)")
                )
                if len(errors) >= MAX_ERRORS:
                    break
                continue
        written, name = fields
        user = normalise_user(written)
        server = find(name)
        if server is None:
            if name in skip:
                continue
            errors.append(
                TreeError(
                    file, number, f'unknown server "{name}" for user "{written}"{_known(servers)}'
                )
            )
        # UserMap.add written out: a call per line cost 0.3-0.4 s of CPU in
        # a 1M-line load (one dict: 1.86-2.02 s; shards with the call:
        # 2.25-2.37 s; written out: 2.02-2.11 s).
        elif user in (shard := shards[hash(user) >> SHARD_SHIFT]):
            first = _first_line(pieces, user, number)
            errors.append(
                TreeError(file, number, f'user "{written}" is listed twice (first at line {first})')
            )
        else:
            shard[user] = server.name
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise RoutingError(errors)
    return table


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    # One piece at a time: str.splitlines over a whole 30 MiB map is one C
    # call that holds the GIL for ~100 ms, and a reload parses in a thread
    # beside the event loop. Pieces end at line ends, so the lines (and
    # their numbers) are those of the whole text.
    for piece in pieces:
        yield from piece.splitlines()


def _first_line(pieces: Iterable[str], user: str, before: int) -> int:
    """Line of the first entry for ``user`` (error path only: a linear scan)."""
    for number, line in enumerate(_lines(pieces), 1):
        if number >= before:
            break
        fields = line.split()
        if len(fields) >= 2 and normalise_user(fields[0]) == user:
            return number
    return before  # pragma: no cover - the caller saw an earlier entry


# -- helpers ---------------------------------------------------------------------------


def compile_mailbox_pattern(match: str, delimiter: str) -> re.Pattern[str]:
    """Compile an IMAP-style mailbox pattern: one regex group per wildcard.

    ``*`` matches any characters including the delimiter, ``%`` any except
    it (RFC 3501 §6.3.8 LIST wildcards); everything else is literal; the
    whole name must match. So ``Shared/*`` matches ``Shared/Sales`` and
    ``Shared/a/b``, but not ``Shared`` itself.
    """
    not_delimiter = f"([^{re.escape(delimiter)}]*)"
    pieces = []
    for char in match:
        if char == "*":
            pieces.append("(.*)")
        elif char == "%":
            pieces.append(not_delimiter)
        else:
            pieces.append(re.escape(char))
    return re.compile("".join(pieces), re.DOTALL)


def _default_namespaces(rules: Iterable[MailboxRule], delimiter: str) -> Namespaces:
    """Personal ``""``; shared: the literal prefix of each ``<prefix><delim>*`` rule."""
    shared: list[tuple[str, str]] = []
    for rule in rules:
        prefix = rule.match[:-1]
        if (
            rule.match.endswith(delimiter + "*")
            and not _WILDCARDS.search(prefix)
            and (prefix, delimiter) not in shared
        ):
            shared.append((prefix, delimiter))
    return Namespaces(personal=(("", delimiter),), other=(), shared=tuple(shared))


def _is_domain_name(name: str) -> bool:
    """A lower-case DNS name of LDH labels, without the trailing dot (RFC 1035 §2.3.4)."""
    return len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _domain_server(rules: Iterable[UserRule], domain: str) -> Server | None:
    """The domain-level server without ``server:``: the first rule glob ``*@domain``,
    else the default rule's server."""
    default: Server | None = None
    for rule in rules:
        if rule.kind == "glob" and rule.text == f"*@{domain}":
            return rule.server
        if rule.kind == "default":
            default = rule.server
    return default


def _address_key(host: str, port: int) -> tuple[str, int]:
    """(host, port) in a comparable form: lower-case, IPv6 compressed."""
    bare = host.removeprefix("[").removesuffix("]").lower()
    if ":" in bare:
        with contextlib.suppress(ValueError):
            bare = ipaddress.IPv6Address(bare).compressed
    return bare, port


def _value_line(servers_node: Map, name: str, key: str, default: int) -> int:
    spec = get(servers_node, name)
    if isinstance(spec, Map):
        value = get(spec, key)
        if value is not None:
            return value.line
    return default


def _known(servers: Mapping[str, Server]) -> str:
    if not servers:
        return ""
    return " (servers: " + ", ".join(servers) + ")"
