"""The door's answers to a login and to a mailbox command, as values.

These are the decisions an admin asks about: "what does alice get at
LOGIN?", "where is Shared/Sales sent?".  The session
(`refd.session.Session`) sends exactly these responses, and ``refd explain``
prints them through the same functions, so the tool cannot disagree with
the daemon.  Pure: a routing table and a user name in, protocol responses
out; logging, metrics and session state stay with the session.

``user`` is the name as authenticated (the auth source's canonical
spelling); the routing table compares it by `normalise_user`.
"""

from __future__ import annotations

from dataclasses import dataclass

from refd.protocol.responses import Cond, Response, Tagged, Untagged, referral_code
from refd.routing import Referral, RoutingTable, UserRoute, url_can_name
from refd.routing.model import Home, LoginMode, UnknownHome

__all__ = [
    "LoginAnswer",
    "MailboxAnswer",
    "auth_failed",
    "hosts",
    "login_answer",
    "mailbox_answer",
    "unroutable",
]


def auth_failed(tag: str) -> Tagged:
    """The one answer to a failed login, whatever the cause (RFC 2221 §6)."""
    return Tagged(tag, Cond.NO, "Authentication failed.", "AUTHENTICATIONFAILED")


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    """What a successful authentication of ``user`` is answered with (RFC 2221 §4).

    ``route`` and ``referral`` are None when the table has no route for the
    user (answered ``NO [UNAVAILABLE]``); then ``error`` says why when it is
    not simply "no rule": the source named a home the table does not have.
    ``logged_in``: the session is AUTHENTICATED here (``accept`` and
    ``stay``); ``outcome`` is the session outcome it leads to, None when the
    session's own stays (no route).
    """

    user: str
    route: UserRoute | None
    referral: Referral | None
    logged_in: bool
    outcome: str | None
    error: str | None = None

    def __init__(
        self,
        user: str,
        route: UserRoute | None,
        referral: Referral | None,
        logged_in: bool,
        outcome: str | None,
        error: str | None = None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "referral", referral)
        object.__setattr__(self, "logged_in", logged_in)
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "error", error)

    @property
    def is_referral(self) -> bool:
        """Whether a referral is sent (``refer`` and ``accept``; not ``stay``)."""
        return self.route is not None and self.route.login is not LoginMode.STAY

    def responses(self, tag: str, capabilities: str) -> list[Response]:
        """The responses, given the capabilities of the logged-in session."""
        if self.route is None or self.referral is None:
            text = "No mail server is configured for this account."
            return [Tagged(tag, Cond.NO, text, "UNAVAILABLE")]
        where = hosts(self.referral)
        if self.route.login is LoginMode.STAY:
            # Logged in here with a plain OK; mailbox referrals do the rest.
            text = f"Logged in. Your mail is on {where}."
            return [Tagged(tag, Cond.OK, text, "CAPABILITY " + capabilities)]
        code = referral_code(self.referral.urls)
        if self.route.login is LoginMode.ACCEPT:
            # RFC 2221 §4.1: OK [REFERRAL] -- logged in here; the user's
            # personal mailboxes are on the home server.
            text = f"Logged in. Your mailboxes are on {where}."
            return [Untagged("CAPABILITY " + capabilities), Tagged(tag, Cond.OK, text, code)]
        return [Tagged(tag, Cond.NO, f"Your mail is on {where}; connect there.", code)]


def login_answer(table: RoutingTable, user: str, home: Home | None = None) -> LoginAnswer:
    """The answer to a successful login of ``user`` (as authenticated).

    ``home``: the home server the authentication source named, if any.
    """
    try:
        route = table.route_user(user, home)
    except UnknownHome as exc:
        return LoginAnswer(user, None, None, logged_in=False, outcome=None, error=str(exc))
    referral = None if route is None else table.login_referral(user, route)
    if route is None or referral is None:
        return LoginAnswer(user, None, None, logged_in=False, outcome=None)
    if route.login is LoginMode.REFER:
        return LoginAnswer(user, route, referral, logged_in=False, outcome="login-referral")
    return LoginAnswer(user, route, referral, logged_in=True, outcome="accepted")


@dataclass(frozen=True, slots=True)
class MailboxAnswer:
    """The answer to a mailbox command (RFC 2193 §4); ``referral`` None: no route."""

    referral: Referral | None
    response: Tagged


def mailbox_answer(
    table: RoutingTable,
    user: str,
    tag: str,
    command: str,
    mailbox: str,
    home: Home | None = None,
) -> MailboxAnswer:
    """The answer to ``command`` (SELECT, CREATE, APPEND ...) on ``mailbox``.

    ``home``: the home server the source named at login, if any. The table
    in service may no longer have it (a reload): no referral then.
    """
    refused = unroutable(tag, mailbox)
    if refused is not None:
        return MailboxAnswer(None, refused)
    try:
        referral = table.mailbox_referral(user, mailbox, home)
    except UnknownHome:
        referral = None
    if referral is None:
        text = "No mail server is configured for this mailbox."
        return MailboxAnswer(None, Tagged(tag, Cond.NO, text, "UNAVAILABLE"))
    if command == "CREATE":
        text = f"Mailbox should be created on {hosts(referral)}."
    else:
        text = f"Remote mailbox. Try {hosts(referral)}."
    return MailboxAnswer(referral, Tagged(tag, Cond.NO, text, referral_code(referral.urls)))


def unroutable(tag: str, mailbox: str) -> Tagged | None:
    """The answer for a mailbox name no referral can carry; None if it can.

    The empty name is a valid astring (RFC 3501 §9), but RFC 5092 §11's
    ``enc-mailbox = 1*bchar`` means no URL names it, so no server can be
    referred to for it.  That is policy, not grammar, hence NO, and
    RFC 5530 §3's CANNOT ("violates some invariant of the server and can
    never succeed") for every command: the name is invalid, not merely
    absent (NONEXISTENT).  Dovecot answers the same, so a client sees one
    answer from the door and from its backend.
    """
    if url_can_name(mailbox):
        return None
    return Tagged(tag, Cond.NO, "A mailbox name cannot be empty.", "CANNOT")


def hosts(referral: Referral) -> str:
    """The referral's host names, without repeats, for the response text."""
    servers = referral.servers
    if len(servers) == 1:  # most referrals: no dict, generator and join
        return servers[0].host
    return " or ".join(dict.fromkeys(s.host for s in servers))
