"""The account-setup documents, rendered from a `SetupAnswer`, and the one request reader.

Three documents name the same IMAP endpoint, login name and submission
server:

- `autoconfig`: Mozilla's ``clientConfig`` version 1.1 (what Thunderbird,
  K-9/Thunderbird for Android, FairEmail and Evolution fetch from
  ``autoconfig.<domain>/mail/config-v1.1.xml``). The user name is a
  placeholder (``%EMAILADDRESS%`` or ``%EMAILLOCALPART%``) the client
  fills in, so the body depends on the server and the domain only: every
  user of one server gets the same bytes.
- `autodiscover`: Microsoft's "plain old XML" Autodiscover response with
  the Outlook response schema (2006a), ``IMAP`` and ``SMTP`` ``Protocol``
  blocks; `autodiscover_error` is its ``<Error>`` shape.
- `mobileconfig`: an Apple configuration profile (XML property list) with
  one ``com.apple.mail.managed`` payload. Identifiers and UUIDs are
  derived from the address and servers (UUID version 5), so the same
  question gives the same bytes, and a reinstalled profile replaces the
  old one instead of adding a second account.

`parse_autodiscover_request` reads an Autodiscover request body with
expat: any document type declaration is refused before it can declare an
entity (no entity expansion, no external entity: "billion laughs" and XXE
have nothing to work with). The caller caps the body size first.

No document reads `SetupAnswer.per_user` or `rule`: an address the table
does not route and a default-route user get the same bytes.
"""

from __future__ import annotations

import plistlib
import re
import uuid
from typing import NoReturn
from xml.parsers import expat

from refd.autodiscovery.answer import SetupAnswer
from refd.routing.model import ClientTls, Endpoint

__all__ = [
    "AUTODISCOVER_REQUEST_NS",
    "AUTODISCOVER_RESPONSE_NS",
    "OUTLOOK_RESPONSE_NS",
    "BadRequest",
    "autoconfig",
    "autodiscover",
    "autodiscover_error",
    "mobileconfig",
    "parse_autodiscover_request",
]

AUTODISCOVER_REQUEST_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
)
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

# Characters XML 1.0 cannot carry at all (§2.2 Char): C0 controls other than
# tab, LF and CR, the surrogates and U+FFFE/U+FFFF. A display name from the
# config with one of these is shown with U+FFFD instead of breaking the document.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: str) -> str:
    """``value`` with the characters XML cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def _text(value: str) -> str:
    """``value`` as XML character data (also safe inside double-quoted attributes)."""
    value = _clean(value)
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# -- Mozilla autoconfig ----------------------------------------------------------

# clientConfig socketType values (Thunderbird's readFromXML accepts exactly these).
_SOCKET_TYPE = {ClientTls.IMPLICIT: "SSL", ClientTls.STARTTLS: "STARTTLS", ClientTls.NONE: "plain"}
# The placeholders the client replaces with the address the user typed.
_USERNAME = {"address": "%EMAILADDRESS%", "local_part": "%EMAILLOCALPART%"}


def _autoconfig_server(element: str, kind: str, endpoint: Endpoint, username: str) -> list[str]:
    return [
        f'    <{element} type="{kind}">',
        f"      <hostname>{_text(endpoint.host)}</hostname>",
        f"      <port>{endpoint.port}</port>",
        f"      <socketType>{_SOCKET_TYPE[endpoint.tls]}</socketType>",
        f"      <username>{username}</username>",
        "      <authentication>password-cleartext</authentication>",
        f"    </{element}>",
    ]


def autoconfig(answer: SetupAnswer) -> bytes:
    """Mozilla ``clientConfig`` version 1.1 for ``answer`` (UTF-8 XML).

    ``outgoingServer`` is left out when no submission server is known.
    """
    domain = answer.domain
    username = _USERNAME[domain.login_name]
    name = _text(domain.display_name)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        f'  <emailProvider id="{_text(domain.name)}">',
        f"    <domain>{_text(domain.name)}</domain>",
        f"    <displayName>{name}</displayName>",
        f"    <displayShortName>{name}</displayShortName>",
        *_autoconfig_server("incomingServer", "imap", answer.imap, username),
    ]
    if answer.submission is not None:
        lines += _autoconfig_server("outgoingServer", "smtp", answer.submission, username)
    lines += ["  </emailProvider>", "</clientConfig>", ""]
    return "\n".join(lines).encode("utf-8")


# -- Microsoft Autodiscover (POX) --------------------------------------------------

# <Encryption> (takes precedence over <SSL>): "SSL" is TLS from the first
# byte, "TLS" is STARTTLS, "None" no TLS.
_ENCRYPTION = {ClientTls.IMPLICIT: "SSL", ClientTls.STARTTLS: "TLS", ClientTls.NONE: "None"}


def _pox_protocol(kind: str, endpoint: Endpoint, login: str | None) -> list[str]:
    lines = [
        "      <Protocol>",
        f"        <Type>{kind}</Type>",
        f"        <Server>{_text(endpoint.host)}</Server>",
        f"        <Port>{endpoint.port}</Port>",
    ]
    if login is not None:
        lines.append(f"        <LoginName>{_text(login)}</LoginName>")
    lines += [
        "        <DomainRequired>off</DomainRequired>",
        "        <SPA>off</SPA>",
        f"        <SSL>{'off' if endpoint.tls is ClientTls.NONE else 'on'}</SSL>",
        f"        <Encryption>{_ENCRYPTION[endpoint.tls]}</Encryption>",
        "        <AuthRequired>on</AuthRequired>",
        "      </Protocol>",
    ]
    return lines


def autodiscover(answer: SetupAnswer) -> bytes:
    """The POX Autodiscover response (Outlook 2006a schema) for ``answer``.

    ``User`` and ``LoginName`` name the address and its login name; both
    are left out of a domain-level answer without an address.
    """
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<Autodiscover xmlns="{AUTODISCOVER_RESPONSE_NS}">',
        f'  <Response xmlns="{OUTLOOK_RESPONSE_NS}">',
    ]
    if answer.address is not None:
        lines += [
            "    <User>",
            f"      <DisplayName>{_text(answer.address)}</DisplayName>",
            "    </User>",
        ]
    lines += [
        "    <Account>",
        "      <AccountType>email</AccountType>",
        "      <Action>settings</Action>",
        *_pox_protocol("IMAP", answer.imap, answer.login),
    ]
    if answer.submission is not None:
        lines += _pox_protocol("SMTP", answer.submission, answer.login)
    lines += ["    </Account>", "  </Response>", "</Autodiscover>", ""]
    return "\n".join(lines).encode("utf-8")


def autodiscover_error(code: str, message: str) -> bytes:
    """The POX ``<Error>`` response: ``code`` is Autodiscover's number
    ("600" invalid request, "601" provider not available), ``message`` a
    short text."""
    if not code.isascii() or not code.isdigit():
        raise ValueError("an Autodiscover error code is a number")
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<Autodiscover xmlns="{AUTODISCOVER_RESPONSE_NS}">',
        "  <Response>",
        "    <Error>",
        f"      <ErrorCode>{code}</ErrorCode>",
        f"      <Message>{_text(message)}</Message>",
        "      <DebugData />",
        "    </Error>",
        "  </Response>",
        "</Autodiscover>",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


class BadRequest(ValueError):
    """An Autodiscover request refd does not read; ``str(exc)`` is a short reason
    that never repeats the body."""


# The request reader accepts no deeper nesting than this (the request is 3 deep).
MAX_REQUEST_DEPTH = 8
_SEP = " "  # expat's namespace separator: "uri name"


def _refuse(reason: str) -> NoReturn:
    raise BadRequest(reason)


class _RequestReader:
    """expat handlers that keep the ``EMailAddress`` (and refuse everything exotic)."""

    def __init__(self) -> None:
        self.path: list[str] = []
        self.addresses: list[str] = []
        self.schemas: list[str] = []
        self.text: list[str] | None = None

    def start(self, name: str, _attrs: dict[str, str]) -> None:
        uri, _, local = name.rpartition(_SEP)
        if self.text is not None:
            _refuse("elements inside a value")
        if uri != AUTODISCOVER_REQUEST_NS:
            _refuse("not an Outlook Autodiscover request (wrong namespace)")
        self.path.append(local)
        if len(self.path) > MAX_REQUEST_DEPTH:
            _refuse("elements nested too deep")
        if len(self.path) == 1 and local != "Autodiscover":
            _refuse("the root element is not Autodiscover")
        if self.path[:2] == ["Autodiscover", "Request"] and len(self.path) == 3:
            self.text = [] if local in ("EMailAddress", "AcceptableResponseSchema") else None

    def end(self, _name: str) -> None:
        if self.text is not None and len(self.path) == 3:
            value = "".join(self.text).strip()
            (self.addresses if self.path[2] == "EMailAddress" else self.schemas).append(value)
            self.text = None
        self.path.pop()

    def data(self, text: str) -> None:
        if self.text is not None:
            self.text.append(text)


def parse_autodiscover_request(body: bytes) -> str:
    """The ``EMailAddress`` of an Outlook POX Autodiscover request (stripped,
    not yet checked as an address: `setup_answer` does that).

    BadRequest when the body is not UTF-8 XML in the request schema's
    namespace with one ``Request`` holding exactly one ``EMailAddress``,
    when ``AcceptableResponseSchema`` names a schema other than the
    Outlook 2006a one, or when it has a document type declaration at all.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    reader = _RequestReader()
    # The encoding given here overrides the document's own declaration.
    parser = expat.ParserCreate("UTF-8", _SEP)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = lambda *_: _refuse("document type declarations are refused")
    parser.EntityDeclHandler = lambda *_: _refuse("entity declarations are refused")
    parser.UnparsedEntityDeclHandler = lambda *_: _refuse("entity declarations are refused")
    parser.ExternalEntityRefHandler = lambda *_: _refuse("external entities are refused")
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise BadRequest(f"malformed XML ({expat.ErrorString(exc.code)})") from None
    if len(reader.addresses) != 1:
        found = "no" if not reader.addresses else "more than one"
        raise BadRequest(f"{found} EMailAddress in the request")
    if any(schema != OUTLOOK_RESPONSE_NS for schema in reader.schemas):
        raise BadRequest("AcceptableResponseSchema is not the Outlook 2006a schema")
    return reader.addresses[0]


# -- Apple configuration profile ------------------------------------------------------

# Namespace of refd's profile UUIDs (UUID version 5, RFC 9562 §5.5).
_PROFILE_NS = uuid.uuid5(uuid.NAMESPACE_DNS, "autodiscovery.refd")


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(_PROFILE_NS, "\n".join(str(p) for p in parts))).upper()


def mobileconfig(answer: SetupAnswer) -> bytes:
    """An unsigned Apple configuration profile (XML plist) for ``answer``.

    ``*UseSSL`` is true for implicit TLS and for STARTTLS alike: Apple's
    Mail payload has no separate STARTTLS switch, and Mail upgrades with
    STARTTLS when the port greets in plaintext (587, 143). A domain-level
    profile carries no address and no user names: the device asks.
    """
    domain = answer.domain
    name = _clean(domain.display_name)
    imap, smtp = answer.imap, answer.submission
    who = answer.address or f"@{domain.name}"
    # Identifiers follow the address (a new profile for the same address
    # replaces the old one); UUIDs follow the address and the servers.
    reverse = ".".join(reversed(domain.name.split(".")))
    identifier = f"{reverse}.refd.mail.{_uuid('identifier', who)}"
    outgoing = "-" if smtp is None else f"{smtp.authority} {smtp.tls.value}"
    servers = (who, imap.authority, imap.tls.value, outgoing)
    mail: dict[str, object] = {
        "EmailAccountDescription": name,
        "EmailAccountType": "EmailTypeIMAP",
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": imap.host,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": imap.tls is not ClientTls.NONE,
        "PayloadDisplayName": f"{name} mail",
        "PayloadIdentifier": f"{identifier}.account",
        "PayloadType": "com.apple.mail.managed",
        "PayloadUUID": _uuid("account", *servers),
        "PayloadVersion": 1,
    }
    if answer.address is not None and answer.login is not None:
        mail["EmailAddress"] = answer.address
        mail["IncomingMailServerUsername"] = answer.login
    if smtp is not None:
        mail["OutgoingMailServerAuthentication"] = "EmailAuthPassword"
        mail["OutgoingMailServerHostName"] = smtp.host
        mail["OutgoingMailServerPortNumber"] = smtp.port
        mail["OutgoingMailServerUseSSL"] = smtp.tls is not ClientTls.NONE
        mail["OutgoingPasswordSameAsIncomingPassword"] = True
        if answer.login is not None:
            mail["OutgoingMailServerUsername"] = answer.login
    profile = {
        "PayloadContent": [mail],
        "PayloadDescription": f"Mail account at {name}",
        "PayloadDisplayName": f"{name} mail",
        "PayloadIdentifier": identifier,
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": _uuid("profile", *servers),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
