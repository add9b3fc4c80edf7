"""Properties over arbitrary input: an address is accepted or refused with
BadAddress (nothing else), every accepted one renders three documents that
parse back to it, and any request body is an address or a BadRequest."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refd.autodiscovery.answer import BadAddress, setup_answer
from refd.autodiscovery.documents import (
    OUTLOOK_RESPONSE_NS,
    BadRequest,
    autoconfig,
    autodiscover,
    mobileconfig,
    parse_autodiscover_request,
)

from ._support import example_table

CI = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TABLE = example_table()
LOCAL = st.text(min_size=0, max_size=70)
DOMAIN = st.sampled_from(["example.org", "EXAMPLE.org", "other.test", "elsewhere.test", ""])
ADDRESS = st.one_of(st.builds(lambda lp, d: f"{lp}@{d}", LOCAL, DOMAIN), st.text(max_size=300))


@CI
@given(ADDRESS)
def test_any_address_is_answered_or_refused(text: str) -> None:
    try:
        answer = setup_answer(TABLE, text)
    except BadAddress as exc:
        assert len(str(exc)) < 60
        return
    if answer is None:
        return
    assert answer.address is not None
    ns = f"{{{OUTLOOK_RESPONSE_NS}}}"
    provider = ET.fromstring(autoconfig(answer)).find("emailProvider")
    assert provider is not None
    assert provider.get("id") == answer.domain.name
    response = ET.fromstring(autodiscover(answer)).find(f"{ns}Response")
    assert response is not None
    assert response.findtext(f"{ns}User/{ns}DisplayName") == answer.address
    assert response.findtext(f"{ns}Account/{ns}Protocol/{ns}LoginName") == answer.login
    mail = plistlib.loads(mobileconfig(answer))["PayloadContent"][0]
    assert (mail["EmailAddress"], mail["IncomingMailServerUsername"]) == (
        answer.address,
        answer.login,
    )


REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
PIECES = st.sampled_from(
    [
        f'<Autodiscover xmlns="{REQUEST_NS}">',
        "<Request>",
        "<EMailAddress>",
        "alice@example.org",
        "</EMailAddress>",
        "</Request>",
        "</Autodiscover>",
        "<!DOCTYPE a [",
        '<!ENTITY x "y">',
        "]>",
        "&x;",
        "&amp;",
        "<![CDATA[a]]>",
        "<?pi x?>",
        "<!-- c -->",
        "\x00",
        "\xff",
        "<",
        ">",
        '"',
    ]
)
BODY = st.one_of(
    st.lists(PIECES, max_size=12).map(lambda parts: "".join(parts).encode()),
    st.binary(max_size=200),
)


@CI
@given(BODY)
def test_any_request_body_is_an_address_or_a_bad_request(body: bytes) -> None:
    try:
        address = parse_autodiscover_request(body)
    except BadRequest as exc:
        assert len(str(exc)) < 80
        return
    assert isinstance(address, str)
    assert b"<!DOCTYPE" not in body
