"""The schemes existing Dovecot installations carry, checked against Dovecot itself.

Three tiers:

- `KNOWN`: a fixed table of (stored, password) vectors for every scheme,
  verified by refd's code with no Dovecot around. The right password must
  verify and a wrong one ("X" + it: a different first byte, so that even
  DES crypt's 8 characters and PLAIN-TRUNC's prefix see a difference) must
  not.
- The same table given to `doveadm pw -t`, Dovecot's own verification: its
  verdict must be refd's, so the table holds no vector Dovecot reads
  differently.
- Hashes made at test time by `doveadm pw -s SCHEME -p PASSWORD` for every
  scheme, with the `.b64`/`.hex` encodings, ASCII and non-ASCII passwords,
  and then verified by refd's code.

The doveadm tests are `interop`: they skip without doveadm on a developer
machine and fail under CI=true. doveadm runs with an empty private config
(`-c`), so it reads nothing of the host's Dovecot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from refd.auth.schemes import MalformedHash, parse_password_hash, verify_password

NON_ASCII = "pässwörd ☃"  # UTF-8, as Dovecot hashes it

# (stored, password). Where not said otherwise, made once by doveadm pw
# (Dovecot 2.3.19) and kept here as text.
KNOWN = [
    # MD5-crypt, by name, through MD5 and CRYPT, bare, encoded
    ("{MD5-CRYPT}$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.", "secret"),
    ("{MD5-CRYPT}$1$oecI/C76$ZSlrsokAoSMVUhyVM8NWi1", NON_ASCII),
    ("{MD5}$1$lG1onFDv$QfarpVJvFNK4Vh3f/nQIN1", "secret"),
    ("{CRYPT}$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.", "secret"),
    ("$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.", "secret"),
    ("{MD5-CRYPT.B64}JDEkdDJVNm5uNVYkWGt5aWNDcm54czc4SXNwa3ZYUWJSMQ==", NON_ASCII),
    # passlib's md5_crypt test vector
    ("$1$3azHgidD$SrJPt7B.9rekpmwJwtON31", "password"),
    # traditional DES crypt: by name, through CRYPT, bare (the passwd-file default)
    ("{DES-CRYPT}d.eSsVuuYTv7I", "secret"),
    ("{CRYPT}d.eSsVuuYTv7I", "secret"),
    ("d.eSsVuuYTv7I", "secret"),
    ("{DES-CRYPT}DxeWhueaFPw72", NON_ASCII),
    ("{DES-CRYPT.HEX}474979547a31526d71334e5667", NON_ASCII),
    # crypt(3) DES uses the first 8 characters: "longpassword" as "longpass"
    ("{DES-CRYPT}OxNwKIzsGzPJs", "longpassword"),
    ("{DES-CRYPT}OxNwKIzsGzPJs", "longpass"),
    # SHA-1: base64 by default, hex guessed from the length or named
    ("{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),
    ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),
    ("{SHA1}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4", "secret"),
    ("{SHA1.HEX}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4", "secret"),
    ("{SHA1}re6L5VY4rugCnM1UaRmskpVI8UY=", NON_ASCII),
    ("{SHA.HEX}adee8be55638aee8029ccd546919ac929548f146", NON_ASCII),
    # salted SHA-1 and MD5: digest, then a 4-byte salt
    ("{SSHA}L9qz7gS7Wx/7R+nSHJoizbiCfso2d8zh", "secret"),
    ("{SSHA.B64}oyU8jzeQc4q5yCb6JnLvFcDYxtZdQK/g", "secret"),
    ("{SSHA}HgEF7K1rXIZiA3IzuKNcc+tdfBJHl4Nx", NON_ASCII),
    ("{SSHA.HEX}cc7bf8ecc24230c6b3e2902ec43d0cd2cdebe392db8e27c9", NON_ASCII),
    ("{SMD5}+Gt3a76vG09notmwriUvAJbmB40=", "secret"),
    ("{SMD5.HEX}dcaa9d3b960af3be9a2cb444d64fdf639f8e53cb", "secret"),
    ("{SMD5}jlfPgiLgTMbpA+rR37ZkQ6KJRDI=", NON_ASCII),
    ("{SMD5.B64}oKS9028I0v0fBi0efKQC/T1PYOU=", NON_ASCII),
    # MD5 digests: PLAIN-MD5 hex by default, LDAP-MD5 base64; both guess by length
    ("{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69", "secret"),  # md5("secret")
    ("{PLAIN-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"),
    ("{PLAIN-MD5.B64}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"),
    ("{PLAIN-MD5}e26ea683e42de1777fda7943dfa8b1fd", NON_ASCII),
    ("{MD5}5ebe2294ecd0e0f08eab7690d2a6ee69", "secret"),
    ("{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"),
    ("{LDAP-MD5.HEX}5ebe2294ecd0e0f08eab7690d2a6ee69", "secret"),
    ("{LDAP-MD5}4m6mg+Qt4Xd/2nlD36ix/Q==", NON_ASCII),
    # PBKDF2: RFC 6070's PBKDF2-HMAC-SHA1 vectors (salt "salt"), then doveadm's
    ("{PBKDF2}$1$salt$1$0c60c80f961f0e71f3a9b524af6012062fe037a6", "password"),
    ("{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957", "password"),
    ("{PBKDF2}$1$salt$4096$4b007901b765489abead49d926f721d065a429c1", "password"),
    ("{PBKDF2}$1$HzZ7EaTyGN74L820$5000$9169f636ff2699a4714f50dec6b75b07bbd9d87d", "secret"),
    ("{PBKDF2}$1$M3l1dE4QkK4DjoZa$1000$552a1f8b127a73657c8b2d33828cec38beb3b166", "secret"),
    ("{PBKDF2}$1$.mNKNCQdriNS2gyj$5000$15802c01d860d090495043c1e83a8669f932bb4c", NON_ASCII),
    ("{PBKDF2.B64}JDEkZVBZUmN1Y1ZsNXFrYnVJWSQ1MDAwJDkyYWNiYzgzY2Y0N2ViMzM4MjU4ZDI4MjUwYWMzMGZm"
     "MzI1ZTVjYjA=", "secret"),
    # PLAIN-TRUNC: "<n>-<password>"; with n = the stored length, a longer password
    # whose first n bytes match is accepted too
    ("{PLAIN-TRUNC}6-secret", "secret"),
    ("{PLAIN-TRUNC}3-sec", "secret"),
    ("{PLAIN-TRUNC}3-sec", "sec"),
    # the schemes refd had before, through doveadm's output
    ("{CRYPT}$2y$05$1Wi7JbIKKeuQ661X7j1srOld9wkP0mSe88qRnezAo2U4gwiaHMonm", "secret"),
    ("{SHA256.HEX}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", "secret"),
    ("{PLAIN.HEX}70c3a4737377c3b6726420e29883", NON_ASCII),
    ("{CLEAR.B64}cMOkc3N3w7ZyZCDimIM=", NON_ASCII),
]  # fmt: skip

# Answers that are not "the right password and nothing else".
KNOWN_REFUSED = [
    ("{PLAIN-TRUNC}6-secret", "secre"),  # shorter than the stored part
    ("{PLAIN-TRUNC}3-sec", "se"),
    ("{PBKDF2}$1$salt$2$0c60c80f961f0e71f3a9b524af6012062fe037a6", "password"),  # rounds count
    ("{SSHA}L9qz7gS7Wx/7R+nSHJoizbiCfso2d8zh", "secret\x00"),  # C strings: no NUL
]


def wrong(password: str) -> str:
    return "X" + password


@pytest.mark.parametrize(("stored", "password"), KNOWN)
def test_known_vectors_verify_and_a_wrong_password_does_not(stored: str, password: str) -> None:
    assert verify_password(stored, password) is True
    assert verify_password(stored, wrong(password)) is False


@pytest.mark.parametrize(("stored", "password"), KNOWN_REFUSED)
def test_known_refusals(stored: str, password: str) -> None:
    assert verify_password(stored, password) is False


# --- against doveadm ---------------------------------------------------------------


@pytest.fixture(scope="module")
def doveadm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The doveadm command with a private, empty config; skip (fail under CI) without it."""
    binary = os.environ.get("REFD_DOVEADM") or shutil.which("doveadm") or "/usr/bin/doveadm"
    if not os.access(binary, os.X_OK):
        hint = "doveadm not installed: apt-get install dovecot-core"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{hint} (CI=true: interop tests may not skip)")
        pytest.skip(hint)
    config = tmp_path_factory.mktemp("doveadm") / "dovecot.conf"
    config.write_text("")
    yield [binary, "-c", str(config), "pw"]


def doveadm_verifies(doveadm: list[str], stored: str, password: str) -> bool:
    done = subprocess.run(
        [*doveadm, "-t", stored, "-p", password],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # 0: verified; 75 (EX_TEMPFAIL): "reverse password verification check failed"
    assert done.returncode in (0, 75), done.stderr
    return done.returncode == 0


@pytest.mark.interop
@pytest.mark.parametrize(("stored", "password"), KNOWN + KNOWN_REFUSED[:3])
def test_doveadm_agrees_with_the_known_table(
    doveadm: list[str], stored: str, password: str
) -> None:
    expected = (stored, password) not in KNOWN_REFUSED
    # Without a {SCHEME}, a passwd-file means CRYPT; doveadm pw -t must be told.
    as_dovecot = stored if stored.startswith(("{", "$1$")) else "{CRYPT}" + stored
    assert doveadm_verifies(doveadm, as_dovecot, password) is expected
    assert verify_password(stored, password) is expected
    assert doveadm_verifies(doveadm, as_dovecot, wrong(password)) is False


# Every scheme doveadm makes a password refd can verify with, and the
# encodings tried on each. Argon2 and the crypt(3) schemes cost most; one
# encoding each keeps the run short.
GENERATED = {
    "MD5-CRYPT": ("", ".b64", ".hex"),
    "MD5": ("", ".b64"),
    "DES-CRYPT": ("", ".hex"),
    "CRYPT": ("", ".b64"),
    "SHA1": ("", ".b64", ".hex"),
    "SHA": ("", ".hex"),
    "SSHA": ("", ".b64", ".hex"),
    "SMD5": ("", ".b64", ".hex"),
    "PLAIN-MD5": ("", ".b64", ".hex"),
    "LDAP-MD5": ("", ".b64", ".hex"),
    "PBKDF2": ("", ".b64", ".hex"),
    "PLAIN": ("", ".b64", ".hex"),
    "CLEAR": ("", ".hex"),
    "CLEARTEXT": ("", ".b64"),
    "SHA256": ("", ".b64", ".hex"),
    "SHA512": ("", ".hex"),
    "SSHA256": ("", ".hex"),
    "SSHA512": ("", ".b64"),
    "SHA256-CRYPT": ("", ".hex"),
    "SHA512-CRYPT": ("", ".b64"),
    "BLF-CRYPT": ("",),
    "ARGON2I": ("",),
    "ARGON2ID": ("",),
}
PASSWORDS = ("secret", NON_ASCII, "with space: and {braces}")
CASES = [
    (scheme + encoding, password)
    for scheme, encodings in GENERATED.items()
    for encoding in encodings
    for password in (PASSWORDS if encoding == "" else PASSWORDS[1:2])
]


@pytest.fixture(scope="module")
def generated(doveadm: list[str]) -> dict[tuple[str, str], str]:
    """`doveadm pw -s SCHEME -p PASSWORD` for every case, two at a time."""

    def make(case: tuple[str, str]) -> str:
        scheme, password = case
        done = subprocess.run(
            [*doveadm, "-s", scheme, "-p", password],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(make, CASES), strict=True))


@pytest.mark.interop
@pytest.mark.parametrize(("scheme", "password"), CASES)
def test_doveadm_hashes_verify(
    generated: dict[tuple[str, str], str], scheme: str, password: str
) -> None:
    stored = generated[scheme, password]
    assert stored.upper().startswith("{" + scheme.upper() + "}"), stored
    assert verify_password(stored, password) is True
    assert verify_password(stored, wrong(password)) is False


@pytest.mark.interop
def test_doveadm_plain_trunc_output_is_refused_by_both(doveadm: list[str]) -> None:
    # doveadm writes PLAIN-TRUNC without its length prefix; Dovecot itself
    # then refuses it ("PLAIN-TRUNC missing length: prefix"), and so does refd,
    # at load rather than at login.
    stored = subprocess.run(
        [*doveadm, "-s", "PLAIN-TRUNC", "-p", "secret"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert stored == "{PLAIN-TRUNC}secret"
    assert doveadm_verifies(doveadm, stored, "secret") is False
    with pytest.raises(MalformedHash, match=r"^malformed PLAIN-TRUNC password: missing the"):
        parse_password_hash(stored)


def test_every_listed_scheme_is_covered() -> None:
    listed = {"MD5-CRYPT", "SHA1", "SSHA", "SMD5", "PLAIN-MD5", "LDAP-MD5", "PBKDF2", "CRYPT"}
    assert listed <= set(GENERATED)
    known = {parse_password_hash(stored).algorithm.value for stored, _ in KNOWN}
    assert {"MD5-CRYPT", "DES-CRYPT", "SHA1", "SSHA", "SMD5", "PLAIN-MD5", "PBKDF2"} <= known
