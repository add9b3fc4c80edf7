"""``refd explain``: what the door answers one user, traced and shown.

The trace runs the daemon's own decision code: the auth source's own
lookup (which name a login is routed as, or that it cannot succeed), the
routing table's lookups (`RoutingTable.explain_user` / `explain_mailbox`
name the rules), and `refd.answers` for the responses, printed in wire form
as ``S:`` lines -- the bytes a live session sends (without CRLF).  Only the
password check itself is assumed: ``C: a1 LOGIN user <password>`` stands
for a login with the right password.

`explain_setup` does the same for account setup: `setup_answer` decides
which server an address is given, the three documents are rendered by
`refd.autodiscovery.documents`, and the lines are read back out of those
very bytes (``refd explain --setup ADDRESS``).
"""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from refd.answers import auth_failed, login_answer, mailbox_answer
from refd.auth.base import AuthSource, AuthStatus, DirectoryRoute
from refd.auth.passwd_file import PasswdFileSource
from refd.auth.trust import TrustSource
from refd.autodiscovery.answer import BadAddress, SetupAnswer, setup_answer
from refd.autodiscovery.documents import (
    OUTLOOK_RESPONSE_NS,
    autoconfig,
    autodiscover,
    mobileconfig,
    read_autoconfig,
)
from refd.protocol.responses import Cond, Response, Tagged, to_bytes, wire_mailbox
from refd.routing import RoutingTable
from refd.routing.model import Home
from refd.session import BASE_CAPABILITIES

__all__ = ["Explanation", "explain", "explain_setup"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """The lines to print; ``referred`` is False when the login gets no referral
    and no session (no route, or a login that cannot succeed)."""

    lines: list[str]
    referred: bool


def _wire(responses: list[Response]) -> list[str]:
    return ["S: " + to_bytes(r).decode("ascii").removesuffix("\r\n") for r in responses]


def _authenticated_as(auth: AuthSource | None, user: str) -> tuple[str | None, list[str]]:
    """The name a successful login as ``user`` is routed as (None: it can't succeed)."""
    if isinstance(auth, PasswdFileSource):
        entry = auth.table.lookup(user)
        file = auth.table.file
        if entry is None:
            return None, [f'auth: passwd-file {file} has no user "{user}": every LOGIN fails']
        where = f'passwd-file {file}:{entry.line} "{entry.user}"'
        if entry.password is None:
            return None, [f"auth: {where} has no password (locked): every LOGIN fails"]
        return entry.user, [f"auth: {where}"]
    if isinstance(auth, TrustSource):
        nets = ", ".join(str(n) for n in auth.networks)
        return user, [f"auth: trust: any password from {nets}; from elsewhere every LOGIN fails"]
    if auth is not None:
        return user, [f"auth: {auth.name}: the password is checked by the source"]
    return user, []


def _from_directory(
    auth: AuthSource | None, found: DirectoryRoute
) -> tuple[str | None, list[str], Home | None]:
    """What the directory's lookup says: the name, the trace lines and the home."""
    source = auth.name if auth is not None else "directory"
    cached = " (from the route cache)" if found.cached else ""
    if found.status is AuthStatus.UNAVAILABLE:
        return None, [f"auth: {source}: the directory did not answer: {found.reason}"], None
    if found.status is AuthStatus.FAILURE:
        return None, [f"auth: {source}: {found.reason}{cached}: every LOGIN fails"], None
    lines = [f'auth: {source}: {found.reason}{cached}: authenticated as "{found.user}"']
    home = found.home
    if home is None:
        lines.append("home from the directory: none; the table decides")
    else:
        when = "before the table's users: rules" if home.first else "when no users: rule matches"
        lines.append(f"home from the directory: {home.origin} names {home.value!r} ({when})")
    return found.user, lines, home


def explain(
    table: RoutingTable,
    user: str,
    mailbox: str | None = None,
    auth: AuthSource | None = None,
    directory: DirectoryRoute | None = None,
) -> Explanation:
    """The trace for a login as ``user`` (and a SELECT of ``mailbox``).

    Without ``auth`` (a routing table on its own), ``user`` is taken as
    authenticated as given. ``directory``: what the source's directory
    says about ``user`` (`refd.auth.ldap.LdapSource.lookup`): the entry,
    the name it gives and the home server it names.
    """
    home = None
    if directory is not None:
        name, lines, home = _from_directory(auth, directory)
    else:
        name, lines = _authenticated_as(auth, user)
    login = f"C: a1 LOGIN {user} <password>"
    if directory is not None and directory.status is AuthStatus.UNAVAILABLE:
        text = "Authentication is temporarily unavailable; try again later."
        lines += [login, *_wire([Tagged("a1", Cond.NO, text, "UNAVAILABLE")])]
        return Explanation(lines, referred=False)
    if name is None:
        lines += table.explain_user(user)
        lines += [login, *_wire([auth_failed("a1")])]
        return Explanation(lines, referred=False)
    answer = login_answer(table, name, home)
    route = answer.route
    from_home = route is not None and home is not None and route.why(name).startswith(home.origin)
    if answer.error is not None:
        lines.append(f"no route: {answer.error}")
    elif from_home and route is not None:
        lines.append(f"home server: {route.server.name} ({route.why(name)})")
    else:
        lines += table.explain_user(name)
    lines += [login, *_wire(answer.responses("a1", " ".join(BASE_CAPABILITIES)))]
    if mailbox is not None and answer.route is not None:
        # A directory's home is always a login referral: no mailbox command follows.
        lines += [] if from_home else table.explain_mailbox(name, mailbox)
        if answer.logged_in:
            command = mailbox_answer(table, name, "a2", "SELECT", mailbox, home)
            lines += [f"C: a2 SELECT {wire_mailbox(mailbox)}", *_wire([command.response])]
        else:
            lines.append(
                "(no mailbox command reaches this door: the login referral sends "
                "the client to its home server)"
            )
    return Explanation(lines, referred=answer.route is not None)


def explain_setup(table: RoutingTable, question: str, *, per_user: bool = True) -> Explanation:
    """What each account-setup document names for ``question``: an address,
    or a bare domain for the domain-level answer. ``referred`` is False when
    no document is served (a refused address, a domain the table does not serve).
    """
    try:
        if "@" in question:
            answer = setup_answer(table, question, per_user=per_user)
        else:
            answer = setup_answer(table, None, domain=question)
    except BadAddress as exc:
        return Explanation([f"address refused: {exc} (HTTP 400)"], referred=False)
    if answer is None:
        name = question.rpartition("@")[2].lower()
        return Explanation([f'no "domains:" entry serves "{name}": no document'], referred=False)
    domain = answer.domain
    where = f"domains.{domain.name} ({table.file}:{domain.line})"
    if answer.address is None:
        lines = [f"domain {domain.name}: {where}, login_name: {domain.login_name}"]
    else:
        lines = [
            f'address "{answer.address}": {where}, '
            f'login name "{answer.login}" (login_name: {domain.login_name})'
        ]
    kind = "per user" if answer.per_user else "domain level"
    lines.append(f"answer: {kind}, {answer.rule}")
    if answer.login is not None:
        referral = table.login_referral(answer.login)
        if referral is not None:
            lines.append(f"login referral: {referral.urls[0]}")
    lines += _autoconfig_lines(answer) + _autodiscover_lines(answer) + _mobileconfig_lines(answer)
    return Explanation(lines, referred=True)


def _autoconfig_lines(answer: SetupAnswer) -> list[str]:
    # Read back as refd probe reads a fetched document: one reader.
    offered = {server.element: server for server in read_autoconfig(autoconfig(answer))}
    lines = []
    for element in ("incomingServer", "outgoingServer"):
        server = offered.get(element)
        if server is None:
            lines.append(f"autoconfig: no {element} (no submission server known)")
            continue
        lines.append(
            f"autoconfig: {element} {server.type} {server.hostname}:{server.port} "
            f"socketType {server.socket_type} username {server.username}"
        )
    return lines


def _autodiscover_lines(answer: SetupAnswer) -> list[str]:
    ns = f"{{{OUTLOOK_RESPONSE_NS}}}"
    root = ET.fromstring(autodiscover(answer))  # noqa: S314 (our own document)
    account = root.find(f"{ns}Response/{ns}Account")
    assert account is not None
    lines = []
    for protocol in account.findall(f"{ns}Protocol"):
        login = protocol.findtext(f"{ns}LoginName") or "(none: the client uses the address)"
        lines.append(
            f"autodiscover: {protocol.findtext(f'{ns}Type')} "
            f"{protocol.findtext(f'{ns}Server')}:{protocol.findtext(f'{ns}Port')} "
            f"SSL {protocol.findtext(f'{ns}SSL')} "
            f"Encryption {protocol.findtext(f'{ns}Encryption')} LoginName {login}"
        )
    if len(lines) == 1:
        lines.append("autodiscover: no SMTP (no submission server known)")
    return lines


def _mobileconfig_lines(answer: SetupAnswer) -> list[str]:
    mail = plistlib.loads(mobileconfig(answer))["PayloadContent"][0]
    lines = []
    for side in ("Incoming", "Outgoing"):
        host = mail.get(f"{side}MailServerHostName")
        if host is None:
            lines.append(f"mobileconfig: no {side}MailServer (no submission server known)")
            continue
        user = mail.get(f"{side}MailServerUsername", "(asked on the device)")
        use_ssl = "true" if mail[f"{side}MailServerUseSSL"] else "false"
        lines.append(
            f"mobileconfig: {side}MailServer {host}:{mail[f'{side}MailServerPortNumber']} "
            f"UseSSL {use_ssl} Username {user}"
        )
    return lines
