"""Dovecot password schemes: verification table, parse errors, generation, dummies."""

from __future__ import annotations

import base64
import re

import argon2
import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refd.auth import schemes
from refd.auth.schemes import (
    MAX_PASSWORD_BYTES,
    Algorithm,
    MalformedHash,
    PasswordHash,
    SchemeError,
    UnsupportedScheme,
    check_password,
    dummy_hash,
    hash_password,
    parse_password_hash,
    verify_password,
)

# Literal hashes from outside this code base.
# Drepper's SHA-crypt reference vectors.
SHA256_CRYPT_HELLO = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
SHA512_CRYPT_HELLO = (
    "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM"
    "/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
)
# PHP's password_verify() documentation example, "rasmuslerdorf".
PHP_BCRYPT = "$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a"
# Openwall crypt_blowfish test vector, "U*U".
OPENWALL_BCRYPT = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
# The argon2 reference implementation's tests (phc-winner-argon2 src/test.c), "password".
REF_ARGON2I = (
    "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA"
)
REF_ARGON2ID = (
    "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
)
# sha256("secret"), hex and base64.
SHA256_SECRET_HEX = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
SHA256_SECRET_B64 = "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
SHA512_SECRET_B64 = (
    "vSsar3708Jvp9Szi2NWZZ02Bqp1qRCFpbcTZPdBhnWgs5WtNZKnvCXdhztmeD2cmW192CF5bDufKRpayrW/isg=="
)
# sha256("secret" + "salt") + "salt": the salt follows the digest.
SSHA256_SECRET = "+E+iFJ27Yu1ODPH1UNKUmzOmUT06dwfghQJRHHnMsO5zYWx0"
# sha512("secret" + "pepper12") + "pepper12", base64 and hex.
SSHA512_SECRET_B64 = (
    "LcgC6joyNAXcaNdbaf3sOEBXj8UoBflfKu3t/xuINyWwaYnOQuOT53bJUUqPHhF4b4LJWvSxNrR4D"
    "/RocQlVinBlcHBlcjEy"
)
SSHA512_SECRET_HEX = (
    "2dc802ea3a323405dc68d75b69fdec3840578fc52805f95f2aededff1b883725b06989ce42e393e7"
    "76c9514a8f1e11786f82c95af4b136b4780ff4687109558a7065707065723132"
)

VERIFY_TABLE = [
    # PLAIN and its aliases, encodings and case-insensitive names
    ("{PLAIN}secret", "secret", True),
    ("{PLAIN}secret", "Secret", False),
    ("{PLAIN}secret", "secre", False),
    ("{PLAIN}secret", "secret ", False),
    ("{plain}secret", "secret", True),
    ("{CLEAR}secret", "secret", True),
    ("{CLEARTEXT}secret", "secret", True),
    ("{PLAIN.b64}c2VjcmV0", "secret", True),
    ("{PLAIN.BASE64}c2VjcmV0", "secret", True),
    ("{PLAIN.B64}cGFzczp3b3Jk", "pass:word", True),
    ("{PLAIN.HEX}736563726574", "secret", True),
    ("{PLAIN.hex}736563726574", "secrets", False),
    ("{PLAIN}pässwörd", "pässwörd", True),
    ("{PLAIN.HEX}ff", "\udcff", True),  # a raw non-UTF-8 byte, surrogateescape'd
    # SHA256 / SHA512: base64 by default, hex guessed from the length
    ("{SHA256}" + SHA256_SECRET_HEX, "secret", True),
    ("{SHA256}" + SHA256_SECRET_B64, "secret", True),
    ("{SHA256}" + SHA256_SECRET_B64.rstrip("="), "secret", True),
    ("{SHA256.HEX}" + SHA256_SECRET_HEX.upper(), "secret", True),
    ("{SHA256.B64}" + SHA256_SECRET_B64, "secret", True),
    ("{SHA256}" + SHA256_SECRET_B64, "secret!", False),
    ("{SHA512}" + SHA512_SECRET_B64, "secret", True),
    ("{SHA512.hex}" + base64.b64decode(SHA512_SECRET_B64).hex(), "secret", True),
    ("{SHA512}" + SHA512_SECRET_B64, "wrong", False),
    # salted: digest then salt
    ("{SSHA256}" + SSHA256_SECRET, "secret", True),
    ("{SSHA256.B64}" + SSHA256_SECRET, "secret", True),
    ("{SSHA256}" + SSHA256_SECRET, "salt", False),
    ("{SSHA512}" + SSHA512_SECRET_B64, "secret", True),
    ("{SSHA512.HEX}" + SSHA512_SECRET_HEX, "secret", True),
    ("{SSHA512}" + SSHA512_SECRET_B64, "pepper12", False),
    # SHA-crypt, by name, through CRYPT, and bare (default scheme CRYPT)
    ("{SHA256-CRYPT}" + SHA256_CRYPT_HELLO, "Hello world!", True),
    ("{SHA256-CRYPT}" + SHA256_CRYPT_HELLO, "Hello world", False),
    ("{SHA512-CRYPT}" + SHA512_CRYPT_HELLO, "Hello world!", True),
    ("{SHA512-CRYPT}" + SHA512_CRYPT_HELLO, "hello world!", False),
    ("{CRYPT}" + SHA512_CRYPT_HELLO, "Hello world!", True),
    (SHA256_CRYPT_HELLO, "Hello world!", True),
    ("{SHA512-CRYPT.HEX}" + SHA256_CRYPT_HELLO.encode().hex(), "Hello world!", True),
    # bcrypt: PHP's $2y$, Openwall's $2a$, through BLF-CRYPT and CRYPT
    ("{BLF-CRYPT}" + PHP_BCRYPT, "rasmuslerdorf", True),
    ("{BLF-CRYPT}" + PHP_BCRYPT, "rasmuslerdorF", False),
    ("{CRYPT}" + PHP_BCRYPT, "rasmuslerdorf", True),
    (PHP_BCRYPT, "rasmuslerdorf", True),
    ("{BLF-CRYPT}" + OPENWALL_BCRYPT, "U*U", True),
    ("{BLF-CRYPT}" + OPENWALL_BCRYPT, "U*U*", False),
    # argon2: the reference implementation's vectors; the prefix picks the variant
    ("{ARGON2I}" + REF_ARGON2I, "password", True),
    ("{ARGON2I}" + REF_ARGON2I, "passwore", False),
    ("{ARGON2ID}" + REF_ARGON2ID, "password", True),
    ("{ARGON2ID}" + REF_ARGON2ID, "Password", False),
    ("{ARGON2I}" + REF_ARGON2ID, "password", True),
]


@pytest.mark.parametrize(("stored", "password", "expected"), VERIFY_TABLE)
def test_verify_table(stored: str, password: str, expected: bool) -> None:
    assert verify_password(stored, password) is expected


@pytest.mark.parametrize(
    ("stored", "default_scheme", "password", "expected"),
    [
        ("secret", "PLAIN", "secret", True),
        ("secret", "plain", "nope", False),
        (SSHA256_SECRET, "SSHA256", "secret", True),
        (SHA256_SECRET_HEX, "SHA256", "secret", True),
        ("{PLAIN}secret", "SHA512-CRYPT", "secret", True),
    ],
)
def test_default_scheme_applies_without_prefix(
    stored: str, default_scheme: str, password: str, expected: bool
) -> None:
    assert verify_password(stored, password, default_scheme=default_scheme) is expected


@pytest.mark.parametrize("kind", [argon2.Type.ID, argon2.Type.I])
def test_argon2_hashes_generated_by_argon2_cffi(kind: argon2.Type) -> None:
    # p=2 too: Dovecot (libsodium) only makes p=1, but other tools do not.
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=2, type=kind)
    stored = hasher.hash("secret")
    scheme = "ARGON2ID" if kind is argon2.Type.ID else "ARGON2I"
    assert verify_password("{" + scheme + "}" + stored, "secret") is True
    assert verify_password("{" + scheme + "}" + stored, "Secret") is False
    assert parse_password_hash("{" + scheme + "}" + stored).cost == (19, 1024, 1, 2, 32, 16)


def test_bcrypt_uses_the_first_72_bytes_like_crypt_blowfish() -> None:
    stored = "{BLF-CRYPT}" + bcrypt.hashpw(b"a" * 72, bcrypt.gensalt(rounds=4)).decode()
    assert verify_password(stored, "a" * 72 + "ignored") is True
    assert verify_password(stored, "a" * 71) is False


# crypt_blowfish's test vectors for the 8-bit password "\xff\xff\xa3": $2b$ and
# $2y$ give the correct bcrypt; its $2a$ gives another string (a countermeasure
# against the pre-2011 sign-extension bug), which pyca/bcrypt does not.
FF_FF_A3_BYTES = b"\xff\xff\xa3"
FF_FF_A3 = FF_FF_A3_BYTES.decode("utf-8", "surrogateescape")
BCRYPT_FF_FF_A3 = "/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e"
BCRYPT_FF_FF_A3_BLOWFISH_2A = "$2a$05$/OK.fbVrR/bpIqNJ5ianF.nqd1wy.pTMdcvrRWxyiGL2eMz.2a85."
SEVENTY_TWO_A = "$2b$04$" + "abcdefghijklmnopqrstuu"
BCRYPT_PATH_TABLE = [
    ("$2b$05$" + BCRYPT_FF_FF_A3, FF_FF_A3, True),
    ("$2y$05$" + BCRYPT_FF_FF_A3, FF_FF_A3, True),
    # pyca/bcrypt computes $2a$ as $2b$; libxcrypt is made to, so both agree.
    ("$2a$05$" + BCRYPT_FF_FF_A3, FF_FF_A3, True),
    (BCRYPT_FF_FF_A3_BLOWFISH_2A, FF_FF_A3, False),
    ("$2b$05$" + BCRYPT_FF_FF_A3, FF_FF_A3 + "x", False),
    (PHP_BCRYPT, "rasmuslerdorf", True),
    (PHP_BCRYPT, "rasmuslerdorF", False),
    (OPENWALL_BCRYPT, "U*U", True),
    (OPENWALL_BCRYPT, "U*V", False),
    # Only the first 72 bytes count, on both paths.
    (bcrypt.hashpw(b"a" * 72, SEVENTY_TWO_A.encode()).decode(), "a" * 72 + "ignored", True),
    (bcrypt.hashpw(b"a" * 72, SEVENTY_TWO_A.encode()).decode(), "a" * 71, False),
    (bcrypt.hashpw("é".encode() * 36, SEVENTY_TWO_A.encode()).decode(), "é" * 36 + "é", True),
]


def _no_pyca_bcrypt(password: bytes, hashed: bytes) -> bool:
    raise AssertionError("pyca/bcrypt called although libxcrypt passed its bcrypt self-test")


@pytest.mark.skipif(
    schemes.native_crypt(FF_FF_A3_BYTES, b"$2b$05$" + BCRYPT_FF_FF_A3.encode())
    != b"$2b$05$" + BCRYPT_FF_FF_A3.encode(),
    reason="no libxcrypt with bcrypt on this system",
)
@pytest.mark.parametrize(("stored", "password", "expected"), BCRYPT_PATH_TABLE)
def test_bcrypt_through_libxcrypt(
    monkeypatch: pytest.MonkeyPatch, stored: str, password: str, expected: bool
) -> None:
    monkeypatch.setattr(bcrypt, "checkpw", _no_pyca_bcrypt)
    assert verify_password("{BLF-CRYPT}" + stored, password) is expected
    assert verify_password(stored, password) is expected  # through CRYPT


@pytest.mark.parametrize(("stored", "password", "expected"), BCRYPT_PATH_TABLE)
def test_bcrypt_through_pyca_without_libxcrypt(
    monkeypatch: pytest.MonkeyPatch, stored: str, password: str, expected: bool
) -> None:
    monkeypatch.setattr(schemes, "_native_algorithms", frozenset)
    monkeypatch.setattr(schemes, "native_crypt", None)  # any call would fail the test
    assert verify_password("{BLF-CRYPT}" + stored, password) is expected


def test_bcrypt_falls_back_to_pyca_when_the_self_test_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if libcrypt's $2b$ gave another string for the 8-bit vector.
    wrong = {**schemes._NATIVE_ALGORITHM_SELF_TEST}
    wrong[Algorithm.BLF_CRYPT] = (
        FF_FF_A3_BYTES,
        b"$2b$" + BCRYPT_FF_FF_A3_BLOWFISH_2A[4:].encode(),
    )
    monkeypatch.setattr(schemes, "_NATIVE_ALGORITHM_SELF_TEST", wrong)
    schemes._native_algorithms.cache_clear()
    try:
        assert Algorithm.BLF_CRYPT not in schemes._native_algorithms()
        calls = []
        real_checkpw = bcrypt.checkpw

        def counting(password: bytes, hashed: bytes) -> bool:
            calls.append(hashed)
            return real_checkpw(password, hashed)

        monkeypatch.setattr(bcrypt, "checkpw", counting)
        assert verify_password("{BLF-CRYPT}" + PHP_BCRYPT, "rasmuslerdorf") is True
        assert calls == [PHP_BCRYPT.encode()]
    finally:
        schemes._native_algorithms.cache_clear()


@pytest.mark.parametrize(
    ("stored", "password", "expected"),
    [
        ("{PLAIN}a", "a\x00", False),  # Dovecot passwords are C strings
        ("{PLAIN.HEX}6100", "a\x00", False),
        ("{PLAIN}" + "x" * MAX_PASSWORD_BYTES, "x" * MAX_PASSWORD_BYTES, True),
        ("{PLAIN}" + "x" * (MAX_PASSWORD_BYTES + 1), "x" * (MAX_PASSWORD_BYTES + 1), False),
        ("{PLAIN}a", "\ud800", False),  # a lone surrogate is not a password
    ],
)
def test_passwords_that_never_verify(stored: str, password: str, expected: bool) -> None:
    assert verify_password(stored, password) is expected


PARSE_ERRORS = [
    ("{NOPE}abcdefgh", UnsupportedScheme, "unsupported scheme NOPE"),
    ("{sha3}abcdefgh", UnsupportedScheme, "unsupported scheme SHA3"),
    ("{SHA256.XYZ}" + SHA256_SECRET_HEX, UnsupportedScheme,
     "unsupported scheme SHA256.XYZ (unknown encoding suffix)"),
    ("{SHA256.}" + SHA256_SECRET_HEX, UnsupportedScheme,
     "unsupported scheme SHA256. (unknown encoding suffix)"),
    ("{my secret}abc", UnsupportedScheme, "unsupported scheme (unprintable name)"),
    ("{DES-CRYPT}abcdefghijkl", MalformedHash,
     "malformed DES-CRYPT password: not a crypt(3) string"),
    ("_J9..abcdefghijklmno", UnsupportedScheme,
     "unsupported scheme CRYPT (BSDi extended DES crypt)"),
    ("$1$saltsalt$hash", MalformedHash,
     "malformed MD5-CRYPT password: not a $1$ MD5-crypt string (salt of up to 8 characters)"),
    ("{MD5-CRYPT}$1$saltsalt9$" + "a" * 22, MalformedHash,
     "malformed MD5-CRYPT password: not a $1$ MD5-crypt string (salt of up to 8 characters)"),
    ("{MD5-CRYPT}$1$sa:t$" + "a" * 22, MalformedHash,
     "malformed MD5-CRYPT password: not a $1$ MD5-crypt string (salt of up to 8 characters)"),
    ("{MD5-CRYPT}" + SHA256_CRYPT_HELLO, MalformedHash,
     "malformed MD5-CRYPT password: not a $1$ MD5-crypt string"),
    ("{MD5}" + SHA256_CRYPT_HELLO, MalformedHash, "malformed MD5 password: not valid base64"),
    ("{PBKDF2}$2$salt$5000$" + "0" * 40, MalformedHash,
     "malformed PBKDF2 password: not a $1$salt$rounds$hex PBKDF2 string"),
    ("{PBKDF2}$1$salt$5000$" + "0" * 39, MalformedHash,
     "malformed PBKDF2 password: not a $1$salt$rounds$hex PBKDF2 string"),
    ("{PBKDF2}$1$salt$-5$" + "0" * 40, MalformedHash,
     "malformed PBKDF2 password: not a $1$salt$rounds$hex PBKDF2 string"),
    ("{PBKDF2}$1$salt$4294967296$" + "0" * 40, MalformedHash,
     "malformed PBKDF2 password: rounds 4294967296 is outside 1..4294967295"),
    ("{SSHA}" + base64.b64encode(b"x" * 20).decode(), MalformedHash,
     "malformed SSHA password: shorter than the 20-byte digest plus a salt"),
    ("{SMD5.HEX}" + "ab" * 16, MalformedHash,
     "malformed SMD5.HEX password: shorter than the 16-byte digest plus a salt"),
    ("{SHA1}abcd", MalformedHash, "malformed SHA1 password: digest is 3 bytes, expected 20"),
    ("{PLAIN-MD5.HEX}" + "ab" * 20, MalformedHash,
     "malformed PLAIN-MD5.HEX password: digest is 20 bytes, expected 16"),
    ("{PLAIN-TRUNC}secret", MalformedHash,
     "malformed PLAIN-TRUNC password: missing the <length>- prefix"),
    ("{CRYPT}$y$j9T$salt$hash", UnsupportedScheme, "unsupported scheme CRYPT ($y$ yescrypt)"),
    ("{SHA512-CRYPT}$7$salt", UnsupportedScheme, "unsupported scheme SHA512-CRYPT ($7$ scrypt)"),
    ("{CRYPT}$2x$05$" + "C" * 53, UnsupportedScheme,
     "unsupported scheme CRYPT ($2x$ bcrypt, the buggy pre-2011 variant)"),
    ("{CRYPT}" + REF_ARGON2ID, UnsupportedScheme,
     "unsupported scheme CRYPT (argon2 is not a crypt(3) format; use {ARGON2I} or {ARGON2ID})"),
    ("{CRYPT}secret", MalformedHash, "malformed CRYPT password: not a crypt(3) string"),
    ("{CRYPT}sécret", MalformedHash, "malformed CRYPT password: not ASCII"),
    ("{SHA256}abcd", MalformedHash, "malformed SHA256 password: digest is 3 bytes, expected 32"),
    ("{SHA256.HEX}" + SHA256_SECRET_B64, MalformedHash,
     "malformed SHA256.HEX password: not valid hex"),
    ("{SHA256.B64}" + SHA256_SECRET_HEX, MalformedHash,
     "malformed SHA256.B64 password: digest is 48 bytes, expected 32"),
    ("{SSHA256}!!!!", MalformedHash, "malformed SSHA256 password: not valid base64"),
    ("{SSHA256}" + "eHh4" * 10 + "eHg=", MalformedHash,
     "malformed SSHA256 password: shorter than the 32-byte digest plus a salt"),
    ("{PLAIN.B64}c2VjcmV0*", MalformedHash, "malformed PLAIN.B64 password: not valid base64"),
    ("{SHA512-CRYPT}$6$saltsalt$tooshort", MalformedHash,
     "malformed SHA512-CRYPT password: not a canonical SHA-crypt string"),
    ("{SHA512-CRYPT}$6$rounds=10$saltsalt$" + "a" * 86, MalformedHash,
     "malformed SHA512-CRYPT password: rounds=10 is below 1000"),
    ("{SHA512-CRYPT}$6$rounds=05000$saltsalt$" + "a" * 86, MalformedHash,
     "malformed SHA512-CRYPT password: not a canonical SHA-crypt string"),
    ("{SHA512-CRYPT}$6$salt:salt$" + "a" * 86, MalformedHash,
     "malformed SHA512-CRYPT password: not a canonical SHA-crypt string"),
    ("{SHA256-CRYPT}$5$saltstringsaltstri$" + "a" * 43, MalformedHash,
     "malformed SHA256-CRYPT password: not a canonical SHA-crypt string"),
    ("{BLF-CRYPT}" + SHA256_CRYPT_HELLO, MalformedHash,
     "malformed BLF-CRYPT password: not a $2a$/$2b$/$2y$ bcrypt string"),
    ("{BLF-CRYPT}" + PHP_BCRYPT[:-1], MalformedHash,
     "malformed BLF-CRYPT password: not a $2a$/$2b$/$2y$ bcrypt string"),
    ("{BLF-CRYPT}$2y$03$" + PHP_BCRYPT[7:], MalformedHash,
     "malformed BLF-CRYPT password: bcrypt cost 3 is outside 04..31"),
    ("{ARGON2ID}$argon2d$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
     MalformedHash, "malformed ARGON2ID password: not an $argon2i$ or $argon2id$ string"),
    ("{ARGON2ID}$argon2id$v=19$m=65536,t=0,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
     MalformedHash, "malformed ARGON2ID password: argon2 parameters out of range"),
    ("{ARGON2ID}$argon2id$v=19$garbage", MalformedHash,
     "malformed ARGON2ID password: not a valid argon2 PHC string"),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "error", "message"), PARSE_ERRORS)
def test_parse_errors(stored: str, error: type[SchemeError], message: str) -> None:
    with pytest.raises(error) as info:
        parse_password_hash(stored)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_verify_password_raises_for_an_unusable_hash() -> None:
    with pytest.raises(UnsupportedScheme) as info:
        verify_password("{NOPE}abcdefgh", "secret")
    assert info.value.scheme == "NOPE"


@pytest.mark.parametrize(
    ("stored", "scheme", "algorithm", "cost"),
    [
        ("{PLAIN}secret", "PLAIN", Algorithm.PLAIN, ()),
        ("{clear}secret", "CLEAR", Algorithm.PLAIN, ()),
        ("{SHA256}" + SHA256_SECRET_HEX, "SHA256", Algorithm.SHA256, ()),
        ("{SSHA256}" + SSHA256_SECRET, "SSHA256", Algorithm.SSHA256, (4,)),
        ("{SSHA512.hex}" + SSHA512_SECRET_HEX, "SSHA512.HEX", Algorithm.SSHA512, (8,)),
        (SHA256_CRYPT_HELLO, "CRYPT", Algorithm.SHA256_CRYPT, (5000,)),
        ("{SHA512-CRYPT}" + SHA512_CRYPT_HELLO, "SHA512-CRYPT", Algorithm.SHA512_CRYPT, (10000,)),
        ("{CRYPT}" + PHP_BCRYPT, "CRYPT", Algorithm.BLF_CRYPT, (10,)),
        ("{BLF-CRYPT}" + OPENWALL_BCRYPT, "BLF-CRYPT", Algorithm.BLF_CRYPT, (5,)),
        ("{ARGON2I}" + REF_ARGON2I, "ARGON2I", Algorithm.ARGON2I, (19, 65536, 2, 1, 32, 8)),
        ("{ARGON2I}" + REF_ARGON2ID, "ARGON2I", Algorithm.ARGON2ID, (19, 65536, 2, 1, 32, 8)),
    ],
)
def test_parse_reports_algorithm_and_cost(
    stored: str, scheme: str, algorithm: Algorithm, cost: tuple[int, ...]
) -> None:
    parsed = parse_password_hash(stored)
    assert (parsed.scheme, parsed.algorithm, parsed.cost) == (scheme, algorithm, cost)


def test_password_hash_repr_hides_the_value() -> None:
    parsed = parse_password_hash("{PLAIN}hunter2")
    assert repr(parsed) == (
        "PasswordHash(scheme='PLAIN', algorithm=<Algorithm.PLAIN: 'PLAIN'>, cost=())"
    )


# --- generation ---------------------------------------------------------------

_C = "[./0-9A-Za-z]"  # crypt base64
_B = "[./A-Za-z0-9]"  # bcrypt base64
_S = "[A-Za-z0-9+/]"  # standard base64
_ARGON2_PARAMS = r"\$v=19\$m=65536,t=1,p=1\$"
GENERATED_SHAPES = [
    ("PLAIN", None, r"\{PLAIN\}s3cret pass"),
    ("SSHA256", None, rf"\{{SSHA256\}}{_S}{{64}}"),
    ("SSHA512", None, rf"\{{SSHA512\}}{_S}{{107}}="),
    ("SHA256-CRYPT", None, rf"\{{SHA256-CRYPT\}}\$5\${_C}{{16}}\${_C}{{43}}"),
    ("SHA512-CRYPT", None, rf"\{{SHA512-CRYPT\}}\$6\${_C}{{16}}\${_C}{{86}}"),
    ("sha512-crypt", 6000, rf"\{{SHA512-CRYPT\}}\$6\$rounds=6000\${_C}{{16}}\${_C}{{86}}"),
    ("BLF-CRYPT", 4, rf"\{{BLF-CRYPT\}}\$2b\$04\${_B}{{53}}"),
    ("ARGON2ID", 1, rf"\{{ARGON2ID\}}\$argon2id{_ARGON2_PARAMS}{_S}{{22}}\${_S}{{43}}"),
    ("ARGON2I", 1, rf"\{{ARGON2I\}}\$argon2i{_ARGON2_PARAMS}{_S}{{22}}\${_S}{{43}}"),
]


@pytest.mark.parametrize(("scheme", "rounds", "shape"), GENERATED_SHAPES)
def test_hash_password_shape_and_round_trip(scheme: str, rounds: int | None, shape: str) -> None:
    stored = hash_password(scheme, "s3cret pass", rounds=rounds)
    assert re.fullmatch(shape, stored), stored
    assert verify_password(stored, "s3cret pass") is True
    assert verify_password(stored, "s3cret pasS") is False


def test_hash_password_salts_every_hash() -> None:
    assert hash_password("SSHA256", "secret") != hash_password("SSHA256", "secret")


@pytest.mark.parametrize(
    ("password", "stored"),
    [
        ("pass:word", "{PLAIN.B64}cGFzczp3b3Jk"),
        ("line\nbreak", "{PLAIN.B64}bGluZQpicmVhaw=="),
        ("secret", "{PLAIN}secret"),
    ],
)
def test_plain_is_base64_when_a_passwd_file_could_not_hold_it(password: str, stored: str) -> None:
    assert hash_password("PLAIN", password) == stored


@pytest.mark.parametrize(
    ("scheme", "password", "rounds", "error", "message"),
    [
        ("NOPE", "secret", None, UnsupportedScheme, "unsupported scheme NOPE"),
        ("SHA256", "secret", None, UnsupportedScheme,
         "unsupported scheme SHA256 (verified, but not generated)"),
        ("CRYPT", "secret", None, UnsupportedScheme,
         "unsupported scheme CRYPT (verified, but not generated)"),
        ("PLAIN", "secret", 5, ValueError, "PLAIN takes no rounds"),
        ("PLAIN", "a\x00b", None, ValueError, "a password cannot contain NUL"),
        ("SHA512-CRYPT", "secret", 999, ValueError, "SHA-crypt rounds must be in 1000..999999999"),
        ("BLF-CRYPT", "secret", 3, ValueError, "bcrypt cost must be in 4..31"),
        ("BLF-CRYPT", "x" * 73, 4, ValueError,
         "bcrypt uses only the first 72 bytes of a password"),
    ],
)  # fmt: skip
def test_hash_password_errors(
    scheme: str, password: str, rounds: int | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        hash_password(scheme, password, rounds=rounds)
    assert str(info.value) == message


@settings(max_examples=60, deadline=None)
@given(
    password=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    scheme=st.sampled_from(["PLAIN", "SSHA256", "SSHA512"]),
)
def test_generated_hashes_verify_any_text(password: str, scheme: str) -> None:
    stored = hash_password(scheme, password)
    assert ":" not in stored and "\n" not in stored
    assert verify_password(stored, password) is True
    assert verify_password(stored, password + "x") is False


# --- dummies for unknown users ------------------------------------------------

DUMMY_LIKE = [
    "{PLAIN}secret",
    "{SHA256}" + SHA256_SECRET_HEX,
    "{SHA512}" + SHA512_SECRET_B64,
    "{SSHA256}" + SSHA256_SECRET,
    "{SSHA512}" + SSHA512_SECRET_B64,
    SHA256_CRYPT_HELLO,
    "{SHA512-CRYPT}" + SHA512_CRYPT_HELLO,
    "{BLF-CRYPT}" + OPENWALL_BCRYPT,
    "{ARGON2ID}" + argon2.PasswordHasher(time_cost=2, memory_cost=512, parallelism=2).hash("x"),
    "{ARGON2I}$argon2i$v=16$m=256,t=1,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA",
    "{PLAIN-TRUNC}6-secret",
    "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
    "{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
    "{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=",
    "{SSHA}L9qz7gS7Wx/7R+nSHJoizbiCfso2d8zh",
    "{SMD5}+Gt3a76vG09notmwriUvAJbmB40=",
    "{MD5-CRYPT}$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.",
    "{CRYPT}d.eSsVuuYTv7I",
    "{PBKDF2}$1$HzZ7EaTyGN74L820$7000$9169f636ff2699a4714f50dec6b75b07bbd9d87d",
]


@pytest.mark.parametrize("stored", DUMMY_LIKE)
def test_dummy_hash_has_the_same_algorithm_and_cost(stored: str) -> None:
    like = parse_password_hash(stored)
    dummy = dummy_hash(like)
    assert (dummy.algorithm, dummy.cost) == (like.algorithm, like.cost)
    assert dummy.value != like.value
    # A full verification runs and fails; it does not bail out on a bad shape.
    assert check_password(dummy, "secret") is False


def test_dummy_hashes_differ_each_time() -> None:
    like = parse_password_hash("{SHA512-CRYPT}" + SHA512_CRYPT_HELLO)
    assert dummy_hash(like) != dummy_hash(like)


def test_dummy_sha_crypt_keeps_the_rounds() -> None:
    like = parse_password_hash("{SHA512-CRYPT}" + SHA512_CRYPT_HELLO)
    assert dummy_hash(like).value.startswith(b"$6$rounds=10000$")
    assert isinstance(dummy_hash(like), PasswordHash)
