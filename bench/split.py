"""Where each server's CPU per session goes, by process and thread: refd against Dovecot.

    python bench/split.py --flow sha --conc 1          # SHA512-CRYPT logins, one at a time
    python bench/split.py --flow plain --conc 64 this=.

Dovecot, refd with ``workers: 2`` and refd with ``workers: 1`` (bench/servers.py's
configs, the tree's refd) take turns cell by cell, so the machine's other
load falls on all of them alike.  For every cell: the rate, p50 and p99,
the CPU per session of all the server's processes (as RESULTS.md's
``µs/sess``), and that CPU split by thread (``/proc/PID/task/TID/stat``): for
Dovecot its processes (``imap-login``, ``auth``, ``log``, ...), for refd its
supervisor, its event loops and its other threads (the hashing pool).  Then
each server's medians.

What it answers: whether a difference between the servers is in the
password hash (the same libxcrypt call in both: Dovecot's ``auth``, refd's
hashing threads) or in the work around it (the login processes,
refd's event loops).  See bench/NOTES.md, "The hash tails at c=1".
About 10 s a cell with the defaults (three servers, three rounds: 1.5
min); needs the load generator `bench/run` builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Iterable

import harness as H
import servers as S

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pids: Iterable[int]) -> dict[tuple[int, int, str], float]:
    """CPU seconds of every thread of ``pids``, by (pid, tid, thread name)."""
    out: dict[tuple[int, int, str], float] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
            except FileNotFoundError:
                continue
            fields = rest.split()
            name = head.partition("(")[2]
            out[(pid, int(tid), name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def _role(key: tuple[int, int, str], main_pid: int, workers: int) -> str:
    """A thread's part: Dovecot's process name; refd's supervisor, event loops or threads.

    Python 3.11 does not name the OS threads: refd's other threads are its
    hashing pool's (``refd.auth.hash_threads``), and trio's worker threads
    if any ran.
    """
    pid, tid, name = key
    if workers == 0:  # Dovecot: its processes name themselves
        return name
    if tid != pid:
        return "threads"
    return "supervisor" if pid == main_pid and workers > 1 else "event loops"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tree", nargs="?", default="this=.", metavar="NAME=DIR")
    p.add_argument("--flow", choices=("plain", "sha", "blf", "tls"), default="sha")
    p.add_argument("--conc", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=5.0, help="seconds measured per cell")
    H.add_tree_options(p)
    args = p.parse_args()
    _, src = H.source_tree(args.tree)
    dovecot = S.find_dovecot()
    if dovecot is None:
        p.error("no dovecot binary (bench/run installs dovecot-imapd)")
    work, fx, routing = H.tree_fixture("refd-split-")
    work.chmod(0o755)  # Dovecot's auth reads the fixture as its own user
    gen = H.LoadGen(args.loadgen, 1)
    w = args.window
    prof = H.Profile("split", w, 0.5, w * 4, 2.0, 20, 10, 1000, 1, 1, 1, 3.0)
    servers: dict[str, S.Refd | S.Server] = {}
    try:
        servers["dovecot"] = S.start_dovecot(dovecot, fx, work / "dovecot", cores=2)
        S.SOURCE["path"] = src
        for workers in (2, 1):
            servers[f"refd-w{workers}"] = S.start_refd(
                sys.executable, fx, work / f"refd-w{workers}", workers=workers, routing=routing
            )
        cells: dict[str, list[H.Cell]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, srv in servers.items():
                o = H.flow_options(args.flow, name, prof, fx.nusers)
                port = srv.tls_port if args.flow == "tls" else srv.port
                before = thread_cpu(srv.pids())
                cell = gen.run_cell(H.Cell(name, args.flow, args.conc), port, srv.pids, **o)
                after = thread_cpu(srv.pids())
                cells[name].append(cell)
                sessions = cell.rate * cell.elapsed_s
                if cell.p50_ms is None or not sessions:
                    print(f"{name:10} no sessions: {cell.errors} {cell.first_bad}", flush=True)
                    continue
                parts: dict[str, float] = {}
                for key, seconds in after.items():
                    role = _role(key, srv.pid, getattr(srv, "workers", 0))
                    parts[role] = parts.get(role, 0.0) + seconds - before.get(key, 0.0)
                split = "  ".join(
                    f"{role} {1e6 * s / sessions:.0f}"
                    for role, s in sorted(parts.items(), key=lambda kv: -kv[1])
                    if s > 0
                )
                print(
                    f"{name:10} {cell.rate:8.1f}/s"
                    f"  p50 {cell.p50_ms:7.2f}  p99 {cell.p99_ms:7.2f} ms"
                    f"  {cell.server_cpu_us_per_session or 0:6.0f} us/sess"
                    f"  other {cell.other_cpu_pct:3.0f}%  | {split}",
                    flush=True,
                )
        for name, done in cells.items():
            ok = [c for c in done if c.p50_ms is not None]
            if not ok:
                continue
            print(
                f"{name}: median p50 {statistics.median(c.p50_ms or 0 for c in ok):.2f} ms,"
                f" p99 {statistics.median(c.p99_ms or 0 for c in ok):.2f} ms,"
                f" {statistics.median(c.server_cpu_us_per_session or 0 for c in ok):.0f} us/sess"
            )
    finally:
        for srv in servers.values():
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
