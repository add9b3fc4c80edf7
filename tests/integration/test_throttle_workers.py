"""``workers: N`` without Redis: the workers count failures together.

The supervisor hosts the throttle's counters and serves them to its workers
over a private Unix socket; a guesser whose connections the kernel spreads
over both workers is slowed exactly as if one process answered them all.
"""

from __future__ import annotations

from pathlib import Path

import trustme

from tests.logins import NO, AuthLine, client_context, start_door, tls_login, write_door_config


def test_workers_of_one_supervisor_share_the_counters(tmp_path: Path) -> None:
    ca = trustme.CA()
    door = start_door(write_door_config(tmp_path, ca, workers=2), workers=2)
    ctx = client_context(ca)
    try:
        seen: list[AuthLine] = []
        # SO_REUSEPORT picks a worker per connection: go on until both answered.
        for i in range(40):
            assert tls_login(door.port, ctx, "127.0.1.9", "alice", "wrong") == NO
            seen.append(door.next_auth("127.0.1.9"))
            if i >= 5 and {a.pid for a in seen} == door.pids:
                break
        assert {a.pid for a in seen} == door.pids
        # One counter: 0.05, 0.1, 0.2, then the 0.4 s cap; two separate
        # counters would start over at 0.05 on the other worker.
        assert [a.delay for a in seen] == [
            round(min(0.4, 0.05 * 2**k), 3) for k in range(len(seen))
        ]
        assert all(not a.degraded for a in seen)
        log = door.drain()
        assert "throttle store listening" in log
        assert "unavailable" not in log
    finally:
        door.stop()
