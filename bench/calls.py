"""refd's Python function calls per session, under cProfile: a cost that steal does not move.

    python bench/calls.py                          # PLAIN, this checkout
    python bench/calls.py --flow tls base=/tmp/base new=.

On this VM the CPU time per session moves by ±15 % from one 4-second cell to
the next (the host's steal), so a change worth 2 % cannot be seen in
``ab.py``'s medians.  The number of Python function calls a session makes
hardly depends on the host, so this counts them.  It is not exact either:
it moves by a few % between runs of one tree, with how often a read finds
its data already there and how many sessions share a pass of trio's
scheduler.

Each NAME=DIR (default: this checkout) is a directory holding a ``refd/``
package (``git archive <commit> refd | tar -x -C DIR`` for a commit).  Per
tree, refd (``workers: 1``, bench/servers.py's config) runs twice under
``python -m cProfile``: once without load, once while the load generator
``bench/run`` builds drives ``--seconds`` of sessions of the flow at c=16;
each time it is stopped with SIGTERM, so cProfile writes its statistics.

Printed per tree: sessions, Python calls per session (the run with load less
one without: start-up and shutdown do not count), the same by
package (refd's modules, trio, logging, prometheus_client, the standard
library, C builtins), and the functions with the most calls per session.
cProfile slows refd down about threefold, so its times are not shown:
count calls here, and measure time with ``ab.py``.
"""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import harness as H
import servers as S

Key = tuple[str, int, str]


def _group(filename: str) -> str:
    """The package a profiled function belongs to, for the table by package."""
    if filename == "~":
        return "C builtins"
    if "/refd/" in filename:
        return "refd/" + filename.rsplit("/refd/", 1)[1]
    for name in ("trio", "prometheus_client", "logging", "outcome"):
        if f"/{name}/" in filename:
            return name
    return "standard library and other"


def _calls(stats_file: Path) -> Counter[Key]:
    """Calls of each function in one cProfile statistics file."""
    stats = pstats.Stats(str(stats_file))
    return Counter({key: value[1] for key, value in stats.stats.items()})  # type: ignore[attr-defined]


def per_session(
    loaded: Counter[Key], idle: Counter[Key], sessions: int
) -> tuple[float, Counter[str], Counter[str]]:  # Counter of floats: most_common() sorts them
    """Calls per session in all, by package and by function: the loaded run less the idle one."""
    by_group: dict[str, float] = defaultdict(float)
    by_function: dict[str, float] = defaultdict(float)
    for (filename, line, name), n in (loaded - idle).items():
        by_group[_group(filename)] += n / sessions
        where = filename.rsplit("site-packages/", 1)[-1].rsplit("/refd/", 1)[-1]
        by_function[f"{name} ({where}:{line})"] += n / sessions
    return sum(by_group.values()), Counter(by_group), Counter(by_function)


def profiled_run(
    name: str, src: Path, work: Path, fx: S.Fixture, routing: Path, load: Callable[[S.Refd], int]
) -> tuple[Counter[Key], int]:
    """refd from ``src`` under cProfile: ``load(refd)`` (sessions run), then SIGTERM."""
    stats_file = work / f"{name}.prof"
    wrapper = work / f"python-{name}"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cProfile -o "{stats_file}" "$@"\n')
    wrapper.chmod(0o755)
    S.SOURCE["path"] = src
    srv = S.start_refd(str(wrapper), fx, work / name, workers=1, routing=routing)
    try:
        sessions = load(srv)
    finally:
        S.stop_for_stats(srv, 30)
    if not stats_file.exists():
        raise SystemExit(f"{name}: cProfile wrote nothing (refd did not exit cleanly)")
    return _calls(stats_file), sessions


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="*", metavar="NAME=DIR", default=[f"this={H.REPO}"])
    p.add_argument("--flow", choices=("plain", "tls", "mailbox", "sha"), default="plain")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--conc", type=int, default=16)
    p.add_argument("--top", type=int, default=15, help="functions listed per tree")
    H.add_tree_options(p)
    args = p.parse_args()
    trees = [H.source_tree(tree) for tree in args.trees]  # refused before any work
    work, fx, routing = H.tree_fixture("refd-calls-")
    gen = H.LoadGen(args.loadgen, 1)
    w = args.seconds
    prof = H.Profile("calls", w, 0.0, w + 20, 2.0, 1, 10, 1000, 1, 1, 1, 3.0)

    def sessions_of(srv: S.Refd) -> int:
        o = H.flow_options(args.flow, "refd", prof, fx.nusers)
        o.update(conc=args.conc)
        port = srv.tls_port if args.flow == "tls" else srv.port
        out = subprocess.run(gen.command(port, **o), stdout=subprocess.PIPE, check=True)  # noqa: S603
        return int(json.loads(out.stdout.decode().strip().splitlines()[-1])["completed"])

    for name, src in trees:
        idle, _ = profiled_run(f"{name}-idle", src, work, fx, routing, lambda srv: 0)
        loaded, sessions = profiled_run(name, src, work, fx, routing, sessions_of)
        total, by_group, by_function = per_session(loaded, idle, sessions)
        print(f"\n{name} ({src}), {args.flow}: {sessions} sessions, {total:,.0f} calls per session")
        for group, n in by_group.most_common():
            print(f"  {n:8.1f}  {group}")
        print(f"  the {args.top} functions with the most calls per session:")
        for function, n in by_function.most_common(args.top):
            print(f"  {n:8.1f}  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
