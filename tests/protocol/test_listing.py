import pytest

from refd.protocol.listing import list_match


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*", "Shared/Sales", True),
        ("%", "Shared/Sales", False),
        ("%", "INBOX", True),
        ("Shared/%", "Shared/Sales", True),
        ("Shared/%", "Shared/Sales/2026", False),
        ("Shared/*", "Shared/Sales/2026", True),
        ("S*s", "Shared/Sales", True),
        ("S%s", "Shared/Sales", False),
        ("%/%", "Shared/Sales", True),
        ("*%*", "x", True),
        ("", "", True),
        ("", "x", False),
        ("INBOX", "INBOX", True),
        ("Caf\u00e9*", "Caf\u00e9 Menu", True),
        ("*" * 40 + "x", "a" * 60, False),
        ("%" * 40 + "x", "a" * 60, False),
        ("*a" * 30 + "b", "a" * 60, False),
    ],
)
def test_list_pattern_matching(pattern: str, name: str, matches: bool) -> None:
    assert list_match(pattern, name, "/") is matches
