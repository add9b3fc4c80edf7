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

Each NAME=DIR (default: this checkout) is a directory holding a ``refd/``
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
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness as H
import servers as S

WARM_UP_SESSIONS = 200


def total_instructions(callgrind_out: Path) -> int:
    """The ``totals:`` line callgrind writes at the end of its output."""
    for line in callgrind_out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"{callgrind_out}: no totals line (did the server exit cleanly?)")


def valgrind_python(work: Path, name: str, python: str) -> tuple[Path, Path]:
    """A wrapper that runs ``python`` under callgrind with counting off; and its output file."""
    out = work / f"{name}.callgrind"
    wrapper = work / f"python-{name}"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="{out}" '
        f'"{python}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, out


def count(
    srv: S.Server | S.Refd, out: Path, gen: H.LoadGen, port: int, o: dict[str, Any], sessions: int
) -> tuple[int, int]:
    """Instructions ``srv`` (one process, started through `valgrind_python`) executes while
    ``sessions`` sessions of the load generator's options ``o`` run, after 200 to warm up;
    and how many sessions completed.  Stops the server (SIGTERM: callgrind writes then)."""
    try:
        subprocess.run(gen.command(port, **o, max_sessions=WARM_UP_SESSIONS),  # noqa: S603
                       stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        control = ["callgrind_control", "--instr=on", str(srv.proc.pid)]
        subprocess.run(control, capture_output=True, check=True)  # noqa: S603
        done = subprocess.run(gen.command(port, **o, max_sessions=sessions),  # noqa: S603
                              stdout=subprocess.PIPE, check=True)  # fmt: skip
        control[1] = "--instr=off"
        subprocess.run(control, capture_output=True, check=True)  # noqa: S603
        completed = int(json.loads(done.stdout.decode().strip().splitlines()[-1])["completed"])
    finally:
        S.stop_for_stats(srv, 300)  # callgrind writes its totals as the server exits
    return total_instructions(out), completed


def load_options(flow: str, nusers: int, conc: int) -> dict[str, Any]:
    """The load generator's options for counted sessions of ``flow`` at ``conc``."""
    prof = H.Profile("instructions", 600, 0.0, 600, 5.0, 1, 10, 1000, 1, 1, 1, 3.0)
    o = H.flow_options(flow, "refd", prof, nusers)
    o.update(conc=conc, timeout=600)
    return o


def have_valgrind() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="*", metavar="NAME=DIR", default=[f"this={H.REPO}"])
    p.add_argument("--flow", choices=("plain", "tls", "mailbox", "sha"), default="plain")
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--conc", type=int, default=16)
    H.add_tree_options(p)
    args = p.parse_args()
    trees = [H.source_tree(tree) for tree in args.trees]  # refused before any work
    if not have_valgrind():
        raise SystemExit("needs valgrind and callgrind_control (Debian: apt-get install valgrind)")
    work, fx, routing = H.tree_fixture("refd-instructions-")
    gen = H.LoadGen(args.loadgen, 1)
    o = load_options(args.flow, fx.nusers, args.conc)
    for name, src in trees:
        wrapper, out = valgrind_python(work, name, sys.executable)
        S.SOURCE["path"] = src
        srv = S.start_refd(str(wrapper), fx, work / name, workers=1, routing=routing)
        port = srv.tls_port if args.flow == "tls" else srv.port
        total, sessions = count(srv, out, gen, port, o, args.sessions)
        print(
            f"{name} ({src}), {args.flow}, c={args.conc}: {total / sessions:,.0f} instructions "
            f"per session ({total:,} for {sessions} sessions)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
