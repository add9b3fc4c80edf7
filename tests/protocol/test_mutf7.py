import pytest

from refd.protocol import mutf7

ROUND_TRIP = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("&", "&-"),
    ("a&b", "a&-b"),
    ("Café Menu", "Caf&AOk- Menu"),
    # RFC 3501 §5.1.3's own example
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("😀", "&2D3eAA-"),
    ("tab\there", "tab&AAk-here"),
    ("Entwürfe", "Entw&APw-rfe"),
]


@pytest.mark.parametrize(("name", "wire"), ROUND_TRIP)
def test_round_trip(name: str, wire: str) -> None:
    assert mutf7.encode(name) == wire
    assert mutf7.decode(wire) == name


INVALID = [
    ("&", "unterminated"),
    ("&AOk", "unterminated"),
    ("&AGE-", "printable ASCII"),  # "a" shifted
    ("&AOk-&AOk-", "adjacent"),
    ("&A-", "truncated"),
    ("&AO-", "whole UTF-16"),
    ("&AOl-", "stray bits"),
    ("&AO/-", "'/'"),
    ("&2D0-", "not valid UTF-16"),  # a lone high surrogate
    ("a\x7fb", "printable"),
    ("caf\xe9", "printable"),
]


@pytest.mark.parametrize(("wire", "why"), INVALID)
def test_invalid(wire: str, why: str) -> None:
    with pytest.raises(mutf7.MUTF7Error, match=why):
        mutf7.decode(wire)
