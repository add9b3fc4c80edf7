"""refd vs Dovecot, side by side in one run: see bench/README.md.

Run through ``bench/run`` (which builds the load generator and picks a
Python that can import refd); ``bench/run --help`` lists the options.

Parts, in order (each can be skipped):

1. throughput: login-referral sessions per second and p50/p99 latency at
   concurrency 1, 16, 64, 256 for PLAIN, SHA512-CRYPT, BLF-CRYPT (cost 10),
   PLAIN over implicit TLS with an RSA-2048 and with an ECDSA P-256
   certificate, and the mailbox flow; Dovecot, refd with
   ``workers: nproc`` and refd with ``workers: 1`` all run at once, and each
   cell is measured on the three back to back, so background load hits all
   three alike;
2. idle memory: RSS per idle pre-login connection at N connections,
   plaintext and TLS, each on a freshly started server;
3. routing: load time, memory and lookups per second for a 1,000,000-user
   ``user_map`` and for 10,000 pattern rules (``bench/routing_bench.py``);
4. reload: the longest gap between NOOP responses while a 1M-user table is
   reloaded (SIGHUP) under login load, against a baseline without reloads;
5. ldap: login referrals with the users in one private slapd (1,000 entries,
   {SSHA}, mailHost): refd's ``ldap`` source in bind mode and Dovecot's
   passdb ldap with ``auth_bind`` against the same slapd, cell by cell back
   to back; then refd's cached route lookup (``bench/ldap_bench.py``).

Writes ``RESULTS.md`` (or ``--out``) and ``results.json`` beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers as S

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

CONCURRENCY = (1, 16, 64, 256)
# Flow titles and the targets live in report.py (the one home for them).
FLOWS = ("plain", "sha", "blf", "tls", "tls-ecdsa", "mailbox")
#: The implicit-TLS flows and the certificate (servers.CERT_KINDS) each serves.
#: refd has one certificate per process and Dovecot one per instance here, so
#: the ECDSA cell runs on a second instance of each server, configured alike.
TLS_FLOWS = {"tls": "rsa", "tls-ecdsa": "ecdsa"}
# Login load during the reload test: paced well below capacity, so NOOP gaps
# show event-loop stalls rather than queueing behind a saturated CPU.
RELOAD_LOAD_RATE = 200


@dataclass
class Profile:
    """How long and how big each part runs."""

    name: str
    window_s: float
    warmup_s: float
    cap_s: float
    grace_s: float
    min_samples: int
    idle_conns: int
    routing_users: int
    routing_rules: int
    reload_users: int
    reloads: int
    probe_s: float
    slow_conc_max: int = 1 << 30  # highest concurrency for BLF-CRYPT cells


FULL = Profile("full", 8.0, 1.0, 45.0, 15.0, 100, 5000, 1_000_000, 10_000, 1_000_000, 3, 8.0)
# quick: BLF-CRYPT only at c <= 16 (at c=256 one session takes 10+ s on 2 cores)
QUICK = Profile("quick", 1.5, 0.5, 6.0, 2.0, 20, 1000, 100_000, 1_000, 100_000, 1, 3.0, 16)


# -- helpers ----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(hist: list[tuple[int, int]], q: float) -> float | None:
    """Percentile (seconds) of a merged loadgen histogram (2 % log buckets, us)."""
    total = sum(c for _, c in hist)
    if not total:
        return None
    want = max(1, math.ceil(q * total))
    acc = 0
    for idx, count in sorted(hist):
        acc += count
        if acc >= want:
            return float(1.02 ** (idx + 0.5) * 1e-6)
    return None


def quiesce(pids_of: Any, *, threshold: float = 0.05, max_s: float = 30.0) -> float:
    """Wait until the server uses < threshold of a core over 0.3 s; return the wait."""
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        pids = pids_of()
        a = S.cpu_seconds(pids)
        time.sleep(0.3)
        b = S.cpu_seconds(pids)
        if (b - a) / 0.3 < threshold:
            break
    return time.monotonic() - start


# -- load generator ------------------------------------------------------------------------


@dataclass
class Cell:
    server: str
    flow: str
    conc: int
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    completed: int = 0
    window_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    first_bad: str = ""
    gen_cpu_pct: float = 0.0  # of one core, over the generator's run
    server_cpu_pct: float = 0.0  # of one core
    server_cpu_us_per_session: float | None = None
    other_cpu_pct: float = 0.0  # machine busy time not from server or generator, % of one core
    # the ldap part: the directory (slapd) both servers ask, % of one core and per session
    directory_cpu_pct: float | None = None
    directory_cpu_us_per_session: float | None = None
    elapsed_s: float = 0.0
    command: str = ""  # the (first) load generator command line

    @property
    def error_count(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "cut_at_end")


def source_tree(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` of the tools that compare source trees: the name and the directory.

    DIR must hold a ``refd/`` package: otherwise refd would be imported from
    wherever Python finds one (the bench venv has its own copy installed),
    and the tool would measure that instead, without a word.
    """
    name, _, src = spec.partition("=")
    path = Path(src or ".").resolve()
    if not name or not (path / "refd" / "__init__.py").is_file():
        raise SystemExit(f"{spec!r}: give NAME=DIR, DIR holding a refd/ package (e.g. this={REPO})")
    log(f"{name}: {path}, {build_of(sys.executable, path)} (bench/compile_tree.py compiles a tree)")
    return name, path


def add_tree_options(p: argparse.ArgumentParser) -> None:
    """``--loadgen``, for the tools that compare source trees (``ab.py``, ``calls.py``)."""
    p.add_argument(
        "--loadgen",
        type=Path,
        default=Path(tempfile.gettempdir()) / "refd-bench-build" / "loadgen",
        help="the load generator bench/run built (default: where it builds it)",
    )


def tree_fixture(prefix: str) -> tuple[Path, S.Fixture, Path]:
    """A fresh work directory, the bench fixture (1,000 users a scheme) and its routing table."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    fx = S.make_fixture(work / "fixture", 1000)
    return work, fx, S.write_routing(work / "fixture", fx.nusers)


class LoadGen:
    def __init__(self, binary: Path, procs: int) -> None:
        self.binary = binary
        self.procs = procs

    def command(self, port: int, **o: Any) -> list[str]:
        cmd = [str(self.binary), "-p", str(port)]
        flags = {
            "mode": "-m", "conc": "-c", "window": "-d", "warmup": "-w", "cap": "-T",
            "grace": "-g", "min_samples": "-q", "prefix": "-u", "nusers": "-N",
            "offset": "-o", "expect1": "-e", "expect2": "-E", "mailbox": "-b",
            "max_sessions": "-n", "batch": "-B", "timeout": "-t", "rate": "-r",
        }  # fmt: skip
        for key, flag in flags.items():
            if o.get(key) is not None:
                cmd += [flag, str(o[key])]
        if o.get("tls"):
            cmd.append("-s")
        if o.get("login"):
            cmd.append("-L")
        if o.get("stdin_stop"):
            cmd.append("-S")
        return cmd

    def run_cell(self, cell: Cell, port: int, server_pids: Any, *, directory_pids: Any = None,
                 **o: Any) -> Cell:  # fmt: skip
        """Run -procs generators at once; merge; account CPU on all sides
        (``directory_pids``: a backend the server asks, counted apart, not as other)."""
        conc = cell.conc
        nprocs = max(1, min(self.procs, conc))
        shares = [conc // nprocs + (1 if i < conc % nprocs else 0) for i in range(nprocs)]
        pids = server_pids()
        srv0 = S.cpu_seconds(pids)
        dir0 = S.cpu_seconds(directory_pids()) if directory_pids else 0.0
        busy0, _ = S.machine_cpu()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        procs = []
        offset = 0
        for share in shares:
            cmd = self.command(
                port,
                conc=share,
                offset=offset,
                min_samples=max(1, o["min_samples"] // nprocs),
                **{k: v for k, v in o.items() if k != "min_samples"},
            )
            offset += o.get("nusers", 1000) // nprocs
            if not procs:
                cell.command = " ".join(shlex.quote(str(a)) for a in cmd)
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        try:
            outs = [p.communicate() for p in procs]
        except BaseException:
            for p in procs:
                p.kill()
                p.wait()
            raise
        elapsed = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, _ = S.machine_cpu()
        srv1 = S.cpu_seconds(server_pids())
        dir1 = S.cpu_seconds(directory_pids()) if directory_pids else 0.0
        results = []
        for p, (out, err) in zip(procs, outs, strict=True):
            lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"loadgen failed ({p.returncode}): {err.decode()[-500:]}")
            results.append(json.loads(lines[-1]))
        hist: dict[int, int] = {}
        for r in results:
            for idx, count in r["hist"]:
                hist[idx] = hist.get(idx, 0) + count
        merged = list(hist.items())
        cell.rate = sum(r["rate"] for r in results)
        cell.completed = sum(r["window_completed"] for r in results)
        cell.window_s = max(r["window_s"] for r in results)
        for q, attr in ((0.5, "p50_ms"), (0.99, "p99_ms")):
            v = pct(merged, q)
            setattr(cell, attr, None if v is None else v * 1000)
        cell.max_ms = max(r["max_s"] for r in results) * 1000
        cell.errors = {}
        for r in results:
            for k, v in r["errors"].items():
                cell.errors[k] = cell.errors.get(k, 0) + v
        cell.first_bad = next((r["first_bad"] for r in results if r["first_bad"]), "")
        gen_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        srv_cpu = srv1 - srv0
        cell.elapsed_s = elapsed
        cell.gen_cpu_pct = 100 * gen_cpu / elapsed
        cell.server_cpu_pct = 100 * srv_cpu / elapsed
        total_sessions = sum(r["completed"] for r in results)
        if total_sessions:
            cell.server_cpu_us_per_session = 1e6 * srv_cpu / total_sessions
        dir_cpu = dir1 - dir0
        if directory_pids:
            cell.directory_cpu_pct = 100 * dir_cpu / elapsed
            if total_sessions:
                cell.directory_cpu_us_per_session = 1e6 * dir_cpu / total_sessions
        cell.other_cpu_pct = max(
            0.0, 100 * ((busy1 - busy0) - gen_cpu - srv_cpu - dir_cpu) / elapsed
        )
        return cell

    def idle(self, port: int, n: int, *, tls: bool, batch: int = 64) -> subprocess.Popen[bytes]:
        cmd = self.command(port, mode="idle", conc=n, batch=batch, cap=600, tls=tls,
                           timeout=120)  # fmt: skip
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


# -- part 1: throughput ----------------------------------------------------------------------


def flow_options(flow: str, server: str, prof: Profile, nusers: int) -> dict[str, Any]:
    o: dict[str, Any] = {
        "window": prof.window_s, "warmup": prof.warmup_s, "cap": prof.cap_s,
        "grace": prof.grace_s, "min_samples": prof.min_samples, "nusers": nusers,
        "timeout": prof.cap_s + prof.grace_s,
    }  # fmt: skip
    if flow == "mailbox":
        o.update(mode="mailbox", prefix="mbx-", expect1="a1 OK", mailbox="Shared/x")
        o["expect2"] = "a2 NO [REFERRAL" if server.startswith("refd") else "a2 NO"
    else:
        prefix = "plain-" if flow in TLS_FLOWS else {"plain": "plain-", "sha": "sha-",
                                                       "blf": "blf-"}[flow]  # fmt: skip
        o.update(mode="login", prefix=prefix, expect1="NO [REFERRAL", tls=flow in TLS_FLOWS)
    return o


def start_throughput_servers(args: argparse.Namespace, fx: S.Fixture, routing: Path, work: Path,
                             cores: int, cert: str) -> dict[str, Any]:  # fmt: skip
    """Dovecot, refd workers=N and refd workers=1 (as ``--servers`` asks), all
    serving the fixture's ``cert`` on their implicit-TLS listener."""
    tail = "" if cert == "rsa" else f"-{cert}"
    servers: dict[str, Any] = {}
    try:
        if "dovecot" in args.servers:
            servers["dovecot"] = S.start_dovecot(args.dovecot, fx, work / f"tp-dovecot{tail}",
                                                 cores=cores, cert=cert)  # fmt: skip
        if "refd" in args.servers:
            servers[f"refd-w{cores}"] = S.start_refd(
                args.python, fx, work / f"tp-refd-wN{tail}", workers=cores, routing=routing,
                cert=cert,
            )  # fmt: skip
        if "refd1" in args.servers and cores != 1:
            servers["refd-w1"] = S.start_refd(
                args.python, fx, work / f"tp-refd-w1{tail}", workers=1, routing=routing,
                cert=cert,
            )  # fmt: skip
    except BaseException:
        for srv in servers.values():
            srv.stop()
        raise
    return servers


HASH_THREADS_LINE = re.compile(r"refd \S+ starting .* hash_threads=(\d+) pid=(\d+)")
POOL_LINE = re.compile(r"refd \S+ supervisor starting .* hash_threads=(\d+) pid=(\d+)")


def hash_threads_of(srv: S.Refd) -> dict[str, Any]:
    """The ``hash_threads=`` each refd process printed in its start line (one
    line per worker, each naming the pool it hashes on; a single process with
    ``workers: 1``), and the supervisor's (the threads of the one pool)."""
    text = srv.log_text()
    per_pid: dict[int, int] = {}
    for found in HASH_THREADS_LINE.finditer(text):
        per_pid[int(found.group(2))] = int(found.group(1))
    pools = [int(found.group(1)) for found in POOL_LINE.finditer(text)]
    return {"workers": srv.workers, "per_process": list(per_pid.values()), "pools": pools,
            "cores": len(os.sched_getaffinity(0))}  # fmt: skip


def run_throughput(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
                   routing: Path, work: Path, cores: int) -> list[Cell]:  # fmt: skip
    # one set of servers per certificate the chosen TLS flows need (RSA always:
    # every other flow runs on it)
    certs = ["rsa", *sorted({TLS_FLOWS[f] for f in args.flows if f in TLS_FLOWS} - {"rsa"})]
    by_cert: dict[str, dict[str, Any]] = {}
    try:
        for cert in certs:
            by_cert[cert] = start_throughput_servers(args, fx, routing, work, cores, cert)
        servers = by_cert["rsa"]
        configs = {}
        for cert, group in by_cert.items():
            for name, srv in group.items():
                f = "dovecot.conf" if name == "dovecot" else "refd.yaml"
                key = f if cert == "rsa" else f"{f} ({cert} instance: only the certificate differs)"
                if key in configs:
                    continue
                configs[key] = (srv.directory / f).read_text().replace(str(work), "<work>")
        # What each TLS flow's port really serves (the load generator negotiates
        # with OpenSSL's default client settings, as s_client does).
        args.tls_served = {}
        for flow, cert in TLS_FLOWS.items():
            if flow not in args.flows:
                continue
            for name, srv in by_cert[cert].items():
                seen = S.served_certificate(srv.tls_port)
                args.tls_served.setdefault(flow, {})[name] = seen
                log(f"{name:9} {flow}: serves {json.dumps(seen)}")
                want = "rsaEncryption" if cert == "rsa" else "id-ecPublicKey"
                if seen.get("key_algorithm") != want:
                    raise RuntimeError(f"{name} {flow}: expected a {want} certificate, got {seen}")
        args.hash_threads = {
            name: hash_threads_of(srv) for name, srv in servers.items() if name != "dovecot"
        }
        for name, ht in args.hash_threads.items():
            log(f"{name:9} hash_threads per process {ht['per_process']} on {ht['cores']} cores")
        configs["routing.yaml"] = routing.read_text().replace(str(work), "<work>")
        configs["users.passwd (first line of each kind)"] = "".join(
            next(ln for ln in fx.passwd.read_text().splitlines(keepends=True) if ln.startswith(k))
            for k in ("plain-", "sha-", "blf-", "mbx-")
        )
        args.configs = configs
        cells = []
        for flow in args.flows:
            for conc in args.conc:
                if flow == "blf" and conc > prof.slow_conc_max:
                    continue
                group = by_cert[TLS_FLOWS.get(flow, "rsa")]
                for name, srv in group.items():
                    port = srv.tls_port if flow in TLS_FLOWS else srv.port
                    o = flow_options(flow, name, prof, fx.nusers)
                    cell = gen.run_cell(Cell(name, flow, conc), port, srv.pids, **o)
                    cells.append(cell)
                    log(
                        f"{name:9} {flow:9} c={conc:<3} {cell.rate:9.1f}/s "
                        f"p50={_ms(cell.p50_ms)} p99={_ms(cell.p99_ms)} err={cell.error_count} "
                        f"gen={cell.gen_cpu_pct:.0f}% srv={cell.server_cpu_pct:.0f}% "
                        f"other={cell.other_cpu_pct:.0f}% "
                        f"{'' if not cell.first_bad else 'first_bad=' + cell.first_bad}"
                    )
                    quiesce(srv.pids)
        return cells
    finally:
        for group in by_cert.values():
            for srv in group.values():
                srv.stop()


FLOOR_CONC = 64
FLOOR_ROUNDS = 3


def run_floor(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
              routing: Path, work: Path, cores: int) -> dict[str, Any]:  # fmt: skip
    """trio alone (``floor_server.py``: the PLAIN flow's bytes, nothing else) and
    refd, each in one process and in ``cores`` processes on one listening
    socket, cell by cell at c=64: the part of refd's CPU per session, and of
    its peak rate, that only trio or the kernel could remove, in one sitting."""
    servers: dict[str, S.Refd | S.Server] = {}
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        for n in sorted({1, cores}):
            servers[f"trio-floor-w{n}"] = S.start_floor(args.python, fx, work / f"floor-trio{n}",
                                                        processes=n)  # fmt: skip
            servers[f"refd-w{n}"] = S.start_refd(args.python, fx, work / f"floor-refd{n}",
                                                 workers=n, routing=routing)  # fmt: skip
        for _ in range(FLOOR_ROUNDS):
            for name, srv in servers.items():
                o = flow_options("plain", name, prof, fx.nusers)
                cell = gen.run_cell(Cell(name, "plain", FLOOR_CONC), srv.port, srv.pids, **o)
                row = rows.setdefault(name, {"us_per_session": [], "rate": [], "other_pct": []})
                row["us_per_session"].append(round(cell.server_cpu_us_per_session or 0.0))
                row["rate"].append(round(cell.rate, 1))
                row["other_pct"].append(round(cell.other_cpu_pct))
                log(f"floor {name:14} c={FLOOR_CONC} {cell.rate:8.1f}/s "
                    f"{cell.server_cpu_us_per_session or 0:6.0f} us/sess "
                    f"other={cell.other_cpu_pct:.0f}% err={cell.error_count}")  # fmt: skip
                if cell.error_count:
                    raise RuntimeError(f"floor {name}: {cell.errors} {cell.first_bad}")
                quiesce(srv.pids)
    finally:
        for srv in servers.values():
            srv.stop()
    return {"conc": FLOOR_CONC, "servers": rows}


#: concurrency of the counted sessions (the instructions part)
INSTRUCTIONS_CONC = 16


def run_instructions(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
                     routing: Path, work: Path) -> dict[str, Any]:  # fmt: skip
    """refd (``workers: 1``) and the floor server, one after the other, each under
    callgrind: the user-space instructions per PLAIN session (``bench/instructions.py``),
    a cost the host's load does not move, and refd's as a multiple of the floor's."""
    import instructions  # noqa: PLC0415 (it imports this module)

    sessions = 500 if prof.name == "quick" else 2000
    o = instructions.load_options("plain", fx.nusers, INSTRUCTIONS_CONC)
    rows: dict[str, dict[str, int]] = {}
    for name in ("refd-w1", "trio-floor-w1"):
        wrapper, out = instructions.valgrind_python(work, name, args.python)
        srv: S.Refd | S.Server
        if name == "refd-w1":
            srv = S.start_refd(str(wrapper), fx, work / f"instructions-{name}", workers=1,
                               routing=routing)  # fmt: skip
        else:
            srv = S.start_floor(str(wrapper), fx, work / f"instructions-{name}")
        total, done = instructions.count(srv, out, gen, srv.port, o, sessions)
        rows[name] = {"instructions": total, "sessions": done, "per_session": round(total / done)}
        log(f"instructions {name:14} c={INSTRUCTIONS_CONC} {done} sessions: "
            f"{total / done:,.0f} per session")  # fmt: skip
    return {"conc": INSTRUCTIONS_CONC, "flow": "plain", "servers": rows}


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}ms" if v < 100 else f"{v:.0f}ms"


# -- part 2: idle memory ------------------------------------------------------------------


def run_idle_memory(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
                    routing: Path, work: Path, cores: int) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    plan = []
    if "dovecot" in args.servers:
        plan.append("dovecot")
    if "refd" in args.servers:
        plan.append(f"refd-w{cores}")
    if "refd1" in args.servers and cores != 1:
        plan.append("refd-w1")
    for name in plan:
        for tls in (False, True):
            d = work / f"mem-{name}-{'tls' if tls else 'plain'}"
            if name == "dovecot":
                srv: Any = S.start_dovecot(args.dovecot, fx, d, cores=cores)
            else:
                w = 1 if name == "refd-w1" else cores
                srv = S.start_refd(args.python, fx, d, workers=w, routing=routing)
            try:
                port = srv.tls_port if tls else srv.port
                # warm up: lazily built state (TLS context, imports, caches)
                warm = flow_options("tls" if tls else "plain", name, prof, fx.nusers)
                warm.update(window=0.5, warmup=0, cap=5, grace=2, min_samples=1, max_sessions=300)
                gen.run_cell(Cell(name, "warm", 8), port, srv.pids, **warm)
                quiesce(srv.pids)
                time.sleep(1.0)
                pids0 = srv.pids()
                rss0 = S.rss_bytes(pids0)
                p = gen.idle(port, prof.idle_conns, tls=tls)
                assert p.stdout is not None and p.stdin is not None
                first = json.loads(p.stdout.readline())
                time.sleep(2.0)  # let late allocations and process spawns settle
                pids1 = srv.pids()
                rss1 = S.rss_bytes(pids1)
                p.stdin.close()
                last = json.loads(p.stdout.read().decode().strip().splitlines()[-1])
                p.wait()
                held = first["held"]
                per = (rss1 - rss0) / held / 1024 if held else None
                row = {
                    "server": name, "tls": tls, "held": held, "failed": first["failed"],
                    "open_s": first["open_s"], "rss_before_mib": rss0 / 2**20,
                    "rss_after_mib": rss1 / 2**20, "processes_before": len(pids0),
                    "processes_after": len(pids1), "kib_per_conn": per,
                    "dropped_while_held": last.get("dropped", 0),
                }  # fmt: skip
                out.append(row)
                log(
                    f"idle {name:9} {'tls  ' if tls else 'plain'} held={held} "
                    f"rss {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB "
                    f"({len(pids0)}->{len(pids1)} procs) = "
                    f"{'-' if per is None else f'{per:.1f}'} KiB/conn"
                )
            finally:
                srv.stop()
    return out


# -- part 3: routing -----------------------------------------------------------------------


def make_big_map(path: Path, n: int, servers: int = 10) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(f"u{i:07d}@d{i % 1000:03d}.example.org mail{1 + i % servers}\n")


def run_routing(args: argparse.Namespace, prof: Profile, work: Path) -> dict[str, Any]:
    d = work / "routing"
    d.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    env = {**os.environ, "PYTHONPATH": str(S.SOURCE["path"])}
    kinds = (("exact", prof.routing_users), ("patterns", prof.routing_rules),
             ("globs", prof.routing_rules))  # fmt: skip
    for kind, n in kinds:
        cmd = [args.python, str(BENCH / "routing_bench.py"), kind, str(n), str(d)]
        log("routing: " + " ".join(shlex.quote(c) for c in cmd))
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"routing_bench {kind} failed: {p.stderr[-2000:]}")
        results[kind] = json.loads(p.stdout.strip().splitlines()[-1])
        log(f"routing {kind}: {json.dumps(results[kind])}")
    return results


# -- part 4: reload stall ----------------------------------------------------------------------


def _metric_hist(text: str, name: str, label: str) -> dict[str, float]:
    """{le: cumulative count} of one histogram series, summed over workers."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{") and label in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = out.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _reloads_done(srv: S.Refd) -> int:
    return srv.log_text().count("reload ok")


def run_reload(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
               work: Path, cores: int) -> list[dict[str, Any]]:  # fmt: skip
    d = work / "reload"
    d.mkdir(exist_ok=True)
    big = d / "big.map"
    make_big_map(big, prof.reload_users)
    routing = S.write_routing(d, fx.nusers, extra_map=big)
    big.unlink()
    rows = []
    plan = [cores] + ([1] if cores != 1 and "refd1" in args.servers else [])
    for workers in plan:
        log(f"reload: starting refd workers={workers} with a {prof.reload_users}-user table")
        t = time.monotonic()
        srv = S.start_refd(args.python, fx, d / f"refd-w{workers}", workers=workers,
                           routing=routing)  # fmt: skip
        startup = time.monotonic() - t
        try:
            row: dict[str, Any] = {"workers": workers, "users": prof.reload_users,
                                   "startup_s": startup}  # fmt: skip
            for phase in ("baseline", "reload"):
                probes = 2 * workers  # SO_REUSEPORT spreads them; most workers get one
                load_o = flow_options("plain", "refd", prof, fx.nusers)
                load_o.update(conc=16, rate=RELOAD_LOAD_RATE, window=1e6, warmup=0, cap=900,
                              grace=1, min_samples=10**9, stdin_stop=True)  # fmt: skip
                probe_o = {
                    "mode": "noop",
                    "conc": probes,
                    "window": 900,
                    "prefix": "mbx-",
                    "nusers": fx.nusers,
                    "login": True,
                    "grace": 2,
                    "stdin_stop": True,
                }
                m0 = srv.metrics()
                done0 = _reloads_done(srv)
                load = subprocess.Popen(gen.command(srv.port, **load_o), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)  # fmt: skip
                probe = subprocess.Popen(gen.command(srv.port, **probe_o), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE)  # fmt: skip
                hups: list[tuple[float, float]] = []
                time.sleep(1.0)
                if phase == "baseline":
                    time.sleep(prof.probe_s)
                else:
                    for _ in range(prof.reloads):
                        sent = time.time()
                        os.kill(srv.pid, signal.SIGHUP)
                        want = done0 + workers * (len(hups) + 1)
                        deadline = time.monotonic() + 120
                        while _reloads_done(srv) < want and time.monotonic() < deadline:
                            time.sleep(0.02)
                        hups.append((sent, time.time() - sent))
                        time.sleep(1.0)
                for proc in (probe, load):
                    assert proc.stdin is not None
                    proc.stdin.close()
                assert probe.stdout is not None and load.stdout is not None
                pout, lout = probe.stdout.read(), load.stdout.read()
                probe.wait(60)
                load.wait(60)
                m1 = srv.metrics()
                pr = json.loads(pout.decode().strip().splitlines()[-1])
                lr = json.loads(lout.decode().strip().splitlines()[-1])
                h0 = _metric_hist(m0, "refd_command_duration_seconds", 'command="NOOP"')
                h1 = _metric_hist(m1, "refd_command_duration_seconds", 'command="NOOP"')
                slow = (h1.get("+Inf", 0) - h1.get("0.05", 0)) - (
                    h0.get("+Inf", 0) - h0.get("0.05", 0)
                )
                slowest_bucket = None
                for le in ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0"):
                    above = (h1.get("+Inf", 0) - h1.get(le, 0)) - (
                        h0.get("+Inf", 0) - h0.get(le, 0)
                    )
                    if above > 0:
                        slowest_bucket = f"> {le} s"
                row[phase] = {
                    "noops": pr["noops"], "gap_max_ms": pr["gap_max_s"] * 1000,
                    "gap_p999_ms": pr["gap_p999_s"] * 1000, "gaps_over_50ms": pr["gaps_over_50ms"],
                    "gaps_over_100ms": pr["gaps_over_100ms"],
                    "reload_wall_s": [round(w, 2) for _, w in hups],
                    "load_rate": lr["rate"], "load_p99_ms": lr["p99_s"] * 1000,
                    "load_max_ms": lr["max_s"] * 1000,
                    "refd_noops_over_50ms": slow, "refd_slowest_noop_bucket": slowest_bucket,
                    "probe_errors": {k: v for k, v in pr["errors"].items() if v},
                }  # fmt: skip
                log(f"reload w{workers} {phase}: {json.dumps(row[phase])}")
            rows.append(row)
        finally:
            srv.stop()
    return rows


# -- part 5: the LDAP bind source ------------------------------------------------------------


def check_referral(port: int, user: str, want: str) -> str:
    """One login by hand: the tagged answer must be a referral naming ``want``."""
    with socket.create_connection((S.HOST, port), timeout=30) as sock:
        f = sock.makefile("rwb")
        f.readline()
        f.write(f"a1 LOGIN {user} {S.PASSWORD}\r\n".encode())
        f.flush()
        while True:
            line = f.readline().decode(errors="replace").rstrip()
            if not line or line.startswith("a1 "):
                break
    if not line.startswith("a1 NO [REFERRAL imap://") or want not in line:
        raise RuntimeError(f"{user} on port {port}: expected a referral to {want}, got {line!r}")
    return line


def run_ldap(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
             routing: Path, work: Path, cores: int) -> dict[str, Any]:  # fmt: skip
    """Login referrals with the users in one private slapd: refd's ldap source in
    bind mode against Dovecot's passdb ldap with auth_bind, cell by cell back to
    back; then refd's cached route lookup (bench/ldap_bench.py --lookup-only)."""
    started = time.monotonic()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_start": loadavg(),
        "refd_commit": args.env["refd_commit"],
        "users": fx.nusers,
    }
    slapd_bin = S.find_slapd()
    if slapd_bin is None:
        raise RuntimeError(
            "the ldap part needs slapd and ldap-utils (apt-get install slapd ldap-utils) "
            "and refd's test extras in --python (pip install -e '.[test]')"
        )
    d = work / "ldap"
    t = time.monotonic()
    directory = S.start_directory(slapd_bin, fx, d / "slapd", fx.nusers)
    out["slapd_start_s"] = round(time.monotonic() - t, 1)
    version = subprocess.run([slapd_bin, "-VV"], capture_output=True, text=True, check=False)
    found = re.search(r"slapd [^ ]+", version.stderr)
    out["slapd"] = found.group(0) if found else "slapd (version unknown)"
    servers: dict[str, Any] = {}
    try:

        def directory_pids() -> list[int]:
            return [directory.pid]

        if "dovecot" in args.servers:
            passdb = S.dovecot_ldap_passdb(directory.url, d / "dovecot")
            servers["dovecot"] = S.start_dovecot(args.dovecot, fx, d / "dovecot", cores=cores,
                                                 passdb=passdb)  # fmt: skip
        auth = S.refd_ldap_auth(directory.url, d / "refd")
        if "refd" in args.servers:
            servers[f"refd-w{cores}"] = S.start_refd(
                args.python, fx, d / "refd-wN", workers=cores, routing=routing, auth=auth
            )
        if "refd1" in args.servers and cores != 1:
            servers["refd-w1"] = S.start_refd(
                args.python, fx, d / "refd-w1", workers=1, routing=routing, auth=auth
            )
        configs: dict[str, str] = {}
        for name, srv in servers.items():
            f = "dovecot.conf" if name == "dovecot" else "refd.yaml"
            if f not in configs:
                configs[f] = (srv.directory / f).read_text().replace(str(work), "<work>")
        if "dovecot" in servers:
            text = (d / "dovecot" / "dovecot-ldap.conf.ext").read_text()
            configs["dovecot-ldap.conf.ext"] = text.replace(str(work), "<work>")
        configs["slapd.conf"] = (
            (d / "slapd" / "slapd.conf").read_text().replace(str(work), "<work>")
        )
        out["configs"] = configs
        # Both answer with the user's own mailHost (user 1 lives on the second host).
        user = f"{S.LDAP_PREFIX}{1:06d}"
        out["answers"] = {
            name: check_referral(srv.port, user, "@" + S.ldap_mail_host(1))
            for name, srv in servers.items()
        }
        cells = []
        for conc in args.conc:
            for name, srv in servers.items():
                o = flow_options("plain", name, prof, fx.nusers)
                o.update(prefix=S.LDAP_PREFIX, expect1="NO [REFERRAL imap://")
                cell = gen.run_cell(Cell(name, "ldap", conc), srv.port, srv.pids,
                                    directory_pids=directory_pids, **o)  # fmt: skip
                cells.append(cell)
                log(
                    f"ldap {name:9} c={conc:<3} {cell.rate:9.1f}/s p50={_ms(cell.p50_ms)} "
                    f"p99={_ms(cell.p99_ms)} err={cell.error_count} srv={cell.server_cpu_pct:.0f}% "
                    f"slapd={cell.directory_cpu_pct or 0:.0f}% gen={cell.gen_cpu_pct:.0f}% "
                    f"other={cell.other_cpu_pct:.0f}% "
                    f"{'' if not cell.first_bad else 'first_bad=' + cell.first_bad}"
                )
                quiesce(lambda srv=srv: srv.pids() + directory_pids())
        out["cells"] = [asdict(c) for c in cells]
        for srv in servers.values():
            srv.stop()
        servers = {}
        lookups = 100_000 if prof.name == "full" else 10_000
        cmd = [args.python, str(BENCH / "ldap_bench.py"), "--lookup-only", directory.url,
               "--users", str(fx.nusers), "--name-format", S.LDAP_PREFIX + "{:06d}",
               "--lookups", str(lookups)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(S.SOURCE["path"])}
        log("ldap: " + " ".join(shlex.quote(c) for c in cmd))
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"ldap_bench --lookup-only failed: {p.stderr[-2000:]}")
        out["lookup"] = json.loads(p.stdout.strip().splitlines()[-1])
        shown = ["PYTHONPATH=<snapshot of refd/>", "<python>", "bench/ldap_bench.py", *cmd[2:]]
        out["lookup"]["command"] = " ".join(shlex.quote(c) for c in shown).replace(
            directory.url, "ldap://127.0.0.1:<slapd port>"
        )
        log(f"ldap lookup: {json.dumps(out['lookup'])}")
    finally:
        for srv in servers.values():
            srv.stop()
        directory.stop()
    out["load_end"] = loadavg()
    out["duration_s"] = round(time.monotonic() - started, 1)
    return out


# -- part 6 (optional): where refd's time goes ---------------------------------------------


def find_pyspy(python: str) -> str | None:
    beside = Path(python).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def run_profiles(args: argparse.Namespace, prof: Profile, fx: S.Fixture, gen: LoadGen,
                 routing: Path, work: Path, cores: int) -> dict[str, Any]:  # fmt: skip
    """py-spy on refd under load: workers=1 (the whole server is one process)
    for each flow, and one worker of workers=N for PLAIN."""
    import profile_summary  # noqa: PLC0415

    pyspy = find_pyspy(args.python)
    if pyspy is None:
        log("profile: py-spy not found (pip install py-spy into the refd Python): skipped")
        return {"skipped": "py-spy not found"}
    seconds = 8 if prof.name == "full" else 2
    plan = [(1, f) for f in ("plain", "sha", "tls", "mailbox")]
    if cores > 1:
        plan.append((cores, "plain"))
    out: dict[str, Any] = {"pyspy": pyspy, "seconds": seconds, "conc": 64, "runs": []}
    servers: dict[int, S.Refd] = {}
    try:
        for workers, flow in plan:
            if workers not in servers:
                servers[workers] = S.start_refd(args.python, fx, work / f"prof-w{workers}",
                                                workers=workers, routing=routing)  # fmt: skip
            srv = servers[workers]
            target = srv.pid if workers == 1 else sorted(srv.pids())[1]
            o = flow_options(flow, "refd", prof, fx.nusers)
            o.update(conc=64, window=seconds + 1.5, warmup=0.5, cap=seconds + 10, grace=2,
                     min_samples=1)  # fmt: skip
            port = srv.tls_port if flow == "tls" else srv.port
            load = subprocess.Popen(gen.command(port, **o), stdout=subprocess.PIPE)
            time.sleep(1.0)
            raw = work / f"profile-w{workers}-{flow}.txt"
            cmd = [pyspy, "record", "-p", str(target), "-d", str(seconds), "-r", "200",
                   "-f", "raw", "-o", str(raw), "--nonblocking"]  # fmt: skip
            subprocess.run(cmd, capture_output=True, timeout=seconds + 60, check=False)
            lout, _ = load.communicate(timeout=300)
            rate = json.loads(lout.decode().strip().splitlines()[-1])["rate"]
            quiesce(srv.pids)
            if not raw.exists():
                log(f"profile w{workers} {flow}: py-spy wrote nothing")
                continue
            summary = profile_summary.analyse(raw, top=12, focus="refd/")
            if args.keep:
                summary["raw"] = str(raw)
            out["runs"].append({"workers": workers, "flow": flow, "rate": rate, **summary})
            cats = ", ".join(f"{n} {v}%" for n, v in summary["categories"][:5])
            log(f"profile w{workers} {flow} ({rate:.0f}/s under py-spy): {cats}")
    finally:
        for srv in servers.values():
            srv.stop()
    return out


# -- environment and report -------------------------------------------------------------------


def environment(args: argparse.Namespace, loadgen_cmd: str) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    versions = out(
        ["env", f"PYTHONPATH={S.SOURCE['path']}", args.python, "-c", "import refd, trio, sys, ssl, os; "
         "libpython = any('/libpython' in line for line in open('/proc/self/maps')); "
         "print(refd.__version__, trio.__version__, sys.version.split()[0], ssl.OPENSSL_VERSION,"
         " os.path.realpath(sys.executable),"
         " 'shared libpython' if libpython else 'libpython linked in', sep='|')"])  # fmt: skip
    parts = (versions.split("|") + ["?"] * 6)[:6]
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "refd_version": parts[0],
        "refd_commit": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "refd_dirty": args.refd_source == "worktree"
        and bool(
            out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "refd"])
        ),
        "refd_source": args.refd_source,
        "trio": parts[1],
        "python": parts[2],
        "python_openssl": parts[3],
        "python_binary": f"{parts[4]} ({parts[5]})",
        "dovecot": S.dovecot_version(args.dovecot) if args.dovecot else "not found",
        "openssl": out(["openssl", "version"]),
        "cc": out(["cc", "--version"]).splitlines()[0] if out(["cc", "--version"]) else "?",
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadgen_build": loadgen_cmd,
        "bench_command": " ".join(shlex.quote(a) for a in sys.argv),
        "user_args": " ".join(shlex.quote(a) for a in _user_args(sys.argv[1:])),
        "python_path": args.python,
        "harness_ssl": ssl.OPENSSL_VERSION,
    }


def _user_args(argv: list[str]) -> list[str]:
    """The arguments given to bench/run (without the ones it adds itself)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--python", "--loadgen", "--loadgen-build"):
            skip = True
        else:
            out.append(a)
    return out


#: what a build of refd/ reads besides the package (``compile_tree``)
BUILD_FILES = ("setup.py", "pyproject.toml", "README.md")


def snapshot_refd(source: str, dest: Path) -> None:
    """refd/ and its build files as committed (HEAD, the default) or as on disk (worktree)."""
    if source == "head":
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "refd", *BUILD_FILES],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        shutil.copytree(REPO / "refd", dest / "refd", ignore=shutil.ignore_patterns("__pycache__"))
        for name in BUILD_FILES:
            shutil.copy2(REPO / name, dest / name)


def compile_tree(python: str, tree: Path) -> str:
    """Compile ``tree``'s hot-path modules (refd/compiled.py) as ``REFD_COMPILE=1 pip
    install .`` does; what the tree's refd says it now is.

    pip builds that wheel (mypyc at setup.py's pinned version, in pip's own
    build environment), and its extension modules are put beside the
    sources: the refd started from the tree (PYTHONPATH) imports them first.
    A tree without setup.py (a commit before the compiled build) stays as it
    is.  About 3 minutes on 2 cores.
    """
    if not (tree / "setup.py").exists():
        return build_of(python, tree)
    log(f"compiling {tree}/refd (REFD_COMPILE=1 pip wheel)")
    with tempfile.TemporaryDirectory(prefix="refd-wheel-") as out:
        subprocess.run(
            [python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, str(tree)],
            env={**os.environ, "REFD_COMPILE": "1"}, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (wheel,) = Path(out).glob("refd-*.whl")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tree, [n for n in z.namelist() if n.endswith(".so")])
    for leftover in (tree / "build", *tree.glob("*.egg-info")):  # pip builds in the tree
        shutil.rmtree(leftover, ignore_errors=True)
    return build_of(python, tree)


def build_of(python: str, tree: Path) -> str:
    """``compiled``, ``interpreted`` or the mix, as the tree's refd/compiled.py reports it."""
    out = subprocess.run(
        [python, "-c", "from refd.compiled import describe; print(describe())"],
        env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True, text=True,
        check=False,
    )  # fmt: skip  (cwd: ``-c`` puts it before PYTHONPATH)
    return out.stdout.strip() or "interpreted (no refd/compiled.py)"


def _stop_on_sigterm() -> None:
    """SIGTERM and SIGINT unwind (so the servers are stopped by the finally
    blocks), also when started in the background where SIGINT is ignored."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main() -> int:
    p = argparse.ArgumentParser(description="refd vs Dovecot benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="a few seconds per cell (smoke)")
    p.add_argument(
        "--out",
        type=Path,
        help="default: bench/RESULTS.md (full), bench/RESULTS.quick.md (--quick)",
    )
    p.add_argument("--python", default=sys.executable, help="Python that runs refd")
    p.add_argument("--dovecot", default=S.find_dovecot())
    p.add_argument("--loadgen", type=Path, help="the built loadgen binary (bench/run passes it)")
    p.add_argument("--loadgen-build", default="", help="how it was built (for RESULTS.md)")
    p.add_argument("--gen-procs", type=int, default=1, help="load generator processes per cell")
    p.add_argument("--parts", default="throughput,floor,instructions,memory,routing,reload,ldap")
    p.add_argument("--flows", default=",".join(FLOWS))
    p.add_argument("--conc", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--servers", default="dovecot,refd,refd1",
                   help="dovecot, refd (workers=nproc), refd1 (workers=1)")  # fmt: skip
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also py-spy refd under load (needs py-spy beside --python or on PATH)",
    )
    p.add_argument(
        "--notes",
        type=Path,
        default=BENCH / "NOTES.md",
        help="hand-written analysis appended to the report if the file exists",
    )
    p.add_argument(
        "--refd-source",
        choices=("head", "worktree"),
        default="head",
        help="benchmark refd/ as committed (default) or as on disk",
    )
    p.add_argument(
        "--build",
        choices=("compiled", "interpreted"),
        default="compiled",
        help="refd's hot path compiled with mypyc as deployed (default, REFD_COMPILE=1), "
        "or the pure-Python package",
    )
    p.add_argument(
        "--merge",
        type=Path,
        metavar="RESULTS.json",
        help="start from this results file and replace only the parts run now "
        "(e.g. --parts ldap --merge bench/RESULTS.json --out bench/RESULTS.md)",
    )
    p.add_argument(
        "--render-only",
        type=Path,
        metavar="RESULTS.json",
        help="no run: re-render --out from a results file (and --notes)",
    )
    args = p.parse_args()
    args.flows = [f for f in args.flows.split(",") if f]
    args.conc = [int(c) for c in args.conc.split(",") if c]
    args.servers = [s for s in args.servers.split(",") if s]
    parts = set(args.parts.split(","))
    if args.render_only is None and args.loadgen is None:
        p.error("--loadgen is required (run through bench/run)")
    if "dovecot" in args.servers and not args.dovecot:
        print("dovecot not found: apt-get install dovecot-imapd (or --servers refd,refd1)")
        return 2
    if os.geteuid() != 0 and "dovecot" in args.servers:
        print("warning: Dovecot as non-root is untested here (run as root, as CI does)")
    if args.render_only is not None:
        import report  # noqa: PLC0415

        results = json.loads(args.render_only.read_text())
        results.pop("notes", None)
        if args.notes and args.notes.exists():
            results["notes"] = args.notes.read_text()
        out = args.out or args.render_only.with_suffix(".md")
        out.write_text(report.render(results))
        print(report.console_table(results))
        return 0
    prof = QUICK if args.quick else FULL
    if args.out is None:
        args.out = BENCH / ("RESULTS.quick.md" if args.quick else "RESULTS.md")
    fd_limit = raise_fd_limit()
    if prof.idle_conns + 100 > fd_limit:
        prof.idle_conns = fd_limit - 100
    _stop_on_sigterm()
    cores = args.workers
    started = time.monotonic()
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="refd-bench-", dir="/tmp"))
    work.chmod(0o755)
    (work / "src").mkdir()
    snapshot_refd(args.refd_source, work / "src")
    S.SOURCE["path"] = work / "src"
    build = (
        compile_tree(args.python, work / "src")
        if args.build == "compiled"
        else build_of(args.python, work / "src")
    )
    env = environment(args, args.loadgen_build)
    env["refd_build"] = build
    args.env = env
    log(f"{prof.name} run on {env['nproc']} x {env['cpu_model']}, load average {load_start}")
    log(
        f"refd {env['refd_version']} from commit {env['refd_commit']}"
        f"{' (+ uncommitted changes)' if env['refd_dirty'] else ''}, snapshot in {work}/src"
    )
    gen = LoadGen(args.loadgen, args.gen_procs)
    results: dict[str, Any] = {"profile": asdict(prof), "env": env, "load_start": load_start}
    base: dict[str, Any] | None = None
    if args.merge is not None:
        base = json.loads(args.merge.read_text())
        if base["profile"]["name"] != prof.name:
            p.error(f"--merge: {args.merge} is a {base['profile']['name']} run, not {prof.name}")
    try:
        fx = S.make_fixture(work / "fixture", 1000)
        routing = S.write_routing(work / "fixture", fx.nusers)
        if "throughput" in parts:
            cells = run_throughput(args, prof, fx, gen, routing, work, cores)
            results["throughput"] = [asdict(c) for c in cells]
            results["configs"] = getattr(args, "configs", {})
            results["tls_served"] = getattr(args, "tls_served", {})
            results["hash_threads"] = getattr(args, "hash_threads", {})
        if "floor" in parts:
            results["floor"] = run_floor(args, prof, fx, gen, routing, work, cores)
        if "instructions" in parts:
            results["instructions"] = run_instructions(args, prof, fx, gen, routing, work)
        if "memory" in parts:
            results["memory"] = run_idle_memory(args, prof, fx, gen, routing, work, cores)
        if "routing" in parts:
            results["routing"] = run_routing(args, prof, work)
        if "reload" in parts:
            results["reload"] = run_reload(args, prof, fx, gen, work, cores)
        if "ldap" in parts:
            results["ldap"] = run_ldap(args, prof, fx, gen, routing, work, cores)
        if args.profile:
            results["profiles"] = run_profiles(args, prof, fx, gen, routing, work, cores)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            log(f"work directory kept: {work}")
    results["load_end"] = loadavg()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["cores"] = cores
    if base is not None:
        # the parts run now replace the old ones; machine, versions and run time stay
        # the old run's, and "merged" says what came later (each part's own date is kept)
        ran = [k for k in ("throughput", "floor", "instructions", "memory", "routing", "reload",
                           "ldap", "profiles")
               if k in results]  # fmt: skip
        later = {"parts": ran, "date": env["date"], "refd_commit": env["refd_commit"],
                 "load_start": load_start, "load_end": results["load_end"],
                 "duration_s": results["duration_s"],
                 "command": f"bench/run {env['user_args']}"}  # fmt: skip
        for k in ran:
            base[k] = results[k]
        if "throughput" in ran:
            for k in ("configs", "tls_served", "hash_threads"):
                base[k] = results.get(k, {})
        base.setdefault("merged", []).append(later)
        results = base
        results.pop("notes", None)
    if args.notes and args.notes.exists() and not args.quick:  # written for a full run
        results["notes"] = args.notes.read_text()
    import report  # noqa: PLC0415

    text = report.render(results)
    args.out.write_text(text)
    args.out.with_name(args.out.stem + ".json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(report.console_table(results))
    log(f"done in {round(time.monotonic() - started, 1)} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    random.seed(1)
    sys.exit(main())
