"""The ``trust`` source: accept any password from configured networks.

For a door behind an authenticating proxy (a webmail front, an SSO gateway)
that has already checked the user: connections from ``networks`` are taken
at their word; anyone else fails as with a wrong password.  The daemon logs
a warning at start whenever this source is configured, and ``refd check``
refuses networks that reach beyond private address space unless the config
says ``trust_allow_public: true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from refd.addresses import IPNetwork as Network
from refd.addresses import address_in, parse_ip
from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.registry import AuthSourceSpec, BuildContext, ParseContext
from refd.config.loader import network_list, opt

__all__ = ["SPEC", "TrustConfig", "TrustSource", "public_networks"]


def public_networks(networks: tuple[Network, ...]) -> list[Network]:
    """The networks that contain addresses outside private/loopback space."""
    return [n for n in networks if not (n.is_private or n.is_loopback)]


@dataclass(frozen=True, slots=True)
class TrustSource:
    networks: tuple[Network, ...]
    name: str = "trust"

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        if parse_ip(request.client_address) is None:
            return AuthResult(AuthStatus.FAILURE, request.user, "client address unknown")
        if address_in(request.client_address, self.networks):
            return AuthResult(AuthStatus.SUCCESS, request.user, "trusted network")
        return AuthResult(AuthStatus.FAILURE, request.user, "client not in trust networks")


# -- configuration: ``auth.source: trust`` (see refd.auth.registry) --


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """``auth.trust_networks``: where any password is taken."""

    networks: tuple[Network, ...]


def _parse(ctx: ParseContext) -> TrustConfig:
    r, auth = ctx.reader, ctx.auth
    node = r.require(auth, "trust_networks", "auth")
    trust = network_list(r, node, "auth.trust_networks")
    if not trust:
        raise r.error(node, "auth.trust_networks: name at least one network")
    allow_public = opt(r, auth, "trust_allow_public", r.as_bool, False, "trust_allow_public")
    public = public_networks(trust)
    if public and not allow_public:
        raise r.error(
            node,
            f"auth.trust_networks: {public[0]} reaches beyond private address space; "
            "anyone there could log in as anyone (set trust_allow_public: true if meant)",
        )
    return TrustConfig(trust)


def _build(settings: TrustConfig, ctx: BuildContext) -> TrustSource:
    return TrustSource(settings.networks)


def _warning(settings: TrustConfig) -> str:
    nets = ", ".join(str(n) for n in settings.networks)
    return (
        f"auth source is TRUST: any password is accepted from {nets}; "
        "make sure only an authenticating proxy can connect from there"
    )


SPEC = AuthSourceSpec(
    name="trust",
    keys=frozenset({"trust_networks", "trust_allow_public"}),
    parse=_parse,
    build=_build,
    warning=_warning,
)
