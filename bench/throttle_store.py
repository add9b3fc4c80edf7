"""Round trip of the login throttle per store, in one fresh process.

    PYTHONPATH=. python bench/throttle_store.py [N]

Times N sequential ``Throttle.failed`` calls (what one failed login costs
the door: four HMAC keys, the local table, and the shared store) and N raw
``add`` operations of four keys on the store itself, for each store: the
local table, the supervisor's table over its Unix socket (served in this
process, as the supervisor does), and Redis (a private ``redis-server`` on a
free loopback port, started and stopped here).  Prints one JSON line per
store with the mean, median and 99th percentile in microseconds.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from refd.config.loader import StoreConfig
from refd.metrics import Metrics
from refd.store import Store, Throttle, serve_store
from refd.throttle import CounterTable, ThrottleRules

RULES = ThrottleRules()
KEYS = ["refd:a:bench", "refd:n:bench", "refd:u:bench", "refd:p:bench"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
    }


async def timed(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    for i in range(min(n, 100)):  # warm up (connections, scripts)
        await call(i)
    out = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - started)
    return out


async def measure(name: str, n: int, throttle: Throttle, store: Store) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(throttle.run)
        raw = await timed(n, lambda i: store.add(KEYS, 900))
        login = await timed(
            n,
            lambda i: throttle.failed(f"198.51.100.{i % 250}", f"u{i}", RULES, base_s=2, max_s=15),
        )
        assert not throttle.degraded, f"{name}: the store did not answer"
        print(json.dumps({"store": name, "n": n, "add": stats(raw), "failed": stats(login)}))
        nursery.cancel_scope.cancel()


async def main(n: int, work: Path) -> None:
    local = Throttle(Metrics())
    await measure("local", n, local, local.local)

    path = work / "throttle.sock"
    (work / "secret").write_text("s" * 32)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_store, CounterTable(trio.current_time), path)
        worker = Throttle(Metrics(), socket_path=path)
        assert worker.shared is not None
        await measure("supervisor", n, worker, worker.shared)
        nursery.cancel_scope.cancel()

    binary = shutil.which("redis-server")
    if binary is None:
        print(json.dumps({"store": "redis", "skipped": "redis-server not installed"}))
        return
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 (redis-server from PATH, fixed arguments)
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        config = StoreConfig(
            kind="redis", redis_url=f"redis://127.0.0.1:{port}/0", secret=b"s" * 32
        )
        redis = Throttle(Metrics(), config)
        assert redis.shared is not None
        await trio.sleep(0.3)
        await measure("redis", n, redis, redis.shared)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory(prefix="refd-store-bench-") as tmp:
        trio.run(main, count, Path(tmp))
