"""The receiving side of the HAProxy PROXY protocol, versions 1 and 2, sans-IO.

A proxy in front of refd opens each connection with a header naming the real
client.  The server loop feeds :func:`parse_proxy_header` everything it has
read so far; the answer is :data:`NEED_MORE`, or ``(ProxyInfo, consumed)``,
or :class:`ProxyProtocolError`.  Bytes after ``consumed`` are the client's
first IMAP bytes and belong to the session.  Nothing here waits or does I/O;
the caller owns the buffer and the deadline (spec §2: "at least 3 seconds").

The spec is https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt.

How it decides, from as few bytes as possible (§2.1: "abort the connection as
soon as possible"):

* The first byte picks the version: ``P`` starts the v1 line ``PROXY`` SP,
  CR starts the v2 signature; anything else is an error at once, so a client
  that sends ``a1 LOGIN`` to a PROXY-only listener fails on its first byte.
* v1 (§2.1) is one US-ASCII line of at most 107 bytes, CRLF included.  While
  the CRLF is missing, what has arrived must still be able to start a valid
  line (the family keyword, address characters, complete fields, port
  digits), else it fails now rather than after 107 bytes.  A lone CR or LF
  never ends the line.  Addresses are in canonical form: IPv4 is four
  decimal numbers 0..255 without leading zeros; IPv6 is hex groups with at
  most one ``::`` (a trailing dotted quad, as ``inet_ntop`` writes for
  IPv4-mapped addresses, is accepted).  Ports are 0..65535 without leading
  zeros.  ``UNKNOWN`` may be followed by SP and anything up to the CRLF,
  which is ignored: the caller uses the real connection endpoints.
* v2 (§2.2) is a 16-byte fixed part (signature, version/command, family,
  length) and ``length`` more bytes.  Version, command, family and length
  are checked as soon as each byte arrives; the length is capped (by
  default 4096 bytes after the fixed part) so a bogus length fails at once.
  LOCAL (health checks) means "use the real endpoints": its family is
  ignored and it has no addresses.  PROXY with an UNSPEC family (or with an
  AF_UNIX family, which refd cannot use as a client address) also reports no
  addresses, as §2.2 allows for families a receiver does not implement.  The
  bytes after the address block are TLVs (§2.2); each must fit exactly.  A
  PP2_TYPE_CRC32C TLV (§2.2.3) is verified over the whole header with its
  own value zeroed; the checksum is CRC32c (Castagnoli, RFC 4960 App. B).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "NEED_MORE",
    "PP2_TYPE_CRC32C",
    "V1_MAX_BYTES",
    "V2_FIXED_BYTES",
    "V2_MAX_BYTES",
    "V2_SIGNATURE",
    "ProxyInfo",
    "ProxyProtocolError",
    "crc32c",
    "parse_proxy_header",
]

#: §2.1: "PROXY UNKNOWN" + two longest IPv6 addresses and ports + CRLF.
V1_MAX_BYTES: Final = 107
#: §2.2: the 12-byte v2 signature.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: §2.2: signature, ver_cmd, fam and the 2-byte length.
V2_FIXED_BYTES: Final = 16
#: The largest whole v2 header accepted by default (the spec allows 16 + 65535).
V2_MAX_BYTES: Final = V2_FIXED_BYTES + 4096
#: §2.2: registered TLV type of the checksum (0x04 is PP2_TYPE_NOOP).
PP2_TYPE_CRC32C: Final = 0x03

_V1_PREFIX = b"PROXY "
_V1_FAMILIES = (b"TCP4", b"TCP6", b"UNKNOWN")

# §2.2, byte 13: high nibble version (must be 2), low nibble command.
_V2_VERSION = 2
_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}
# §2.2, byte 14: family (high nibble, 0..3) and transport (low nibble, 0..2).
# Combinations not listed (an UNSPEC nibble) carry no address block.
_V2_FAMILIES: dict[int, tuple[str, int]] = {
    0x11: ("TCP4", 12),  # 2*4 + 2*2
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),  # 2*16 + 2*2
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),  # 2*108
    0x32: ("UNIX_DGRAM", 216),
}
_V2_MAX_FAMILY = 0x3
_V2_MAX_TRANSPORT = 0x2
_TLV_HEAD = 3  # §2.2 struct pp2_tlv: type, length_hi, length_lo

# §2.1: "exactly 4 integers in the range [0..255] ... Heading zeroes are not
# permitted"; the range is checked after the match.
_DEC_OCTET = rb"(?:0|[1-9][0-9]{0,2})"
_IPV4 = re.compile(_DEC_OCTET + rb"(?:\." + _DEC_OCTET + rb"){3}")
_OCTET = re.compile(_DEC_OCTET)
# §2.1: "sets of 4 hexadecimal digits (upper or lower case) delimited by
# colons ... one double colon"; ipaddress checks the structure afterwards.
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]+")
_IPV6_MAX_TEXT = 45  # eight groups, or six and a dotted quad
# §2.1: "a decimal integer in the range [0..65535] ... no heading zeroes".
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_PORT_MAX = 65535


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """What a PROXY header said.

    ``family`` is ``TCP4``, ``TCP6`` or ``UNKNOWN`` for v1; for v2 it is
    ``TCP4``, ``UDP4``, ``TCP6``, ``UDP6``, ``UNIX``, ``UNIX_DGRAM`` or
    ``UNSPEC`` (always ``UNSPEC`` for LOCAL, whose family is ignored).
    ``source`` and ``destination`` are ``(address, port)`` with the address in
    Python's canonical text form, or None when the caller must use the real
    connection endpoints (v1 UNKNOWN, v2 LOCAL, UNSPEC and UNIX).
    ``tlvs`` are the v2 TLVs in wire order, raw and unfiltered.
    """

    version: int
    command: str
    family: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header; close the connection."""


class _NeedMore(enum.Enum):
    # An enum member, not a plain object, so that ``result is NEED_MORE``
    # narrows the result's type for mypy.
    NEED_MORE = "NEED_MORE"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


#: The header is incomplete: read more and call again with the whole buffer.
NEED_MORE: Final = _NeedMore.NEED_MORE

Result = tuple[ProxyInfo, int] | Literal[_NeedMore.NEED_MORE]


def parse_proxy_header(data: bytes | bytearray, *, max_v2_bytes: int = V2_MAX_BYTES) -> Result:
    """Parse the PROXY header at the start of ``data`` (see the module docstring).

    Returns ``(info, consumed)``, or :data:`NEED_MORE` while the bytes so far
    can still start a valid header; raises :class:`ProxyProtocolError` as
    soon as they cannot.  ``max_v2_bytes`` caps a v2 header, fixed part
    included.
    """
    buf = bytes(data[: max(V1_MAX_BYTES, max_v2_bytes)])
    if not buf:
        return NEED_MORE
    if buf[0] == _V1_PREFIX[0]:
        return _parse_v1(buf)
    if buf[0] == V2_SIGNATURE[0]:
        return _parse_v2(buf, max_v2_bytes)
    raise _not_proxy(buf)


def _show(raw: bytes, limit: int = 40) -> str:
    """Client bytes for a log line: a repr, shortened."""
    return repr(raw[:limit]) + ("..." if len(raw) > limit else "")


def _not_proxy(buf: bytes) -> ProxyProtocolError:
    """Describe what came instead of a header, without copying it: a client
    that speaks at once may have sent ``LOGIN user password``."""
    # 0x16: a TLS record of type handshake (RFC 8446 §5.1)
    what = "a TLS handshake" if buf[0] == 0x16 else f"something else (first octet {buf[0]:#04x})"
    return ProxyProtocolError(
        f"not a PROXY header: the connection starts with {len(buf)} octets of {what}"
    )


# -- version 1 (§2.1) ---------------------------------------------------------


def _parse_v1(buf: bytes) -> Result:
    n = min(len(buf), len(_V1_PREFIX))
    if buf[:n] != _V1_PREFIX[:n]:
        raise _not_proxy(buf)
    lf = buf.find(b"\n", 0, V1_MAX_BYTES)
    if lf >= 0:
        return _parse_v1_line(buf[: lf + 1]), lf + 1
    _check_v1_start(buf[:V1_MAX_BYTES])  # the most telling error first
    if len(buf) >= V1_MAX_BYTES:
        raise ProxyProtocolError(f"PROXY v1: no CRLF within the first {V1_MAX_BYTES} bytes")
    return NEED_MORE


def _parse_v1_line(line: bytes) -> ProxyInfo:
    """Parse one line that ends in LF and starts with ``PROXY`` SP."""
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise ProxyProtocolError(
            f"PROXY v1: the line must end in CRLF, with no other CR or LF: {_show(line)}"
        )
    body = line[len(_V1_PREFIX) : -2]
    family, sep, rest = body.partition(b" ")
    if family == b"UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF"
        return ProxyInfo(1, "PROXY", "UNKNOWN", None, None)
    if family not in _V1_FAMILIES:
        raise ProxyProtocolError(f"PROXY v1: unknown family {_show(family)}")
    fields = rest.split(b" ")
    if not sep or len(fields) != 4:
        raise _v1_shape_error(family, line)
    src, dst, sport, dport = fields
    return ProxyInfo(
        1,
        "PROXY",
        family.decode(),
        (_v1_address(family, src, "source"), _v1_port(sport, "source")),
        (_v1_address(family, dst, "destination"), _v1_port(dport, "destination")),
    )


def _v1_shape_error(family: bytes, line: bytes) -> ProxyProtocolError:
    return ProxyProtocolError(
        f"PROXY v1: expected 'PROXY {family.decode()} <src> <dst> <sport> <dport>',"
        f" got {_show(line)}"
    )


def _v1_address(family: bytes, raw: bytes, what: str) -> str:
    try:
        if family == b"TCP4":
            if _IPV4.fullmatch(raw):
                return str(ipaddress.IPv4Address(raw.decode()))
        elif _IPV6_CHARS.fullmatch(raw) and len(raw) <= _IPV6_MAX_TEXT:
            return ipaddress.IPv6Address(raw.decode()).compressed
    except ValueError:
        pass
    raise ProxyProtocolError(f"PROXY v1: bad {what} address {_show(raw)} for {family.decode()}")


def _v1_port(raw: bytes, what: str) -> int:
    if _PORT.fullmatch(raw) and int(raw) <= _PORT_MAX:
        return int(raw)
    raise ProxyProtocolError(f"PROXY v1: bad {what} port {_show(raw)}")


def _check_v1_start(buf: bytes) -> None:
    """Raise unless ``buf`` (no LF in it) can start a valid line."""
    cr = buf.find(b"\r")
    if cr >= 0:
        if cr != len(buf) - 1:
            raise ProxyProtocolError(f"PROXY v1: CR not followed by LF in {_show(buf)}")
        # Everything but the LF is here: judge the line now.
        _parse_v1_line(buf + b"\n")
        return
    family, sep, tail = buf[len(_V1_PREFIX) :].partition(b" ")
    if not sep:
        if not any(name.startswith(family) for name in _V1_FAMILIES):
            raise ProxyProtocolError(f"PROXY v1: unknown family {_show(family)}")
        return
    if family == b"UNKNOWN":
        return
    if family not in _V1_FAMILIES:
        raise ProxyProtocolError(f"PROXY v1: unknown family {_show(family)}")
    fields = tail.split(b" ")
    if len(fields) > 4:
        raise _v1_shape_error(family, buf)
    *complete, partial = fields
    for i, raw in enumerate(complete):
        what = "source" if i % 2 == 0 else "destination"
        if i < 2:
            _v1_address(family, raw, what)
        else:
            _v1_port(raw, what)
    i = len(complete)
    what = "source" if i % 2 == 0 else "destination"
    ok = (
        _address_start_ok(family, partial)
        if i < 2
        else (not partial or (_PORT.fullmatch(partial) is not None and int(partial) <= _PORT_MAX))
    )
    if not ok:
        kind = "address" if i < 2 else "port"
        raise ProxyProtocolError(f"PROXY v1: bad {what} {kind} {_show(partial)}")


def _address_start_ok(family: bytes, raw: bytes) -> bool:
    """Whether ``raw`` can start a canonical address of ``family``."""
    if family == b"TCP6":
        return not raw or (_IPV6_CHARS.fullmatch(raw) is not None and len(raw) <= _IPV6_MAX_TEXT)
    *octets, last = raw.split(b".")
    return (
        len(octets) <= 3
        and all(_OCTET.fullmatch(o) and int(o) <= 255 for o in octets)
        and (not last or (_OCTET.fullmatch(last) is not None and int(last) <= 255))
    )


# -- version 2 (§2.2) ---------------------------------------------------------


def _parse_v2(buf: bytes, max_v2_bytes: int) -> Result:
    n = min(len(buf), len(V2_SIGNATURE))
    if buf[:n] != V2_SIGNATURE[:n]:
        raise _not_proxy(buf)
    if len(buf) <= len(V2_SIGNATURE):
        return NEED_MORE
    ver_cmd = buf[12]
    if ver_cmd >> 4 != _V2_VERSION:
        raise ProxyProtocolError(f"PROXY v2: version {ver_cmd >> 4} (byte 13 is {ver_cmd:#04x})")
    command = _COMMANDS.get(ver_cmd & 0x0F)
    if command is None:
        raise ProxyProtocolError(f"PROXY v2: unassigned command {ver_cmd & 0x0F:#x}")
    if len(buf) < 14:
        return NEED_MORE
    fam = buf[13]
    if fam >> 4 > _V2_MAX_FAMILY or fam & 0x0F > _V2_MAX_TRANSPORT:
        raise ProxyProtocolError(f"PROXY v2: unknown address family/transport {fam:#04x}")
    if len(buf) < V2_FIXED_BYTES:
        return NEED_MORE
    (length,) = struct.unpack_from("!H", buf, 14)
    total = V2_FIXED_BYTES + length
    if total > max_v2_bytes:
        raise ProxyProtocolError(f"PROXY v2: header of {total} bytes exceeds {max_v2_bytes}")
    family, address_bytes = _V2_FAMILIES.get(fam, ("UNSPEC", 0))
    if command == "PROXY" and length < address_bytes:
        raise ProxyProtocolError(
            f"PROXY v2: {family} needs {address_bytes} address bytes, length is {length}"
        )
    if len(buf) < total:
        return NEED_MORE
    header = buf[:total]
    tlv_start = V2_FIXED_BYTES + address_bytes
    if command == "LOCAL":
        # "discard the protocol block including the family which is ignored";
        # TLVs can only be found when the family's address block fits.
        tlvs = _v2_tlvs(header, tlv_start) if length >= address_bytes else ()
        return ProxyInfo(2, "LOCAL", "UNSPEC", None, None, tlvs), total
    source, destination = _v2_addresses(family, header[V2_FIXED_BYTES:tlv_start])
    tlvs = _v2_tlvs(header, tlv_start)
    return ProxyInfo(2, "PROXY", family, source, destination, tlvs), total


def _v2_addresses(
    family: str, block: bytes
) -> tuple[tuple[str, int], tuple[str, int]] | tuple[None, None]:
    if family in ("TCP4", "UDP4"):
        src4, dst4, sport, dport = struct.unpack("!4s4sHH", block)
        return (
            (str(ipaddress.IPv4Address(src4)), sport),
            (str(ipaddress.IPv4Address(dst4)), dport),
        )
    if family in ("TCP6", "UDP6"):
        src6, dst6, sport, dport = struct.unpack("!16s16sHH", block)
        return (
            (ipaddress.IPv6Address(src6).compressed, sport),
            (ipaddress.IPv6Address(dst6).compressed, dport),
        )
    # UNSPEC carries no address; AF_UNIX paths are no client address for refd.
    return None, None


def _v2_tlvs(header: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    """Split ``header[offset:]`` into TLVs and verify a CRC32c TLV if present."""
    tlvs: list[tuple[int, bytes]] = []
    crc_at: list[int] = []
    while offset < len(header):
        if len(header) - offset < _TLV_HEAD:
            raise ProxyProtocolError(
                f"PROXY v2: {len(header) - offset} stray bytes where a TLV should start"
            )
        kind, size = struct.unpack_from("!BH", header, offset)
        start = offset + _TLV_HEAD
        if start + size > len(header):
            raise ProxyProtocolError(
                f"PROXY v2: TLV type {kind:#04x} of {size} bytes overruns the header"
                f" ({len(header) - start} left)"
            )
        if kind == PP2_TYPE_CRC32C:
            crc_at.append(start)
            if size != 4:
                raise ProxyProtocolError(f"PROXY v2: CRC32c TLV of {size} bytes, not 4")
        tlvs.append((kind, header[start : start + size]))
        offset = start + size
    if len(crc_at) > 1:
        raise ProxyProtocolError("PROXY v2: more than one CRC32c TLV")
    if crc_at:
        at = crc_at[0]
        (sent,) = struct.unpack_from("!I", header, at)
        computed = crc32c(header[:at] + b"\x00\x00\x00\x00" + header[at + 4 :])
        if sent != computed:
            raise ProxyProtocolError(
                f"PROXY v2: CRC32c mismatch (header says {sent:#010x}, computed {computed:#010x})"
            )
    return tuple(tlvs)


# -- CRC32c (Castagnoli), RFC 4960 Appendix B / RFC 3720 §B.4 ------------------

_CRC32C_POLY = 0x82F63B78  # 0x1EDC6F41 bit-reversed: the reflected form


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes | bytearray) -> int:
    """The CRC32c of ``data`` (reflected, initial and final XOR 0xFFFFFFFF)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
