"""refd against refd: CPU per PLAIN session of two (or more) source trees, interleaved.

    python bench/ab.py --rounds 4 --window 4 base=/tmp/base new=.
    python bench/ab.py --flow tls base=/tmp/base new=.   # PLAIN over implicit TLS
    python bench/ab.py --floor this=.    # and trio alone (bench/floor_server.py)

Each NAME=DIR is a directory holding a ``refd/`` package (``git archive
<commit> refd | tar -x -C DIR`` for a commit, ``.`` for this checkout).
One refd per tree (``workers: 1``, or ``--workers N``; bench/servers.py's config) runs PLAIN
login referrals (``--flow tls``: over implicit TLS, the bench certificate)
at c=64 from the load generator ``bench/run`` builds; the
trees take turns cell by cell, so the machine's other load falls on all
of them alike.  Prints per cell the rate, refd's CPU per session (from
/proc, as RESULTS.md's ``µs/sess``), ``other %`` (busy CPU that is neither
refd nor the generator) and the load average; then each tree's median.
About 40 s for two trees, 4 rounds of 4 s.  ``--floor`` adds a cell per
round for `floor_server.py`, the same bytes from the leanest trio server: what no work of
refd's can remove from a session (PLAIN only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import harness as H
import servers as S


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="+", metavar="NAME=DIR")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--window", type=float, default=4.0, help="seconds measured per cell")
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--flow", choices=("plain", "tls"), default="plain")
    p.add_argument("--workers", type=int, default=1, help="refd workers (CPU summed over all)")
    p.add_argument("--floor", action="store_true", help="also trio alone (floor_server.py)")
    H.add_tree_options(p)
    args = p.parse_args()
    trees = [H.source_tree(tree) for tree in args.trees]  # refused before any work
    if args.floor and args.flow != "plain":
        p.error("--floor serves PLAIN only")
    work, fx, routing = H.tree_fixture("refd-ab-")
    gen = H.LoadGen(args.loadgen, 1)
    w = args.window
    prof = H.Profile("ab", w, 0.5, w * 4, 2.0, 20, 10, 1000, 1, 1, 1, 3.0)
    servers: dict[str, S.Refd | S.Server] = {}
    try:
        for name, src in trees:
            S.SOURCE["path"] = src
            servers[name] = S.start_refd(sys.executable, fx, work / name, workers=args.workers,
                                         routing=routing)  # fmt: skip
        if args.floor:
            servers["floor"] = S.start_floor(sys.executable, fx, work / "floor",
                                             processes=args.workers)  # fmt: skip
        per_session: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, srv in servers.items():
                o = H.flow_options(args.flow, "refd", prof, fx.nusers)
                port = srv.tls_port if args.flow == "tls" else srv.port
                cell = gen.run_cell(H.Cell(name, args.flow, args.conc), port, srv.pids, **o)
                us = cell.server_cpu_us_per_session or 0.0
                per_session[name].append(us)
                print(
                    f"{name:8} {cell.rate:7.1f}/s  {us:6.0f} us/sess"
                    f"  srv={cell.server_cpu_pct:3.0f}%  other={cell.other_cpu_pct:3.0f}%"
                    f"  err={cell.error_count}"
                    f"  load={os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        for name, values in per_session.items():
            print(f"{name}: median {statistics.median(values):.0f} us/sess, min {min(values):.0f}")
    finally:
        for srv in servers.values():
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
