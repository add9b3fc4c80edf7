"""Which server an account-setup document names for an address, as a value.

A mail client that sets up an account asks once, with the user's address,
where the mail server is (Mozilla autoconfig, Microsoft Autodiscover, an
Apple profile). refd answers from the routing table: the server a login
of that user is referred to. `setup_answer` decides; `refd.autodiscovery
.documents` only renders its `SetupAnswer`, and ``refd explain --setup``
prints the same value, so the tool cannot disagree with the HTTP side.

The privacy rule: an address the table does not route gets the
domain-level answer (`Domain.server`), exactly what a user on the
domain's default route gets. `SetupAnswer.per_user` and `rule` say which
case it was, for logs and explain only; no document reads them, so an
unauthenticated caller cannot tell an unknown address from a default-route
user. Pure: values in, values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from refd.routing import RoutingTable
from refd.routing.model import Domain, Endpoint, Home, UnknownHome

__all__ = ["BadAddress", "SetupAnswer", "parse_address", "setup_answer"]

# RFC 5321 §4.5.3.1.1 (local part: 64 octets), RFC 5321 §4.5.3.1.2 (domain:
# 255 octets) and the 254-octet path limit of RFC 3696 errata 1690.
MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 253

# A DNS host name (RFC 1123 §2.1): letters, digits and hyphens in labels of
# 1-63 characters, no hyphen at either end of a label, at least two labels.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
# RFC 5322 §3.2.3 atext and ".", and any non-ASCII character (RFC 6531 §3.3
# UTF8-non-ascii): an unquoted local part. Quoted local parts are refused.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\u0080-\U0010ffff]+")
# C0 controls, DEL and the C1 controls: never part of an address.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s")
# Lone surrogates (from a lenient decoder): not text, and not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadAddress(ValueError):
    """The address is not one refd answers for; ``str(exc)`` is a short reason
    that never repeats the input (it goes into a 400 body and a log line)."""


@dataclass(frozen=True, slots=True)
class SetupAnswer:
    """What every setup document for one address (or one domain) names.

    ``address`` is the validated address asked about (None: a domain-level
    question, no address); ``login`` its login name (`Domain.login_for`),
    None at domain level. ``imap`` is the server's `Server.imap_endpoint`;
    ``submission`` the server's submission endpoint, else the domain's,
    else None. ``per_user`` is True when a user rule of the table chose the
    server; ``rule`` says what chose it. The documents never read those two.
    """

    domain: Domain
    address: str | None
    login: str | None
    imap: Endpoint
    submission: Endpoint | None
    per_user: bool
    rule: str


def parse_address(text: str) -> str:
    """``text`` as an address refd answers for: ``local@domain``, the domain
    lower-cased. BadAddress with a short reason otherwise."""
    if _CONTROL.search(text):
        raise BadAddress("control character in the address")
    if _SPACE.search(text):
        raise BadAddress("space in the address")
    if _SURROGATE.search(text):
        raise BadAddress("the address is not valid Unicode")
    if len(text.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise BadAddress(f"address longer than {MAX_ADDRESS_OCTETS} octets")
    ats = text.count("@")
    if ats == 0:
        raise BadAddress("no @ in the address")
    if ats > 1:
        raise BadAddress("more than one @ in the address")
    local, _, domain = text.partition("@")
    if not local:
        raise BadAddress("empty local part")
    if not domain:
        raise BadAddress("empty domain")
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise BadAddress(f"local part longer than {MAX_LOCAL_OCTETS} octets")
    if not _LOCAL.fullmatch(local):
        raise BadAddress("the local part has a character an address cannot carry")
    domain = domain.lower()
    if len(domain) > MAX_DOMAIN_OCTETS or not domain.isascii() or not _DOMAIN.fullmatch(domain):
        raise BadAddress("the domain is not a valid host name")
    return f"{local}@{domain}"


def _where(table: RoutingTable, domain: Domain) -> str:
    return f"domains.{domain.name} ({table.file}:{domain.line})"


def setup_answer(
    table: RoutingTable,
    address: str | None,
    *,
    domain: str | None = None,
    per_user: bool = True,
    home: Home | None = None,
) -> SetupAnswer | None:
    """The answer for ``address`` (validated here: BadAddress), or, when it is
    None, the domain-level answer for ``domain``. None: the table serves no
    such domain.

    With ``per_user`` the address's login name is routed like a login
    (`RoutingTable.route_user`); no route, or ``per_user=False``, gives the
    domain-level server. ``domain`` is only read when ``address`` is None.
    ``home`` is the home server the authentication source named when the
    user proved who they are (HTTP Basic): routed as at an IMAP login. A
    home the table lacks gives the domain-level server, as no route does.
    """
    if address is not None:
        address = parse_address(address)
        name = address.rpartition("@")[2]
    elif domain is not None:
        name = domain.lower().rstrip(".")
    else:
        raise ValueError("setup_answer needs an address or a domain")
    found = table.domains.get(name)
    if found is None:
        return None
    server = found.server
    login = None if address is None else found.login_for(address)
    chosen = False
    if login is None:
        rule = f"no address -> {_where(table, found)}"
    elif not per_user:
        rule = f"per-user answers are off -> {_where(table, found)}"
    else:
        try:
            route = table.route_user(login, home)
        except UnknownHome:
            route = None
        if route is None:
            rule = f'no rule routes "{login}" -> {_where(table, found)}'
        else:
            server, chosen, rule = route.server, True, route.why(login)
    return SetupAnswer(
        domain=found,
        address=address,
        login=login,
        imap=server.imap_endpoint,
        submission=server.submission or found.submission,
        per_user=chosen,
        rule=rule,
    )
