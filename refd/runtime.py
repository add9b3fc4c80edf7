"""What is in service, as values: the tables, the policy, who the client is.

:class:`Service` holds everything one moment of the door serves with (the
routing table, the authentication source, the session policy, the limits,
the TLS context); a reload builds a new one and swaps the one
:class:`ServiceRef`.  :class:`ClientInfo` says who is on the other end of a
connection.  These are values the config loader builds and the session reads:
this module imports no trio, no sockets and no Prometheus, so ``refd.config``
can be imported without them (tests/test_boundaries.py).  What sessions share
at run time (counters, the throttle, the stop event) is
:class:`refd.door.DoorState`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from refd.addresses import LOOPBACK, IPNetwork, address_in
from refd.auth.base import AuthSource
from refd.limits import HttpLimits, Limits
from refd.routing import RoutingTable
from refd.throttle import ThrottleRules

__all__ = [
    "AUTH_PROTOCOLS",
    "AutodiscoveryPolicy",
    "ClientInfo",
    "Service",
    "ServiceRef",
    "SessionPolicy",
]


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The daemon settings a session consults (built from the config)."""

    hostname: str = "localhost"
    advertise_auth_plain: bool = False
    auth_failure_delay_s: float = 2.0
    auth_failure_delay_max_s: float = 15.0
    #: the login throttle's thresholds (``throttle:``)
    throttle: ThrottleRules = field(default_factory=ThrottleRules)
    trusted_networks: tuple[IPNetwork, ...] = LOOPBACK
    #: drain mode: new connections are sent to the sibling door at once
    drain: bool = False
    #: another door (host, port) to refer clients to when draining or stopping
    sibling: tuple[str, int] | None = None


#: the account-setup protocols that can demand HTTP Basic credentials
AUTH_PROTOCOLS = ("autodiscover", "mobileconfig")


@dataclass(frozen=True, slots=True)
class AutodiscoveryPolicy:
    """What an account-setup request consults (``autodiscovery:``, bar its listeners)."""

    #: False: domain-level answers only, no user's server disclosed
    per_user: bool = True
    #: the protocols (of AUTH_PROTOCOLS) answered only after a good password
    require_auth: tuple[str, ...] = AUTH_PROTOCOLS
    #: Host values accepted besides each domain's names and the hostname
    #: (lower-case, no port, IPv6 without brackets)
    hosts: tuple[str, ...] = ()
    #: sign Apple profiles with the TLS certificate and key
    sign_profiles: bool = False
    limits: HttpLimits = field(default_factory=HttpLimits)


@dataclass(frozen=True, slots=True)
class Service:
    """Everything in service at one moment; replaced whole on reload."""

    table: RoutingTable
    auth: AuthSource
    policy: SessionPolicy
    limits: Limits = field(default_factory=Limits)
    tls_context: ssl.SSLContext | None = None
    #: the public HTTP side's settings; None: no ``autodiscovery:`` section
    autodiscovery: AutodiscoveryPolicy | None = None
    #: the TLS certificate chain and key (PEM), read with ``sign_profiles``
    signing_pem: tuple[bytes, bytes] | None = field(default=None, repr=False)


class ServiceRef:
    """The one mutable reference to what is in service (swapped on reload)."""

    __slots__ = ("current",)

    def __init__(self, service: Service) -> None:
        self.current = service


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is on the other end, and over which listener."""

    conn_id: str
    address: str
    listener: str = "imap"
    tls: bool = False
    starttls_available: bool = False
    #: the trusted peer (a webmail, a proxy) that named ``address`` with
    #: ``ID ("x-originating-ip" ...)``; the connection is as safe as that peer's
    forwarded_by: str | None = None
    #: the client's port, and the address and port it connected to, when known
    port: int | None = None
    local_address: str | None = None
    local_port: int | None = None

    def __init__(
        self,
        conn_id: str,
        address: str,
        listener: str = "imap",
        tls: bool = False,
        starttls_available: bool = False,
        forwarded_by: str | None = None,
        port: int | None = None,
        local_address: str | None = None,
        local_port: int | None = None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "conn_id", conn_id)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "listener", listener)
        object.__setattr__(self, "tls", tls)
        object.__setattr__(self, "starttls_available", starttls_available)
        object.__setattr__(self, "forwarded_by", forwarded_by)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "local_address", local_address)
        object.__setattr__(self, "local_port", local_port)

    def in_networks(self, networks: tuple[IPNetwork, ...]) -> bool:
        return address_in(self.address, networks)
