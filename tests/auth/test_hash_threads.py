"""The hashing pool: a thread per core, one queue for all clients, answers to the one that asked."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from refd.auth.hash_threads import (
    INLINE_BUDGET_S,
    HashClient,
    HashPool,
    HashPoolGone,
    hash_client,
    usable_cores,
)
from refd.auth.schemes import PasswordHash, check_password, parse_password_hash, sha_crypt

# Drepper's vector: "Hello world!" at 5000 rounds.
SHA = parse_password_hash(
    "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4"
    "OTLiBFdcbYEdFCoEOfaS35inz1"
)


class Gate:
    """A pool's verify: records the passwords in the order it starts them, waits to be let go."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running = 0
        self.most = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, hashed: PasswordHash, password: str) -> bool:
        with self._lock:
            self.started.append(password)
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(30)
        with self._lock:
            self.running -= 1
        return check_password(hashed, password)


def client_of(pool: HashPool) -> HashClient:
    number, replies = pool.add_client()
    return HashClient(pool.request_socket, replies, number, threads=pool.threads)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.release.set()  # a test that failed early must not leave threads waiting


def test_usable_cores_is_the_affinity() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_one_client_per_process_on_a_pool_of_every_core() -> None:
    assert hash_client() is hash_client()
    assert hash_client().threads == usable_cores()
    assert hash_client().pool is not None  # not a worker: its own pool


async def test_verifies_with_the_real_hash() -> None:
    pool = HashPool(2)
    client = client_of(pool)
    try:
        assert await client.verify(SHA, "Hello world!") is True
        assert await client.verify(SHA, "hello world!") is False
        # Passwords are carried exactly, lone surrogates included.
        assert await client.verify(SHA, "Hello world!\udcff") is False
    finally:
        client.close()
        pool.close()


async def test_clients_share_one_queue_in_the_order_they_asked(gate: Gate) -> None:
    # Two clients, as two workers: with one thread, every request waits in
    # the one queue, and the order they are verified in is the order sent.
    pool = HashPool(1, verify=gate)
    a, b = client_of(pool), client_of(pool)
    answers: dict[str, bool] = {}

    async def login(client: HashClient, password: str) -> None:
        answers[password] = await client.verify(SHA, password)

    order = ["a1", "b1", "a2", "Hello world!", "b2", "a3"]
    try:
        async with trio.open_nursery() as nursery:
            for password in order:
                client = a if password.startswith("a") else b
                nursery.start_soon(login, client, password)
                await trio.testing.wait_all_tasks_blocked()
            gate.release.set()
    finally:
        a.close()
        b.close()
        pool.close()
    assert gate.started == order
    assert answers == {p: p == "Hello world!" for p in order}


async def test_at_most_threads_verifications_at_once(gate: Gate) -> None:
    pool = HashPool(2, verify=gate)
    client = client_of(pool)
    try:
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(client.verify, SHA, f"p{n}")
            while len(gate.started) < 2:
                await trio.sleep(0.01)
            await trio.sleep(0.05)  # a third would have started by now
            assert (len(gate.started), gate.running) == (2, 2)
            gate.release.set()
    finally:
        client.close()
        pool.close()
    assert gate.most == 2 and len(gate.started) == 6


async def test_a_removed_client_gets_no_answer_and_the_next_one_is_new(gate: Gate) -> None:
    # A worker that died: what it had queued is still verified, the answer
    # dropped; the restarted worker's socket and number are new ones.
    pool = HashPool(1, verify=gate)
    number, replies = pool.add_client()
    dead = HashClient(pool.request_socket, replies, number, threads=1)
    outcome: list[object] = []

    async def login() -> None:
        try:
            outcome.append(await dead.verify(SHA, "Hello world!"))
        except HashPoolGone:
            outcome.append("gone")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(login)
            while not gate.started:
                await trio.sleep(0.01)
            pool.remove_client(number)
        # The pool's end was closed before the answer: end of file, no answer.
        assert outcome == ["gone"]
        gate.release.set()
        fresh = client_of(pool)
        assert fresh._client != number
        assert await fresh.verify(SHA, "Hello world!") is True
        fresh.close()
    finally:
        dead.close()
        pool.close()


async def test_a_malformed_request_is_dropped_and_the_pool_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = HashPool(1)
    client = client_of(pool)
    try:
        pool.request_socket.send(b"\x00\x01")
        assert await client.verify(SHA, "Hello world!") is True
    finally:
        client.close()
        pool.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "hash pool: dropped a malformed request of 2 bytes"
    ]


async def test_a_closed_pool_is_reported_not_waited_for() -> None:
    pool = HashPool(1)
    client = client_of(pool)
    pool.close()
    with pytest.raises(HashPoolGone):
        await client.verify(SHA, "Hello world!")
    client.close()


async def test_the_pool_going_away_mid_wait_fails_the_waiting_logins(gate: Gate) -> None:
    pool = HashPool(1, verify=gate)
    number, replies = pool.add_client()
    client = HashClient(pool.request_socket, replies, number, threads=1)
    failures: list[str] = []

    async def login(password: str) -> None:
        try:
            await client.verify(SHA, password)
        except HashPoolGone:
            failures.append(password)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(login, "x")
            nursery.start_soon(login, "y")
            while not gate.started:
                await trio.sleep(0.01)
            pool.remove_client(number)  # as when the supervisor's end closes
    finally:
        gate.release.set()
        client.close()
        pool.close()
    assert sorted(failures) == ["x", "y"]


class Where:
    """A verify that notes the thread it ran on, after `seconds` of sleep."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.threads: list[str] = []

    def __call__(self, hashed: PasswordHash, password: str) -> bool:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("broken hash library")
        return check_password(hashed, password)


KIND = (SHA.algorithm, SHA.cost)
HERE = threading.current_thread().name  # trio's thread in these tests


async def test_an_idle_process_verifies_a_short_hash_in_place() -> None:
    where = Where()
    client = HashClient.with_own_pool(1, verify=where)
    client.busy = lambda: False
    try:
        # A kind never measured goes to the pool, which measures it.
        assert await client.verify(SHA, "Hello world!") is True
        assert where.threads == ["refd-hash-0"]
        assert client.seconds[KIND] > 0.0
        client.seconds[KIND] = INLINE_BUDGET_S  # measured short (at the budget)
        assert await client.verify(SHA, "Hello world!") is True
        assert await client.verify(SHA, "hello world!") is False
        assert where.threads == ["refd-hash-0", HERE, HERE]
    finally:
        client.close()


async def test_a_busy_process_or_a_long_hash_goes_to_the_pool() -> None:
    where = Where(seconds=INLINE_BUDGET_S + 0.015)
    client = HashClient.with_own_pool(1, verify=where)
    try:
        # Until the daemon says otherwise, the process counts as busy.
        client.seconds[KIND] = 0.0
        assert await client.verify(SHA, "Hello world!") is True
        assert where.threads == ["refd-hash-0"]
        busy = True
        client.busy = lambda: busy
        client.seconds[KIND] = 0.0
        assert await client.verify(SHA, "Hello world!") is True
        busy = False
        client.seconds[KIND] = 0.0
        assert await client.verify(SHA, "Hello world!") is True
        # That one ran here and took longer than the budget: the next goes
        # to the pool, idle or not, and is measured again there.
        assert client.seconds[KIND] > INLINE_BUDGET_S
        assert await client.verify(SHA, "Hello world!") is True
        assert where.threads == ["refd-hash-0", "refd-hash-0", HERE, "refd-hash-0"]
        # Another cost is another kind: not measured yet, so the pool.
        cheaper = parse_password_hash(
            "{SHA512-CRYPT}" + sha_crypt(b"Hello world!", "$6$rounds=1000$saltstring")
        )
        client.seconds[KIND] = 0.0
        assert await client.verify(cheaper, "Hello world!") is True
        assert where.threads[-1] == "refd-hash-0"
    finally:
        client.close()


async def test_a_failing_verification_in_place_is_logged_and_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    where = Where(fail=True)
    client = HashClient.with_own_pool(1, verify=where)
    client.busy = lambda: False
    client.seconds[KIND] = 0.0
    try:
        with pytest.raises(HashPoolGone, match="the hash could not be verified"):
            await client.verify(SHA, "Hello world!")
    finally:
        client.close()
    assert where.threads == [HERE]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["hash verification failed algorithm=SHA512_CRYPT"]
    assert "Hello world!" not in caplog.text


@pytest.mark.parametrize(
    "value", ["", "1,2,3", "1,2,3,4,5", "a,2,3,4", "1,2,-3,4", "\u0661,2,3,4", "99999,99998,1,2"]
)
def test_environment_values_that_name_no_pool(value: str) -> None:
    assert HashClient.from_environment(value) is None


def test_environment_names_the_sockets_and_the_threads() -> None:
    pool = HashPool(1)
    number, replies = pool.add_client()
    try:
        value = pool.environment(number, replies)
        assert value == f"{pool.request_socket.fileno()},{replies.fileno()},{number},1"
        # What a worker builds from it (here on duplicates of the same sockets).
        dup = f"{os.dup(pool.request_socket.fileno())},{os.dup(replies.fileno())},{number},1"
        client = HashClient.from_environment(dup)
        assert client is not None and client.threads == 1
        assert client._requests.type == socket.SOCK_SEQPACKET
        client._requests.close()
        client.close()
    finally:
        replies.close()
        pool.close()
