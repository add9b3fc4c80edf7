"""refd's instructions per session, counted by valgrind's callgrind: a cost the host does not move.

    python bench/instructions.py                          # PLAIN, this checkout
    python bench/instructions.py base=/tmp/base new=.     # two trees
    python bench/instructions.py --flow tls --sessions 500 base=/tmp/base new=.

``bench/ab.py`` measures CPU time per session, which moves by +-15 % from
cell to cell on this VM (the host's steal), so a change worth 5 % needs
many rounds to show.  ``bench/calls.py`` counts Python calls, which says
nothing of what each call costs.  This counts the user-space instructions
(callgrind's ``Ir``) that refd executes while the load generator runs
``--sessions`` sessions at ``--conc``: the same tree gives the same count
within about 1 % from run to run, whatever else the machine does.  Kernel
time (the socket calls' work, ~15 % of a PLAIN session's CPU) is not
counted, nor the cache misses that make an instruction cost more under
load: judge a change by this count, and the time it saves by ``ab.py``.

Each NAME=DIR (default ``this=.``) is a directory holding a ``refd/``
package (``git archive <commit> refd | tar -x -C DIR`` for a commit).  Per
tree, refd (``workers: 1``, bench/servers.py's config) starts under
``valgrind --tool=callgrind`` with counting off, serves 200 sessions to
warm up, counts from then until the load generator is done, and is stopped
with SIGTERM so callgrind writes its totals.  About 40 s per tree for
2,000 PLAIN sessions.  Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import harness as H
import servers as S

WARM_UP_SESSIONS = 200


def total_instructions(callgrind_out: Path) -> int:
    """The ``totals:`` line callgrind writes at the end of its output."""
    for line in callgrind_out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"{callgrind_out}: no totals line (did refd exit cleanly?)")


def counted_run(
    name: str, src: str, work: Path, fx: S.Fixture, routing: Path, args: argparse.Namespace
) -> tuple[int, int]:
    """Instructions refd from ``src`` executed while it served the counted sessions, and how many."""
    out = work / f"{name}.callgrind"
    wrapper = work / f"python-{name}"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="{out}" '
        f'"{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    S.SOURCE["path"] = Path(src).resolve()
    srv = S.start_refd(str(wrapper), fx, work / name, workers=1, routing=routing)
    gen = H.LoadGen(args.loadgen, 1)
    prof = H.Profile("instructions", 600, 0.0, 600, 5.0, 1, 10, 1000, 1, 1, 1, 3.0)
    o = H.flow_options(args.flow, "refd", prof, fx.nusers)
    o.update(conc=args.conc, timeout=600)
    port = srv.tls_port if args.flow == "tls" else srv.port
    try:
        subprocess.run(gen.command(port, **o, max_sessions=WARM_UP_SESSIONS),  # noqa: S603
                       stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        control = ["callgrind_control", "--instr=on", str(srv.proc.pid)]
        subprocess.run(control, capture_output=True, check=True)  # noqa: S603
        done = subprocess.run(gen.command(port, **o, max_sessions=args.sessions),  # noqa: S603
                              stdout=subprocess.PIPE, check=True)  # fmt: skip
        control[1] = "--instr=off"
        subprocess.run(control, capture_output=True, check=True)  # noqa: S603
        sessions = int(json.loads(done.stdout.decode().strip().splitlines()[-1])["completed"])
    finally:
        os.kill(srv.proc.pid, signal.SIGTERM)
        try:
            srv.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            srv.stop()
    return total_instructions(out), sessions


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="*", metavar="NAME=DIR", default=["this=."])
    p.add_argument("--flow", choices=("plain", "tls", "mailbox", "sha"), default="plain")
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--conc", type=int, default=16)
    H.add_tree_options(p)
    args = p.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind and callgrind_control (Debian: apt-get install valgrind)")
    work, fx, routing = H.tree_fixture("refd-instructions-")
    for tree in args.trees:
        name, _, src = tree.partition("=")
        total, sessions = counted_run(name, src, work, fx, routing, args)
        print(
            f"{name} ({src}), {args.flow}, c={args.conc}: {total / sessions:,.0f} instructions "
            f"per session ({total:,} for {sessions} sessions)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
