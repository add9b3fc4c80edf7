"""Fixtures for interop tests: private Dovecot backends and a test CA.

- `dovecot_factory(**options) -> DovecotInstance` starts a private Dovecot
  (options: see `start_dovecot`); every instance is stopped and its
  directory removed at teardown. Call it several times for several backends.
- `dovecot`: one plain-text instance with the users in `USERS`.
- `tls_ca` (a trustme CA), `dovecot_cert` (a `ServerCert` from it for
  127.0.0.1, 127.0.0.2 and localhost), `client_ssl_context` (trusts only
  that CA). `c_client_cert(ca, host)`: a certificate that alpine accepts
  for an IP address literal (see there).

- `slapd_binary`: OpenLDAP's slapd (`tests/interop/slapd.py` starts private
  instances; `tests/interop/test_ldap.py` has the directory fixtures).

- `redis_server`: a private redis-server on loopback (`tests/interop/redis.py`),
  stopped by PID at teardown.
- `thunderbird`: one private headless Thunderbird for the whole session
  (`tests/interop/thunderbird.py`, driven through Marionette), stopped by PID
  at the end of the session.

Without a dovecot (redis-server, thunderbird) binary those fixtures skip on a developer
machine and fail under CI=true; any other skip of an `interop` test under CI=true is
turned into a failure too (`pytest_runtest_makereport` below).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .dovecot import INSTALL_HINT, DovecotInstance, ServerCert, find_dovecot, start_dovecot
from .redis import INSTALL_HINT as REDIS_HINT
from .redis import RedisInstance, find_redis, start_redis
from .slapd import INSTALL_HINT as SLAPD_HINT
from .slapd import find_slapd
from .thunderbird import INSTALL_HINT as THUNDERBIRD_HINT
from .thunderbird import ThunderbirdInstance, find_thunderbird, start_thunderbird

USERS = {
    "alice": "alice-password",
    "bob": "bob-password",
}

DovecotFactory = Callable[..., DovecotInstance]


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.skipped and under_ci() and item.get_closest_marker("interop") is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"interop test skipped under CI=true, which counts as a failure: {report.longrepr}"
        )
    return report


@pytest.fixture(scope="session")
def dovecot_binary() -> str:
    binary = find_dovecot()
    if binary is None:
        if under_ci():
            pytest.fail(f"{INSTALL_HINT} (CI=true: interop tests may not skip)")
        pytest.skip(INSTALL_HINT)
    return binary


@pytest.fixture
def dovecot_factory(dovecot_binary: str) -> Iterator[DovecotFactory]:
    instances: list[DovecotInstance] = []

    def start(**options: Any) -> DovecotInstance:
        options.setdefault("users", USERS)
        options.setdefault("name", f"backend{len(instances) + 1}")
        instance = start_dovecot(dovecot_binary, **options)
        instances.append(instance)
        return instance

    yield start
    for instance in instances:
        instance.stop()
    for instance in instances:
        shutil.rmtree(instance.directory, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_factory: DovecotFactory) -> DovecotInstance:
    return dovecot_factory()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def dovecot_cert(tls_ca: trustme.CA) -> ServerCert:
    leaf = tls_ca.issue_cert("127.0.0.1", "127.0.0.2", "localhost")
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    return ServerCert(chain_pem=chain, key_pem=leaf.private_key_pem.bytes())


def c_client_cert(ca: trustme.CA, host: str) -> ServerCert:
    """A certificate from `ca` for the IP address `host`, as alpine 2.26 checks it.

    c-client (alpine's IMAP library) compares the host of the folder name or
    referral URL, as text, with the certificate's subject entries and
    subjectAltName values read as text: it never decodes an IP address
    entry, and a subject with entries before the CN (trustme's O and OU)
    never matches. So `host` is the only subject entry (CN) and a DNS-name
    entry too; the IP address entry is what RFC-conforming clients check.
    """
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address(host))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServerCert(chain_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=key_pem)


@pytest.fixture
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    # With cadata, the system CAs are not loaded: only the test CA is trusted.
    return ssl.create_default_context(cadata=tls_ca.cert_pem.bytes().decode("ascii"))


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = find_redis()
    if binary is None:
        if under_ci():
            pytest.fail(f"{REDIS_HINT} (CI=true: interop tests may not skip)")
        pytest.skip(REDIS_HINT)
    return binary


@pytest.fixture
def redis_server(redis_binary: str, tmp_path: Path) -> Iterator[RedisInstance]:
    instance = start_redis(redis_binary, tmp_path / "redis")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def slapd_binary() -> str:
    binary = find_slapd()
    if binary is None:
        if under_ci():
            pytest.fail(f"{SLAPD_HINT} (CI=true: interop tests may not skip)")
        pytest.skip(SLAPD_HINT)
    return binary


@pytest.fixture(scope="session")
def thunderbird(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThunderbirdInstance]:
    binary = find_thunderbird()
    if binary is None:
        if under_ci():
            pytest.fail(f"{THUNDERBIRD_HINT} (CI=true: interop tests may not skip)")
        pytest.skip(THUNDERBIRD_HINT)
    instance = start_thunderbird(binary, tmp_path_factory.mktemp("thunderbird"))
    yield instance
    instance.stop()
