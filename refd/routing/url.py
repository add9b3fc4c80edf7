"""IMAP URLs (RFC 5092) for referrals: build them, and parse them back.

refd only needs two URL forms (RFC 5092 §4 and §5)::

    imap://<enc-user>;AUTH=*@<host>[:<port>]/                 login referral
    imap://<enc-user>;AUTH=*@<host>[:<port>]/<enc-mailbox>    mailbox referral

``;AUTH=*`` is always present so a client never falls back to anonymous
login (RFC 2193 §4, RFC 5092 §3.2); the ``*`` is never percent-encoded
(§3.2: ";AUTH=%2A" will not match this production). The port is left out
when it is 143, the default (§1). IPv6 hosts go in brackets (RFC 3986 §3.2.2).

The grammar, RFC 5092 §11 (normative)::

    sub-delims-sh = "!" / "$" / "'" / "(" / ")" / "*" / "+" / ","
    uchar         = unreserved / sub-delims-sh / pct-encoded
    achar         = uchar / "&" / "="
    bchar         = achar / ":" / "@" / "/"
    enc-user      = 1*achar
    enc-mailbox   = 1*bchar

- **enc-user** is followed exactly: every character outside ``achar`` is
  percent-encoded as UTF-8 (§8), so ``alice@example.org`` becomes
  ``alice%40example.org`` and ``;``, ``:``, ``/``, ``%``, ``?``, ``#``,
  ``[``, ``]``, space and non-ASCII are always escaped.
- **enc-mailbox** is encoded more strictly than ``bchar`` requires (which is
  always allowed, since pct-encoded is part of ``bchar``): only RFC 3986
  ``unreserved`` characters and the hierarchy ``/`` stay raw. So ``@``,
  ``:``, ``&``, ``=`` and the sub-delims are escaped too -- a raw ``@`` or
  ``;`` after the host trips naive referral parsers, and ``]`` must never
  appear raw because the URL sits inside ``[REFERRAL ...]``.
- **Hierarchy delimiter.** §5: "The <enc-mailbox> field is used as the
  argument to the IMAP4 SELECT or EXAMINE command", so the URL carries the
  mailbox name itself, with the server's own delimiter -- refd does not
  rewrite ``.`` into ``/``. §7 adds that relative URL resolution uses ``/``
  and only works when the mailbox delimiter is ``/``. Hence: with the
  delimiter ``/``, a ``/`` in the name stays raw (a path separator, as in
  ``imap://u;AUTH=*@h/Shared/Sales``); with any other delimiter, a ``/`` is
  an ordinary character and is sent as ``%2F``.
- §7: names with dot-segments (``.`` or ``..`` between slashes) must be
  percent-encoded, and §7.1: a leading ``/`` must be too; both are.
- Hex digits in escapes are upper-case (RFC 3986 §2.1).

`parse_imap_url` is the inverse for these two forms (it refuses
``;UIDVALIDITY``, ``;UID``, searches and fragments, which refd never sends).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = [
    "DEFAULT_PORT",
    "ImapUrl",
    "door_url",
    "imap_url",
    "parse_imap_url",
    "split_host_port",
    "url_can_name",
    "url_host",
]

DEFAULT_PORT = 143  # RFC 5092 §1, RFC 3501 §2.1

# Characters of RFC 5092 `achar` other than ALPHA / DIGIT / "-" "." "_" "~"
# (which `quote` never escapes): sub-delims-sh plus "&" and "=".
_ACHAR_EXTRA = "!$'()*+,&="

# A user name of `achar` characters and "@" only (no "%"): its enc-user is
# the name with each "@" as "%40", which `_enc_user` makes without `quote`
# (interpreted: ~4,900 instructions a call, a login referral's URL ~6,400).
_PLAIN_USER = re.compile(r"[A-Za-z0-9\-._~!$'()*+,&=@]+")

_PCT = r"%[0-9A-Fa-f]{2}"
_ACHAR = rf"(?:[A-Za-z0-9\-._~!$'()*+,&=]|{_PCT})"
_BCHAR = rf"(?:[A-Za-z0-9\-._~!$'()*+,&=:@/]|{_PCT})"
_ENC_USER = re.compile(rf"{_ACHAR}+")
_ENC_MAILBOX = re.compile(rf"{_BCHAR}+")
_AUTH = re.compile(rf";AUTH=(\*|{_ACHAR}+)", re.IGNORECASE)
_SERVER = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9\-._~!$&'()*+,=]+))(?::(?P<port>[0-9]*))?"
)


@dataclass(frozen=True, slots=True)
class ImapUrl:
    """A parsed server or mailbox URL; texts are percent-decoded.

    ``host`` has no brackets (``::1``), ready for a socket connect; ``port``
    is 143 when the URL has none; ``mailbox`` is None for a server URL.
    """

    user: str | None
    auth: str | None
    host: str
    port: int
    mailbox: str | None


def url_host(host: str) -> str:
    """``host`` as it appears in a URL authority: IPv6 literals in brackets."""
    bare = host.removeprefix("[").removesuffix("]")
    return f"[{bare}]" if ":" in bare else host


def url_can_name(text: str) -> bool:
    """Whether a URL can carry ``text`` as its user or mailbox name.

    RFC 5092 §11: ``enc-user = 1*achar`` and ``enc-mailbox = 1*bchar``, and
    every other character is percent-encoded, so only the empty name has no
    URL.  Callers ask this before routing; `imap_url` refuses the rest.
    """
    return bool(text)


def split_host_port(text: str) -> tuple[str, str | None]:
    """``host[:port]`` or ``[IPv6][:port]`` -> (host without brackets, port text or None).

    The one reader of this notation in refd: the daemon config's
    ``sibling`` and ``auth.imap.server``, the routing table's ``self`` and
    ``refd probe --door``. An IPv6 address must be in brackets (RFC 3986
    §3.2.2), because ``2001:db8::1:143`` could be an address or an address
    and a port. Each caller checks the port as a number (a config file
    refuses ``0143``, for one) and the host as it needs. Raises ValueError
    with a text that follows the value in a message: "write [IPv6]:PORT",
    "empty port", ...
    """
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("write [IPv6]:PORT")
        if host and ":" not in host:
            raise ValueError("brackets are only for IPv6 addresses")
        if rest == ":":
            raise ValueError("empty port")
        return host, rest[1:] or None
    if text.count(":") > 1:
        raise ValueError("write an IPv6 address in brackets, [::1]:143")
    host, colon, port = text.partition(":")
    if colon and not port:
        raise ValueError("empty port")
    return host, port if colon else None


def _enc_user(user: str) -> str:
    """RFC 5092 ``enc-user``: every character outside ``achar`` percent-encoded."""
    if _PLAIN_USER.fullmatch(user):
        return user.replace("@", "%40")
    return quote(user, safe=_ACHAR_EXTRA)


def _enc_mailbox(name: str, delimiter: str) -> str:
    if delimiter != "/":
        return quote(name, safe="")
    segments = []
    for segment in name.split("/"):
        if segment in (".", ".."):  # RFC 5092 §7: dot-segments
            segments.append(segment.replace(".", "%2E"))
        else:
            segments.append(quote(segment, safe=""))
    encoded = "/".join(segments)
    if encoded.startswith("/"):  # RFC 5092 §7.1: a leading "/"
        encoded = "%2F" + encoded[1:]
    return encoded


def door_url(host: str, port: int, user: str | None = None) -> str:
    """A server URL for another door, for ``* BYE [REFERRAL ...]``.

    Without a user (a greeting, before login) the URL is ``imap://;AUTH=*@host/``:
    RFC 5092's ``iuserinfo = enc-user [iauth] / [enc-user] iauth`` allows an
    ``;AUTH=*`` with no user, which keeps clients off anonymous login.
    """
    if user:
        return imap_url(user, host, port)
    server = url_host(host) if port == DEFAULT_PORT else f"{url_host(host)}:{port}"
    return f"imap://;AUTH=*@{server}/"


def imap_url(
    user: str, host: str, port: int, mailbox: str | None = None, *, delimiter: str = "/"
) -> str:
    """The RFC 5092 URL for ``user`` on ``host:port``, and ``mailbox`` if given.

    ``mailbox`` None gives a server URL ending in ``/`` (login referral,
    RFC 2221). ``delimiter`` is the mailbox hierarchy delimiter; see the
    module docstring for how it affects ``/``. Raises ValueError for an
    empty user or mailbox (``enc-user`` and ``enc-mailbox`` are ``1*``).
    """
    if not url_can_name(user):
        raise ValueError("an IMAP URL needs a user name")
    server = url_host(host) if port == DEFAULT_PORT else f"{url_host(host)}:{port}"
    base = f"imap://{_enc_user(user)};AUTH=*@{server}/"
    if mailbox is None:
        return base
    if not url_can_name(mailbox):
        raise ValueError("an IMAP URL cannot name an empty mailbox")
    return base + _enc_mailbox(mailbox, delimiter)


def _decode(text: str, url: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"not valid UTF-8 after percent-decoding: {url!r}") from None


def parse_imap_url(url: str) -> ImapUrl:
    """Parse an ``imap://`` server or mailbox URL; ValueError if it is not one."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "imap":
        raise ValueError(f"not an imap:// URL: {url!r}")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    user: str | None = None
    auth: str | None = None
    if at:
        enc_user, semi, auth_part = userinfo.partition(";")
        if semi:
            match = _AUTH.fullmatch(semi + auth_part)
            if match is None:
                raise ValueError(f"bad ;AUTH= in IMAP URL: {url!r}")
            auth = _decode(match.group(1), url)
            if auth == "*" and match.group(1) != "*":
                # RFC 5092 §3.2: ";AUTH=%2A" does not mean "any mechanism".
                raise ValueError(f"bad ;AUTH= in IMAP URL (%2A is not *): {url!r}")
        if enc_user:
            if not _ENC_USER.fullmatch(enc_user):
                raise ValueError(f"bad user name in IMAP URL: {url!r}")
            user = _decode(enc_user, url)
        elif auth is None:
            raise ValueError(f"empty user information in IMAP URL: {url!r}")
    server = _SERVER.fullmatch(hostport)
    if server is None:
        raise ValueError(f"bad host or port in IMAP URL: {url!r}")
    host = server.group("v6") or server.group("name")
    port_text = server.group("port")
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in IMAP URL: {url!r}")
    mailbox: str | None = None
    if slash and path:
        if not _ENC_MAILBOX.fullmatch(path) or path.startswith("/"):
            raise ValueError(
                f"unsupported IMAP URL (only server and mailbox URLs are understood): {url!r}"
            )
        mailbox = _decode(path, url)
    return ImapUrl(user=user, auth=auth, host=host, port=port, mailbox=mailbox)
