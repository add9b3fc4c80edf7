"""``refd explain``: what the door answers one user, traced and shown.

The trace runs the daemon's own decision code: the auth source's own
lookup (which name a login is routed as, or that it cannot succeed), the
routing table's lookups (`RoutingTable.explain_user` / `explain_mailbox`
name the rules), and `refd.answers` for the responses, printed in wire form
as ``S:`` lines -- the bytes a live session sends (without CRLF).  Only the
password check itself is assumed: ``C: a1 LOGIN user <password>`` stands
for a login with the right password.
"""

from __future__ import annotations

from dataclasses import dataclass

from refd.answers import auth_failed, login_answer, mailbox_answer
from refd.auth.base import AuthSource
from refd.auth.passwd_file import PasswdFileSource
from refd.auth.trust import TrustSource
from refd.protocol.responses import Response, to_bytes, wire_mailbox
from refd.routing import RoutingTable
from refd.session import BASE_CAPABILITIES

__all__ = ["Explanation", "explain"]


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


def explain(
    table: RoutingTable, user: str, mailbox: str | None = None, auth: AuthSource | None = None
) -> Explanation:
    """The trace for a login as ``user`` (and a SELECT of ``mailbox``).

    Without ``auth`` (a routing table on its own), ``user`` is taken as
    authenticated as given.
    """
    name, lines = _authenticated_as(auth, user)
    login = f"C: a1 LOGIN {user} <password>"
    if name is None:
        lines += table.explain_user(user)
        lines += [login, *_wire([auth_failed("a1")])]
        return Explanation(lines, referred=False)
    lines += table.explain_user(name)
    answer = login_answer(table, name)
    lines += [login, *_wire(answer.responses("a1", " ".join(BASE_CAPABILITIES)))]
    if mailbox is not None and answer.route is not None:
        lines += table.explain_mailbox(name, mailbox)
        if answer.logged_in:
            command = mailbox_answer(table, name, "a2", "SELECT", mailbox)
            lines += [f"C: a2 SELECT {wire_mailbox(mailbox)}", *_wire([command.response])]
        else:
            lines.append(
                "(no mailbox command reaches this door: the login referral sends "
                "the client to its home server)"
            )
    return Explanation(lines, referred=answer.route is not None)
