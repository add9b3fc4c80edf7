"""Hypothesis strategies for IMAP client input: mostly well-formed, often not.

Random bytes alone rarely get past the tag, so :func:`client_bytes` mixes
real commands (every command refd knows, and some it does not), with
arguments drawn from the token kinds of RFC 3501 §9 — atoms, quoted strings
with escapes, synchronizing and non-synchronizing literals whose announced
size may be wrong, modified UTF-7 names valid and broken, parenthesised
lists nested deep, base64 for AUTHENTICATE — and then corrupts some of
them: NULs, 8-bit octets, bare CR or LF, missing terminators, raw binary.

:func:`chunkings` splits one byte string into the TCP segments it might
arrive in.
"""

from __future__ import annotations

import base64

from hypothesis import strategies as st

from refd.protocol import mutf7
from refd.protocol.commands import PARSERS

COMMANDS = sorted(PARSERS)
USERS = ["alice", "bob", "carol", "nobody", "ALICE", "alice@example.org"]
PASSWORDS = ["secret", "wrong", "down", ""]

tags = st.one_of(
    st.sampled_from(["a1", "b", "A.1", "t]", "+", "*", "x" * 70, ""]),
    st.text(alphabet="abcxyz0123456789.!#$&'-_", min_size=1, max_size=8),
)
names = st.one_of(
    st.sampled_from(COMMANDS),
    st.sampled_from(COMMANDS).map(str.lower),
    st.sampled_from(["UID", "FETCH", "XYZZY", "PROXY", "ENABLE", "IDLE", "COMPRESS"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=12),
)
# Any number of LIST wildcards: pattern matching is bounded in time
# (refd.protocol.listing; tests/robustness/...::test_list_pattern_cannot_stall_the_door).
atoms = st.text(alphabet="abcINBOX%*&-/.]+0123456789", min_size=1, max_size=12)
quoted_body = st.binary(max_size=20).map(
    lambda b: b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
) | st.sampled_from([b'\\"', b"\\\\", b"\\x", b"\xc3\xa9", b"\x00", b"\r", b"\n"])
quoted = quoted_body.map(lambda b: b'"' + b + b'"')
unicode_names = st.text(max_size=12).map(mutf7.encode)
broken_mutf7 = st.sampled_from(
    [b"&", b"&Jjo", b"&AGE-", b"&AOk-&AOk-", b"&AOl-", b"&AOkA-", b"&2D0-", b"&AO/k-", b"&=-"]
)
#: Names at the edges of what routing and URLs take (issue 9: "" ended in an
#: internal error): empty as quoted string and as literal, the delimiter
#: alone, INBOX in other cases and as a parent, control characters through
#: modified UTF-7 (NUL, CR, LF), dot-segments, names the length of a line.
edge_mailboxes = st.one_of(
    st.sampled_from(
        [
            b'""',
            b'""',
            b"{0+}\r\n",
            b"{0}\r\n",
            b"/",
            b"//",
            b'"/"',
            b"Shared/",
            b"InBoX",
            b"inbox/Sub",
            b"INBOX/",
            b"&AAA-",
            b"&AA0-",
            b"&AAoADQ-",
            b"..",
            b"./..",
            b"%",
            b"*",
        ]
    ),
    st.sampled_from([200, 1000, 4000, 8150]).map(lambda n: b"L" * n),
)
mailboxes = st.one_of(
    st.sampled_from([b"INBOX", b"inbox", b"Shared/Sales", b"Shared/Caf&AOk- Menu", b"Public"]),
    unicode_names.map(lambda s: s.encode("ascii")),
    broken_mutf7,
    edge_mailboxes,
)


@st.composite
def literal(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=40) | st.sampled_from([b"alice", b"secret", b"INBOX"]))
    announced = draw(
        st.one_of(
            st.just(len(body)),
            st.integers(0, 50),
            st.sampled_from([4096, 4097, 65536, 65537, 2**31, 2**63, 10**30]),
        )
    )
    plus = draw(st.sampled_from([b"", b"+"]))
    return b"{" + str(announced).encode() + plus + b"}\r\n" + body


def _paren(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(inner, max_size=4).map(lambda xs: b"(" + b" ".join(xs) + b")")


plain_b64 = st.tuples(
    st.sampled_from(["", "alice"]), st.sampled_from(USERS), st.sampled_from(PASSWORDS)
).map(lambda t: base64.b64encode(f"{t[0]}\x00{t[1]}\x00{t[2]}".encode()))
arguments = st.recursive(
    st.one_of(
        atoms.map(str.encode),
        quoted,
        literal(),
        mailboxes,
        plain_b64,
        st.sampled_from(
            [b"NIL", b"=", b"PLAIN", b"(MESSAGES)", b"(REMOTE)", b"RETURN", b"(CHILDREN)", b'""']
        ),
        st.binary(min_size=1, max_size=8),
    ),
    _paren,
    max_leaves=8,
)


@st.composite
def mailbox_command(draw: st.DrawFn) -> bytes:
    """A well-formed command whose arguments are mailbox names (edge ones often)."""
    name = draw(st.sampled_from(MAILBOX_COMMANDS))
    names = edge_mailboxes | mailboxes
    if name == "RENAME":
        args = draw(names) + b" " + draw(names)
    elif name == "STATUS":
        args = draw(names) + b" (MESSAGES)"
    elif name == "APPEND":
        args = draw(names) + b" " + draw(literal())
    elif name in ("LIST", "LSUB", "RLIST", "RLSUB"):
        args = draw(names) + b" " + draw(names | atoms.map(str.encode))
    else:
        args = draw(names)
    return draw(tags).encode() + b" " + name.encode() + b" " + args + b"\r\n"


MAILBOX_COMMANDS = [
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "STATUS",
    "APPEND",
    "LIST",
    "LSUB",
    "RLIST",
    "RLSUB",
]


@st.composite
def command_line(draw: st.DrawFn) -> bytes:
    """One command, more or less well formed, with its line end (or not)."""
    name = draw(names)
    if name.upper() == "LOGIN" and draw(st.booleans()):
        args = [draw(st.sampled_from(USERS)).encode(), draw(st.sampled_from(PASSWORDS)).encode()]
        args = [a if a else b'""' for a in args]
    elif name.upper() == "AUTHENTICATE" and draw(st.booleans()):
        args = [b"PLAIN", *draw(st.lists(plain_b64 | st.just(b"="), max_size=1))]
    else:
        args = draw(st.lists(arguments, max_size=4))
    sep = draw(st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"]))
    line = draw(tags).encode() + sep + name.encode()
    for a in args:
        line += sep + a
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""]))
    return line + end


client_items = st.one_of(
    command_line(),
    command_line(),
    command_line(),
    mailbox_command(),
    mailbox_command(),
    st.binary(max_size=64),
    st.sampled_from([b"\r\n", b"*\r\n", b"\x00", b"{5}\r\n", b"+ \r\n", b"\xff\xfe"]),
    st.builds(lambda n, b: b * n, st.integers(0, 9000), st.sampled_from([b"x", b"(", b"\n"])),
)
client_bytes = st.lists(client_items, max_size=12).map(b"".join)

#: What a session starts with: often a login that works (bob: accept, carol:
#: stay; FakeAuth takes "secret" for any name, "" included), so the commands
#: after it reach the authenticated state's handlers.
logins = st.sampled_from(
    [
        b"",
        b"l1 LOGIN bob secret\r\n",
        b"l1 LOGIN carol secret\r\n",
        b'l1 LOGIN "" secret\r\n',
        b"l1 LOGIN {0+}\r\n secret\r\n",
        b"l1 AUTHENTICATE PLAIN " + base64.b64encode(b"\x00carol\x00secret") + b"\r\n",
    ]
)
session_bytes = st.tuples(logins, client_bytes).map(b"".join)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` split at random points (every split is a possible TCP segmentation)."""
    if not data:
        return [data]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    out, prev = [], 0
    for cut in cuts:
        out.append(data[prev:cut])
        prev = cut
    out.append(data[prev:])
    return [c for c in out if c]
