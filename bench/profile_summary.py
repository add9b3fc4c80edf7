"""Summarise a py-spy ``--format raw`` (collapsed stacks) profile.

    python bench/profile_summary.py PROFILE.txt [--top 25] [--focus refd/]

Prints the share of samples per function *inclusive* (on the stack) and
*self* (the leaf), with line numbers folded away, so hot spots in refd and
in the libraries it calls stand out. ``--focus`` keeps, for the "self" view,
the innermost frame whose file contains the text (e.g. ``refd/``), which
charges library time to the refd line that called it.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

# Leaf frames are charged to the first category whose pattern is in the frame's file.
CATEGORIES = (
    ("logging", ("logging/",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("TLS (ssl, trio SSLStream)", ("ssl.py", "trio/_ssl")),
    (
        "sockets (trio socket wrappers, syscalls)",
        ("trio/_socket", "trio/_highlevel_socket", "socket.py", "trio/_highlevel_open"),
    ),
    (
        "trio scheduler, cancel scopes, threads",
        ("trio/", "outcome", "contextlib", "threading", "sniffio"),
    ),
    ("password hashing (bcrypt, crypt)", ("bcrypt", "refd/auth/schemes")),
    ("refd protocol (parse, encode)", ("refd/protocol",)),
    ("refd routing", ("refd/routing",)),
    ("refd session, server, limits", ("refd/",)),
    ("stdlib ipaddress", ("ipaddress",)),
)

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['func']} ({file})"


def analyse(path: Path, top: int = 25, focus: str | None = "refd/") -> dict[str, Any]:
    """Sample counts: total, and (name, share %) lists per view, largest first."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    focused: Counter[str] = Counter()
    category: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        names = [_name(f) for f in frames]
        for name in set(names):
            inclusive[name] += count
        if names:
            leaf[names[-1]] += count
            where = frames[-1]
            category[next((c for c, pats in CATEGORIES if any(p in where for p in pats)),
                          "other")] += count  # fmt: skip
        if focus:
            chosen = next((n for f, n in zip(reversed(frames), reversed(names), strict=True)
                           if focus in f), names[-1] if names else "?")  # fmt: skip
            focused[chosen] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(n, round(100 * c / max(total, 1), 1)) for n, c in counter.most_common(top)]

    return {
        "samples": total,
        "categories": share(category),
        "inclusive": share(inclusive),
        "self": share(leaf),
        "self_in_focus": share(focused) if focus else [],
    }


def summarise(path: Path, top: int, focus: str | None) -> str:
    a = analyse(path, top, focus)
    out = [f"{a['samples']} samples"]
    views = [
        ("self time by category (leaf frame's module)", "categories"),
        ("inclusive (on the stack)", "inclusive"),
        ("self (leaf frame)", "self"),
    ]
    if focus:
        views.append((f"self, charged to the innermost frame in {focus!r}", "self_in_focus"))
    for title, key in views:
        out.append(f"\n{title}")
        out.extend(f"{pct:6.1f}%  {name}" for name, pct in a[key])
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--focus")
    a = p.parse_args()
    print(summarise(a.profile, a.top, a.focus))


if __name__ == "__main__":
    main()
