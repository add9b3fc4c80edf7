"""Thunderbird sets up an account from refd's account-setup documents.

The client is real Thunderbird (Debian's ``thunderbird`` package), headless,
one instance for the test session (the ``thunderbird`` fixture,
``tests/interop/thunderbird.py``), driven through Marionette. Each test
makes it run its own account-hub lookup (``FindConfig
.parallelAutoDiscovery``, or its Microsoft Autodiscover lookup alone) for
an address, and reads back the server it would configure. The door is a
``refd serve`` process with the demo's routing table and users
(``refd/demo/``: alice -> mail1.example.org:143, bob ->
mail2.example.org:10143, both STARTTLS; domain example.org, login name the
local part, submission smtp.example.org:587), its IMAP listener and its
autodiscovery listeners (plain HTTP, and implicit TLS with a test CA
certificate for the autoconfig./autodiscover. names) on free loopback ports.

Thunderbird only fetches from ports 80/443 of the mail domain's names, so
its proxy prefs send the lookups to the door: plain HTTP straight to the
HTTP listener (absolute-form requests), HTTPS through a CONNECT tunnel to
the TLS listener (``tests/interop/connect_tunnel.py``), with the test CA
added to Thunderbird's certificate store. Nothing is resolved in DNS except
Thunderbird's own MX and SRV look-ups, which find nothing for example.org
and only lose against the answers the door gives.

What is asserted, for each user: the incoming server Thunderbird would set
up (type, hostname, port, username) is the one refd's IMAP door names in
its login referral for that user, over the wire (``LOGIN`` -> ``[REFERRAL
imap://user;AUTH=*@host[:port]/]``); the socket type is STARTTLS; the
lookup that won is the one expected (``subSource``); and the door logged
the request for that user and server.

Thunderbird 153.8.0esr's behaviour, as these tests pin it down:

- Autoconfig is exact: hostname, port, ``socketType`` and the
  ``%EMAILLOCALPART%`` user name are used as sent. Over HTTPS,
  ``https://autoconfig.D`` wins (``xml-from-isp-https``); with HTTPS
  unreachable, ``http://autoconfig.D`` (``xml-from-isp-http``).
- Autodiscover (POX) sends HTTP Basic credentials only over HTTPS, with the
  full address as user name; over plain HTTP it sends none (refd answers
  401 when ``require_auth`` holds ``autodiscover``, the default).
- Autodiscover's TLS mode is guessed from the port: ``<Encryption>TLS``
  (STARTTLS) is ignored; 143 means STARTTLS, any other port implicit TLS.
  So bob (10143, STARTTLS) would be set up with implicit TLS through
  Autodiscover; the hub prefers the autoconfig answer, which is exact.

Seen by hand, not tested here: an autoconfig document without
``<outgoingServer>`` (refd's, for a domain and server with no
``submission``) is rejected ("Need proper <outgoingServer> in XML file"),
and the hub falls back to guessing.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme

from refd.config.loader import DEMO_CONFIG, load_routing
from tests.procs import Daemon, free_ports, session

from .connect_tunnel import ConnectTunnel
from .thunderbird import LookupFailed, ServerSetting, ThunderbirdInstance

pytestmark = pytest.mark.interop

#: the demo passwd-file's password for every user
PASSWORD = "secret"
DOMAIN = "example.org"
#: the names Thunderbird asks for a mail domain D: autoconfig.D, autodiscover.D, D
TLS_NAMES = (f"autoconfig.{DOMAIN}", f"autodiscover.{DOMAIN}", DOMAIN)


@dataclass(frozen=True)
class LoginReferral:
    user: str
    host: str
    port: int


@dataclass
class Door:
    imap_port: int
    http_port: int
    https_port: int
    daemon: Daemon

    def login_referral(self, user: str) -> LoginReferral:
        """What the door's IMAP LOGIN answers ``user`` with: the referral URL's parts."""
        lines = session(self.imap_port, f"a LOGIN {user} {PASSWORD}".encode(), b"z LOGOUT")
        text = b"".join(lines).decode()
        found = re.search(r"^a (?:OK|NO) \[REFERRAL (imap://\S+)\]", text, re.MULTILINE)
        assert found is not None, text
        url = urllib.parse.urlsplit(found[1])
        userinfo, _, hostport = url.netloc.rpartition("@")
        host, _, port = hostport.partition(":")
        # RFC 5092: iuserinfo is enc-user [iauth]; ";AUTH=*" is the auth part.
        return LoginReferral(
            user=urllib.parse.unquote(userinfo.split(";", 1)[0]),
            host=host,
            port=int(port) if port else 143,
        )

    def mark(self) -> int:
        """A position in the door's log: `logged` looks at lines after it."""
        while not self.daemon.lines.empty():
            self.daemon.log.append(self.daemon.lines.get_nowait())
        return len(self.daemon.log)

    def logged(self, needle: str, since: int) -> str:
        """A line the door logged after ``since`` containing ``needle`` (waiting for it)."""
        for line in self.daemon.log[since:]:
            if needle in line:
                return line
        return self.daemon.wait_log(needle, timeout=5)


@pytest.fixture(scope="module")
def door_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, door_ca: trustme.CA) -> Iterator[Door]:
    directory = tmp_path_factory.mktemp("door")
    leaf = door_ca.issue_cert(*TLS_NAMES)
    (directory / "fullchain.pem").write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    (directory / "privkey.pem").write_bytes(leaf.private_key_pem.bytes())
    imap_port, http_port, https_port = free_ports(3)
    config = DEMO_CONFIG.read_text()
    config = config.replace("port: 1143", f"port: {imap_port}")
    config = config.replace("port: 9143", "port: 0")
    # The demo's autodiscovery section, replaced by an HTTP and an HTTPS listener.
    config, replaced = re.subn(
        r"(?ms)^autodiscovery:.*?(?=^\S|\Z)",
        "autodiscovery:\n"
        "  listeners:\n"
        f"    - {{name: http, address: 127.0.0.1, port: {http_port}, tls: none}}\n"
        f"    - {{name: https, address: 127.0.0.1, port: {https_port}, tls: implicit}}\n",
        config,
    )
    assert replaced == 1, config
    config += f"tls:\n  cert: {directory / 'fullchain.pem'}\n  key: {directory / 'privkey.pem'}\n"
    (directory / "refd.yaml").write_text(config)
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, directory / name)
    daemon = Daemon(["serve", "-c", str(directory / "refd.yaml")])
    try:
        daemon.wait_log("refd ready")
        yield Door(imap_port, http_port, https_port, daemon)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def tunnel(door: Door) -> Iterator[ConnectTunnel]:
    with ConnectTunnel(door.https_port) as tunnel:
        yield tunnel


def imap_setting(referral: LoginReferral) -> ServerSetting:
    """The incoming server a client should set up for the user ``referral`` sends away."""
    return ServerSetting(
        type="imap",
        hostname=referral.host,
        port=referral.port,
        socket_type="alwaysSTARTTLS",
        username=referral.user,
        auth="passwordCleartext",
    )


def smtp_setting(user: str) -> ServerSetting:
    """The demo domain's submission server, with the user's login name."""
    return ServerSetting(
        type="smtp",
        hostname="smtp.example.org",
        port=587,
        socket_type="alwaysSTARTTLS",
        username=user,
        auth="passwordCleartext",
    )


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_autoconfig_over_http_names_the_login_referral_server(
    thunderbird: ThunderbirdInstance, door: Door, user: str
) -> None:
    referral = door.login_referral(user)
    since = door.mark()
    found = thunderbird.account_setup(
        f"{user}@{DOMAIN}", http_proxy=door.http_port, password=PASSWORD
    )
    assert found.sub_source == "xml-from-isp-http", found
    assert found.incoming == imap_setting(referral)
    assert found.outgoing == smtp_setting(user)
    assert found.incoming_alternatives == ()
    door.logged(
        f"protocol=autoconfig method=GET result=ok status=200 user={user} "
        f"server={referral.host}:{referral.port} ",
        since,
    )


@pytest.fixture(scope="module")
def trusting(thunderbird: ThunderbirdInstance, door_ca: trustme.CA) -> ThunderbirdInstance:
    """The session's Thunderbird, trusting the CA of the door's certificate."""
    thunderbird.trust_ca(door_ca.cert_pem.bytes())
    return thunderbird


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_autoconfig_over_https_names_the_login_referral_server(
    trusting: ThunderbirdInstance, door: Door, tunnel: ConnectTunnel, user: str
) -> None:
    referral = door.login_referral(user)
    since = door.mark()
    found = trusting.account_setup(
        f"{user}@{DOMAIN}",
        http_proxy=door.http_port,
        https_proxy=tunnel.port,
        password=PASSWORD,
    )
    # https://autoconfig.D/ comes first in Thunderbird's order, and it answered.
    assert found.sub_source == "xml-from-isp-https", found
    assert f"autoconfig.{DOMAIN}:443" in tunnel.targets
    assert found.incoming == imap_setting(referral)
    assert found.outgoing == smtp_setting(user)
    # The hub's Autodiscover lookup ran alongside, with the address as Basic user name.
    door.logged(
        f"protocol=autodiscover method=POST result=ok status=200 user={user} "
        f"server={referral.host}:{referral.port} ",
        since,
    )


@pytest.mark.parametrize(
    ("user", "socket_type"),
    [
        ("alice", "alwaysSTARTTLS"),
        # Thunderbird reads Autodiscover's TLS mode from the port: <Encryption>TLS
        # (STARTTLS) is ignored, 143 means STARTTLS, any other port implicit TLS.
        ("bob", "SSL"),
    ],
)
def test_autodiscover_with_credentials_names_the_login_referral_server(
    trusting: ThunderbirdInstance,
    door: Door,
    tunnel: ConnectTunnel,
    user: str,
    socket_type: str,
) -> None:
    referral = door.login_referral(user)
    since = door.mark()
    found = trusting.exchange_autodiscover(
        f"{user}@{DOMAIN}",
        http_proxy=door.http_port,
        https_proxy=tunnel.port,
        password=PASSWORD,
    )
    # https://autodiscover.D/autodiscover/autodiscover.xml, with Basic credentials.
    assert found.sub_source == "exchange-from-url1", found
    incoming = found.incoming
    assert (incoming.type, incoming.hostname, incoming.port, incoming.username) == (
        "imap",
        referral.host,
        referral.port,
        referral.user,
    )
    assert incoming.socket_type == socket_type
    assert found.outgoing is not None
    assert (found.outgoing.hostname, found.outgoing.port, found.outgoing.username) == (
        "smtp.example.org",
        587,
        user,
    )
    door.logged(
        f"protocol=autodiscover method=POST result=ok status=200 user={user} "
        f"server={referral.host}:{referral.port} ",
        since,
    )


def test_autodiscover_with_a_wrong_password_finds_nothing(
    trusting: ThunderbirdInstance, door: Door, tunnel: ConnectTunnel
) -> None:
    since = door.mark()
    with pytest.raises(LookupFailed):
        trusting.exchange_autodiscover(
            f"alice@{DOMAIN}",
            http_proxy=door.http_port,
            https_proxy=tunnel.port,
            password="not-" + PASSWORD,
        )
    failed = door.logged("protocol=autodiscover method=POST result=auth_failed status=401 ", since)
    assert "server=- " in failed
    assert "not-" + PASSWORD not in "".join(door.daemon.log)


def test_an_unknown_address_gets_the_domain_level_server(
    thunderbird: ThunderbirdInstance, door: Door
) -> None:
    table = load_routing(DEMO_CONFIG.parent / "routing.yaml")
    domain_level = table.domains[DOMAIN].server.imap_endpoint
    assert table.route_user("nobody") is None
    found = thunderbird.account_setup(f"nobody@{DOMAIN}", http_proxy=door.http_port)
    assert found.sub_source == "xml-from-isp-http", found
    assert found.incoming == imap_setting(
        LoginReferral(user="nobody", host=domain_level.host, port=domain_level.port)
    )
