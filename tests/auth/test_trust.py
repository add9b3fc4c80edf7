import ipaddress

import pytest

from refd.auth.base import AuthRequest, AuthStatus
from refd.auth.trust import TrustSource, public_networks

NETS = (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("address", "status"),
    [
        ("10.1.2.3", AuthStatus.SUCCESS),
        ("::ffff:10.1.2.3", AuthStatus.SUCCESS),
        ("fd00::1", AuthStatus.SUCCESS),
        ("10.2.0.1", AuthStatus.FAILURE),
        ("203.0.113.1", AuthStatus.FAILURE),
        ("unknown", AuthStatus.FAILURE),
    ],
)
async def test_trust(address: str, status: AuthStatus) -> None:
    result = await TrustSource(NETS).authenticate(AuthRequest("u", "anything", address))
    assert result.status is status and result.user == "u"


def test_public_networks() -> None:
    nets = tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "0.0.0.0/0", "::1/128", "2001:db8::/32")
    )
    assert [str(n) for n in public_networks(nets)] == ["0.0.0.0/0"]
