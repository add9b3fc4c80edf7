"""Session policy: what refd answers to each command, given the tables.

The protocol core (``refd.protocol``) turns bytes into commands and checks
which are legal in which state; this module decides the answers.  It asks
the routing table in service for referrals and the authentication source for
verdicts, and returns :class:`Reply` values; the server loop
(``refd.server``) only moves bytes.  ``HANDLERS`` is the dispatch table, one
entry per command type, and a test checks it covers ``protocol.commands``.

What is in service (routing table, authentication source, policy) is one
:class:`Service` value behind a :class:`ServiceRef`; a reload swaps the
reference, so every command reads one consistent snapshot and a session in
flight picks the new table up at its next command.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from refd import __version__
from refd.addresses import address_in
from refd.answers import auth_failed, hosts, login_answer, mailbox_answer, unroutable
from refd.deadlines import Wait
from refd.door import DoorState
from refd.login import Outcome, check_login
from refd.logs import log_event
from refd.protocol import commands as c
from refd.protocol.commands import CommandError, State, decode_base64, parse_append_mailbox
from refd.protocol.connection import BadInput, Connection, LiteralRequest, SaslResponse
from refd.protocol.grammar import ParseError
from refd.protocol.listing import ListPattern, compile_patterns, hierarchy, select
from refd.protocol.responses import (
    Bye,
    Cond,
    Continuation,
    Response,
    Tagged,
    Untagged,
    UntaggedStatus,
    id_response,
    list_response,
    namespace_response,
    referral_code,
)
from refd.routing import door_url
from refd.routing.model import Home, UnknownHome
from refd.runtime import ClientInfo, Service, ServiceRef

__all__ = ["HANDLERS", "Reply", "Session"]

log = logging.getLogger("refd.session")

#: What every session advertises (RFC 3501 §7.2.1 and the extensions'
#: RFCs).  AUTH=PLAIN is deliberately absent by default: c-client clients
#: (alpine, pine) retry AUTHENTICATE three times, asking for the password
#: each time, before they follow a referral; with LOGIN they follow at once.
BASE_CAPABILITIES = (
    "IMAP4rev1",
    "LITERAL-",  # RFC 7888
    "SASL-IR",  # RFC 4959
    "ID",  # RFC 2971
    "NAMESPACE",  # RFC 2342
    "LIST-EXTENDED",  # RFC 5258
    "LOGIN-REFERRALS",  # RFC 2221
    "MAILBOX-REFERRALS",  # RFC 2193
)


@dataclass(slots=True)
class Reply:
    """What the server loop must do after one event.

    Most answers are a line or two in ``responses``.  An answer whose size
    depends on the tables (LIST) puts its untagged lines in ``stream``
    instead: batches produced lazily, each after a bounded amount of work,
    which the server sends in bounded chunks before ``responses``, so a
    client that does not read holds one chunk, not the whole answer.
    """

    responses: list[Response] = field(default_factory=list)
    close: bool = False
    starttls: bool = False
    #: the command this answers (a label for metrics), when known
    command: str | None = None
    #: untagged lines to send before ``responses``, produced while they are sent
    stream: Iterable[Sequence[Response]] | None = None
    #: seconds the server waits before sending the answer (the login delay:
    #: one delay for unknown user and wrong password, see refd.throttle)
    delay_s: float = 0.0

    def __init__(
        self,
        responses: list[Response] | None = None,
        close: bool = False,
        starttls: bool = False,
        command: str | None = None,
        stream: Iterable[Sequence[Response]] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        self.responses = [] if responses is None else responses
        self.close = close
        self.starttls = starttls
        self.command = command
        self.stream = stream
        self.delay_s = delay_s


class Session:
    """One client's session policy, driving one :class:`Connection`."""

    def __init__(
        self,
        ref: ServiceRef,
        client: ClientInfo,
        conn: Connection,
        door: DoorState | None = None,
    ) -> None:
        self.ref = ref
        self.client = client
        self.conn = conn
        self.door = door or DoorState()
        self.user: str | None = None
        #: the home server the source named at login (routed by the table in service)
        self.home: Home | None = None
        #: who authenticated here, also when referred away (for the log)
        self.login_user: str | None = None
        #: the server the login was referred to (named by the session end line)
        self.login_server: str | None = None
        #: password checks asked on this connection (an auth service is told)
        self.login_attempts = 0
        self.outcome = "disconnected"
        self._limits_logged: set[str] = set()
        #: the read the server loop is waiting in, if any (interrupted at shutdown)
        self.waiting: Wait | None = None

    def limit_hit(self, name: str, reason: str) -> None:
        """Count every hit of a limit; log the first one per connection."""
        first = name not in self._limits_logged
        self._limits_logged.add(name)
        self.door.limit_hit(
            name, reason, conn_id=self.client.conn_id, address=self.client.address, log_it=first
        )

    # -- helpers ----------------------------------------------------------

    @property
    def service(self) -> Service:
        return self.ref.current

    def plaintext_auth_allowed(self) -> bool:
        """RFC 9051 §6.2.3 / DESIGN: no password in clear outside trusted networks."""
        if self.client.tls:
            return True
        networks = self.service.policy.trusted_networks
        if self.client.forwarded_by is not None:
            return address_in(self.client.forwarded_by, networks)
        return self.client.in_networks(networks)

    def capabilities(self) -> str:
        caps = list(BASE_CAPABILITIES)
        if self.conn.state is State.NOT_AUTHENTICATED:
            if self.client.starttls_available and not self.client.tls:
                caps.append("STARTTLS")
            if not self.plaintext_auth_allowed():
                caps.append("LOGINDISABLED")
            elif self.service.policy.advertise_auth_plain:
                caps.append("AUTH=PLAIN")
        return " ".join(caps)

    def greeting(self) -> Reply:
        policy = self.service.policy
        if policy.drain:
            # RFC 2221 §4.2: "* BYE [REFERRAL ...]" in place of the greeting.
            self.outcome = "drained"
            return Reply([self.sibling_bye("Server not accepting connections.")], close=True)
        code = "CAPABILITY " + self.capabilities()
        text = f"{policy.hostname} refd IMAP referral service ready."
        return Reply([UntaggedStatus(Cond.OK, text, code)])

    def sibling_bye(self, text: str) -> Bye:
        """``* BYE``, with a referral to the sibling door when there is one."""
        sibling = self.service.policy.sibling
        if sibling is None:
            return Bye(text, "UNAVAILABLE")
        host, port = sibling
        url = door_url(host, port, self.user)
        self._log_referral("greeting", "GREETING", "sibling", self.user)
        return Bye(f"{text} Try {host}.", referral_code([url]))

    # -- dispatch -----------------------------------------------------------

    async def handle(self, event: object) -> Reply:
        """Answer one event from the connection."""
        name: str | None
        if isinstance(event, c.Command):
            reply = None
            if type(event) in c.CARRIES_CREDENTIALS:
                reply = self._refuse_plaintext(event.tag)
            if reply is None:
                reply = await HANDLERS[type(event)](self, event)
            name = event.command if isinstance(event, c.Unselected) else event.name
        elif isinstance(event, BadInput):
            reply, name = self._bad_input(event), event.error.command
        elif isinstance(event, LiteralRequest):
            reply, name = self._literal(event), event.name
        elif isinstance(event, SaslResponse):
            reply, name = await self._sasl_response(event), "AUTHENTICATE"
        else:
            raise TypeError(f"unexpected event {event!r}")
        reply.command = name
        return reply

    def _bad_input(self, event: BadInput) -> Reply:
        err = event.error
        reply = Reply([_bad(err)])
        # Each limit with its own reason: the BAD names what this command
        # ran into; the BYE of a lost stream is the same for every limit.
        if event.limit is not None:
            self.limit_hit(event.limit, err.text)
        if event.too_many_bad:
            assert event.bye is not None
            self.limit_hit("bad_commands", event.bye)
        if event.bye is not None:
            reply.responses.append(Bye(event.bye))
            reply.close = True
            self.outcome = "bad-commands"
        return reply

    def _literal(self, req: LiteralRequest) -> Reply:
        if req.name == "APPEND":
            # RFC 2193 §4.1 with RFC 3501 §7.5: answer the referral instead
            # of "+", so the message body is never sent to the door.
            self.conn.refuse_literal()
            try:
                mailbox = parse_append_mailbox(req.prefix)
            except CommandError as exc:
                return Reply([_bad(exc)])
            return self._mailbox_referral(req.tag, "APPEND", mailbox)
        if req.credentials:
            # Refuse before "+": a literal here would carry the password
            # in clear to a door that is going to refuse it anyway.
            refused = self._refuse_plaintext(req.tag)
            if refused is not None:
                self.conn.refuse_literal()
                return refused
        if not req.within_limit:
            self.limit_hit(
                "literal_size",
                f"a literal of {req.size} octets; limits.max_literal_bytes is "
                f"{self.conn.limits.max_literal_bytes}",
            )
            self.conn.refuse_literal()
            text = (
                f"Literal of {req.size} octets is over the limit."
                if req.size < 1 << 62
                else "Literal size out of range."
            )
            return Reply([Tagged(req.tag, Cond.NO, text, "TOOBIG")])
        self.conn.accept_literal()
        return Reply([Continuation("Ready for literal data")])

    # -- authentication ----------------------------------------------------------

    def _refuse_plaintext(self, tag: str) -> Reply | None:
        """The answer to a command in ``CARRIES_CREDENTIALS`` (or its literal)
        that must not be sent here in clear; None when it may."""
        if self.plaintext_auth_allowed():
            return None
        text = "Log in over TLS: use STARTTLS or the implicit-TLS port first."
        return Reply([Tagged(tag, Cond.NO, text, "PRIVACYREQUIRED")])

    async def _authenticate(self, tag: str, command: str, user: str, password: str) -> Reply:
        service = self.service  # one snapshot for the whole login
        self.login_attempts += 1
        check = await check_login(
            service, self.door, self.client, user, password, self.limit_hit, self.login_attempts
        )
        if check.outcome is Outcome.BUSY:
            text = "Too many logins in progress; try again shortly."
            return Reply([Tagged(tag, Cond.NO, text, "UNAVAILABLE")])
        if check.outcome in (Outcome.UNAVAILABLE, Outcome.REFUSED):
            text = "Authentication is temporarily unavailable; try again later."
            reply = Reply([Tagged(tag, Cond.NO, text, "UNAVAILABLE")])
        elif check.outcome is Outcome.FAILED:
            # RFC 2221 §6: never a referral after failed authentication.
            reply = Reply([auth_failed(tag)])
        else:
            reply = self._login_referral(tag, command, check.user, service, check.home)
        # The server loop waits, not this handler: the answer carries its
        # delay, counted from the start of the check (refd.login).
        reply.delay_s = check.delay_s
        return reply

    def _login_referral(
        self, tag: str, command: str, user: str, service: Service, home: Home | None
    ) -> Reply:
        self.login_user = user
        # what refd explain prints, too
        answer = login_answer(service.table, user, home)
        if answer.error is not None:
            log_event(
                log,
                logging.ERROR,
                "unknown_home",
                "no route conn=%(conn)s user=%(user)s reason=%(reason)s",
                conn=self.client.conn_id,
                user=user,
                reason=answer.error,
            )
        elif answer.referral is None:
            log_event(
                log,
                logging.WARNING,
                "no_route",
                "no route conn=%(conn)s user=%(user)s",
                conn=self.client.conn_id,
                user=user,
            )
        elif answer.is_referral:
            self.login_server = answer.referral.servers[0].name
            # The session end line names the server: one INFO line per session.
            self._log_referral("login", command, self.login_server, user, logging.DEBUG)
        if answer.logged_in:
            self.user = user
            self.home = home
            self.conn.state = State.AUTHENTICATED
        if answer.outcome is not None:
            self.outcome = answer.outcome
        # Only a session logged in here announces its capabilities (not a referral).
        capabilities = self.capabilities() if answer.logged_in else ""
        return Reply(answer.responses(tag, capabilities))

    async def _sasl_response(self, event: SaslResponse) -> Reply:
        if event.data is None:
            # RFC 3501 §6.2.2: "*" cancels, and the server MUST answer BAD.
            return Reply([Tagged(event.tag, Cond.BAD, "Authentication cancelled.")])
        try:
            message = decode_base64(event.data, "AUTHENTICATE response")
        except ParseError as exc:
            return Reply([Tagged(event.tag, Cond.BAD, exc.text)])
        return await self._plain(event.tag, message)

    async def _plain(self, tag: str, message: bytes) -> Reply:
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = message.split(b"\x00")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Reply([Tagged(tag, Cond.BAD, "Malformed PLAIN message (RFC 4616).")])
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return Reply([Tagged(tag, Cond.BAD, "PLAIN message is not valid UTF-8.")])
        if authzid and authzid != authcid:
            text = "Acting as another user is not supported."
            return Reply([Tagged(tag, Cond.NO, text, "AUTHORIZATIONFAILED")])
        return await self._authenticate(tag, "AUTHENTICATE", authcid, password)

    # -- mailbox referrals -----------------------------------------------------------

    def _unroutable(self, tag: str, mailbox: str) -> Reply | None:
        """The answer for a mailbox name no referral can carry; None if it can."""
        refused = unroutable(tag, mailbox)
        return None if refused is None else Reply([refused])

    def _mailbox_referral(self, tag: str, command: str, mailbox: str) -> Reply:
        assert self.user is not None
        answer = mailbox_answer(self.service.table, self.user, tag, command, mailbox, self.home)
        if answer.referral is not None:
            self._log_referral("mailbox", command, answer.referral.servers[0].name, self.user)
        return Reply([answer.response])

    def _log_referral(
        self, kind: str, command: str, server: str, user: str | None, level: int = logging.INFO
    ) -> None:
        self.door.metrics.referral(kind, command, server)
        if log.isEnabledFor(level):  # a login's DEBUG line: ~2 us to gather for nothing
            log_event(
                log,
                level,
                "referral",
                "referral conn=%(conn)s kind=%(kind)s command=%(command)s server=%(server)s "
                "user=%(user)s",
                conn=self.client.conn_id,
                kind=kind,
                command=command,
                server=server,
                user=user,
            )

    def _list(
        self,
        tag: str,
        kind: str,
        reference: str,
        patterns: tuple[str, ...],
        *,
        remote_flag: bool = False,
        subscribed_flag: bool = False,
        children: bool = False,
    ) -> Reply:
        """RLIST / RLSUB / LIST (REMOTE): what the table publishes for the user.

        Each name is answered once however many patterns match it (RFC 5258
        §3), so the answer is bounded by the table, not by the command; the
        lines are produced in bounded steps while the server sends them.
        """
        assert self.user is not None
        service = self.service
        # The parser stopped one past the connection's limit (the limits
        # in service may have changed since the connection began).
        limit = self.conn.limits.max_list_patterns
        if len(patterns) > limit:
            # RFC 5530 §3: LIMIT, "an implementation limit of some kind".
            text = f"Too many patterns: at most {limit} in one {kind}."
            self.limit_hit(
                "list_patterns",
                f"{len(patterns)} patterns or more in one {kind} (max_list_patterns)",
            )
            return Reply([Tagged(tag, Cond.NO, text, "LIMIT")])
        table = service.table
        compiled = compile_patterns(reference, patterns, table.delimiter)
        try:
            names = table.remote_names(self.user, self.home)
        except UnknownHome:
            names = ()
        # The matching work is bounded before any is done: each name is
        # tested against the patterns until one matches.
        tests = len(compiled) * len(names)
        if tests > service.limits.max_list_tests:
            text = f"Too much matching: {len(compiled)} patterns over {len(names)} mailboxes."
            self.limit_hit(
                "list_tests",
                f"{len(compiled)} patterns x {len(names)} names in one {kind} (max_list_tests)",
            )
            return Reply([Tagged(tag, Cond.NO, text, "LIMIT")])
        flags = (["\\Subscribed"] if subscribed_flag else []) + (
            ["\\Remote"] if remote_flag else []
        )
        lines = _list_lines(
            kind,
            compiled,
            names,
            table.delimiter,
            flags,
            children=children,
            level_flag="\\NonExistent" if remote_flag else "\\Noselect",
        )
        return Reply([Tagged(tag, Cond.OK, f"{kind} completed.")], stream=lines)


#: the work between two pauses of a LIST (see ``protocol.listing.select``):
#: about a millisecond
_LIST_STEP = 10_000
#: the names a LIST may return are the same until a reload: their hierarchy
#: is worked out once per table
_hierarchy = functools.lru_cache(maxsize=2)(hierarchy)


def _list_lines(
    kind: str,
    patterns: tuple[ListPattern, ...],
    names: tuple[str, ...],
    delim: str,
    flags: list[str],
    *,
    children: bool,
    level_flag: str,
) -> Iterator[list[Response]]:
    """The LIST lines for ``names``, in batches of bounded work."""
    levels = _hierarchy(names, delim) if children or any(p.lists_levels for p in patterns) else None
    for batch in select(patterns, names, step=_LIST_STEP):
        out: list[Response] = []
        for name in batch:
            these = flags
            if levels is not None and children:
                has = "\\HasChildren" if name in levels.with_children else "\\HasNoChildren"
                these = [has, *flags]
            out.append(list_response(kind, these, delim, name))
        yield out
    # RFC 3501 §6.3.8: a pattern ending in "%" also returns the hierarchy
    # levels it matches; those that are not mailboxes cannot be selected.
    by_level = tuple(p for p in patterns if p.lists_levels)
    if levels is not None and by_level:
        level_flags = [level_flag, "\\HasChildren"]
        for batch in select(by_level, levels.parents, step=_LIST_STEP):
            yield [list_response(kind, level_flags, delim, name) for name in batch]


def _bad(err: CommandError) -> Response:
    if err.tag is None:
        return UntaggedStatus(Cond.BAD, err.text, err.code)
    return Tagged(err.tag, Cond.BAD, err.text, err.code)


# --- handlers: one per command type ----------------------------------------------


async def _capability(s: Session, cmd: c.Capability) -> Reply:
    return Reply([Untagged("CAPABILITY " + s.capabilities()), _ok(cmd, "CAPABILITY completed.")])


async def _noop(s: Session, cmd: c.Noop) -> Reply:
    return Reply([_ok(cmd, "NOOP completed.")])


async def _logout(s: Session, cmd: c.Logout) -> Reply:
    if s.outcome == "disconnected":
        s.outcome = "logout"
    return Reply([Bye("Logging out."), _ok(cmd, "LOGOUT completed.")], close=True)


async def _id(s: Session, cmd: c.Id) -> Reply:
    # A trusted peer (webmail, proxy) may name the real client, as Dovecot
    # accepts: ID ("x-originating-ip" "203.0.113.7" "x-originating-port"
    # "51234").  Logs, limits and the login throttle then see that address.
    # Anyone else's claim is ignored.
    if (
        cmd.params
        and s.client.forwarded_by is None
        and s.client.in_networks(s.service.policy.trusted_networks)
    ):
        params = {key.lower(): value for key, value in cmd.params}
        try:
            real = str(ipaddress.ip_address((params.get("x-originating-ip") or "").strip("[]")))
        except ValueError:
            real = None
        if real is not None:
            port_text = params.get("x-originating-port") or ""
            port = int(port_text) if re.fullmatch(r"[0-9]{1,5}", port_text) else None
            if port is not None and port > 65535:
                port = None
            log.info(
                "client address conn=%s addr=%s forwarded_by=%s",
                s.client.conn_id,
                real,
                s.client.address,
            )
            # The peer's own port is not the client's: unknown unless named.
            s.client = dataclasses.replace(
                s.client, address=real, port=port, forwarded_by=s.client.address
            )
    # RFC 2971 §3.1: the server answers with its own identification.
    fields = [("name", "refd"), ("version", __version__)]
    return Reply([id_response(fields), _ok(cmd, "ID completed.")])


async def _starttls(s: Session, cmd: c.Starttls) -> Reply:
    if s.client.tls:
        return Reply([Tagged(cmd.tag, Cond.BAD, "TLS is already active.")])
    if not s.client.starttls_available:
        return Reply([Tagged(cmd.tag, Cond.NO, "STARTTLS is not available on this listener.")])
    return Reply([_ok(cmd, "Begin TLS negotiation now.")], starttls=True)


async def _login(s: Session, cmd: c.Login) -> Reply:
    # Session.handle has refused it already if it may not come in clear.
    return await s._authenticate(cmd.tag, "LOGIN", cmd.user, cmd.password)


async def _authenticate(s: Session, cmd: c.Authenticate) -> Reply:
    if cmd.mechanism != "PLAIN":
        return Reply([Tagged(cmd.tag, Cond.NO, "Unsupported authentication mechanism.", "CANNOT")])
    if cmd.initial is None:
        s.conn.expect_sasl_response(cmd.tag)
        return Reply([Continuation()])
    return await s._plain(cmd.tag, cmd.initial)


def _mailbox_handler(
    cls: type[c.Select | c.Examine | c.Create | c.Delete | c.Subscribe | c.Unsubscribe | c.Status],
) -> Callable[[Session, Any], Awaitable[Reply]]:
    name = c.WIRE_NAMES[cls]

    async def handle(s: Session, cmd: Any) -> Reply:
        return s._mailbox_referral(cmd.tag, name, cmd.mailbox)

    return handle


async def _append(s: Session, cmd: c.Append) -> Reply:
    # A non-synchronizing APPEND (at most 4096 octets) arrived whole; the
    # answer is the same referral, and the message is dropped unread.
    return s._mailbox_referral(cmd.tag, "APPEND", cmd.mailbox)


async def _rename(s: Session, cmd: c.Rename) -> Reply:
    # RFC 2193 §4.3: answer pairs of URLs, existing name then new name.
    assert s.user is not None
    refused = s._unroutable(cmd.tag, cmd.mailbox) or s._unroutable(cmd.tag, cmd.new_name)
    if refused is not None:
        return refused
    table = s.service.table
    try:
        rename = table.rename_referral(s.user, cmd.mailbox, cmd.new_name, s.home)
    except UnknownHome:
        rename = None
    if rename is None:
        text = "No mail server is configured for this mailbox."
        return Reply([Tagged(cmd.tag, Cond.NO, text, "UNAVAILABLE")])
    s._log_referral("mailbox", "RENAME", rename.old.servers[0].name, s.user)
    urls = rename.urls
    if rename.cross_server:
        text = "Unable to rename mailbox across servers."
    else:
        text = f"Unable to rename mailbox located on {hosts(rename.old)}; rename it there."
    return Reply([Tagged(cmd.tag, Cond.NO, text, referral_code(urls))])


async def _list(s: Session, cmd: c.List) -> Reply:
    delim = s.service.table.delimiter
    if "REMOTE" in cmd.selection:
        # RFC 5258 §3.1 REMOTE; the door knows no subscriptions of its own,
        # so the published set doubles as the subscribed set (as RLSUB).
        subscribed = "SUBSCRIBED" in cmd.selection or "SUBSCRIBED" in cmd.returns
        return s._list(
            cmd.tag,
            "LIST",
            cmd.reference,
            cmd.patterns,
            remote_flag=True,
            subscribed_flag=subscribed,
            children="CHILDREN" in cmd.returns,
        )
    out: list[Response] = []
    if cmd.patterns == ("",) and not cmd.selection:
        # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root.
        out.append(list_response("LIST", ["\\Noselect"], delim, cmd.reference.split(delim)[0]))
    # RFC 2193 §4: LIST never shows remote mailboxes, and all are remote.
    return Reply([*out, _ok(cmd, "LIST completed.")])


async def _lsub(s: Session, cmd: c.Lsub) -> Reply:
    return Reply([_ok(cmd, "LSUB completed (remote mailboxes: use RLSUB).")])


async def _rlist(s: Session, cmd: c.Rlist) -> Reply:
    # RFC 2193 §5.1: RLIST is LIST including remote mailboxes.
    return s._list(cmd.tag, "LIST", cmd.reference, (cmd.pattern,))


async def _rlsub(s: Session, cmd: c.Rlsub) -> Reply:
    # RFC 2193 §5.2: RLSUB is LSUB including remote mailboxes.
    return s._list(cmd.tag, "LSUB", cmd.reference, (cmd.pattern,))


async def _namespace(s: Session, cmd: c.Namespace) -> Reply:
    ns = s.service.table.namespaces()
    return Reply(
        [namespace_response(ns.personal, ns.other, ns.shared), _ok(cmd, "NAMESPACE completed.")]
    )


async def _unselected(s: Session, cmd: c.Unselected) -> Reply:
    text = f"{cmd.command}: no mailbox is selected; refd refers every mailbox to its server."
    return Reply([Tagged(cmd.tag, Cond.BAD, text)])


def _ok(cmd: c.Command, text: str) -> Tagged:
    return Tagged(cmd.tag, Cond.OK, text)


Handler = Callable[[Session, Any], Awaitable[Reply]]

#: command type -> handler; covers exactly ``protocol.commands.ALLOWED``.
HANDLERS: dict[type[c.Command], Handler] = {
    c.Capability: _capability,
    c.Noop: _noop,
    c.Logout: _logout,
    c.Id: _id,
    c.Starttls: _starttls,
    c.Login: _login,
    c.Authenticate: _authenticate,
    c.Select: _mailbox_handler(c.Select),
    c.Examine: _mailbox_handler(c.Examine),
    c.Create: _mailbox_handler(c.Create),
    c.Delete: _mailbox_handler(c.Delete),
    c.Subscribe: _mailbox_handler(c.Subscribe),
    c.Unsubscribe: _mailbox_handler(c.Unsubscribe),
    c.Status: _mailbox_handler(c.Status),
    c.Append: _append,
    c.Rename: _rename,
    c.List: _list,
    c.Lsub: _lsub,
    c.Rlist: _rlist,
    c.Rlsub: _rlsub,
    c.Namespace: _namespace,
    c.Unselected: _unselected,
}
