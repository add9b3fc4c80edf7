"""The `ldap` authentication source: a directory decides, and names the home server.

One login is one exchange with the directory, run in a worker thread:

1. **search** with the service account (``bind_dn``; anonymous without it)
   under ``base`` for ``(&user_filter usable_filter)``, the user name put into
   the template escaped per RFC 4515 §3, asking for the login, route and (in
   compare mode) password attributes;
2. **bind** mode (Dovecot's ``auth_bind``): a simple bind as the DN found,
   with the password, on a second connection kept for user binds (so the
   search connection stays bound as the service account); **compare** mode:
   the ``password_attribute`` value read in step 1 verified with
   `refd.auth.schemes` (``{SCHEME}`` prefixes as in passwd-files).

So a login is two round trips on pooled connections, and the same two for an
unknown user, an ambiguous name or an account the ``usable_filter`` rejects:
bind mode then binds as a DN that does not exist (the directory answers
invalidCredentials, as for a wrong password), compare mode verifies against a
dummy hash as costly as the last real one. The route comes from the same
search (``route_attribute``, e.g. ``mailHost``), so the password check and
the route cost one directory round trip, not two.

What the answers mean:

- no entry (unknown user, or the ``usable_filter`` rejects the account): FAILURE,
  exactly as a wrong password (RFC 2221 §6 wants one answer);
- two or more entries: FAILURE, logged at WARNING with the DNs; it never takes
  the first;
- invalidCredentials (49) or inappropriateAuthentication (48) to the bind:
  FAILURE; success: SUCCESS with the entry's own ``login_attribute`` value as
  the user name (the directory matches names loosely: case, spaces, Unicode
  forms; routing and logs follow the entry, not the raw login) and
  `AuthResult.home` from ``route_attribute``;
- a server that cannot be reached, times out or answers busy (51),
  unavailable (52) or unwillingToPerform (53): the next server of ``servers``
  is tried, and the failed one is skipped for ``retry_after_s`` (unless every
  server is); when none answers within ``timeout_s``: UNAVAILABLE;
- anything else the directory says (a refused service bind, noSuchObject for
  the base, an entry with two route values): UNAVAILABLE with the reason.

An empty password is a FAILURE without asking anyone: RFC 4513 §5.1.2 makes
a simple bind with a DN and no password an *unauthenticated* bind, which
many servers answer with success.

The library is ldap3 (pure Python, installed from a wheel with no compiler or
libldap headers). It blocks, so every exchange runs in
``trio.to_thread.run_sync`` under a `trio.CapacityLimiter` of ``pool_size``
threads; each thread takes its connections from per-server pools, uses them
alone, and gives them back. Every socket is opened here (`_open_socket`): it
sets ``TCP_NODELAY`` (without it, the small LDAP and TLS writes of a new
connection wait for the peer's delayed ACK, ~40 ms on Linux), connects within
``connect_timeout_s``, and reads and writes within ``operation_timeout_s``,
cut to what is left of ``timeout_s`` for the whole exchange. TLS (``ldaps://``
or ``starttls``) uses `refd.imap_client.client_tls_context`: the system CAs
or ``ca_file``, and the server's name checked. The event loop is never
blocked, and the trio side gives up at ``timeout_s`` even if a thread is
stuck (the thread's own socket timeouts end it soon after).

Each request is reported as a `DirectoryOp`: operation ``connect``,
``starttls``, ``bind`` or ``search``; result ``ok``, ``failure`` (a bind
refused for the credentials), ``error`` (refused connection, TLS error, an
unexpected result code) or ``timeout``.

Nothing here logs or returns the password or the service account's
password; reasons are built from fixed text, DNs and result names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import socket
import ssl
import threading
import time
import unicodedata
import urllib.parse
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

# ldap3 2.9.1 imports pyasn1 names that pyasn1 0.6 deprecates (tagMap, typeMap):
# harmless, and nothing a refd admin can act on.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import (
        LDAPCommunicationError,
        LDAPException,
        LDAPSocketOpenError,
        LDAPStartTLSError,
    )
    from ldap3.operation.search import parse_filter
    from ldap3.utils.dn import escape_rdn, parse_dn

from refd.auth.base import AuthRequest, AuthResult, AuthStatus, DirectoryOp, DirectoryRoute
from refd.auth.registry import AuthSourceSpec, BuildContext, ParseContext
from refd.auth.schemes import (
    PasswordHash,
    SchemeError,
    check_password,
    dummy_hash,
    hash_password,
    parse_password_hash,
)
from refd.config.loader import choice, opt, resolve_path
from refd.config.tree import Map, TreeError, get
from refd.imap_client import client_tls_context
from refd.routing.model import Home

__all__ = [
    "SPEC",
    "DirectoryRoute",
    "LdapConfig",
    "LdapServer",
    "LdapSource",
    "escape_filter_value",
    "expand_filter",
    "normalize_dn",
]

log = logging.getLogger(__name__)

#: the StartTLS extended operation (RFC 4511 §4.14.1)
STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
# Result codes (RFC 4511 §4.1.9).
SUCCESS = 0
SIZE_LIMIT_EXCEEDED = 4
INAPPROPRIATE_AUTHENTICATION = 48
INVALID_CREDENTIALS = 49
#: busy, unavailable, unwillingToPerform: this server cannot answer now; try the next
SERVER_TROUBLE = frozenset({51, 52, 53})
SCOPES = ("base", "one", "subtree")
MODES = ("bind", "compare")


# -- filters and DNs (pure) ---------------------------------------------------------


def escape_filter_value(value: str) -> str:
    """`value` as an RFC 4515 assertion value, safe inside any filter template.

    RFC 4515 §3: "The <valueencoding> rule ensures that the entire filter
    string is a valid UTF-8 string and provides that the octets that
    represent the ASCII characters "*" (ASCII 0x2a), "(" (ASCII 0x28), ")"
    (ASCII 0x29), "\\" (ASCII 0x5c), and NUL (ASCII 0x00) are represented
    as a backslash "\\" (ASCII 0x5c) followed by the two hexadecimal digits
    representing the value of the encoded octet." Everything else (UTF-8
    included) is left as it is.
    """
    return (
        value.replace("\\", "\\5c")
        .replace("*", "\\2a")
        .replace("(", "\\28")
        .replace(")", "\\29")
        .replace("\0", "\\00")
    )


def expand_filter(template: str, user: str) -> str:
    """Dovecot's variables in `template`, each value escaped: ``%u`` the user name,
    ``%n`` its part before the last ``@``, ``%d`` the part after it (empty
    without one), ``%%`` a percent sign."""
    local, at, domain = user.rpartition("@")
    if not at:
        local, domain = user, ""
    values = {"u": user, "n": local, "d": domain, "%": "%"}
    out = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "%" and i + 1 < len(template) and template[i + 1] in values:
            name = template[i + 1]
            out.append("%" if name == "%" else escape_filter_value(values[name]))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def check_filter_template(template: str) -> str | None:
    """Why `template` is not a usable filter (after expansion), or None."""
    if not (template.startswith("(") and template.endswith(")")):
        return "a filter is written in parentheses, e.g. (uid=%u)"
    for i, char in enumerate(template):
        if char == "%" and (i + 1 >= len(template) or template[i + 1] not in "und%"):
            return "unknown variable after % (known: %u, %n, %d, %%)"
    depth = 0
    for char in template:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return "unbalanced parentheses"
    if depth:
        return "unbalanced parentheses"
    try:
        parse_filter(expand_filter(template, "x"), None, False, True, None, False)
    except Exception as exc:
        return f"not an RFC 4515 filter: {exc}"
    return None


def _fold(text: str) -> str:
    """How the directory compares names, roughly: Unicode NFKC, case folded, spaces trimmed."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def normalize_dn(dn: str) -> str:
    """`dn` in one spelling for comparison (RFC 4514): attribute types lower case,
    values unescaped, Unicode-normalised and case folded, spaces around
    separators dropped, then escaped the one way `ldap3.utils.dn` does.

    Two DNs naming the same entry in the server's own escaping
    (``cn=J\\C3\\BCrgen`` and ``CN=Jürgen``) normalise to the same string.
    """
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except Exception:
        return _fold(dn)
    rdns: list[str] = []
    current: list[str] = []
    for attr, value, sep in parts:
        current.append(f"{attr.strip().lower()}={escape_rdn(_fold(_unescape(value)))}")
        if sep != "+":
            rdns.append("+".join(sorted(current)))
            current = []
    if current:
        rdns.append("+".join(sorted(current)))
    return ",".join(rdns)


def _unescape(value: str) -> str:
    """An RFC 4514 attribute value with its ``\\XX`` and ``\\c`` escapes undone."""
    if "\\" not in value:
        return value
    out = bytearray()
    i = 0
    raw = value.encode("utf-8")
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and i + 2 < len(raw) + 1:
            pair = raw[i + 1 : i + 3]
            try:
                out.append(int(pair, 16))
                i += 3
                continue
            except ValueError:
                out += raw[i + 1 : i + 2]
                i += 2
                continue
        out += raw[i : i + 1]
        i += 1
    return out.decode("utf-8", "replace")


# -- servers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LdapServer:
    """One directory server: ``ldap://host[:389]`` or ``ldaps://host[:636]``."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool = False

    @classmethod
    def from_url(cls, url: str, *, starttls: bool = False) -> LdapServer:
        """Parse `url`; ValueError says why it is not ``ldap://`` or ``ldaps://`` host[:port]."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ldap", "ldaps"):
            raise ValueError(f"{url!r}: an ldap:// or ldaps:// URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"{url!r}: only ldap[s]://host[:port] (the base and filter are keys)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        implicit = scheme == "ldaps"
        if implicit and starttls:
            raise ValueError(f"{url!r}: starttls is for ldap:// URLs; ldaps:// is TLS already")
        return cls(parts.hostname, port or (636 if implicit else 389), implicit, starttls)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'ldaps' if self.implicit_tls else 'ldap'}://{host}:{self.port}"


# -- the blocking side: runs in worker threads ------------------------------------


class _ServerDown(Exception):
    """This server did not answer (refused, timed out, busy): try the next."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Undecided(Exception):
    """The directory answered something that decides nothing (UNAVAILABLE)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Expired(_ServerDown):
    """The whole exchange's time is up."""


@dataclass(slots=True)
class _Entry:
    dn: str
    attributes: dict[str, list[bytes]]

    def values(self, name: str) -> list[str]:
        for key, values in self.attributes.items():
            if key.lower() == name.lower():
                return [v.decode("utf-8", "replace") for v in values]
        return []


@dataclass(slots=True)
class _Outcome:
    status: AuthStatus
    user: str
    reason: str
    home: Home | None = None
    ops: list[DirectoryOp] = field(default_factory=list)


def _is_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | socket.timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return "timed out" in str(exc)


def _open_socket(
    connection: Any,
    server: LdapServer,
    context: ssl.SSLContext | None,
    timeouts: Callable[[], tuple[float, float]],
    address: Any,
    use_ssl: bool = False,
    unix_socket: bool = False,
) -> None:
    """ldap3's socket opener, replaced: TCP_NODELAY, our timeouts, our TLS context."""
    connect_s, operation_s = timeouts()
    sock = socket.socket(*address[:3])
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(connect_s)
        sock.connect(address[4])
        sock.settimeout(operation_s)
        if use_ssl:
            assert context is not None
            sock = context.wrap_socket(sock, server_hostname=server.host)
    except OSError as exc:
        sock.close()
        raise LDAPSocketOpenError(str(exc) or type(exc).__name__) from exc
    connection.socket = sock
    connection.closed = False


class _Pool:
    """Idle connections of one kind to one server; each is used by one thread at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def take(self) -> Any | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        _discard(conn)

    def idle(self) -> list[Any]:
        with self._lock:
            return list(self._idle)

    def drain(self) -> list[Any]:
        with self._lock:
            idle, self._idle = self._idle, []
        return idle


def _discard(conn: Any) -> None:
    """Unbind and close `conn`, whatever state it is in."""
    with contextlib.suppress(Exception):
        if not conn.closed:
            conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
        conn.socket = None
    conn.closed = True


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """What the directory exchange needs (built from `LdapConfig`)."""

    servers: tuple[LdapServer, ...]
    base: str
    user_filter: str
    scope: str = "subtree"
    usable_filter: str | None = None
    mode: str = "bind"
    bind_dn: str | None = None
    bind_password: str | None = field(default=None, repr=False)
    password_attribute: str = "userPassword"  # noqa: S105 - a name
    default_scheme: str = "CRYPT"
    login_attribute: str = "uid"
    route_attribute: str | None = None
    route_first: bool = True
    pool_size: int = 8
    connect_timeout_s: float = 3.0
    operation_timeout_s: float = 5.0
    timeout_s: float = 10.0
    retry_after_s: float = 30.0
    #: where the dummy bind goes for unknown users (bind mode); no entry may have it
    dummy_dn: str | None = None
    route_cache_ttl_s: float = 60.0
    route_cache_negative_ttl_s: float = 10.0
    route_cache_max_entries: int = 10_000


class _Directory:
    """The blocking exchange: pools, failover state, one login at a time per thread."""

    def __init__(self, settings: LdapSettings, context: ssl.SSLContext | None) -> None:
        self.s = settings
        self.context = context
        self._search_pools = {srv: _Pool(settings.pool_size) for srv in settings.servers}
        self._bind_pools = {srv: _Pool(settings.pool_size) for srv in settings.servers}
        self._down_until: dict[LdapServer, float] = {}
        self._lock = threading.Lock()
        self._dummy_like: PasswordHash = parse_password_hash(
            hash_password("SHA512-CRYPT", "refd-dummy")
        )
        self.dummy_dn = settings.dummy_dn or f"cn=refd-no-such-entry,{settings.base}"
        attributes = [settings.login_attribute]
        if settings.route_attribute:
            attributes.append(settings.route_attribute)
        if settings.mode == "compare":
            attributes.append(settings.password_attribute)
        self.attributes = attributes

    # -- failover state

    def order(self) -> list[LdapServer]:
        """The servers in order, those in their retry-after window last."""
        now = time.monotonic()
        with self._lock:
            up = [s for s in self.s.servers if self._down_until.get(s, 0.0) <= now]
        return up + [s for s in self.s.servers if s not in up]

    def mark_down(self, server: LdapServer) -> bool:
        """Skip `server` for retry_after_s; True if it was up until now (worth a log line)."""
        now = time.monotonic()
        with self._lock:
            was_up = self._down_until.get(server, 0.0) <= now
            self._down_until[server] = now + self.s.retry_after_s
        for conn in self._search_pools[server].drain() + self._bind_pools[server].drain():
            _discard(conn)
        return was_up

    def mark_up(self, server: LdapServer) -> None:
        with self._lock:
            self._down_until.pop(server, None)

    def pooled(self) -> list[Any]:
        """The idle connections (for tests: their sockets)."""
        return [
            c for p in (*self._search_pools.values(), *self._bind_pools.values()) for c in p.idle()
        ]

    def close(self) -> None:
        for pool in (*self._search_pools.values(), *self._bind_pools.values()):
            for conn in pool.drain():
                _discard(conn)

    # -- one login

    def exchange(self, user: str, password: str, deadline: float) -> _Outcome:
        """One login: search, then bind or compare (see the module docstring)."""

        def attempt(server: LdapServer, ops: list[DirectoryOp]) -> _Outcome:
            return self._login(server, user, password, deadline, ops)

        return self._failover(user, deadline, attempt)

    def lookup(self, user: str, deadline: float) -> _Outcome:
        """The entry and home of `user`, without a password: the search alone."""

        def attempt(server: LdapServer, ops: list[DirectoryOp]) -> _Outcome:
            entry = self._one_entry(server, user, deadline, ops)
            if isinstance(entry, _Outcome):
                return entry
            where = normalize_dn(entry.dn)
            home = self._home(entry, where)
            return _Outcome(
                AuthStatus.SUCCESS, self._canonical(entry, user), f"entry {where}", home
            )

        return self._failover(user, deadline, attempt)

    def _failover(
        self,
        user: str,
        deadline: float,
        attempt: Callable[[LdapServer, list[DirectoryOp]], _Outcome],
    ) -> _Outcome:
        """`attempt` on each server in turn until one answers (or the time is up)."""
        ops: list[DirectoryOp] = []
        problems: list[str] = []
        for server in self.order():
            if time.monotonic() >= deadline:
                break
            try:
                outcome = attempt(server, ops)
            except _ServerDown as exc:
                # One WARNING when a server goes down, not one per login while it is.
                level = logging.WARNING if self.mark_down(server) else logging.DEBUG
                log.log(level, "ldap server %s failed: %s", server, exc.reason)
                problems.append(f"{server}: {exc.reason}")
                continue
            except _Undecided as exc:
                return _Outcome(AuthStatus.UNAVAILABLE, user, f"{server}: {exc.reason}", ops=ops)
            self.mark_up(server)
            outcome.ops = ops
            return outcome
        if not problems:
            problems.append(f"timed out after {self.s.timeout_s:g}s")
        return _Outcome(AuthStatus.UNAVAILABLE, user, "; ".join(problems), ops=ops)

    def _one_entry(
        self, server: LdapServer, user: str, deadline: float, ops: list[DirectoryOp]
    ) -> _Entry | _Outcome:
        """The one entry `user` names, or the FAILURE that none or several do."""
        entries = self._search(server, user, deadline, ops)
        if not entries:
            return _Outcome(AuthStatus.FAILURE, user, "no usable entry matches the name")
        if len(entries) == 1:
            return entries[0]
        dns = ", ".join(sorted(e.dn for e in entries))
        log.warning("ldap: user=%r is ambiguous: %d entries match: %s", user, len(entries), dns)
        return _Outcome(
            AuthStatus.FAILURE, user, f"ambiguous: {len(entries)} entries match ({dns})"
        )

    def _home(self, entry: _Entry, where: str) -> Home | None:
        """The home `route_attribute` names; two different values decide nothing."""
        if not self.s.route_attribute:
            return None
        routes = [v.strip() for v in entry.values(self.s.route_attribute) if v.strip()]
        if len(set(routes)) > 1:
            raise _Undecided(
                f"{where} has {len(routes)} {self.s.route_attribute} values "
                f"({', '.join(routes)}): which home is meant?"
            )
        return Home(routes[0], f"ldap {where}", first=self.s.route_first) if routes else None

    def _login(
        self,
        server: LdapServer,
        user: str,
        password: str,
        deadline: float,
        ops: list[DirectoryOp],
    ) -> _Outcome:
        entry = self._one_entry(server, user, deadline, ops)
        if isinstance(entry, _Outcome):
            # No entry, or two: cost what a found entry costs, then fail the same way.
            self._dummy_check(server, password, deadline, ops)
            return entry
        canonical = self._canonical(entry, user)
        where = normalize_dn(entry.dn)
        if self.s.mode == "bind":
            accepted = self._bind_user(server, entry.dn, password, deadline, ops)
        else:
            accepted = self._compare(entry, password)
        if not accepted:
            return _Outcome(AuthStatus.FAILURE, canonical, f"wrong password for {where}")
        home = self._home(entry, where)
        return _Outcome(AuthStatus.SUCCESS, canonical, f"password ok ({where})", home)

    def _canonical(self, entry: _Entry, login: str) -> str:
        """The entry's own name for the user: the login attribute value the login matches."""
        values = entry.values(self.s.login_attribute)
        if not values:
            return login
        folded = _fold(login)
        for value in values:
            if _fold(value) == folded:
                return value
        return values[0]

    def _compare(self, entry: _Entry, password: str) -> bool:
        stored = entry.values(self.s.password_attribute)
        if len(stored) != 1:
            check_password(dummy_hash(self._dummy_like), password)
            if stored:
                log.warning(
                    "ldap: %s has %d %s values; refusing the login",
                    entry.dn,
                    len(stored),
                    self.s.password_attribute,
                )
            return False
        try:
            hashed = parse_password_hash(stored[0], default_scheme=self.s.default_scheme)
        except SchemeError as exc:
            log.warning("ldap: %s: %s: %s", entry.dn, self.s.password_attribute, exc)
            check_password(dummy_hash(self._dummy_like), password)
            return False
        self._dummy_like = hashed
        return check_password(hashed, password)

    def _dummy_check(
        self, server: LdapServer, password: str, deadline: float, ops: list[DirectoryOp]
    ) -> None:
        """What a found entry would have cost: a bind that fails, or a hash that does not match."""
        if self.s.mode == "bind":
            self._bind_user(server, self.dummy_dn, password, deadline, ops)
        else:
            check_password(dummy_hash(self._dummy_like), password)

    # -- requests

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Expired(f"timed out after {self.s.timeout_s:g}s")
        return left

    @contextmanager
    def _op(
        self, operation: str, ops: list[DirectoryOp], server: LdapServer
    ) -> Iterator[list[str]]:
        """Time one request; a communication failure becomes _ServerDown (timeout or error).

        The body appends its own result ("ok", "failure", "error") to the yielded list.
        """
        outcome: list[str] = []
        started = time.perf_counter()
        try:
            yield outcome
        except (LDAPCommunicationError, LDAPStartTLSError, OSError) as exc:
            result = "timeout" if _is_timeout(exc) else "error"
            ops.append(DirectoryOp(operation, result, time.perf_counter() - started))
            what = "timed out" if result == "timeout" else str(exc) or type(exc).__name__
            raise _ServerDown(f"{operation}: {what}") from None
        except LDAPException as exc:
            # Not the server's fault (a request ldap3 will not encode): no failover.
            ops.append(DirectoryOp(operation, "error", time.perf_counter() - started))
            raise _Undecided(f"{operation}: {exc or type(exc).__name__}") from None
        except (_ServerDown, _Undecided):
            ops.append(DirectoryOp(operation, "error", time.perf_counter() - started))
            raise
        ops.append(
            DirectoryOp(operation, outcome[0] if outcome else "ok", time.perf_counter() - started)
        )

    def _connect(self, server: LdapServer, deadline: float, ops: list[DirectoryOp]) -> Any:
        def timeouts() -> tuple[float, float]:
            left = self._remaining(deadline)
            return min(self.s.connect_timeout_s, left), min(self.s.operation_timeout_s, left)

        srv = ldap3.Server(
            server.host, port=server.port, use_ssl=server.implicit_tls, get_info=ldap3.NONE
        )
        conn = ldap3.Connection(
            srv,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SYNC,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
            check_names=False,
        )
        conn.strategy._open_socket = functools.partial(
            _open_socket, conn, server, self.context, timeouts
        )
        try:
            with self._op("connect", ops, server):
                conn.open(read_server_info=False)
            if server.starttls:
                with self._op("starttls", ops, server) as result:
                    conn.socket.settimeout(
                        min(self.s.operation_timeout_s, self._remaining(deadline))
                    )
                    conn.extended(STARTTLS_OID)
                    code = conn.result.get("result")
                    if code != SUCCESS:
                        result.append("error")
                        raise _ServerDown(f"StartTLS refused: {_describe(conn.result)}")
                    assert self.context is not None
                    conn.socket = self.context.wrap_socket(conn.socket, server_hostname=server.host)
        except BaseException:
            _discard(conn)
            raise
        return conn

    def _settle_timeout(self, conn: Any, deadline: float) -> None:
        conn.socket.settimeout(min(self.s.operation_timeout_s, self._remaining(deadline)))

    def _with_conn(
        self,
        pool: _Pool,
        server: LdapServer,
        deadline: float,
        ops: list[DirectoryOp],
        fresh: Callable[[], Any],
        work: Callable[[Any], Any],
    ) -> Any:
        """`work(conn)` on a pooled connection (or a `fresh()` one); a pooled one that
        turns out dead (the server restarted, an idle timeout) is replaced once."""
        conn = pool.take()
        pooled = conn is not None
        if conn is None:
            conn = fresh()
        try:
            self._settle_timeout(conn, deadline)
            value = work(conn)
        except _ServerDown as exc:
            _discard(conn)
            if not pooled or isinstance(exc, _Expired) or "timed out" in exc.reason:
                raise
            conn = fresh()
            try:
                self._settle_timeout(conn, deadline)
                value = work(conn)
            except BaseException:
                _discard(conn)
                raise
        except BaseException:
            _discard(conn)
            raise
        pool.give(conn)
        return value

    def _fresh_search(self, server: LdapServer, deadline: float, ops: list[DirectoryOp]) -> Any:
        conn = self._connect(server, deadline, ops)
        if self.s.bind_dn is None:
            return conn
        try:
            self._settle_timeout(conn, deadline)
            with self._op("bind", ops, server) as result:
                conn.user, conn.password = self.s.bind_dn, self.s.bind_password
                conn.authentication = "SIMPLE"
                conn.bind()
                code = conn.result.get("result")
                if code in SERVER_TROUBLE:
                    result.append("error")
                    raise _ServerDown(f"service bind: {_describe(conn.result)}")
                if code != SUCCESS:
                    result.append("failure")
            if code != SUCCESS:
                raise _Undecided(
                    f"the service account {self.s.bind_dn} cannot bind: {_describe(conn.result)}"
                )
        except BaseException:
            _discard(conn)
            raise
        return conn

    def _search(
        self, server: LdapServer, user: str, deadline: float, ops: list[DirectoryOp]
    ) -> list[_Entry]:
        query = expand_filter(self.s.user_filter, user)
        if self.s.usable_filter:
            query = f"(&{query}{self.s.usable_filter})"
        scope = {"base": "BASE", "one": "LEVEL", "subtree": "SUBTREE"}[self.s.scope]

        def work(conn: Any) -> list[_Entry]:
            with self._op("search", ops, server) as result:
                conn.search(
                    self.s.base,
                    query,
                    search_scope=scope,
                    attributes=self.attributes,
                    size_limit=2,  # two are enough to know it is ambiguous
                    time_limit=max(1, int(self.s.operation_timeout_s)),
                )
                code = conn.result.get("result")
                if code in SERVER_TROUBLE:
                    result.append("error")
                    raise _ServerDown(f"search: {_describe(conn.result)}")
                if code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
                    result.append("error")
                    raise _Undecided(f"search under {self.s.base}: {_describe(conn.result)}")
            found: dict[str, _Entry] = {}
            for item in conn.response or ():
                if item.get("type") != "searchResEntry":
                    continue
                entry = _Entry(item["dn"], dict(item.get("raw_attributes") or {}))
                found.setdefault(normalize_dn(entry.dn), entry)
            return list(found.values())

        result: list[_Entry] = self._with_conn(
            self._search_pools[server],
            server,
            deadline,
            ops,
            lambda: self._fresh_search(server, deadline, ops),
            work,
        )
        return result

    def _bind_user(
        self, server: LdapServer, dn: str, password: str, deadline: float, ops: list[DirectoryOp]
    ) -> bool:
        def work(conn: Any) -> bool:
            with self._op("bind", ops, server) as result:
                conn.user, conn.password = dn, password
                conn.authentication = "SIMPLE"
                conn.bind()
                conn.password = None
                code = conn.result.get("result")
                if code in SERVER_TROUBLE:
                    result.append("error")
                    raise _ServerDown(f"bind: {_describe(conn.result)}")
                if code in (INVALID_CREDENTIALS, INAPPROPRIATE_AUTHENTICATION):
                    result.append("failure")
                    return False
                if code != SUCCESS:
                    result.append("error")
                    raise _Undecided(f"bind as {dn}: {_describe(conn.result)}")
            return True

        accepted: bool = self._with_conn(
            self._bind_pools[server],
            server,
            deadline,
            ops,
            lambda: self._connect(server, deadline, ops),
            work,
        )
        return accepted


def _describe(result: dict[str, Any] | None) -> str:
    """An LDAP result for the logs: its code, name and diagnostic message."""
    if not result:
        return "no result"
    text = f"{result.get('result')} {result.get('description', '')}".strip()
    message = str(result.get("message") or "").strip()
    return f"{text}: {message}" if message else text


# -- the source (trio side) -----------------------------------------------------------


class _RouteCache:
    """Lookups by folded user name: SUCCESS for `ttl_s`, FAILURE for `negative_ttl_s`.

    Never UNAVAILABLE (a directory that is down now may answer the next
    time). At most `max_entries`, least recently used first out. A reload
    builds a new source, so a new, empty cache.
    """

    def __init__(self, ttl_s: float, negative_ttl_s: float, max_entries: int) -> None:
        self.ttl_s, self.negative_ttl_s, self.max_entries = ttl_s, negative_ttl_s, max_entries
        self._entries: OrderedDict[str, tuple[float, DirectoryRoute]] = OrderedDict()

    def get(self, key: str, now: float) -> DirectoryRoute | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, route = found
        if expires <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return route

    def put(self, key: str, route: DirectoryRoute, now: float) -> None:
        ttl_s = {AuthStatus.SUCCESS: self.ttl_s, AuthStatus.FAILURE: self.negative_ttl_s}.get(
            route.status, 0.0
        )
        if ttl_s <= 0:
            return
        self._entries[key] = (now + ttl_s, route)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class LdapSource:
    """An AuthSource backed by an LDAP directory (see the module docstring).

    `lookup` answers "which entry and which home" without a password, for
    ``refd explain`` and ``refd probe``, through a route cache
    (``route_cache_ttl_s``, ``route_cache_negative_ttl_s``,
    ``route_cache_max_entries``). Logins never read the cache: a password
    check always asks the directory.
    """

    def __init__(
        self,
        settings: LdapSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "ldap",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not settings.servers:
            raise ValueError("at least one server")
        if settings.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if min(settings.connect_timeout_s, settings.operation_timeout_s, settings.timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if settings.mode not in MODES or settings.scope not in SCOPES:
            raise ValueError(f"mode is one of {MODES}, scope one of {SCOPES}")
        for template in (settings.user_filter, settings.usable_filter):
            problem = None if template is None else check_filter_template(template)
            if problem:
                raise ValueError(f"filter {template!r}: {problem}")
        needs_tls = any(s.implicit_tls or s.starttls for s in settings.servers)
        if needs_tls and ssl_context is None:
            ssl_context = client_tls_context()
        self.name = name
        self.settings = settings
        self._directory = _Directory(settings, ssl_context)
        self._limiter = trio.CapacityLimiter(settings.pool_size)
        self._clock = clock or trio.current_time
        self.routes = _RouteCache(
            settings.route_cache_ttl_s,
            settings.route_cache_negative_ttl_s,
            settings.route_cache_max_entries,
        )
        # A source replaced by a reload closes its idle connections when it goes.
        self._finalizer = weakref.finalize(self, self._directory.close)

    def close(self) -> None:
        """Close the idle pooled connections (a reload's old source, a test's end)."""
        self._finalizer()

    async def _run(self, work: Callable[..., _Outcome], *args: Any) -> _Outcome | str:
        """`work(*args, deadline)` in a worker thread within ``timeout_s``; a reason if not."""
        timeout_s = self.settings.timeout_s
        deadline = time.monotonic() + timeout_s
        call = functools.partial(work, *args, deadline)
        with trio.move_on_after(timeout_s):
            return await trio.to_thread.run_sync(
                call, limiter=self._limiter, abandon_on_cancel=True
            )
        busy = self._limiter.borrowed_tokens
        return (
            f"timed out after {timeout_s:g}s ({busy} of {self._limiter.total_tokens} "
            "directory slots busy)"
        )

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        user, password = request.user, request.password
        if not password:
            # RFC 4513 §5.1.2: a DN and no password is an unauthenticated bind.
            return AuthResult(AuthStatus.FAILURE, user, "empty password")
        if "\0" in user or "\0" in password:
            return AuthResult(AuthStatus.FAILURE, user, "user name or password contains NUL")
        try:
            outcome = await self._run(self._directory.exchange, user, password)
        except Exception as exc:  # a bug: still an answer, never an exception
            log.exception("auth source %s: internal error checking user=%r", self.name, user)
            return AuthResult(AuthStatus.UNAVAILABLE, user, f"internal error: {type(exc).__name__}")
        if isinstance(outcome, str):
            return AuthResult(AuthStatus.UNAVAILABLE, user, outcome)
        reason = outcome.reason
        secrets = [password, self.settings.bind_password or ""]
        if any(s and s in reason for s in secrets):
            reason = "reason withheld: it contained a password"
        return AuthResult(
            outcome.status,
            outcome.user,
            reason,
            home=outcome.home if outcome.status is AuthStatus.SUCCESS else None,
            ops=tuple(outcome.ops),
        )

    async def lookup(self, user: str) -> DirectoryRoute:
        """The entry and home of `user` (no password), from the route cache if it is there."""
        if "\0" in user:
            return DirectoryRoute(AuthStatus.FAILURE, user, None, "user name contains NUL")
        key = _fold(user)
        cached = self.routes.get(key, self._clock())
        if cached is not None:
            return dataclasses.replace(cached, cached=True, ops=())
        try:
            outcome = await self._run(self._directory.lookup, user)
        except Exception as exc:  # a bug: still an answer
            log.exception("auth source %s: internal error looking up user=%r", self.name, user)
            reason = f"internal error: {type(exc).__name__}"
            return DirectoryRoute(AuthStatus.UNAVAILABLE, user, None, reason)
        if isinstance(outcome, str):
            return DirectoryRoute(AuthStatus.UNAVAILABLE, user, None, outcome)
        route = DirectoryRoute(
            outcome.status, outcome.user, outcome.home, outcome.reason, ops=tuple(outcome.ops)
        )
        self.routes.put(key, dataclasses.replace(route, ops=()), self._clock())
        return route


# -- configuration: ``auth.source: ldap`` (see refd.auth.registry) --

_LDAP_KEYS = {
    "servers",
    "starttls",
    "ca_file",
    "bind_dn",
    "bind_password_file",
    "base",
    "scope",
    "user_filter",
    "usable_filter",
    "mode",
    "password_attribute",
    "default_scheme",
    "login_attribute",
    "route_attribute",
    "route_first",
    "pool_size",
    "connect_timeout_s",
    "operation_timeout_s",
    "timeout_s",
    "retry_after_s",
    "route_cache_ttl_s",
    "route_cache_negative_ttl_s",
    "route_cache_max_entries",
}


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """``auth.ldap``: the directory, how to find a user in it and how to check the password."""

    servers: tuple[LdapServer, ...]
    base: str
    user_filter: str
    scope: str = "subtree"
    usable_filter: str | None = None
    mode: str = "bind"
    ca_file: Path | None = None
    bind_dn: str | None = None
    bind_password_file: Path | None = None
    password_attribute: str = "userPassword"  # noqa: S105 - a name
    default_scheme: str = "CRYPT"
    login_attribute: str = "uid"
    route_attribute: str | None = None
    route_first: bool = True
    pool_size: int = 8
    connect_timeout_s: float = 3.0
    operation_timeout_s: float = 5.0
    timeout_s: float = 10.0
    retry_after_s: float = 30.0
    route_cache_ttl_s: float = 60.0
    route_cache_negative_ttl_s: float = 10.0
    route_cache_max_entries: int = 10_000
    line: int = 0


def _parse(ctx: ParseContext) -> LdapConfig:
    r, path = ctx.reader, ctx.file
    m = r.as_map(r.require(ctx.auth, "ldap", "auth"), "auth.ldap")
    r.reject_unknown(m, _LDAP_KEYS, "auth.ldap")
    starttls = opt(r, m, "starttls", r.as_bool, False, "auth.ldap.starttls")
    urls_node = r.require(m, "servers", "auth.ldap")
    servers = []
    for url in r.as_str_list(urls_node, "auth.ldap.servers"):
        try:
            servers.append(LdapServer.from_url(url, starttls=starttls))
        except ValueError as exc:
            raise r.error(urls_node, f"auth.ldap.servers: {exc}") from None
    if len(set(servers)) != len(servers):
        raise r.error(urls_node, "auth.ldap.servers: a server is named twice")

    def text(key: str, default: str | None = None) -> str | None:
        node = get(m, key)
        return default if node is None else r.as_str(node, f"auth.ldap.{key}")

    def path_of(key: str) -> Path | None:
        value = text(key)
        return None if value is None else resolve_path(path, value)

    def filter_of(key: str) -> str | None:
        value = text(key)
        if value is not None and (problem := check_filter_template(value)):
            raise r.error(_node(m, key), f"auth.ldap.{key}: {problem}")
        return value

    def seconds(key: str, default: float) -> float:
        return opt(r, m, key, r.as_positive_seconds, default, f"auth.ldap.{key}")

    base = text("base")
    if base is None:
        raise r.error(m, "auth.ldap: missing key 'base' (the DN searches start from)")
    user_filter = filter_of("user_filter")
    if user_filter is None:
        raise r.error(
            m, "auth.ldap: missing key 'user_filter', e.g. (&(objectClass=inetOrgPerson)(uid=%u))"
        )
    bind_dn, secret = text("bind_dn"), path_of("bind_password_file")
    if (bind_dn is None) != (secret is None):
        raise r.error(m, "auth.ldap: bind_dn and bind_password_file go together")
    mode = choice(r, m, "mode", MODES, "bind")
    default_scheme = text("default_scheme", "CRYPT") or "CRYPT"
    timeout_s = seconds("timeout_s", 10.0)
    connect_s, operation_s = seconds("connect_timeout_s", 3.0), seconds("operation_timeout_s", 5.0)
    if connect_s > timeout_s or operation_s > timeout_s:
        raise r.error(
            m, "auth.ldap: connect_timeout_s and operation_timeout_s must not exceed timeout_s"
        )
    ca_file = path_of("ca_file")
    if ca_file is not None and not any(s.implicit_tls or s.starttls for s in servers):
        raise r.error(
            _node(m, "ca_file"), "auth.ldap.ca_file: no server uses TLS (ldaps:// or starttls)"
        )
    return LdapConfig(
        servers=tuple(servers),
        base=base,
        user_filter=user_filter,
        scope=choice(r, m, "scope", SCOPES, "subtree"),
        usable_filter=filter_of("usable_filter"),
        mode=mode,
        ca_file=ca_file,
        bind_dn=bind_dn,
        bind_password_file=secret,
        password_attribute=text("password_attribute", "userPassword") or "userPassword",
        default_scheme=default_scheme,
        login_attribute=text("login_attribute", "uid") or "uid",
        route_attribute=text("route_attribute"),
        route_first=opt(r, m, "route_first", r.as_bool, True, "auth.ldap.route_first"),
        pool_size=opt(
            r, m, "pool_size", lambda n, w: r.as_int(n, w, 1, 1024), 8, "auth.ldap.pool_size"
        ),
        connect_timeout_s=connect_s,
        operation_timeout_s=operation_s,
        timeout_s=timeout_s,
        retry_after_s=seconds("retry_after_s", 30.0),
        route_cache_ttl_s=opt(
            r, m, "route_cache_ttl_s", r.as_float_seconds, 60.0, "auth.ldap.route_cache_ttl_s"
        ),
        route_cache_negative_ttl_s=opt(
            r,
            m,
            "route_cache_negative_ttl_s",
            r.as_float_seconds,
            10.0,
            "auth.ldap.route_cache_negative_ttl_s",
        ),
        route_cache_max_entries=opt(
            r,
            m,
            "route_cache_max_entries",
            lambda n, w: r.as_int(n, w, 1, 10_000_000),
            10_000,
            "auth.ldap.route_cache_max_entries",
        ),
        line=m.line,
    )


def _node(m: Map, key: str) -> Map | Any:
    node = get(m, key)
    return m if node is None else node


def _build(lc: LdapConfig, ctx: BuildContext) -> LdapSource:
    context = ctx.client_tls(lc.ca_file, lc.line)
    password = None
    if lc.bind_password_file is not None:
        try:
            raw = lc.bind_password_file.read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise TreeError(
                str(ctx.file), lc.line, f"cannot read {lc.bind_password_file}: {reason}"
            ) from None
        password = raw.decode("utf-8").rstrip("\r\n")
    settings = LdapSettings(
        servers=lc.servers,
        base=lc.base,
        user_filter=lc.user_filter,
        scope=lc.scope,
        usable_filter=lc.usable_filter,
        mode=lc.mode,
        bind_dn=lc.bind_dn,
        bind_password=password,
        password_attribute=lc.password_attribute,
        default_scheme=lc.default_scheme,
        login_attribute=lc.login_attribute,
        route_attribute=lc.route_attribute,
        route_first=lc.route_first,
        pool_size=lc.pool_size,
        connect_timeout_s=lc.connect_timeout_s,
        operation_timeout_s=lc.operation_timeout_s,
        timeout_s=lc.timeout_s,
        retry_after_s=lc.retry_after_s,
        route_cache_ttl_s=lc.route_cache_ttl_s,
        route_cache_negative_ttl_s=lc.route_cache_negative_ttl_s,
        route_cache_max_entries=lc.route_cache_max_entries,
    )
    return LdapSource(settings, ssl_context=context)


def _watched(lc: LdapConfig) -> tuple[Path, ...]:
    return tuple(p for p in (lc.ca_file, lc.bind_password_file) if p is not None)


SPEC = AuthSourceSpec(
    name="ldap",
    keys=frozenset({"ldap"}),
    parse=_parse,
    build=_build,
    watched=_watched,
)
