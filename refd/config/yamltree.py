"""YAML text -> `refd.tree` nodes, with no type resolution at all (and back).

This is the only refd module that imports PyYAML. It reads the *event*
stream (``yaml.parse``) with ``CSafeLoader`` when libyaml is present, else
``SafeLoader``, and builds `Scalar` / `Seq` / `Map` nodes itself. Working
from events rather than ``yaml.compose`` gives three things: no resolver
ever looks at a scalar (``no`` stays the text "no", ``0143`` stays "0143"),
an alias is reported at the line where it is *used*, and a second document
is seen at its own line.

Refused, each as a `TreeError` at the offending line:

- duplicate mapping keys (the message names both lines);
- anchors are ignored, but aliases (``*name``) and merge keys (``<<``) are
  refused: a routing rule should read the same wherever it sits;
- explicit tags (``!!int``, ``!foo``): refd decides types itself;
- non-scalar mapping keys;
- more than one document;
- YAML syntax errors (line from the parser's problem mark); a tab where
  YAML wants spaces is named as a tab.

An empty document gives ``None``. Lines are 1-based (PyYAML marks are 0-based).
"""

from __future__ import annotations

from collections.abc import Iterator

import yaml

from refd.config.tree import Map, Node, Scalar, Seq, TreeError, is_null

__all__ = ["dump_yaml", "parse_yaml"]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: How deep sequences and mappings may nest in a refd file.
MAX_DEPTH = 64
_QUOTED_STYLES = frozenset({"'", '"', "|", ">"})


def parse_yaml(text: str, file: str) -> Node | None:
    """Parse one YAML document into a tree; None when the document is empty."""
    events = _events(text, file)
    builder = _Builder(file, events)
    return builder.stream()


def dump_yaml(data: object) -> str:
    """Plain values (dicts, lists, str, int, float, bool) as block-style YAML.

    PyYAML quotes every string a YAML 1.1 reader would take for something
    else ("no", "0143", "1:20"), and refd reads a quoted value as the text.
    """
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _events(text: str, file: str) -> Iterator[yaml.Event]:
    try:
        yield from yaml.parse(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 0
        tab = _tab_at(text, mark)
        if tab is not None:
            raise TreeError(
                file,
                line,
                f"invalid YAML: a tab character at column {tab}; "
                "YAML indents with spaces only, so replace the tab with spaces",
            ) from None
        parts = [p for p in (exc.context, exc.problem) if p]
        raise TreeError(file, line, "invalid YAML: " + ", ".join(parts)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise TreeError(
            file, line, f"invalid YAML: character #x{exc.character:04x}: {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - other parser failures
        raise TreeError(file, 0, f"invalid YAML: {exc}") from None


def _tab_at(text: str, mark: yaml.Mark | None) -> int | None:
    """The 1-based column of the tab that stopped the parser, if a tab did.

    PyYAML says "found character that cannot start any token" (or "... a tab
    character that violates indentation") and never that it is a tab.
    """
    if mark is None:
        return None
    lines = text.splitlines()
    if not 0 <= mark.line < len(lines):
        return None
    row = lines[mark.line]
    if mark.column < len(row) and row[mark.column] == "\t":
        return int(mark.column) + 1
    indent = row[: len(row) - len(row.lstrip(" \t"))]
    if "\t" in indent and mark.column <= len(indent):
        return indent.index("\t") + 1
    return None


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else 0


class _Builder:
    """Recursive descent over the event stream."""

    def __init__(self, file: str, events: Iterator[yaml.Event]) -> None:
        self.file = file
        self.events = events
        self.depth = 0

    def _next(self) -> yaml.Event:
        return next(self.events)

    def _error(self, line: int, message: str) -> TreeError:
        return TreeError(self.file, line, message)

    def stream(self) -> Node | None:
        self._next()  # StreamStartEvent
        event = self._next()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        root = self._node(self._next())  # after DocumentStartEvent
        self._next()  # DocumentEndEvent
        event = self._next()
        if not isinstance(event, yaml.StreamEndEvent):
            raise self._error(
                _line(event),
                "only one YAML document is allowed per file (a second one starts here)",
            )
        if is_null(root):
            return None
        return root

    def _check_tag(self, event: yaml.NodeEvent) -> None:
        tag = getattr(event, "tag", None)
        if tag is not None:
            if tag.startswith("tag:yaml.org,2002:"):
                tag = "!!" + tag.removeprefix("tag:yaml.org,2002:")
            raise self._error(
                _line(event),
                f'YAML tags such as "{tag}" are not supported in refd files; '
                "write the value as plain text",
            )

    def _node(self, event: yaml.Event) -> Node:
        if isinstance(event, yaml.AliasEvent):
            raise self._error(
                _line(event),
                f'aliases are not supported in refd files ("*{event.anchor}"); '
                "repeat the value instead",
            )
        if isinstance(event, yaml.ScalarEvent):
            self._check_tag(event)
            return Scalar(event.value, _line(event), event.style in _QUOTED_STYLES)
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self._check_tag(event)
            if self.depth >= MAX_DEPTH:
                # No refd file needs more; and the builder recurses per level.
                raise self._error(
                    _line(event), f"nesting deeper than {MAX_DEPTH} levels is not supported"
                )
            self.depth += 1
            try:
                if isinstance(event, yaml.SequenceStartEvent):
                    return self._seq(_line(event))
                return self._map(_line(event))
            finally:
                self.depth -= 1
        raise self._error(_line(event), "unexpected YAML event")  # pragma: no cover

    def _seq(self, line: int) -> Seq:
        items: list[Node] = []
        while True:
            event = self._next()
            if isinstance(event, yaml.SequenceEndEvent):
                return Seq(tuple(items), line)
            items.append(self._node(event))

    def _map(self, line: int) -> Map:
        items: list[tuple[Scalar, Node]] = []
        seen: dict[str, int] = {}
        while True:
            event = self._next()
            if isinstance(event, yaml.MappingEndEvent):
                return Map(tuple(items), line)
            key = self._node(event)
            if not isinstance(key, Scalar):
                raise self._error(
                    key.line, "mapping keys must be plain text, not a list or mapping"
                )
            if key.value == "<<" and not key.quoted:
                raise self._error(key.line, "merge keys (<<) are not supported in refd files")
            first = seen.get(key.value)
            if first is not None:
                raise self._error(
                    key.line, f'duplicate key "{key.value}" (first defined at line {first})'
                )
            seen[key.value] = key.line
            items.append((key, self._node(self._next())))
