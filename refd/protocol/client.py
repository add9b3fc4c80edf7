"""The sans-IO IMAP *client* core: what refd says to a server and how it reads the answers.

Two parts of refd talk to IMAP servers as a client: the ``imap`` auth source
(one LOGIN on a backend) and ``refd probe`` (log in, follow referrals, run a
mailbox command). Both drive this core through the small trio adapter in
:mod:`refd.imap_client`; nothing here does I/O.

The model is h11's. A :class:`Client` is fed whatever arrived
(:meth:`Client.receive_data`, ``b""`` for the end of the stream) and asked
for the next event (:meth:`Client.next_event`) until it says
:data:`NEED_DATA`:

- before anything else, the :class:`Greeting`;
- during a command (started with :meth:`Client.send_command`, which returns
  the bytes to send first): :class:`Untagged` for each untagged line,
  :class:`Continue` with the next chunk to send when the server's ``+``
  invites a synchronizing literal, and last the :class:`Answer` (the tagged
  line and the untagged lines before it).

What the server got wrong raises :class:`ResponseError`, whose text says
what it sent: a line that is not an IMAP response, a line over
``max_line_bytes`` (literals included), an answer over ``max_answer_bytes``,
an unknown tag, a ``+`` with nothing left to send, the end of the stream
before the tagged answer (naming a ``* BYE`` seen before it: RFC 9051
§7.1.5 says to read on after BYE until the server closes), bytes after the
STARTTLS OK (:meth:`Client.start_tls`, RFC 9051 §6.2.1).

The client keeps the server's capabilities from the latest response that
lists them (``[CAPABILITY ...]`` or ``* CAPABILITY``), and forgets them at
STARTTLS (RFC 9051 §6.2.1).

Commands are built as *chunks*: the bytes up to and including each
synchronizing literal's ``{n}`` CRLF, then the rest. Strings go as quoted
strings when they are 7-bit, else as literals (RFC 9051 §4.3): ``{n+}``
with LITERAL+ (or LITERAL- and n <= 4096, RFC 7888), else ``{n}``, which
needs the server's ``+`` before the next chunk. NUL, CR and LF cannot be
sent in any of these forms.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

# The server side's NEED_DATA sentinel: one "need more bytes" for both cores.
from refd.protocol.connection import NEED_DATA, NONSYNC_LITERAL_MAX, _Sentinel
from refd.protocol.grammar import LITERAL_HEAD, TAG_CHARS
from refd.protocol.responses import quote

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_LINE_BYTES",
    "NEED_DATA",
    "REASON_TEXT_MAX",
    "SHOWN_TEXT_MAX",
    "UNSENDABLE",
    "Answer",
    "Client",
    "Continue",
    "Greeting",
    "LineReader",
    "Response",
    "ResponseError",
    "Untagged",
    "Value",
    "astring",
    "capabilities",
    "check_greeting",
    "encode_command",
    "id_chunks",
    "login_chunks",
    "parse_data",
    "parse_response",
    "printable",
    "render",
    "show",
]

# A server line (literals included) longer than this is refused: a client
# that reads status and a few lines of data never needs more, and an endless
# line must not eat memory.
MAX_LINE_BYTES = 64 * 1024
# All the lines of one command's answer together.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# Server text quoted in an error (`show`) and in a one-line rendering
# (`render`) is cut to these many characters.
REASON_TEXT_MAX = 200
SHOWN_TEXT_MAX = 300
#: Characters no IMAP string can carry to a server.
UNSENDABLE = frozenset("\x00\r\n")

_CONDITIONS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})
# A server line that ends in a literal announcement: "{" number "}" CRLF.
_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,20})\}\r?\n\Z")


class ResponseError(Exception):
    """The server sent something the client cannot go on with.

    The message describes the server's bytes; it never holds what was sent.
    """


# -- lines -----------------------------------------------------------------------------


class LineReader:
    """Split server bytes into response lines, with a size bound.

    `feed` bytes, then call `next_line` until it returns None ("need
    more"). A line that announces a literal (`... {5}` CRLF) continues after
    the literal's octets (RFC 9051 §4.3), so the logical line is returned
    whole, literal included. A logical line over `max_line_bytes` raises
    ResponseError as soon as that is known.
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

    def _too_long(self) -> ResponseError:
        return ResponseError(f"backend line longer than {self.max_line_bytes} bytes")


# -- responses -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """One server line, parsed as far as a client needs.

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
    """Parse one logical line from `LineReader`; raises ResponseError."""
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
            raise ResponseError(f"empty untagged response: {show(line)}")
        return Response("*", "", "", "", rest)
    if not head or not TAG_CHARS.issuperset(head):
        raise ResponseError(f"not an IMAP response: {show(line)}")
    word, _, after = rest.partition(" ")
    if word.upper() not in ("OK", "NO", "BAD"):
        raise ResponseError(f"not an IMAP response (no OK/NO/BAD): {show(line)}")
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


def check_greeting(response: Response) -> None:
    """Raise ResponseError unless `response` is a greeting (RFC 9051 §7.1: * OK, PREAUTH, BYE)."""
    if response.tag != "*" or response.condition not in ("OK", "PREAUTH", "BYE"):
        raise ResponseError(f"not an IMAP greeting: {render(response)}")


def printable(text: str, limit: int) -> str:
    """Server text made printable (escapes for the rest) and cut to `limit` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.rstrip("\r\n"))
    return shown if len(shown) <= limit else shown[:limit] + "..."


def show(data: bytes | str) -> str:
    """Server bytes or text, printable, short and quoted, for an error message."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr(printable(text, REASON_TEXT_MAX))


def render(response: Response) -> str:
    """A status response as one printable line; CAPABILITY lists are elided."""
    parts = [response.condition] if response.condition else []
    if response.code:
        if response.code == "CAPABILITY":
            args = " ..."
        else:
            args = f" {response.code_args}" if response.code_args else ""
        parts.append(f"[{response.code}{args}]")
    if response.text:
        parts.append(response.text)
    return printable(" ".join(parts), SHOWN_TEXT_MAX)


# A parsed value of untagged data: atom or string (str), NIL (None), or a list.
Value = str | None | list["Value"]


def parse_data(data: bytes) -> list[Value]:
    """Tokens of one untagged line (after ``* ``): atoms, strings, NIL, lists.

    Quoted strings lose their escapes, literals (``{n}`` CRLF and n octets)
    become strings, an unquoted NIL becomes None, and atoms keep brackets
    (``BODY[TEXT]``). Raises ResponseError on bad syntax.
    """
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    stack: list[list[Value]] = [[]]
    pos = 0
    n = len(data)
    while pos < n:
        c = data[pos]
        if c == 0x20:
            pos += 1
        elif c == 0x28:  # (
            new: list[Value] = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ResponseError("unbalanced ')' in a response")
            stack.pop()
            pos += 1
        elif c == 0x22:  # "
            out = bytearray()
            pos += 1
            while True:
                if pos >= n:
                    raise ResponseError("unterminated quoted string in a response")
                ch = data[pos]
                if ch == 0x5C and pos + 1 < n:  # backslash
                    out.append(data[pos + 1])
                    pos += 2
                elif ch == 0x22:
                    pos += 1
                    break
                else:
                    out.append(ch)
                    pos += 1
            stack[-1].append(out.decode("utf-8", "replace"))
        elif c == 0x7B:  # {
            match = LITERAL_HEAD.match(data, pos)
            if match is None:
                raise ResponseError("bad literal in a response")
            size = int(match.group(1))
            start = match.end()
            if start + size > n:
                raise ResponseError("literal longer than the response")
            stack[-1].append(data[start : start + size].decode("utf-8", "replace"))
            pos = start + size
        else:
            end = pos
            while end < n and data[end] not in b" ()":
                end += 1
            atom = data[pos:end].decode("utf-8", "replace")
            stack[-1].append(None if atom.upper() == "NIL" else atom)
            pos = end
    if len(stack) != 1:
        raise ResponseError("unbalanced '(' in a response")
    return stack[0]


# -- commands --------------------------------------------------------------------------


def astring(value: str, caps: frozenset[str]) -> tuple[bytes, bool]:
    """`value` as an IMAP string; True if it is a synchronizing literal."""
    data = value.encode("utf-8")
    if data.isascii():
        return quote(value).encode("ascii"), False
    # RFC 9051 §4.3: 8-bit octets only travel in literals.
    size = len(data)
    non_sync = "LITERAL+" in caps or ("LITERAL-" in caps and size <= NONSYNC_LITERAL_MAX)
    if non_sync:
        return b"{%d+}\r\n" % size + data, False
    return b"{%d}\r\n" % size + data, True


def encode_command(
    tag: str, parts: Sequence[bytes | str], caps: frozenset[str]
) -> tuple[bytes, ...]:
    """`tag` and `parts` (bytes as they are, str as IMAP strings) CRLF, cut at sync literals."""
    chunks: list[bytes] = []
    current = tag.encode("ascii")
    for part in parts:
        if isinstance(part, bytes):
            current += part
            continue
        encoded, sync = astring(part, caps)
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

    Send the chunks in order; after each one but the last, the server's `+`
    continuation must arrive first. Raises ValueError for NUL, CR or LF in
    `user` or `password` (the error text names neither).
    """
    if UNSENDABLE & set(user) or UNSENDABLE & set(password):
        raise ValueError("user name or password contains NUL, CR or LF")
    return encode_command(tag, (b" LOGIN ", user, b" ", password), caps)


def id_chunks(
    tag: str, params: Sequence[tuple[str, str]], caps: frozenset[str]
) -> tuple[bytes, ...]:
    """`tag ID (field value ...)` CRLF (RFC 2971 §3.1), cut as `login_chunks`."""
    parts: list[bytes | str] = [b" ID ("]
    for index, (name, value) in enumerate(params):
        if UNSENDABLE & set(name) or UNSENDABLE & set(value):
            raise ValueError("ID field or value contains NUL, CR or LF")
        parts += [b" " if index else b"", name, b" ", value]
    parts.append(b")")
    return encode_command(tag, parts, caps)


# -- the connection --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's first line (not yet judged: see `check_greeting`)."""

    response: Response


@dataclass(frozen=True, slots=True)
class Untagged:
    """One untagged line of the answer to the command in flight."""

    response: Response
    raw: bytes


@dataclass(frozen=True, slots=True)
class Continue:
    """The server said ``+``: send `data`, the command's next chunk, now."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """The tagged line that ends a command, and the untagged lines before it."""

    tagged: Response
    untagged: tuple[Untagged, ...]


Event = Greeting | Untagged | Continue | Answer


class _State(enum.Enum):
    GREETING = "greeting"  # waiting for the server's first line
    IDLE = "idle"  # no command in flight
    COMMAND = "command"  # waiting for the answer to `_tag`


class Client:
    """One client connection's protocol state (see the module docstring)."""

    def __init__(
        self, *, max_line_bytes: int = MAX_LINE_BYTES, max_answer_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self.reader = LineReader(max_line_bytes)
        self.max_answer_bytes = max_answer_bytes
        #: what the server advertised last; None until it says, and after STARTTLS
        self.capabilities: frozenset[str] | None = None
        #: the greeting said PREAUTH: LOGIN and STARTTLS are out (RFC 9051 §7.1.4)
        self.preauth = False
        #: the ``* BYE`` the server sent, if any
        self.bye: Response | None = None
        self._state = _State.GREETING
        self._closed = False
        self._tag = ""
        self._chunks: list[bytes] = []
        self._untagged: list[Untagged] = []
        self._answer_bytes = 0

    @property
    def idle(self) -> bool:
        """Greeted, and no command in flight: a command may start."""
        return self._state is _State.IDLE

    def receive_data(self, data: bytes | bytearray) -> None:
        """Bytes from the server; ``b""``: the server closed its side."""
        if data:
            self.reader.feed(data)
        else:
            self._closed = True

    def send_command(self, tag: str, chunks: Sequence[bytes]) -> bytes:
        """Start a command; return its first chunk, to send now.

        The other chunks come back as `Continue` events when the server asks.
        """
        if self._state is not _State.IDLE:
            raise RuntimeError(f"no command can start while {self._state.value}")
        if not chunks:
            raise ValueError("a command has at least one chunk")
        self._state = _State.COMMAND
        self._tag = tag
        self._chunks = list(chunks[1:])
        self._untagged = []
        self._answer_bytes = 0
        return chunks[0]

    def start_tls(self) -> None:
        """The STARTTLS OK was read; the TLS handshake comes next.

        Bytes already received would be read as if they came over TLS: a
        known injection (RFC 9051 §6.2.1, CVE-2011-0411), refused here. What
        was learnt before TLS is forgotten.
        """
        if self.reader.buffered:
            raise ResponseError("data after the STARTTLS answer (injection?)")
        self.capabilities = None

    def next_event(self) -> Event | _Sentinel:
        """The next event, or NEED_DATA; raises ResponseError (see the module docstring)."""
        if self._state is _State.IDLE:
            raise RuntimeError("no command in flight")
        line = self.reader.next_line()
        if line is None:
            if self._closed:
                said = f" after * BYE {render(self.bye)[4:]}" if self.bye else ""
                raise ResponseError(f"the server closed the connection{said}")
            return NEED_DATA
        response = parse_response(line)
        self.capabilities = capabilities(response) or self.capabilities
        if response.condition == "BYE" and response.tag == "*":
            self.bye = response
        if self._state is _State.GREETING:
            self._state = _State.IDLE
            self.preauth = response.tag == "*" and response.condition == "PREAUTH"
            return Greeting(response)
        self._answer_bytes += len(line)
        if self._answer_bytes > self.max_answer_bytes:
            raise ResponseError(f"answer longer than {self.max_answer_bytes} bytes")
        if response.tag == self._tag:
            self._state = _State.IDLE
            return Answer(response, tuple(self._untagged))
        if response.tag == "*":
            event = Untagged(response, line)
            self._untagged.append(event)
            return event
        if response.tag == "+" and self._chunks:
            return Continue(self._chunks.pop(0))
        raise ResponseError(f"unexpected response {render(response)!r} (tag {response.tag})")
