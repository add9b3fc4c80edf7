"""The throttle store on a real redis-server (started here on loopback).

In this process: the Redis store answers exactly as the local table does,
its keys are HMACs that expire, and when Redis dies or stops answering the
throttle serves from its own counters within the timeout, logs the outage
once and the recovery once, counts it, and (``on_store_error: closed``)
answers NO [UNAVAILABLE] instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trustme

from refd.config.loader import DaemonConfig, StoreConfig
from refd.door import DoorState
from refd.metrics import Metrics
from refd.redis_store import RedisStore
from refd.runtime import Service
from refd.store import Throttle
from refd.throttle import Counts, ThrottleRules
from tests.logins import ALICE, NO, UNAVAILABLE, client_context, start_tls_door, tls_login
from tests.procs import in_thread
from tests.test_store import STORE_STEPS, replay

from .redis import RedisInstance

pytestmark = pytest.mark.interop

SECRET = b"0123456789abcdef0123456789abcdef"
RULES = ThrottleRules()


def store_config(redis: RedisInstance, **changes: object) -> StoreConfig:
    values: dict[str, object] = {
        "kind": "redis",
        "redis_url": redis.url,
        "secret": SECRET,
        # Generous unless a test is about the timeout: a loaded CI host can
        # take more than 0.2 s to open a loopback connection.
        "timeout_s": 2.0,
        "retry_s": 0.3,
    }
    values.update(changes)
    return StoreConfig(**values)  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def store_log(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "refd.store" and needle in r.getMessage()
    ]


async def test_redis_answers_as_the_local_table(
    nursery: trio.Nursery, redis_server: RedisInstance
) -> None:
    redis = RedisStore(redis_server.url, timeout_s=1.0)
    await nursery.start(redis.run)
    await replay(redis, STORE_STEPS)
    # Every key written expires by itself; forgiven and settled-away keys are gone.
    keys = sorted(redis_server.cli("--scan").split())
    assert keys == ["A", "N", "P", "U", "c1"]  # U2, P2, X and Z* are gone or never were
    ttls = {k: int(redis_server.cli("PTTL", k)) for k in keys}
    assert all(0 < ttl <= 900_000 for ttl in ttls.values()), ttls
    assert ttls["c1"] <= 30_000


async def test_keys_in_redis_are_hmacs_that_expire(
    nursery: trio.Nursery, redis_server: RedisInstance
) -> None:
    t = Throttle(Metrics(), store_config(redis_server))
    await nursery.start(t.run)
    v = await t.failed("192.0.2.1", "Alice", RULES, base_s=2, max_s=15)
    assert (v.counts, v.degraded) == (Counts(1, 1, 1, 1), False)
    await t.cache_put(t.cache_key((b"host", b"143", b"alice", b"pw")), b"1", 30)
    keys = redis_server.cli("--scan").split()
    assert sorted(k[:7] for k in keys) == ["refd:a:", "refd:c:", "refd:n:", "refd:p:", "refd:u:"]
    for key in keys:
        assert len(key) == len("refd:a:") + 32
        assert 0 < int(redis_server.cli("PTTL", key)) <= 900_000
    dump = redis_server.cli("--scan") + "".join(redis_server.cli("GET", k) for k in keys)
    for plain in ("192.0.2", "alice", "Alice", "pw"):
        assert plain not in dump
    # Another door with the same secret computes the same keys: one memory.
    other = Throttle(Metrics(), store_config(redis_server))
    await nursery.start(other.run)
    v = await other.failed("192.0.2.1", "ALICE", RULES, base_s=2, max_s=15)
    assert v.counts == Counts(2, 2, 2, 2)
    assert await other.cache_get(other.cache_key((b"host", b"143", b"alice", b"pw"))) == b"1"


async def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_redis_killed_then_back(
    nursery: trio.Nursery, redis_server: RedisInstance, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    t = Throttle(metrics, store_config(redis_server, timeout_s=0.2))
    await nursery.start(t.run)

    async def fail() -> tuple[Counts, bool, float]:
        started = time.monotonic()
        v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
        return v.counts, v.degraded, time.monotonic() - started

    assert (await fail())[:2] == (Counts(1, 1, 1, 1), False)
    assert sample(metrics, "refd_throttle_store_up", store="redis") == 1
    redis_server.kill()
    outage = [await fail() for _ in range(3)]
    await trio.sleep(0.7)  # the watcher probes every store_retry_s (0.3 s), in vain
    outage.append(await fail())
    # Served from this process's counters, which mirrored every update.
    assert [(c.address, d) for c, d, _ in outage] == [(2, True), (3, True), (4, True), (5, True)]
    assert all(elapsed < 1.0 for _, _, elapsed in outage)
    assert sample(metrics, "refd_throttle_store_errors_total", store="redis") >= 2
    assert sample(metrics, "refd_throttle_store_up", store="redis") == 0
    assert len(store_log(caplog, "throttle store redis unavailable")) == 1

    redis_server.restart()
    await wait_until(lambda: not t.degraded)
    assert (await fail())[:2] == (Counts(1, 1, 1, 1), False)  # a fresh Redis remembers nothing
    assert sample(metrics, "refd_throttle_store_up", store="redis") == 1
    assert len(store_log(caplog, "answers again")) == 1
    assert len(store_log(caplog, "unavailable")) == 1


async def test_redis_paused_is_left_after_the_timeout(
    nursery: trio.Nursery, redis_server: RedisInstance, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    t = Throttle(metrics, store_config(redis_server, timeout_s=0.2))
    await nursery.start(t.run)
    await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
    redis_server.pause()
    try:
        started = time.monotonic()
        v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
        elapsed = time.monotonic() - started
        assert (v.counts.address, v.degraded) == (2, True)
        assert 0.2 <= elapsed < 1.0  # the timeout (0.2 s), not Redis's silence
        # Marked down: the next logins do not even ask.
        started = time.monotonic()
        v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
        assert (v.counts.address, v.degraded) == (3, True)
        assert time.monotonic() - started < 0.1
    finally:
        redis_server.resume()
    await wait_until(lambda: not t.degraded)
    v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
    assert not v.degraded
    # Redis executed the request it had received while stopped, late: it
    # counts too (a failure that happened is a failure).
    assert v.counts.address == 3
    assert len(store_log(caplog, "unavailable (no answer within 0.2s)")) == 1
    assert len(store_log(caplog, "answers again")) == 1
    assert sample(metrics, "refd_throttle_store_errors_total", store="redis") >= 1


async def test_fail_closed_answers_unavailable_while_redis_is_down(
    nursery: trio.Nursery,
    tmp_path: Path,
    redis_server: RedisInstance,
    demo_config: DaemonConfig,
    demo_service: Service,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    throttle = Throttle(metrics, store_config(redis_server, on_error="closed"))
    await nursery.start(throttle.run)
    door = DoorState(metrics, throttle)
    ca = trustme.CA()
    port = await start_tls_door(
        nursery, tmp_path, ca, demo_config, demo_service, door, base_s=0.05, max_s=0.2
    )
    ctx = client_context(ca)
    assert await in_thread(tls_login, port, ctx, "127.0.1.5", "alice", "secret") == ALICE
    assert await in_thread(tls_login, port, ctx, "127.0.1.5", "alice", "wrong") == NO
    redis_server.kill()
    # Right or wrong password: the same answer, so it tells nothing.
    assert await in_thread(tls_login, port, ctx, "127.0.1.5", "alice", "secret") == UNAVAILABLE
    assert await in_thread(tls_login, port, ctx, "127.0.1.5", "alice", "wrong") == UNAVAILABLE
    redis_server.restart()
    await wait_until(lambda: not throttle.degraded)
    assert await in_thread(tls_login, port, ctx, "127.0.1.5", "alice", "secret") == ALICE
    assert "logins are answered NO [UNAVAILABLE]" in "".join(store_log(caplog, "unavailable"))
