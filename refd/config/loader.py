"""The daemon configuration: YAML file -> validated, frozen values.

``load_config`` reads the daemon file (listeners, limits, auth, where the
routing table is); ``load_service`` reads what it points at (the routing
table, its bulk user map, the passwd-file) and builds the
:class:`~refd.runtime.Service` that goes into service.  ``refd serve``,
``refd check`` and a reload all call these two functions, so a file that
``refd check`` accepts is exactly a file the daemon accepts.  Every error is
a :class:`~refd.tree.TreeError` whose text is ``file:line: what is wrong``.

Paths inside a file are relative to that file's directory.  With no file,
the daemon runs the embedded demo (``refd/demo/``): loopback only, a demo
routing table and the demo users ``alice`` and ``bob`` (password ``secret``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from refd.addresses import LOOPBACK, IPNetwork
from refd.auth.registry import AUTH_SOURCES, BuildContext, ParseContext, source_spec
from refd.auth.schemes import MAX_PASSWORD_BYTES
from refd.config.tree import Map, Node, Reader, Scalar, TreeError, get
from refd.config.yamltree import parse_yaml
from refd.limits import HttpLimits, Limits
from refd.routing import RoutingError, RoutingTable, load_table, read_user_map_name
from refd.routing.url import split_host_port
from refd.runtime import AUTH_PROTOCOLS, AutodiscoveryPolicy, Service, SessionPolicy
from refd.throttle import ThrottleRules
from refd.tls_tickets import share_ticket_keys

if TYPE_CHECKING:
    from refd.auth.imap_backend import SharedCache

__all__ = [
    "DEMO_CONFIG",
    "HTTP_TLS_MODES",
    "MIN_SECRET_BYTES",
    "STORE_KINDS",
    "AutodiscoveryConfig",
    "DaemonConfig",
    "Limits",
    "ListenerConfig",
    "StoreConfig",
    "bind_shared_cache",
    "load_config",
    "load_routing",
    "load_service",
    "read_secret_file",
]

DEMO_CONFIG = Path(__file__).parent.parent / "demo" / "refd.yaml"

TLS_MODES = ("none", "starttls", "implicit")
#: HTTP has no STARTTLS: plain HTTP or HTTPS
HTTP_TLS_MODES = ("none", "implicit")

T = TypeVar("T")


STORE_KINDS = ("local", "redis")
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``throttle:`` settings about where the counters live."""

    kind: str = "local"  # one of STORE_KINDS
    #: redis://, rediss:// or unix:// (may hold a password: never logged)
    redis_url: str = field(default="", repr=False)
    key_prefix: str = "refd:"
    #: the HMAC key every door shares (from ``secret_file``); None: random
    secret: bytes | None = field(default=None, repr=False)
    secret_file: Path | None = None
    timeout_s: float = 0.2
    retry_s: float = 1.0
    on_error: str = "open"  # open | closed
    max_entries: int = 100_000


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    address: str
    port: int
    tls: str = "none"  # one of TLS_MODES
    proxy_protocol: bool = False


@dataclass(frozen=True, slots=True)
class AutodiscoveryConfig:
    """``autodiscovery:``: the public HTTP listeners and what requests consult.

    The listeners are bound once, like the IMAP ones; ``policy`` goes into
    every :class:`~refd.runtime.Service`, so a reload changes it.
    """

    listeners: tuple[ListenerConfig, ...]
    policy: AutodiscoveryPolicy = field(default_factory=AutodiscoveryPolicy)
    line: int = 0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    file: Path
    listeners: tuple[ListenerConfig, ...]
    routing_file: Path
    auth_source: str
    #: the source's settings, as its spec in refd.auth.registry parsed them
    auth: Any
    #: what sessions consult: hostname, auth delays, throttle, trusted
    #: networks, drain, sibling (the config's values, not a copy)
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    proxy_networks: tuple[IPNetwork, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_line: int = 0
    limits: Limits = field(default_factory=Limits)
    store: StoreConfig = field(default_factory=StoreConfig)
    log_level: str = "info"
    log_format: str = "text"
    shutdown_grace_s: float = 10.0
    metrics_address: tuple[str, int] | None = None
    workers: int = 1
    watch_interval_s: float = 0.0
    #: the public HTTP side (account-setup documents); None: not served
    autodiscovery: AutodiscoveryConfig | None = None

    @property
    def http_listeners(self) -> tuple[ListenerConfig, ...]:
        """The autodiscovery listeners (none without the section)."""
        return () if self.autodiscovery is None else self.autodiscovery.listeners

    def self_addresses(self) -> frozenset[tuple[str, int]]:
        """This door's own addresses: a referral to one of them would loop."""
        out = set()
        for lst in self.listeners:
            out.add((lst.address.lower().strip("[]"), lst.port))
            out.add((self.policy.hostname.lower(), lst.port))
        return frozenset(out)


_TOP = {
    "hostname",
    "routing",
    "auth",
    "listeners",
    "tls",
    "trusted_networks",
    "proxy_networks",
    "limits",
    "throttle",
    "log",
    "drain",
    "sibling",
    "shutdown_grace_s",
    "metrics",
    "workers",
    "watch_interval_s",
    "autodiscovery",
}
#: the keys of ``auth:`` every source shares; each source adds its own (refd.auth.registry)
_AUTH_KEYS = frozenset({"source", "failure_delay_s", "failure_delay_max_s", "advertise_plain"})


def read_secret_file(path: Path) -> bytes:
    """The HMAC secret in ``path`` (surrounding whitespace dropped); OSError or ValueError."""
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"holds {len(secret)} bytes; it needs at least {MIN_SECRET_BYTES} "
            "(e.g. head -c 32 /dev/urandom | base64)"
        )
    return secret


def read_text(path: Path, *, referer: str = "", line: int = 0) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if referer:
            raise TreeError(referer, line, f"cannot read {path}: {reason}") from None
        raise TreeError(str(path), 0, f"cannot read the file: {reason}") from None


#: Characters of a big file read, decoded and split per call by
#: `read_text_pieces`: a piece of a user map is ~1,900 lines, read in well
#: under 1 ms and parsed in ~5 ms on a 2-core VM, so a paced read
#: (`bulk_pacing`) can pause about as often as it asks.
PIECE_CHARS = 1 << 16


@dataclass(frozen=True)
class Pacing:
    """A bulk read that leaves its CPU now and then: ``pause_s`` asleep after
    each ``work_s`` of work (wall time, checked between pieces)."""

    work_s: float
    pause_s: float


#: Set around a reload's thread (`refd.daemon`): the big files that thread
#: reads (`read_text_pieces`) are read, hashed and parsed at this pace.  The
#: thread runs in a copy of the setting task's context, so nothing else sees it.
bulk_pacing: ContextVar[Pacing | None] = ContextVar("refd_bulk_pacing", default=None)


class _Pacer:
    """One paced read: sleeps for the pause once the work since the last one is done."""

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self._until = time.monotonic() + pacing.work_s

    def step(self) -> None:
        if time.monotonic() >= self._until:
            time.sleep(self.pacing.pause_s)
            self._until = time.monotonic() + self.pacing.work_s


class TextPieces(list[str]):
    """A big file's text in pieces (`read_text_pieces`): a list of strings
    whose iteration, when the read was paced (`bulk_pacing`), takes the
    pacing's pauses between pieces, so the hashing and the parsing that walk
    the pieces are paced as the reading was."""

    def __init__(self, pieces: list[str], pacer: _Pacer | None = None) -> None:
        super().__init__(pieces)
        self._pacer = pacer

    def __iter__(self) -> Iterator[str]:
        if self._pacer is None:
            return super().__iter__()
        return self._paced(self._pacer)

    def _paced(self, pacer: _Pacer) -> Iterator[str]:
        for piece in list.__iter__(self):
            yield piece
            pacer.step()


def read_text_pieces(path: Path, *, referer: str = "", line: int = 0) -> TextPieces:
    """`read_text`, in pieces of about `PIECE_CHARS` that each end at a line end.

    For the bulk user map, which a reload reads in a thread beside the event
    loop: one ``read_text`` of a 30 MiB map is a single 50 ms UTF-8 decode
    holding the GIL, and ``str.splitlines`` and ``str.encode`` over the whole
    text 98 and 23 ms more; here no single call sees more than one piece.
    The text (universal newlines) and the errors are `read_text`'s.  Under
    `bulk_pacing` the read pauses between pieces, and so does iterating the
    pieces returned.
    """
    pacing = bulk_pacing.get()
    pacer = None if pacing is None else _Pacer(pacing)
    pieces: list[str] = []
    partial: list[str] = []  # the start of a line that goes on in the next block
    try:
        with path.open(encoding="utf-8") as f:
            while block := f.read(PIECE_CHARS):
                if pacer is not None:
                    pacer.step()
                # "\n" ends a line: newline=None turned "\r\n" and "\r" into it
                cut = block.rfind("\n") + 1
                if not cut:
                    partial.append(block)
                    continue
                pieces.append("".join([*partial, block[:cut]]))
                partial = [block[cut:]]
        if "".join(partial):
            pieces.append("".join(partial))
    except (OSError, UnicodeDecodeError):
        # the whole-file read gives the error with its position in the file
        return TextPieces([read_text(path, referer=referer, line=line)])
    return TextPieces(pieces, pacer)


def resolve_path(base: Path, value: str) -> Path:
    return (base.parent / os.path.expanduser(value)).resolve()


def load_config(path: Path) -> DaemonConfig:
    """Read and validate the daemon configuration file."""
    file = str(path)
    root = parse_yaml(read_text(path), file)
    r = Reader(file)
    top = r.as_root(root, "the daemon configuration", empty="it needs routing, auth, listeners")
    r.reject_unknown(top, _TOP, "the top level")

    routing = resolve_path(path, r.as_str(r.require(top, "routing", "the top level"), "routing"))
    auth = r.as_map(r.require(top, "auth", "the top level"), "auth")
    # Every source's keys are known here, whichever is chosen: a leftover
    # key of another source is not an error.
    specs = {name: source_spec(name) for name in AUTH_SOURCES}
    r.reject_unknown(auth, _AUTH_KEYS.union(*(s.keys for s in specs.values())), "auth")
    source = choice(r, auth, "source", tuple(AUTH_SOURCES), "passwd-file", required=True)
    settings = specs[source].parse(ParseContext(r, path, auth))
    delay = opt(r, auth, "failure_delay_s", r.as_float_seconds, 2.0, "auth.failure_delay_s")
    delay_max = opt(
        r, auth, "failure_delay_max_s", r.as_float_seconds, 15.0, "auth.failure_delay_max_s"
    )
    advertise = opt(r, auth, "advertise_plain", r.as_bool, False, "auth.advertise_plain")

    listeners = _listeners(r, r.require(top, "listeners", "the top level"))
    autodiscovery_node = get(top, "autodiscovery")
    # (listeners, policy, the line of sign_profiles or of the section)
    http: tuple[list[tuple[ListenerConfig, Node]], AutodiscoveryPolicy, int] | None = None
    if autodiscovery_node is not None:
        http = _autodiscovery(r, autodiscovery_node, {lst.name: n.line for lst, n in listeners})
    every_listener = listeners + (http[0] if http is not None else [])
    tls_cert = tls_key = None
    tls_line = 0
    tls_node = get(top, "tls")
    if tls_node is not None:
        tls = r.as_map(tls_node, "tls")
        tls_line = tls.line
        r.reject_unknown(tls, {"cert", "key"}, "tls")
        tls_cert = resolve_path(path, r.as_str(r.require(tls, "cert", "tls"), "tls.cert"))
        tls_key = resolve_path(path, r.as_str(r.require(tls, "key", "tls"), "tls.key"))
    if tls_cert is None:
        for lst, node in every_listener:
            if lst.tls != "none":
                raise r.error(node, f"listener {lst.name} uses TLS but there is no tls: section")
        if http is not None and http[1].sign_profiles:
            raise r.error(
                http[2],
                "autodiscovery.sign_profiles signs with the TLS certificate, "
                "and there is no tls: section",
            )

    networks = LOOPBACK
    if (net_node := get(top, "trusted_networks")) is not None:
        networks = network_list(r, net_node, "trusted_networks")
    proxy_networks: tuple[IPNetwork, ...] = ()
    if (proxy_node := get(top, "proxy_networks")) is not None:
        proxy_networks = network_list(r, proxy_node, "proxy_networks")
    for lst, node in every_listener:
        if lst.proxy_protocol and not proxy_networks:
            raise r.error(
                node, f"listener {lst.name} accepts PROXY headers but proxy_networks is empty"
            )

    limits = _limits(r, get(top, "limits"))
    throttle, store = _throttle(r, path, get(top, "throttle"))
    level, fmt = "info", "text"
    log_node = get(top, "log")
    if log_node is not None:
        log = r.as_map(log_node, "log")
        r.reject_unknown(log, {"level", "format"}, "log")
        level = choice(r, log, "level", ("debug", "info", "warning", "error"), "info")
        fmt = choice(r, log, "format", ("text", "json"), "text")
    hostname = opt(r, top, "hostname", r.as_str, "localhost", "hostname")
    drain = opt(r, top, "drain", r.as_bool, False, "drain")
    sibling = None
    if (sib := get(top, "sibling")) is not None:
        sibling = host_port(r, sib, "sibling", default_port=143)
    grace = opt(r, top, "shutdown_grace_s", r.as_float_seconds, 10.0, "shutdown_grace_s")
    metrics_address = None
    if (met := get(top, "metrics")) is not None:
        mm = r.as_map(met, "metrics")
        r.reject_unknown(mm, {"address", "port"}, "metrics")
        maddr = r.as_str(r.require(mm, "address", "metrics"), "metrics.address").strip("[]")
        try:
            ipaddress.ip_address(maddr)
        except ValueError:
            raise r.error(mm, f"metrics.address {maddr!r} is not an IP address") from None
        metrics_address = (
            maddr,
            r.as_int(r.require(mm, "port", "metrics"), "metrics.port", 0, 65535),
        )
    workers = opt(r, top, "workers", lambda n, w: r.as_int(n, w, 1, 256), 1, "workers")
    watch = opt(r, top, "watch_interval_s", r.as_float_seconds, 0.0, "watch_interval_s")
    return DaemonConfig(
        file=path,
        listeners=tuple(lst for lst, _ in listeners),
        routing_file=routing,
        auth_source=source,
        auth=settings,
        policy=SessionPolicy(
            hostname=hostname,
            advertise_auth_plain=advertise,
            auth_failure_delay_s=delay,
            auth_failure_delay_max_s=delay_max,
            throttle=throttle,
            trusted_networks=networks,
            drain=drain,
            sibling=sibling,
        ),
        proxy_networks=proxy_networks,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_line=tls_line,
        limits=limits,
        store=store,
        log_level=level,
        log_format=fmt,
        shutdown_grace_s=grace,
        metrics_address=metrics_address,
        workers=workers,
        watch_interval_s=watch,
        autodiscovery=None
        if http is None
        else AutodiscoveryConfig(
            listeners=tuple(lst for lst, _ in http[0]),
            policy=http[1],
            line=autodiscovery_node.line if autodiscovery_node is not None else 0,
        ),
    )


def opt(r: Reader, m: Map, key: str, conv: Callable[[Node, str], T], default: T, what: str) -> T:
    node = get(m, key)
    if node is None:
        return default
    return conv(node, what)


def host_port(r: Reader, node: Node, what: str, *, default_port: int) -> tuple[str, int]:
    text = r.as_str(node, what)
    try:
        host, port_text = split_host_port(text)
    except ValueError as exc:
        raise r.error(node, f"{what}: {exc}") from None
    if not host or " " in host:
        raise r.error(node, f"{what}: {text!r} is not a host[:port]")
    if port_text is None:
        return host, default_port
    return host, r.as_int(Scalar(port_text, node.line, False), f"{what} port", 1, 65535)


def network_list(r: Reader, node: Node, what: str) -> tuple[IPNetwork, ...]:
    nets = []
    for text in r.as_str_list(node, what, empty_ok=True):
        try:
            nets.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise r.error(node, f"{what}: {exc}") from None
    return tuple(nets)


def choice(
    r: Reader,
    m: Map,
    key: str,
    allowed: tuple[str, ...],
    default: str,
    *,
    required: bool = False,
) -> str:
    node = r.require(m, key, "auth") if required else get(m, key)
    if node is None:
        return default
    value = r.as_str(node, key).lower()
    if value not in allowed:
        raise r.error(node, f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _listeners(
    r: Reader,
    node: Node,
    *,
    what: str = "listeners",
    tls_modes: tuple[str, ...] = TLS_MODES,
    default_name: str = "imap",
    taken: dict[str, int] | None = None,
) -> list[tuple[ListenerConfig, Node]]:
    """A list of listeners under ``what`` (the IMAP ones, or autodiscovery's).

    Names are unique across every listener of the door (``taken``: names
    already used, with their lines): logs, metric labels and the sockets a
    worker inherits are keyed by them.
    """
    out: list[tuple[ListenerConfig, Node]] = []
    seen: dict[str, int] = dict(taken or {})
    items = r.as_seq(node, what).items
    if not items:
        raise r.error(node, f"{what}: at least one listener is needed")
    for i, item in enumerate(items):
        where = f"{what}[{i}]"
        m = r.as_map(item, where)
        r.reject_unknown(m, {"name", "address", "port", "tls", "proxy_protocol"}, where)
        name = opt(r, m, "name", r.as_str, f"{default_name}{i}", f"{where}.name")
        if name in seen:
            raise r.error(m, f"listener name {name!r} is used twice (first at line {seen[name]})")
        seen[name] = m.line
        address = r.as_str(r.require(m, "address", where), "address").strip("[]")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise r.error(m, f"{where}.address {address!r} is not an IP address") from None
        port = r.as_int(r.require(m, "port", where), "port", 0, 65535)
        tls = choice(r, m, "tls", tls_modes, "none")
        proxy = opt(r, m, "proxy_protocol", r.as_bool, False, f"{where}.proxy_protocol")
        out.append((ListenerConfig(name, address, port, tls, proxy), m))
    return out


_AUTODISCOVERY_KEYS = {"listeners", "per_user", "require_auth", "hosts", "sign_profiles", "limits"}
HTTP_LIMIT_INTS = {
    "max_header_bytes": (1024, 1 << 20),
    "max_body_bytes": (256, 1 << 24),
    "max_connections": (1, 10_000_000),
    "max_connections_per_address": (1, 10_000_000),
    "max_requests_per_connection": (1, 1_000_000),
}
HTTP_LIMIT_SECONDS = ("request_timeout_s", "idle_timeout_s")
#: not a host name: what a Host header value can never be equal to
_BAD_HOST = frozenset(" /@?#\\,")


def _autodiscovery(
    r: Reader, node: Node, imap_names: dict[str, int]
) -> tuple[list[tuple[ListenerConfig, Node]], AutodiscoveryPolicy, int]:
    """``autodiscovery:``: its listeners, its policy and its line."""
    m = r.as_map(node, "autodiscovery")
    r.reject_unknown(m, _AUTODISCOVERY_KEYS, "autodiscovery")
    listeners = _listeners(
        r,
        r.require(m, "listeners", "autodiscovery"),
        what="autodiscovery.listeners",
        tls_modes=HTTP_TLS_MODES,
        default_name="http",
        taken=imap_names,
    )
    per_user = opt(r, m, "per_user", r.as_bool, True, "autodiscovery.per_user")
    require_auth: tuple[str, ...] = AUTH_PROTOCOLS
    if (auth_node := get(m, "require_auth")) is not None:
        named = r.as_str_list(auth_node, "autodiscovery.require_auth")
        for name in named:
            if name not in AUTH_PROTOCOLS:
                raise r.error(
                    auth_node,
                    f"autodiscovery.require_auth: {name!r} is not one of "
                    f"{', '.join(AUTH_PROTOCOLS)} (autoconfig is never authenticated)",
                )
        require_auth = tuple(p for p in AUTH_PROTOCOLS if p in named)
    hosts: list[str] = []
    if (hosts_node := get(m, "hosts")) is not None:
        for text in r.as_str_list(hosts_node, "autodiscovery.hosts"):
            host = _host_value(text)
            if host is None:
                raise r.error(
                    hosts_node,
                    f"autodiscovery.hosts: {text!r} is not a host name or IP address "
                    "(write it without a port or path)",
                )
            hosts.append(host)
    sign = opt(r, m, "sign_profiles", r.as_bool, False, "autodiscovery.sign_profiles")
    policy = AutodiscoveryPolicy(
        per_user=per_user,
        require_auth=require_auth,
        hosts=tuple(dict.fromkeys(hosts)),
        sign_profiles=sign,
        limits=_http_limits(r, get(m, "limits")),
    )
    return listeners, policy, (get(m, "sign_profiles") or m).line


def _host_value(text: str) -> str | None:
    """``text`` as a Host value compares (lower-case, IPv6 unbracketed), or None."""
    host = text.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    if ":" in host:  # an IPv6 address, or a port that does not belong here
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    if not host or _BAD_HOST & set(host):
        return None
    return host


def _http_limits(r: Reader, node: Node | None) -> HttpLimits:
    if node is None:
        return HttpLimits()
    m = r.as_map(node, "autodiscovery.limits")
    r.reject_unknown(m, set(HTTP_LIMIT_INTS) | set(HTTP_LIMIT_SECONDS), "autodiscovery.limits")
    values: dict[str, int | float] = {}
    for key, (lo, hi) in HTTP_LIMIT_INTS.items():
        if (n := get(m, key)) is not None:
            values[key] = r.as_int(n, f"autodiscovery.limits.{key}", lo, hi)
    for key in HTTP_LIMIT_SECONDS:
        if (n := get(m, key)) is not None:
            values[key] = r.as_positive_seconds(n, f"autodiscovery.limits.{key}")
    return HttpLimits(**values)  # type: ignore[arg-type]


_LIMIT_INTS = {
    "max_line_bytes": (512, 1 << 24),
    "max_literal_bytes": (0, 1 << 30),
    "max_command_bytes": (1024, 1 << 30),
    "bad_commands": (1, 1000),
    "max_connections": (1, 10_000_000),
    "max_connections_per_address": (1, 10_000_000),
    "max_auth_in_flight": (1, 1_000_000),
    "max_password_bytes": (1, MAX_PASSWORD_BYTES),
    "max_list_patterns": (1, 100_000),
    "max_list_tests": (1, 1_000_000_000),
}
_LIMIT_SECONDS = (
    "preauth_idle_timeout_s",
    "idle_timeout_s",
    "login_timeout_s",
    "command_timeout_s",
    "write_timeout_s",
    "tls_handshake_timeout_s",
    "proxy_header_timeout_s",
)


def _limits(r: Reader, node: Node | None) -> Limits:
    if node is None:
        return Limits()
    m = r.as_map(node, "limits")
    r.reject_unknown(m, set(_LIMIT_INTS) | set(_LIMIT_SECONDS), "limits")
    values: dict[str, int | float] = {}
    for key, (lo, hi) in _LIMIT_INTS.items():
        if (n := get(m, key)) is not None:
            values[key] = r.as_int(n, f"limits.{key}", lo, hi)
    for key in _LIMIT_SECONDS:
        if (n := get(m, key)) is not None:
            values[key] = r.as_positive_seconds(n, f"limits.{key}")
    return Limits(**values)  # type: ignore[arg-type]


_THROTTLE_KEYS = {
    "forget_after_s",
    "network_threshold",
    "user_threshold",
    "ipv4_prefix",
    "ipv6_prefix",
    "max_entries",
    "store",
    "redis",
    "secret_file",
    "store_timeout_s",
    "store_retry_s",
    "on_store_error",
}


def _throttle(r: Reader, path: Path, node: Node | None) -> tuple[ThrottleRules, StoreConfig]:
    if node is None:
        return ThrottleRules(), StoreConfig()
    m = r.as_map(node, "throttle")
    r.reject_unknown(m, _THROTTLE_KEYS, "throttle")

    def seconds(key: str, default: float) -> float:
        return opt(r, m, key, r.as_positive_seconds, default, f"throttle.{key}")

    def count(key: str, default: int, lo: int, hi: int) -> int:
        return opt(r, m, key, lambda n, w: r.as_int(n, w, lo, hi), default, f"throttle.{key}")

    rules = ThrottleRules(
        forget_after_s=seconds("forget_after_s", 900.0),
        network_threshold=count("network_threshold", 10, 1, 1_000_000),
        user_threshold=count("user_threshold", 5, 1, 1_000_000),
        ipv4_prefix=count("ipv4_prefix", 24, 8, 32),
        ipv6_prefix=count("ipv6_prefix", 64, 16, 128),
    )
    kind = choice(r, m, "store", STORE_KINDS, "local")
    secret = secret_path = None
    if (secret_node := get(m, "secret_file")) is not None:
        secret_path = resolve_path(path, r.as_str(secret_node, "throttle.secret_file"))
        try:
            secret = read_secret_file(secret_path)
        except OSError as exc:
            raise r.error(
                secret_node, f"throttle.secret_file: cannot read {secret_path}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise r.error(secret_node, f"throttle.secret_file {secret_path} {exc}") from None
    url, prefix = "", "refd:"
    redis_node = get(m, "redis")
    if kind == "redis":
        store_node = get(m, "store") or m
        if redis_node is None:
            raise r.error(
                store_node, 'throttle: store: redis needs a "redis:" section with its url'
            )
        if secret is None:
            raise r.error(
                store_node,
                "throttle: store: redis needs secret_file, the HMAC key every door shares "
                "(keys in Redis never hold an address or a user name)",
            )
    if redis_node is not None:
        rm = r.as_map(redis_node, "throttle.redis")
        r.reject_unknown(rm, {"url", "key_prefix"}, "throttle.redis")
        url_node = r.require(rm, "url", "throttle.redis")
        url = r.as_str(url_node, "throttle.redis.url")
        if url.partition("://")[0] not in ("redis", "rediss", "unix"):
            # The URL may hold a password: never echo it.
            raise r.error(
                url_node, "throttle.redis.url must start with redis://, rediss:// or unix://"
            )
        prefix = opt(r, rm, "key_prefix", r.as_str, "refd:", "throttle.redis.key_prefix")
    on_error = choice(r, m, "on_store_error", ("open", "closed"), "open")
    store = StoreConfig(
        kind=kind,
        redis_url=url,
        key_prefix=prefix,
        secret=secret,
        secret_file=secret_path if secret is not None else None,
        timeout_s=seconds("store_timeout_s", 0.2),
        retry_s=seconds("store_retry_s", 1.0),
        on_error=on_error,
        max_entries=count("max_entries", 100_000, 100, 100_000_000),
    )
    return rules, store


def load_routing(
    path: Path, *, self_addresses: frozenset[tuple[str, int]] = frozenset()
) -> RoutingTable:
    """Read a routing table and its bulk user map, exactly as the daemon does."""
    text = read_text(path)
    file = str(path)
    root = parse_yaml(text, file)
    map_name = read_user_map_name(root, file)
    map_text = map_file = None
    if map_name is not None:
        map_path = resolve_path(path, map_name)
        map_file = str(map_path)
        map_text = read_text_pieces(map_path, referer=file, line=_user_map_line(root))
    digest = hashlib.sha256(text.encode("utf-8"))
    if map_text is not None:
        digest.update(b"\0")
        for piece in map_text:
            digest.update(piece.encode("utf-8"))
    return load_table(
        root,
        file,
        self_addresses=self_addresses,
        user_map_text=map_text,
        user_map_file=map_file or "",
        sha256=digest.hexdigest(),
    )


def _user_map_line(root: Node | None) -> int:
    if isinstance(root, Map):
        for k, _ in root.items:
            if k.value == "user_map":
                return k.line
    return 0


def load_service(config: DaemonConfig) -> Service:
    """Load everything the config points at and build the service value."""
    table = load_routing(config.routing_file, self_addresses=config.self_addresses())
    auth = source_spec(config.auth_source).build(config.auth, BuildContext(config.file, table))
    tls_context = None
    if config.tls_cert is not None and config.tls_key is not None:
        try:
            tls_context = make_tls_context(str(config.tls_cert), str(config.tls_key))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TreeError(
                str(config.file),
                config.tls_line,
                f"cannot load TLS certificate {config.tls_cert} / key {config.tls_key}: {reason}",
            ) from None
    autodiscovery = config.autodiscovery
    signing_pem = None
    if autodiscovery is not None and autodiscovery.policy.sign_profiles:
        # Checked at load: sign_profiles needs a tls: section.
        assert config.tls_cert is not None and config.tls_key is not None
        try:
            signing_pem = (config.tls_cert.read_bytes(), config.tls_key.read_bytes())
        except OSError as exc:
            raise TreeError(
                str(config.file),
                config.tls_line,
                f"cannot read TLS certificate {config.tls_cert} / key {config.tls_key} "
                f"to sign profiles: {exc.strerror or exc}",
            ) from None
    return Service(
        table=table,
        auth=auth,
        policy=config.policy,
        limits=config.limits,
        tls_context=tls_context,
        autodiscovery=None if autodiscovery is None else autodiscovery.policy,
        signing_pem=signing_pem,
    )


def bind_shared_cache(config: DaemonConfig, service: Service, cache: SharedCache) -> None:
    """With ``auth.imap.cache_shared``, put the imap source's cache in the door's store."""
    from refd.auth.imap_backend import ImapAuthConfig, ImapBackendSource  # noqa: PLC0415

    ia = config.auth
    if isinstance(ia, ImapAuthConfig) and ia.cache_shared:
        assert isinstance(service.auth, ImapBackendSource)
        service.auth.shared_cache = cache


def make_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server TLS: Python's CLIENT_AUTH defaults, TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    # TLS 1.3 session tickets after each handshake: two, OpenSSL's default and
    # what Dovecot 2.3 sends (``openssl s_client -msg`` shows two
    # NewSessionTicket from both).  They cost the server ~120 us of a
    # ~1,270 us RSA-2048 handshake (in-memory, this machine); fewer would
    # end resumption for clients that come back, so they stay.  Their keys
    # are the same in every worker and across reloads (`refd.tls_tickets`).
    ctx.num_tickets = 2
    share_ticket_keys(ctx)
    return ctx


__all__ += ["RoutingError"]
