"""refd.routing.url: RFC 5092 IMAP URLs, built and parsed."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refd.routing.url import ImapUrl, _enc_user, imap_url, parse_imap_url, url_can_name


@pytest.mark.parametrize(
    ("user", "host", "port", "mailbox", "url"),
    [
        # Login referral (RFC 2221): server URL, trailing "/"; port 143 left out.
        (
            "alice@example.org",
            "mail1.example.org",
            143,
            None,
            "imap://alice%40example.org;AUTH=*@mail1.example.org/",
        ),
        ("alice", "mail1.example.org", 993, None, "imap://alice;AUTH=*@mail1.example.org:993/"),
        ("alice", "::1", 143, None, "imap://alice;AUTH=*@[::1]/"),
        ("alice", "[::1]", 1143, None, "imap://alice;AUTH=*@[::1]:1143/"),
        ("alice", "2001:db8::7", 143, "INBOX", "imap://alice;AUTH=*@[2001:db8::7]/INBOX"),
        ("alice", "192.0.2.7", 143, "INBOX", "imap://alice;AUTH=*@192.0.2.7/INBOX"),
        # enc-user = 1*achar; achar = unreserved / sub-delims-sh / pct-encoded / "&" / "="
        ("a!$'()*+,&=b", "h", 143, None, "imap://a!$'()*+,&=b;AUTH=*@h/"),
        ("a-b.c_d~e", "h", 143, None, "imap://a-b.c_d~e;AUTH=*@h/"),
        ("a;b", "h", 143, None, "imap://a%3Bb;AUTH=*@h/"),
        ("a:b/c", "h", 143, None, "imap://a%3Ab%2Fc;AUTH=*@h/"),
        ("a%b?c#d", "h", 143, None, "imap://a%25b%3Fc%23d;AUTH=*@h/"),
        ("a[b]c d", "h", 143, None, "imap://a%5Bb%5Dc%20d;AUTH=*@h/"),
        (
            'a"b<c>d\\e^f`g{h|i}',
            "h",
            143,
            None,
            "imap://a%22b%3Cc%3Ed%5Ce%5Ef%60g%7Bh%7Ci%7D;AUTH=*@h/",
        ),
        ("josé@example.org", "h", 143, None, "imap://jos%C3%A9%40example.org;AUTH=*@h/"),
        # enc-mailbox: only unreserved and the "/" delimiter stay raw.
        ("u", "h", 143, "Shared/Sales", "imap://u;AUTH=*@h/Shared/Sales"),
        ("u", "h", 143, "Shared/Café Menu", "imap://u;AUTH=*@h/Shared/Caf%C3%A9%20Menu"),
        ("u", "h", 143, "100% done", "imap://u;AUTH=*@h/100%25%20done"),
        ("u", "h", 143, "a;b?c#d", "imap://u;AUTH=*@h/a%3Bb%3Fc%23d"),
        ("u", "h", 143, "Q&A=ok", "imap://u;AUTH=*@h/Q%26A%3Dok"),
        ("u", "h", 143, "[x]", "imap://u;AUTH=*@h/%5Bx%5D"),
        ("u", "h", 143, "a@b:c", "imap://u;AUTH=*@h/a%40b%3Ac"),
        ("u", "h", 143, "a*b(c)!", "imap://u;AUTH=*@h/a%2Ab%28c%29%21"),
        ("u", "h", 143, "日本語", "imap://u;AUTH=*@h/%E6%97%A5%E6%9C%AC%E8%AA%9E"),
        ("u", "h", 143, "Inbox 📧", "imap://u;AUTH=*@h/Inbox%20%F0%9F%93%A7"),
        ("u", "h", 143, "#news.comp.lang", "imap://u;AUTH=*@h/%23news.comp.lang"),
        # RFC 5092 §7: dot-segments encoded; §7.1: a leading "/" encoded.
        ("u", "h", 143, "a/../b", "imap://u;AUTH=*@h/a/%2E%2E/b"),
        ("u", "h", 143, "./x", "imap://u;AUTH=*@h/%2E/x"),
        ("u", "h", 143, "x/.", "imap://u;AUTH=*@h/x/%2E"),
        ("u", "h", 143, "a..b/.c", "imap://u;AUTH=*@h/a..b/.c"),
        ("u", "h", 143, "/top", "imap://u;AUTH=*@h/%2Ftop"),
        ("u", "h", 143, "a//b/", "imap://u;AUTH=*@h/a//b/"),
    ],
)
def test_imap_url(user: str, host: str, port: int, mailbox: str | None, url: str) -> None:
    assert imap_url(user, host, port, mailbox) == url


@pytest.mark.parametrize(
    ("mailbox", "url"),
    [
        # Another delimiter: "/" is an ordinary character, sent as %2F (RFC 5092 §7).
        ("INBOX.Sent", "imap://u;AUTH=*@h/INBOX.Sent"),
        ("a/b.c", "imap://u;AUTH=*@h/a%2Fb.c"),
        ("..", "imap://u;AUTH=*@h/.."),
    ],
)
def test_imap_url_other_delimiter(mailbox: str, url: str) -> None:
    assert imap_url("u", "h", 143, mailbox, delimiter=".") == url


@pytest.mark.parametrize(
    ("user", "mailbox", "message"),
    [
        ("", None, "an IMAP URL needs a user name"),
        ("u", "", "an IMAP URL cannot name an empty mailbox"),
    ],
)
def test_imap_url_refuses_empty(user: str, mailbox: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        imap_url(user, "h", 143, mailbox)


def test_url_can_name_is_what_imap_url_accepts() -> None:
    # The session asks url_can_name first; it must agree with imap_url exactly.
    assert not url_can_name("")
    for name in NAMES:
        assert url_can_name(name)
        assert imap_url("u", "h", 143, name)


@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from("aZ09-._~!$'()*+,&=@%;:/ \n"), st.characters(codec="utf-8")
        ),
        min_size=1,
    )
)
def test_enc_user_is_quote_with_the_achar_extras_safe(user: str) -> None:
    # The fast path for names of achar and "@" gives what `quote` gives.
    assert _enc_user(user) == quote(user, safe="!$'()*+,&=")


NAMES = [
    "INBOX",
    "Shared/Sales",
    "with space",
    "100%",
    "a/b/c",
    "semi;colon",
    "what?",
    "#hash",
    "Q&A",
    "close]bracket",
    "[both]",
    "Café",
    "日本語/メール",
    "📧 mail",
    "a/../b",
    "/leading",
    "tab\there",
    'quote"back\\slash',
    # Names modified UTF-7 can carry (&AAA-, &AA0-AAo-) and the delimiter alone.
    "nul\x00",
    "cr\rlf\n",
    "/",
    "//",
]
USERS = ["alice@example.org", "a;b:c", "josé@例え.jp", "x%y]z", "o'brien+tag@example.org"]


@pytest.mark.parametrize("mailbox", NAMES)
@pytest.mark.parametrize("user", USERS)
def test_round_trip(user: str, mailbox: str) -> None:
    url = imap_url(user, "mail2.example.org", 1143, mailbox)
    # The URL sits inside "[REFERRAL ...]" and between spaces.
    assert "]" not in url
    assert " " not in url
    assert url.isascii()
    assert parse_imap_url(url) == ImapUrl(user, "*", "mail2.example.org", 1143, mailbox)


@pytest.mark.parametrize("user", USERS)
def test_round_trip_server_url(user: str) -> None:
    url = imap_url(user, "::1", 143, None)
    assert parse_imap_url(url) == ImapUrl(user, "*", "::1", 143, None)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("imap://mail.example.org", ImapUrl(None, None, "mail.example.org", 143, None)),
        ("imap://mail.example.org/", ImapUrl(None, None, "mail.example.org", 143, None)),
        ("IMAP://u;auth=*@H:993/INBOX", ImapUrl("u", "*", "H", 993, "INBOX")),
        ("imap://;AUTH=GSSAPI@h/", ImapUrl(None, "GSSAPI", "h", 143, None)),
        ("imap://fred@h:/x", ImapUrl("fred", None, "h", 143, "x")),
        ("imap://u;AUTH=*@[2001:db8::1]:10143/a/b", ImapUrl("u", "*", "2001:db8::1", 10143, "a/b")),
        ("imap://u;AUTH=*@h/a%2fb", ImapUrl("u", "*", "h", 143, "a/b")),
        ("imap://u;AUTH=*@h/a@b:c", ImapUrl("u", "*", "h", 143, "a@b:c")),
        # RFC 2193's own example.
        (
            "IMAP://user;AUTH=*@SERVER2/SHARED/FOO",
            ImapUrl("user", "*", "SERVER2", 143, "SHARED/FOO"),
        ),
    ],
)
def test_parse_imap_url(url: str, parsed: ImapUrl) -> None:
    assert parse_imap_url(url) == parsed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/", "not an imap:// URL"),
        ("mail.example.org", "not an imap:// URL"),
        ("imap://u;AUTH=*@h/INBOX;UIDVALIDITY=385759045", "unsupported IMAP URL"),
        ("imap://u;AUTH=*@h/INBOX/;UID=20", "unsupported IMAP URL"),
        ("imap://u;AUTH=*@h/INBOX?SUBJECT%20x", "unsupported IMAP URL"),
        ("imap://u;AUTH=*@h/INBOX#frag", "unsupported IMAP URL"),
        ("imap://u;AUTH=*@h//x", "unsupported IMAP URL"),
        ("imap://u;AUTH=*@h/a b", "unsupported IMAP URL"),
        ("imap://u;AUTH=*@h/a]b", "unsupported IMAP URL"),
        ("imap://u;AUTH=%2A@h/", "bad ;AUTH="),
        ("imap://u;FOO=*@h/", "bad ;AUTH="),
        ("imap://a b;AUTH=*@h/", "bad user name"),
        ("imap://@h/", "empty user information"),
        ("imap://u;AUTH=*@h:0/", "port out of range"),
        ("imap://u;AUTH=*@h:65536/", "port out of range"),
        ("imap://u;AUTH=*@h:x/", "bad host or port"),
        ("imap://u;AUTH=*@/", "bad host or port"),
        ("imap://u;AUTH=*@[::1/", "bad host or port"),
        ("imap://u;AUTH=*@h/%FF", "not valid UTF-8"),
    ],
)
def test_parse_imap_url_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        parse_imap_url(url)
