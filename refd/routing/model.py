"""Values of the routing table: servers, rules, routes and referrals.

Everything here is a frozen value. `refd.routing.load` builds them from the
YAML tree once, at load time (regexes are compiled there, replica chains are
flattened there), so a lookup in `refd.routing.match` only compares strings
and runs precompiled patterns. The session receives `UserRoute`,
`Referral`, `RenameReferral`, `RemoteMailbox` and `Namespaces`; it never sees
a rule.

Rules are numbered from 1 in descriptions (``users[2]`` is the second rule
under ``users:``), the way an admin counts them in the file.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal

from refd.routing.url import url_host

__all__ = [
    "ClientTls",
    "Domain",
    "Endpoint",
    "Home",
    "LoginMode",
    "MailboxRule",
    "Namespaces",
    "Referral",
    "RemoteMailbox",
    "RenameReferral",
    "Server",
    "UnknownHome",
    "UserRoute",
    "UserRule",
    "is_inbox",
    "normalise_user",
]


class ClientTls(enum.Enum):
    """How a client secures a connection to a port (a setup document's ``socketType``)."""

    IMPLICIT = "implicit"  # TLS from the first byte (IMAP 993, submission 465; RFC 8314)
    STARTTLS = "starttls"  # plaintext greeting, then STARTTLS (IMAP 143, submission 587)
    NONE = "none"  # no TLS at all (demo and test backends only)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host, port and TLS mode that an account-setup document offers a client."""

    host: str
    port: int
    tls: ClientTls

    @property
    def authority(self) -> str:
        """``host:port`` with IPv6 hosts in brackets."""
        return f"{url_host(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class Server:
    """A backend IMAP server.

    ``host`` is a DNS name or an IP address; an IPv6 literal is kept without
    brackets (``::1``) so it can be handed to a socket connect as is, and is
    bracketed in URLs and in `authority`. ``replicas`` are other server
    names, in preference order; ``line`` is where the server is defined.

    Two ports, two readers. ``port`` is what referral URLs name: a port
    that greets in plaintext and offers STARTTLS, because a client that
    follows a referral (alpine) rebuilds the connection from the URL alone
    and cannot know to start TLS at once. ``imaps_port`` is the server's
    implicit-TLS port (993), if it has one. ``client_tls`` says which of the
    two account-setup documents offer (`imap_endpoint`), so a referral and a
    setup document always name the same host. ``submission`` is the SMTP
    submission server for this server's users, when it differs from the
    domain's.
    """

    name: str
    host: str
    port: int
    replicas: tuple[str, ...]
    line: int
    imaps_port: int | None = None
    client_tls: ClientTls = ClientTls.STARTTLS
    submission: Endpoint | None = None

    @property
    def imap_endpoint(self) -> Endpoint:
        """The IMAP endpoint that account-setup documents offer for this server."""
        if self.client_tls is ClientTls.IMPLICIT and self.imaps_port is not None:
            return Endpoint(self.host, self.imaps_port, ClientTls.IMPLICIT)
        return Endpoint(self.host, self.port, self.client_tls)

    @property
    def authority(self) -> str:
        """``host:port`` with IPv6 hosts in brackets, e.g. ``[::1]:143``."""
        return f"{url_host(self.host)}:{self.port}"


LoginName = Literal["address", "local_part"]


@dataclass(frozen=True, slots=True)
class Domain:
    """A mail domain that account-setup documents are served for (``domains:``).

    ``name`` is lower-case. ``login_name`` says what a user of the domain
    logs in with: the whole ``address`` or its ``local_part``.
    ``server`` is the domain-level answer's IMAP server: what a setup
    document names when no per-user answer is given (no address, an
    address the table does not route, or ``per_user: false``).
    ``submission`` is the SMTP submission endpoint; a server's own
    ``submission`` takes precedence for its users.
    """

    name: str
    login_name: LoginName
    display_name: str
    server: Server
    submission: Endpoint | None
    line: int

    def login_for(self, address: str) -> str:
        """The login name of ``address`` (already checked to be on this domain)."""
        if self.login_name == "local_part":
            return address.rpartition("@")[0]
        return address


class LoginMode(enum.Enum):
    """What a successful login gets (RFC 2221 §4.1 and §4.2)."""

    REFER = "refer"  # tagged NO [REFERRAL url]: the client must go there
    ACCEPT = "accept"  # tagged OK [REFERRAL url]: logged in here, home is there
    # tagged OK, no referral: logged in here; every mailbox, INBOX included,
    # gets its own mailbox referral.  c-client (alpine, pine) treats the
    # OK [REFERRAL] of "accept" as a login referral and leaves; with "stay"
    # it remains, lists with RLIST and follows each mailbox referral.
    STAY = "stay"


@dataclass(frozen=True, slots=True)
class Home:
    """A home server named by the authentication source, not by the table.

    A directory's ``mailHost`` attribute or an auth service's
    ``Auth-Server``/``Auth-Port`` say where a user's mail is. ``value`` is
    what the source said (a server name of the table, its host, or
    ``host:port``); ``origin`` says who said it (the directory entry, the
    service URL), for logs and ``refd explain``. With ``first`` the source
    wins over the table's ``users:`` rules; without it, the source only
    answers for users no rule matches.
    """

    value: str
    origin: str
    first: bool = True


class UnknownHome(LookupError):
    """A `Home` whose value names no server of the table (an error of the source's data)."""


@dataclass(frozen=True, slots=True)
class UserRoute:
    """Where a user lives: the home server, the login mode, and why.

    ``rule`` is what matched: a rule (``users[2] glob "*@sales.example.org"
    (routing.yaml:31)``), a home named by the source, or the user map
    (``user_map users.map``). The table keeps one route per rule and one per
    server for user-map hits, so a lookup allocates nothing; a user-map
    route has ``per_user`` set and `why` adds the entry, the name looked up.
    """

    server: Server
    login: LoginMode
    rule: str
    per_user: bool = False

    def why(self, user: str) -> str:
        """The description of this route for ``user``, as explain and logs show it."""
        if self.per_user:
            return f'{self.rule} "{normalise_user(user)}"'
        return self.rule


@dataclass(frozen=True, slots=True)
class Referral:
    """What the session sends: URLs in preference order (RFC 2193 §3).

    ``servers`` and ``remote_names`` are parallel to ``urls``: the server of
    each URL (for logs and metric labels) and the mailbox name on it (""
    for a login referral).
    """

    urls: tuple[str, ...]
    servers: tuple[Server, ...]
    remote_names: tuple[str, ...]
    rule: str

    def __init__(
        self,
        urls: tuple[str, ...],
        servers: tuple[Server, ...],
        remote_names: tuple[str, ...],
        rule: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "urls", urls)
        object.__setattr__(self, "servers", servers)
        object.__setattr__(self, "remote_names", remote_names)
        object.__setattr__(self, "rule", rule)


@dataclass(frozen=True, slots=True)
class RenameReferral:
    """The answer to RENAME old new (RFC 2193 §4.3).

    ``pairs`` are (old-url, new-url) pairs; `urls` flattens them in the
    order ``NO [REFERRAL old1 new1 old2 new2 ...]`` needs. ``cross_server``
    is True when old and new live on different servers: the client then has
    to copy (CREATE, FETCH, APPEND, DELETE) instead of re-issuing RENAME,
    and the session's text should say so.
    """

    old: Referral
    new: Referral
    pairs: tuple[tuple[str, str], ...]
    cross_server: bool

    @property
    def urls(self) -> tuple[str, ...]:
        """The pairs flattened: old1 new1 old2 new2 ..."""
        return tuple(url for pair in self.pairs for url in pair)


@dataclass(frozen=True, slots=True)
class RemoteMailbox:
    """A mailbox for RLIST / RLSUB / LIST (REMOTE), with its referral."""

    name: str
    referral: Referral


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The NAMESPACE answer (RFC 2342 §5): (prefix, delimiter) pairs per class.

    An empty tuple is sent as NIL.
    """

    personal: tuple[tuple[str, str], ...]
    other: tuple[tuple[str, str], ...]
    shared: tuple[tuple[str, str], ...]


UserRuleKind = Literal["user", "glob", "regex", "default"]


@dataclass(frozen=True, slots=True)
class UserRule:
    """One entry under ``users:``. ``pattern`` is the compiled glob or regex
    (None for ``user`` and ``default``); ``text`` is what the file says,
    lower-cased for ``user`` and ``glob`` (see `normalise_user`)."""

    kind: UserRuleKind
    text: str
    pattern: re.Pattern[str] | None
    server: Server
    login: LoginMode
    description: str

    def matches(self, user: str) -> bool:
        """Whether this rule takes the (normalised) ``user``."""
        if self.pattern is not None:
            return self.pattern.fullmatch(user) is not None
        return self.kind == "default" or self.text == user


@dataclass(frozen=True, slots=True)
class MailboxRule:
    """One entry under ``mailboxes:``.

    ``pattern`` is ``match`` compiled to a regex with one group per
    wildcard; ``servers`` is the flattened list (each named server followed
    by its replicas, duplicates dropped); ``rename_parts`` are the literal
    pieces of ``rename`` around its wildcards (empty when there is no rename).
    """

    match: str
    pattern: re.Pattern[str]
    servers: tuple[Server, ...]
    rename: str | None
    rename_parts: tuple[str, ...]
    description: str

    def remote_name(self, mailbox: str) -> str | None:
        """The name on the remote server, or None if the rule doesn't match.

        A rename that would leave an empty name (``rename: "*"`` applied to
        ``Shared/``) does not apply either: a URL cannot name "".
        """
        found = self.pattern.fullmatch(mailbox)
        if found is None:
            return None
        if not self.rename_parts:
            return mailbox
        pieces = [self.rename_parts[0]]
        for captured, literal in zip(found.groups(), self.rename_parts[1:], strict=True):
            pieces.append(captured)
            pieces.append(literal)
        return "".join(pieces) or None


def normalise_user(user: str) -> str:
    """The lookup key of ``user``: the whole name lower-cased.

    refd's one case rule for user names, the same for authentication (the
    passwd-file) and routing (``user:``, ``glob:``, ``regex:``, ``user_map``):
    names are compared case-insensitively, as Dovecot compares them by default
    (``auth_username_format = %Lu``). ``Alice@ACME.test`` and
    ``alice@acme.test`` are one user. Only comparisons use this key; what is
    sent (a referral URL) carries the name as authenticated.
    """
    return user.lower()


def is_inbox(mailbox: str) -> bool:
    """True for INBOX in any ASCII case (RFC 3501 §5.1)."""
    # isascii first: U+0131 DOTLESS I upper-cases to "I" in Python.
    return len(mailbox) == 5 and mailbox.isascii() and mailbox.upper() == "INBOX"
