"""Doors that defend as one: ``refd serve`` processes sharing a real redis-server.

Two doors of two workers each keep their throttle counters in one Redis: a
guesser who spreads his attempts over every door and worker is slowed
exactly as one who uses a single door.  A door whose Redis is killed or
stopped goes on answering within the store timeout, from its own counters;
it says so once in its log and in its metrics, and ``/readyz`` stays 200.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trustme

from tests.logins import (
    ALICE,
    NO,
    AuthLine,
    ProcessDoor,
    client_context,
    http_get,
    start_door,
    tls_login,
    wait_for,
    write_door_config,
)

from .redis import RedisInstance

pytestmark = pytest.mark.interop


#: 0.05 s doubling to the 0.4 s cap: the delays of one counter.
def one_counter(n: int) -> list[float]:
    return [round(min(0.4, 0.05 * 2**k), 3) for k in range(n)]


def redis_section(redis: RedisInstance, directory: Path, **extra: str) -> str:
    secret = directory / "throttle.secret"
    secret.write_text("a shared secret of every door, 32+ bytes\n")
    lines = [
        "throttle:",
        "  store: redis",
        f'  redis: {{url: "{redis.url}"}}',
        f"  secret_file: {secret}",
        *(f"  {k}: {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def test_a_guesser_spread_over_doors_and_workers_is_slowed_as_on_one_door(
    tmp_path: Path, redis_server: RedisInstance
) -> None:
    ca = trustme.CA()
    ctx = client_context(ca)
    # A generous store timeout: four workers start at once on a loaded host,
    # and a degraded count would fail the test for a reason it does not test.
    section = redis_section(redis_server, tmp_path, store_timeout_s="2")
    doors: list[ProcessDoor] = []
    try:
        for name in ("door1", "door2"):
            config = write_door_config(tmp_path / name, ca, workers=2, extra=section)
            doors.append(start_door(config, workers=2))
        workers = doors[0].pids | doors[1].pids
        assert len(workers) == 4

        spread: list[AuthLine] = []
        for i in range(60):  # until every worker of both doors has answered
            door = doors[i % 2]
            assert tls_login(door.port, ctx, "127.0.1.9", "alice", "guess") == NO
            spread.append(door.next_auth("127.0.1.9"))
            if i >= 7 and {a.pid for a in spread} == workers:
                break
        assert {a.pid for a in spread} == workers

        single: list[AuthLine] = []
        for _ in spread:  # another guesser, another network, one door
            assert tls_login(doors[0].port, ctx, "127.0.2.9", "bob", "guess") == NO
            single.append(doors[0].next_auth("127.0.2.9"))

        assert [a.delay for a in spread] == [a.delay for a in single] == one_counter(len(spread))
        assert not any(a.degraded for a in spread + single)
        # The victim logs in from her own network at once, on either door.
        assert tls_login(doors[1].port, ctx, "127.0.3.9", "alice", "secret") == ALICE
        ok = doors[1].next_auth("127.0.3.9")
        assert (ok.result, ok.delay, ok.rule) == ("ok", 0.0, "none")

        # In Redis: HMAC keys only, each with an expiry.
        keys = redis_server.cli("--scan").split()
        assert keys and all(
            k.startswith(("refd:a:", "refd:n:", "refd:u:", "refd:p:")) for k in keys
        )
        assert all(0 < int(redis_server.cli("PTTL", k)) <= 900_000 for k in keys)
        assert not any(s in " ".join(keys) for s in ("127.0", "alice", "bob"))
    finally:
        for door in doors:
            door.stop()


def test_redis_killed_or_stopped_the_door_answers_from_its_own_counters(
    tmp_path: Path, redis_server: RedisInstance
) -> None:
    ca = trustme.CA()
    ctx = client_context(ca)
    section = redis_section(redis_server, tmp_path, store_timeout_s="0.2", store_retry_s="0.5")
    door = start_door(write_door_config(tmp_path, ca, workers=1, extra=section), workers=1)

    def guess() -> tuple[AuthLine, float]:
        started = time.monotonic()
        assert tls_login(door.port, ctx, "127.0.1.9", "alice", "guess") == NO
        return door.next_auth("127.0.1.9"), time.monotonic() - started

    def up() -> float:
        return door.metrics()[("refd_throttle_store_up", (("store", "redis"),))]

    try:
        before = [guess()[0] for _ in range(2)]
        assert [(a.delay, a.degraded) for a in before] == [(0.05, False), (0.1, False)]

        redis_server.kill()
        during = [guess() for _ in range(2)]
        # Its own counters mirrored the shared ones: the sequence goes on.
        assert [(a.delay, a.degraded) for a, _ in during] == [(0.2, True), (0.4, True)]
        assert all(elapsed < 2.0 for _, elapsed in during)
        assert tls_login(door.port, ctx, "127.0.3.9", "alice", "secret") == ALICE  # fail open
        assert http_get(door.metrics_port, "/readyz")[0] == 200
        metrics = door.metrics()
        assert metrics[("refd_throttle_store_errors_total", (("store", "redis"),))] >= 1
        assert up() == 0

        redis_server.restart()
        door.daemon.wait_log("throttle store redis answers again")
        assert up() == 1
        after, _ = guess()
        assert (after.delay, after.degraded) == (0.05, False)  # a fresh Redis: empty

        redis_server.pause()
        try:
            stalled = [guess() for _ in range(2)]
            # The first waits the store timeout (0.2 s) and its delay; the
            # next does not even ask.  Redis's silence is never waited out.
            assert [a.degraded for a, _ in stalled] == [True, True]
            assert all(elapsed < 2.0 for _, elapsed in stalled)
            assert http_get(door.metrics_port, "/readyz")[0] == 200
            assert up() == 0
        finally:
            redis_server.resume()
        door.daemon.wait_log("throttle store redis answers again")
        wait_for(lambda: up() == 1)
        log = door.drain()
        # Each outage once, each recovery once.
        assert log.count("throttle store redis unavailable") == 2
        assert log.count("answers again") == 2
        assert "unavailable (no answer within 0.2s)" in log
    finally:
        door.stop()
