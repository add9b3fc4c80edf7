"""The loaded routing table and its lookups: user -> route, mailbox -> referral.

`RoutingTable` is built by `refd.routing.load.load_table` and never changes;
the daemon swaps the whole table on reload. Lookups:

1. **User** (`route_user`): the name is lower-cased (`normalise_user`, the
   one case rule for auth and routing); then the bulk ``user_map`` (one
   probe of one of its dicts: `refd.routing.usermap`), then the ``users:``
   rules in file order -- first match wins (`_UserRules` finds it without
   trying every ``*@domain`` glob). No match: None, and the session gives
   no referral.
2. **Login referral** (RFC 2221): the home server's URL, then its replicas'.
3. **Mailbox** (`mailbox_referral`, RFC 2193 §4): INBOX (any case) always
   goes to the home server; otherwise the first ``mailboxes:`` rule whose
   pattern matches the whole name, else the home server. The URL always
   names the mailbox as it is called on that server (after ``rename``).
4. **RENAME** (`rename_referral`, RFC 2193 §4.3): see its docstring.

URLs carry the user name as it was authenticated (the backend is the judge
of its case); only the *lookup* key is normalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from refd.routing.model import (
    ClientTls,
    Domain,
    Home,
    LoginMode,
    MailboxRule,
    Namespaces,
    Referral,
    RemoteMailbox,
    RenameReferral,
    Server,
    UnknownHome,
    UserRoute,
    UserRule,
    is_inbox,
    normalise_user,
)
from refd.routing.url import imap_url, split_host_port, url_can_name
from refd.routing.usermap import SHARD_SHIFT, UserMap

__all__ = ["RoutingTable"]


@dataclass(frozen=True, slots=True, eq=False)
class RoutingTable:
    """A validated, compiled routing table (see `refd.routing.load`).

    ``chains`` maps each server name to the server followed by its replicas,
    flattened in preference order. ``user_map`` maps normalised user names to
    servers (shared `Server` objects: no per-entry allocation).
    ``sha256`` is the hex SHA-256 of the source texts, for the log line and
    metric that tell which table is in service. ``domains`` are the mail
    domains that account-setup documents are served for.
    """

    file: str
    delimiter: str
    servers: Mapping[str, Server]
    chains: Mapping[str, tuple[Server, ...]]
    user_rules: tuple[UserRule, ...]
    user_map: Mapping[str, Server]
    user_map_file: str
    mailbox_rules: tuple[MailboxRule, ...]
    published: tuple[str, ...]
    declared_namespaces: Namespaces
    sha256: str
    #: mail domains served by autodiscovery (``domains:``), by lower-case name
    domains: Mapping[str, Domain] = field(default_factory=dict)
    # Built from the fields above (so dataclasses.replace rebuilds them too):
    # the routes a lookup returns, made once instead of once per lookup.
    _rules: _UserRules | None = field(init=False, repr=False)
    _shards: tuple[dict[str, str], ...] = field(init=False, repr=False)
    _map_routes: Mapping[str, UserRoute] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # frozen: the derived fields are set the way dataclasses sets fields
        user_map = self.user_map
        if isinstance(user_map, UserMap):
            user_map = user_map.on(self.servers)  # the servers of this table
        else:  # a plain mapping (tests, tools): keys normalised, values Servers
            user_map = UserMap.of(user_map, self.servers)
        object.__setattr__(self, "user_map", user_map)
        object.__setattr__(self, "_shards", user_map.shards)
        rules = _UserRules.of(self.user_rules) if self.user_rules else None
        object.__setattr__(self, "_rules", rules)
        # One route per server for user-map hits (the values of user_map are
        # servers of this table): a hit allocates nothing. Building a
        # UserRoute and its description per hit was 1.9 of 2.9 us a lookup.
        rule = f"user_map {self.user_map_file}"
        routes = {
            name: UserRoute(server, LoginMode.REFER, rule, per_user=True)
            for name, server in self.servers.items()
        }
        object.__setattr__(self, "_map_routes", routes)

    # -- users ----------------------------------------------------------------

    def route_user(self, user: str, home: Home | None = None) -> UserRoute | None:
        """The user's home server and login mode; None when no rule matches.

        An empty name (``LOGIN "" ...`` is valid IMAP) has no route: no
        referral URL can name it (`url_can_name`), whatever ``default`` says.
        ``home``, when the authentication source named one, is taken before
        the rules (``home.first``) or after them; its server is looked up
        in this table every time, so a reload applies to it too.
        `UnknownHome` if it names no server here.
        """
        # Every login asks this, so a lookup makes no further Python call:
        # url_can_name (only the empty name has no URL), normalise_user
        # (lower-case) and UserMap.server_name are written out here, and a
        # table without ``users:`` rules has None for them. That saves
        # ~0.25 us a lookup (a miss in a 1M-user table: 0.85-0.98 -> 0.62-0.68
        # us CPU time); a hit spends it on picking the map's shard (~0.12 us)
        # and stays at 1.43-1.53 us, most of it the dict probe's cache misses.
        if not user:
            return None
        if home is None or not home.first:
            key = user.lower()
            name = self._shards[hash(key) >> SHARD_SHIFT].get(key)
            if name is not None:
                return self._map_routes[name]
            rules = self._rules
            route = rules.first_match(key) if rules is not None else None
            if route is not None or home is None:
                return route
        return self._home_route(home)

    def server_for(self, value: str) -> Server | None:
        """The server ``value`` names: a server name, or its ``host[:port]``.

        A host alone matches a server on that host only when exactly one
        server has it (with ``:port`` the pair must match); host names are
        compared case-insensitively. None when nothing (or more than one
        server) matches.
        """
        server = self.servers.get(value)
        if server is not None:
            return server
        text = value.strip()
        host, port_text = text, None
        if text.count(":") <= 1 or text.startswith("["):  # not a bare IPv6 address
            try:
                host, port_text = split_host_port(text)
            except ValueError:
                return None
        host = host.lower()
        found = [
            s
            for s in self.servers.values()
            if s.host.lower() == host and (port_text is None or str(s.port) == port_text)
        ]
        return found[0] if len(found) == 1 else None

    def _home_route(self, home: Home) -> UserRoute:
        server = self.server_for(home.value)
        if server is None:
            raise UnknownHome(f"{home.origin} names {home.value!r}: no server of the table")
        return UserRoute(server, LoginMode.REFER, f"{home.origin} names {home.value!r}")

    def login_referral(self, user: str, route: UserRoute | None = None) -> Referral | None:
        """RFC 2221 login referral: server URLs, home server then replicas.

        ``route`` is ``route_user(user)`` when the caller already has it.
        """
        route = route if route is not None else self.route_user(user)
        if route is None:
            return None
        return self._referral(user, self.chains[route.server.name], None, route.why(user))

    # -- mailboxes --------------------------------------------------------------

    def mailbox_referral(
        self, user: str, mailbox: str, home: Home | None = None
    ) -> Referral | None:
        """RFC 2193 mailbox referral for ``mailbox`` (a decoded name).

        None only when the user has no route at all.  The caller first asks
        `url_can_name` (the empty name has no referral); ValueError if not.
        ``home``: as for `route_user`.
        """
        route = self.route_user(user, home)
        if route is None:
            return None
        servers, remote, rule = self._mailbox_target(user, route, mailbox)
        return self._referral(user, servers, remote, rule)

    def rename_referral(
        self, user: str, old: str, new: str, home: Home | None = None
    ) -> RenameReferral | None:
        """Referral pairs for ``RENAME old new`` (RFC 2193 §4.3).

        The RFC: "In each pair of IMAP mailbox referrals, the first one is an
        URL to the existing mailbox name and the second is an URL to the
        requested new mailbox name. [...] If within an IMAP mailbox referral
        pair, the existing and new mailbox URLs are on the same server it is
        an indication that the currently connected server is unable to
        perform the operation. The client can simply re-issue the RENAME
        command on the remote server." -- and when they are on different
        servers, the client "MAY issue the constituent CREATE, FETCH, APPEND,
        and DELETE commands against both servers".

        So: for every server that holds both names (in the old name's
        preference order) one same-server pair, ``cross_server=False``. When
        no server holds both, a single pair of the preferred URLs,
        ``cross_server=True``. None only when the user has no route.
        """
        old_ref = self.mailbox_referral(user, old, home)
        new_ref = self.mailbox_referral(user, new, home)
        if old_ref is None or new_ref is None:
            return None
        new_index = {server.name: i for i, server in enumerate(new_ref.servers)}
        pairs = tuple(
            (old_ref.urls[i], new_ref.urls[new_index[server.name]])
            for i, server in enumerate(old_ref.servers)
            if server.name in new_index
        )
        if pairs:
            return RenameReferral(old_ref, new_ref, pairs, cross_server=False)
        return RenameReferral(
            old_ref, new_ref, ((old_ref.urls[0], new_ref.urls[0]),), cross_server=True
        )

    def remote_names(self, user: str, home: Home | None = None) -> tuple[str, ...]:
        """Names for RLIST / RLSUB: INBOX first, then ``published`` in file order."""
        if self.route_user(user, home) is None:
            return ()
        return ("INBOX", *self.published)

    def remote_mailboxes(self, user: str, home: Home | None = None) -> tuple[RemoteMailbox, ...]:
        """`remote_names` with the referral of each."""
        found = []
        for name in self.remote_names(user, home):
            referral = self.mailbox_referral(user, name, home)
            assert referral is not None  # the user has a route
            found.append(RemoteMailbox(name, referral))
        return tuple(found)

    def namespaces(self) -> Namespaces:
        """The NAMESPACE answer (RFC 2342)."""
        return self.declared_namespaces

    # -- explain ----------------------------------------------------------------

    def explain_user(self, user: str) -> list[str]:
        """A human trace of the routing decision for ``user``: rule, home server.

        The same lookups as the session; what is *sent* is `refd.answers`'.
        """
        key = normalise_user(user)
        shown = f'user "{user}"' + (f' (looked up as "{key}")' if key != user else "")
        route = self.route_user(user)
        if route is None:
            why = "no rule matched" if url_can_name(user) else "an IMAP URL cannot name it"
            return [f"{shown}: {why}", "no referral: the user has no home server in this table"]
        lines = [
            f"{shown} -> {route.why(user)}",
            "home server: " + ", then ".join(_server(s) for s in self.chains[route.server.name]),
        ]
        endpoints = _client_endpoints(route.server)
        if endpoints:
            lines.append(f"{route.server.name} for clients: {endpoints}")
        lines.append(f"login: {route.login.value}")
        return lines

    def explain_mailbox(self, user: str, mailbox: str) -> list[str]:
        """A human trace of where ``mailbox`` of ``user`` is sent: rule, name, servers."""
        route = self.route_user(user)
        if route is None:
            return []
        if not url_can_name(mailbox):
            return [f'mailbox "{mailbox}": no referral, an IMAP URL cannot name it']
        servers, remote, rule = self._mailbox_target(user, route, mailbox)
        lines = [f'mailbox "{mailbox}" -> {rule}']
        if remote != mailbox:
            lines.append(f'remote name: "{remote}"')
        lines.append("servers: " + ", then ".join(_server(s) for s in servers))
        return lines

    # -- internals ----------------------------------------------------------------

    def _mailbox_target(
        self, user: str, route: UserRoute, mailbox: str
    ) -> tuple[tuple[Server, ...], str, str]:
        home = self.chains[route.server.name]
        if is_inbox(mailbox):  # RFC 3501 §5.1: INBOX is case-insensitive
            return home, "INBOX", f"INBOX: always the home server ({route.why(user)})"
        for rule in self.mailbox_rules:
            remote = rule.remote_name(mailbox)
            if remote is not None:
                return rule.servers, remote, rule.description
        return home, mailbox, f"no mailbox rule matched: home server ({route.why(user)})"

    def _referral(
        self, user: str, servers: tuple[Server, ...], mailbox: str | None, rule: str
    ) -> Referral:
        urls = tuple(
            imap_url(user, s.host, s.port, mailbox, delimiter=self.delimiter) for s in servers
        )
        name = "" if mailbox is None else mailbox
        return Referral(urls, servers, tuple(name for _ in servers), rule)


@dataclass(frozen=True, slots=True)
class _UserRules:
    """The ``users:`` rules as a lookup runs them: the first match wins.

    A glob that is exactly ``*@DOMAIN``, DOMAIN without ``*``, ``?``, ``[``
    or ``@``, matches a name exactly when the name's part after its last
    ``@`` is DOMAIN. ``by_domain`` maps each such domain to its first rule's
    position; ``scan`` lists the positions of all other rules, in file order.
    A lookup tries the scanned rules in order up to the indexed rule of the
    name's domain, if there is one, and takes that rule if none of them
    matched: the same rule a scan of every rule would pick. 10,000 domain
    globs thus cost one dict lookup instead of 1.5-3.1 ms of fullmatch calls.
    ``routes`` holds one `UserRoute` per rule, made once.
    """

    rules: tuple[UserRule, ...]
    routes: tuple[UserRoute, ...]
    by_domain: Mapping[str, int]
    scan: tuple[int, ...]

    @classmethod
    def of(cls, rules: tuple[UserRule, ...]) -> _UserRules:
        by_domain: dict[str, int] = {}
        scan: list[int] = []
        for i, rule in enumerate(rules):
            domain = _glob_domain(rule)
            if domain is not None and domain not in by_domain:
                by_domain[domain] = i
            else:
                scan.append(i)
        routes = tuple(UserRoute(r.server, r.login, r.description) for r in rules)
        return cls(rules, routes, by_domain, tuple(scan))

    def first_match(self, key: str) -> UserRoute | None:
        """The route of the first rule that takes ``key`` (normalised), or None."""
        indexed = len(self.rules)  # none
        if self.by_domain:
            _, at, domain = key.rpartition("@")
            if at:
                indexed = self.by_domain.get(domain, indexed)
        for i in self.scan:
            if i > indexed:
                break
            if self.rules[i].matches(key):
                return self.routes[i]
        return self.routes[indexed] if indexed < len(self.rules) else None


def _glob_domain(rule: UserRule) -> str | None:
    """DOMAIN when ``rule`` is the glob ``*@DOMAIN`` with a literal DOMAIN, else None."""
    if rule.kind != "glob" or not rule.text.startswith("*@"):
        return None
    domain = rule.text[2:]
    if any(c in domain for c in "*?[@"):  # fnmatch's wildcards, and a second "@"
        return None
    return domain


def _server(server: Server) -> str:
    return f"{server.name} ({server.authority})"


_TLS_WORDS = {
    ClientTls.IMPLICIT: "implicit TLS",
    ClientTls.STARTTLS: "STARTTLS",
    ClientTls.NONE: "no TLS",
}


def _client_endpoints(server: Server) -> str:
    """What account-setup documents offer for ``server``, when it says more than its port."""
    if (
        server.imaps_port is None
        and server.client_tls is ClientTls.STARTTLS
        and not server.submission
    ):
        return ""
    imap = server.imap_endpoint
    text = f"IMAP {imap.authority} {_TLS_WORDS[imap.tls]}"
    if server.submission is not None:
        sub = server.submission
        text += f", submission {sub.authority} {_TLS_WORDS[sub.tls]}"
    return text
