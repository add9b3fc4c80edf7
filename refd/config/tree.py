"""A typed, line-annotated configuration tree and a small reader for it.

refd's YAML files are edited by people and checked by `refd check`, so every
value must keep the line it came from, and no value may be guessed at by a
YAML 1.1 resolver: PyYAML's default loaders turn ``no``/``on``/``yes`` into
booleans, ``0143`` into the octal number 99 and ``1:20`` into 80
(sexagesimal). refd never lets that happen: `refd.yamltree` builds this tree
from YAML *events*, and every scalar stays the raw text the admin wrote.
Types are decided here, by the code that knows what a key means.

The tree has three node kinds, all frozen values:

- `Scalar` -- the raw text, its 1-based line, and whether it was quoted (any
  quoted or block style). An unquoted empty value, ``~`` or ``null`` is a
  YAML null; `is_null` tells it apart from the quoted text ``"null"``.
- `Seq` -- a sequence of nodes.
- `Map` -- ordered (key, value) pairs whose keys are scalars; duplicate keys
  were already rejected by the parser.

`Reader` turns nodes into Python values for one file. Each ``as_*`` method
takes the node and ``what``, a short human description used in the error
message ("servers.mail1.port"). Every failure raises `TreeError`, whose
``str()`` is ``FILE:LINE: message`` -- the form editors and CI annotate.

Typical use (a daemon config loader)::

    r = Reader("refd.yaml")
    top = r.as_map(root, "the file")
    r.reject_unknown(top, {"listen", "idle_timeout_s"}, "the top level")
    node = get(top, "idle_timeout_s")
    idle = 1800.0 if node is None else r.as_float_seconds(node, "idle_timeout_s")

This module is pure: it does no I/O and imports no parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Map",
    "Node",
    "Reader",
    "Scalar",
    "Seq",
    "TreeError",
    "get",
    "is_null",
]


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar exactly as written: ``value`` is the text, never a typed value."""

    value: str
    line: int
    quoted: bool  # any quoted ('...' "...") or block (| >) style


@dataclass(frozen=True, slots=True)
class Seq:
    """A YAML sequence (block ``- x`` or flow ``[x, y]``)."""

    items: tuple[Node, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Map:
    """A YAML mapping; keys are scalars, in file order, without duplicates."""

    items: tuple[tuple[Scalar, Node], ...]
    line: int

    def keys(self) -> tuple[str, ...]:
        """The key texts in file order."""
        return tuple(k.value for k, _ in self.items)


Node = Scalar | Seq | Map


class TreeError(Exception):
    """A problem in a config file, located by file name and 1-based line.

    ``str(err)`` is ``"FILE:LINE: message"`` (``"FILE: message"`` when the
    line is unknown, i.e. 0).
    """

    file: str
    line: int
    message: str

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(file, line, message)
        self.file = file
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line > 0:
            return f"{self.file}:{self.line}: {self.message}"
        return f"{self.file}: {self.message}"


# YAML 1.1 (and 1.2 core) null spellings, when unquoted.
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
# YAML 1.1 boolean spellings other than true/false: refd refuses them so that
# a value means the same thing to every reader of the file.
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})
_INT = re.compile(r"-?[0-9]+")
_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def is_null(node: Node | None) -> bool:
    """True for a missing value or an unquoted empty value, ``~`` or ``null``."""
    return node is None or (isinstance(node, Scalar) and not node.quoted and node.value in _NULLS)


def get(map_: Map, key: str) -> Node | None:
    """The value of ``key`` in ``map_``, or None when the key is absent."""
    for k, v in map_.items:
        if k.value == key:
            return v
    return None


def _kind(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    return f'"{node.value}"'


@dataclass(frozen=True, slots=True)
class Reader:
    """Typed accessors for the nodes of one file; errors name ``file``."""

    file: str

    def error(self, where: Node | int, message: str) -> TreeError:
        """A `TreeError` at ``where`` (a node or a line number)."""
        line = where if isinstance(where, int) else where.line
        return TreeError(self.file, line, message)

    # -- structure ----------------------------------------------------------

    def as_map(self, node: Node | None, what: str, *, line: int = 0) -> Map:
        """``node`` as a mapping. A null value reads as an empty mapping.

        ``line`` locates the error when ``node`` is None (a missing document).
        """
        if node is None or is_null(node):
            return Map((), node.line if node is not None else line)
        if not isinstance(node, Map):
            raise self.error(node, f"{what} must be a mapping (key: value), got {_kind(node)}")
        return node

    def as_root(self, node: Node | None, what: str, *, empty: str) -> Map:
        """The file's top-level mapping.

        An empty file is an error saying ``empty`` (what the file needs).  A
        file that is not a mapping is refused *without quoting it*: it may
        be the wrong file altogether (a passwd-file, a TLS key), and its
        text must not reach a terminal or a log.
        """
        if node is None or is_null(node):
            raise self.error(1, f"{what} is empty: {empty}")
        if not isinstance(node, Map):
            shape = "a list" if isinstance(node, Seq) else "plain text"
            raise self.error(
                node,
                f"{what} must be a YAML mapping (key: value), and this file is {shape} "
                "(is it the right file?)",
            )
        return node

    def as_seq(self, node: Node, what: str) -> Seq:
        """``node`` as a list. A null value reads as an empty list."""
        if is_null(node):
            return Seq((), node.line)
        if not isinstance(node, Seq):
            raise self.error(node, f"{what} must be a list, got {_kind(node)}")
        return node

    def as_scalar(self, node: Node, what: str) -> Scalar:
        """``node`` as a scalar (text, possibly null)."""
        if not isinstance(node, Scalar):
            raise self.error(node, f"{what} must be a single value, got {_kind(node)}")
        return node

    def require(self, map_: Map, key: str, where: str) -> Node:
        """The value of ``key``; an error at the mapping's line when absent."""
        node = get(map_, key)
        if node is None:
            raise self.error(map_, f'{where} needs "{key}"')
        return node

    def reject_unknown(self, map_: Map, allowed: Iterable[str], where: str) -> None:
        """Raise on the first key of ``map_`` not in ``allowed``.

        The message names the key, where it is, and the keys that are allowed.
        """
        allowed_set = frozenset(allowed)
        for key, _ in map_.items:
            if key.value not in allowed_set:
                known = ", ".join(sorted(allowed_set))
                raise self.error(key, f'unknown key "{key.value}" in {where} (known keys: {known})')

    # -- values -------------------------------------------------------------

    def as_str(self, node: Node, what: str, *, empty_ok: bool = False) -> str:
        """The text of a scalar.

        An unquoted ``~``/``null`` is an error (quote it to mean the word); an
        empty value is an error unless ``empty_ok``, then it reads as "".
        """
        scalar = self.as_scalar(node, what)
        if not scalar.quoted and scalar.value in _NULLS and scalar.value != "":
            raise self.error(
                scalar,
                f'{what} is null; write "{scalar.value}" in quotes if you mean the text',
            )
        if scalar.value == "" and not empty_ok:
            raise self.error(scalar, f"{what} must not be empty")
        return scalar.value

    def as_int(self, node: Node, what: str, min: int, max: int) -> int:
        """A decimal integer in ``[min, max]``; only digits (and ``-``).

        A leading zero is refused: YAML 1.1 reads ``0143`` as octal 99, so
        the file would mean different things to different tools.
        """
        text = self.as_str(node, what)
        if not _INT.fullmatch(text):
            raise self.error(node, f'{what} must be a whole number, got "{text}"')
        digits = text.lstrip("-")
        if len(digits) > 1 and digits[0] == "0":
            fixed = ("-" if text.startswith("-") else "") + (digits.lstrip("0") or "0")
            raise self.error(
                node,
                f"{what}: write {fixed}, leading zeros are not allowed "
                f"(YAML 1.1 would read {text} as octal)",
            )
        value = int(text)
        if not min <= value <= max:
            raise self.error(node, f"{what} must be between {min} and {max}, got {value}")
        return value

    def as_bool(self, node: Node, what: str) -> bool:
        """``true`` or ``false`` (any case); YAML 1.1's yes/no/on/off are refused."""
        text = self.as_str(node, what)
        lowered = text.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if lowered in _YAML11_BOOLS:
            raise self.error(
                node,
                f'{what}: write true or false, not "{text}" '
                "(YAML 1.1 reads it as a boolean, other tools as text)",
            )
        raise self.error(node, f'{what} must be true or false, got "{text}"')

    def as_positive_seconds(self, node: Node, what: str) -> float:
        """`as_float_seconds`, and more than 0 (a timeout, an interval)."""
        value = self.as_float_seconds(node, what)
        if value <= 0:
            raise self.error(node, f"{what} must be more than 0")
        return value

    def as_float_seconds(self, node: Node, what: str, *, max: float | None = None) -> float:
        """A non-negative decimal number of seconds (``30``, ``0.5``).

        No sign, exponent, ``inf`` or ``1:20`` (YAML 1.1 sexagesimal).
        """
        text = self.as_str(node, what)
        if not _SECONDS.fullmatch(text):
            raise self.error(
                node, f'{what} must be a number of seconds such as 30 or 0.5, got "{text}"'
            )
        whole = text.split(".", 1)[0]
        if len(whole) > 1 and whole[0] == "0":
            raise self.error(
                node,
                f"{what}: write {text.lstrip('0') or '0'}, leading zeros are not allowed "
                f"(YAML 1.1 would read {text} as octal)",
            )
        value = float(text)
        if max is not None and value > max:
            raise self.error(node, f"{what} must be at most {max:g} seconds, got {text}")
        return value

    def as_str_list(self, node: Node, what: str, *, empty_ok: bool = False) -> tuple[str, ...]:
        """A single text or a list of texts, as a tuple.

        ``empty_ok`` applies to each item (an empty *list* is always allowed;
        callers that need at least one item check the length).
        """
        if isinstance(node, Seq) or is_null(node):
            seq = self.as_seq(node, what)
            return tuple(
                self.as_str(item, f"{what}[{i}]", empty_ok=empty_ok)
                for i, item in enumerate(seq.items)
            )
        return (self.as_str(node, what, empty_ok=empty_ok),)
