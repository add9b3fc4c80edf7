"""Render bench results (the dict harness.py builds) as RESULTS.md and a console table."""

from __future__ import annotations

import statistics
from typing import Any

FLOW_TITLES = {
    "plain": "PLAIN",
    "sha": "SHA512-CRYPT",
    "blf": "BLF-CRYPT cost 10",
    "tls": "PLAIN, implicit TLS, RSA-2048",
    "tls-ecdsa": "PLAIN, implicit TLS, ECDSA P-256",
    "mailbox": "mailbox referral",
}

# -- the targets (issue 13): the one home for these numbers --------------------------------
# Peak sessions/s of refd (workers: nproc) over Dovecot's, same run.
RATIO_TARGETS = {"plain": 0.8, "sha": 1.0, "blf": 1.8, "tls": 1.0, "tls-ecdsa": 1.0}
# refd's p99 session latency ≤ this × Dovecot's, at each concurrency.
P99_TARGETS = {"plain": 1.5, "sha": 1.0, "blf": 1.0}
# refd's CPU per session (all its processes, workers: nproc), µs, at each concurrency.
CPU_US_TARGETS = {"plain": 350.0}
# RSS per idle pre-login connection, KiB, by TLS.
MEM_TARGET_KIB = {False: 10.0, True: 40.0}
# Longest event-loop stall (NOOP gap) during a reload, ms, for each workers row.
RELOAD_STALL_MS = 50.0
# Routing: the big user_map loads in ≤ s; lookups ≤ µs (exact user; `*@domain` globs).
TABLE_LOAD_S = 5.0
LOOKUP_US = {"exact": 1.0, "globs": 5.0}
# Reference sessions/s of tuned Dovecot on a faster machine (for scale only).
KNOWN_DOVECOT = {"plain": 14700, "sha": 775, "blf": 22, "tls": 1600}


def _f(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("met" if flag else "**missed**")


def _cells(results: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(c["server"], c["flow"], c["conc"]): c for c in results.get("throughput", [])}


def _servers(results: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    names = {c["server"] for c in results.get("throughput", [])}
    main = next((n for n in sorted(names) if n.startswith("refd-w") and n != "refd-w1"), None)
    if main is None and "refd-w1" in names:
        main = "refd-w1"
    one = "refd-w1" if "refd-w1" in names and main != "refd-w1" else None
    dove = "dovecot" if "dovecot" in names else None
    return dove, main, one


def peak(results: dict[str, Any], server: str, flow: str) -> tuple[float, int] | None:
    rows = [c for c in results.get("throughput", []) if c["server"] == server and c["flow"] == flow]
    if not rows:
        return None
    best = max(rows, key=lambda c: c["rate"])
    return best["rate"], best["conc"]


Verdict = tuple[str, str, str, bool | None]


def _other(rows: list[dict[str, Any] | None]) -> str:
    """The most CPU other processes used during the cells a verdict rests on."""
    vals = [r["other_cpu_pct"] for r in rows if r]
    return f"≤ {max(vals):.0f} %" if vals else "-"


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    """(target, measured, other % during its cells, met) rows for the summary;
    met is None for a row shown for information (no target)."""
    out: list[Verdict] = []
    dove, main, _ = _servers(results)
    cells = _cells(results)
    concs = sorted({k[2] for k in cells})
    workers = results.get("cores")
    if dove and main:
        for flow, target in RATIO_TARGETS.items():
            d, r = peak(results, dove, flow), peak(results, main, flow)
            if d is None or r is None or d[0] <= 0:
                continue
            ratio = r[0] / d[0]
            floor = results.get("floor", {}).get("servers", {}).get(f"trio-floor-w{workers}")
            beside = ""
            if flow == "plain" and floor:
                best = max(floor["rate"])
                beside = f"; trio alone at most {_f(best)}/s, {best / d[0]:.2f}×"
            out.append((
                f"{FLOW_TITLES[flow]}: peak sessions/s ≥ {target}× Dovecot (workers: {workers})",
                f"{ratio:.2f}× ({_f(r[0])}/s at c={r[1]} vs {_f(d[0])}/s at c={d[1]}{beside})",
                _other([cells.get((main, flow, r[1])), cells.get((dove, flow, d[1]))]),
                ratio >= target,
            ))  # fmt: skip
        for flow, factor in P99_TARGETS.items():
            worse, ratios, used = [], [], []
            for c in concs:
                a, b = cells.get((main, flow, c)), cells.get((dove, flow, c))
                if a and b and a["p99_ms"] is not None and b["p99_ms"] is not None:
                    used += [a, b]
                    ratios.append((a["p99_ms"] / b["p99_ms"], c))
                    if a["p99_ms"] > factor * b["p99_ms"]:
                        worse.append(f"c={c}: {_ms(a['p99_ms'])} vs {_ms(b['p99_ms'])} ms")
            if ratios:
                bound = "≤ Dovecot's" if factor == 1 else f"≤ {factor}× Dovecot's"
                top = max(ratios)
                out.append((
                    f"{FLOW_TITLES[flow]}: p99 {bound} at each concurrency",
                    ("all met" if not worse else "missed at " + "; ".join(worse))
                    + f" (worst {top[0]:.2f}× at c={top[1]})",
                    _other(used), not worse,
                ))  # fmt: skip
    if main:
        for flow, limit in CPU_US_TARGETS.items():
            rows = [(c, cells[main, flow, c]) for c in concs if (main, flow, c) in cells]
            rows = [(c, x) for c, x in rows if x["server_cpu_us_per_session"] is not None]
            if not rows:
                continue
            each = ", ".join(f"c={c}: {x['server_cpu_us_per_session']:.0f}" for c, x in rows)
            dv = [cells[dove, flow, c]["server_cpu_us_per_session"] for c, _ in rows
                  if dove and (dove, flow, c) in cells]  # fmt: skip
            dv = [v for v in dv if v is not None]
            ref = f"; Dovecot {min(dv):.0f}–{max(dv):.0f}" if dv else ""
            floor = results.get("floor", {}).get("servers", {}).get(f"trio-floor-w{workers}")
            if flow == "plain" and floor:
                median = statistics.median(floor["us_per_session"])
                ref += f"; trio alone (the floor part) {median:.0f} at c={results['floor']['conc']}"
            worst = max(x["server_cpu_us_per_session"] for _, x in rows)
            out.append((
                f"refd CPU per {FLOW_TITLES[flow]} session ≤ {limit:.0f} µs "
                f"(workers: {workers}, each concurrency)",
                f"{each} µs{ref}",
                _other([x for _, x in rows]), worst <= limit,
            ))  # fmt: skip
        # information for the README's certificate advice: which key type is faster
        rsa, ec = peak(results, main, "tls"), peak(results, main, "tls-ecdsa")
        if rsa and ec and rsa[0] > 0:
            text = f"refd {ec[0] / rsa[0]:.2f}×"
            if dove:
                drsa, dec = peak(results, dove, "tls"), peak(results, dove, "tls-ecdsa")
                if drsa and dec and drsa[0] > 0:
                    text += f", Dovecot {dec[0] / drsa[0]:.2f}×"
            out.append(("(no target) implicit TLS peak, ECDSA P-256 over RSA-2048", text,
                        _other([cells.get((main, f, p[1])) for f, p in
                                (("tls", rsa), ("tls-ecdsa", ec))]), None))  # fmt: skip
    for ht in sorted(results.get("hash_threads", {}).values(), key=lambda h: -h["workers"]):
        # refd.auth.hash_threads: one pool of a thread per core, in the
        # supervisor when there are workers (each worker's start line names
        # it), else in the one process.
        cores, per, pools = ht["cores"], ht["per_process"], ht.get("pools", [])
        if ht["workers"] > 1:
            ok = pools == [cores] and len(per) == ht["workers"] and set(per) == {cores}
            where = (f"the supervisor's start line `hash_threads={'+'.join(map(str, pools))}`,"
                     f" the workers' `hash_threads=`: {', '.join(map(str, per)) or 'none found'}")
        else:
            ok = per == [cores]
            where = f"start line `hash_threads=`: {', '.join(map(str, per)) or 'none found'}"
        out.append((
            f"hashing threads, workers: {ht['workers']} on {cores} cores: "
            f"one pool of {cores} threads, shared by every worker",
            where, "-", ok,
        ))  # fmt: skip
    for row in results.get("memory", []):
        if row["server"] != main or row["kib_per_conn"] is None:
            continue
        target = MEM_TARGET_KIB[row["tls"]]
        out.append((
            f"memory per idle {'TLS' if row['tls'] else 'plaintext'} connection ≤ {target:.0f} KiB",
            f"{row['kib_per_conn']:.1f} KiB (at {row['held']} connections)",
            "-", row["kib_per_conn"] <= target,
        ))  # fmt: skip
    ex = results.get("routing", {}).get("exact")
    if ex:
        out.append((f"{ex['n']:,}-user table loads in ≤ {TABLE_LOAD_S:.0f} s",
                    f"{ex['load_s']:.2f} s", "-", ex["load_s"] <= TABLE_LOAD_S))  # fmt: skip
        limit = LOOKUP_US["exact"]
        floor = f" (a bare `dict.get`: {ex['dict_get_us']:.2f} µs)" if "dict_get_us" in ex else ""
        out.append((f"exact-user lookup ({ex['n']:,}-user table) ≤ {limit:g} µs",
                    f"{ex['lookup_us']:.2f} µs{floor}", "-", ex["lookup_us"] <= limit))  # fmt: skip
    gl = results.get("routing", {}).get("globs")
    if gl:
        limit = LOOKUP_US["globs"]
        out.append((f"{gl['n']:,} `*@domain` glob rules: lookup ≤ {limit:g} µs",
                    f"{gl['lookup_us']:.2f} µs", "-", gl["lookup_us"] <= limit))  # fmt: skip
    for row in results.get("reload", []):
        rl = row.get("reload")
        if rl:
            out.append((
                f"event-loop stall during reload ≤ {RELOAD_STALL_MS:.0f} ms, "
                f"workers: {row['workers']} ({row['users']:,} users)",
                f"max NOOP gap {rl['gap_max_ms']:.1f} ms (baseline {row['baseline']['gap_max_ms']:.1f} ms)",
                "-", rl["gap_max_ms"] <= RELOAD_STALL_MS,
            ))  # fmt: skip
    return out


def machine_load(results: dict[str, Any]) -> str:
    """One paragraph: the run's load averages and the other processes' CPU in its cells."""
    text = (
        f"Machine load: load average (1, 5, 15 min) {results['load_start']} at the start and "
        f"{results.get('load_end')} at the end of the run"
    )
    for later in results.get("merged", []):
        text += (f"; {', '.join(later['parts'])} rerun {later['date']}: "
                 f"{later['load_start']} / {later['load_end']}")  # fmt: skip
    tp = results.get("throughput", [])
    if tp:
        vals = sorted(c["other_cpu_pct"] for c in tp)
        top = max(tp, key=lambda c: c["other_cpu_pct"])
        text += (
            f". CPU used by other processes (`other %`, % of one core) in the {len(tp)} "
            f"throughput cells: median {vals[len(vals) // 2]:.0f} %, highest "
            f"{top['other_cpu_pct']:.0f} % ({top['server']} {top['flow']} c={top['conc']}); "
            "the `other %` column below is the highest in the cells each verdict rests on"
        )
    return text + ".\n"


def _ldap_servers(cells: list[dict[str, Any]]) -> list[str]:
    names = {c["server"] for c in cells}
    mains = sorted(n for n in names if n.startswith("refd-w") and n != "refd-w1")
    return [n for n in ("dovecot", *mains, "refd-w1") if n in names]


def render_ldap(results: dict[str, Any]) -> list[str]:
    """The "LDAP bind source" section (or a line saying it was not run)."""
    L = ["## LDAP bind source\n"]
    ld = results.get("ldap")
    if not ld:
        L.append("Not run in this run (`bench/run --parts ldap`: see `bench/README.md`).\n")
        return L
    cells = ld.get("cells", [])
    names = _ldap_servers(cells)
    main = next((n for n in names if n.startswith("refd-w") and n != "refd-w1"), None)
    main = main or ("refd-w1" if "refd-w1" in names else None)
    dove = "dovecot" if "dovecot" in names else None
    L.append(
        f"One private OpenLDAP slapd with {ld['users']:,} users (`uid=ldap-NNNNNN`, "
        "`{SSHA}` passwords with a salt each, a `mailHost` each); refd's `ldap` source in "
        "bind mode and Dovecot's `passdb ldap` with `auth_bind = yes` ask the *same* slapd "
        "over `ldap://127.0.0.1`: a search as the service account, then a bind as the "
        "user's DN, on every login (no auth cache on either side). Both answer with a "
        "login referral to the user's `mailHost` (Dovecot: `pass_attrs` `mailHost=host` "
        "and `=nologin=y`, its documented referral). One session = connect, greeting, "
        "`LOGIN`, tagged answer, `LOGOUT`, server's close, *c* clients in a closed loop "
        "(`bench/loadgen.c`, as for the login-referral tables); each cell measured on the "
        "servers back to back. "
        "`µs/sess` is the server's CPU per session, `slapd µs` the directory's CPU per "
        "session while that server ran; `other` is CPU used by anything but the servers, "
        "slapd and the generator (other people's jobs), % of one core.\n"
    )
    L.append(
        f"Run {ld['date']} (refd commit {ld['refd_commit']}), {ld['duration_s']} s; load "
        f"average at start / end {ld['load_start']} / {ld['load_end']}; "
        f"{ld.get('slapd', 'slapd')}.\n"
    )
    if cells:
        by = {(c["server"], c["conc"]): c for c in cells}
        head, sep = "| c |", "|---|"
        for n in names:
            head += f" {n} /s | p50 ms | p99 ms | µs/sess | slapd µs |"
            sep += "---|---|---|---|---|"
        if dove and main:
            head += " ratio |"
            sep += "---|"
        head += " errors | gen % | other % |"
        sep += "---|---|---|"
        L += [head, sep]
        for c in sorted({k[1] for k in by}):
            line = f"| {c} |"
            errs, gen, other = [], [], []
            for n in names:
                x = by.get((n, c))
                if x is None:
                    line += " - | - | - | - | - |"
                    continue
                line += (f" {_f(x['rate'])} | {_ms(x['p50_ms'])} | {_ms(x['p99_ms'])} |"
                         f" {_f(x['server_cpu_us_per_session'], 0)} |"
                         f" {_f(x.get('directory_cpu_us_per_session'), 0)} |")  # fmt: skip
                errs.append(str(sum(v for k, v in x["errors"].items() if k != "cut_at_end")))
                gen.append(f"{x['gen_cpu_pct']:.0f}")
                other.append(f"{x['other_cpu_pct']:.0f}")
            if dove and main:
                a, b = by.get((main, c)), by.get((dove, c))
                line += f" {a['rate'] / b['rate']:.2f}× |" if a and b and b["rate"] else " - |"
            line += f" {'/'.join(errs)} | {'/'.join(gen)} | {'/'.join(other)} |"
            L.append(line)
        L.append("")
        if dove and main:
            d, r = (
                max((by[k] for k in by if k[0] == dove), key=lambda x: x["rate"]),
                max((by[k] for k in by if k[0] == main), key=lambda x: x["rate"]),
            )
            if d["rate"]:
                L.append(
                    f"Peak: {main} {_f(r['rate'])}/s (c={r['conc']}) vs Dovecot "
                    f"{_f(d['rate'])}/s (c={d['conc']}): {r['rate'] / d['rate']:.2f}×. "
                    "No target is set for this flow.\n"
                )
        bad = [x for x in cells if x["first_bad"]]
        if bad:
            first = [f"{x['server']} c={x['conc']}: `{x['first_bad']}`" for x in bad[:4]]
            L.append("First unexpected answers: " + "; ".join(first) + "\n")
    answers = ld.get("answers")
    if answers:
        L.append("Checked before the cells (user 1's `mailHost` is `mail2.example.org`):\n")
        L.append("```")
        L += [f"{n}: {a}" for n, a in answers.items()]
        L.append("```\n")
    lk = ld.get("lookup")
    if lk:
        L.append(
            f"**Route lookup** (`LdapSource.lookup`, refd's in-process API behind routing, "
            f"`refd explain` and `refd probe`), {lk['names']:,} users: answered by the route "
            f"cache **{lk['cached_lookup_us']:.2f} µs** per call (best of 3 passes of "
            f"{lk['lookups']:,} calls); not cached, one search round trip to slapd "
            f"{lk['uncached_lookup_us']:,.0f} µs per call.\n"
        )
        L.append(f"```\n{lk['command']}\n```\n")
    configs = ld.get("configs")
    if configs:
        for name, text in configs.items():
            L.append(
                f"<details><summary>{name} (ldap part)</summary>\n\n```\n{text.rstrip()}\n```\n"
                "</details>\n"
            )
    return L


def render(results: dict[str, Any]) -> str:
    env = results["env"]
    prof = results["profile"]
    dove, main, one = _servers(results)
    cells = _cells(results)
    L: list[str] = []
    L.append("# refd vs Dovecot: benchmark results\n")
    if prof["name"] != "full":
        L.append(
            f"> **{prof['name']} run** (smoke: {prof['window_s']} s windows, "
            f"{prof['idle_conns']} idle connections, {prof['routing_users']:,}-user table): "
            "numbers are indicative only.\n"
        )
    L.append("Written by `bench/run` (see `bench/README.md` for the method). Everything ran on")
    L.append("this one machine, on 127.0.0.1, in one run; the three servers were up at the same")
    L.append("time and every cell was measured on each of them back to back.\n")
    L.append("## Machine and versions\n")
    L.append("| | |\n|---|---|")
    rows = [
        ("date", env["date"]),
        ("nproc", env["nproc"]),
        ("CPU", env["cpu_model"]),
        ("memory", f"{env['mem_gib']} GiB"),
        ("kernel", env["kernel"]),
        ("load average at start / end (1, 5, 15 min)",
         f"{results['load_start']} / {results.get('load_end')}"),
        ("refd", f"{env['refd_version']} (commit {env['refd_commit']}"
                 f"{', refd/ modified' if env['refd_dirty'] else ''}), "
                 f"workers: {results.get('cores')} and 1"),
        ("Python / trio / Python's OpenSSL", f"{env['python']} / {env['trio']} / {env['python_openssl']}"),
        ("the interpreter running refd", env.get("python_binary", "?")),
        ("refd's hot path (refd/compiled.py)", env.get("refd_build", "interpreted")),
        ("Dovecot", env["dovecot"]),
        ("openssl (Dovecot, load generator)", env["openssl"]),
        ("C compiler", env["cc"]),
        ("fd limit", env["fd_limit"]),
        ("run time", f"{results.get('duration_s')} s"),
    ]  # fmt: skip
    for later in results.get("merged", []):
        rows.append((f"later run of {', '.join(later['parts'])}",
                     f"{later['date']}, commit {later['refd_commit']}, load "
                     f"{later['load_start']} / {later['load_end']}, {later['duration_s']} s: "
                     f"`{later['command']}`"))  # fmt: skip
    for k, v in rows:
        L.append(f"| {k} | {v} |")
    L.append("\nExact commands:\n")
    L.append("```")
    user_args = env.get("user_args", "--quick" if prof["name"] == "quick" else "")
    L.append(
        f"REFD_BENCH_PYTHON={env.get('python_path', 'python3')} bench/run {user_args}".rstrip()
    )
    L.append(f"# which ran: {env['bench_command']}")
    L.append(f"# load generator: {env['loadgen_build']}")
    L.append(
        "# refd: python -m refd serve -c <work>/tp-refd-wN/refd.yaml   (config in bench/servers.py)"
    )
    L.append(
        "# Dovecot: dovecot -F -c <work>/tp-dovecot/dovecot.conf        (config in bench/servers.py)"
    )
    L.append("```\n")

    L.append("## Targets\n")
    L.append(
        f"Ratios are refd with `workers: {results.get('cores')}` over Dovecot, both measured in this run.\n"
    )
    L.append(machine_load(results))
    L.append("| target | measured | other % | verdict |\n|---|---|---|---|")
    for target, measured, other, met in verdicts(results):
        L.append(f"| {target} | {measured} | {other} | {_ok(met)} |")
    L.append("")
    served = results.get("tls_served")
    if served:
        L.append("Certificates the implicit-TLS ports served (`openssl s_client`, default client "
                 "settings like the load generator's, then `openssl x509`):\n")  # fmt: skip
        L.append("| flow | server | key | signature | session |\n|---|---|---|---|---|")
        for flow, by_server in served.items():
            for name, seen in by_server.items():
                L.append(f"| {flow} | {name} | {seen.get('key_algorithm', '?')}, "
                         f"{seen.get('key', '?')} | {seen.get('signature', '?')} | "
                         f"{seen.get('session', '?')} |")  # fmt: skip
        L.append("")

    if results.get("throughput"):
        L.append("## Login-referral sessions\n")
        L.append(
            "One session = connect, greeting, `LOGIN`, tagged answer, `LOGOUT`, server's close; "
            "closed loop with *c* concurrent clients. Latency is per whole session. "
            "`gen` is the load generator's CPU, `other` is CPU used on the machine by anything "
            "but the server and the generator (other people's jobs), both in % of one core over "
            "the cell; `µs/sess` is the server's CPU time per completed session (all its "
            "processes).\n"
        )
        concs = sorted({k[2] for k in cells})
        flows = [f for f in FLOW_TITLES if any(k[1] == f for k in cells)]
        for flow in flows:
            L.append(f"### {FLOW_TITLES[flow]}\n")
            if flow == "mailbox":
                L.append(
                    "refd: `LOGIN` → `OK [REFERRAL …]` (login: accept), `SELECT Shared/x` → "
                    "`NO [REFERRAL imap://…@shared1…/Shared/x]`, `LOGOUT`. Dovecot cannot send "
                    "mailbox referrals; its column is the nearest flow it has: a real login "
                    "(passdb `host=` without `nologin`; Dovecot 2.3.19 answers a plain "
                    "`OK [CAPABILITY …] Logged in`, no referral) with an imap process, then "
                    "`SELECT Shared/x` → `NO Mailbox doesn't exist`. Not a like-for-like "
                    "comparison, so no target; shown for scale.\n"
                )
            head = "| c |"
            sep = "|---|"
            for name in (dove, main, one):
                if name:
                    head += f" {name} /s | p50 ms | p99 ms | µs/sess |"
                    sep += "---|---|---|---|"
            if dove and main:
                head += " ratio |"
                sep += "---|"
            head += " errors | gen % | other % |"
            sep += "---|---|---|"
            L.append(head)
            L.append(sep)
            for c in concs:
                line = f"| {c} |"
                errs, gen, other = [], [], []
                for name in (dove, main, one):
                    if not name:
                        continue
                    x = cells.get((name, flow, c))
                    if x is None:
                        line += " - | - | - | - |"
                        continue
                    line += (f" {_f(x['rate'])} | {_ms(x['p50_ms'])} | {_ms(x['p99_ms'])} |"
                             f" {_f(x['server_cpu_us_per_session'], 0)} |")  # fmt: skip
                    e = sum(v for k, v in x["errors"].items() if k != "cut_at_end")
                    errs.append(str(e))
                    gen.append(f"{x['gen_cpu_pct']:.0f}")
                    other.append(f"{x['other_cpu_pct']:.0f}")
                if dove and main:
                    a, b = cells.get((main, flow, c)), cells.get((dove, flow, c))
                    line += f" {a['rate'] / b['rate']:.2f}× |" if a and b and b["rate"] else " - |"
                line += f" {'/'.join(errs)} | {'/'.join(gen)} | {'/'.join(other)} |"
                L.append(line)
            target = RATIO_TARGETS.get(flow)
            if target:
                line = f"\nTargets: peak refd ≥ {target}× Dovecot"
                if flow in P99_TARGETS:
                    line += f"; p99 ≤ {P99_TARGETS[flow]:g}× Dovecot's at each concurrency"
                if flow in CPU_US_TARGETS:
                    line += f"; refd ≤ {CPU_US_TARGETS[flow]:.0f} µs CPU per session"
                if flow in KNOWN_DOVECOT:
                    line += (f". Reference figure for tuned Dovecot on a faster machine: "
                             f"about {KNOWN_DOVECOT[flow]:,}/s")  # fmt: skip
                L.append(line + ".\n")
            else:
                L.append("")
            bad = [x for x in cells.values() if x["flow"] == flow and x["first_bad"]]
            if bad:
                L.append("First unexpected answers: " + "; ".join(
                    f"{x['server']} c={x['conc']}: `{x['first_bad']}`" for x in bad[:4]) + "\n")  # fmt: skip

    fl = results.get("floor")
    if fl:
        L.append("## The floor under a PLAIN session: trio alone\n")
        L.append(
            "`bench/floor_server.py` serves the same bytes as refd's PLAIN flow and does "
            "nothing else (no parsing, password, lookup, log line or metric), using trio "
            "only to wait: plain non-blocking sockets, `os.read` and `os.write`, no "
            "`SocketStream`, cancel scope or checkpoint of its own. It runs in one process "
            "and in as many as refd has workers (one listening socket); they and refd took "
            f"turns, cell by cell, at c={fl['conc']}. What refd costs above the floor is its "
            "own work and trio's streams, scopes and checkpoints it uses; the floor itself "
            "is trio's scheduler and the kernel's loopback TCP. It is the leanest trio "
            "server we know, not a proven bound.\n"
        )
        L.append("| server | µs/sess per cell | median | sessions/s per cell | other % per cell |")
        L.append("|---|---|---|---|---|")
        for name, row in fl["servers"].items():
            us = row["us_per_session"]
            L.append(
                f"| {name} | {', '.join(f'{v:,.0f}' for v in us)} | "
                f"**{statistics.median(us):,.0f}** | "
                f"{', '.join(f'{v:,.0f}' for v in row['rate'])} | "
                f"{', '.join(str(v) for v in row['other_pct'])} |"
            )
        L.append("")

    ins = results.get("instructions")
    if ins:
        L.append("## Instructions per PLAIN session (callgrind)\n")
        L.append(
            "Each server alone under `valgrind --tool=callgrind`, one process, counting from "
            "after 200 warm-up sessions until the load generator has run the counted ones "
            f"(PLAIN login referrals at c={ins['conc']}; `bench/instructions.py`). User-space "
            "instructions only: the kernel's socket work and the cache misses that make an "
            "instruction cost more under load are not counted. The count does not move with "
            "the host's load (one tree repeats within about 1 %), so this is the measure of "
            "refd's own work that runs can be compared by.\n"
        )
        L.append("| server | sessions counted | instructions per session | × the floor |")
        L.append("|---|---|---|---|")
        floor = ins["servers"].get("trio-floor-w1")
        for name, row in ins["servers"].items():
            times = f"{row['per_session'] / floor['per_session']:.2f}×" if floor else "-"
            L.append(f"| {name} | {row['sessions']:,} | {row['per_session']:,} | {times} |")
        L.append("")

    if results.get("memory"):
        L.append("## Memory per idle pre-login connection\n")
        L.append(
            "A fresh server per row; 300 warm-up sessions; RSS summed over all the server's "
            "processes; then N connections that read the greeting and stay idle; RSS again 2 s "
            "later; (after − before) / N. Dovecot's imap-login has `client_limit` 1000, so it "
            "starts more login processes for N > 1000: their whole RSS is part of its cost.\n"
        )
        L.append(
            "| server | TLS | connections | RSS before MiB | RSS after MiB | processes | KiB per connection | target |"
        )
        L.append("|---|---|---|---|---|---|---|---|")
        for r in results["memory"]:
            L.append(
                f"| {r['server']} | {'yes' if r['tls'] else 'no'} | {r['held']} | "
                f"{r['rss_before_mib']:.1f} | {r['rss_after_mib']:.1f} | "
                f"{r['processes_before']} → {r['processes_after']} | "
                f"{_f(r['kib_per_conn'])} | "
                f"{'≤ ' + format(MEM_TARGET_KIB[r['tls']], '.0f') + ' KiB' if r['server'] != 'dovecot' else '-'} |"
            )
        L.append("")

    rt = results.get("routing")
    if rt:
        L.append("## Routing table\n")
        L.append(
            "`bench/routing_bench.py`, one fresh process per table: `refd.config.load_routing` "
            "(what the daemon calls), then `RoutingTable.route_user` on random users (best of 3 "
            "passes). Memory is RSS after the load minus before (after `gc.collect()`); the "
            "peak is the process's maximum RSS.\n"
        )
        L.append(
            "| table | file MiB | load s | table MiB | bytes/entry | peak RSS MiB | lookup µs | lookups/s | notes |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|")
        ex = rt.get("exact")
        if ex:
            L.append(
                f"| {ex['n']:,} exact users (`user_map`) | {ex['file_mib']} | {ex['load_s']:.2f} | "
                f"{ex['table_mib']} | {ex['bytes_per_entry']} | {ex['peak_rss_mib']} | "
                f"{ex['lookup_us']:.2f} | {ex['lookups_per_s']:,} | miss {ex['miss_us']:.2f} µs; "
                f"upper-case domain {ex['lookup_upper_domain_us']:.2f} µs; `login_referral` "
                f"(lookup + URL) {ex['login_referral_us']:.2f} µs"
                + (
                    f"; a bare `dict.get` in a dict of the same keys {ex['dict_get_us']:.2f} µs"
                    if "dict_get_us" in ex
                    else ""
                )
                + " |"
            )
        pt = rt.get("patterns")
        if pt:
            L.append(
                f"| {pt['n']:,} pattern rules (globs + regexes) | {pt['file_mib']} | "
                f"{pt['load_s']:.2f} | {pt['table_mib']} | {pt['bytes_per_entry']} | "
                f"{pt['peak_rss_mib']} | {pt['lookup_us']:.1f} | {pt['lookups_per_s']:,} | "
                f"first rule {pt['first_rule_us']:.2f} µs; no match (default) "
                f"{pt['default_rule_us']:.0f} µs: first match wins, a linear scan |"
            )
        gl = rt.get("globs")
        if gl:
            L.append(
                f"| {gl['n']:,} `*@domain` glob rules | {gl['file_mib']} | {gl['load_s']:.2f} | "
                f"{gl['table_mib']} | {gl['bytes_per_entry']} | {gl['peak_rss_mib']} | "
                f"{gl['lookup_us']:.2f} | {gl['lookups_per_s']:,} | no match (default) "
                f"{gl['default_rule_us']:.2f} µs: the domain index |"
            )
        L.append(
            f"\nTargets: 1M-user table loads in ≤ {TABLE_LOAD_S:g} s, exact lookups "
            f"≤ {LOOKUP_US['exact']:g} µs, 10,000 `*@domain` globs ≤ {LOOKUP_US['globs']:g} µs "
            "per lookup.\n"
        )

    rl = results.get("reload")
    if rl:
        L.append("## Event-loop stall during reload\n")
        L.append(
            "refd with a table of the bench users plus a large `user_map`; login-referral load "
            "(PLAIN, paced at 200 sessions/s, at most 16 at once: far below capacity, so gaps "
            "show stalls, not queueing) and 2×workers NOOP probes (logged-in sessions sending `NOOP` in a "
            "tight loop). *baseline*: the same without reloads; *reload*: SIGHUP, wait until "
            "every worker logged `reload ok`, repeat. The client's view is the longest gap "
            "between two NOOP answers on one connection; refd's own view is the number of "
            "NOOPs its `refd_command_duration_seconds` histogram put above 50 ms.\n"
        )
        L.append(
            "| workers | users | start s | phase | NOOPs | max gap ms | p99.9 gap ms | gaps > 50 ms | reload wall s | refd: NOOPs > 50 ms | load /s | load p99 ms | load max ms |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rl:
            for phase in ("baseline", "reload"):
                x = r.get(phase)
                if not x:
                    continue
                L.append(
                    f"| {r['workers']} | {r['users']:,} | {r['startup_s']:.1f} | {phase} | "
                    f"{x['noops']:,} | {x['gap_max_ms']:.1f} | {x['gap_p999_ms']:.1f} | "
                    f"{x['gaps_over_50ms']} | {', '.join(map(str, x['reload_wall_s'])) or '-'} | "
                    f"{x['refd_noops_over_50ms']:.0f}"
                    f"{' (' + x['refd_slowest_noop_bucket'] + ')' if x['refd_slowest_noop_bucket'] else ''} | "
                    f"{_f(x['load_rate'])} | {_ms(x['load_p99_ms'])} | {_ms(x['load_max_ms'])} |"
                )
        L.append(f"\nTarget: no event-loop stall over {RELOAD_STALL_MS:.0f} ms during reload.\n")
    L += render_ldap(results)
    pr = results.get("profiles")
    if pr and pr.get("runs"):
        L.append("## Where refd's time goes (py-spy)\n")
        L.append(
            f"`py-spy record -r 200 --nonblocking -f raw` for {pr['seconds']} s on refd under "
            f"load at c={pr['conc']} (workers=1: the whole server; workers=N: one worker). "
            "Samples of running threads (the event loop and hashing threads); time in C "
            "(syscalls, OpenSSL, bcrypt) is charged to the Python frame that called it. "
            "Summarised by `bench/profile_summary.py`; shares are of all samples.\n"
        )
        for run in pr["runs"]:
            L.append(f"**{FLOW_TITLES.get(run['flow'], run['flow'])}, workers={run['workers']}** "
                     f"({_f(run['rate'])} sessions/s while profiled, {run['samples']} samples)\n")  # fmt: skip
            L.append(
                "| by category | % | hottest functions (self) | % | charged to refd code | % |"
            )
            L.append("|---|---|---|---|---|---|")
            rows = max(len(run["categories"][:8]), 8)
            for i in range(rows):
                cells_ = []
                for key in ("categories", "self", "self_in_focus"):
                    items = run[key]
                    if i < len(items):
                        cells_ += [
                            f"`{items[i][0]}`" if key != "categories" else items[i][0],
                            f"{items[i][1]}",
                        ]
                    else:
                        cells_ += ["", ""]
                L.append("| " + " | ".join(cells_) + " |")
            L.append("")
    notes = results.get("notes")
    if notes:
        L.append(notes.rstrip() + "\n")
    configs = results.get("configs")
    if configs:
        L.append("## Appendix: configurations and commands\n")
        L.append("As written by `bench/servers.py` for the throughput part (`<work>` is the run's "
                 "temporary directory).\n")  # fmt: skip
        for name, text in configs.items():
            L.append(
                f"<details><summary>{name}</summary>\n\n```\n{text.rstrip()}\n```\n</details>\n"
            )
        examples = {}
        for c in results.get("throughput", []):
            key = (c["flow"], c["server"].startswith("refd"))
            if c.get("command") and key not in examples and c["conc"] == 64:
                examples[key] = c["command"]
        if examples:
            L.append("Load generator, one cell per flow at c=64 (`-p` is the server's port):\n")
            L.append("```")
            for (flow, is_refd), cmd in examples.items():
                L.append(f"# {flow}, {'refd' if is_refd else 'dovecot'}")
                L.append(cmd)  # the generator and a port: no <work> path in it
            L.append("```\n")
    return "\n".join(L) + "\n"


def console_table(results: dict[str, Any]) -> str:
    dove, main, one = _servers(results)
    cells = _cells(results)
    out = []
    if cells:
        names = [n for n in (dove, main, one) if n]
        out.append(f"{'flow':9} {'c':>4} " + " ".join(f"{n + ' /s':>12} {'p99ms':>8}" for n in names)
                   + ("   ratio" if dove and main else ""))  # fmt: skip
        for flow in FLOW_TITLES:
            for c in sorted({k[2] for k in cells}):
                row = [cells.get((n, flow, c)) for n in names]
                if not any(row):
                    continue
                line = f"{flow:9} {c:>4} "
                line += " ".join(
                    f"{x['rate']:12.1f} {_ms(x['p99_ms']):>8}" if x else f"{'-':>12} {'-':>8}"
                    for x in row
                )
                if dove and main:
                    a, b = cells.get((main, flow, c)), cells.get((dove, flow, c))
                    line += (
                        f"  {a['rate'] / b['rate']:5.2f}x" if a and b and b["rate"] else "      -"
                    )
                out.append(line)
    ld = results.get("ldap")
    if ld and ld.get("cells"):
        names = _ldap_servers(ld["cells"])
        by = {(c["server"], c["conc"]): c for c in ld["cells"]}
        out.append(
            f"{'ldap':8} {'c':>4} " + " ".join(f"{n + ' /s':>12} {'p99ms':>8}" for n in names)
        )
        for c in sorted({k[1] for k in by}):
            out.append(f"{'ldap':8} {c:>4} " + " ".join(
                f"{by[n, c]['rate']:12.1f} {_ms(by[n, c]['p99_ms']):>8}" if (n, c) in by
                else f"{'-':>12} {'-':>8}" for n in names))  # fmt: skip
    if ld and ld.get("lookup"):
        out.append(f"ldap cached route lookup: {ld['lookup']['cached_lookup_us']:.2f} µs")
    for target, measured, _n, met in verdicts(results):
        out.append(
            f"[{'ok  ' if met else 'MISS' if met is not None else '    '}] {target}: {measured}"
        )
    return "\n".join(out)
