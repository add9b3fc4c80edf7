"""PROXY protocol v1/v2 receiver: byte-exact tables, byte-at-a-time feeding, fuzzing.

Headers are written out from the spec (proxy-protocol.txt §2.1, §2.2), not
from the module's constants, and CRC32c is recomputed here bit by bit.
"""

from __future__ import annotations

import ast
import ipaddress
import pathlib
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refd.proxy_protocol import (
    NEED_MORE,
    ProxyInfo,
    ProxyProtocolError,
    crc32c,
    parse_proxy_header,
)

IMAP = b"a1 CAPABILITY\r\n"

# -- helpers written from the spec --------------------------------------------

# §2.2: "\x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49 \x54 \x0A"
SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
LOCAL, PROXY = 0x20, 0x21  # version 2 in the high nibble, command in the low one
UNSPEC, TCP4, UDP4, TCP6, UDP6, UNIX_STREAM, UNIX_DGRAM = 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32
T_ALPN, T_AUTHORITY, T_CRC32C, T_NOOP, T_UNIQUE_ID, T_SSL = 0x01, 0x02, 0x03, 0x04, 0x05, 0x20


def v2(ver_cmd: int, fam: int, body: bytes, *, length: int | None = None) -> bytes:
    """§2.2: signature, ver_cmd, fam, big-endian length, then the body."""
    n = len(body) if length is None else length
    return SIG + struct.pack("!BBH", ver_cmd, fam, n) + body


def tlv(kind: int, value: bytes) -> bytes:
    """§2.2 struct pp2_tlv: type, length_hi, length_lo, value."""
    return struct.pack("!BH", kind, len(value)) + value


def ip4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack(
        "!4s4sHH",
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
        sport,
        dport,
    )


def ip6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack(
        "!16s16sHH",
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
        sport,
        dport,
    )


def crc32c_bitwise(data: bytes) -> int:
    """RFC 4960 App. B CRC32c, one bit at a time (independent of the module)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def v2_with_crc(
    ver_cmd: int, fam: int, addresses: bytes, before: bytes = b"", after: bytes = b""
) -> bytes:
    """§2.2.3: zero the checksum field, checksum the whole header, fill it in."""
    zeroed = v2(ver_cmd, fam, addresses + before + tlv(T_CRC32C, bytes(4)) + after)
    crc = struct.pack("!I", crc32c_bitwise(zeroed))
    return v2(ver_cmd, fam, addresses + before + tlv(T_CRC32C, crc) + after)


def parsed(data: bytes, **kwargs: int) -> tuple[ProxyInfo, int]:
    """The result for a complete header."""
    result = parse_proxy_header(data, **kwargs)
    assert result is not NEED_MORE
    return result


def first_failure(data: bytes) -> int | None:
    """Feed ``data`` one byte more at a time; the prefix length that first raises.

    Also checks that before it, every prefix was NEED_MORE, and after it,
    every longer prefix raises too.
    """
    failed_at = None
    for k in range(len(data) + 1):
        try:
            result = parse_proxy_header(data[:k])
        except ProxyProtocolError:
            if failed_at is None:
                failed_at = k
            continue
        assert failed_at is None, f"prefix of {k} bytes parsed after {failed_at} failed"
        assert result is NEED_MORE, f"prefix of {k} bytes gave {result!r}"
    return failed_at


# -- version 1 (§2.1) ---------------------------------------------------------

FFFF6 = ":".join(["ffff"] * 8)

V1_VALID = [
    pytest.param(
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyInfo(1, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), ()),
        id="tcp4-spec-example",
    ),
    pytest.param(
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxyInfo(1, "PROXY", "TCP4", ("255.255.255.255", 65535), ("255.255.255.255", 65535)),
        id="tcp4-longest",
    ),
    pytest.param(
        b"PROXY TCP4 0.0.0.0 10.0.0.0 0 0\r\n",
        ProxyInfo(1, "PROXY", "TCP4", ("0.0.0.0", 0), ("10.0.0.0", 0)),
        id="tcp4-zeros",
    ),
    pytest.param(
        f"PROXY TCP6 {FFFF6} {FFFF6} 65535 65535\r\n".encode(),
        ProxyInfo(1, "PROXY", "TCP6", (FFFF6, 65535), (FFFF6, 65535)),
        id="tcp6-longest",
    ),
    pytest.param(
        b"PROXY TCP6 2001:DB8::1 ::1 1234 143\r\n",
        ProxyInfo(1, "PROXY", "TCP6", ("2001:db8::1", 1234), ("::1", 143)),
        id="tcp6-upper-case-canonicalised",
    ),
    pytest.param(
        b"PROXY TCP6 2001:db8:0:0:0:0:0:1 :: 1 2\r\n",
        ProxyInfo(1, "PROXY", "TCP6", ("2001:db8::1", 1), ("::", 2)),
        id="tcp6-uncompressed",
    ),
    pytest.param(
        # what inet_ntop writes for an IPv4-mapped address
        b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n",
        ProxyInfo(1, "PROXY", "TCP6", ("::ffff:c000:201", 1), ("::ffff:c000:202", 2)),
        id="tcp6-v4-mapped",
    ),
    pytest.param(
        b"PROXY UNKNOWN\r\n",
        ProxyInfo(1, "PROXY", "UNKNOWN", None, None),
        id="unknown-short",
    ),
    pytest.param(
        f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n".encode(),
        ProxyInfo(1, "PROXY", "UNKNOWN", None, None),
        id="unknown-worst-case-107",
    ),
    pytest.param(
        b"PROXY UNKNOWN anything \x01 at all\r\n",
        ProxyInfo(1, "PROXY", "UNKNOWN", None, None),
        id="unknown-ignores-the-rest",
    ),
]


@pytest.mark.parametrize(("header", "info"), V1_VALID)
def test_v1_valid(header: bytes, info: ProxyInfo) -> None:
    assert len(header) <= 107
    assert parse_proxy_header(header) == (info, len(header))
    assert parse_proxy_header(bytearray(header)) == (info, len(header))


def test_v1_worst_case_is_exactly_107_bytes() -> None:
    assert len(f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n") == 107


@pytest.mark.parametrize(("header", "info"), V1_VALID)
def test_v1_split_at_every_byte(header: bytes, info: ProxyInfo) -> None:
    stream = header + IMAP
    for k in range(len(stream) + 1):
        result = parse_proxy_header(stream[:k])
        if k < len(header):
            assert result is NEED_MORE, k
        else:
            assert result == (info, len(header)), k
    _, used = parsed(stream)
    assert stream[used:] == IMAP


V1_INVALID = [
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "family", id="bad-family"),
    pytest.param(b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "family", id="lowercase-family"),
    pytest.param(b"PROXY UNKNOWNX\r\n", "family", id="unknown-glued"),
    pytest.param(b"PROXY \r\n", "family", id="no-family"),
    pytest.param(b"PROXY\r\n", "not a PROXY header", id="no-space"),
    pytest.param(b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "source address", id="octet-256"),
    pytest.param(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "source address", id="leading-zero"),
    pytest.param(b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "source address", id="three-octets"),
    pytest.param(b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "source address", id="five-octets"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.x 1 2\r\n", "destination address", id="letter"),
    pytest.param(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source address", id="ipv6-in-tcp4"),
    pytest.param(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "source address", id="ipv4-in-tcp6"),
    pytest.param(b"PROXY TCP6 ::1::2 ::1 1 2\r\n", "source address", id="two-double-colons"),
    pytest.param(b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "source address", id="144-bits"),
    pytest.param(b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", "source address", id="112-bits"),
    pytest.param(b"PROXY TCP6 12345::1 ::1 1 2\r\n", "source address", id="5-hex-digits"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address", id="scope-id"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port", id="port-65536"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "destination port", id="port-zero"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "source port", id="port-negative"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "expected", id="trailing-space"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "expected", id="three-fields"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "expected", id="five-fields"),
    pytest.param(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "expected", id="two-spaces"),
    pytest.param(b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "family", id="tab"),
    pytest.param(b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "family", id="space-before-family"),
    pytest.param(b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY", id="leading-space"),
    pytest.param(b"XPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY", id="leading-garbage"),
    pytest.param(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY", id="lowercase-proxy"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF", id="lf-only"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n", "CR", id="lone-cr"),
    pytest.param(b"PROXY UNKNOWN a\rb\r\n", "CR", id="unknown-lone-cr"),
    pytest.param(b"PROXY UNKNOWN a\nb\r\n", "CRLF", id="unknown-lone-lf"),
    pytest.param(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n", "107", id="no-crlf-in-107"),
    pytest.param(
        f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 655350\r\n".encode(), "107", id="108-byte-line"
    ),
]


@pytest.mark.parametrize(("data", "reason"), V1_INVALID)
def test_v1_invalid(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match=reason):
        parse_proxy_header(data + IMAP)
    assert first_failure(data + IMAP) is not None


# -- version 2 (§2.2) ---------------------------------------------------------

V2_VALID = [
    pytest.param(
        v2(PROXY, TCP4, ip4("192.0.2.1", "198.51.100.2", 54321, 993)),
        ProxyInfo(2, "PROXY", "TCP4", ("192.0.2.1", 54321), ("198.51.100.2", 993), ()),
        id="tcp4",
    ),
    pytest.param(
        SIG + b"\x21\x11\x00\x0c" + b"\x7f\x00\x00\x01\x7f\x00\x00\x01\x00\x00\xff\xff",
        ProxyInfo(2, "PROXY", "TCP4", ("127.0.0.1", 0), ("127.0.0.1", 65535), ()),
        id="tcp4-literal-bytes",
    ),
    pytest.param(
        v2(PROXY, UDP4, ip4("10.0.0.1", "10.0.0.2", 1, 2)),
        ProxyInfo(2, "PROXY", "UDP4", ("10.0.0.1", 1), ("10.0.0.2", 2), ()),
        id="udp4",
    ),
    pytest.param(
        v2(PROXY, TCP6, ip6("2001:db8::1", "2001:db8::2", 40000, 143)),
        ProxyInfo(2, "PROXY", "TCP6", ("2001:db8::1", 40000), ("2001:db8::2", 143), ()),
        id="tcp6",
    ),
    pytest.param(
        v2(PROXY, UDP6, ip6("::1", "::", 1, 2)),
        ProxyInfo(2, "PROXY", "UDP6", ("::1", 1), ("::", 2), ()),
        id="udp6",
    ),
    pytest.param(
        v2(
            PROXY,
            TCP4,
            ip4("192.0.2.1", "192.0.2.2", 1, 2)
            + tlv(T_ALPN, b"imap")
            + tlv(T_AUTHORITY, b"mail.example.com")
            + tlv(T_NOOP, b"")
            + tlv(T_UNIQUE_ID, b"\x00" * 128)
            + tlv(T_SSL, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))
            + tlv(0xE0, b"custom"),
        ),
        ProxyInfo(
            2,
            "PROXY",
            "TCP4",
            ("192.0.2.1", 1),
            ("192.0.2.2", 2),
            (
                (T_ALPN, b"imap"),
                (T_AUTHORITY, b"mail.example.com"),
                (T_NOOP, b""),
                (T_UNIQUE_ID, b"\x00" * 128),
                (T_SSL, b"\x01\x00\x00\x00\x00\x21\x00\x07TLSv1.3"),
                (0xE0, b"custom"),
            ),
        ),
        id="tcp4-tlvs",
    ),
    pytest.param(
        v2(PROXY, TCP6, ip6("::1", "::2", 3, 4) + tlv(T_AUTHORITY, b"x")),
        ProxyInfo(2, "PROXY", "TCP6", ("::1", 3), ("::2", 4), ((T_AUTHORITY, b"x"),)),
        id="tcp6-tlv",
    ),
    pytest.param(
        v2(LOCAL, UNSPEC, b""),
        ProxyInfo(2, "LOCAL", "UNSPEC", None, None, ()),
        id="local",
    ),
    pytest.param(
        v2(LOCAL, UNSPEC, tlv(T_NOOP, b"abc")),
        ProxyInfo(2, "LOCAL", "UNSPEC", None, None, ((T_NOOP, b"abc"),)),
        id="local-tlv",
    ),
    pytest.param(
        # "Receivers MUST always consider this field to skip the appropriate
        # number of bytes and must not assume zero is presented for LOCAL"
        v2(LOCAL, TCP4, ip4("192.0.2.1", "192.0.2.2", 1, 2) + tlv(T_NOOP, b"")),
        ProxyInfo(2, "LOCAL", "UNSPEC", None, None, ((T_NOOP, b""),)),
        id="local-addresses-ignored",
    ),
    pytest.param(
        v2(LOCAL, TCP6, b"\xff" * 5),
        ProxyInfo(2, "LOCAL", "UNSPEC", None, None, ()),
        id="local-short-block-discarded",
    ),
    pytest.param(
        v2(PROXY, UNSPEC, b""),
        ProxyInfo(2, "PROXY", "UNSPEC", None, None, ()),
        id="proxy-unspec",
    ),
    pytest.param(
        v2(PROXY, UNSPEC, tlv(T_UNIQUE_ID, b"id-1")),
        ProxyInfo(2, "PROXY", "UNSPEC", None, None, ((T_UNIQUE_ID, b"id-1"),)),
        id="proxy-unspec-tlv",
    ),
    pytest.param(
        v2(PROXY, 0x10, b""),  # AF_INET with an UNSPEC transport: no address block
        ProxyInfo(2, "PROXY", "UNSPEC", None, None, ()),
        id="proxy-inet-unspec-transport",
    ),
    pytest.param(
        v2(PROXY, UNIX_STREAM, b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")),
        ProxyInfo(2, "PROXY", "UNIX", None, None, ()),
        id="unix-stream",
    ),
    pytest.param(
        v2(PROXY, UNIX_DGRAM, bytes(216) + tlv(T_NOOP, b"")),
        ProxyInfo(2, "PROXY", "UNIX_DGRAM", None, None, ((T_NOOP, b""),)),
        id="unix-dgram",
    ),
    pytest.param(
        v2_with_crc(PROXY, TCP4, ip4("192.0.2.1", "192.0.2.2", 1, 2)),
        None,
        id="tcp4-crc32c",
    ),
    pytest.param(
        v2_with_crc(
            PROXY,
            TCP6,
            ip6("2001:db8::1", "2001:db8::2", 1, 2),
            before=tlv(T_AUTHORITY, b"a"),
            after=tlv(T_UNIQUE_ID, b"u"),
        ),
        None,
        id="tcp6-crc32c-between-tlvs",
    ),
    pytest.param(v2_with_crc(LOCAL, UNSPEC, b""), None, id="local-crc32c"),
    # Captured from haproxy 2.6.12: a health check with send-proxy-v2,
    # check-send-proxy and proxy-v2-options crc32c ...
    pytest.param(
        SIG + b"\x20\x00\x00\x07" + b"\x03\x00\x04\xa9\xb8\x7e\x8f",
        ProxyInfo(2, "LOCAL", "UNSPEC", None, None, ((T_CRC32C, b"\xa9\xb8\x7e\x8f"),)),
        id="haproxy-health-check",
    ),
    # ... and a relayed connection with proxy-v2-options crc32c,unique-id.
    pytest.param(
        SIG
        + b"\x21\x11\x00\x16"
        + b"\x7f\x00\x00\x01\x7f\x00\x00\x01\xa2\xd2\xc5\x89"
        + b"\x03\x00\x04\x80\x23\x14\x41"
        + b"\x05\x00\x00",
        ProxyInfo(
            2,
            "PROXY",
            "TCP4",
            ("127.0.0.1", 41682),
            ("127.0.0.1", 50569),
            ((T_CRC32C, b"\x80\x23\x14\x41"), (T_UNIQUE_ID, b"")),
        ),
        id="haproxy-crc32c-unique-id",
    ),
    pytest.param(
        v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(T_NOOP, bytes(4096 - 12 - 3))),
        None,
        id="largest-accepted",
    ),
]


@pytest.mark.parametrize(("header", "info"), V2_VALID)
def test_v2_valid(header: bytes, info: ProxyInfo | None) -> None:
    got, used = parsed(header)
    assert used == len(header)
    assert got.version == 2
    if info is not None:
        assert got == info


def test_v2_crc32c_tlv_is_reported() -> None:
    header = v2_with_crc(PROXY, TCP4, ip4("192.0.2.1", "192.0.2.2", 1, 2))
    info, _ = parsed(header)
    assert info.tlvs == ((T_CRC32C, header[-4:]),)
    assert info.source == ("192.0.2.1", 1)


@pytest.mark.parametrize(("header", "info"), V2_VALID)
def test_v2_split_at_every_byte(header: bytes, info: ProxyInfo | None) -> None:
    stream = header + IMAP
    whole = parsed(stream)
    assert whole[1] == len(header)
    assert stream[whole[1] :] == IMAP
    for k in range(len(stream) + 1):
        result = parse_proxy_header(stream[:k])
        if k < len(header):
            assert result is NEED_MORE, k
        else:
            assert result == whole, k


def _bad_crc() -> bytes:
    good = v2_with_crc(PROXY, TCP4, ip4("192.0.2.1", "192.0.2.2", 1, 2))
    return good[:-1] + bytes([good[-1] ^ 0x01])


def _tampered_crc() -> bytes:
    good = v2_with_crc(PROXY, TCP4, ip4("192.0.2.1", "192.0.2.2", 1, 2))
    return good[:17] + b"\x63" + good[18:]  # source 192.0.2.1 -> 192.99.2.1


V2_INVALID = [
    pytest.param(_bad_crc(), "CRC32c mismatch", id="crc-wrong"),
    pytest.param(_tampered_crc(), "CRC32c mismatch", id="crc-tampered-address"),
    pytest.param(
        v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(T_CRC32C, b"\0\0\0")),
        "not 4",
        id="crc-short",
    ),
    pytest.param(
        v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(T_CRC32C, bytes(4)) * 2),
        "more than one",
        id="crc-twice",
    ),
    pytest.param(
        v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x02\x00\x05abcd"),
        "overruns",
        id="tlv-truncated",
    ),
    pytest.param(
        v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x02\x00"),
        "stray",
        id="tlv-header-truncated",
    ),
    pytest.param(v2(LOCAL, UNSPEC, b"\x04"), "stray", id="local-tlv-truncated"),
    pytest.param(
        v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(T_NOOP, bytes(4097 - 12 - 3))),
        "exceeds",
        id="length-too-big",
    ),
    pytest.param(v2(PROXY, TCP4, b"", length=0xFFFF), "exceeds", id="length-65535"),
    pytest.param(v2(PROXY, TCP4, bytes(11)), "needs 12", id="tcp4-block-short"),
    pytest.param(v2(PROXY, TCP6, bytes(35)), "needs 36", id="tcp6-block-short"),
    pytest.param(v2(PROXY, UNIX_STREAM, bytes(215)), "needs 216", id="unix-block-short"),
    pytest.param(v2(0x11, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2)), "version 1", id="version-1"),
    pytest.param(v2(0x31, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2)), "version 3", id="version-3"),
    pytest.param(v2(0x01, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2)), "version 0", id="version-0"),
    pytest.param(v2(0x22, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2)), "command", id="command-2"),
    pytest.param(v2(0x2F, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2)), "command", id="command-f"),
    pytest.param(v2(PROXY, 0x41, bytes(12)), "family", id="family-4"),
    pytest.param(v2(PROXY, 0x13, bytes(12)), "family", id="transport-3"),
    pytest.param(v2(LOCAL, 0xFF, b""), "family", id="local-family-f"),
    pytest.param(SIG[:11] + b"\r" + b"\x21\x11\x00\x00", "not a PROXY", id="signature-byte-12"),
    pytest.param(SIG[:4] + b"\x01" + SIG[5:], "not a PROXY", id="signature-byte-5"),
]


@pytest.mark.parametrize(("data", "reason"), V2_INVALID)
def test_v2_invalid(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match=reason):
        parse_proxy_header(data + IMAP)
    assert first_failure(data + IMAP) is not None


def test_v2_cap_is_a_parameter() -> None:
    header = v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(T_NOOP, bytes(100)))
    assert parsed(header)[1] == len(header)
    with pytest.raises(ProxyProtocolError, match="exceeds 64"):
        parse_proxy_header(header, max_v2_bytes=64)
    big = v2(PROXY, TCP4, ip4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(T_NOOP, bytes(20000)))
    assert parsed(big, max_v2_bytes=16 + 65535)[1] == len(big)


# -- failing early ------------------------------------------------------------

EARLY = [
    # (bytes, the prefix length at which it must fail)
    pytest.param(b"a1 LOGIN alice secret\r\n", 1, id="imap-login"),
    pytest.param(b"* OK hello\r\n", 1, id="imap-greeting"),
    pytest.param(b"GET / HTTP/1.1\r\n", 1, id="http"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1, id="tls-client-hello"),
    pytest.param(b"\r\n", None, id="empty-line-is-a-v2-prefix"),
    pytest.param(b"\r\na1 NOOP\r\n", 3, id="crlf-then-imap"),
    pytest.param(b"PROXY\r\n", 6, id="proxy-crlf"),
    pytest.param(b"PROXY TCP5 1.2.3.4", 10, id="family"),
    pytest.param(b"PROXY UNKNOWNX\r\n", 14, id="unknown-glued"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 29, id="port-leading-zero"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 32, id="port-too-big"),
    pytest.param(b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", 20, id="octet-too-big"),
    pytest.param(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", 20, id="colon-in-tcp4"),
    pytest.param(b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 17, id="short-address-at-space"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", 32, id="cr-cr"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 31, id="fifth-field"),
    pytest.param(SIG + b"\x11", 13, id="v2-version"),
    pytest.param(SIG + b"\x23", 13, id="v2-command"),
    pytest.param(SIG + b"\x21\x51", 14, id="v2-family"),
    pytest.param(SIG + b"\x21\x11\xff\xff", 16, id="v2-length-cap"),
    pytest.param(SIG + b"\x21\x11\x00\x0b" + bytes(11), 16, id="v2-block-short"),
]


@pytest.mark.parametrize(("data", "fails_at"), EARLY)
def test_fails_as_soon_as_the_prefix_cannot_match(data: bytes, fails_at: int | None) -> None:
    assert first_failure(data) == fails_at


@pytest.mark.parametrize(
    "line", [b"a1 LOGIN alice secret\r\n", b"a1 CAPABILITY\r\n", b"A STARTTLS\r\n", b"x"]
)
def test_imap_first_line_fails_on_its_first_byte(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="not a PROXY header"):
        parse_proxy_header(line[:1])


def test_empty_input_needs_more() -> None:
    assert parse_proxy_header(b"") is NEED_MORE


# -- CRC32c -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"123456789", 0xE3069283),  # the usual check value
        (bytes(32), 0x8A9136AA),  # RFC 3720 §B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"", 0),
    ],
)
def test_crc32c_vectors(data: bytes, crc: int) -> None:
    assert crc32c(data) == crc
    assert crc32c_bitwise(data) == crc


@given(st.binary(max_size=300))
def test_crc32c_matches_bitwise(data: bytes) -> None:
    assert crc32c(data) == crc32c_bitwise(data)


# -- properties ---------------------------------------------------------------

_prefixes = st.sampled_from(
    [b"", b"P", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", SIG, SIG + b"\x21"]
)


# Near-misses reach deeper than uniform bytes: v1 lines from the right
# alphabet, v2 headers with every ver_cmd/fam byte and a plausible length.
_v1_like = st.builds(
    lambda fam, text: b"PROXY " + fam + text.encode(),
    st.sampled_from([b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"UNKNOWN "]),
    st.text(alphabet="0123456789abcdefABCDEF.: \r\n", max_size=110),
)


def _v2_near_miss(ver_cmd: int, fam: int, body: bytes, length: int | None) -> bytes:
    n = len(body) if length is None else length
    return SIG + struct.pack("!BBH", ver_cmd, fam, n) + body


_v2_like = st.builds(
    _v2_near_miss,
    st.sampled_from([0x20, 0x21]) | st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=260),
    st.none() | st.integers(0, 0xFFFF),
)


@settings(max_examples=1000)
@given(_prefixes, st.binary(max_size=300), _v1_like | _v2_like | st.just(b""))
@example(b"", b"\x00", b"")
@example(SIG, b"\x21\x11\x00\x0c" + bytes(12), b"")
@example(SIG, b"\x20\xff\x00\x00", b"")
@example(b"", b"", SIG + b"\x21\x10\x00\x00")
def test_arbitrary_bytes_never_crash(prefix: bytes, tail: bytes, near_miss: bytes) -> None:
    data = near_miss or prefix + tail
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if result is NEED_MORE:
        return
    _, used = result
    assert 0 < used <= len(data)
    assert parse_proxy_header(data[:used]) == result  # the header delimits itself


_port = st.integers(0, 65535)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), _port, _port, st.binary(max_size=20))
def test_v1_tcp4_round_trip(
    src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sp: int, dp: int, tail: bytes
) -> None:
    header = f"PROXY TCP4 {src} {dst} {sp} {dp}\r\n".encode()
    info = ProxyInfo(1, "PROXY", "TCP4", (str(src), sp), (str(dst), dp))
    assert parse_proxy_header(header + tail) == (info, len(header))
    assert first_failure(header[:-1]) is None


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), _port, _port, st.booleans())
def test_v1_tcp6_round_trip(
    src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, sp: int, dp: int, exploded: bool
) -> None:
    s, d = (src.exploded, dst.exploded) if exploded else (src.compressed, dst.compressed)
    header = f"PROXY TCP6 {s} {d} {sp} {dp}\r\n".encode()
    info = ProxyInfo(1, "PROXY", "TCP6", (src.compressed, sp), (dst.compressed, dp))
    assert parse_proxy_header(header) == (info, len(header))
    assert first_failure(header[:-1]) is None


@given(
    st.ip_addresses(v=6),
    st.ip_addresses(v=6),
    _port,
    _port,
    st.lists(st.tuples(st.integers(0, 255).filter(lambda t: t != 3), st.binary(max_size=40))),
    st.booleans(),
)
def test_v2_tcp6_round_trip(
    src: ipaddress.IPv6Address,
    dst: ipaddress.IPv6Address,
    sp: int,
    dp: int,
    tlvs: list[tuple[int, bytes]],
    checksum: bool,
) -> None:
    addresses = ip6(str(src), str(dst), sp, dp)
    more = b"".join(tlv(t, v) for t, v in tlvs)
    if checksum:
        header = v2_with_crc(PROXY, TCP6, addresses, after=more)
    else:
        header = v2(PROXY, TCP6, addresses + more)
    info, used = parsed(header)
    assert used == len(header)
    assert (info.source, info.destination) == ((src.compressed, sp), (dst.compressed, dp))
    assert [t for t in info.tlvs if t[0] != T_CRC32C] == tlvs


# -- purity -------------------------------------------------------------------


def test_module_imports_no_io() -> None:
    path = pathlib.Path(__file__).resolve().parents[1] / "refd" / "proxy_protocol.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"trio", "socket", "ssl", "yaml", "asyncio", "subprocess", "prometheus_client"}
    assert imported & forbidden == set()
