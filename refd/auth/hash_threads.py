"""Where refd computes password hashes, and on how many threads.

A slow hash (SHA-crypt, bcrypt, argon2) keeps a core busy for its whole
length (bcrypt cost 10: about 50 ms here). Threads beyond the cores only
share them: each hash takes longer and the event loops wait for a core too.
So refd hashes on one `HashPool`: as many threads as the cores this process
may run on (`os.sched_getaffinity`), taking the verifications in the order
they were asked for.

With ``workers: N`` the pool runs in the supervisor and every worker sends
it its verifications (`HASH_SOCKETS_ENV`), so the workers share one queue,
as Dovecot's login processes share its one auth process. With a queue per
worker, the kernel's uneven split of connections between the workers left
one queue longer than the other, and the longer one set the p99 (see
bench/NOTES.md, "A shared hashing queue"). A single process runs its own
pool.

The wire between a `HashClient` and the pool is a pair of ``AF_UNIX``
``SOCK_SEQPACKET`` sockets: every client writes to the one request socket,
whose receive queue is the shared FIFO the pool's threads read, and each
client reads its answers from a reply socket of its own. A request carries
the stored hash's algorithm and data and the password, never a user name;
nothing of it is logged. A client's wait cannot be cancelled, as
``trio.to_thread.run_sync``'s cannot: a login that gave up would otherwise
leave its hash queued, and a flood of them could queue unbounded work.

One exception to the pool: when the login asking is all the process is
doing (`HashClient.busy`, the daemon's `DoorState.busy`: one connection, one
login in flight), the event loop verifies a short hash itself. The loop
would otherwise sleep through the hash with nothing else to do, and a
login that waits on the pool costs more: the round trip, and the session's
own work after it run on a loop that slept (bench/NOTES.md, "Short hashes
on an idle event loop": SHA512-CRYPT at c=1, 1.70 against 2.15 ms median
with two workers, 340 us less CPU a session). "Short" is measured, not
guessed: a kind of hash (algorithm and cost) is verified in place only
once one of its verifications took at most `INLINE_BUDGET_S` (SHA-crypt's
default 5000 rounds: about 2-3 ms here; bcrypt cost 10, about 50 ms, never).
So nothing waits on the loop then but a new connection's greeting, for at
most that long, and with two or more workers another worker takes it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

import outcome
import trio

from refd.auth.schemes import Algorithm, PasswordHash, check_password

__all__ = [
    "HASH_SOCKETS_ENV",
    "INLINE_BUDGET_S",
    "HashClient",
    "HashPool",
    "HashPoolGone",
    "hash_client",
    "socket_pair",
    "usable_cores",
]

log = logging.getLogger("refd.auth.hash_threads")

#: Set by the supervisor in each worker's environment: "REQUEST_FD,REPLY_FD,CLIENT,THREADS".
HASH_SOCKETS_ENV = "REFD_HASH_SOCKETS"

# request: client, request id, algorithm name length, data length; then the
# algorithm's name, the stored data and the password (UTF-8, lone surrogates
# kept).  reply: request id, answer.
_REQUEST = struct.Struct("!IIBH")
_REPLY = struct.Struct("!IB")
_NO, _YES, _FAILED = 0, 1, 2
# A request is at most ~1.2 KiB (MAX_PASSWORD_BYTES and a crypt string); a
# reply is 5 bytes.  Larger reads cost nothing, a short one would truncate.
_MAX_MESSAGE = 64 * 1024
# SOCK_SEQPACKET counts every queued message's buffer against the writer's
# send buffer (about 200 messages at the default); ask for room for more
# than a busy worker's logins at once, or as much as the system allows.
_SOCKET_BUFFER = 4 * 1024 * 1024

#: The longest verification an idle event loop makes itself (see above).
INLINE_BUDGET_S = 0.005


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected ``SOCK_SEQPACKET`` pair with large buffers, not inheritable."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (a, b):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    return a, b


def _encode_request(client: int, rid: int, hashed: PasswordHash, password: str) -> bytes:
    name = hashed.algorithm._value_.encode("ascii")
    secret = password.encode("utf-8", "surrogatepass")
    head = _REQUEST.pack(client, rid, len(name), len(hashed.value))
    return b"".join((head, name, hashed.value, secret))


def _decode_request(data: bytes) -> tuple[int, int, PasswordHash, str]:
    """client, request id, the stored hash, the password; ValueError if malformed."""
    try:
        client, rid, name_len, value_len = _REQUEST.unpack_from(data)
    except struct.error:
        raise ValueError("short request") from None
    start = _REQUEST.size
    name = data[start : start + name_len].decode("ascii")
    value = data[start + name_len : start + name_len + value_len]
    if len(value) != value_len:
        raise ValueError("short request")
    password = data[start + name_len + value_len :].decode("utf-8", "surrogatepass")
    return client, rid, PasswordHash("", Algorithm(name), (), value), password


def _verify_logged(
    verify: Callable[[PasswordHash, str], bool], hashed: PasswordHash, password: str
) -> int:
    """`_YES` or `_NO`; `_FAILED`, logged, if the verification raised."""
    try:
        return _YES if verify(hashed, password) else _NO
    except Exception:
        log.exception("hash verification failed algorithm=%s", hashed.algorithm.name)
        return _FAILED


def _always_busy() -> bool:
    return True


class HashPool:
    """`threads` threads that verify what arrives on the request socket, in order.

    Plain threads, no trio: the supervisor runs one, and so does a single
    process.  `add_client` gives a client its reply socket; `remove_client`
    forgets it (a worker that exited): what it still had queued is verified
    and the answer dropped.
    """

    def __init__(
        self,
        threads: int,
        *,
        verify: Callable[[PasswordHash, str], bool] = check_password,
    ) -> None:
        self.threads = threads
        self._verify = verify
        self._requests, self.request_socket = socket_pair()
        self._replies: dict[int, socket.socket] = {}
        self._next_client = 0
        self._workers = [
            threading.Thread(target=self._serve, name=f"refd-hash-{n}", daemon=True)
            for n in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def add_client(self) -> tuple[int, socket.socket]:
        """A new client's number, and the socket it reads its answers from."""
        self._next_client += 1
        ours, theirs = socket_pair()
        self._replies[self._next_client] = ours
        return self._next_client, theirs

    def environment(self, client: int, replies: socket.socket) -> str:
        """`HASH_SOCKETS_ENV` for a worker process that is `client`, reading `replies`."""
        return f"{self.request_socket.fileno()},{replies.fileno()},{client},{self.threads}"

    def remove_client(self, client: int) -> None:
        sock = self._replies.pop(client, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Stop the threads (after the hashes they are computing) and close every socket."""
        # shutdown, not close, wakes a thread blocked in recv (it reads b"").
        self._requests.shutdown(socket.SHUT_RDWR)
        for worker in self._workers:
            worker.join()
        for client in list(self._replies):
            self.remove_client(client)
        self._requests.close()
        self.request_socket.close()

    def _serve(self) -> None:
        while data := self._requests.recv(_MAX_MESSAGE):
            try:
                client, rid, hashed, password = _decode_request(data)
            except ValueError:  # from refd's own clients only: a bug, not input
                log.error("hash pool: dropped a malformed request of %d bytes", len(data))
                continue
            answer = _verify_logged(self._verify, hashed, password)
            sock = self._replies.get(client)
            if sock is None:
                continue
            with contextlib.suppress(OSError):  # the client is gone: not wanted
                sock.send(_REPLY.pack(rid, answer))


class HashPoolGone(Exception):
    """The pool's sockets were closed (the supervisor is stopping or gone)."""


class HashClient:
    """Verifies passwords on a `HashPool`, from trio.

    One task per trio run reads the answers (a system task, started by the
    first verification of a run) and wakes the login that asked.  `busy`
    says whether the process has more to do than the login asking; while it
    is false, a hash measured short is verified in place (see above).
    """

    def __init__(
        self,
        requests: socket.socket,
        replies: socket.socket,
        client: int,
        *,
        threads: int,
        pool: HashPool | None = None,
        verify: Callable[[PasswordHash, str], bool] = check_password,
    ) -> None:
        #: the pool's threads (for the start log line)
        self.threads = threads
        #: true while the process serves more than the login asking (the
        #: daemon sets its door's); until set, every hash goes to the pool
        self.busy: Callable[[], bool] = _always_busy
        #: how long the last verification of each kind of hash took, in
        #: seconds (in place, or the pool's round trip)
        self.seconds: dict[tuple[Algorithm, tuple[int, ...]], float] = {}
        self._verify = verify
        #: the pool, when it runs in this process (kept alive with its client)
        self.pool = pool
        self._requests = requests
        self._replies = replies
        self._client = client
        self._next_rid = 0
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        self._reader_run: trio.lowlevel.TrioToken | None = None
        self._send_lock: trio.Lock | None = None
        self._gone = False

    @classmethod
    def from_environment(cls, value: str) -> HashClient | None:
        """The client `HASH_SOCKETS_ENV` describes, or None if it is not set or not valid."""
        parts = value.split(",")
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
            return None
        request_fd, reply_fd, client, threads = map(int, parts)
        try:
            requests = socket.socket(fileno=request_fd)
            replies = socket.socket(fileno=reply_fd)
        except OSError:
            return None
        return cls(requests, replies, client, threads=threads)

    @classmethod
    def with_own_pool(
        cls, threads: int, *, verify: Callable[[PasswordHash, str], bool] = check_password
    ) -> HashClient:
        """A client of a new pool of `threads` threads in this process."""
        pool = HashPool(threads, verify=verify)
        client, replies = pool.add_client()
        return cls(pool.request_socket, replies, client, threads=threads, pool=pool, verify=verify)

    def close(self) -> None:
        """Close the reply socket, and the pool if it is this client's own."""
        self._gone = True
        with contextlib.suppress(RuntimeError):  # outside trio: nothing waits on it
            trio.lowlevel.notify_closing(self._replies)
        self._replies.close()
        if self.pool is not None:
            self.pool.close()

    async def verify(self, hashed: PasswordHash, password: str) -> bool:
        """True if `password` matches; HashPoolGone if it could not be verified.

        That is: the pool is gone, or the verification raised (on the pool or
        in place; logged).
        """
        if self._gone:
            raise HashPoolGone
        kind = (hashed.algorithm, hashed.cost)
        started = time.perf_counter()
        if self.seconds.get(kind, INLINE_BUDGET_S + 1.0) <= INLINE_BUDGET_S and not self.busy():
            answer = _verify_logged(self._verify, hashed, password)
        else:
            answer = await self._ask_pool(hashed, password)
        self.seconds[kind] = time.perf_counter() - started
        if answer == _FAILED:
            raise HashPoolGone("the hash could not be verified")
        return answer == _YES

    async def _ask_pool(self, hashed: PasswordHash, password: str) -> int:
        token = trio.lowlevel.current_trio_token()
        if self._reader_run is not token:
            self._reader_run = token
            self._send_lock = trio.Lock()
            trio.lowlevel.spawn_system_task(self._read_answers, name="refd.hash_threads.answers")
        self._next_rid = rid = (self._next_rid + 1) & 0xFFFFFFFF
        message = _encode_request(self._client, rid, hashed, password)
        await self._send(message)
        if self._gone:  # the reader has stopped: nothing would wake this login
            raise HashPoolGone
        self._waiting[rid] = trio.lowlevel.current_task()
        answer: int = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED
        )
        return answer

    async def _send(self, message: bytes) -> None:
        while True:
            try:
                self._requests.send(message, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                assert self._send_lock is not None
                async with self._send_lock:  # one task waits on the socket at a time
                    await trio.lowlevel.wait_writable(self._requests)
            except OSError as exc:
                self._gone = True
                raise HashPoolGone(str(exc)) from None

    async def _read_answers(self) -> None:
        while True:
            try:
                await trio.lowlevel.wait_readable(self._replies)
            except (trio.ClosedResourceError, OSError, ValueError):  # closed by `close`
                self._gone = True
            for rid, answer in self._drain():
                task = self._waiting.pop(rid, None)
                if task is not None:
                    trio.lowlevel.reschedule(task, outcome.Value(answer))
            if self._gone:
                for task in self._waiting.values():
                    trio.lowlevel.reschedule(task, outcome.Value(_FAILED))
                self._waiting.clear()
                return

    def _drain(self) -> Iterable[tuple[int, int]]:
        while not self._gone:
            try:
                data = self._replies.recv(_MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._gone = True
                return
            if len(data) == _REPLY.size:  # the pool sends nothing else
                yield _REPLY.unpack(data)


@functools.cache
def hash_client() -> HashClient:
    """This process's way to its hashing pool: the supervisor's, or its own (built on first use)."""
    client = HashClient.from_environment(os.environ.get(HASH_SOCKETS_ENV, ""))
    if client is None:
        client = HashClient.with_own_pool(usable_cores())
    atexit.register(client.close)
    return client
