"""Server responses as values, and their wire form.

A response is a frozen dataclass; :func:`to_bytes` turns it into the exact
octets to send (RFC 3501 §7).  Response codes (``[REFERRAL ...]``,
``[CAPABILITY ...]``, RFC 5530's ``[AUTHENTICATIONFAILED]`` ...) are carried
as their text between the brackets, built by the small helpers below so the
grammar lives here and nowhere else.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from refd.protocol import mutf7
from refd.protocol.grammar import ATOM_CHARS

__all__ = [
    "Bye",
    "Cond",
    "Continuation",
    "Response",
    "Tagged",
    "Untagged",
    "UntaggedStatus",
    "id_response",
    "list_response",
    "namespace_response",
    "quote",
    "referral_code",
    "to_bytes",
    "wire_mailbox",
]


class Cond(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    PREAUTH = "PREAUTH"


@dataclass(frozen=True, slots=True)
class Tagged:
    """``tag OK|NO|BAD [code] text`` — the end of a command."""

    tag: str
    cond: Cond
    text: str
    code: str | None = None

    def __init__(
        self,
        tag: str,
        cond: Cond,
        text: str,
        code: str | None = None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "cond", cond)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "code", code)


@dataclass(frozen=True, slots=True)
class UntaggedStatus:
    """``* OK|NO|BAD|PREAUTH [code] text`` (greeting, warnings, bad input)."""

    cond: Cond
    text: str
    code: str | None = None

    def __init__(
        self,
        cond: Cond,
        text: str,
        code: str | None = None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "cond", cond)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "code", code)


@dataclass(frozen=True, slots=True)
class Bye:
    """``* BYE [code] text``: the server is about to close the connection."""

    text: str
    code: str | None = None

    def __init__(
        self,
        text: str,
        code: str | None = None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "code", code)


@dataclass(frozen=True, slots=True)
class Untagged:
    """``* <data>``: server data such as CAPABILITY, LIST, ID, NAMESPACE."""

    data: str


@dataclass(frozen=True, slots=True)
class Continuation:
    """``+ text``: go on (send the literal, or the next SASL response)."""

    text: str = ""


Response = Tagged | UntaggedStatus | Bye | Untagged | Continuation

_SAFE_TEXT = str.maketrans({"\r": " ", "\n": " ", "\x00": " "})


def _safe(text: str) -> str:
    """``text`` with CR, LF and NUL replaced by spaces.

    Three ``in`` scans first: ``str.translate`` with a mapping costs ~3 us
    on a referral's text even when nothing is replaced, the scans ~0.2 us
    (two responses per PLAIN session: ~12 us of its CPU).
    """
    if "\r" in text or "\n" in text or "\x00" in text:
        return text.translate(_SAFE_TEXT)
    return text


def _text(code: str | None, text: str) -> str:
    text = _safe(text) or "."
    return f"[{_safe(code)}] {text}" if code else text


def to_bytes(response: Response) -> bytes:
    """The exact wire form of one response, CRLF included."""
    # ``type() is`` tests and ``cond._value_`` (the member's value as stored,
    # not through Enum's ``value`` property): 1.1 us a response, against 2.8
    # us for a ``match`` over class patterns and ``.value``, with four
    # responses in a PLAIN session.
    if type(response) is Tagged:
        line = f"{response.tag} {response.cond._value_} {_text(response.code, response.text)}"
    elif type(response) is UntaggedStatus:
        line = f"* {response.cond._value_} {_text(response.code, response.text)}"
    elif type(response) is Bye:
        line = f"* BYE {_text(response.code, response.text)}"
    elif type(response) is Untagged:
        line = f"* {_safe(response.data)}"
    else:
        assert type(response) is Continuation
        line = f"+ {_safe(response.text)}" if response.text else "+ "
    # IMAP4rev1 response text is 7-bit (RFC 3501 §9: TEXT-CHAR); anything
    # else (a host name from a config, say) is replaced, never sent raw.
    return line.encode("ascii", "replace") + b"\r\n"


def quote(value: str) -> str:
    """A quoted string (RFC 3501 §4.3); the value must be 7-bit without CR/LF."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# one pass in C, not a loop per character: a LIST may answer with every
# published name
_ATOM = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(ATOM_CHARS)) + "]+")


def wire_mailbox(name: str) -> str:
    """A mailbox name as the wire wants it: modified UTF-7, atom or quoted."""
    encoded = mutf7.encode(name)
    if _ATOM.fullmatch(encoded) and encoded.upper() != "NIL":
        return encoded
    return quote(encoded)


def referral_code(urls: Iterable[str]) -> str:
    """``REFERRAL url ...`` (RFC 2193 §3, RFC 2221 §3); URLs are preferred first."""
    return "REFERRAL " + " ".join(urls)


def list_response(kind: str, flags: Iterable[str], delimiter: str, name: str) -> Untagged:
    """``* LIST (flags) "delim" name`` (or LSUB, RLIST, RLSUB: same shape)."""
    return Untagged(f"{kind} ({' '.join(flags)}) {quote(delimiter)} {wire_mailbox(name)}")


def _ns_part(entries: tuple[tuple[str, str], ...]) -> str:
    if not entries:
        return "NIL"
    return "(" + "".join(f"({quote(mutf7.encode(p))} {quote(d)})" for p, d in entries) + ")"


def namespace_response(
    personal: tuple[tuple[str, str], ...],
    other: tuple[tuple[str, str], ...],
    shared: tuple[tuple[str, str], ...],
) -> Untagged:
    """RFC 2342 §5: ``* NAMESPACE personal other shared``."""
    return Untagged(f"NAMESPACE {_ns_part(personal)} {_ns_part(other)} {_ns_part(shared)}")


def id_response(fields: Iterable[tuple[str, str]]) -> Untagged:
    """RFC 2971 §3.2: ``* ID ("name" "refd" ...)``."""
    body = " ".join(f"{quote(k)} {quote(v)}" for k, v in fields)
    return Untagged(f"ID ({body})" if body else "ID NIL")
