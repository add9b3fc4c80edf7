"""Modified UTF-7 (RFC 3501 §5.1.3), the wire form of IMAP mailbox names.

Printable US-ASCII except ``&`` stands for itself; ``&`` is ``&-``; any other
run of characters is UTF-16BE, base64 with ``,`` in place of ``/`` and no
padding, between ``&`` and ``-``.  Decoding is strict, because two spellings
of one name would let a client reach a mailbox the routing table does not
expect: a shifted run must not encode printable ASCII, must not be empty
(except ``&-``), must not follow another shifted run directly, and must carry
no stray bits.
"""

from __future__ import annotations

import binascii
import re

__all__ = ["MUTF7Error", "decode", "encode"]


class MUTF7Error(ValueError):
    """A mailbox name is not valid modified UTF-7."""


def _printable(c: str) -> bool:
    return "\x20" <= c <= "\x7e"


#: printable US-ASCII but "&": what stands for itself
_PLAIN = re.compile("[\x20-\x25\x27-\x7e]*")


def encode(name: str) -> str:
    """Encode a mailbox name for the wire."""
    if _PLAIN.fullmatch(name):
        return name  # the common case: nothing to shift
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be", "surrogatepass")
            b64 = binascii.b2a_base64(raw, newline=False).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for c in name:
        if _printable(c):
            flush()
            out.append("&-" if c == "&" else c)
        else:
            run.append(c)
    flush()
    return "".join(out)


def decode(wire: str) -> str:
    """Decode a wire mailbox name; raise :class:`MUTF7Error` if it is not valid."""
    if "&" not in wire:
        for c in wire:
            if not _printable(c):
                raise MUTF7Error("mailbox name has a character outside printable US-ASCII")
        return wire
    out: list[str] = []
    i = 0
    n = len(wire)
    last_shift_end = -1
    while i < n:
        c = wire[i]
        if not _printable(c):
            raise MUTF7Error("mailbox name has a character outside printable US-ASCII")
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = wire.find("-", i + 1)
        if end < 0:
            raise MUTF7Error("unterminated '&' shift in modified UTF-7")
        if end == i + 1:
            out.append("&")
            i = end + 1
            continue
        if last_shift_end == i:
            raise MUTF7Error("two adjacent shifted runs in modified UTF-7")
        chunk = wire[i + 1 : end]
        if "/" in chunk or "=" in chunk:
            raise MUTF7Error("'/' or '=' inside a modified UTF-7 shift")
        b64 = chunk.replace(",", "/")
        pad = -len(b64) % 4
        if pad == 3:
            raise MUTF7Error("truncated modified UTF-7 shift")
        try:
            raw = binascii.a2b_base64((b64 + "=" * pad).encode("ascii"), strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise MUTF7Error("bad base64 in modified UTF-7 shift") from exc
        if len(raw) % 2:
            raise MUTF7Error("modified UTF-7 shift is not whole UTF-16 units")
        # Stray bits: re-encoding must give back the same text.
        if binascii.b2a_base64(raw, newline=False).decode("ascii").rstrip("=") != b64:
            raise MUTF7Error("modified UTF-7 shift has stray bits")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise MUTF7Error("modified UTF-7 shift is not valid UTF-16") from exc
        if any(_printable(ch) for ch in text):
            raise MUTF7Error("modified UTF-7 shift encodes printable ASCII")
        out.append(text)
        i = end + 1
        last_shift_end = i
    return "".join(out)
