#!/usr/bin/env python3
# ruff: noqa: S603
"""Login referrals per second with the ldap source (bind mode), and the cached route lookup.

    bench/ldap_bench.py                          # 1,000 users, 32 clients, 10 s, StartTLS
    bench/ldap_bench.py --clients 64 --seconds 20 --tls none
    bench/ldap_bench.py --json /tmp/ldap.json

Starts a private OpenLDAP slapd (``tests/interop/slapd.py``: loopback, its own
config directory, ``--users`` entries with ``{SSHA}`` passwords and a
``mailHost`` each, loaded with slapadd) and ``refd serve`` (``python -m refd``
from this checkout) with ``auth.source: ldap`` in bind mode against it. Then
``--clients`` concurrent IMAP clients each loop for ``--seconds``: connect, read
the greeting, ``LOGIN userNNNN pw-NNNN``, read the tagged answer (it must be
``NO [REFERRAL imap://userNNNN;AUTH=*@mailN.example.org...]``, the user's
``mailHost``), close. Prints login referrals per second and the latency
percentiles.

Then, in this process, the cost of a route lookup answered by the route cache
(`LdapSource.lookup` for a user looked up before), averaged over ``--lookups``.

Needs slapd and ldap-utils (``apt-get install slapd ldap-utils``) and the test
extras (trustme). Both processes stop at the end (by PID).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402
import trustme  # noqa: E402

from refd.auth.ldap import LdapServer, LdapSettings, LdapSource  # noqa: E402
from tests.interop.dovecot import ServerCert  # noqa: E402
from tests.interop.slapd import (  # noqa: E402
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    LdapUser,
    find_slapd,
    ssha,
    start_slapd,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refd_config(work: Path, url: str, starttls: bool, pool_size: int, port: int) -> Path:
    shutil.copy(REPO / "refd" / "demo" / "routing.yaml", work / "routing.yaml")
    (work / "ldap.secret").write_text(SERVICE_PASSWORD + "\n")
    tls = "    starttls: true\n    ca_file: ca.pem\n" if starttls else ""
    (work / "refd.yaml").write_text(
        "routing: routing.yaml\n"
        "auth:\n"
        "  source: ldap\n"
        "  ldap:\n"
        f"    servers: [{url}]\n"
        f"{tls}"
        f"    bind_dn: {SERVICE_DN}\n"
        "    bind_password_file: ldap.secret\n"
        f"    base: {PEOPLE}\n"
        '    user_filter: "(&(objectClass=inetOrgPerson)(uid=%u))"\n'
        "    route_attribute: mailHost\n"
        f"    pool_size: {pool_size}\n"
        "listeners:\n"
        f"  - {{address: 127.0.0.1, port: {port}}}\n"
        "limits:\n"
        "  max_connections_per_address: 10000\n"
        "log:\n"
        "  level: warning\n"
    )
    return work / "refd.yaml"


def wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"refd exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("refd did not listen in time")


async def drive(port: int, users: int, clients: int, seconds: float) -> tuple[int, list[float]]:
    done = 0
    latencies: list[float] = []
    stop_at = trio.current_time() + seconds

    async def client(k: int) -> None:
        nonlocal done
        n = k
        while trio.current_time() < stop_at:
            user = f"user{n % users:04d}"
            started = time.perf_counter()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                buf = b""
                while b"\r\n" not in buf:
                    buf += await stream.receive_some(4096)
                await stream.send_all(f"a1 LOGIN {user} pw-{n % users:04d}\r\n".encode())
                buf = b""
                while b"a1 " not in buf:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    buf += chunk
            want = f"a1 NO [REFERRAL imap://{user};AUTH=*@mail".encode()
            if want not in buf:
                raise SystemExit(f"unexpected answer for {user}: {buf!r}")
            latencies.append(time.perf_counter() - started)
            done += 1
            n += clients

    with trio.fail_after(seconds + 60):
        async with trio.open_nursery() as nursery:
            for k in range(clients):
                nursery.start_soon(client, k)
    return done, latencies


async def lookup_cost(url: str, lookups: int) -> float:
    source = LdapSource(
        LdapSettings(
            servers=(LdapServer.from_url(url),),
            base=PEOPLE,
            user_filter="(&(objectClass=inetOrgPerson)(uid=%u))",
            bind_dn=SERVICE_DN,
            bind_password=SERVICE_PASSWORD,
            route_attribute="mailHost",
            route_cache_max_entries=lookups,
        )
    )
    try:
        names = [f"user{n % 1000:04d}" for n in range(lookups)]
        for name in set(names):
            await source.lookup(name)
        started = time.perf_counter()
        for name in names:
            route = await source.lookup(name)
            assert route.cached
        return (time.perf_counter() - started) / lookups
    finally:
        source.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pool-size", type=int, default=16)
    parser.add_argument("--tls", choices=("starttls", "none"), default="starttls")
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    slapd = find_slapd()
    if slapd is None:
        raise SystemExit("slapd not installed: apt-get install slapd ldap-utils")
    work = Path(tempfile.mkdtemp(prefix="refd-ldap-bench-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert = ServerCert(
        b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes()
    )
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    users = [
        LdapUser(f"user{n:04d}", ssha(f"pw-{n:04d}"), mail_host=f"mail{n % 2 + 1}.example.org")
        for n in range(args.users)
    ]
    directory = start_slapd(slapd, work / "slapd", cert, ca.cert_pem.bytes(), users)
    port = free_port()
    config = refd_config(work, directory.url, args.tls == "starttls", args.pool_size, port)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    refd = subprocess.Popen(
        [sys.executable, "-m", "refd", "serve", "-c", str(config)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, refd)
        done, latencies = trio.run(drive, port, args.users, args.clients, args.seconds)
        per_lookup = trio.run(lookup_cost, directory.url, args.lookups)
    finally:
        refd.terminate()
        refd.wait(timeout=10)
        directory.stop()
        shutil.rmtree(work, ignore_errors=True)
    quantiles = statistics.quantiles(latencies, n=100)
    result = {
        "users": args.users,
        "clients": args.clients,
        "seconds": args.seconds,
        "tls": args.tls,
        "pool_size": args.pool_size,
        "login_referrals": done,
        "login_referrals_per_s": done / args.seconds,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "cached_lookup_us": per_lookup * 1e6,
        "load_average": os.getloadavg(),
    }
    print(
        f"ldap bind source ({args.tls}, pool {args.pool_size}), {args.clients} clients: "
        f"{done / args.seconds:.0f} login referrals/s "
        f"(p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms)"
    )
    print(f"cached route lookup: {result['cached_lookup_us']:.1f} µs")
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
