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
  a line over `MAX_LINE_BYTES`, a closed or refused connection, a TLS error
  or a timeout → UNAVAILABLE with a reason for the logs.

Why LOGIN and not AUTHENTICATE PLAIN: every IMAP server implements LOGIN
(RFC 3501 §6.2.3, RFC 9051 §6.2.3), it needs no SASL negotiation and no
base64, and its quoting rules are small and testable (`login_chunks`). Both
carry the password in the clear inside the connection, so neither is safer.
A backend that advertises LOGINDISABLED is not sent the password at all:
that is a configuration error (plaintext where it wants TLS), reported as
UNAVAILABLE, never as a wrong password.

Quoting (RFC 9051 §4.3): user and password go as quoted strings with `\\`
and `"` escaped when they are 7-bit; otherwise (UTF-8 beyond ASCII) as
literals, non-synchronizing `{n+}` if the backend advertises LITERAL+ (or
LITERAL- and n <= 4096, RFC 7888), else synchronizing `{n}`, waiting for the
`+` continuation. NUL, CR and LF cannot be sent in any form IMAP servers
accept for LOGIN: such a request is a FAILURE without contacting anyone.

Telling the backend who the client is (`send_id`, off by default): the
backend sees every check come from refd's address, so its own failed-login
penalties (Dovecot's auth_penalty, keyed by the remote IP) would punish
refd for everybody. With `send_id`, the source sends RFC 2971 `ID` before
LOGIN with Dovecot's fields, e.g. `ID ("x-originating-ip" "203.0.113.7"
"x-originating-port" "51234" "x-connected-ip" "192.0.2.1" "x-connected-port"
"143" "x-session-id" "3d3a-2")`, and the backend then counts, logs (rip=,
lip=, session=) and penalises the real client. RFC 2971 §2 lets a client
send ID when the server advertises it, and only then is it sent; values are
IMAP strings (`_astring`), unknown ones are left out ("Implementations MAY
send less information than they have available", §2), never invented
("MUST NOT send false information"). Dovecot only believes these fields
from `login_trusted_networks`, which must hold refd's address; from
elsewhere it ignores them. An `ID` answered with anything but OK does not
stop the LOGIN.

Every wait has a deadline: the wait for a free slot and the TCP connect
share `connect_timeout_s`; the greeting, the TLS handshake and each answer
get `response_timeout_s` each. `authenticate` never raises (except trio's
own cancellation) and never hangs. At most `max_concurrent_per_backend`
checks run against one (host, port) at once (a `trio.CapacityLimiter` per
backend).

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

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.registry import AuthSourceSpec, BuildContext, ParseContext
from refd.config import TLS_MODES, choice, host_port, opt, resolve_path
from refd.tree import Node, Reader, Seq, TreeError, get

__all__ = [
    "ID_FIELDS",
    "MAX_LINE_BYTES",
    "SPEC",
    "Backend",
    "BackendProtocolError",
    "ImapAuthConfig",
    "ImapBackendSource",
    "LineReader",
    "Resolve",
    "Response",
    "SharedCache",
    "TlsMode",
    "capabilities",
    "id_chunks",
    "id_params",
    "login_chunks",
    "parse_response",
]

log = logging.getLogger(__name__)

Backend = tuple[str, int]
Resolve = Callable[[str], Backend | None]
OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]

# A backend line (literals included) longer than this is refused: no IMAP
# answer to LOGIN comes near it, and an endless line must not eat memory.
MAX_LINE_BYTES = 64 * 1024
# RFC 7888 §4: LITERAL- allows non-synchronizing literals up to 4096 octets.
LITERAL_MINUS_MAX = 4096
# LOGOUT after the decision is politeness: never wait long for it.
LOGOUT_GRACE_S = 1.0
# Backend text quoted in a reason is cut to this many characters.
REASON_TEXT_MAX = 200

# RFC 5530 codes on a tagged NO that mean "could not decide", not "wrong
# password": the session answers them with [UNAVAILABLE], not a failure.
UNAVAILABLE_CODES = frozenset({"UNAVAILABLE", "SERVERBUG", "LIMIT", "PRIVACYREQUIRED"})

_CONDITIONS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})
# RFC 9051 §9: tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR is an
# ATOM-CHAR or "]"; atom-specials are ( ) { SP CTL % * " \ ].
_TAG = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~\]]+")
# A server line that ends in a literal announcement: "{" number "}" CRLF.
_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,20})\}\r?\n\Z")
_UNSENDABLE = frozenset("\x00\r\n")

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


class TlsMode(enum.Enum):
    """How the connection to the backend is protected."""

    NONE = "none"  # plain TCP: loopback or a trusted network only
    STARTTLS = "starttls"  # RFC 9051 §6.2.1: upgrade after the greeting
    IMPLICIT = "implicit"  # RFC 8314 §3.3: TLS from the first byte (port 993)


class BackendProtocolError(Exception):
    """The backend sent something that is not a usable IMAP answer.

    The message describes the backend's bytes; it never holds what we sent.
    """


# -- pure parts: line splitting, response parsing, command encoding ----------


class LineReader:
    """Split backend bytes into response lines, with a size bound.

    Sans-IO: `feed` bytes, then call `next_line` until it returns None
    ("need more"). A line that announces a literal (`... {5}` CRLF) continues
    after the literal's octets (RFC 9051 §4.3), so the logical line is
    returned whole, literal included. A logical line over `max_line_bytes`
    raises BackendProtocolError as soon as that is known.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._line = bytearray()  # the logical line so far
        self._literal_left = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as (part of) a line."""
        return len(self._buffer) + len(self._line)

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(self._buffer))
                self._line += self._buffer[:take]
                del self._buffer[:take]
                self._literal_left -= take
                if self._literal_left:
                    return None
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._line) + len(self._buffer) > self.max_line_bytes:
                    raise self._too_long()
                return None
            self._line += self._buffer[: end + 1]
            del self._buffer[: end + 1]
            if len(self._line) > self.max_line_bytes:
                raise self._too_long()
            literal = _LITERAL_AT_END.search(self._line)
            if literal is not None:
                size = int(literal.group(1))
                if len(self._line) + size > self.max_line_bytes:
                    raise self._too_long()
                self._literal_left = size
                continue
            line = bytes(self._line)
            self._line.clear()
            return line

    def _too_long(self) -> BackendProtocolError:
        return BackendProtocolError(f"backend line longer than {self.max_line_bytes} bytes")


@dataclass(frozen=True, slots=True)
class Response:
    """One backend line, parsed as far as this source needs.

    `tag` is "*" (untagged), "+" (continuation request) or the command tag.
    `condition` is OK/NO/BAD/BYE/PREAUTH, or "" for untagged data (then
    `text` is the data, e.g. "CAPABILITY IMAP4rev1 ...") and continuations.
    `code` is the response code's atom in upper case ("" if none) and
    `code_args` the rest inside the brackets (RFC 9051 §7.1).
    """

    tag: str
    condition: str
    code: str
    code_args: str
    text: str


def _resp_text(tag: str, condition: str, rest: str) -> Response:
    # resp-text = ["[" resp-text-code "]" SP] [text]
    if rest.startswith("["):
        close = rest.find("]")
        if close > 0:
            atom, _, args = rest[1:close].partition(" ")
            return Response(tag, condition, atom.upper(), args, rest[close + 1 :].lstrip(" "))
    return Response(tag, condition, "", "", rest)


def parse_response(line: bytes) -> Response:
    """Parse one logical line from `LineReader`; raises BackendProtocolError."""
    body = line.removesuffix(b"\n").removesuffix(b"\r")
    if body == b"+" or body.startswith(b"+ "):
        return _resp_text("+", "", body[2:].decode("utf-8", "replace"))
    head, _, rest_bytes = body.partition(b" ")
    rest = rest_bytes.decode("utf-8", "replace")
    if head == b"*":
        word, _, after = rest.partition(" ")
        if word.upper() in _CONDITIONS:
            return _resp_text("*", word.upper(), after)
        if not word:
            raise BackendProtocolError(f"empty untagged response: {_show(line)}")
        return Response("*", "", "", "", rest)
    if not _TAG.fullmatch(head) or head.startswith(b"+"):
        raise BackendProtocolError(f"not an IMAP response: {_show(line)}")
    word, _, after = rest.partition(" ")
    if word.upper() not in ("OK", "NO", "BAD"):
        raise BackendProtocolError(f"not an IMAP response (no OK/NO/BAD): {_show(line)}")
    return _resp_text(head.decode("ascii"), word.upper(), after)


def capabilities(response: Response) -> frozenset[str] | None:
    """Capabilities in `[CAPABILITY ...]` or `* CAPABILITY ...`, upper-cased; else None."""
    if response.code == "CAPABILITY":
        return frozenset(response.code_args.upper().split())
    if response.tag == "*" and not response.condition:
        word, _, rest = response.text.partition(" ")
        if word.upper() == "CAPABILITY":
            return frozenset(rest.upper().split())
    return None


def _astring(value: str, caps: frozenset[str]) -> tuple[bytes, bool]:
    """`value` as an IMAP string; True if it is a synchronizing literal."""
    data = value.encode("utf-8")
    if data.isascii():
        escaped = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + escaped + b'"', False
    # RFC 9051 §4.3: 8-bit octets only travel in literals.
    size = len(data)
    non_sync = "LITERAL+" in caps or ("LITERAL-" in caps and size <= LITERAL_MINUS_MAX)
    if non_sync:
        return b"{%d+}\r\n" % size + data, False
    return b"{%d}\r\n" % size + data, True


def _command_chunks(
    tag: str, parts: Sequence[bytes | str], caps: frozenset[str]
) -> tuple[bytes, ...]:
    """`tag` and `parts` (bytes as they are, str as IMAP strings) CRLF, cut at sync literals."""
    chunks: list[bytes] = []
    current = tag.encode("ascii")
    for part in parts:
        if isinstance(part, bytes):
            current += part
            continue
        encoded, sync = _astring(part, caps)
        if sync:
            header, _, data = encoded.partition(b"\r\n")
            chunks.append(current + header + b"\r\n")
            current = data
        else:
            current += encoded
    chunks.append(current + b"\r\n")
    return tuple(chunks)


def login_chunks(tag: str, user: str, password: str, caps: frozenset[str]) -> tuple[bytes, ...]:
    """`tag LOGIN user password` CRLF, cut where a synchronizing literal must wait.

    Send the chunks in order; after each one but the last, the backend's `+`
    continuation must arrive first. Raises ValueError for NUL, CR or LF in
    `user` or `password` (the error text names neither).
    """
    if _UNSENDABLE & set(user) or _UNSENDABLE & set(password):
        raise ValueError("user name or password contains NUL, CR or LF")
    return _command_chunks(tag, (b" LOGIN ", user, b" ", password), caps)


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
        if _UNSENDABLE & set(text) or len(text.encode("utf-8")) > 1024:
            continue
        out.append((name, text))
    return tuple(out)


def id_chunks(
    tag: str, params: Sequence[tuple[str, str]], caps: frozenset[str]
) -> tuple[bytes, ...]:
    """`tag ID (field value ...)` CRLF (RFC 2971 §3.1), cut as `login_chunks`."""
    parts: list[bytes | str] = [b" ID ("]
    for index, (name, value) in enumerate(params):
        if _UNSENDABLE & set(name) or _UNSENDABLE & set(value):
            raise ValueError("ID field or value contains NUL, CR or LF")
        parts += [b" " if index else b"", name, b" ", value]
    parts.append(b")")
    return _command_chunks(tag, parts, caps)


def _show(data: bytes | str) -> str:
    """Backend bytes or text, printable and short, for a reason."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.rstrip("\r\n")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(shown) > REASON_TEXT_MAX:
        shown = shown[:REASON_TEXT_MAX] + "..."
    return repr(shown)


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


def _describe(exc: BaseException) -> str:
    """A short description of an I/O or TLS error, for a reason."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    # trio.open_tcp_stream raises OSError from a group of per-address errors.
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return str(exc) or type(exc).__name__


@contextmanager
def _io(what: str) -> Iterator[None]:
    """Turn I/O, TLS and protocol errors during `what` into _Unavailable."""
    try:
        yield
    except BackendProtocolError as exc:
        raise _Unavailable(f"{what}: {exc}") from None
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise _Unavailable(f"{what}: {_describe(exc)}") from None


class _Dialogue:
    """One backend connection: read answers under a deadline, send commands."""

    def __init__(self, stream: trio.abc.Stream, response_timeout_s: float) -> None:
        self.stream = stream
        self.reader = LineReader()
        self.response_timeout_s = response_timeout_s

    async def read(self, waiting_for: str) -> Response:
        with trio.move_on_after(self.response_timeout_s):
            with _io(f"reading {waiting_for}"):
                while (line := self.reader.next_line()) is None:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        raise _Unavailable(f"backend closed the connection before {waiting_for}")
                    self.reader.feed(data)
                return parse_response(line)
        raise _Unavailable(
            f"timed out after {self.response_timeout_s:g}s waiting for {waiting_for}"
        )

    async def send(self, data: bytes, what: str) -> None:
        with trio.move_on_after(self.response_timeout_s):
            with _io(f"sending {what}"):
                await self.stream.send_all(data)
                return
        raise _Unavailable(f"sending {what} took over {self.response_timeout_s:g}s")

    async def command(self, tag: str, chunks: tuple[bytes, ...], what: str) -> Response:
        """Send a command (waiting for "+" between chunks); return its tagged answer.

        ``response_timeout_s`` bounds the whole exchange, not only each line:
        a backend that chatters untagged lines forever cannot hold a login.
        """
        with trio.move_on_after(self.response_timeout_s):
            return await self._command(tag, chunks, what)
        raise _Unavailable(
            f"timed out after {self.response_timeout_s:g}s waiting for the answer to {what}"
        )

    async def _command(self, tag: str, chunks: tuple[bytes, ...], what: str) -> Response:
        for index, chunk in enumerate(chunks):
            await self.send(chunk, what)
            last = index == len(chunks) - 1
            while True:
                response = await self.read(f"the answer to {what}")
                if response.tag == tag:
                    return response
                if response.tag == "+" and not last:
                    break
                if response.tag == "+":
                    raise _Unavailable(f"unexpected continuation after {what}")
                if response.condition == "BYE":
                    raise _Unavailable(f"backend said BYE during {what}: {_show(response.text)}")
                if response.tag != "*":
                    raise _Unavailable(f"answer with an unknown tag during {what}")
        raise AssertionError("unreachable: the last chunk returns or raises")

    async def capabilities(self, tag: str) -> frozenset[str]:
        with trio.move_on_after(self.response_timeout_s):
            return await self._capabilities(tag)
        raise _Unavailable(
            f"timed out after {self.response_timeout_s:g}s waiting for the answer to CAPABILITY"
        )

    async def _capabilities(self, tag: str) -> frozenset[str]:
        await self.send(tag.encode() + b" CAPABILITY\r\n", "CAPABILITY")
        caps: frozenset[str] = frozenset()
        while True:
            response = await self.read("the answer to CAPABILITY")
            caps |= capabilities(response) or frozenset()
            if response.condition == "BYE":
                raise _Unavailable(f"backend said BYE to CAPABILITY: {_show(response.text)}")
            if response.tag == tag:
                if response.condition != "OK" or not caps:
                    raise _Unavailable(f"backend answered CAPABILITY with {response.condition}")
                return caps

    async def logout(self, tag: str) -> None:
        """Best effort: say LOGOUT and wait briefly for its answer."""
        with trio.move_on_after(min(LOGOUT_GRACE_S, self.response_timeout_s)):
            with suppress(_Unavailable):
                await self.command(tag, (tag.encode() + b" LOGOUT\r\n",), "LOGOUT")


# -- the source -----------------------------------------------------------------------


class ImapBackendSource:
    """An AuthSource that checks passwords with one LOGIN on a backend.

    `backend` is a fixed `(host, port)` (a named auth server) or a function
    `user -> (host, port) | None` (the user's routed home server; None is a
    FAILURE "no route", answered like a wrong password). See the module
    docstring for the dialogue, quoting, limits and the cache.

    TLS: `tls` picks the mode. `ssl_context` defaults to
    `ssl.create_default_context()` (system CAs, hostname checked against the
    backend host, which may be an IP address with an IP SAN).
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
            self.ssl_context = ssl_context or ssl.create_default_context()
            if not verify_certificate:
                self.ssl_context.check_hostname = False
                self.ssl_context.verify_mode = ssl.CERT_NONE
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
        result = _redacted(result, password)
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
        if _UNSENDABLE & set(user) or _UNSENDABLE & set(password):
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
            stream = await self._connect(host, port, deadline)
            try:
                return await self._dialogue(stream, backend, user, password, ident)
            finally:
                await trio.aclose_forcefully(stream)
        finally:
            limiter.release()

    async def _connect(self, host: str, port: int, deadline: float) -> trio.abc.Stream:
        with trio.move_on_at(deadline):
            with _io("connect"):
                return await self._open_tcp_stream(host, port)
        raise _Unavailable(f"connect timed out after {self.connect_timeout_s:g}s")

    async def _start_tls(
        self, stream: trio.abc.Stream, host: str
    ) -> trio.SSLStream[trio.abc.Stream]:
        assert self.ssl_context is not None
        tls_stream = trio.SSLStream(stream, self.ssl_context, server_hostname=host)
        with trio.move_on_after(self.response_timeout_s):
            with _io("TLS handshake"):
                await tls_stream.do_handshake()
                return tls_stream
        raise _Unavailable(f"TLS handshake took over {self.response_timeout_s:g}s")

    async def _dialogue(
        self,
        stream: trio.abc.Stream,
        backend: Backend,
        user: str,
        password: str,
        ident: tuple[tuple[str, str], ...],
    ) -> tuple[AuthStatus, str]:
        host = backend[0]
        if self.tls is TlsMode.IMPLICIT:
            stream = await self._start_tls(stream, host)
        talk = _Dialogue(stream, self.response_timeout_s)
        greeting = await talk.read("the greeting")
        if greeting.tag != "*" or greeting.condition not in ("OK", "PREAUTH", "BYE"):
            raise _Unavailable(f"not an IMAP greeting: {_show(greeting.text)}")
        if greeting.condition == "BYE":
            raise _Unavailable(f"backend said BYE: {_show(greeting.text)}")
        if greeting.condition == "PREAUTH":
            raise _Unavailable("backend greeted with PREAUTH: there is no password to check")
        caps = capabilities(greeting)
        if self.tls is TlsMode.STARTTLS:
            if caps is None:
                caps = await talk.capabilities("r1")
            if "STARTTLS" not in caps:
                raise _Unavailable("backend does not offer STARTTLS")
            answer = await talk.command("r2", (b"r2 STARTTLS\r\n",), "STARTTLS")
            if answer.condition != "OK":
                raise _Unavailable(f"backend answered STARTTLS with {answer.condition}")
            if talk.reader.buffered:
                # Bytes sent before the handshake would be read as if they came
                # over TLS: a known injection (RFC 9051 §6.2.1, CVE-2011-0411).
                raise _Unavailable("backend sent data after its STARTTLS OK")
            talk.stream = await self._start_tls(stream, host)
            caps = None  # RFC 9051 §6.2.1: forget what was learnt before TLS
        if caps is None:
            caps = await talk.capabilities("r3")
        if "LOGINDISABLED" in caps:
            raise _Unavailable("backend advertises LOGINDISABLED: it wants TLS before LOGIN")
        if ident:
            await self._send_id(talk, backend, ident, caps)
        answer = await talk.command("r4", login_chunks("r4", user, password, caps), "LOGIN")
        status, reason = _decide(answer)
        await talk.logout("r5")
        if status is AuthStatus.UNAVAILABLE:
            raise _Unavailable(reason)
        return status, reason

    async def _send_id(
        self,
        talk: _Dialogue,
        backend: Backend,
        ident: tuple[tuple[str, str], ...],
        caps: frozenset[str],
    ) -> None:
        """RFC 2971 ID with the client's identity, if the backend advertises ID."""
        answer = None
        if "ID" in caps:
            answer = await talk.command("r6", id_chunks("r6", ident, caps), "ID")
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
                else f"answered ID with {answer.condition}: {_show(answer.text)}",
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
        f"backend answered {answer.condition}{code} to LOGIN: {_show(answer.text)}",
    )


def _where(backend: Backend) -> str:
    host, port = backend
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _redacted(result: AuthResult, password: str) -> AuthResult:
    """Last guard: a reason that somehow holds the password is withheld whole."""
    if password and password in result.reason:
        return AuthResult(result.status, result.user, "reason withheld: it contained the password")
    return result


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
        value = opt(r, m, key, r.as_float_seconds, default, f"auth.imap.{key}")
        if value <= 0 and key != "cache_ttl_s":
            raise r.error(m, f"auth.imap.{key} must be more than 0")
        return value

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
        cache_ttl_s=seconds("cache_ttl_s", 0.0),
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
    context = None
    if ia.ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(ia.ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TreeError(str(ctx.file), ia.line, f"cannot load {ia.ca_file}: {reason}") from None

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
