"""The ``trust`` source: accept any password from configured networks.

For a door behind an authenticating proxy (a webmail front, an SSO gateway)
that has already checked the user: connections from ``networks`` are taken
at their word; anyone else fails as with a wrong password.  The daemon logs
a warning at start whenever this source is configured, and ``refd check``
refuses networks that reach beyond private address space unless the config
says ``trust_allow_public: true``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from refd.auth.base import AuthRequest, AuthResult, AuthStatus

__all__ = ["TrustSource", "public_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def public_networks(networks: tuple[Network, ...]) -> list[Network]:
    """The networks that contain addresses outside private/loopback space."""
    return [n for n in networks if not (n.is_private or n.is_loopback)]


@dataclass(frozen=True, slots=True)
class TrustSource:
    networks: tuple[Network, ...]
    name: str = "trust"

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        try:
            ip = ipaddress.ip_address(request.client_address)
        except ValueError:
            return AuthResult(AuthStatus.FAILURE, request.user, "client address unknown")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.networks):
            return AuthResult(AuthStatus.SUCCESS, request.user, "trusted network")
        return AuthResult(AuthStatus.FAILURE, request.user, "client not in trust networks")
