"""The IMAP tokens refd reads, as named character sets and a small reader.

The ABNF is RFC 3501 §9 (RFC 9051 §9 where it differs), quoted above each
piece.  :class:`Reader` walks one complete command: the bytes from the tag to
the final CRLF, literals included inline exactly as they came off the wire
(``{n}`` CRLF, then *n* octets).  Framing (finding where a command ends and
asking for continuations) is :mod:`refd.protocol.connection`'s job; this module
only reads tokens and raises :class:`ParseError` with text fit for a ``BAD``.
"""

from __future__ import annotations

import re

from refd.protocol import mutf7

__all__ = [
    "ASTRING_CHARS",
    "ASTRING_RUN",
    "ATOM_CHARS",
    "ATOM_RUN",
    "LIST_CHARS",
    "LITERAL_HEAD",
    "TAG_CHARS",
    "TAG_RUN",
    "ParseError",
    "Reader",
    "canonical_mailbox",
]

# CTL = %x00-1F / %x7F ; CHAR = %x01-7F
_CTL = frozenset(range(0x00, 0x20)) | {0x7F}
# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
#                 quoted-specials / resp-specials
# list-wildcards = "%" / "*" ; quoted-specials = DQUOTE / "\" ; resp-specials = "]"
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | _CTL
ATOM_CHARS = frozenset(range(0x01, 0x80)) - _ATOM_SPECIALS
# ASTRING-CHAR = ATOM-CHAR / resp-specials
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
# tag = 1*<any ASTRING-CHAR except "+">
TAG_CHARS = ASTRING_CHARS - {ord("+")}
# list-char = ATOM-CHAR / list-wildcards / resp-specials
LIST_CHARS = ATOM_CHARS | frozenset(b"%*]")
# TEXT-CHAR = <any CHAR except CR and LF>; quoted = DQUOTE *QUOTED-CHAR DQUOTE
# QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials
_QUOTED_PLAIN = frozenset(range(0x01, 0x80)) - frozenset(b'\r\n"\\')


def _run_pattern(chars: frozenset[int]) -> re.Pattern[bytes]:
    body = b"".join(re.escape(bytes([c])) for c in sorted(chars))
    return re.compile(b"[" + body + b"]+")


ATOM_RUN = _run_pattern(ATOM_CHARS)
ASTRING_RUN = _run_pattern(ASTRING_CHARS)
TAG_RUN = _run_pattern(TAG_CHARS)
_LIST_RUN = _run_pattern(LIST_CHARS)
_QUOTED_RUN = _run_pattern(_QUOTED_PLAIN)
# literal = "{" number ["+"] "}" CRLF *CHAR8   (the "+" is RFC 7888 LITERAL-)
LITERAL_HEAD = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r\n")


class ParseError(Exception):
    """The client sent something the grammar does not allow.

    ``text`` is the human part of the ``BAD`` answer.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def canonical_mailbox(name: str) -> str:
    """RFC 3501 §5.1: INBOX is case-insensitive; fold it once, here."""
    if len(name) == 5 and name.upper() == "INBOX":
        return "INBOX"
    if len(name) > 5 and name[5] == "/" and name[:5].upper() == "INBOX":
        return "INBOX" + name[5:]
    return name


class Reader:
    """A cursor over one complete command (see the module docstring)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # -- structure -----------------------------------------------------

    def at_end(self) -> bool:
        return self.data.startswith(b"\r\n", self.pos) and self.pos + 2 == len(self.data)

    def end(self) -> None:
        if not self.at_end():
            if self.data.startswith(b" ", self.pos):
                raise ParseError("Too many arguments.")
            raise ParseError("Unexpected characters after the command.")

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def sp(self, what: str = "argument") -> None:
        if self.peek() != 0x20:
            if self.at_end():
                raise ParseError(f"Missing {what}.")
            raise ParseError(f"Expected a space before the {what}.")
        self.pos += 1
        if self.peek() == 0x20:
            raise ParseError("Two spaces in a row.")

    def maybe_sp(self) -> bool:
        if self.peek() == 0x20:
            self.sp()
            return True
        return False

    def expect(self, byte: bytes, what: str) -> None:
        if not self.data.startswith(byte, self.pos):
            raise ParseError(f"Expected {what}.")
        self.pos += len(byte)

    # -- tokens ----------------------------------------------------------

    def _run(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        m = pattern.match(self.data, self.pos)
        if m is None:
            c = self.peek()
            if c in (-1, 0x0D):
                raise ParseError(f"Missing {what}.")
            if c == 0:
                raise ParseError(f"NUL character where {what} was expected.")
            if c >= 0x80:
                raise ParseError(f"8-bit character where {what} was expected.")
            raise ParseError(f"Invalid character {chr(c)!r} in {what}.")
        self.pos = m.end()
        return m.group()

    def tag(self) -> str:
        return self._run(TAG_RUN, "tag").decode("ascii")

    def atom(self, what: str = "atom") -> str:
        raw = self._run(ATOM_RUN, what)
        self._no_8bit_tail(what)
        return raw.decode("ascii")

    def _no_8bit_tail(self, what: str) -> None:
        c = self.peek()
        if c == 0 or c >= 0x80:
            kind = "NUL" if c == 0 else "8-bit"
            raise ParseError(f"{kind} character in {what}.")

    def quoted(self, what: str) -> bytes:
        self.expect(b'"', f"a quoted {what}")
        out = bytearray()
        while True:
            m = _QUOTED_RUN.match(self.data, self.pos)
            if m is not None:
                out += m.group()
                self.pos = m.end()
            c = self.peek()
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                nxt = self.data[self.pos + 1 : self.pos + 2]
                if nxt not in (b'"', b"\\"):
                    raise ParseError(f'Invalid escape in quoted {what}: only \\\\ and \\" exist.')
                out += nxt
                self.pos += 2
                continue
            if c in (-1, 0x0D, 0x0A):
                raise ParseError(f"Unterminated quoted {what}.")
            if c == 0:
                raise ParseError(f"NUL character in quoted {what}.")
            raise ParseError(f"8-bit character in quoted {what}; use a literal.")

    def literal(self, what: str) -> bytes:
        m = LITERAL_HEAD.match(self.data, self.pos)
        if m is None:
            raise ParseError(f"Invalid literal for {what}.")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise ParseError(f"Literal for {what} is shorter than announced.")
        self.pos = start + size
        value = self.data[start : self.pos]
        if b"\x00" in value:
            raise ParseError(f"NUL character in literal {what}.")
        return value

    def string(self, what: str) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted(what)
        if c == 0x7B:
            return self.literal(what)
        if c in (-1, 0x0D):
            raise ParseError(f"Missing {what}.")
        raise ParseError(f"Expected a quoted string or a literal for {what}.")

    def astring(self, what: str) -> bytes:
        # astring = 1*ASTRING-CHAR / string
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string(what)
        raw = self._run(ASTRING_RUN, what)
        self._no_8bit_tail(what)
        return raw

    def nstring_or_nil(self, what: str) -> bytes | None:
        if self.data[self.pos : self.pos + 3].upper() == b"NIL" and self.data[
            self.pos + 3 : self.pos + 4
        ] in (b" ", b")", b"\r"):
            self.pos += 3
            return None
        return self.string(what)

    def utf8(self, what: str) -> str:
        raw = self.astring(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"{what.capitalize()} is not valid UTF-8.") from exc

    def mailbox(self, what: str = "mailbox name") -> str:
        """mailbox = "INBOX" / astring, modified UTF-7 decoded, INBOX folded."""
        return canonical_mailbox(self._mutf7(self.astring(what), what))

    def list_mailbox(self, what: str = "mailbox pattern") -> str:
        # list-mailbox = 1*list-char / string
        c = self.peek()
        raw = self.string(what) if c in (0x22, 0x7B) else self._run(_LIST_RUN, what)
        if c not in (0x22, 0x7B):
            self._no_8bit_tail(what)
        return self._mutf7(raw, what)

    @staticmethod
    def _mutf7(raw: bytes, what: str) -> str:
        try:
            return mutf7.decode(raw.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise ParseError(f"8-bit characters in {what}; use modified UTF-7.") from exc
        except mutf7.MUTF7Error as exc:
            raise ParseError(f"Invalid {what}: {exc}.") from exc

    def paren_atoms(self, what: str, *, allow_backslash: bool = False) -> tuple[str, ...]:
        """A parenthesised list of atoms, e.g. STATUS items or LIST options."""
        self.expect(b"(", f"'(' to open the {what}")
        items: list[str] = []
        if self.peek() == 0x29:
            self.pos += 1
            return ()
        while True:
            if allow_backslash and self.peek() == 0x5C:
                self.pos += 1
                items.append("\\" + self.atom(what))
            else:
                items.append(self.atom(what))
            c = self.peek()
            if c == 0x29:
                self.pos += 1
                return tuple(items)
            if c == 0x20:
                self.sp(what)
                continue
            if c in (-1, 0x0D):
                raise ParseError(f"Unterminated {what}.")
            raise ParseError(f"Invalid character {chr(c)!r} in {what}.")
