"""The `imap` authentication source: one LOGIN against a backend IMAP server.

`ImapBackendSource.authenticate` opens a connection to a backend (a fixed
auth server, or the user's home server from an injected `resolve`), reads
the greeting, upgrades to TLS if configured (STARTTLS, RFC 9051 §6.2.1, or
implicit TLS, RFC 8314 §3.3), sends one `LOGIN user password`, reads the
tagged answer, says `LOGOUT` and closes. The tagged answer decides:

- `OK` → SUCCESS (the user name as given);
- `NO` → FAILURE ("backend rejected credentials"), except `NO` with an RFC
  5530 code meaning "could not decide" (UNAVAILABLE, SERVERBUG, LIMIT,
  PRIVACYREQUIRED) → UNAVAILABLE;
- `BAD`, `* BYE`, a greeting other than `* OK`, a line that does not parse,
  a line over 64 KiB, an answer over `ANSWER_MAX_BYTES`, a closed or refused
  connection, a TLS error or a timeout → UNAVAILABLE with a reason for the
  logs.

The dialogue runs on the IMAP client shared with `refd probe`: the sans-IO
core `refd.protocol.client` (parsing, literals, tags, STARTTLS injection)
and its trio adapter `refd.imap_client` (connect, TLS, deadlines). This
module holds only what is the auth source's own: which steps, which tags
(r1 ... r6), and what the answers mean for a password check.

Why LOGIN and not AUTHENTICATE PLAIN: every IMAP server implements LOGIN
(RFC 3501 §6.2.3, RFC 9051 §6.2.3), it needs no SASL negotiation and no
base64, and its quoting rules are small and testable
(`refd.protocol.client.login_chunks`: quoted strings when 7-bit, literals
otherwise, non-synchronizing when LITERAL+/LITERAL- allow). Both carry the
password in the clear inside the connection, so neither is safer. A
backend that advertises LOGINDISABLED is not sent the password at all:
that is a configuration error (plaintext where it wants TLS), reported as
UNAVAILABLE, never as a wrong password. NUL, CR and LF cannot be sent in
any form IMAP servers accept for LOGIN: such a request is a FAILURE
without contacting anyone.

Telling the backend who the client is (`send_id`, off by default): the
backend sees every check come from refd's address, so its own failed-login
penalties (Dovecot's auth_penalty, keyed by the remote IP) would punish
refd for everybody. With `send_id`, the source sends RFC 2971 `ID` before
LOGIN with Dovecot's fields, e.g. `ID ("x-originating-ip" "203.0.113.7"
"x-originating-port" "51234" "x-connected-ip" "192.0.2.1" "x-connected-port"
"143" "x-session-id" "3d3a-2")`, and the backend then counts, logs (rip=,
lip=, session=) and penalises the real client. RFC 2971 §2 lets a client
send ID when the server advertises it, and only then is it sent; values are
IMAP strings, unknown ones are left out ("Implementations MAY send less
information than they have available", §2), never invented ("MUST NOT send
false information"). Dovecot only believes these fields from
`login_trusted_networks`, which must hold refd's address; from elsewhere it
ignores them. An `ID` answered with anything but OK does not stop the LOGIN.

Every wait has a deadline: the wait for a free slot and the TCP connect
share `connect_timeout_s`; the greeting, the TLS handshake and each
exchange (a command and its whole answer, however many lines) get
`response_timeout_s` each. `authenticate` never raises (except trio's own
cancellation) and never hangs. At most `max_concurrent_per_backend` checks
run against one (host, port) at once (a `trio.CapacityLimiter` per
backend). A reason names the backend, the step and why:
"mail1:143: LOGIN: timed out after 10 s".

The optional positive cache (`cache_ttl_s` > 0) remembers successes only,
keyed by HMAC-SHA256 under a random per-instance secret over backend, user
and password: neither the password nor a plain hash of it is kept, and the
keys are useless outside this process. With `shared_cache` (the door's
throttle store: every worker, and with Redis every door) the entries live
there instead, keyed by an HMAC under the store's shared secret. A password
changed on the backend keeps working here until its entry expires; keep the
TTL short.

The password never appears in a log line, an exception or a `reason`:
reasons are built from fixed text, the backend's own answer and exception
descriptions, and are redacted once more in `_result` as a last guard.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from refd.auth.base import AuthRequest, AuthResult, AuthStatus, redacted
from refd.auth.registry import AuthSourceSpec, BuildContext, ParseContext
from refd.config.loader import TLS_MODES, choice, host_port, opt, resolve_path
from refd.config.tree import Node, Reader, Seq, get
from refd.imap_client import (
    ClientError,
    ImapClient,
    OpenStream,
    TlsMode,
    client_tls_context,
    connect,
    timed_out,
)
from refd.protocol.client import (
    UNSENDABLE,
    Response,
    ResponseError,
    check_greeting,
    id_chunks,
    show,
)
from refd.routing.url import url_host

__all__ = [
    "ANSWER_MAX_BYTES",
    "ID_FIELDS",
    "SPEC",
    "Backend",
    "ImapAuthConfig",
    "ImapBackendSource",
    "Resolve",
    "SharedCache",
    "TlsMode",
    "id_params",
]

log = logging.getLogger(__name__)

Backend = tuple[str, int]
Resolve = Callable[[str], Backend | None]

# The answer to LOGIN or ID is a few lines; a backend that keeps talking is
# cut off here (or by the deadline), untagged lines and all.
ANSWER_MAX_BYTES = 1024 * 1024

# RFC 5530 codes on a tagged NO that mean "could not decide", not "wrong
# password": the session answers them with [UNAVAILABLE], not a failure.
UNAVAILABLE_CODES = frozenset({"UNAVAILABLE", "SERVERBUG", "LIMIT", "PRIVACYREQUIRED"})

#: What `send_id` can tell the backend, in Dovecot's names (its imap-login
#: takes them from login_trusted_networks): the client's address and port,
#: the address and port it connected to, and the door's connection id.
ID_FIELDS = (
    "x-originating-ip",
    "x-originating-port",
    "x-connected-ip",
    "x-connected-port",
    "x-session-id",
)


def id_params(request: AuthRequest, fields: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The (field, value) pairs of `fields` that `request` knows, in `fields` order.

    An address that is not an IP address, a port out of range or a value
    that no IMAP string can carry is left out, never guessed.
    """
    known: dict[str, object] = {
        "x-originating-ip": request.client_address,
        "x-originating-port": request.client_port,
        "x-connected-ip": request.local_address,
        "x-connected-port": request.local_port,
        "x-session-id": request.session_id,
    }
    out = []
    for name in fields:
        value = known[name]
        if value is None:
            continue
        if name.endswith("-ip"):
            try:
                value = ipaddress.ip_address(str(value))
            except ValueError:
                continue
        elif name.endswith("-port") and not (isinstance(value, int) and 0 < value < 65536):
            continue
        text = str(value)
        # RFC 2971 §3.3: a value is at most 1024 octets.
        if UNSENDABLE & set(text) or len(text.encode("utf-8")) > 1024:
            continue
        out.append((name, text))
    return tuple(out)


# -- the positive cache -----------------------------------------------------------


class SharedCache(Protocol):
    """A cache shared beyond this process (``refd.store.Throttle``); it never raises."""

    def cache_key(self, parts: tuple[bytes, ...]) -> str: ...

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None: ...


def _cache_parts(backend: Backend, user: str, password: str) -> tuple[bytes, ...]:
    host, port = backend
    return (host.encode(), str(port).encode(), user.encode("utf-8"), password.encode("utf-8"))


class _PositiveCache:
    """Successful checks, by HMAC-SHA256(secret, host NUL port NUL user NUL password).

    Values are expiry times on trio's clock. Least recently used entries go
    first when the cache is full. Only `key` ever sees the password.
    """

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._secret = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def key(self, backend: Backend, user: str, password: str) -> bytes:
        message = b"\x00".join(_cache_parts(backend, user, password))
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def hit(self, key: bytes, now: float) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= now:
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def store(self, key: bytes, now: float) -> None:
        self._entries[key] = now + self.ttl_s
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# -- the dialogue ---------------------------------------------------------------------


class _Unavailable(Exception):
    """Could not decide; `reason` is for the logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the source -----------------------------------------------------------------------


class ImapBackendSource:
    """An AuthSource that checks passwords with one LOGIN on a backend.

    `backend` is a fixed `(host, port)` (a named auth server) or a function
    `user -> (host, port) | None` (the user's routed home server; None is a
    FAILURE "no route", answered like a wrong password). See the module
    docstring for the dialogue, quoting, limits and the cache.

    TLS: `tls` picks the mode. `ssl_context` defaults to
    `refd.imap_client.client_tls_context()` (system CAs, hostname checked
    against the backend host, which may be an IP address with an IP SAN).
    `verify_certificate=False` builds a context that checks nothing, for labs
    only (logged as a warning); it cannot be combined with `ssl_context`.

    `send_id` names the `ID_FIELDS` to send before LOGIN (see the module
    docstring); empty, nothing is sent.

    `open_tcp_stream` opens the TCP connection; tests pass in-memory streams.
    """

    def __init__(
        self,
        backend: Backend | Resolve,
        *,
        tls: TlsMode = TlsMode.NONE,
        ssl_context: ssl.SSLContext | None = None,
        verify_certificate: bool = True,
        connect_timeout_s: float = 5.0,
        response_timeout_s: float = 10.0,
        max_concurrent_per_backend: int = 16,
        cache_ttl_s: float = 0.0,
        cache_max_entries: int = 10_000,
        send_id: Sequence[str] = (),
        name: str = "imap",
        open_tcp_stream: OpenStream | None = None,
        shared_cache: SharedCache | None = None,
    ) -> None:
        if connect_timeout_s <= 0 or response_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if max_concurrent_per_backend < 1:
            raise ValueError("max_concurrent_per_backend must be at least 1")
        if cache_ttl_s < 0 or cache_max_entries < 1:
            raise ValueError("cache_ttl_s must be >= 0 and cache_max_entries >= 1")
        if tls is TlsMode.NONE and (ssl_context is not None or not verify_certificate):
            raise ValueError("ssl_context and verify_certificate need tls starttls or implicit")
        if ssl_context is not None and not verify_certificate:
            raise ValueError("pass either ssl_context or verify_certificate=False, not both")
        unknown = [f for f in send_id if f not in ID_FIELDS]
        if unknown or len(set(send_id)) != len(send_id):
            raise ValueError(f"send_id: fields from {', '.join(ID_FIELDS)}, each once")
        self.send_id = tuple(send_id)
        self._id_refused: set[Backend] = set()  # backends already warned about
        if callable(backend):
            self._resolve: Resolve = backend
        else:
            host, port = backend
            self._resolve = lambda _user: (host, port)
        self.name = name
        self.tls = tls
        self.ssl_context: ssl.SSLContext | None = None
        if tls is not TlsMode.NONE:
            self.ssl_context = ssl_context or client_tls_context(verify=verify_certificate)
            if not verify_certificate:
                log.warning(
                    "auth source %s: backend TLS certificates are NOT verified "
                    "(verify_certificate=False); for labs only",
                    name,
                )
        self.connect_timeout_s = connect_timeout_s
        self.response_timeout_s = response_timeout_s
        self.max_concurrent_per_backend = max_concurrent_per_backend
        self._limiters: dict[Backend, trio.CapacityLimiter] = {}
        self._cache = _PositiveCache(cache_ttl_s, cache_max_entries) if cache_ttl_s > 0 else None
        #: where the positive cache lives instead, if shared (set by the daemon)
        self.shared_cache = shared_cache
        self._open_tcp_stream: OpenStream = open_tcp_stream or _open_tcp_stream

    def limiter(self, backend: Backend) -> trio.CapacityLimiter:
        """The limiter of concurrent checks against `backend`."""
        limiter = self._limiters.get(backend)
        if limiter is None:
            limiter = trio.CapacityLimiter(self.max_concurrent_per_backend)
            self._limiters[backend] = limiter
        return limiter

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        user, password = request.user, request.password
        started = trio.current_time()
        try:
            result = await self._authenticate(user, password, id_params(request, self.send_id))
        except Exception as exc:  # a bug: still an answer, never an exception
            log.exception("auth source %s: internal error checking user=%s", self.name, user)
            result = AuthResult(
                AuthStatus.UNAVAILABLE, user, f"internal error: {type(exc).__name__}"
            )
        result = redacted(result, password)
        log.debug(
            "auth source %s: user=%s status=%s reason=%s elapsed=%.3fs",
            self.name,
            user,
            result.status.value,
            result.reason,
            trio.current_time() - started,
        )
        return result

    async def _authenticate(
        self, user: str, password: str, ident: tuple[tuple[str, str], ...] = ()
    ) -> AuthResult:
        if UNSENDABLE & set(user) or UNSENDABLE & set(password):
            reason = "user name or password contains NUL, CR or LF"
            return AuthResult(AuthStatus.FAILURE, user, reason)
        try:
            backend = self._resolve(user)
        except Exception:
            log.exception(
                "auth source %s: resolving the backend of user=%s failed", self.name, user
            )
            return AuthResult(AuthStatus.UNAVAILABLE, user, "backend lookup failed")
        if backend is None:
            return AuthResult(AuthStatus.FAILURE, user, "no route")
        key = None
        shared = self.shared_cache if self._cache is not None else None
        parts = _cache_parts(backend, user, password)
        shared_key = "" if shared is None else shared.cache_key(parts)
        cached = AuthResult(AuthStatus.SUCCESS, user, f"cached success ({_where(backend)})")
        if shared is not None:
            if await shared.cache_get(shared_key) is not None:
                return cached
        elif self._cache is not None:
            key = self._cache.key(backend, user, password)
            if self._cache.hit(key, trio.current_time()):
                return cached
        try:
            status, reason = await self._check(backend, user, password, ident)
        except _Unavailable as exc:
            status, reason = AuthStatus.UNAVAILABLE, f"{_where(backend)}: {exc.reason}"
        if status is AuthStatus.SUCCESS and self._cache is not None:
            if shared is not None:
                await shared.cache_put(shared_key, b"1", self._cache.ttl_s)
            elif key is not None:
                self._cache.store(key, trio.current_time())
        return AuthResult(status, user, reason)

    async def _check(
        self, backend: Backend, user: str, password: str, ident: tuple[tuple[str, str], ...]
    ) -> tuple[AuthStatus, str]:
        host, port = backend
        limiter = self.limiter(backend)
        # The wait for a slot and the connect share one deadline.
        deadline = trio.current_time() + self.connect_timeout_s
        with trio.move_on_at(deadline) as waiting:
            await limiter.acquire()
        if waiting.cancelled_caught:
            in_flight = limiter.statistics().borrowed_tokens
            raise _Unavailable(
                f"no free slot within {self.connect_timeout_s:g}s ({in_flight} checks in flight)"
            )
        try:
            with self._stage("connect", timeout=False):
                stream = await connect(
                    host,
                    port,
                    timeout_s=self.connect_timeout_s,
                    deadline=deadline,
                    open_tcp_stream=self._open_tcp_stream,
                )
            client = ImapClient(
                stream, timeout_s=self.response_timeout_s, max_answer_bytes=ANSWER_MAX_BYTES
            )
            try:
                return await self._dialogue(client, backend, user, password, ident)
            finally:
                await client.aclose()
        finally:
            limiter.release()

    @contextmanager
    def _stage(self, what: str, *, timeout: bool = True) -> Iterator[None]:
        """`what` fails as _Unavailable("what: why"), and takes `response_timeout_s` at most."""
        limit_s = self.response_timeout_s if timeout else math.inf
        with trio.move_on_after(limit_s) as scope:
            try:
                yield
            except (ClientError, ResponseError) as exc:
                raise _Unavailable(f"{what}: {exc}") from None
        if scope.cancelled_caught:
            raise _Unavailable(f"{what}: {timed_out(limit_s)}")

    async def _dialogue(
        self,
        client: ImapClient,
        backend: Backend,
        user: str,
        password: str,
        ident: tuple[tuple[str, str], ...],
    ) -> tuple[AuthStatus, str]:
        host = backend[0]
        context = self.ssl_context
        if self.tls is TlsMode.IMPLICIT:
            assert context is not None
            with self._stage("TLS handshake"):
                await client.tls_handshake(context, host)
        with self._stage("greeting"):
            greeting = await client.greeting()
            check_greeting(greeting)
        if greeting.condition == "BYE":
            raise _Unavailable(f"backend said BYE: {show(greeting.text)}")
        if greeting.condition == "PREAUTH":
            raise _Unavailable("backend greeted with PREAUTH: there is no password to check")
        if self.tls is TlsMode.STARTTLS:
            assert context is not None
            with self._stage("CAPABILITY"):
                await client.known_capabilities("r1")
            with self._stage("STARTTLS"):
                answer = await client.request_starttls("r2")
            with self._stage("STARTTLS"):
                await client.start_tls(answer, context, host)
        with self._stage("CAPABILITY"):
            caps = await client.known_capabilities("r3")
        if "LOGINDISABLED" in caps:
            raise _Unavailable("backend advertises LOGINDISABLED: it wants TLS before LOGIN")
        if ident:
            await self._send_id(client, backend, ident, caps)
        with self._stage("LOGIN"):
            login = await client.login(user, password, "r4")
        status, reason = _decide(login.tagged)
        await client.logout("r5")
        if status is AuthStatus.UNAVAILABLE:
            raise _Unavailable(reason)
        return status, reason

    async def _send_id(
        self,
        client: ImapClient,
        backend: Backend,
        ident: tuple[tuple[str, str], ...],
        caps: frozenset[str],
    ) -> None:
        """RFC 2971 ID with the client's identity, if the backend advertises ID."""
        answer = None
        if "ID" in caps:
            with self._stage("ID"):
                answer = (await client.command("r6", id_chunks("r6", ident, caps))).tagged
            if answer.condition == "OK":
                return
        # Once per backend: the checks go on, penalised as refd's own.
        if backend not in self._id_refused:
            self._id_refused.add(backend)
            log.warning(
                "auth source %s: backend %s %s; it cannot tell clients apart (send_id)",
                self.name,
                _where(backend),
                "does not advertise ID"
                if answer is None
                else f"answered ID with {answer.condition}: {show(answer.text)}",
            )


def _decide(answer: Response) -> tuple[AuthStatus, str]:
    """What the tagged answer to LOGIN means."""
    if answer.condition == "OK":
        return AuthStatus.SUCCESS, "backend accepted credentials"
    if answer.condition == "NO" and answer.code not in UNAVAILABLE_CODES:
        log.debug("backend LOGIN answer: NO [%s]", answer.code)
        return AuthStatus.FAILURE, "backend rejected credentials"
    code = f" [{answer.code}]" if answer.code else ""
    return (
        AuthStatus.UNAVAILABLE,
        f"backend answered {answer.condition}{code} to LOGIN: {show(answer.text)}",
    )


def _where(backend: Backend) -> str:
    host, port = backend
    return f"{url_host(host)}:{port}"


async def _open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


# -- configuration: ``auth.source: imap`` (see refd.auth.registry) --

_IMAP_KEYS = {
    "server",
    "tls",
    "ca_file",
    "verify_certificate",
    "connect_timeout_s",
    "response_timeout_s",
    "max_concurrent_per_backend",
    "cache_ttl_s",
    "cache_max_entries",
    "send_id",
    "cache_shared",
}


@dataclass(frozen=True, slots=True)
class ImapAuthConfig:
    """``auth.imap``: check passwords with one LOGIN on a backend."""

    server: tuple[str, int] | None = None  # None: the user's home server
    tls: str = "none"
    ca_file: Path | None = None
    verify_certificate: bool = True
    connect_timeout_s: float = 5.0
    response_timeout_s: float = 10.0
    max_concurrent_per_backend: int = 16
    cache_ttl_s: float = 0.0
    cache_max_entries: int = 10000
    #: RFC 2971 ID fields sent before LOGIN (``imap_backend.ID_FIELDS``)
    send_id: tuple[str, ...] = ()
    #: keep the cache in the throttle's store (shared by workers and doors)
    cache_shared: bool = False
    line: int = 0


def _parse(ctx: ParseContext) -> ImapAuthConfig:
    r, path = ctx.reader, ctx.file
    m = r.as_map(r.require(ctx.auth, "imap", "auth"), "auth.imap")
    r.reject_unknown(m, _IMAP_KEYS, "auth.imap")
    server = None
    if (srv := get(m, "server")) is not None:
        server = host_port(r, srv, "auth.imap.server", default_port=143)
    ca_file = None
    if (ca := get(m, "ca_file")) is not None:
        ca_file = resolve_path(path, r.as_str(ca, "auth.imap.ca_file"))
    verify = opt(r, m, "verify_certificate", r.as_bool, True, "verify_certificate")
    if ca_file is not None and not verify:
        raise r.error(m, "auth.imap: ca_file and verify_certificate: false exclude each other")

    def seconds(key: str, default: float) -> float:
        return opt(r, m, key, r.as_positive_seconds, default, f"auth.imap.{key}")

    return ImapAuthConfig(
        server=server,
        tls=choice(r, m, "tls", TLS_MODES, "none"),
        ca_file=ca_file,
        verify_certificate=verify,
        connect_timeout_s=seconds("connect_timeout_s", 5.0),
        response_timeout_s=seconds("response_timeout_s", 10.0),
        max_concurrent_per_backend=opt(
            r,
            m,
            "max_concurrent_per_backend",
            lambda n, w: r.as_int(n, w, 1, 10000),
            16,
            "auth.imap.max_concurrent_per_backend",
        ),
        cache_ttl_s=opt(r, m, "cache_ttl_s", r.as_float_seconds, 0.0, "auth.imap.cache_ttl_s"),
        cache_max_entries=opt(
            r,
            m,
            "cache_max_entries",
            lambda n, w: r.as_int(n, w, 1, 10_000_000),
            10000,
            "auth.imap.cache_max_entries",
        ),
        send_id=_send_id(r, get(m, "send_id")),
        cache_shared=opt(r, m, "cache_shared", r.as_bool, False, "auth.imap.cache_shared"),
        line=m.line,
    )


def _send_id(r: Reader, node: Node | None) -> tuple[str, ...]:
    """``auth.imap.send_id``: false (default), true (every field) or a list of fields."""
    if node is None:
        return ()
    if not isinstance(node, Seq):
        return ID_FIELDS if r.as_bool(node, "auth.imap.send_id") else ()
    fields = tuple(f.lower() for f in r.as_str_list(node, "auth.imap.send_id"))
    for field_name in fields:
        if field_name not in ID_FIELDS:
            raise r.error(
                node,
                f"auth.imap.send_id: unknown field {field_name!r} (known: {', '.join(ID_FIELDS)})",
            )
    if len(set(fields)) != len(fields):
        raise r.error(node, "auth.imap.send_id: a field is named twice (RFC 2971 §3.3)")
    return fields


def _build(ia: ImapAuthConfig, ctx: BuildContext) -> ImapBackendSource:
    """The imap source; with no fixed server it asks *this* table for the home."""
    context = ctx.client_tls(ia.ca_file, ia.line)

    def home(user: str) -> tuple[str, int] | None:
        route = ctx.table.route_user(user)
        return None if route is None else (route.server.host, route.server.port)

    return ImapBackendSource(
        ia.server if ia.server is not None else home,
        tls=TlsMode(ia.tls),
        ssl_context=context,
        verify_certificate=ia.verify_certificate,
        connect_timeout_s=ia.connect_timeout_s,
        response_timeout_s=ia.response_timeout_s,
        max_concurrent_per_backend=ia.max_concurrent_per_backend,
        cache_ttl_s=ia.cache_ttl_s,
        cache_max_entries=ia.cache_max_entries,
        send_id=ia.send_id,
    )


SPEC = AuthSourceSpec(
    name="imap",
    keys=frozenset({"imap"}),
    parse=_parse,
    build=_build,
    watched=lambda ia: () if ia.ca_file is None else (ia.ca_file,),
)
