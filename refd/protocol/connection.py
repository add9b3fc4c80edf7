"""The sans-IO IMAP connection: bytes in, events out, responses to bytes.

The server loop feeds whatever it read to :meth:`Connection.receive_data` and
calls :meth:`Connection.next_event` until it returns :data:`NEED_DATA`.  The
connection frames commands (a line, or lines joined by literals), enforces
the limits it was built with, checks that the command is legal in the
current state, and parses it.  It never waits and never does I/O, so every
rule here is tested with bytes in and events out.

A synchronizing literal (``{n}`` CRLF) is not read on credit: the connection
returns a :class:`LiteralRequest` and the caller decides, with
:meth:`accept_literal` (send ``+``) or :meth:`refuse_literal` (send a tagged
answer instead; the client then sends no literal, RFC 3501 §7.5).  That is
how APPEND gets its referral before the message body is ever sent.

A non-synchronizing literal (``{n+}``, RFC 7888) gives no such chance: its
octets follow without waiting.  When the command that announced it is
refused (unknown, illegal here, over a size limit, or a literal over 4096
octets), those octets would be read as commands, so the stream cannot be
resynchronised: the answer is the BAD and then :data:`LOST_SYNC_BYE`, and
the connection closes (:meth:`Connection._lost`).  Every refusal that leaves
the stream readable (a synchronizing literal refused before ``+``, an
overlong line without a literal) is a BAD, and the connection goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from refd.protocol.commands import (
    ALLOWED,
    CARRIES_CREDENTIALS,
    SELECTED_STATE_COMMANDS,
    WIRE_NAMES,
    Command,
    CommandError,
    State,
    Unselected,
    parse_arguments,
    parse_simple,
    parse_tag_and_name,
)
from refd.protocol.responses import Bye, Response, to_bytes

__all__ = [
    "CONNECTION_CLOSED",
    "LOST_SYNC_BYE",
    "NEED_DATA",
    "NONSYNC_LITERAL_MAX",
    "TOO_MANY_BAD_BYE",
    "BadInput",
    "Connection",
    "LiteralRequest",
    "ProtocolLimits",
    "SaslResponse",
]

#: RFC 7888 §4: with LITERAL- a non-synchronizing literal is at most 4096 octets.
NONSYNC_LITERAL_MAX = 4096

#: The one ``* BYE`` text for every framing path that cannot resynchronise.
LOST_SYNC_BYE = "Cannot resynchronize after a refused non-synchronizing literal."
#: The ``* BYE`` text once ``bad_command_limit`` invalid commands have come.
TOO_MANY_BAD_BYE = "Too many invalid commands."


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """Limits of the protocol core; the daemon config sets them."""

    max_line_bytes: int = 8192
    max_literal_bytes: int = 65536
    max_command_bytes: int = 262144
    bad_commands: int = 10
    #: the parser reads one pattern more than this, then stops (the session
    #: answers NO [LIMIT]); a LIST of 256 KiB could carry 128,000
    max_list_patterns: int = 100


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: More bytes are needed before anything else can happen.
NEED_DATA = _Sentinel("NEED_DATA")
#: The peer closed its side and nothing complete is left in the buffer.
CONNECTION_CLOSED = _Sentinel("CONNECTION_CLOSED")


@dataclass(frozen=True, slots=True)
class BadInput:
    """Input the client got wrong; answer ``error`` and, if ``bye``, close."""

    error: CommandError
    bye: str | None = None
    #: the name of the limit this input hit, if any (for counting and logs;
    #: the reason is ``error.text``)
    limit: str | None = None
    #: this input was the last invalid command allowed (``bad_command_limit``):
    #: a limit of its own, reported besides ``limit``, and the reason for ``bye``
    too_many_bad: bool = False


@dataclass(frozen=True, slots=True)
class LiteralRequest:
    """A synchronizing literal was announced; accept or refuse it.

    ``prefix`` is the command so far, ``{n}`` CRLF included, for a caller
    that needs the arguments before the literal (APPEND's mailbox).
    ``credentials`` says the literal would carry a password
    (``CARRIES_CREDENTIALS``).
    """

    tag: str
    name: str
    size: int
    prefix: bytes
    within_limit: bool
    credentials: bool = False


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """One client line during AUTHENTICATE; ``data`` None means ``*`` (cancel)."""

    tag: str
    data: bytes | None

    def __repr__(self) -> str:
        return f"SaslResponse(tag={self.tag!r}, data=<hidden>)"


Event = Command | BadInput | LiteralRequest | SaslResponse | _Sentinel

# A line that ends in a literal announcement: {n} or {n+} (RFC 7888).
_LITERAL_AT_END = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
# What may still become the end of such a line (CR included): kept while an
# overlong line is skipped, so its end can be judged whatever the segments.
_ANNOUNCEMENT_SO_FAR = re.compile(rb"\{([0-9]*)(\+?\}?\r?)")

# The longest tag echoed back for a command that is answered unread.
_MAX_ECHOED_TAG = 64

_BY_NAME: dict[str, type[Command]] = {
    **{WIRE_NAMES[cls]: cls for cls in ALLOWED if cls is not Unselected},
    **dict.fromkeys(SELECTED_STATE_COMMANDS, Unselected),
}


class Connection:
    """One client's protocol state (see the module docstring)."""

    def __init__(self, limits: ProtocolLimits | None = None) -> None:
        self.limits = limits or ProtocolLimits()
        self.state = State.NOT_AUTHENTICATED
        self.bad_commands = 0
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for LF in _buf
        self._parts: list[bytes] = []  # the command so far (lines and literals)
        self._size = 0  # bytes in _parts
        self._literal_left = 0
        self._pending: LiteralRequest | None = None
        self._skipping = False  # discarding an overlong line up to its LF
        self._skip_tag: str | None = None
        self._skip_tail = b""  # the skipped line's end, if it may announce a literal
        self._sasl_tag: str | None = None
        self._eof = False

    # -- input -------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed."""
        if data:
            self._buf += data
        else:
            self._eof = True

    def discard_buffered(self) -> int:
        """Drop unread input (after STARTTLS: RFC 9051 §6.2.1 injection defence)."""
        dropped = len(self._buf)
        self._buf.clear()
        self._scan = 0
        return dropped

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_command(self) -> bool:
        """Part of a command has arrived and its end has not (slowloris guard)."""
        return bool(self._buf or self._parts or self._literal_left or self._skipping)

    def next_event(self) -> Event:
        """The next thing the server must act on, or NEED_DATA."""
        if self._pending is not None:
            raise RuntimeError("accept_literal() or refuse_literal() first")
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(self._buf))
                if take:
                    self._parts.append(bytes(self._buf[:take]))
                    del self._buf[:take]
                    self._literal_left -= take
                    self._size += take
                if self._literal_left:
                    return self._need()
                self._scan = 0
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                if self._skipping:
                    self._skip_tail = _announcement_tail(self._skip_tail, self._buf)
                    self._buf.clear()
                    self._scan = 0
                elif len(self._buf) > self.limits.max_line_bytes + 1:  # + a CR
                    self._start_skipping()
                    continue
                else:
                    self._scan = len(self._buf)
                return self._need()
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan = 0
            if self._skipping:
                line, self._skip_tail = self._skip_tail + line, b""
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._skipping or len(line) > self.limits.max_line_bytes:
                return self._overlong(line)
            if self._sasl_tag is not None:
                tag, self._sasl_tag = self._sasl_tag, None
                return SaslResponse(tag, None if line == b"*" else line)
            event = self._line(line)
            if event is not None:
                return event

    def _need(self) -> _Sentinel:
        return CONNECTION_CLOSED if self._eof else NEED_DATA

    def _start_skipping(self) -> None:
        head = self._parts[0] if self._parts else bytes(self._buf[:200])
        self._skip_tag = self._tag_of(head)
        self._reset()
        self._skipping = True
        self._skip_tail = _announcement_tail(b"", self._buf)
        self._buf.clear()
        self._scan = 0

    def _overlong(self, line: bytes) -> BadInput:
        """Answer a line over the limit, however it was split into packets."""
        if self._skipping:
            self._skipping = False
            tag = self._skip_tag
        else:
            tag = self._tag_of(self._parts[0] if self._parts else line)
            self._reset()
        if self._sasl_tag is not None:
            # An AUTHENTICATE response: it ends the exchange, with its tag.
            tag, self._sasl_tag = self._sasl_tag, None
            return self._bad(
                tag, "Authentication response too long.", code="TOOBIG", limit="line_length"
            )
        refuse = self._lost if _nonsync_at_end(line) else self._bad
        return refuse(tag, "Command line too long.", code="TOOBIG", limit="line_length")

    @staticmethod
    def _tag_of(data: bytes) -> str | None:
        """The tag of a command we could not read whole, if it has a sane one."""
        space = data.find(b" ", 0, _MAX_ECHOED_TAG + 1)
        if space <= 0:
            return None
        try:
            return parse_tag_and_name(data[:space] + b" X\r\n")[0]
        except CommandError:
            return None

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._literal_left = 0

    def _line(self, line: bytes) -> Event | None:
        self._parts.append(line + b"\r\n")
        self._size += len(line) + 2
        m = _LITERAL_AT_END.search(line)
        if self._size > self.limits.max_command_bytes:
            tag = self._tag_of(self._parts[0])
            self._reset()
            refuse = self._lost if m is not None and m.group(2) else self._bad
            return refuse(tag, "Command too long.", code="TOOBIG", limit="command_size")
        if m is None:
            raw = b"".join(self._parts)
            self._reset()
            return self._command(raw)
        size = int(m.group(1)) if len(m.group(1)) <= 12 else 1 << 62
        prefix = b"".join(self._parts)
        try:
            tag, name = parse_tag_and_name(prefix)
            self._check_legal(tag, name)
        except CommandError as exc:
            self._reset()
            refuse = self._lost if m.group(2) else self._bad
            return refuse(exc.tag, exc.text)
        if m.group(2):
            # RFC 7888 §4 (LITERAL-): a non-synchronizing literal over 4096
            # octets is an error, and the stream after it cannot be trusted.
            if size > NONSYNC_LITERAL_MAX:
                self._reset()
                return self._lost(
                    tag,
                    "Non-synchronizing literal over 4096 octets (LITERAL-).",
                    code="TOOBIG",
                    limit="literal_size",
                )
            self._literal_left = size
            return None
        self._pending = LiteralRequest(
            tag,
            name,
            size,
            prefix,
            size <= self.limits.max_literal_bytes,
            _BY_NAME[name] in CARRIES_CREDENTIALS,
        )
        return self._pending

    def accept_literal(self) -> None:
        """Go on with the pending literal; the caller sends the ``+``."""
        if self._pending is None:
            raise RuntimeError("no literal is pending")
        self._literal_left = self._pending.size
        self._pending = None

    def refuse_literal(self) -> None:
        """Drop the pending command; the caller sends its tagged answer."""
        if self._pending is None:
            raise RuntimeError("no literal is pending")
        self._pending = None
        self._reset()

    def expect_sasl_response(self, tag: str) -> None:
        """The next line is a SASL response to AUTHENTICATE ``tag``."""
        self._sasl_tag = tag

    def _check_legal(self, tag: str, name: str) -> None:
        cls = _BY_NAME.get(name)
        if cls is None:
            raise CommandError(tag, f"Unknown command {name[:32]}.")
        if self.state in ALLOWED[cls]:
            return
        if self.state is State.NOT_AUTHENTICATED:
            text = f"{name} needs an authenticated session: log in first."
        elif self.state is State.AUTHENTICATED:
            text = f"{name} is not allowed: already authenticated."
        else:
            text = f"{name} is not allowed after LOGOUT."
        raise CommandError(tag, text, command=name)

    def _command(self, raw: bytes) -> Event:
        try:
            simple = parse_simple(raw)
            if simple is not None:
                self._check_legal(simple.tag, simple.name)
                return simple
            tag, name = parse_tag_and_name(raw)
            self._check_legal(tag, name)
            return parse_arguments(raw, tag, name, self.limits.max_list_patterns)
        except CommandError as exc:
            return self._bad_from(exc)

    def _bad(
        self,
        tag: str | None,
        text: str,
        *,
        code: str | None = None,
        bye: str | None = None,
        limit: str | None = None,
    ) -> BadInput:
        return self._bad_from(CommandError(tag, text, code=code), bye=bye, limit=limit)

    def _lost(
        self, tag: str | None, text: str, *, code: str | None = None, limit: str | None = None
    ) -> BadInput:
        """Refuse a command whose non-synchronizing literal is already on its
        way: its octets would be read as commands (RFC 7888 §4), so BAD, then
        :data:`LOST_SYNC_BYE` and close.  The one exit for every such path."""
        return self._bad(tag, text, code=code, bye=LOST_SYNC_BYE, limit=limit)

    def _bad_from(
        self, error: CommandError, *, bye: str | None = None, limit: str | None = None
    ) -> BadInput:
        self.bad_commands += 1
        if bye is None and self.bad_commands >= self.limits.bad_commands:
            return BadInput(error, TOO_MANY_BAD_BYE, limit, too_many_bad=True)
        return BadInput(error, bye, limit)

    # -- output -------------------------------------------------------------

    def send(self, response: Response) -> bytes:
        """The wire bytes of ``response``; a BYE moves to the logout state."""
        if isinstance(response, Bye):
            self.state = State.LOGOUT
        return to_bytes(response)


def _nonsync_at_end(line: bytes) -> bool:
    """Whether ``line`` ends by announcing a non-synchronizing literal ``{n+}``."""
    m = _LITERAL_AT_END.search(line)
    return m is not None and bool(m.group(2))


def _announcement_tail(tail: bytes, data: bytes | bytearray) -> bytes:
    """The end of skipped ``tail + data`` that may yet end a line in ``{n}``/``{n+}``.

    Only a suffix from the last ``{`` can, and the digits' value does not
    matter once the line is refused, so one digit is kept: a few octets
    at most, however many digits (or leading zeros) the client sends.
    """
    start = data.rfind(b"{")
    text = bytes(data[start:]) if start >= 0 else tail + bytes(data) if tail else b""
    m = _ANNOUNCEMENT_SO_FAR.fullmatch(text)
    if m is None:
        return b""
    return b"{" + m.group(1)[:1] + m.group(2)
