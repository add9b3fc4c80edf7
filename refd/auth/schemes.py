"""Dovecot password schemes: parse a stored password once, verify it many times.

A stored password is Dovecot's `{SCHEME}data`, or bare `data` read with a
default scheme (CRYPT for passwd-files). `parse_password_hash` does all the
work that needs no password: it looks the scheme up (case-insensitively),
decodes the data and checks its shape, so a bad entry is reported when the
file is loaded. After that, `check_password` can only answer True or False.

Decoding follows Dovecot's `password_decode()` (src/auth/password-scheme.c):
a `.B64`/`.BASE64`/`.HEX` suffix on the scheme name picks the encoding;
without one, each scheme has a default encoding, and for the unsalted digests
(SHA256, SHA512) a value twice the digest length is taken as hex, anything
else as base64. Layouts:

- PLAIN, CLEAR, CLEARTEXT: the password itself.
- PLAIN-TRUNC: `<length>-<password>`; a password at least `length` bytes long
  whose first `length` bytes match is accepted too (Dovecot's
  plain_trunc_verify, for systems that cut passwords short).
- SHA1 (alias SHA), SHA256, SHA512: the digest of the password.
- PLAIN-MD5 (hex by default), LDAP-MD5 (base64 by default): its MD5 digest.
- SSHA (SHA-1), SSHA256, SSHA512, SMD5 (MD5): digest(password + salt)
  followed by the salt; the salt is whatever follows the digest (at least
  one byte; doveadm writes four).
- PBKDF2: `$1$<salt>$<rounds>$<40 hex digits>`, PBKDF2-HMAC-SHA1 (RFC 8018
  section 5.2) of the password with the salt string as written, `rounds`
  iterations, 20 bytes of output (Dovecot's password-scheme-pbkdf2.c).
- MD5-CRYPT: a `$1$<salt up to 8>$<22 characters>` MD5-crypt string (the
  FreeBSD format, Dovecot's password_generate_md5_crypt). MD5 takes it when
  the data starts with `$1$`, and reads anything else as PLAIN-MD5.
- CRYPT, DES-CRYPT, SHA256-CRYPT, SHA512-CRYPT: a crypt(3) string, dispatched
  on its prefix as the system crypt would: `$5$`/`$6$` SHA-crypt,
  `$2a$`/`$2b$`/`$2y$` bcrypt, `$1$` MD5-crypt, and 13 characters of the
  crypt alphabet for traditional DES crypt (salt 2, hash 11; only the first
  8 bytes of a password count). `$y$` (yescrypt), BSDi `_` DES and other
  formats are refused with `UnsupportedScheme`.
- BLF-CRYPT: a bcrypt string. As with crypt_blowfish, only the first 72 bytes
  of the password count.
- ARGON2I, ARGON2ID: a PHC string; as in libsodium, its `$argon2i$` or
  `$argon2id$` prefix picks the variant.

MD5-crypt and DES crypt are computed by the system libcrypt (libxcrypt)
through ctypes, as Dovecot does through crypt(3); without a libcrypt that
passes their self-test they are refused with `UnsupportedScheme` at load.
bcrypt goes through libxcrypt too when it passes its self-test (it is faster
than pyca/bcrypt), and through pyca/bcrypt otherwise; both accept the same
passwords (see `_verify_bcrypt`).

SHA-crypt (Drepper, https://www.akkadia.org/drepper/SHA-crypt.txt) has two
implementations that give the same strings: `native_sha_crypt` calls
libxcrypt through ctypes when the library is there, and `sha_crypt` is pure
Python. ctypes releases the GIL during the call, so native verifications run
in parallel on threads; the pure version holds the GIL (hashlib keeps it for
short inputs) and does not scale over threads. bcrypt and argon2-cffi release
the GIL too. Stored SHA-crypt strings must be canonical (salt from the crypt
alphabet, at most 16 characters, rounds written without leading zeros and in
1000..999999999) because that is what crypt(3) produces and what libxcrypt
accepts, so both implementations agree on every accepted entry.

Passwords are encoded as UTF-8 (with surrogateescape, so undecodable bytes
from the wire round-trip). A password containing NUL never verifies (Dovecot
passwords are C strings), nor does one longer than MAX_PASSWORD_BYTES
(Dovecot's own cap), nor a SHA-crypt one longer than
SHA_CRYPT_MAX_PASSWORD_BYTES: libxcrypt's crypt(3) refuses those, so a
Dovecot that verifies SHA-crypt through it refuses them too, and here they
would need the pure-Python path (its cost grows with the length, and it
holds the GIL). So with libxcrypt present every verification runs in C:
SHA-crypt in libxcrypt, bcrypt (72 bytes used) and argon2 in their C
libraries, the digests and PBKDF2 in hashlib. Comparisons are constant-time. No error
message ever contains password data.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import enum
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import argon2
import argon2.exceptions
import argon2.low_level
import bcrypt

# Longer passwords never verify: a bound on the work one login can cause
# (Dovecot's cap on a password, too).
MAX_PASSWORD_BYTES = 4096
# libxcrypt's crypt(3) refuses a phrase of CRYPT_MAX_PASSPHRASE_SIZE (512)
# bytes or more; so does SHA-crypt verification here (see the module docstring).
SHA_CRYPT_MAX_PASSWORD_BYTES = 511

# For generated hashes: SHA-crypt rounds as `doveadm pw`; bcrypt cost and
# argon2 time and memory as the Python libraries' defaults, but argon2
# parallelism 1, because libsodium (Dovecot's argon2) only verifies p=1.
SHA_CRYPT_ROUNDS_DEFAULT = 5000
SHA_CRYPT_ROUNDS_MIN = 1000
SHA_CRYPT_ROUNDS_MAX = 999_999_999
SHA_CRYPT_SALT_MAX = 16
BCRYPT_COST_DEFAULT = 12
BCRYPT_MAX_PASSWORD_BYTES = 72
ARGON2_TIME_COST_DEFAULT = 3
ARGON2_MEMORY_COST_KIB = 65536
ARGON2_PARALLELISM = 1
ARGON2_HASH_LEN = 32
SALT_BYTES = 16

CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# bcrypt's base64 has the standard bit order but its own alphabet.
_BCRYPT_FROM_STD_B64 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", BCRYPT_ALPHABET
)


class SchemeError(ValueError):
    """A stored password that cannot be used. The message never contains it."""

    def __init__(self, scheme: str, message: str) -> None:
        super().__init__(message)
        self.scheme = scheme


class UnsupportedScheme(SchemeError):
    """A scheme (or crypt format) this module does not implement."""

    def __init__(self, scheme: str, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(scheme, f"unsupported scheme {scheme}{suffix}")


class MalformedHash(SchemeError):
    """A supported scheme whose data has the wrong shape."""

    def __init__(self, scheme: str, detail: str) -> None:
        super().__init__(scheme, f"malformed {scheme} password: {detail}")


class Algorithm(enum.Enum):
    """What actually verifies a password (CRYPT resolves to one of these)."""

    PLAIN = "PLAIN"
    PLAIN_TRUNC = "PLAIN-TRUNC"
    PLAIN_MD5 = "PLAIN-MD5"
    SHA1 = "SHA1"
    SSHA = "SSHA"
    SMD5 = "SMD5"
    SHA256 = "SHA256"
    SHA512 = "SHA512"
    SSHA256 = "SSHA256"
    SSHA512 = "SSHA512"
    SHA256_CRYPT = "SHA256-CRYPT"
    SHA512_CRYPT = "SHA512-CRYPT"
    BLF_CRYPT = "BLF-CRYPT"
    ARGON2I = "ARGON2I"
    ARGON2ID = "ARGON2ID"
    MD5_CRYPT = "MD5-CRYPT"
    DES_CRYPT = "DES-CRYPT"
    PBKDF2 = "PBKDF2"

    # Hashed by identity, as members compare: Enum's own hash is a Python
    # call (of the name's hash) at each look-up, two a password check.
    __hash__ = object.__hash__


#: Verified on the event loop: a digest or two, microseconds each.  Every
#: other algorithm costs enough to go to a worker thread.
INLINE_ALGORITHMS = frozenset(
    {
        Algorithm.PLAIN,
        Algorithm.PLAIN_TRUNC,
        Algorithm.PLAIN_MD5,
        Algorithm.SHA1,
        Algorithm.SSHA,
        Algorithm.SMD5,
        Algorithm.SHA256,
        Algorithm.SHA512,
        Algorithm.SSHA256,
        Algorithm.SSHA512,
    }
)

#: Algorithms refd verifies but an admin should move away from, and why.
WEAK_ALGORITHMS: dict[Algorithm, str] = {
    Algorithm.PLAIN: "the password is stored in clear",
    Algorithm.PLAIN_TRUNC: "the password is stored in clear",
    Algorithm.PLAIN_MD5: "one unsalted MD5",
    Algorithm.SHA1: "one unsalted SHA-1",
    Algorithm.SSHA: "one salted SHA-1",
    Algorithm.SMD5: "one salted MD5",
    Algorithm.MD5_CRYPT: "MD5-crypt, 1000 MD5 rounds",
    Algorithm.DES_CRYPT: "DES crypt, only 8 characters of the password count",
}


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed, validated stored password."""

    # The scheme as written, upper-cased: "CRYPT", "SSHA256.HEX", ...
    scheme: str
    algorithm: Algorithm
    # The parameters that set how long a verification takes: SHA-crypt
    # (rounds,); bcrypt (cost,); argon2 (version, memory KiB, time cost,
    # parallelism, hash length, salt length); SSHA (salt length,); else ().
    cost: tuple[int, ...]
    # Decoded data: the plaintext, digest[+salt], or the ASCII crypt string.
    value: bytes = field(repr=False)


class _Encoding(enum.Enum):
    NONE = "none"
    BASE64 = "base64"
    HEX = "hex"


class _Family(enum.Enum):
    FIXED = "fixed"  # the scheme names the algorithm
    CRYPT = "crypt"  # system crypt(3): SHA-crypt or bcrypt by prefix
    BLOWFISH = "blowfish"  # bcrypt strings only
    ARGON2 = "argon2"  # PHC argon2i / argon2id strings
    MD5_CRYPT = "md5-crypt"  # $1$ strings only
    MD5 = "md5"  # $1$ MD5-crypt, else a PLAIN-MD5 digest
    PBKDF2 = "pbkdf2"  # Dovecot's $1$salt$rounds$hex


@dataclass(frozen=True, slots=True)
class _Scheme:
    family: _Family
    encoding: _Encoding
    # Dovecot's raw_password_len: fixed decoded length, 0 for any.
    raw_len: int = 0
    algorithm: Algorithm | None = None


_SCHEMES: dict[str, _Scheme] = {
    "PLAIN": _Scheme(_Family.FIXED, _Encoding.NONE, algorithm=Algorithm.PLAIN),
    "CLEAR": _Scheme(_Family.FIXED, _Encoding.NONE, algorithm=Algorithm.PLAIN),
    "CLEARTEXT": _Scheme(_Family.FIXED, _Encoding.NONE, algorithm=Algorithm.PLAIN),
    "PLAIN-TRUNC": _Scheme(_Family.FIXED, _Encoding.NONE, algorithm=Algorithm.PLAIN_TRUNC),
    "PLAIN-MD5": _Scheme(_Family.FIXED, _Encoding.HEX, 16, Algorithm.PLAIN_MD5),
    "LDAP-MD5": _Scheme(_Family.FIXED, _Encoding.BASE64, 16, Algorithm.PLAIN_MD5),
    "SHA": _Scheme(_Family.FIXED, _Encoding.BASE64, 20, Algorithm.SHA1),
    "SHA1": _Scheme(_Family.FIXED, _Encoding.BASE64, 20, Algorithm.SHA1),
    "SSHA": _Scheme(_Family.FIXED, _Encoding.BASE64, algorithm=Algorithm.SSHA),
    "SMD5": _Scheme(_Family.FIXED, _Encoding.BASE64, algorithm=Algorithm.SMD5),
    "SHA256": _Scheme(_Family.FIXED, _Encoding.BASE64, 32, Algorithm.SHA256),
    "SHA512": _Scheme(_Family.FIXED, _Encoding.BASE64, 64, Algorithm.SHA512),
    "SSHA256": _Scheme(_Family.FIXED, _Encoding.BASE64, algorithm=Algorithm.SSHA256),
    "SSHA512": _Scheme(_Family.FIXED, _Encoding.BASE64, algorithm=Algorithm.SSHA512),
    "CRYPT": _Scheme(_Family.CRYPT, _Encoding.NONE),
    "DES-CRYPT": _Scheme(_Family.CRYPT, _Encoding.NONE),
    "MD5-CRYPT": _Scheme(_Family.MD5_CRYPT, _Encoding.NONE),
    "MD5": _Scheme(_Family.MD5, _Encoding.NONE),
    "PBKDF2": _Scheme(_Family.PBKDF2, _Encoding.NONE),
    "SHA256-CRYPT": _Scheme(_Family.CRYPT, _Encoding.NONE),
    "SHA512-CRYPT": _Scheme(_Family.CRYPT, _Encoding.NONE),
    "BLF-CRYPT": _Scheme(_Family.BLOWFISH, _Encoding.NONE),
    "ARGON2I": _Scheme(_Family.ARGON2, _Encoding.NONE),
    "ARGON2ID": _Scheme(_Family.ARGON2, _Encoding.NONE),
}

SUPPORTED_SCHEMES = frozenset(_SCHEMES)
# Schemes whose data is a crypt(3)-style string, where a leading "!" or "*"
# conventionally marks a locked account.
CRYPT_SCHEMES = frozenset(
    name
    for name, s in _SCHEMES.items()
    if s.family in (_Family.CRYPT, _Family.BLOWFISH, _Family.MD5_CRYPT)
)

_DIGEST_SIZE = {
    Algorithm.PLAIN_MD5: 16,
    Algorithm.SHA1: 20,
    Algorithm.SSHA: 20,
    Algorithm.SMD5: 16,
    Algorithm.SHA256: 32,
    Algorithm.SHA512: 64,
    Algorithm.SSHA256: 32,
    Algorithm.SSHA512: 64,
}
_SALTED = (Algorithm.SSHA, Algorithm.SMD5, Algorithm.SSHA256, Algorithm.SSHA512)
_ENCODING_SUFFIXES = {"b64": _Encoding.BASE64, "base64": _Encoding.BASE64, "hex": _Encoding.HEX}
_PRINTABLE_SCHEME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_SHA_CRYPT = re.compile(
    r"\$(?P<id>[56])\$(?:rounds=(?P<rounds>[1-9][0-9]{0,8})\$)?"
    r"(?P<salt>[./0-9A-Za-z]{0,16})\$(?P<hash>[./0-9A-Za-z]*)"
)
_SHA_CRYPT_HASH_LEN = {"5": 43, "6": 86}
_BCRYPT = re.compile(r"\$2[aby]\$(?P<cost>[0-9]{2})\$[./A-Za-z0-9]{53}")
_CRYPT_ID = re.compile(r"\$([A-Za-z0-9]{1,8})\$")
_DES_CRYPT = re.compile(r"[./0-9A-Za-z]{13}")
# libxcrypt's md5crypt refuses a salt with any of "$:;*!\\" or a space;
# more than 8 salt characters never come back from crypt(3), so never match.
_MD5_CRYPT = re.compile(r"\$1\$(?:(?![$:;*!\\])[!-~]){0,8}\$[./0-9A-Za-z]{22}")
_PBKDF2 = re.compile(
    rb"\$1\$(?P<salt>[^$\x00]*)\$(?P<rounds>[0-9]{1,10})\$(?P<hash>[0-9A-Fa-f]{40})"
)
PBKDF2_ROUNDS_MAX = 2**32 - 1  # Dovecot reads them as an unsigned int
PBKDF2_KEY_BYTES = 20  # PBKDF2-HMAC-SHA1, one block


def _printable(scheme: str) -> str:
    # A scheme name goes into error messages; anything odd is not echoed.
    return scheme.upper() if _PRINTABLE_SCHEME.fullmatch(scheme) else "(unprintable name)"


def split_scheme(stored: str, default_scheme: str = "CRYPT") -> tuple[str, str]:
    """Split a stored password into (scheme, data) as Dovecot's password_get_scheme()."""
    if stored.startswith("$1$") and "$" in stored[3:]:
        return "MD5-CRYPT", stored
    if stored.startswith("{"):
        end = stored.find("}")
        if end != -1:
            return stored[1:end], stored[end + 1 :]
    return default_scheme, stored


def _lookup(scheme: str) -> tuple[str, _Scheme, _Encoding, bool]:
    name, dot, suffix = scheme.partition(".")
    info = _SCHEMES.get(name.upper())
    if info is None:
        raise UnsupportedScheme(_printable(scheme))
    if not dot:
        return name.upper(), info, info.encoding, False
    encoding = _ENCODING_SUFFIXES.get(suffix.lower())
    if encoding is None:
        raise UnsupportedScheme(_printable(scheme), "unknown encoding suffix")
    return name.upper(), info, encoding, True


def validate_scheme_name(scheme: str) -> str:
    """Return the scheme name upper-cased, or raise UnsupportedScheme."""
    _lookup(scheme)
    return scheme.upper()


def _b64decode(data: str, scheme: str) -> bytes:
    if not _BASE64.fullmatch(data) or len(data.rstrip("=")) % 4 == 1:
        raise MalformedHash(scheme, "not valid base64")
    unpadded = data.rstrip("=")
    return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)


def _decode(data: str, scheme: str, info: _Scheme, encoding: _Encoding, explicit: bool) -> bytes:
    if encoding is _Encoding.NONE:
        return data.encode("utf-8", "surrogateescape")
    guessed = not explicit and info.raw_len != 0
    if guessed:
        encoding = _Encoding.HEX if len(data) == 2 * info.raw_len else _Encoding.BASE64
    raw: bytes | None = None
    if encoding is _Encoding.HEX:
        try:
            raw = binascii.unhexlify(data)
        except ValueError:  # binascii.Error, or non-ASCII input
            if not guessed:
                raise MalformedHash(scheme, "not valid hex") from None
            # Dovecot falls back to base64: some lengths fit both encodings.
    if raw is None:
        raw = _b64decode(data, scheme)
    if info.raw_len and len(raw) != info.raw_len:
        raise MalformedHash(scheme, f"digest is {len(raw)} bytes, expected {info.raw_len}")
    return raw


def _crypt_kind(data: str) -> str | None:
    """Name an unsupported crypt format without echoing the data; None if not crypt."""
    if data.startswith("$2x$"):
        return "$2x$ bcrypt, the buggy pre-2011 variant"
    if data.startswith("$argon2"):
        return "argon2 is not a crypt(3) format; use {ARGON2I} or {ARGON2ID}"
    known = {"y": "yescrypt", "gy": "gost-yescrypt", "7": "scrypt"}
    match = _CRYPT_ID.match(data)
    if match:
        ident = match[1]
        return f"${ident}$ {known.get(ident, 'crypt format')}"
    if data.startswith("_") and len(data) == 20:
        return "BSDi extended DES crypt"
    return None


def _parse_sha_crypt(text: str, scheme: str) -> PasswordHash:
    match = _SHA_CRYPT.fullmatch(text)
    if match is None or len(match["hash"]) != _SHA_CRYPT_HASH_LEN[match["id"]]:
        raise MalformedHash(scheme, "not a canonical SHA-crypt string")
    rounds = int(match["rounds"]) if match["rounds"] else SHA_CRYPT_ROUNDS_DEFAULT
    if rounds < SHA_CRYPT_ROUNDS_MIN:
        raise MalformedHash(scheme, f"rounds={rounds} is below {SHA_CRYPT_ROUNDS_MIN}")
    algorithm = Algorithm.SHA256_CRYPT if match["id"] == "5" else Algorithm.SHA512_CRYPT
    return PasswordHash(scheme, algorithm, (rounds,), text.encode("ascii"))


def _parse_bcrypt(text: str, scheme: str) -> PasswordHash:
    match = _BCRYPT.fullmatch(text)
    if match is None:
        raise MalformedHash(scheme, "not a $2a$/$2b$/$2y$ bcrypt string")
    cost = int(match["cost"])
    if not 4 <= cost <= 31:
        raise MalformedHash(scheme, f"bcrypt cost {cost} is outside 04..31")
    return PasswordHash(scheme, Algorithm.BLF_CRYPT, (cost,), text.encode("ascii"))


def _parse_argon2(text: str, scheme: str) -> PasswordHash:
    if not text.startswith(("$argon2i$", "$argon2id$")):
        raise MalformedHash(scheme, "not an $argon2i$ or $argon2id$ string")
    try:
        params = argon2.extract_parameters(text)
    except argon2.exceptions.InvalidHashError:
        raise MalformedHash(scheme, "not a valid argon2 PHC string") from None
    if (
        params.version not in (16, 19)
        or params.time_cost < 1
        or params.parallelism < 1
        or params.memory_cost < 8 * params.parallelism
        or params.salt_len < 8
        or params.hash_len < 4
    ):
        raise MalformedHash(scheme, "argon2 parameters out of range")
    algorithm = Algorithm.ARGON2ID if text.startswith("$argon2id$") else Algorithm.ARGON2I
    cost = (
        params.version,
        params.memory_cost,
        params.time_cost,
        params.parallelism,
        params.hash_len,
        params.salt_len,
    )
    return PasswordHash(scheme, algorithm, cost, text.encode("ascii"))


def _parse_native_crypt(text: str, scheme: str) -> PasswordHash:
    """MD5-crypt or DES crypt, which only the system crypt(3) computes here."""
    if text.startswith("$1$"):
        if not _MD5_CRYPT.fullmatch(text) or not text.isascii():
            raise MalformedHash(scheme, "not a $1$ MD5-crypt string (salt of up to 8 characters)")
        algorithm, kind = Algorithm.MD5_CRYPT, "MD5-crypt"
    else:
        algorithm, kind = Algorithm.DES_CRYPT, "DES crypt"
    if algorithm not in _native_algorithms():
        raise UnsupportedScheme(scheme, f"{kind} needs the system crypt(3), which lacks it")
    return PasswordHash(scheme, algorithm, (), text.encode("ascii"))


def _parse_pbkdf2(raw: bytes, scheme: str) -> PasswordHash:
    # Dovecot's pbkdf2_verify: "$1$" salt "$" rounds "$" 40 hex digits.
    match = _PBKDF2.fullmatch(raw)
    if match is None:
        raise MalformedHash(scheme, "not a $1$salt$rounds$hex PBKDF2 string")
    rounds = int(match["rounds"])
    if not 1 <= rounds <= PBKDF2_ROUNDS_MAX:
        raise MalformedHash(scheme, f"rounds {rounds} is outside 1..{PBKDF2_ROUNDS_MAX}")
    return PasswordHash(scheme, Algorithm.PBKDF2, (rounds,), raw)


def _parse_plain_trunc(raw: bytes, scheme: str) -> PasswordHash:
    # Dovecot's plain_trunc_verify: decimal length, "-", the password.
    length, dash, _ = raw.partition(b"-")
    if not dash or not length.isdigit():
        raise MalformedHash(scheme, "missing the <length>- prefix")
    return PasswordHash(scheme, Algorithm.PLAIN_TRUNC, (), raw)


def parse_password_hash(stored: str, *, default_scheme: str = "CRYPT") -> PasswordHash:
    """Parse and validate a Dovecot password field; raise SchemeError if unusable."""
    scheme, data = split_scheme(stored, default_scheme)
    _, info, encoding, explicit = _lookup(scheme)
    label = scheme.upper()
    raw = _decode(data, label, info, encoding, explicit)
    if info.family is _Family.FIXED:
        assert info.algorithm is not None
        cost: tuple[int, ...] = ()
        if info.algorithm is Algorithm.PLAIN_TRUNC:
            return _parse_plain_trunc(raw, label)
        if info.algorithm in _SALTED:
            size = _DIGEST_SIZE[info.algorithm]
            if len(raw) <= size:
                raise MalformedHash(label, f"shorter than the {size}-byte digest plus a salt")
            cost = (len(raw) - size,)
        return PasswordHash(label, info.algorithm, cost, raw)
    if info.family is _Family.PBKDF2:
        return _parse_pbkdf2(raw, label)
    if info.family is _Family.MD5 and not raw.startswith(b"$1$"):
        # Dovecot's md5_verify: anything but MD5-crypt is a PLAIN-MD5 digest.
        plain_md5 = _SCHEMES["PLAIN-MD5"]
        text = raw.decode("utf-8", "surrogateescape")
        digest = _decode(text, label, plain_md5, plain_md5.encoding, False)
        return PasswordHash(label, Algorithm.PLAIN_MD5, (), digest)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedHash(label, "not ASCII") from None
    if info.family is _Family.ARGON2:
        return _parse_argon2(text, label)
    if info.family in (_Family.MD5_CRYPT, _Family.MD5):
        if not text.startswith("$1$"):
            raise MalformedHash(label, "not a $1$ MD5-crypt string")
        return _parse_native_crypt(text, label)
    if text.startswith(("$2a$", "$2b$", "$2y$")):
        return _parse_bcrypt(text, label)
    if info.family is _Family.BLOWFISH:
        raise MalformedHash(label, "not a $2a$/$2b$/$2y$ bcrypt string")
    if text.startswith(("$5$", "$6$")):
        return _parse_sha_crypt(text, label)
    if text.startswith("$1$") or _DES_CRYPT.fullmatch(text):
        return _parse_native_crypt(text, label)
    kind = _crypt_kind(text)
    if kind is None:
        raise MalformedHash(label, "not a crypt(3) string")
    raise UnsupportedScheme(_printable(scheme), kind)


# --- verification ---------------------------------------------------------


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def _verify_plain(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(value, secret)


def _verify_plain_trunc(value: bytes, secret: bytes) -> bool:
    # Dovecot's plain_trunc_verify: "<n>-<stored>"; when the stored part is
    # n bytes long, a password whose first n bytes match it is accepted.
    length, _, stored = value.partition(b"-")
    n = int(length)
    if len(stored) == n and len(secret) >= n:
        return hmac.compare_digest(stored, secret[:n])
    return hmac.compare_digest(stored, secret)


def _verify_plain_md5(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(hashlib.md5(secret, usedforsecurity=False).digest(), value)


def _verify_sha1(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(hashlib.sha1(secret, usedforsecurity=False).digest(), value)


def _verify_ssha(value: bytes, secret: bytes) -> bool:
    digest = hashlib.sha1(secret + value[20:], usedforsecurity=False).digest()
    return hmac.compare_digest(digest, value[:20])


def _verify_smd5(value: bytes, secret: bytes) -> bool:
    digest = hashlib.md5(secret + value[16:], usedforsecurity=False).digest()
    return hmac.compare_digest(digest, value[:16])


def _verify_pbkdf2(value: bytes, secret: bytes) -> bool:
    # Parsed already: b"$1$" salt b"$" rounds b"$" hex.  hashlib releases
    # the GIL while it iterates.
    _, _, salt, rounds, hex_key = value.split(b"$")
    key = hashlib.pbkdf2_hmac("sha1", secret, salt, int(rounds), PBKDF2_KEY_BYTES)
    return hmac.compare_digest(key, bytes.fromhex(hex_key.decode("ascii")))


def _verify_native_crypt(value: bytes, secret: bytes) -> bool:
    # MD5-crypt and DES crypt: crypt(3) with the stored string as setting.
    computed = native_crypt(secret, value)
    return computed is not None and hmac.compare_digest(computed, value)


def _verify_sha256(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(_sha256(secret), value)


def _verify_sha512(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(_sha512(secret), value)


def _verify_ssha256(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(_sha256(secret + value[32:]), value[:32])


def _verify_ssha512(value: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(_sha512(secret + value[64:]), value[:64])


def _verify_sha_crypt(value: bytes, secret: bytes) -> bool:
    if len(secret) > SHA_CRYPT_MAX_PASSWORD_BYTES:
        return False  # never hashed: libxcrypt would refuse it
    computed = _any_sha_crypt(secret, value.decode("ascii"))
    return hmac.compare_digest(computed.encode("ascii"), value)


def _verify_bcrypt(value: bytes, secret: bytes) -> bool:
    secret = secret[:BCRYPT_MAX_PASSWORD_BYTES]
    if Algorithm.BLF_CRYPT not in _native_algorithms():
        return bcrypt.checkpw(secret, value)
    # libxcrypt's bcrypt takes 81 ms at cost 10 where pyca/bcrypt takes 97 ms
    # (this machine, one thread). Its $2a$ is crypt_blowfish's, which differs
    # from pyca/bcrypt's for a few passwords with 8-bit characters (a
    # countermeasure against the pre-2011 sign-extension bug); pyca/bcrypt
    # computes $2a$ and $2y$ as $2b$. So that both paths accept the same
    # passwords, every prefix is computed as $2b$ and the rest compared.
    computed = native_crypt(secret, b"$2b$" + value[4:])
    return computed is not None and hmac.compare_digest(computed[4:], value[4:])


def _verify_argon2(value: bytes, secret: bytes) -> bool:
    kind = argon2.low_level.Type.ID if value.startswith(b"$argon2id$") else argon2.low_level.Type.I
    try:
        return argon2.low_level.verify_secret(value, secret, kind)
    except argon2.exceptions.VerifyMismatchError:
        return False


_VERIFY: dict[Algorithm, Callable[[bytes, bytes], bool]] = {
    Algorithm.PLAIN: _verify_plain,
    Algorithm.PLAIN_TRUNC: _verify_plain_trunc,
    Algorithm.PLAIN_MD5: _verify_plain_md5,
    Algorithm.SHA1: _verify_sha1,
    Algorithm.SSHA: _verify_ssha,
    Algorithm.SMD5: _verify_smd5,
    Algorithm.PBKDF2: _verify_pbkdf2,
    Algorithm.MD5_CRYPT: _verify_native_crypt,
    Algorithm.DES_CRYPT: _verify_native_crypt,
    Algorithm.SHA256: _verify_sha256,
    Algorithm.SHA512: _verify_sha512,
    Algorithm.SSHA256: _verify_ssha256,
    Algorithm.SSHA512: _verify_ssha512,
    Algorithm.SHA256_CRYPT: _verify_sha_crypt,
    Algorithm.SHA512_CRYPT: _verify_sha_crypt,
    Algorithm.BLF_CRYPT: _verify_bcrypt,
    Algorithm.ARGON2I: _verify_argon2,
    Algorithm.ARGON2ID: _verify_argon2,
}


def check_password(hashed: PasswordHash, password: str) -> bool:
    """True if `password` matches the parsed stored password. CPU-bound: may block."""
    try:
        secret = password.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    if b"\0" in secret or len(secret) > MAX_PASSWORD_BYTES:
        return False
    return _VERIFY[hashed.algorithm](hashed.value, secret)


def verify_password(stored: str, password: str, *, default_scheme: str = "CRYPT") -> bool:
    """Check `password` against a Dovecot password field; SchemeError if it is unusable."""
    return check_password(parse_password_hash(stored, default_scheme=default_scheme), password)


# --- SHA-crypt ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ShaCryptVariant:
    ident: str
    digest: Callable[[bytes], bytes]
    size: int
    # Output order from the spec: (byte, byte, byte, characters) per group,
    # most significant byte first; -1 stands for a zero byte.
    order: tuple[tuple[int, int, int, int], ...]


_SHA256_CRYPT = _ShaCryptVariant(
    "5",
    _sha256,
    32,
    (
        (0, 10, 20, 4), (21, 1, 11, 4), (12, 22, 2, 4), (3, 13, 23, 4), (24, 4, 14, 4),
        (15, 25, 5, 4), (6, 16, 26, 4), (27, 7, 17, 4), (18, 28, 8, 4), (9, 19, 29, 4),
        (-1, 31, 30, 3),
    ),
)  # fmt: skip
_SHA512_CRYPT = _ShaCryptVariant(
    "6",
    _sha512,
    64,
    (
        (0, 21, 42, 4), (22, 43, 1, 4), (44, 2, 23, 4), (3, 24, 45, 4), (25, 46, 4, 4),
        (47, 5, 26, 4), (6, 27, 48, 4), (28, 49, 7, 4), (50, 8, 29, 4), (9, 30, 51, 4),
        (31, 52, 10, 4), (53, 11, 32, 4), (12, 33, 54, 4), (34, 55, 13, 4), (56, 14, 35, 4),
        (15, 36, 57, 4), (37, 58, 16, 4), (59, 17, 38, 4), (18, 39, 60, 4), (40, 61, 19, 4),
        (62, 20, 41, 4), (-1, -1, 63, 2),
    ),
)  # fmt: skip
_SHA_CRYPT_VARIANTS = {"5": _SHA256_CRYPT, "6": _SHA512_CRYPT}
_ROUNDS_PREFIX = re.compile(rb"rounds=([0-9]+)\$")


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _crypt_b64(digest: bytes, order: tuple[tuple[int, int, int, int], ...]) -> str:
    out = []
    for b2, b1, b0, count in order:
        word = 0
        for index in (b2, b1, b0):
            word = (word << 8) | (digest[index] if index >= 0 else 0)
        for _ in range(count):
            out.append(CRYPT_ALPHABET[word & 0x3F])
            word >>= 6
    return "".join(out)


def sha_crypt(password: bytes, setting: str) -> str:
    """SHA-crypt in pure Python, exactly as Drepper's reference implementation.

    `setting` is `$5$` or `$6$`, an optional `rounds=N$` (clamped to
    1000..999999999), and a salt (up to the next `$`, cut at 16 bytes); a
    full hash string is a valid setting. Holds the GIL: does not scale over
    threads.
    """
    variant = _SHA_CRYPT_VARIANTS.get(setting[1:2]) if setting[:1] == "$" == setting[2:3] else None
    if variant is None:
        raise ValueError("not a $5$ or $6$ SHA-crypt setting")
    rest = setting[3:].encode("utf-8", "surrogateescape")
    rounds, custom = SHA_CRYPT_ROUNDS_DEFAULT, False
    match = _ROUNDS_PREFIX.match(rest)
    if match:
        rounds = max(SHA_CRYPT_ROUNDS_MIN, min(int(match[1]), SHA_CRYPT_ROUNDS_MAX))
        custom = True
        rest = rest[match.end() :]
    salt = rest.split(b"$", 1)[0][:SHA_CRYPT_SALT_MAX]
    digest, key = variant.digest, password

    b = digest(key + salt + key)
    a_input = [key, salt, _repeat(b, len(key))]
    bits = len(key)
    while bits:
        a_input.append(b if bits & 1 else key)
        bits >>= 1
    a = digest(b"".join(a_input))
    p_seq = _repeat(digest(key * len(key)), len(key))
    s_seq = _repeat(digest(salt * (16 + a[0])), len(salt))

    # Round i hashes [P or C] [S if i%3] [P if i%7] [C or P]; the pattern
    # repeats every 42 rounds, so the fixed part is built once per position.
    cycle = []
    for i in range(42):
        middle = (s_seq if i % 3 else b"") + (p_seq if i % 7 else b"")
        cycle.append((True, p_seq + middle) if i & 1 else (False, middle + p_seq))
    c = a
    for i in range(rounds):
        odd, fixed = cycle[i % 42]
        c = digest(fixed + c) if odd else digest(c + fixed)

    head = f"${variant.ident}$" + (f"rounds={rounds}$" if custom else "")
    return head + salt.decode("utf-8", "surrogateescape") + "$" + _crypt_b64(c, variant.order)


# libxcrypt's struct crypt_data is 32768 bytes; glibc's old libcrypt has
# 131232 on x86-64. crypt_rn (libxcrypt only) takes the size explicitly; for
# a bare crypt_r the buffer is made larger than either.
_CRYPT_RN_DATA_SIZE = 32768
_CRYPT_R_DATA_SIZE = 262144
_NATIVE_SELF_TEST = (
    (
        b"Hello world!",
        b"$5$saltstring",
        b"$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
    ),
    (
        b"Hello world!",
        b"$6$saltstring",
        b"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
)


class _LibCrypt:
    """crypt_rn / crypt_r from the system libcrypt, one fresh buffer per call."""

    def __init__(self, lib: ctypes.CDLL, *, use_crypt_rn: bool) -> None:
        if use_crypt_rn:
            self._fn = lib.crypt_rn
            self._fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
            self._size = _CRYPT_RN_DATA_SIZE
        else:
            self._fn = lib.crypt_r
            self._fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            self._size = _CRYPT_R_DATA_SIZE
        self._fn.restype = ctypes.c_char_p
        self._use_crypt_rn = use_crypt_rn

    def crypt(self, phrase: bytes, setting: bytes) -> bytes | None:
        data = ctypes.create_string_buffer(self._size)
        if self._use_crypt_rn:
            result = self._fn(phrase, setting, data, self._size)
        else:
            result = self._fn(phrase, setting, data)
        # Failure: NULL from crypt_rn, a "*0"/"*1" token from crypt_r; a
        # result with another prefix is an old crypt_r that fell back to DES
        # on a "$id$" it does not know.
        prefix = setting[:3] if setting[:1] == b"$" else setting[:2]
        if not isinstance(result, bytes) or not result.startswith(prefix):
            return None
        return result


def _load_libcrypt(*, use_crypt_rn: bool = True) -> _LibCrypt | None:
    path = ctypes.util.find_library("crypt")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    if use_crypt_rn and not hasattr(lib, "crypt_rn"):
        use_crypt_rn = False
    if not use_crypt_rn and not hasattr(lib, "crypt_r"):
        return None
    native = _LibCrypt(lib, use_crypt_rn=use_crypt_rn)
    for phrase, setting, expected in _NATIVE_SELF_TEST:
        if native.crypt(phrase, setting) != expected:
            return None
    return native


@functools.cache
def _libcrypt() -> _LibCrypt | None:
    return _load_libcrypt()


# MD5-crypt, DES crypt and bcrypt, checked once on the library in use.  The
# MD5-crypt vector is the "password"/"3azHgidD" one of passlib's md5_crypt
# tests; the DES one is crypt("secret", "d.") as doveadm pw -s DES-CRYPT gives
# it; the bcrypt one is crypt_blowfish's own "\xff\xff\xa3" vector (8-bit
# characters: a library with the pre-2011 sign-extension bug fails it).
_NATIVE_ALGORITHM_SELF_TEST = {
    Algorithm.MD5_CRYPT: (b"password", b"$1$3azHgidD$SrJPt7B.9rekpmwJwtON31"),
    Algorithm.DES_CRYPT: (b"secret", b"d.eSsVuuYTv7I"),
    Algorithm.BLF_CRYPT: (
        b"\xff\xff\xa3",
        b"$2b$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e",
    ),
}


@functools.cache
def _native_algorithms() -> frozenset[Algorithm]:
    """The algorithms beyond SHA-crypt that the system libcrypt computes correctly.

    MD5-crypt and DES crypt are refused without it; bcrypt falls back to
    pyca/bcrypt.
    """
    native = _libcrypt()
    if native is None:
        return frozenset()
    return frozenset(
        algorithm
        for algorithm, (phrase, expected) in _NATIVE_ALGORITHM_SELF_TEST.items()
        if native.crypt(phrase, expected) == expected
    )


def native_crypt(password: bytes, setting: bytes) -> bytes | None:
    """crypt(3) through the system libcrypt (GIL released), or None if refused."""
    native = _libcrypt()
    if native is None or b"\0" in password or b"\0" in setting:
        return None
    return native.crypt(password, setting)


def native_sha_crypt_available() -> bool:
    """True if the system libcrypt computes SHA-crypt correctly."""
    return _libcrypt() is not None


def native_sha_crypt(password: bytes, setting: str) -> str | None:
    """SHA-crypt through the system libcrypt (GIL released), or None.

    None when there is no usable libcrypt or it refuses the input (libxcrypt
    refuses rounds outside 1000..999999999, salts outside the crypt alphabet
    and passwords of 512 bytes or more, all of which `sha_crypt` accepts).
    """
    native = _libcrypt()
    if native is None or not setting.startswith(("$5$", "$6$")) or b"\0" in password:
        return None
    try:
        encoded = setting.encode("ascii")
    except UnicodeEncodeError:
        return None
    if b"\0" in encoded:
        return None
    result = native.crypt(password, encoded)
    return None if result is None else result.decode("ascii")


def _any_sha_crypt(password: bytes, setting: str) -> str:
    native = native_sha_crypt(password, setting)
    return native if native is not None else sha_crypt(password, setting)


# --- generating hashes ----------------------------------------------------


def _random_crypt_chars(count: int) -> str:
    return "".join(secrets.choice(CRYPT_ALPHABET) for _ in range(count))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_nopad(data: bytes) -> str:
    return _b64(data).rstrip("=")


def hash_password(scheme: str, password: str, *, rounds: int | None = None) -> str:
    """Make a Dovecot password field for `password`, like `doveadm pw -s SCHEME [-r ROUNDS]`.

    Schemes: PLAIN (written as PLAIN.B64 if the password holds ':', CR or LF,
    which a passwd-file cannot carry), SSHA256, SSHA512, SHA256-CRYPT,
    SHA512-CRYPT (rounds: default 5000), BLF-CRYPT (rounds = cost, default
    12), ARGON2I, ARGON2ID (rounds = time cost, default 3; 64 MiB, p=1).
    CPU-bound: may block.
    """
    name = validate_scheme_name(scheme).partition(".")[0]
    secret = password.encode("utf-8", "surrogateescape")
    if b"\0" in secret:
        raise ValueError("a password cannot contain NUL")
    if rounds is not None and name not in (
        "SHA256-CRYPT",
        "SHA512-CRYPT",
        "BLF-CRYPT",
        "ARGON2I",
        "ARGON2ID",
    ):
        raise ValueError(f"{name} takes no rounds")
    if name == "PLAIN":
        if any(c in password for c in ":\r\n"):
            return "{PLAIN.B64}" + _b64(secret)
        return "{PLAIN}" + password
    if name in ("SSHA256", "SSHA512"):
        salt = secrets.token_bytes(SALT_BYTES)
        digest = _sha256 if name == "SSHA256" else _sha512
        return "{" + name + "}" + _b64(digest(secret + salt) + salt)
    if name in ("SHA256-CRYPT", "SHA512-CRYPT"):
        if len(secret) > SHA_CRYPT_MAX_PASSWORD_BYTES:
            raise ValueError(
                f"SHA-crypt takes at most {SHA_CRYPT_MAX_PASSWORD_BYTES} bytes of password "
                "(as crypt(3) in libxcrypt)"
            )
        head = "$5$" if name == "SHA256-CRYPT" else "$6$"
        if rounds is not None:
            if not SHA_CRYPT_ROUNDS_MIN <= rounds <= SHA_CRYPT_ROUNDS_MAX:
                raise ValueError(
                    f"SHA-crypt rounds must be in {SHA_CRYPT_ROUNDS_MIN}..{SHA_CRYPT_ROUNDS_MAX}"
                )
            head += f"rounds={rounds}$"
        return (
            "{"
            + name
            + "}"
            + _any_sha_crypt(secret, head + _random_crypt_chars(SHA_CRYPT_SALT_MAX))
        )
    if name == "BLF-CRYPT":
        if len(secret) > BCRYPT_MAX_PASSWORD_BYTES:
            raise ValueError(
                f"bcrypt uses only the first {BCRYPT_MAX_PASSWORD_BYTES} bytes of a password"
            )
        cost = BCRYPT_COST_DEFAULT if rounds is None else rounds
        if not 4 <= cost <= 31:
            raise ValueError("bcrypt cost must be in 4..31")
        return "{BLF-CRYPT}" + bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost)).decode("ascii")
    if name in ("ARGON2I", "ARGON2ID"):
        encoded = argon2.low_level.hash_secret(
            secret,
            secrets.token_bytes(SALT_BYTES),
            time_cost=ARGON2_TIME_COST_DEFAULT if rounds is None else rounds,
            memory_cost=ARGON2_MEMORY_COST_KIB,
            parallelism=ARGON2_PARALLELISM,
            hash_len=ARGON2_HASH_LEN,
            type=argon2.low_level.Type.ID if name == "ARGON2ID" else argon2.low_level.Type.I,
        )
        return "{" + name + "}" + encoded.decode("ascii")
    raise UnsupportedScheme(name, "verified, but not generated")


def dummy_hash(like: PasswordHash) -> PasswordHash:
    """A hash of no known password that costs as much to verify as `like`.

    Same algorithm and cost parameters, random salt and digest; built
    without hashing, so it is cheap whatever the cost. Used for unknown
    users, so that they take the same time as known ones.
    """
    algorithm, cost = like.algorithm, like.cost
    name = algorithm.value
    if algorithm is Algorithm.PLAIN:
        stored = "{PLAIN}" + secrets.token_hex(16)
    elif algorithm is Algorithm.PLAIN_TRUNC:
        stored = "{PLAIN-TRUNC}32-" + secrets.token_hex(16)
    elif algorithm in (Algorithm.PLAIN_MD5, Algorithm.SHA1, Algorithm.SHA256, Algorithm.SHA512):
        stored = "{" + name + ".B64}" + _b64(secrets.token_bytes(_DIGEST_SIZE[algorithm]))
    elif algorithm in _SALTED:
        stored = "{" + name + "}" + _b64(secrets.token_bytes(_DIGEST_SIZE[algorithm] + cost[0]))
    elif algorithm is Algorithm.PBKDF2:
        salt = _random_crypt_chars(16)
        stored = f"{{PBKDF2}}$1${salt}${cost[0]}${secrets.token_hex(PBKDF2_KEY_BYTES)}"
    elif algorithm is Algorithm.MD5_CRYPT:
        stored = f"{{MD5-CRYPT}}$1${_random_crypt_chars(8)}${_random_crypt_chars(22)}"
    elif algorithm is Algorithm.DES_CRYPT:
        stored = "{DES-CRYPT}" + _random_crypt_chars(13)
    elif algorithm in (Algorithm.SHA256_CRYPT, Algorithm.SHA512_CRYPT):
        ident = "5" if algorithm is Algorithm.SHA256_CRYPT else "6"
        rounds = "" if cost[0] == SHA_CRYPT_ROUNDS_DEFAULT else f"rounds={cost[0]}$"
        salt = _random_crypt_chars(SHA_CRYPT_SALT_MAX)
        stored = (
            f"{{{name}}}${ident}${rounds}{salt}${_random_crypt_chars(_SHA_CRYPT_HASH_LEN[ident])}"
        )
    elif algorithm is Algorithm.BLF_CRYPT:
        # 23 random bytes in bcrypt's base64 make a well-formed 31-char digest.
        checksum = _b64_nopad(secrets.token_bytes(23)).translate(_BCRYPT_FROM_STD_B64)
        stored = "{BLF-CRYPT}" + bcrypt.gensalt(rounds=cost[0]).decode("ascii") + checksum
    else:
        version, memory, time, lanes, hash_len, salt_len = cost
        kind = "argon2id" if algorithm is Algorithm.ARGON2ID else "argon2i"
        salt = _b64_nopad(secrets.token_bytes(salt_len))
        digest = _b64_nopad(secrets.token_bytes(hash_len))
        stored = f"{{{name}}}${kind}$v={version}$m={memory},t={time},p={lanes}${salt}${digest}"
    return parse_password_hash(stored)
