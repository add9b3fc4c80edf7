"""refd.config.tree: the typed reader over raw-text nodes."""

from __future__ import annotations

import pytest

from refd.config.tree import Map, Node, Reader, Scalar, Seq, TreeError, get, is_null
from refd.config.yamltree import parse_yaml

R = Reader("c.yaml")


def value(text: str) -> Node:
    """The node under key ``v`` in the one-line document ``v: <text>``."""
    root = parse_yaml(f"v: {text}\n", "c.yaml")
    assert isinstance(root, Map)
    node = get(root, "v")
    assert node is not None
    return node


def error(call: object) -> str:
    assert callable(call)
    with pytest.raises(TreeError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("143", 143), ("1", 1), ("65535", 65535), ('"993"', 993), ("0", 0)],
)
def test_as_int(text: str, expected: int) -> None:
    assert R.as_int(value(text), "port", 0, 65535) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "0143",
            "c.yaml:1: port: write 143, leading zeros are not allowed "
            "(YAML 1.1 would read 0143 as octal)",
        ),
        (
            "00",
            "c.yaml:1: port: write 0, leading zeros are not allowed "
            "(YAML 1.1 would read 00 as octal)",
        ),
        ("1:20", 'c.yaml:1: port must be a whole number, got "1:20"'),
        ("0x10", 'c.yaml:1: port must be a whole number, got "0x10"'),
        ("1e3", 'c.yaml:1: port must be a whole number, got "1e3"'),
        ("14.3", 'c.yaml:1: port must be a whole number, got "14.3"'),
        ("+143", 'c.yaml:1: port must be a whole number, got "+143"'),
        ("65536", "c.yaml:1: port must be between 0 and 65535, got 65536"),
        ("-1", "c.yaml:1: port must be between 0 and 65535, got -1"),
        ("", "c.yaml:1: port must not be empty"),
        ("~", 'c.yaml:1: port is null; write "~" in quotes if you mean the text'),
        ("[1]", "c.yaml:1: port must be a single value, got a list"),
        ("{a: 1}", "c.yaml:1: port must be a single value, got a mapping"),
    ],
)
def test_as_int_errors(text: str, message: str) -> None:
    assert error(lambda: R.as_int(value(text), "port", 0, 65535)) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("True", True), ("FALSE", False), ('"true"', True)],
)
def test_as_bool(text: str, expected: bool) -> None:
    assert R.as_bool(value(text), "flag") is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "no",
            'c.yaml:1: flag: write true or false, not "no" '
            "(YAML 1.1 reads it as a boolean, other tools as text)",
        ),
        (
            "On",
            'c.yaml:1: flag: write true or false, not "On" '
            "(YAML 1.1 reads it as a boolean, other tools as text)",
        ),
        (
            "yes",
            'c.yaml:1: flag: write true or false, not "yes" '
            "(YAML 1.1 reads it as a boolean, other tools as text)",
        ),
        ("1", 'c.yaml:1: flag must be true or false, got "1"'),
        ("enabled", 'c.yaml:1: flag must be true or false, got "enabled"'),
    ],
)
def test_as_bool_errors(text: str, message: str) -> None:
    assert error(lambda: R.as_bool(value(text), "flag")) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30", 30.0), ("0.5", 0.5), (".25", 0.25), ("0", 0.0), ("1.", 1.0), ("10.75", 10.75)],
)
def test_as_float_seconds(text: str, expected: float) -> None:
    assert R.as_float_seconds(value(text), "idle_s") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1:20", 'c.yaml:1: idle_s must be a number of seconds such as 30 or 0.5, got "1:20"'),
        ("-1", 'c.yaml:1: idle_s must be a number of seconds such as 30 or 0.5, got "-1"'),
        ("1e3", 'c.yaml:1: idle_s must be a number of seconds such as 30 or 0.5, got "1e3"'),
        (".inf", 'c.yaml:1: idle_s must be a number of seconds such as 30 or 0.5, got ".inf"'),
        ("30s", 'c.yaml:1: idle_s must be a number of seconds such as 30 or 0.5, got "30s"'),
        (
            "030",
            "c.yaml:1: idle_s: write 30, leading zeros are not allowed "
            "(YAML 1.1 would read 030 as octal)",
        ),
        ("7200", "c.yaml:1: idle_s must be at most 3600 seconds, got 7200"),
    ],
)
def test_as_float_seconds_errors(text: str, message: str) -> None:
    assert error(lambda: R.as_float_seconds(value(text), "idle_s", max=3600)) == message


@pytest.mark.parametrize(
    ("text", "empty_ok", "expected"),
    [
        ("plain", False, "plain"),
        ('"no"', False, "no"),
        ('"null"', False, "null"),
        ('"~"', False, "~"),
        ('""', True, ""),
        ("", True, ""),
        ("Café Menu", False, "Café Menu"),
    ],
)
def test_as_str(text: str, empty_ok: bool, expected: str) -> None:
    assert R.as_str(value(text), "name", empty_ok=empty_ok) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "c.yaml:1: name must not be empty"),
        ('""', "c.yaml:1: name must not be empty"),
        ("null", 'c.yaml:1: name is null; write "null" in quotes if you mean the text'),
        ("NULL", 'c.yaml:1: name is null; write "NULL" in quotes if you mean the text'),
        ("[a]", "c.yaml:1: name must be a single value, got a list"),
    ],
)
def test_as_str_errors(text: str, message: str) -> None:
    assert error(lambda: R.as_str(value(text), "name")) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one", ("one",)),
        ("[a, b]", ("a", "b")),
        ("[]", ()),
        ("", ()),
        ('["", x]', ("", "x")),
    ],
)
def test_as_str_list(text: str, expected: tuple[str, ...]) -> None:
    assert R.as_str_list(value(text), "names", empty_ok=True) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a, [b]]", "c.yaml:1: names[1] must be a single value, got a list"),
        ('[a, ""]', "c.yaml:1: names[1] must not be empty"),
        ("{a: 1}", "c.yaml:1: names must be a single value, got a mapping"),
    ],
)
def test_as_str_list_errors(text: str, message: str) -> None:
    assert error(lambda: R.as_str_list(value(text), "names")) == message


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (None, True),
        (Scalar("", 1, False), True),
        (Scalar("~", 1, False), True),
        (Scalar("null", 1, False), True),
        (Scalar("Null", 1, False), True),
        (Scalar("NULL", 1, False), True),
        (Scalar("", 1, True), False),
        (Scalar("null", 1, True), False),
        (Scalar("nil", 1, False), False),
        (Seq((), 1), False),
        (Map((), 1), False),
    ],
)
def test_is_null(node: Node | None, expected: bool) -> None:
    assert is_null(node) is expected


def test_map_access_and_unknown_keys() -> None:
    root = parse_yaml("top:\n  host: h\n  prot: 143\n", "c.yaml")
    top = R.as_map(root, "the file")
    section = R.as_map(R.require(top, "top", "the file"), "top")
    assert section.keys() == ("host", "prot")
    assert get(section, "host") == Scalar("h", 2, False)
    assert get(section, "port") is None
    assert (
        error(lambda: R.reject_unknown(section, {"host", "port"}, "top"))
        == 'c.yaml:3: unknown key "prot" in top (known keys: host, port)'
    )
    assert error(lambda: R.require(section, "port", "top")) == 'c.yaml:2: top needs "port"'
    R.reject_unknown(section, {"host", "prot"}, "top")  # no error


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", Map((), 1)), ("~", Map((), 1)), ("{}", Map((), 1))],
)
def test_null_reads_as_empty_map(text: str, expected: Map) -> None:
    assert R.as_map(value(text), "section") == expected


def test_as_map_of_missing_document_uses_given_line() -> None:
    assert R.as_map(None, "the file", line=1) == Map((), 1)
    assert error(lambda: R.as_map(value("[1]"), "top")) == (
        "c.yaml:1: top must be a mapping (key: value), got a list"
    )
    assert error(lambda: R.as_seq(value("x"), "items")) == (
        'c.yaml:1: items must be a list, got "x"'
    )


@pytest.mark.parametrize(
    ("line", "text"),
    [(12, "f.yaml:12: bad thing"), (0, "f.yaml: bad thing")],
)
def test_tree_error_text(line: int, text: str) -> None:
    err = TreeError("f.yaml", line, "bad thing")
    assert (str(err), err.file, err.line, err.message) == (text, "f.yaml", line, "bad thing")
