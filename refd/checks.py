"""``refd check`` beyond the loaders: the loaded values looked at together.

The loaders (`refd.config`) refuse what the daemon cannot load.  These
checks take what loaded and ask two more questions.

Would ``refd serve`` start on this host?  (errors)

- two listeners, or a listener and the metrics endpoint, on one address and
  port (a wildcard address, ``0.0.0.0`` or ``::``, overlaps every address of
  its family);
- a listener or metrics address this host does not have.

Is it what the admin meant?  (warnings: the daemon starts anyway)

- passwd-file users the routing table has no route for: their logins get
  ``NO [UNAVAILABLE]``;
- public ``trusted_networks`` while a listener without TLS faces clients:
  passwords from anywhere may arrive in clear;
- a TLS private key that every local user can read;
- a server whose referral ``port`` is 993 or its own ``imaps_port``: a
  client that follows a referral (alpine) rebuilds the connection from the
  URL alone, connects in plaintext to an implicit-TLS port and hangs.
  Checked for a routing table on its own too (`routing_warnings`).

A finding reads ``file:line: message`` (``file:line: warning: message``);
none quotes a secret.  ``refd serve`` runs `port_conflicts` before binding.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from refd.auth.passwd_file import PasswdFileSource
from refd.auth.trust import public_networks
from refd.config.loader import DaemonConfig
from refd.config.tree import Map, Node, Seq, TreeError, get
from refd.config.yamltree import parse_yaml
from refd.listen import authority
from refd.routing import RoutingTable
from refd.runtime import Service

__all__ = ["Finding", "check_config", "port_conflicts", "routing_warnings"]

#: How many names a warning lists before "...".
FIRST_FEW = 5


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        return f"{where}: {'warning: ' if self.warning else ''}{self.message}"


class _Lines:
    """Lines of a loaded file's keys (the daemon config, a routing table), for
    findings about loaded values."""

    def __init__(self, path: Path) -> None:
        self.file = str(path)
        try:
            root = parse_yaml(path.read_text(encoding="utf-8"), self.file)
        except (OSError, UnicodeDecodeError, TreeError):  # it loaded a moment ago
            root = None
        self.top = root if isinstance(root, Map) else Map((), 0)

    def of(self, *path: str | int) -> int:
        """The line of the value at ``path`` (keys and list indexes); 0 if absent."""
        node: Node | None = self.top
        for step in path:
            if isinstance(step, int) and isinstance(node, Seq) and step < len(node.items):
                node = node.items[step]
            elif isinstance(step, str) and isinstance(node, Map):
                node = get(node, step)
            else:
                return 0
            if node is None:
                return 0
        return node.line if node is not None else 0


@dataclass(frozen=True, slots=True)
class _Socket:
    what: str  # "listener imap", "metrics"
    address: str
    port: int
    line: int


def _sockets(config: DaemonConfig, lines: _Lines) -> list[_Socket]:
    out = [
        _Socket(f"listener {lc.name}", lc.address, lc.port, lines.of("listeners", i))
        for i, lc in enumerate(config.listeners)
    ]
    out += [
        _Socket(
            f"listener {lc.name}", lc.address, lc.port, lines.of("autodiscovery", "listeners", i)
        )
        for i, lc in enumerate(config.http_listeners)
    ]
    if config.metrics_address is not None:
        host, port = config.metrics_address
        out.append(_Socket("metrics", host, port, lines.of("metrics")))
    return out


def _overlap(a: str, b: str) -> bool:
    """Whether two bind addresses clash on one port (same family; equal or a wildcard)."""
    ip_a, ip_b = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if ip_a.version != ip_b.version:
        return False  # IPv6 listeners are IPv6-only (refd.listen)
    return ip_a == ip_b or ip_a.is_unspecified or ip_b.is_unspecified


def port_conflicts(config: DaemonConfig) -> list[Finding]:
    """Listeners and metrics that would ask for one address and port twice."""
    lines = _Lines(config.file)
    found = []
    seen: list[_Socket] = []
    for sock in _sockets(config, lines):
        for earlier in seen:
            if sock.port and sock.port == earlier.port and _overlap(sock.address, earlier.address):
                kind = (
                    "metrics and IMAP need a port each"
                    if "metrics" in (sock.what, earlier.what)
                    else "two listeners cannot share a port"
                )
                found.append(
                    Finding(
                        lines.file,
                        sock.line,
                        f"{sock.what} on {authority(sock.address, sock.port)} clashes with "
                        f"{earlier.what} on {authority(earlier.address, earlier.port)} "
                        f"(line {earlier.line}): {kind}",
                    )
                )
                break
        seen.append(sock)
    return found


def missing_addresses(config: DaemonConfig) -> list[Finding]:
    """Listener and metrics addresses that this host does not have."""
    lines = _Lines(config.file)
    found = []
    for sock in _sockets(config, lines):
        if ipaddress.ip_address(sock.address).is_unspecified:
            continue
        family = socket.AF_INET6 if ":" in sock.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((sock.address, 0))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    continue
                found.append(
                    Finding(
                        lines.file,
                        sock.line,
                        f"{sock.what}: {sock.address} is not an address of this host "
                        f"({exc.strerror})",
                    )
                )
    return found


def _users_without_route(config: DaemonConfig, service: Service, lines: _Lines) -> list[Finding]:
    auth = service.auth
    if not isinstance(auth, PasswdFileSource):
        return []
    users = [e.user for e in auth.table.entries.values() if e.password is not None]
    lost = [user for user in users if service.table.route_user(user) is None]
    if not lost:
        return []
    names = ", ".join(lost[:FIRST_FEW]) + (", ..." if len(lost) > FIRST_FEW else "")
    return [
        Finding(
            lines.file,
            lines.of("auth", "passwd_file"),
            f"{len(lost)} of {len(users)} users in {auth.table.file} have no route in "
            f"{service.table.file}; their logins get NO [UNAVAILABLE]: {names}",
            warning=True,
        )
    ]


def _public_trust(config: DaemonConfig, lines: _Lines) -> list[Finding]:
    public = public_networks(config.policy.trusted_networks)
    if not public:
        return []
    exposed = [
        lc
        for lc in config.listeners
        if lc.tls != "implicit"
        and (lc.proxy_protocol or not ipaddress.ip_address(lc.address).is_loopback)
    ]
    if not exposed:
        return []
    lc = exposed[0]
    return [
        Finding(
            lines.file,
            lines.of("trusted_networks"),
            f"trusted_networks: {public[0]} reaches beyond private address space, and "
            f"listener {lc.name} ({authority(lc.address, lc.port)}, tls: {lc.tls}) lets "
            "trusted clients log in without TLS: passwords from there may cross the "
            "internet in clear",
            warning=True,
        )
    ]


def _world_readable(path: Path | None, what: str, line: int, file: str) -> list[Finding]:
    if path is None:
        return []
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if not mode & stat.S_IROTH:
        return []
    return [
        Finding(
            file,
            line,
            f"{what} {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            f"chmod o-r {path}",
            warning=True,
        )
    ]


#: The IMAP port of implicit TLS (RFC 8314 §3.2).
IMAPS_PORT = 993


def routing_warnings(table: RoutingTable) -> list[Finding]:
    """Warnings about a loaded routing table: referral ports that are implicit-TLS ports."""
    lines = _Lines(Path(table.file))
    found = []
    for server in table.servers.values():
        if server.port == server.imaps_port:
            why = "equals its imaps_port, an implicit-TLS port"
        elif server.port == IMAPS_PORT:
            why = f"is {IMAPS_PORT}, the implicit-TLS IMAP port"
        else:
            continue
        found.append(
            Finding(
                lines.file,
                lines.of("servers", server.name, "port") or server.line,
                f"servers.{server.name}.port {server.port} {why}: referral URLs name this "
                "port, and alpine rebuilds the connection from the URL alone, connects in "
                "plaintext and hangs for about a minute; name the STARTTLS port in port "
                "and the implicit-TLS one in imaps_port",
                warning=True,
            )
        )
    return found


def check_config(config: DaemonConfig, service: Service) -> list[Finding]:
    """Every finding for a loaded daemon config and its service, errors first."""
    lines = _Lines(config.file)
    errors = port_conflicts(config) + missing_addresses(config)
    warnings = [
        *_users_without_route(config, service, lines),
        *_public_trust(config, lines),
        *_world_readable(config.tls_key, "tls.key", lines.of("tls", "key"), lines.file),
        *routing_warnings(service.table),
        *_autodiscovery_without_domains(config, service, lines),
    ]
    return errors + warnings


def _autodiscovery_without_domains(
    config: DaemonConfig, service: Service, lines: _Lines
) -> list[Finding]:
    """Setup documents served from a table that names no mail domain: every answer 404."""
    if config.autodiscovery is None or service.table.domains:
        return []
    return [
        Finding(
            lines.file,
            lines.of("autodiscovery"),
            "autodiscovery is served but the routing table has no domains: section, "
            "so every setup request gets 404 (add the mail domains to the routing table)",
            warning=True,
        )
    ]
