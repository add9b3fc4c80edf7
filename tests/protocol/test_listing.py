import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refd.protocol.listing import compile_patterns, hierarchy, list_match, select


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


# -- the oracle: RFC 3501 §6.3.8 as a regex, fine for short strings ---------------


def _oracle(pattern: str, name: str) -> bool:
    rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.DOTALL) is not None


_SMALL = st.text("ab/*%", max_size=10)


@settings(max_examples=500, deadline=None)
@given(_SMALL, st.text("ab/", max_size=10))
def test_compiled_patterns_and_list_match_agree_with_the_rfc(pattern: str, name: str) -> None:
    expected = _oracle(pattern, name)
    assert list_match(pattern, name, "/") is expected
    (compiled,) = compile_patterns("", [pattern], "/")
    assert compiled.matches(name) is expected


# -- compiling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "parts", "by_level"),
    [
        ("INBOX", "INBOX", ("INBOX",), None),
        ("**%*x", "*x", ("", "x"), None),
        ("%%a%%", "%a%", ("", "a", ""), (("", "a", ""),)),
        ("Shared/%", "Shared/%", ("Shared/", ""), (("Shared",), ("", ""))),
        ("a*b%c", "a*b%c", ("a", "b", "c"), None),
    ],
)
def test_compile_collapses_wildcards_and_keeps_the_literal_parts(
    pattern: str, text: str, parts: tuple[str, ...], by_level: object
) -> None:
    (compiled,) = compile_patterns("", [pattern], "/")
    assert (compiled.text, compiled.parts, compiled.by_level) == (text, parts, by_level)
    assert compiled.literals == len(pattern.replace("*", "").replace("%", ""))


def test_compile_prefixes_the_reference_and_drops_duplicates() -> None:
    compiled = compile_patterns("Shared/", ["*", "%", "*", "**", "%", "S*"], "/")
    assert [(p.text, p.lists_levels) for p in compiled] == [
        ("Shared/*", False),
        ("Shared/%", True),
        ("Shared/S*", False),
    ]
    # 10,000 copies of one pattern are one pattern.
    assert len(compile_patterns("", ["*"] * 10_000, "/")) == 1


# -- selecting: each name once, in bounded steps ------------------------------------------

NAMES = ("INBOX", "Shared/Sales", "Shared/Café Menu", "Shared/Sales/2026", "Archive")


def _all(batches: Iterator[list[str]]) -> list[str]:
    return [name for batch in batches for name in batch]


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["*"], list(NAMES)),
        (["*", "*", "Shared/*", "%", "INBOX"], list(NAMES)),
        (
            ["Shared/%", "Shared/*", "*Sales*"],
            ["Shared/Sales", "Shared/Café Menu", "Shared/Sales/2026"],
        ),
        (["%"], ["INBOX", "Archive"]),
        (["Nothing*", "x%"], []),
    ],
)
def test_select_answers_each_name_once_in_table_order(
    patterns: list[str], expected: list[str]
) -> None:
    compiled = compile_patterns("", patterns, "/")
    assert _all(select(compiled, NAMES, step=10_000)) == expected


def test_select_yields_after_each_step_of_work() -> None:
    names = [f"Shared/Box {i:04d}" for i in range(1000)]  # 15 characters, + 1
    misses = compile_patterns("", [f"x{i}*" for i in range(10)], "/")
    batches = list(select(misses, names, step=16 * 10 * 50))
    # 10 tests of 16 per name: a yield every 50 names, and one at the end.
    assert len(batches) == 1000 // 50 + 1
    assert _all(iter(batches)) == []
    # Every name matches the first pattern: one test and one line each.
    hits = compile_patterns("", ["Shared/*"], "/")
    batches = list(select(hits, names, step=17 * 16 * 10))
    assert [len(b) for b in batches] == [10] * 100 + [0]
    assert _all(iter(batches)) == names


def test_a_long_pattern_is_refused_without_walking_it() -> None:
    # 64 KiB of pattern against a short name: the length check refuses it.
    (compiled,) = compile_patterns("", ["*a" * 32768], "/")
    assert compiled.literals == 32768
    assert not compiled.matches("a" * 100)


# -- hierarchy ------------------------------------------------------------------------------


def test_hierarchy_lists_missing_levels_top_first_and_which_have_children() -> None:
    h = hierarchy(("INBOX", "Shared/Sales", "A/B/C", "A/B", "Shared/Café Menu", "X//Y"), "/")
    assert h.parents == ("Shared", "A", "X", "X/")
    assert h.with_children == {"Shared", "A", "A/B", "X", "X/"}
