"""The supervisor's throttle store over a real Unix socket, and the throttle's fallback.

``serve_store`` and ``SocketStore`` run in this process (trio, a socket in
tmp_path), exactly as the supervisor and its workers run them.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
import trio

from refd.metrics import Metrics
from refd.store import SocketStore, StoreError, Throttle, serve_store
from refd.throttle import CounterTable, Counts, ThrottleRules

#: (operation, arguments): every store must answer these as CounterTable does.
STORE_STEPS: list[tuple[str, tuple[object, ...]]] = [
    ("add", (["A", "N", "U", "P"], 900)),
    ("add", (["A", "N", "U", "P"], 900)),
    ("add", (["A", "N", "U2", "P2"], 900)),
    ("settle", (["A", "N", "U", "P"],)),
    ("settle", (["A", "N", "U", "P"],)),
    ("add", (["A", "N", "U", "P"], 900)),
    ("settle", (["A", "X", "U2", "P2"],)),
    ("settle", (["Z1", "Z2", "Z3", "Z4"],)),
    ("get", ("c1",)),
    ("put", ("c1", b"\x00\xff1", 30)),
    ("get", ("c1",)),
]
RULES = ThrottleRules()


async def replay(store: object, steps: list[tuple[str, tuple[object, ...]]]) -> None:
    table = CounterTable(trio.current_time)
    for op, args in steps:
        want = getattr(table, op)(*args)
        got = await getattr(store, op)(*args)
        assert got == want, (op, args)


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> tuple[CounterTable, Path]:
    table = CounterTable(trio.current_time)
    path = tmp_path / "throttle.sock"
    (tmp_path / "secret").write_text("s" * 32)
    await nursery.start(serve_store, table, path)
    return table, path


async def test_socket_store_answers_as_the_table(served: tuple[CounterTable, Path]) -> None:
    table, path = served
    store = SocketStore(path)
    try:
        await replay(store, STORE_STEPS)
        await store.probe()
    finally:
        store.close()
    # The supervisor's table holds the result.
    assert table.counts(["A", "N", "U", "P"]) == (1, 2, 1, 1)


def raw(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json\n", "bad request"),
        (b'{"op": "add", "keys": [], "ttl_s": 1}\n', "keys: a list of 1 to 8 short texts"),
        (b'{"op": "add", "keys": ["a"], "ttl_s": -1}\n', "ttl_s: seconds, more than 0"),
        (b'{"op": "add", "keys": ["a"], "ttl_s": true}\n', "ttl_s: seconds, more than 0"),
        (b'{"op": "put", "key": "k", "value": "***", "ttl_s": 1}\n', "bad request"),
        (b'{"op": "drop"}\n', "op: add, settle, get, put or ping"),
        (b"[1, 2]\n", "a request is a JSON object"),
        (b"[" * 4000 + b"\n", "bad request"),
        (b'{"op": "get", "key": "\xff"}\n', "bad request"),
        (b"x" * 5000, "request too long"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_closes(
    served: tuple[CounterTable, Path], payload: bytes, error: str
) -> None:
    _, path = served
    got = await trio.to_thread.run_sync(raw, path, payload)
    assert got.endswith(b"\n") and got.count(b"\n") == 1
    assert error in json.loads(got)["error"]
    # The server goes on serving.
    store = SocketStore(path)
    try:
        assert await store.add(["a"], 10) == (1,)
    finally:
        store.close()


async def test_workers_count_together_through_the_supervisor(
    nursery: trio.Nursery, served: tuple[CounterTable, Path]
) -> None:
    _, path = served
    workers = [Throttle(Metrics(), socket_path=path) for _ in range(2)]
    for w in workers:
        await nursery.start(w.run)
    counts = []
    for i in range(4):
        v = await workers[i % 2].failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
        counts.append(v.counts.address)
    assert counts == [1, 2, 3, 4]
    assert not any(w.degraded for w in workers)


async def test_supervisor_gone_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "throttle.sock"
    (tmp_path / "secret").write_text("s" * 32)
    metrics = Metrics()
    t = Throttle(metrics, socket_path=path)
    table = CounterTable(trio.current_time)
    async with trio.open_nursery() as outer:
        await outer.start(t.run)  # nobody listens yet: starts degraded
        assert t.degraded
        v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
        assert (v.counts, v.degraded, v.refuse) == (Counts(1, 1, 1, 1), True, False)
        async with trio.open_nursery() as server:
            await server.start(serve_store, table, path)
            with trio.fail_after(10):
                while t.degraded:  # the watcher probes every store_retry_s (1 s)
                    await trio.sleep(0.05)
            v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
            assert (v.counts.address, v.degraded) == (1, False)  # the supervisor's count
            server.cancel_scope.cancel()
        path.unlink()
        v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
        assert (v.counts.address, v.degraded) == (3, True)  # this process's own, mirrored
        outer.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records if r.name == "refd.store"]
    assert sum("unavailable" in m for m in messages) == 2
    assert sum("answers again" in m for m in messages) == 1
    assert metrics.registry.get_sample_value("refd_throttle_store_up", {"store": "supervisor"}) == 0


async def test_socket_store_error_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="supervisor socket"):
        await SocketStore(tmp_path / "nothing.sock").add(["a"], 1)


async def test_the_local_store_never_degrades(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The local store never fails: no outage is ever logged.
    caplog.set_level(logging.INFO)
    t = Throttle(Metrics())
    v = await t.failed("192.0.2.1", "alice", RULES, base_s=2, max_s=15)
    assert (v.degraded, v.refuse) == (False, False)
    assert not [r for r in caplog.records if r.name == "refd.store"]
