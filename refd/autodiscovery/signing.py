"""Signing an Apple configuration profile: a CMS SignedData that carries it.

A device shows a signed profile as "Verified" when it trusts the signer's
chain; an unsigned one installs too, marked "Unverified". The signature is
PKCS #7 / CMS SignedData (RFC 5652 §5) with the profile as encapsulated
content, made by cryptography's ``PKCS7SignatureBuilder``: the door's own
TLS certificate and key sign it, and the rest of the certificate file (the
chain) rides along so the device can build the path. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

__all__ = ["sign_profile"]

# The private key block of a PEM file (PKCS #8, or the RSA / EC forms), so that
# a file holding the key and the certificates in any order can be given.
_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:RSA |EC )?PRIVATE KEY)-----\r?\n.*?-----END \1-----", re.DOTALL
)


def sign_profile(data: bytes, cert_pem: bytes, key_pem: bytes) -> bytes:
    """``data`` wrapped in a DER CMS SignedData, signed with SHA-256.

    ``cert_pem`` is the signer's certificate followed by its chain (a
    "fullchain" file); ``key_pem`` its unencrypted private key (RSA or
    EC); both may be one file holding key and chain, in any order.
    ValueError when there is no certificate or key, or when the key does
    not belong to the first certificate.
    """
    certs = x509.load_pem_x509_certificates(cert_pem)
    block = _KEY_BLOCK.search(key_pem)
    if block is None:
        raise ValueError("no private key in the key file")
    key = serialization.load_pem_private_key(block.group(0), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("a profile is signed with an RSA or EC key")
    if key.public_key() != certs[0].public_key():
        raise ValueError("the key does not belong to the first certificate")
    builder = (
        pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(certs[0], key, hashes.SHA256())
    )
    for cert in certs[1:]:
        builder = builder.add_certificate(cert)
    # Binary: the content is signed byte for byte (without it, the builder
    # rewrites LF as CRLF, S/MIME's text canonical form, and the device
    # would get another document than the one served unsigned).
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
