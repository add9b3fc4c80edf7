"""SHA-crypt: the pure-Python and the libxcrypt paths against the reference vectors."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refd.auth import schemes
from refd.auth.schemes import (
    CRYPT_ALPHABET,
    SHA_CRYPT_MAX_PASSWORD_BYTES,
    hash_password,
    native_sha_crypt,
    native_sha_crypt_available,
    sha_crypt,
    verify_password,
)

LONG_TEXT = "a very much longer text to encrypt.  This one even stretches over morethan one line."
SHORT_SALT_TEXT = "we have a short salt string but not a short password"

# Drepper, https://www.akkadia.org/drepper/SHA-crypt.txt: (setting, password, result).
DREPPER_VECTORS = [
    ("$5$saltstring", "Hello world!",
     "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("$5$rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("$5$rounds=5000$toolongsaltstring", "This is just a test",
     "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"),
    ("$5$rounds=1400$anotherlongsaltstring", LONG_TEXT,
     "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"),
    ("$5$rounds=77777$short", SHORT_SALT_TEXT,
     "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"),
    ("$5$rounds=123456$asaltof16chars..", "a short string",
     "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"),
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdF"
     "CoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8"
     "vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1y"
     "xdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring", LONG_TEXT,
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9"
     "t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=77777$short", SHORT_SALT_TEXT,
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFm"
     "tlcGZelFl5CxtgfiAc0"),
    ("$6$rounds=123456$asaltof16chars..", "a short string",
     "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevo"
     "BK25fs2xXgMNrCzIMVcgEJAstJeonj1"),
]  # fmt: skip

# Below the minimum: the spec clamps to 1000; libxcrypt refuses the setting.
ROUNDS_TOO_LOW_VECTORS = [
    ("$5$rounds=10$roundstoolow", "the minimum number is still observed",
     "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4Z"
     "EQpyUNGc0dqbpBYYBaHHrsX."),
]  # fmt: skip

needs_native = pytest.mark.skipif(
    not native_sha_crypt_available(), reason="no libxcrypt with SHA-crypt on this system"
)


@pytest.mark.parametrize(
    ("setting", "password", "expected"), DREPPER_VECTORS + ROUNDS_TOO_LOW_VECTORS
)
def test_pure_sha_crypt_matches_drepper(setting: str, password: str, expected: str) -> None:
    assert sha_crypt(password.encode(), setting) == expected
    # The full hash string is itself a valid setting.
    assert sha_crypt(password.encode(), expected) == expected


@needs_native
@pytest.mark.parametrize(("setting", "password", "expected"), DREPPER_VECTORS)
def test_native_sha_crypt_matches_drepper(setting: str, password: str, expected: str) -> None:
    assert native_sha_crypt(password.encode(), setting) == expected


@needs_native
@pytest.mark.parametrize(("setting", "password", "expected"), DREPPER_VECTORS)
def test_crypt_r_fallback_matches_drepper(setting: str, password: str, expected: str) -> None:
    # Where only crypt_r exists (glibc's old libcrypt), the other ctypes call is used.
    native = schemes._load_libcrypt(use_crypt_rn=False)
    assert native is not None
    assert native.crypt(password.encode(), setting.encode()) == expected.encode()


@needs_native
@pytest.mark.parametrize(
    ("password", "setting"),
    [
        (b"x", "$5$rounds=10$roundstoolow"),
        (b"x", "$6$rounds=1000000000$abc"),
        (b"x", "$6$rounds=01000$abc"),
        (b"x", "$6$a*b"),
        (b"x" * 512, "$6$abc"),
        (b"x", "$1$abc"),
        (b"x", "$6$\u00e9"),
        (b"x\x00y", "$6$abc"),
    ],
)
def test_native_sha_crypt_refuses_what_libxcrypt_refuses(password: bytes, setting: str) -> None:
    assert native_sha_crypt(password, setting) is None


def test_pure_path_serves_when_libxcrypt_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemes, "native_sha_crypt", lambda password, setting: None)
    assert verify_password("{SHA256-CRYPT}" + DREPPER_VECTORS[0][2], "Hello world!") is True
    assert verify_password("{SHA256-CRYPT}" + DREPPER_VECTORS[0][2], "Hello world?") is False


def never(password: bytes, setting: str) -> str:
    raise AssertionError("hashed")


@pytest.mark.parametrize("variant", ["5", "6"])
def test_over_511_bytes_never_verifies_and_is_never_hashed(
    monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    # As crypt(3) in libxcrypt, which Dovecot verifies SHA-crypt with: a
    # phrase of 512 bytes or more is refused.  The pure path would take it
    # (and spend ~0.1 s holding the GIL), so it is refused before hashing.
    long_password = "p" * (SHA_CRYPT_MAX_PASSWORD_BYTES + 1)
    stored = "{CRYPT}" + sha_crypt(long_password.encode(), f"${variant}$saltsalt")
    monkeypatch.setattr(schemes, "native_sha_crypt", never)
    monkeypatch.setattr(schemes, "sha_crypt", never)
    assert verify_password(stored, long_password) is False
    with pytest.raises(ValueError, match=r"^SHA-crypt takes at most 511 bytes of password"):
        hash_password(f"SHA{256 if variant == '5' else 512}-CRYPT", long_password)


@needs_native
@pytest.mark.parametrize("length", [1, 72, 256, SHA_CRYPT_MAX_PASSWORD_BYTES])
@pytest.mark.parametrize("variant", ["5", "6"])
def test_every_accepted_length_is_verified_in_libxcrypt(
    monkeypatch: pytest.MonkeyPatch, length: int, variant: str
) -> None:
    password = "é" * (length // 2) + "p" * (length % 2)  # bytes, not characters, count
    assert len(password.encode()) == length
    stored = "{CRYPT}" + sha_crypt(password.encode(), f"${variant}$rounds=1000$saltsalt")
    monkeypatch.setattr(schemes, "sha_crypt", never)  # the pure path would fail the test
    assert verify_password(stored, password) is True
    assert verify_password(stored, password[:-1] + "q") is False


@pytest.mark.parametrize("setting", ["$1$abc", "$7$abc", "6$abc", "", "$5"])
def test_sha_crypt_rejects_other_settings(setting: str) -> None:
    with pytest.raises(ValueError, match=r"^not a \$5\$ or \$6\$ SHA-crypt setting$"):
        sha_crypt(b"x", setting)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("variant", ["5", "6"])
def test_openssl_passwd_agrees(variant: str) -> None:
    password = "correct horse battery staple"
    fixed = subprocess.run(
        ["openssl", "passwd", f"-{variant}", "-salt", "Zx9./saltABCDEF1", password],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    setting = f"${variant}$Zx9./saltABCDEF1"
    assert fixed.startswith(setting + "$")
    assert sha_crypt(password.encode(), setting) == fixed
    if native_sha_crypt_available():
        assert native_sha_crypt(password.encode(), setting) == fixed
    salted = subprocess.run(
        ["openssl", "passwd", f"-{variant}", password], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert verify_password(salted, password) is True
    assert verify_password(salted, password.upper()) is False


@needs_native
@settings(max_examples=40, deadline=None)
@given(
    password=st.binary(max_size=80).filter(lambda b: b"\x00" not in b),
    salt=st.text(alphabet=CRYPT_ALPHABET, max_size=20),
    variant=st.sampled_from(["5", "6"]),
    rounds=st.one_of(st.none(), st.integers(min_value=1000, max_value=1100)),
)
def test_pure_and_native_agree(
    password: bytes, salt: str, variant: str, rounds: int | None
) -> None:
    setting = f"${variant}$" + (f"rounds={rounds}$" if rounds is not None else "") + salt
    assert sha_crypt(password, setting) == native_sha_crypt(password, setting)
