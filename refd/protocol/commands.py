"""One frozen dataclass per IMAP command refd answers, and their parsers.

``PARSERS`` maps a command's wire name to the function that reads its
arguments; ``ALLOWED`` says in which states a command is legal.  Both are
plain dictionaries so a reader can grep them, and a test checks that they
cover the same commands as the session's handler table.

:func:`parse_command` takes one complete command (tag to final CRLF, literals
inline) and returns a :class:`Command` or raises :class:`CommandError`, which
carries the tag (when there was one) and the text of the ``BAD`` to send.
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from refd.protocol.grammar import ASTRING_RUN, ATOM_RUN, TAG_RUN, ParseError, Reader

__all__ = [
    "ALLOWED",
    "CARRIES_CREDENTIALS",
    "PARSERS",
    "SELECTED_STATE_COMMANDS",
    "WIRE_NAMES",
    "Append",
    "Authenticate",
    "Capability",
    "Command",
    "CommandError",
    "Create",
    "Delete",
    "Examine",
    "Id",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "Namespace",
    "Noop",
    "Rename",
    "Rlist",
    "Rlsub",
    "Select",
    "Starttls",
    "State",
    "Status",
    "Subscribe",
    "Unselected",
    "Unsubscribe",
    "parse_append_mailbox",
    "parse_arguments",
    "parse_command",
    "parse_simple",
    "parse_tag_and_name",
]


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    LOGOUT = "logout"

    # Hashed by identity, as members compare: Enum's own hash is a Python
    # call (of the name's hash) at every look-up in ``ALLOWED``'s sets.
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class Command:
    tag: str

    def __init__(
        self,
        tag: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)

    @property
    def name(self) -> str:
        """The command's wire name (`WIRE_NAMES`)."""
        return WIRE_NAMES[type(self)]


# A command that adds no field to its base takes the base's written-out
# ``__init__`` (``init=False``: no generated one, which mypyc would leave
# interpreted; refd.compiled: Dataclasses).
@dataclass(frozen=True, slots=True, init=False)
class Capability(Command):
    """``CAPABILITY``: the server's capabilities."""


@dataclass(frozen=True, slots=True, init=False)
class Noop(Command):
    """``NOOP``: nothing but the answer."""


@dataclass(frozen=True, slots=True, init=False)
class Logout(Command):
    """``LOGOUT``: ``* BYE``, the tagged OK, then the connection closes."""


@dataclass(frozen=True, slots=True, init=False)
class Starttls(Command):
    """``STARTTLS``: TLS on this plaintext connection."""


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: ``ID ("name" "value" ...)`` or ``ID NIL``."""

    params: tuple[tuple[str, str | None], ...] | None

    def __init__(
        self,
        tag: str,
        params: tuple[tuple[str, str | None], ...] | None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "params", params)


@dataclass(frozen=True, slots=True)
class Login(Command):
    user: str
    password: str

    def __init__(
        self,
        tag: str,
        user: str,
        password: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "password", password)

    def __repr__(self) -> str:  # never let a password reach a log line
        return f"Login(tag={self.tag!r}, user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``AUTHENTICATE mechanism [initial-response]`` (RFC 4959 SASL-IR).

    ``initial`` is the decoded initial response: ``None`` when absent,
    ``b""`` for the ``=`` that stands for an empty one.
    """

    mechanism: str
    initial: bytes | None

    def __init__(
        self,
        tag: str,
        mechanism: str,
        initial: bytes | None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "mechanism", mechanism)
        object.__setattr__(self, "initial", initial)

    def __repr__(self) -> str:
        shown = None if self.initial is None else "<hidden>"
        return f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r}, initial={shown})"


@dataclass(frozen=True, slots=True)
class _OneMailbox(Command):
    """A command whose one argument is a mailbox name (the subclasses add none)."""

    mailbox: str

    def __init__(
        self,
        tag: str,
        mailbox: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "mailbox", mailbox)


@dataclass(frozen=True, slots=True, init=False)
class Select(_OneMailbox):
    """``SELECT mailbox``."""


@dataclass(frozen=True, slots=True, init=False)
class Examine(_OneMailbox):
    """``EXAMINE mailbox``."""


@dataclass(frozen=True, slots=True, init=False)
class Create(_OneMailbox):
    """``CREATE mailbox``."""


@dataclass(frozen=True, slots=True, init=False)
class Delete(_OneMailbox):
    """``DELETE mailbox``."""


@dataclass(frozen=True, slots=True)
class Rename(Command):
    mailbox: str
    new_name: str

    def __init__(
        self,
        tag: str,
        mailbox: str,
        new_name: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "mailbox", mailbox)
        object.__setattr__(self, "new_name", new_name)


@dataclass(frozen=True, slots=True, init=False)
class Subscribe(_OneMailbox):
    """``SUBSCRIBE mailbox``."""


@dataclass(frozen=True, slots=True, init=False)
class Unsubscribe(_OneMailbox):
    """``UNSUBSCRIBE mailbox``."""


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]

    def __init__(
        self,
        tag: str,
        mailbox: str,
        items: tuple[str, ...],
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "mailbox", mailbox)
        object.__setattr__(self, "items", items)


@dataclass(frozen=True, slots=True)
class Append(Command):
    """APPEND that arrived whole (a non-synchronizing literal, RFC 7888).

    A synchronizing literal never gets this far: the connection asks first,
    and the session answers with the referral instead of ``+``.
    """

    mailbox: str
    message_size: int

    def __init__(
        self,
        tag: str,
        mailbox: str,
        message_size: int,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "mailbox", mailbox)
        object.__setattr__(self, "message_size", message_size)


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST, with RFC 5258 selection and return options."""

    reference: str
    #: read up to one past the connection's ``max_list_patterns``: a LIST
    #: with more is refused whatever follows its patterns
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()

    def __init__(
        self,
        tag: str,
        reference: str,
        patterns: tuple[str, ...],
        selection: frozenset[str] = frozenset(),
        returns: frozenset[str] = frozenset(),
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "patterns", patterns)
        object.__setattr__(self, "selection", selection)
        object.__setattr__(self, "returns", returns)


@dataclass(frozen=True, slots=True)
class _ReferencePattern(Command):
    """A command whose arguments are a reference and one pattern (the subclasses add none)."""

    reference: str
    pattern: str

    def __init__(
        self,
        tag: str,
        reference: str,
        pattern: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "pattern", pattern)


@dataclass(frozen=True, slots=True, init=False)
class Lsub(_ReferencePattern):
    """``LSUB reference pattern``."""


@dataclass(frozen=True, slots=True, init=False)
class Rlist(_ReferencePattern):
    """``RLIST reference pattern`` (RFC 2193)."""


@dataclass(frozen=True, slots=True, init=False)
class Rlsub(_ReferencePattern):
    """``RLSUB reference pattern`` (RFC 2193)."""


@dataclass(frozen=True, slots=True, init=False)
class Namespace(Command):
    """``NAMESPACE`` (RFC 2342)."""


@dataclass(frozen=True, slots=True)
class Unselected(Command):
    """A selected-state command (FETCH, COPY, ...): refd never selects."""

    command: str

    def __init__(
        self,
        tag: str,
        command: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "command", command)


#: Each command's wire name.  A table, not a class attribute of each
#: dataclass: mypyc hands ``dataclass`` a ``ClassVar`` as a plain field, and a
#: field with a default before fields without one does not compile
#: (bench/NOTES.md, The compiled build).
WIRE_NAMES: dict[type[Command], str] = {
    Capability: "CAPABILITY",
    Noop: "NOOP",
    Logout: "LOGOUT",
    Starttls: "STARTTLS",
    Id: "ID",
    Login: "LOGIN",
    Authenticate: "AUTHENTICATE",
    Select: "SELECT",
    Examine: "EXAMINE",
    Create: "CREATE",
    Delete: "DELETE",
    Rename: "RENAME",
    Subscribe: "SUBSCRIBE",
    Unsubscribe: "UNSUBSCRIBE",
    Status: "STATUS",
    Append: "APPEND",
    List: "LIST",
    Lsub: "LSUB",
    Rlist: "RLIST",
    Rlsub: "RLSUB",
    Namespace: "NAMESPACE",
    Unselected: "SELECTED-STATE",
}


class CommandError(Exception):
    """A command the client got wrong; carries the answer's parts.

    ``tag`` is None when even the tag could not be read (answer ``* BAD``).
    ``fatal`` asks the server to close the connection after answering,
    because the rest of the stream can no longer be trusted.
    """

    def __init__(
        self,
        tag: str | None,
        text: str,
        *,
        code: str | None = None,
        fatal: bool = False,
        command: str | None = None,
    ) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text
        self.code = code
        self.fatal = fatal
        #: the command's name when it could be read (for metrics labels)
        self.command = command


# --- argument parsers ----------------------------------------------------------

Parser = Callable[[str, Reader], Command]


def _no_args(cls: type[Capability | Noop | Logout | Starttls | Namespace]) -> Parser:
    def parse(tag: str, r: Reader) -> Command:
        r.end()
        return cls(tag)

    return parse


def _one_mailbox(
    cls: type[Select | Examine | Create | Delete | Subscribe | Unsubscribe],
) -> Parser:
    def parse(tag: str, r: Reader) -> Command:
        r.sp("mailbox name")
        mailbox = r.mailbox()
        r.end()
        return cls(tag, mailbox)

    return parse


def _parse_login(tag: str, r: Reader) -> Command:
    # login = "LOGIN" SP userid SP password
    r.sp("user name")
    user = r.utf8("user name")
    r.sp("password")
    password = r.utf8("password")
    r.end()
    return Login(tag, user, password)


def decode_base64(raw: bytes, what: str) -> bytes:
    """Strict base64 (RFC 4648 §4) for SASL; ``=`` alone is the empty response."""
    if raw == b"=":
        return b""
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError(f"Invalid base64 in {what}.") from exc


def _parse_authenticate(tag: str, r: Reader) -> Command:
    # authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]
    r.sp("authentication mechanism")
    mechanism = r.atom("authentication mechanism").upper()
    initial = None
    if r.maybe_sp():
        initial = decode_base64(r.atom("initial response").encode("ascii"), "initial response")
    r.end()
    return Authenticate(tag, mechanism, initial)


_ID_MAX_PAIRS = 30  # RFC 2971 §3.3: at most 30 field-value pairs
_ID_MAX_FIELD = 30  # field strings no longer than 30 octets
_ID_MAX_VALUE = 1024  # value strings no longer than 1024 octets


def _parse_id(tag: str, r: Reader) -> Command:
    # id = "ID" SP id-params-list
    # id-params-list = "(" *(string SP nstring) ")" / nil
    r.sp("ID parameter list")
    if r.data[r.pos : r.pos + 3].upper() == b"NIL":
        r.pos += 3
        r.end()
        return Id(tag, None)
    r.expect(b"(", "'(' or NIL for the ID parameters")
    params: list[tuple[str, str | None]] = []
    if r.peek() == 0x29:
        # RFC 2971's grammar allows "()"; treat it as NIL.
        r.pos += 1
        r.end()
        return Id(tag, ())
    while True:
        field = r.string("ID field")
        if len(field) > _ID_MAX_FIELD:
            raise ParseError("ID field longer than 30 octets (RFC 2971 section 3.3).")
        r.sp("ID value")
        value = r.nstring_or_nil("ID value")
        if value is not None and len(value) > _ID_MAX_VALUE:
            raise ParseError("ID value longer than 1024 octets (RFC 2971 section 3.3).")
        params.append(
            (
                field.decode("utf-8", "replace"),
                None if value is None else value.decode("utf-8", "replace"),
            )
        )
        if len(params) > _ID_MAX_PAIRS:
            raise ParseError("More than 30 ID field-value pairs (RFC 2971 section 3.3).")
        if r.peek() == 0x29:
            r.pos += 1
            break
        r.sp("ID field")
    r.end()
    return Id(tag, tuple(params))


def _parse_rename(tag: str, r: Reader) -> Command:
    r.sp("existing mailbox name")
    old = r.mailbox("existing mailbox name")
    r.sp("new mailbox name")
    new = r.mailbox("new mailbox name")
    r.end()
    return Rename(tag, old, new)


# status-att = "MESSAGES" / "RECENT" / "UIDNEXT" / "UIDVALIDITY" / "UNSEEN"
# (RFC 3501) plus the items later RFCs added, which a client may ask for.
_STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "HIGHESTMODSEQ"}
)


def _parse_status(tag: str, r: Reader) -> Command:
    # status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("status items")
    items = tuple(i.upper() for i in r.paren_atoms("status item list"))
    if not items:
        raise ParseError("STATUS needs at least one status item.")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ParseError(f"Unknown STATUS item {item}.")
    r.end()
    return Status(tag, mailbox, items)


_DATE_TIME = re.compile(
    rb'"[ 0-9][0-9]-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-[0-9]{4} '
    rb'[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"'
)


def _append_head(r: Reader) -> str:
    """Read ``SP mailbox [SP flag-list] [SP date-time] SP`` up to the literal."""
    # append = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("message literal")
    if r.peek() == 0x28:
        r.paren_atoms("flag list", allow_backslash=True)
        r.sp("message literal")
    if r.peek() == 0x22:
        m = _DATE_TIME.match(r.data, r.pos)
        if m is None:
            raise ParseError("Invalid date-time in APPEND.")
        r.pos = m.end()
        r.sp("message literal")
    if r.peek() != 0x7B:
        raise ParseError("APPEND needs the message as a literal.")
    return mailbox


def _parse_append(tag: str, r: Reader) -> Command:
    mailbox = _append_head(r)
    message = r.literal("message")
    r.end()
    return Append(tag, mailbox, len(message))


# RFC 5258 §3: the selection and return options refd understands.
_LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN"})


def _parse_list(tag: str, r: Reader, max_patterns: int | None = None) -> Command:
    # list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    #        [SP list-return-opts]                       (RFC 5258 §6)
    r.sp("reference name")
    selection: frozenset[str] = frozenset()
    if r.peek() == 0x28:
        selection = frozenset(o.upper() for o in r.paren_atoms("LIST selection options"))
        unknown = selection - _LIST_SELECTION
        if unknown:
            raise ParseError(f"Unknown LIST selection option {sorted(unknown)[0]}.")
        if selection == {"RECURSIVEMATCH"}:
            # RFC 5258 §3.1: RECURSIVEMATCH alone is an error.
            raise ParseError("RECURSIVEMATCH needs another selection option.")
        r.sp("reference name")
    reference = r.mailbox("reference name")
    r.sp("mailbox pattern")
    if r.peek() == 0x28:
        r.pos += 1
        pats = [r.list_mailbox()]
        while r.peek() == 0x20:
            if max_patterns is not None and len(pats) > max_patterns:
                # Over the limit: the rest is not worth reading (each
                # pattern costs microseconds, and there may be 128,000).
                return List(tag, reference, tuple(pats), selection)
            r.sp("mailbox pattern")
            pats.append(r.list_mailbox())
        r.expect(b")", "')' to close the pattern list")
        patterns = tuple(pats)
    else:
        patterns = (r.list_mailbox(),)
    returns: frozenset[str] = frozenset()
    if r.maybe_sp():
        word = r.atom("RETURN")
        if word.upper() != "RETURN":
            raise ParseError("Expected RETURN after the LIST patterns.")
        r.sp("LIST return options")
        returns = frozenset(o.upper() for o in r.paren_atoms("LIST return options"))
        unknown = returns - _LIST_RETURN
        if unknown:
            raise ParseError(f"Unknown LIST return option {sorted(unknown)[0]}.")
    r.end()
    return List(tag, reference, patterns, selection, returns)


def _two_arg_list(cls: type[Lsub | Rlist | Rlsub]) -> Parser:
    def parse(tag: str, r: Reader) -> Command:
        r.sp("reference name")
        reference = r.mailbox("reference name")
        r.sp("mailbox pattern")
        pattern = r.list_mailbox()
        r.end()
        return cls(tag, reference, pattern)

    return parse


def _unselected(name: str) -> Parser:
    def parse(tag: str, r: Reader) -> Command:
        # Arguments do not matter: there is no mailbox to apply them to.
        return Unselected(tag, name)

    return parse


#: Commands of the selected state (RFC 3501 §6.4, RFC 9051 §6.4, RFC 6851).
SELECTED_STATE_COMMANDS = (
    "CHECK",
    "CLOSE",
    "EXPUNGE",
    "SEARCH",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "UID",
    "UNSELECT",
)

_NO_ARGS: dict[bytes, type[Capability | Noop | Logout | Starttls | Namespace]] = {
    WIRE_NAMES[cls].encode("ascii"): cls for cls in (Capability, Noop, Logout, Starttls, Namespace)
}

PARSERS: dict[str, Parser] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(Starttls),
    "ID": _parse_id,
    "LOGIN": _parse_login,
    "AUTHENTICATE": _parse_authenticate,
    "SELECT": _one_mailbox(Select),
    "EXAMINE": _one_mailbox(Examine),
    "CREATE": _one_mailbox(Create),
    "DELETE": _one_mailbox(Delete),
    "RENAME": _parse_rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "STATUS": _parse_status,
    "APPEND": _parse_append,
    "LIST": _parse_list,
    "LSUB": _two_arg_list(Lsub),
    "RLIST": _two_arg_list(Rlist),
    "RLSUB": _two_arg_list(Rlsub),
    "NAMESPACE": _no_args(Namespace),
    **{name: _unselected(name) for name in SELECTED_STATE_COMMANDS},
}

_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED})

#: Which command is legal in which state (DESIGN.md's table).  Checked once,
#: by the connection, before a command reaches the session.
ALLOWED: dict[type[Command], frozenset[State]] = {
    Capability: _ANY,
    Noop: _ANY,
    Logout: _ANY,
    Id: _ANY,
    Starttls: _NOT_AUTH,
    Login: _NOT_AUTH,
    Authenticate: _NOT_AUTH,
    Select: _AUTH,
    Examine: _AUTH,
    Create: _AUTH,
    Delete: _AUTH,
    Rename: _AUTH,
    Subscribe: _AUTH,
    Unsubscribe: _AUTH,
    Status: _AUTH,
    Append: _AUTH,
    List: _AUTH,
    Lsub: _AUTH,
    Rlist: _AUTH,
    Rlsub: _AUTH,
    Namespace: _AUTH,
    Unselected: _AUTH,
}


#: Commands that carry a password (LOGIN's argument, AUTHENTICATE's SASL
#: exchange).  Before TLS and outside trusted networks the session refuses
#: them whole, and refuses their literals before the "+" (RFC 3501 §6.2.3:
#: LOGINDISABLED; §7.5: a tagged answer instead of "+" and no literal is sent),
#: so no password crosses the wire in clear.
CARRIES_CREDENTIALS: frozenset[type[Command]] = frozenset({Login, Authenticate})


def parse_tag_and_name(data: bytes) -> tuple[str, str]:
    """Read ``tag SP command-name``; raise CommandError (tag or not) if bad."""
    r = Reader(data)
    try:
        tag = r.tag()
    except ParseError as exc:
        if r.peek() in (0x0D, -1, 0x0A):
            raise CommandError(None, "Empty command line.") from exc
        text = exc.text.replace("Invalid character", "invalid character", 1)
        raise CommandError(None, f"Invalid tag: {text}") from exc
    if r.peek() not in (0x20, 0x0D, 0x0A, -1):
        bad = chr(r.peek()) if r.peek() < 0x80 else "8-bit"
        raise CommandError(None, f"Invalid tag: invalid character {bad!r} in tag.")
    try:
        r.sp("command name")
        name = r.atom("command name").upper()
    except ParseError as exc:
        raise CommandError(tag, exc.text) from exc
    return tag, name


# The two shapes nearly every command of a login session has, each token
# plain ASCII: ``tag SP name CRLF`` and ``tag SP name SP astring SP astring
# CRLF``.  One match reads them whole; every other line (quoted strings,
# literals, other arguments, anything malformed) goes through the Reader.
_SIMPLE_LINE = re.compile(
    b"(" + TAG_RUN.pattern + b") (" + ATOM_RUN.pattern + b")"
    b"(?: (" + ASTRING_RUN.pattern + b") (" + ASTRING_RUN.pattern + b"))?\r\n\\Z"
)


def parse_simple(data: bytes) -> Command | None:
    """The command in ``data`` if it is a simple one; None: use :func:`parse_command`.

    Simple: a command without arguments (CAPABILITY, NOOP, LOGOUT, STARTTLS,
    NAMESPACE), or LOGIN with two atoms, as one regular expression can read
    them.  It gives what the Reader gives for the same line
    (tests/protocol/test_commands.py), at about a third of its cost: a LOGIN
    and a LOGOUT take ~7 us to read this way, ~20 us through the Reader.
    """
    m = _SIMPLE_LINE.match(data)
    if m is None:
        return None
    tag, name, first, second = m.groups()
    if first is None:
        cls = _NO_ARGS.get(name.upper())
        return None if cls is None else cls(tag.decode("ascii"))
    if name.upper() != b"LOGIN":
        return None
    return Login(tag.decode("ascii"), first.decode("ascii"), second.decode("ascii"))


def parse_command(data: bytes) -> Command:
    """Parse one complete command; raise :class:`CommandError` if it is bad."""
    tag, name = parse_tag_and_name(data)
    return parse_arguments(data, tag, name)


def parse_arguments(
    data: bytes, tag: str, name: str, max_list_patterns: int | None = None
) -> Command:
    """The rest of :func:`parse_command`, once ``tag`` and ``name`` are read.

    With ``max_list_patterns``, a LIST stops being read one pattern past it
    (see :class:`List`).
    """
    r = Reader(data)
    parser = PARSERS.get(name)
    if parser is None:
        raise CommandError(tag, f"Unknown command {name[:32]}.")
    r.pos = len(tag) + 1 + len(name)
    try:
        if parser is _parse_list and max_list_patterns is not None:
            return _parse_list(tag, r, max_list_patterns)
        return parser(tag, r)
    except ParseError as exc:
        raise CommandError(tag, exc.text, command=name) from exc


def parse_append_mailbox(prefix: bytes) -> str:
    """The mailbox of an APPEND whose literal has not been sent yet.

    ``prefix`` is the command up to and including the ``{n}`` CRLF; used to
    answer with the mailbox referral instead of the ``+`` continuation.
    """
    tag, _ = parse_tag_and_name(prefix)
    r = Reader(prefix, len(tag) + 1 + len("APPEND"))
    try:
        return _append_head(r)
    except ParseError as exc:
        raise CommandError(tag, exc.text) from exc
