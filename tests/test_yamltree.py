"""refd.config.yamltree: YAML text -> raw-text tree, and the errors it refuses with."""

from __future__ import annotations

import pytest

from refd.config.tree import Map, Node, Scalar, Seq, TreeError
from refd.config.yamltree import parse_yaml


def S(value: str, line: int, quoted: bool = False) -> Scalar:
    return Scalar(value, line, quoted)


def one(text: str) -> Node:
    """The value of the single key ``v`` in ``text``."""
    root = parse_yaml(text, "f.yaml")
    assert isinstance(root, Map)
    assert len(root.items) == 1
    return root.items[0][1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 resolution traps stay text.
        ("v: no", S("no", 1)),
        ("v: yes", S("yes", 1)),
        ("v: on", S("on", 1)),
        ("v: 0143", S("0143", 1)),
        ("v: 1:20", S("1:20", 1)),
        ("v: 0x1F", S("0x1F", 1)),
        ("v: 1e3", S("1e3", 1)),
        ("v: .inf", S(".inf", 1)),
        ("v: 2001-01-01", S("2001-01-01", 1)),
        # Nulls keep their spelling; is_null decides.
        ("v:", S("", 1)),
        ("v: ~", S("~", 1)),
        ("v: null", S("null", 1)),
        # Quoted and block styles are marked quoted.
        ('v: "no"', S("no", 1, True)),
        ("v: 'a''b'", S("a'b", 1, True)),
        ('v: ""', S("", 1, True)),
        ("v: |\n  line1\n  line2\n", S("line1\nline2\n", 1, True)),
        ("v: >-\n  folded\n  text\n", S("folded text", 1, True)),
        ('v: "Caf\\u00e9"', S("Café", 1, True)),
        # Collections keep item lines.
        ("v: [a, 'b']", Seq((S("a", 1), S("b", 1, True)), 1)),
        ("v:\n  - a\n  - [b]\n", Seq((S("a", 2), Seq((S("b", 3),), 3)), 2)),
        ("v:\n  k: 1\n  j:\n", Map(((S("k", 2), S("1", 2)), (S("j", 3), S("", 3))), 2)),
        ("v: {k: on}", Map(((S("k", 1), S("on", 1)),), 1)),
        # Anchors without aliases are harmless and ignored.
        ("v: &a x", S("x", 1)),
    ],
)
def test_scalars_stay_raw_text(text: str, expected: Node) -> None:
    assert one(text) == expected


def test_map_keys_keep_order_and_lines() -> None:
    root = parse_yaml("# head\nb: 1\n\na: 2\n'c': 3\n", "f.yaml")
    assert root == Map(
        (
            (S("b", 2), S("1", 2)),
            (S("a", 4), S("2", 4)),
            (S("c", 5, True), S("3", 5)),
        ),
        2,
    )


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n", "null\n"])
def test_empty_document_is_none(text: str) -> None:
    assert parse_yaml(text, "f.yaml") is None


def test_top_level_scalar_and_list() -> None:
    assert parse_yaml("hello", "f.yaml") == S("hello", 1)
    assert parse_yaml("- a\n- b\n", "f.yaml") == Seq((S("a", 1), S("b", 2)), 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", 'f.yaml:3: duplicate key "a" (first defined at line 1)'),
        (
            "top:\n  k: 1\n  'k': 2\n",
            'f.yaml:3: duplicate key "k" (first defined at line 2)',
        ),
        (
            "a: &x 1\nb: *x\n",
            'f.yaml:2: aliases are not supported in refd files ("*x"); repeat the value instead',
        ),
        (
            "base: &b {k: 1}\nother:\n  <<: *b\n",
            "f.yaml:3: merge keys (<<) are not supported in refd files",
        ),
        ("<<: {k: 1}\n", "f.yaml:1: merge keys (<<) are not supported in refd files"),
        (
            "a: 1\n---\nb: 2\n",
            "f.yaml:2: only one YAML document is allowed per file (a second one starts here)",
        ),
        (
            "? [a, b]\n: 1\n",
            "f.yaml:1: mapping keys must be plain text, not a list or mapping",
        ),
        (
            "a: !!int 5\n",
            'f.yaml:1: YAML tags such as "!!int" are not supported in refd files; '
            "write the value as plain text",
        ),
        (
            "a:\n  - !custom x\n",
            'f.yaml:2: YAML tags such as "!custom" are not supported in refd files; '
            "write the value as plain text",
        ),
    ],
)
def test_refused_constructs(text: str, message: str) -> None:
    with pytest.raises(TreeError) as info:
        parse_yaml(text, "f.yaml")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: b: c\n", 1),
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a: 1\n  b: 2\n", 2),
        ("a: 'unterminated\n", 2),
        ("a:\n\tb: 1\n", 2),
        ("a: \x07\n", 1),
        ("ok: 1\nbad: \x00\n", 2),
    ],
)
def test_syntax_errors_carry_the_problem_line(text: str, line: int) -> None:
    with pytest.raises(TreeError) as info:
        parse_yaml(text, "f.yaml")
    err = info.value
    assert (err.file, err.line) == ("f.yaml", line)
    assert str(err).startswith(f"f.yaml:{line}: invalid YAML: ")
