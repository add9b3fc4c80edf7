"""LIST pattern matching (RFC 3501 §6.3.8), pure and bounded in time.

``*`` matches any text, ``%`` any text without the hierarchy delimiter.
"""

from __future__ import annotations

__all__ = ["list_match"]


def list_match(pattern: str, name: str, delimiter: str) -> bool:
    """Does a LIST pattern match ``name``?  ``*`` any text, ``%`` any but the delimiter.

    RFC 3501 §6.3.8.  A set of reachable positions in ``name`` is carried
    through the pattern, so the time is bounded by len(pattern) * len(name)
    whatever the client sends (a regex would backtrack exponentially on a
    pattern such as ``**********x``).
    """
    end = len(name)
    positions = {0}
    previous = ""
    for ch in pattern:
        if not positions:
            return False
        if ch == "*":
            if previous != "*":
                positions = set(range(min(positions), end + 1))
        elif ch == "%":
            if previous not in ("%", "*"):
                reach = set()
                for start in sorted(positions):
                    p = start
                    if p in reach:
                        continue
                    reach.add(p)
                    while p < end and name[p] != delimiter:
                        p += 1
                        reach.add(p)
                positions = reach
        else:
            positions = {p + 1 for p in positions if p < end and name[p] == ch}
        previous = ch
    return end in positions
