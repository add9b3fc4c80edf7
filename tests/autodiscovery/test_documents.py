"""refd.autodiscovery.documents: each document with exact expected bytes or values.

Autoconfig follows Mozilla's ``clientConfig`` version 1.1 as Thunderbird's
``readFromXML`` (comm-central mail/components/accountcreation) reads it:
``emailProvider`` with ``@id``, ``domain`` and ``displayName``;
``incomingServer`` with ``@type`` in (pop3, imap, nntp, exchange),
``hostname``, ``port`` (1..65535), ``socketType`` in (plain, SSL,
STARTTLS), ``username`` ("may be a %VARIABLE%") and ``authentication``
(password-cleartext, ...); ``outgoingServer`` with ``@type`` "smtp" and
the same fields.

Autodiscover: Microsoft publishes no schema for the Outlook POX response
("The POX Autodiscover service does not have a published schema that can
be discovered on the server", POX Autodiscover XML elements for Exchange),
so the test checks the element names and their order against the
reference pages. Protocol (POX):

    <Protocol> <Type/> <Internal/> <TTL/> <Server/> <ServerDN/>
    <ServerVersion/> <MdbDN/> <Port/> <DirectoryPort/> <ReferralPort/>
    <ASUrl/> <OOFUrl/> <OABUrl/> <UMUrl/> <LoginName/> <DomainRequired/>
    <DomainName/> <SPA/> <AuthPackage/> <CertPrincipalName/> <SSL/>
    <AuthRequired/> <UsePOPAuth/> <SMTPLast/> <NetworkRequirements/>
    </Protocol>

Account (POX): ``<AccountType/> <Action/> <RedirectURL/> <RedirectAddr/>
<Image/> <ServiceHome/> <Protocol/>``; the response example:
``<Autodiscover xmlns=".../autodiscover/responseschema/2006"> <Response
xmlns=".../autodiscover/outlook/responseschema/2006a"> <User>
<DisplayName>First Last</DisplayName> ... </User> <Account>
<AccountType>email</AccountType> <Action>settings</Action> <Protocol>``.
SSL (POX): "The text value specifies whether secure logon is required. If
unspecified, the default value is set to on. The possible values are on and
off." ``Encryption`` ("None", "SSL", "TLS", "Auto", as Thunderbird's
exchangeAutoDiscover reader lists them) is not on the 2007 page; it goes
after ``SSL``, the element it refines.
"""

from __future__ import annotations

import dataclasses
import plistlib
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from refd.autodiscovery.answer import SetupAnswer, setup_answer
from refd.autodiscovery.documents import (
    AUTODISCOVER_RESPONSE_NS,
    OUTLOOK_RESPONSE_NS,
    BadRequest,
    autoconfig,
    autodiscover,
    autodiscover_error,
    mobileconfig,
    parse_autodiscover_request,
)
from refd.routing.model import ClientTls, Endpoint
from tests.routing._support import load

from ._support import FACTS, domain, example_table, table_with, with_facts


def answer_for(address: str | None, **kwargs: object) -> SetupAnswer:
    found = setup_answer(example_table(), address, **kwargs)  # type: ignore[arg-type]
    assert found is not None
    return found


# -- autoconfig --------------------------------------------------------------------


def test_autoconfig_starttls_server_and_its_own_submission() -> None:
    assert autoconfig(answer_for("carol@example.org")).decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        '  <emailProvider id="example.org">\n'
        "    <domain>example.org</domain>\n"
        "    <displayName>Example Org</displayName>\n"
        "    <displayShortName>Example Org</displayShortName>\n"
        '    <incomingServer type="imap">\n'
        "      <hostname>mail2.example.org</hostname>\n"
        "      <port>10143</port>\n"
        "      <socketType>STARTTLS</socketType>\n"
        "      <username>%EMAILADDRESS%</username>\n"
        "      <authentication>password-cleartext</authentication>\n"
        "    </incomingServer>\n"
        '    <outgoingServer type="smtp">\n'
        "      <hostname>smtp2.example.org</hostname>\n"
        "      <port>465</port>\n"
        "      <socketType>SSL</socketType>\n"
        "      <username>%EMAILADDRESS%</username>\n"
        "      <authentication>password-cleartext</authentication>\n"
        "    </outgoingServer>\n"
        "  </emailProvider>\n"
        "</clientConfig>\n"
    )


def test_autoconfig_implicit_tls_server_and_the_domains_submission() -> None:
    body = autoconfig(answer_for("nobody@example.org")).decode()
    assert body.splitlines()[6:20] == [
        '    <incomingServer type="imap">',
        "      <hostname>mail1.example.org</hostname>",
        "      <port>993</port>",
        "      <socketType>SSL</socketType>",
        "      <username>%EMAILADDRESS%</username>",
        "      <authentication>password-cleartext</authentication>",
        "    </incomingServer>",
        '    <outgoingServer type="smtp">',
        "      <hostname>smtp.example.org</hostname>",
        "      <port>587</port>",
        "      <socketType>STARTTLS</socketType>",
        "      <username>%EMAILADDRESS%</username>",
        "      <authentication>password-cleartext</authentication>",
        "    </outgoingServer>",
    ]


def test_autoconfig_local_part_login_plain_server_no_submission() -> None:
    assert autoconfig(answer_for("dave@other.test")).decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        '  <emailProvider id="other.test">\n'
        "    <domain>other.test</domain>\n"
        "    <displayName>other.test</displayName>\n"
        "    <displayShortName>other.test</displayShortName>\n"
        '    <incomingServer type="imap">\n'
        "      <hostname>mail3.example.org</hostname>\n"
        "      <port>143</port>\n"
        "      <socketType>plain</socketType>\n"
        "      <username>%EMAILLOCALPART%</username>\n"
        "      <authentication>password-cleartext</authentication>\n"
        "    </incomingServer>\n"
        "  </emailProvider>\n"
        "</clientConfig>\n"
    )


def test_autoconfig_domain_level_is_the_default_route_body() -> None:
    domain_level = autoconfig(answer_for(None, domain="example.org"))
    assert domain_level == autoconfig(answer_for("nobody@example.org"))
    assert domain_level == autoconfig(answer_for("carol@example.org", per_user=False))
    assert b"<hostname>mail1.example.org</hostname>" in domain_level


def test_autoconfig_is_well_formed_and_escapes_the_display_name() -> None:
    base = example_table()
    table = table_with(domain(base, "example.org", "mail1", display_name='A & B <"x">'), base=base)
    answer = setup_answer(table, "nobody@example.org")
    assert answer is not None
    body = autoconfig(answer)
    assert b"    <displayName>A &amp; B &lt;&quot;x&quot;&gt;</displayName>\n" in body
    root = ET.fromstring(body)  # our own output: well-formed
    assert root.findtext("emailProvider/displayName") == 'A & B <"x">'
    assert root.findtext("emailProvider/displayShortName") == 'A & B <"x">'


# -- the privacy rule ---------------------------------------------------------------

NO_DEFAULT = """\
version: 1
servers:
  mail1: {host: mail1.example.org}
  mail2: {host: mail2.example.org, port: 10143}
  mail3: {host: mail3.example.org}
users:
  - user: carol@example.org
    server: mail2
  - user: dave
    server: mail3
  - glob: "*@example.org"
    server: mail1
"""


def test_an_unknown_address_gets_exactly_the_default_route_answer() -> None:
    """other.test logs in by local part and has no catch-all rule: "zed" has
    no route at all, "dave" is routed (to the domain-level server). Nothing
    in any document tells the two apart but the address itself."""
    base = with_facts(load(NO_DEFAULT), FACTS)
    table = table_with(domain(base, "other.test", "mail3", login_name="local_part"), base=base)
    zed = setup_answer(table, "zed@other.test")
    dave = setup_answer(table, "dave@other.test")
    assert zed is not None and dave is not None
    assert (zed.per_user, dave.per_user) == (False, True)
    assert autoconfig(zed) == autoconfig(dave)  # byte-identical
    as_zed = dataclasses.replace(dave, address="zed@other.test", login="zed")
    assert autodiscover(zed) == autodiscover(as_zed)
    assert mobileconfig(zed) == mobileconfig(as_zed)


@pytest.mark.parametrize("document", [autoconfig, autodiscover, mobileconfig])
def test_no_document_reads_why_the_server_was_chosen(document: object) -> None:
    answer = answer_for("carol@example.org")
    hidden = dataclasses.replace(answer, per_user=False, rule="something else")
    assert document(answer) == document(hidden)  # type: ignore[operator]


# -- Autodiscover --------------------------------------------------------------------


def test_autodiscover_starttls_server_and_implicit_submission() -> None:
    assert autodiscover(answer_for("carol@example.org")).decode() == (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
        '  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">\n'
        "    <User>\n"
        "      <DisplayName>carol@example.org</DisplayName>\n"
        "    </User>\n"
        "    <Account>\n"
        "      <AccountType>email</AccountType>\n"
        "      <Action>settings</Action>\n"
        "      <Protocol>\n"
        "        <Type>IMAP</Type>\n"
        "        <Server>mail2.example.org</Server>\n"
        "        <Port>10143</Port>\n"
        "        <LoginName>carol@example.org</LoginName>\n"
        "        <DomainRequired>off</DomainRequired>\n"
        "        <SPA>off</SPA>\n"
        "        <SSL>on</SSL>\n"
        "        <Encryption>TLS</Encryption>\n"
        "        <AuthRequired>on</AuthRequired>\n"
        "      </Protocol>\n"
        "      <Protocol>\n"
        "        <Type>SMTP</Type>\n"
        "        <Server>smtp2.example.org</Server>\n"
        "        <Port>465</Port>\n"
        "        <LoginName>carol@example.org</LoginName>\n"
        "        <DomainRequired>off</DomainRequired>\n"
        "        <SPA>off</SPA>\n"
        "        <SSL>on</SSL>\n"
        "        <Encryption>SSL</Encryption>\n"
        "        <AuthRequired>on</AuthRequired>\n"
        "      </Protocol>\n"
        "    </Account>\n"
        "  </Response>\n"
        "</Autodiscover>\n"
    )


def _protocols(body: bytes) -> list[dict[str, str]]:
    ns = {"a": OUTLOOK_RESPONSE_NS}
    root = ET.fromstring(body)
    return [
        {child.tag.split("}")[1]: child.text or "" for child in protocol}
        for protocol in root.findall("a:Response/a:Account/a:Protocol", ns)
    ]


def test_autodiscover_implicit_tls_imap_and_starttls_submission() -> None:
    assert _protocols(autodiscover(answer_for("nobody@example.org"))) == [
        {
            "Type": "IMAP",
            "Server": "mail1.example.org",
            "Port": "993",
            "LoginName": "nobody@example.org",
            "DomainRequired": "off",
            "SPA": "off",
            "SSL": "on",
            "Encryption": "SSL",
            "AuthRequired": "on",
        },
        {
            "Type": "SMTP",
            "Server": "smtp.example.org",
            "Port": "587",
            "LoginName": "nobody@example.org",
            "DomainRequired": "off",
            "SPA": "off",
            "SSL": "on",
            "Encryption": "TLS",
            "AuthRequired": "on",
        },
    ]


def test_autodiscover_local_part_login_plaintext_no_smtp() -> None:
    body = autodiscover(answer_for("dave@other.test"))
    assert _protocols(body) == [
        {
            "Type": "IMAP",
            "Server": "mail3.example.org",
            "Port": "143",
            "LoginName": "dave",
            "DomainRequired": "off",
            "SPA": "off",
            "SSL": "off",
            "Encryption": "None",
            "AuthRequired": "on",
        }
    ]
    assert b"<DisplayName>dave@other.test</DisplayName>" in body


def test_autodiscover_domain_level_has_no_user_and_no_login_name() -> None:
    body = autodiscover(answer_for(None, domain="example.org"))
    assert b"<User>" not in body
    assert [p.get("LoginName") for p in _protocols(body)] == [None, None]


# Element order from the reference pages quoted in the module docstring.
PROTOCOL_ORDER = [
    "Type", "Internal", "TTL", "Server", "ServerDN", "ServerVersion", "MdbDN", "Port",
    "DirectoryPort", "ReferralPort", "ASUrl", "OOFUrl", "OABUrl", "UMUrl", "LoginName",
    "DomainRequired", "DomainName", "SPA", "AuthPackage", "CertPrincipalName", "SSL",
    "Encryption", "AuthRequired", "UsePOPAuth", "SMTPLast", "NetworkRequirements",
]  # fmt: skip
ACCOUNT_ORDER = ["AccountType", "Action", "RedirectURL", "RedirectAddr", "Image", "ServiceHome"]


@pytest.mark.parametrize(
    "address", ["carol@example.org", "nobody@example.org", "dave@other.test", None]
)
def test_autodiscover_follows_the_documented_structure(address: str | None) -> None:
    answer = answer_for(address, domain="example.org")
    root = ET.fromstring(autodiscover(answer))
    assert root.tag == f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover"
    (response,) = root
    assert response.tag == f"{{{OUTLOOK_RESPONSE_NS}}}Response"
    local = [child.tag.split("}")[1] for child in response]
    assert local == (["User", "Account"] if address else ["Account"])
    account = response.find(f"{{{OUTLOOK_RESPONSE_NS}}}Account")
    assert account is not None
    names = [child.tag.split("}")[1] for child in account]
    assert names[:2] == ["AccountType", "Action"]
    assert set(names[2:]) == {"Protocol"}
    for protocol in account.findall(f"{{{OUTLOOK_RESPONSE_NS}}}Protocol"):
        order = [child.tag.split("}")[1] for child in protocol]
        assert order == sorted(order, key=PROTOCOL_ORDER.index)
        assert protocol.findtext(f"{{{OUTLOOK_RESPONSE_NS}}}SSL") in ("on", "off")
        assert protocol.findtext(f"{{{OUTLOOK_RESPONSE_NS}}}Encryption") in ("None", "SSL", "TLS")


def test_autodiscover_error_shape() -> None:
    assert autodiscover_error("600", "Invalid Request & <more>").decode() == (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
        "  <Response>\n"
        "    <Error>\n"
        "      <ErrorCode>600</ErrorCode>\n"
        "      <Message>Invalid Request &amp; &lt;more&gt;</Message>\n"
        "      <DebugData />\n"
        "    </Error>\n"
        "  </Response>\n"
        "</Autodiscover>\n"
    )
    with pytest.raises(ValueError, match="is a number"):
        autodiscover_error("6<0", "x")


# -- the Autodiscover request ------------------------------------------------------------

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
# What Outlook and Thunderbird send (Thunderbird: no XML declaration, one line).
OUTLOOK = (
    '<?xml version="1.0" encoding="utf-8"?>\r\n'
    f'<Autodiscover xmlns="{REQUEST_NS}">\r\n'
    "  <Request>\r\n"
    "    <EMailAddress> alice@example.org </EMailAddress>\r\n"
    f"    <AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema>\r\n"
    "  </Request>\r\n"
    "</Autodiscover>\r\n"
).encode()
THUNDERBIRD = (
    f'<Autodiscover xmlns="{REQUEST_NS}"><Request>'
    "<EMailAddress>bob@example.org</EMailAddress>"
    f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema>"
    "</Request></Autodiscover>"
).encode()
PREFIXED = (
    f'<a:Autodiscover xmlns:a="{REQUEST_NS}"><a:Request>'
    "<a:EMailAddress>Carol@Example.org</a:EMailAddress></a:Request></a:Autodiscover>"
).encode()


@pytest.mark.parametrize(
    ("body", "address"),
    [
        (OUTLOOK, "alice@example.org"),
        (THUNDERBIRD, "bob@example.org"),
        (PREFIXED, "Carol@Example.org"),
        (OUTLOOK.replace(b"alice", "b\xfcr".encode()), "b\xfcr@example.org"),
        (OUTLOOK.replace(b"alice", b"a&amp;b"), "a&b@example.org"),
    ],
)
def test_parse_autodiscover_request(body: bytes, address: str) -> None:
    assert parse_autodiscover_request(body) == address


def request(inner: str, *, ns: str = REQUEST_NS, prolog: str = "") -> bytes:
    return f'{prolog}<Autodiscover xmlns="{ns}"><Request>{inner}</Request></Autodiscover>'.encode()


ADDRESS = "<EMailAddress>alice@example.org</EMailAddress>"
LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
)
HOSTILE = [
    # billion laughs: refused at the DOCTYPE, before any entity is declared
    (
        request("<EMailAddress>&lol9;@example.org</EMailAddress>", prolog=LAUGHS),
        "document type declarations are refused",
    ),
    # XXE: an external entity naming a local file
    (
        request(
            "<EMailAddress>&xxe;</EMailAddress>",
            prolog='<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        ),
        "document type declarations are refused",
    ),
    (
        request(ADDRESS, prolog='<!DOCTYPE Autodiscover SYSTEM "file:///etc/passwd">'),
        "document type declarations are refused",
    ),
    (
        request(ADDRESS, prolog='<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'),
        "document type declarations are refused",
    ),
    # an entity never declared
    (
        request("<EMailAddress>&xxe;</EMailAddress>"),
        "malformed XML (undefined entity)",
    ),
    (
        request(ADDRESS, ns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"),
        "not an Outlook Autodiscover request (wrong namespace)",
    ),
    (request(ADDRESS, ns=""), "not an Outlook Autodiscover request (wrong namespace)"),
    (
        request(ADDRESS).replace(b"<Request>", b'<Request xmlns="urn:other">'),
        "not an Outlook Autodiscover request (wrong namespace)",
    ),
    (
        f'<Request xmlns="{REQUEST_NS}">{ADDRESS}</Request>'.encode(),
        "the root element is not Autodiscover",
    ),
    (request(""), "no EMailAddress in the request"),
    (request("<LegacyDN>/o=x</LegacyDN>"), "no EMailAddress in the request"),
    (request(ADDRESS + ADDRESS), "more than one EMailAddress in the request"),
    (
        request(ADDRESS + "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</AcceptableResponseSchema>"),
        "AcceptableResponseSchema is not the Outlook 2006a schema",
    ),
    (
        request("<EMailAddress>al<b>ic</b>e@example.org</EMailAddress>"),
        "elements inside a value",
    ),
    (request(ADDRESS).replace(b"alice", b"al\xffice"), "the body is not UTF-8"),
    (
        request(ADDRESS, prolog='<?xml version="1.0" encoding="UTF-16"?>').replace(
            b"alice", "al\xe9ice".encode("latin-1")
        ),
        "the body is not UTF-8",
    ),
    (request(ADDRESS)[:-20], "malformed XML (unclosed token)"),
    (request(ADDRESS)[:40], "malformed XML (unclosed token)"),
    (b"", "malformed XML (no element found)"),
    (b"alice@example.org", "malformed XML (not well-formed (invalid token))"),
    (request(ADDRESS) + b"<x/>", "malformed XML (junk after document element)"),
    (
        request("<EMailAddress>" + "<a>" * 10 + "</a>" * 10 + "</EMailAddress>"),
        "elements inside a value",
    ),
    (request("<x>" * 10 + "</x>" * 10), "elements nested too deep"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "reason"), HOSTILE)
def test_hostile_requests_are_refused_and_read_no_file(body: bytes, reason: str) -> None:
    opened: list[object] = []
    watching = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if watching and event == "open":
            opened.append(args[0])

    sys.addaudithook(hook)  # cannot be removed: it stops watching when the test ends
    try:
        with pytest.raises(BadRequest) as info:
            parse_autodiscover_request(body)
    finally:
        watching.clear()
    assert str(info.value) == reason
    assert opened == []
    assert b"passwd" not in str(info.value).encode()


def test_the_passwd_file_never_shows_up(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    body = request(
        "<EMailAddress>&xxe;</EMailAddress>",
        prolog=f'<!DOCTYPE a [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>',
    )
    with pytest.raises(BadRequest) as info:
        parse_autodiscover_request(body)
    assert "TOP-SECRET" not in str(info.value)


# -- Apple profile ------------------------------------------------------------------------


def test_mobileconfig_starttls_imap_and_implicit_submission() -> None:
    body = mobileconfig(answer_for("carol@example.org"))
    assert body.startswith(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST'
    )
    assert plistlib.loads(body) == {
        "PayloadContent": [
            {
                "EmailAccountDescription": "Example Org",
                "EmailAccountType": "EmailTypeIMAP",
                "EmailAddress": "carol@example.org",
                "IncomingMailServerAuthentication": "EmailAuthPassword",
                "IncomingMailServerHostName": "mail2.example.org",
                "IncomingMailServerPortNumber": 10143,
                "IncomingMailServerUseSSL": True,  # STARTTLS: Mail upgrades by itself
                "IncomingMailServerUsername": "carol@example.org",
                "OutgoingMailServerAuthentication": "EmailAuthPassword",
                "OutgoingMailServerHostName": "smtp2.example.org",
                "OutgoingMailServerPortNumber": 465,
                "OutgoingMailServerUseSSL": True,
                "OutgoingMailServerUsername": "carol@example.org",
                "OutgoingPasswordSameAsIncomingPassword": True,
                "PayloadDisplayName": "Example Org mail",
                "PayloadIdentifier": "org.example.refd.mail.2B6B2B2F-C755-50E4-8427-F0874700DA7E"
                ".account",
                "PayloadType": "com.apple.mail.managed",
                "PayloadUUID": "45284208-A26A-5E0C-B813-BD675D193DB8",
                "PayloadVersion": 1,
            }
        ],
        "PayloadDescription": "Mail account at Example Org",
        "PayloadDisplayName": "Example Org mail",
        "PayloadIdentifier": "org.example.refd.mail.2B6B2B2F-C755-50E4-8427-F0874700DA7E",
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": "A69E49C3-8E11-5417-B7C9-503335138DDA",
        "PayloadVersion": 1,
    }  # fmt: skip


def _mail(body: bytes) -> dict[str, object]:
    profile = plistlib.loads(body)
    (mail,) = profile["PayloadContent"]
    assert isinstance(mail, dict)
    return mail


def test_mobileconfig_implicit_tls_and_starttls_submission() -> None:
    mail = _mail(mobileconfig(answer_for("nobody@example.org")))
    assert {k: v for k, v in mail.items() if "MailServer" in k} == {
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": "mail1.example.org",
        "IncomingMailServerPortNumber": 993,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": "nobody@example.org",
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": "smtp.example.org",
        "OutgoingMailServerPortNumber": 587,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": "nobody@example.org",
    }


def test_mobileconfig_local_part_plaintext_no_submission() -> None:
    mail = _mail(mobileconfig(answer_for("dave@other.test")))
    assert {k: v for k, v in mail.items() if not k.startswith("Payload")} == {
        "EmailAccountDescription": "other.test",
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": "dave@other.test",
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": "mail3.example.org",
        "IncomingMailServerPortNumber": 143,
        "IncomingMailServerUseSSL": False,
        "IncomingMailServerUsername": "dave",
    }


def test_mobileconfig_domain_level_asks_the_device_for_the_user() -> None:
    mail = _mail(mobileconfig(answer_for(None, domain="example.org")))
    assert "EmailAddress" not in mail
    assert "IncomingMailServerUsername" not in mail
    assert "OutgoingMailServerUsername" not in mail
    assert mail["IncomingMailServerHostName"] == "mail1.example.org"


def test_mobileconfig_is_deterministic_and_identifies_the_address() -> None:
    carol = answer_for("carol@example.org")
    assert mobileconfig(carol) == mobileconfig(answer_for("carol@example.org"))
    moved = dataclasses.replace(carol, imap=Endpoint("mail9.example.org", 993, ClientTls.IMPLICIT))
    before, after = plistlib.loads(mobileconfig(carol)), plistlib.loads(mobileconfig(moved))
    # Same address: the same identifier, so the new profile replaces the old one.
    assert before["PayloadIdentifier"] == after["PayloadIdentifier"]
    # Another server: other UUIDs.
    assert before["PayloadUUID"] != after["PayloadUUID"]
    other = plistlib.loads(mobileconfig(answer_for("nobody@example.org")))
    assert other["PayloadIdentifier"] != before["PayloadIdentifier"]


def test_mobileconfig_escapes_the_display_name() -> None:
    base = example_table()
    table = table_with(
        domain(base, "example.org", "mail1", display_name='A & B <"x">\x01'), base=base
    )
    answer = setup_answer(table, "nobody@example.org")
    assert answer is not None
    body = mobileconfig(answer)
    assert b'<string>A &amp; B &lt;"x"&gt;\xef\xbf\xbd</string>' in body
    assert _mail(body)["EmailAccountDescription"] == 'A & B <"x">\ufffd'
