"""refd.autodiscovery.signing: a profile signed with the door's certificate,
checked by OpenSSL (``openssl cms -verify``), the way a device checks it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trustme

from refd.autodiscovery.answer import setup_answer
from refd.autodiscovery.documents import mobileconfig
from refd.autodiscovery.signing import sign_profile

from ._support import example_table


@pytest.fixture(scope="module")
def profile() -> bytes:
    answer = setup_answer(example_table(), "carol@example.org")
    assert answer is not None
    return mobileconfig(answer)


def openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False)


def verify(signed: bytes, ca: trustme.CA, tmp: Path) -> tuple[int, bytes, bytes]:
    """``openssl cms -verify`` against ``ca``: (exit code, content, stderr)."""
    (tmp / "signed.der").write_bytes(signed)
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    done = openssl(
        "cms", "-verify", "-inform", "DER", "-in", str(tmp / "signed.der"),
        "-CAfile", str(tmp / "ca.pem"), "-purpose", "any", "-out", str(tmp / "content"),
    )  # fmt: skip
    content = (tmp / "content").read_bytes() if done.returncode == 0 else b""
    return done.returncode, content, done.stderr


def test_signed_with_a_chain_verifies_and_carries_the_profile(
    profile: bytes, tmp_path: Path
) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("autodiscover.example.org")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)  # leaf, intermediate
    signed = sign_profile(profile, chain, leaf.private_key_pem.bytes())
    assert signed[:1] == b"\x30"  # DER SEQUENCE: ContentInfo
    code, content, stderr = verify(signed, root, tmp_path)
    assert (code, stderr) == (0, b"CMS Verification successful\n")
    assert content == profile
    # Both certificates travel with the signature (the device builds the path).
    (tmp_path / "signed.der").write_bytes(signed)
    printed = openssl(
        "pkcs7", "-inform", "DER", "-in", str(tmp_path / "signed.der"), "-print_certs"
    )
    subjects = [line for line in printed.stdout.decode().splitlines() if line.startswith("subject")]
    assert len(subjects) == 2


def test_smime_verify_without_chain_check(profile: bytes, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("autodiscover.example.org")
    signed = sign_profile(profile, cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes())
    (tmp_path / "signed.der").write_bytes(signed)
    done = openssl(
        "smime", "-verify", "-noverify", "-inform", "DER", "-in", str(tmp_path / "signed.der"),
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == profile


def test_one_file_with_key_and_chain(profile: bytes, tmp_path: Path) -> None:
    """The daemon's TLS file can hold key and chain together, in either order."""
    ca = trustme.CA()
    cert = ca.issue_cert("autodiscover.example.org")
    key_first = cert.private_key_and_cert_chain_pem.bytes()
    cert_first = cert.cert_chain_pems[0].bytes() + cert.private_key_pem.bytes()
    for both in (key_first, cert_first):
        code, content, _ = verify(sign_profile(profile, both, both), ca, tmp_path)
        assert (code, content) == (0, profile)


def test_a_tampered_profile_fails_verification(profile: bytes, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("autodiscover.example.org")
    signed = bytearray(
        sign_profile(profile, cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes())
    )
    at = bytes(signed).index(b"mail2.example.org")
    signed[at : at + 5] = b"evil2"
    code, content, _ = verify(bytes(signed), ca, tmp_path)
    assert code != 0
    assert content == b""


def test_a_key_of_another_certificate_is_refused(profile: bytes) -> None:
    ca = trustme.CA()
    one, other = ca.issue_cert("a.example.org"), ca.issue_cert("b.example.org")
    with pytest.raises(ValueError, match="does not belong to the first certificate"):
        sign_profile(profile, one.cert_chain_pems[0].bytes(), other.private_key_pem.bytes())
    with pytest.raises(ValueError, match="no private key"):
        sign_profile(profile, one.cert_chain_pems[0].bytes(), one.cert_chain_pems[0].bytes())
