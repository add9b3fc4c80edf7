"""LIST pattern matching (RFC 3501 §6.3.8), pure and bounded in time.

``*`` matches any text, ``%`` any text without the hierarchy delimiter.

A LIST may carry many patterns (RFC 5258 §3), so its cost is bounded in
three ways.  Each pattern is compiled once (:func:`compile_patterns`):
duplicates go, runs of wildcards collapse to one, and the literal parts
between the wildcards are kept, so a test costs a few string searches and
one pattern longer than the name is refused at once.  Each name is answered
at most once, however many patterns match it (:func:`select`; RFC 5258 §3:
"If a mailbox name matches multiple mailbox patterns from the list, the
server SHOULD return only a single LIST response"), so the answer is bounded
by the names there are, not by what the client sends.  And :func:`select`
yields after a fixed amount of work, so its caller can pause between steps
whatever the table holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["ListPattern", "compile_patterns", "hierarchy", "list_match", "select"]


def list_match(pattern: str, name: str, delimiter: str) -> bool:
    """Does a LIST pattern match ``name``?  ``*`` any text, ``%`` any but the delimiter.

    RFC 3501 §6.3.8.  The positions in ``name`` that the pattern so far can
    reach are bits of one integer, so each pattern character costs a few
    integer operations over len(name) bits, whatever the client sends (a
    regex would backtrack exponentially on a pattern such as ``*****x``).
    """
    end = len(name)
    masks: dict[str, int] = {}  # character -> the positions where it is
    level = -1  # positions that ``%`` may step over (not the delimiter)
    reach = 1  # position 0
    for ch in pattern:
        if ch == "*":
            # every position from the first reachable one on
            reach = ((1 << (end + 1)) - 1) ^ ((reach & -reach) - 1)
        elif ch == "%":
            if level < 0:
                level = ((1 << end) - 1) ^ _positions(name, delimiter)
            # from each reachable position to the end of its level: adding
            # the start bits to ``level`` carries them along each run of ones
            reach |= ((reach & level) + level) ^ level
        else:
            mask = masks.get(ch)
            if mask is None:
                mask = masks[ch] = _positions(name, ch)
            reach = (reach & mask) << 1
            if not reach:
                return False
    return bool(reach >> end & 1)


def _positions(name: str, ch: str) -> int:
    """A bit for each position of ``ch`` in ``name``."""
    bits = 0
    at = name.find(ch)
    while at >= 0:
        bits |= 1 << at
        at = name.find(ch, at + 1)
    return bits


@dataclass(frozen=True, slots=True)
class ListPattern:
    """A canonical LIST pattern (reference + pattern), compiled for matching."""

    #: the pattern with each run of wildcards collapsed to one (``%*`` -> ``*``)
    text: str
    delimiter: str
    #: the literal text between the wildcards: ``text`` is ``parts[0]``, a
    #: wildcard, ``parts[1]`` ... ``parts[-1]`` (one part: no wildcard)
    parts: tuple[str, ...]
    #: how many literal characters: a shorter name cannot match
    literals: int
    #: with ``%`` and no ``*``: the parts of each level (``text`` split at
    #: the delimiter), since such a pattern matches level by level
    by_level: tuple[tuple[str, ...], ...] | None
    #: the client's pattern ends with ``%``, so it lists the hierarchy
    #: levels it matches too (RFC 3501 §6.3.8)
    lists_levels: bool

    def matches(self, name: str) -> bool:
        """``list_match(self.text, name, self.delimiter)``, mostly without it.

        ``*`` alone: the parts in order, each at its first place (which
        leaves the most room for the rest).  ``%`` alone: the same, level by
        level, since ``%`` never crosses a level.  Both: the same test with
        ``*`` for ``%`` first, then the full match, on a pattern at most
        twice as long as the name.
        """
        parts = self.parts
        if len(parts) == 1:
            return name == self.text
        if len(name) < self.literals or not _glob(parts, name):
            return False
        by_level = self.by_level
        if by_level is not None:
            names = name.split(self.delimiter)
            return len(names) == len(by_level) and all(map(_glob, by_level, names))
        return "%" not in self.text or list_match(self.text, name, self.delimiter)


def _glob(parts: tuple[str, ...], name: str) -> bool:
    """Does ``name`` match ``parts`` joined by ``*``?"""
    first, last = parts[0], parts[-1]
    if len(parts) == 1:
        return name == first
    end = len(name) - len(last)
    if end < len(first) or not name.startswith(first) or not name.endswith(last):
        return False
    at = len(first)
    for part in parts[1:-1]:
        at = name.find(part, at, end)
        if at < 0:
            return False
        at += len(part)
    return True


def _compile(full: str, delimiter: str, lists_levels: bool) -> ListPattern:
    out: list[str] = []
    run = ""  # the wildcards since the last literal character
    literals = 0
    for ch in full:
        if ch in "*%":
            run = "*" if "*" in (ch, run) else "%"
            continue
        if run:
            out.append(run)
            run = ""
        out.append(ch)
        literals += 1
    if run:
        out.append(run)
    text = "".join(out)
    by_level = None
    if "%" in text and "*" not in text:
        by_level = tuple(tuple(level.split("%")) for level in text.split(delimiter))
    parts = tuple(text.replace("%", "*").split("*"))
    return ListPattern(text, delimiter, parts, literals, by_level, lists_levels)


def compile_patterns(
    reference: str, patterns: Iterable[str], delimiter: str
) -> tuple[ListPattern, ...]:
    """The distinct canonical patterns of one LIST, in the client's order.

    The canonical pattern is the reference followed by the pattern (RFC 3501
    §6.3.8; refd names no mailbox with a reference of its own).
    """
    seen: dict[tuple[str, bool], ListPattern] = {}
    for pattern in patterns:
        compiled = _compile(reference + pattern, delimiter, pattern.endswith("%"))
        seen.setdefault((compiled.text, compiled.lists_levels), compiled)
    return tuple(seen.values())


def select(
    patterns: Sequence[ListPattern], names: Iterable[str], *, step: int
) -> Iterator[list[str]]:
    """The names that match at least one pattern, each once, in ``names`` order.

    A name is tested against the patterns until one matches, so it costs at
    most ``len(patterns)`` tests.  Yields lists of matched names (possibly
    empty), one at the end and one each time the work since the last one
    reaches ``step``: a test costs the length of the name (what bounds it:
    a pattern with more literal characters is refused at once), a match
    more (the caller writes its answer line).
    """
    found: list[str] = []
    work = 0
    for name in names:
        size = len(name) + 1
        for pattern in patterns:
            work += size
            if pattern.matches(name):
                found.append(name)
                work += 16 * size  # its answer line costs more than a test
                break
        if work >= step:
            yield found
            found, work = [], 0
    yield found


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """The hierarchy levels above a set of names (RFC 3501 §6.3.8)."""

    #: levels that are not names themselves, in order of first appearance
    parents: tuple[str, ...]
    #: names and levels that have at least one name below them
    with_children: frozenset[str]


def hierarchy(names: Sequence[str], delimiter: str) -> Hierarchy:
    """Which levels exist only above ``names``, and which have children."""
    present = set(names)
    parents: list[str] = []
    with_children: set[str] = set()
    for name in names:
        new: list[str] = []
        end = name.rfind(delimiter)
        while end > 0:
            parent = name[:end]
            if parent in with_children:
                break  # it and every level above it are known
            with_children.add(parent)
            if parent not in present:
                present.add(parent)
                new.append(parent)
            end = name.rfind(delimiter, 0, end)
        parents.extend(reversed(new))  # top level first
    return Hierarchy(tuple(parents), frozenset(with_children))
