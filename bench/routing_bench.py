"""Routing table load time, memory and lookup speed, in one fresh process.

    PYTHONPATH=. python bench/routing_bench.py exact N DIR
    PYTHONPATH=. python bench/routing_bench.py patterns N DIR
    PYTHONPATH=. python bench/routing_bench.py globs N DIR
    PYTHONPATH=. python bench/routing_bench.py reload N DIR

``exact``: a table whose ``user_map`` file has N users (``uNNNNNNN@dNNN.example.org
mailK``, 10 servers). ``patterns``: a table with N ``users:`` rules, half globs
(``*@gNNNNN.example.org``) and half regexes (``^rNNNNN\\.[a-z]+@corp\\.example$``),
interleaved, then a default. ``globs``: N rules ``*@gNNNNN.example.org`` (the
domain index), then a default. All are loaded with ``refd.config.load_routing``
(exactly what the daemon does), then ``RoutingTable.route_user`` is timed
on random users. Prints one JSON line.

Memory: RSS of this process after loading minus before (after a
``gc.collect()``), and the peak RSS during the load (``ru_maxrss``).

``reload``: the ``exact`` table loaded the way the daemon reloads it
(``load_routing`` in a thread with the reload switch interval, the new table
swapped in and the old one's user map freed by the daemon's retiring
thread, shard by shard) three times, while the event
loop bounces a byte over a socketpair (two syscalls and a wake-up per round
trip, like a NOOP). Reports the longest gap between two round trips, during
the reloads and for the same time without; the in-process view of the
harness's NOOP probe (``bench/harness.py``, part 4).
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import socket
import sys
import time
from functools import partial
from pathlib import Path

import trio

from refd.config.loader import load_routing
from refd.daemon import _in_thread, retirer

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


SERVERS = "".join(f"  mail{i}: {{host: mail{i}.example.org}}\n" for i in range(1, 11))


def write_exact(d: Path, n: int) -> Path:
    umap = d / f"exact-{n}.map"
    if not umap.exists():
        with umap.open("w") as f:
            for i in range(n):
                f.write(f"u{i:07d}@d{i % 1000:03d}.example.org mail{1 + i % 10}\n")
    routing = d / f"exact-{n}.yaml"
    routing.write_text(f"version: 1\nservers:\n{SERVERS}user_map: {umap.name}\n")
    return routing


def write_patterns(d: Path, n: int) -> Path:
    routing = d / f"patterns-{n}.yaml"
    parts = [f"version: 1\nservers:\n{SERVERS}users:\n"]
    for i in range(n):
        if i % 2 == 0:
            parts.append(f'  - glob: "*@g{i:05d}.example.org"\n    server: mail{1 + i % 10}\n')
        else:
            parts.append(
                f'  - regex: "^r{i:05d}\\\\.[a-z]+@corp\\\\.example$"\n    server: mail{1 + i % 10}\n'
            )
    parts.append("  - default: true\n    server: mail1\n")
    routing.write_text("".join(parts))
    return routing


def write_globs(d: Path, n: int) -> Path:
    routing = d / f"globs-{n}.yaml"
    parts = [f"version: 1\nservers:\n{SERVERS}users:\n"]
    for i in range(n):
        parts.append(f'  - glob: "*@g{i:05d}.example.org"\n    server: mail{1 + i % 10}\n')
    parts.append("  - default: true\n    server: mail1\n")
    routing.write_text("".join(parts))
    return routing


def reload_stall(path: Path, reloads: int = 3) -> dict[str, object]:
    """Longest event-loop gap (ms) with and without reloads of ``path``."""
    tables = [load_routing(path)]  # in service; each reload replaces it

    async def bounce(gaps: list[float], stop: trio.Event) -> None:
        a, b = socket.socketpair()
        with a, b:
            sa, sb = trio.socket.from_stdlib_socket(a), trio.socket.from_stdlib_socket(b)
            last = time.perf_counter()
            while not stop.is_set():
                await sa.send(b"x")
                await sb.recv(1)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

    async def phase(waits: list[float]) -> dict[str, object]:
        """Reload ``reloads`` times, or (``waits``) sleep as long as each reload took."""
        gaps: list[float] = []
        stop = trio.Event()
        walls = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bounce, gaps, stop)
            await trio.sleep(0.3)
            for i in range(reloads):
                t = time.perf_counter()
                if waits:
                    await trio.sleep(waits[i])
                else:
                    # as Daemon.reload does it: the load in a thread with the
                    # reload switch interval, the old table's user map freed
                    # off the event loop (refd.daemon.Retirer)
                    old = tables[0]
                    tables[0] = await _in_thread(partial(load_routing, path))
                    retirer.retire(old)
                    del old
                walls.append(time.perf_counter() - t)
                await trio.sleep(0.3)
            while retirer.pending:  # the retired maps are freed within the phase
                await trio.sleep(0.1)
            stop.set()
        gaps.sort()
        return {
            "gap_max_ms": round(gaps[-1] * 1000, 1),
            "gap_p999_ms": round(gaps[int(len(gaps) * 0.999)] * 1000, 2),
            "round_trips": len(gaps),
            "wall_s": [round(w, 2) for w in walls],
        }

    during = trio.run(phase, [])
    before = trio.run(phase, during["wall_s"])
    return {"baseline": before, "reload": during}


def timed_lookups(route, users: list[str]) -> float:  # type: ignore[no-untyped-def]
    """Seconds per lookup (best of 3 passes)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for u in users:
            route(u)
        best = min(best, (time.perf_counter() - t) / len(users))
    return best


def main() -> None:
    kind, n, d = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    d.mkdir(parents=True, exist_ok=True)
    if kind == "reload":
        print(json.dumps({"kind": kind, "n": n, **reload_stall(write_exact(d, n))}))
        return
    write = {"exact": write_exact, "patterns": write_patterns, "globs": write_globs}[kind]
    path = write(d, n)
    size = path.stat().st_size
    if kind == "exact":
        size += (d / f"exact-{n}.map").stat().st_size
    gc.collect()
    rss0 = rss()
    t = time.perf_counter()
    table = load_routing(path)
    load_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gc.collect()
    rss1 = rss()
    rng = random.Random(7)
    out: dict[str, object] = {
        "kind": kind, "n": n, "file_mib": round(size / 2**20, 1), "load_s": round(load_s, 3),
        "table_mib": round((rss1 - rss0) / 2**20, 1), "peak_rss_mib": round(peak / 2**20, 1),
        "bytes_per_entry": round((rss1 - rss0) / n),
    }  # fmt: skip
    route = table.route_user
    if kind == "exact":
        users = [f"u{i:07d}@d{i % 1000:03d}.example.org" for i in rng.choices(range(n), k=200_000)]
        assert all(route(u) is not None for u in users[:1000])
        per = timed_lookups(route, users)
        out["lookup_us"] = round(per * 1e6, 3)
        out["lookups_per_s"] = round(1 / per)
        # with an upper-case domain (normalised before the lookup)
        upper = [u.upper().replace("U", "u", 1) for u in users[:50_000]]
        out["lookup_upper_domain_us"] = round(timed_lookups(route, upper) * 1e6, 3)
        out["miss_us"] = round(timed_lookups(route, ["nobody@nowhere.example"] * 50_000) * 1e6, 3)
        out["login_referral_us"] = round(
            timed_lookups(table.login_referral, users[:50_000]) * 1e6, 3
        )
        # The floor under a lookup on this machine: one dict.get in a plain
        # dict of the same 1M keys, the probe's hash already cached, no call
        # of refd's. What is above it is route_user's own work.
        plain = dict.fromkeys(table.user_map, "")
        out["dict_get_us"] = round(timed_lookups(plain.get, users) * 1e6, 3)
        del plain
    elif kind == "globs":
        idx = rng.choices(range(n), k=20_000)  # a linear scan (before the index) takes ms each
        users = [f"x{i}@g{i:05d}.example.org" for i in idx]
        for i in idx[:20]:
            r = route(f"x@g{i:05d}.example.org")
            assert r is not None and r.rule.startswith(f"users[{i + 1}] "), (i, r)
        per = timed_lookups(route, users)
        out["lookup_us"] = round(per * 1e6, 3)
        out["lookups_per_s"] = round(1 / per)
        out["default_rule_us"] = round(
            timed_lookups(route, ["nobody@nowhere.example"] * 2_000) * 1e6, 3
        )
    else:

        def user_for(i: int) -> str:
            return f"x@g{i:05d}.example.org" if i % 2 == 0 else f"r{i:05d}.abc@corp.example"

        idx = rng.choices(range(n), k=max(200, 2_000_000 // n))
        users = [user_for(i) for i in idx]
        for i in idx[:20]:
            r = route(user_for(i))
            assert r is not None and r.rule.startswith(f"users[{i + 1}] "), (i, r)
        per = timed_lookups(route, users)
        out["lookup_us"] = round(per * 1e6, 2)
        out["lookups_per_s"] = round(1 / per)
        out["first_rule_us"] = round(timed_lookups(route, [user_for(0)] * 20_000) * 1e6, 3)
        last = ["nobody@nowhere.example"] * max(20, 200_000 // n)
        out["default_rule_us"] = round(timed_lookups(route, last) * 1e6, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
