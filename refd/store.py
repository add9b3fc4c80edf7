"""Where the login throttle's counters live, and the throttle sessions call.

:class:`Throttle` is what a session asks (``failed`` / ``succeeded``); it
turns an attempt into four keys, updates them in a store, and applies the
pure policy of ``refd.throttle``.  Stores share one small async interface
(``add``, ``settle``, ``get``, ``put``, ``run``):

- the local store, a :class:`~refd.throttle.CounterTable` in this process:
  always there, the only one by default, and the fallback of the others;
- :class:`SocketStore`: the table the supervisor of ``workers: N`` hosts
  (:func:`serve_store`) on a private Unix socket, so its workers count
  together without Redis; one JSON object a line each way;
- ``refd.redis_store.RedisStore``: Redis or Valkey, shared by every door.

Keys are ``prefix + kind + ":" + HMAC-SHA256(secret, kind NUL value)`` (cut
to 128 bits): a store never sees an address, a user name or a password, and
a key is worth nothing without the secret.  Every key expires by itself.

A shared store that fails or does not answer within ``timeout_s`` is
marked down: logins stop asking it and are served from the local counters
(which mirror every update), while a watcher probes it every ``retry_s``
with a longer deadline (connecting, and loading the scripts, never happens
under a login's tight timeout).  The outage is logged once, the recovery
once, and counted (``refd_throttle_store_errors_total``,
``refd_throttle_store_up``).  That is failing open; ``on_error: closed``
answers the logins of an outage ``NO [UNAVAILABLE]`` instead.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from refd.config.loader import StoreConfig, read_secret_file
from refd.metrics import Metrics
from refd.throttle import (
    CounterTable,
    Counts,
    Delay,
    ThrottleRules,
    failure_delay,
    subjects,
    success_delay,
)

__all__ = [
    "Keyer",
    "LocalStore",
    "SocketStore",
    "Store",
    "StoreError",
    "Throttle",
    "Verdict",
    "as_counts",
    "serve_store",
]

log = logging.getLogger("refd.store")

T = TypeVar("T")

#: The socket protocol's longest line (a request holds at most 4 keys).
_MAX_LINE = 4096
_MAX_KEYS = 8
_MAX_KEY_CHARS = 256
_MAX_VALUE_BYTES = 1024


class StoreError(Exception):
    """A store could not do an operation; the text says why (never a key's value)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the throttle decided for one login."""

    delay: Delay
    counts: Counts
    #: the shared store did not answer: ``counts`` are this process's own
    degraded: bool = False
    #: degraded with ``on_error: closed``: answer NO [UNAVAILABLE]
    refuse: bool = False


class Keyer:
    """Store keys: HMAC-SHA256 under a secret, never the value itself."""

    def __init__(self, secret: bytes, prefix: str = "") -> None:
        self._secret = secret
        self.prefix = prefix

    def key(self, kind: str, value: bytes) -> str:
        digest = hmac.digest(self._secret, kind.encode() + b"\x00" + value, "sha256")
        return f"{self.prefix}{kind}:{digest[:16].hex()}"

    def throttle_keys(self, address: str, user: str, rules: ThrottleRules) -> tuple[str, ...]:
        """address, network, user and pair keys, in that order (the pair last)."""
        s = subjects(address, user, rules)
        return tuple(
            self.key(kind, value.encode("utf-8", "surrogatepass"))
            for kind, value in zip("anup", s, strict=True)
        )


class Store(Protocol):
    """What a counter store does; every key it is given is already a :class:`Keyer` key."""

    name: str

    async def add(self, keys: Sequence[str], ttl_s: float) -> tuple[int, ...]:
        """Add one to each counter and renew its expiry; the new counts."""
        ...

    async def settle(self, keys: Sequence[str]) -> tuple[int, ...]:
        """The counts; then the last key's count is taken off the others and it is dropped."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def probe(self) -> None:
        """Connect if need be and check the store answers (StoreError if not)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the store's connection open until cancelled."""
        ...


class LocalStore:
    """A :class:`CounterTable` in this process, on trio's clock."""

    name = "local"

    def __init__(self, max_entries: int = 100_000) -> None:
        self.table = CounterTable(trio.current_time, max_entries=max_entries)

    async def add(self, keys: Sequence[str], ttl_s: float) -> tuple[int, ...]:
        return self.table.add(keys, ttl_s)

    async def settle(self, keys: Sequence[str]) -> tuple[int, ...]:
        return self.table.settle(keys)

    async def get(self, key: str) -> bytes | None:
        return self.table.get(key)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.table.put(key, value, ttl_s)

    async def probe(self) -> None:
        """Nothing to check: a table in this process always answers."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


def as_counts(value: object, n: int) -> tuple[int, ...]:
    """A store's answer as ``n`` counts, or StoreError."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != n
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise StoreError("the store answered something that is not a list of counts")
    return tuple(value)


# -- the supervisor's store, over a Unix socket ------------------------------------------


class SocketStore:
    """The supervisor's table, asked over its Unix socket (one JSON line each way).

    One connection, one request at a time; any error, or a request cut short
    by a timeout, closes it (an answer that arrives later must not be read as
    the next one's), and the next request connects again.
    """

    name = "supervisor"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()
        self._lock = trio.Lock()

    async def _call(self, request: dict[str, Any]) -> Any:
        async with self._lock:
            try:
                if self._stream is None:
                    self._stream = await trio.open_unix_socket(str(self.path))
                    self._buffer.clear()
                await self._stream.send_all(json.dumps(request).encode() + b"\n")
                reply = json.loads(await self._line(self._stream))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._drop()
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise StoreError(f"supervisor socket: {why or type(exc).__name__}") from None
            except (ValueError, RecursionError) as exc:
                self._drop()
                raise StoreError(f"supervisor socket: bad answer ({exc})") from None
            except BaseException:
                self._drop()  # cancelled mid-request
                raise
        if not isinstance(reply, dict) or "error" in reply:
            error = reply.get("error") if isinstance(reply, dict) else "not an object"
            raise StoreError(f"supervisor socket: {error}")
        return reply.get("result")

    async def _line(self, stream: trio.SocketStream) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > _MAX_LINE:
                raise ValueError("answer too long")
            data = await stream.receive_some(_MAX_LINE)
            if not data:
                raise ValueError("connection closed")
            self._buffer += data
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream.socket.close()
            self._stream = None

    def close(self) -> None:
        """Close the connection (the next request opens another)."""
        self._drop()

    async def add(self, keys: Sequence[str], ttl_s: float) -> tuple[int, ...]:
        reply = await self._call({"op": "add", "keys": list(keys), "ttl_s": ttl_s})
        return as_counts(reply, len(keys))

    async def settle(self, keys: Sequence[str]) -> tuple[int, ...]:
        return as_counts(await self._call({"op": "settle", "keys": list(keys)}), len(keys))

    async def get(self, key: str) -> bytes | None:
        value = await self._call({"op": "get", "key": key})
        if value is None:
            return None
        if not isinstance(value, str):
            raise StoreError("supervisor socket: a value that is not text")
        return base64.b64decode(value)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        encoded = base64.b64encode(value).decode()
        await self._call({"op": "put", "key": key, "value": encoded, "ttl_s": ttl_s})

    async def probe(self) -> None:
        if await self._call({"op": "ping"}) != "pong":
            raise StoreError("supervisor socket: no pong")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.close()


def _answer(table: CounterTable, request: object) -> object:
    """One socket request against ``table``; ValueError if it is malformed."""
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    op = request.get("op")
    if op not in ("add", "settle", "get", "put", "ping"):
        raise ValueError("op: add, settle, get, put or ping")
    if op == "ping":
        return "pong"
    if op in ("add", "settle"):
        keys = request.get("keys")
        if (
            not isinstance(keys, list)
            or not 0 < len(keys) <= _MAX_KEYS
            or not all(isinstance(k, str) and 0 < len(k) <= _MAX_KEY_CHARS for k in keys)
        ):
            raise ValueError("keys: a list of 1 to 8 short texts")
        if op == "settle":
            return list(table.settle(keys))
        return list(table.add(keys, _ttl(request)))
    key = request.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_CHARS:
        raise ValueError("key: a short text")
    if op == "get":
        value = table.get(key)
        return None if value is None else base64.b64encode(value).decode()
    encoded = request.get("value")
    if not isinstance(encoded, str) or len(encoded) > _MAX_VALUE_BYTES * 2:
        raise ValueError("value: base64 text")
    table.put(key, base64.b64decode(encoded, validate=True), _ttl(request))
    return None


def _ttl(request: dict[str, Any]) -> float:
    ttl = request.get("ttl_s")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= 86400 * 30:
        raise ValueError("ttl_s: seconds, more than 0")
    return float(ttl)


async def _serve_store_client(table: CounterTable, stream: trio.SocketStream) -> None:
    buffer = bytearray()
    async with stream:
        while True:
            while (end := buffer.find(b"\n")) < 0:
                if len(buffer) > _MAX_LINE:
                    await stream.send_all(b'{"error": "request too long"}\n')
                    return
                try:
                    data = await stream.receive_some(_MAX_LINE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                buffer += data
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            try:
                reply: dict[str, object] = {"result": _answer(table, json.loads(line))}
            except (ValueError, RecursionError) as exc:
                reply = {"error": f"bad request: {exc}"}
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if "error" in reply:
                return


async def serve_store(
    table: CounterTable,
    path: Path,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``table`` on a Unix socket at ``path`` (in a private directory) until cancelled."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    log.info("throttle store listening path=%s", path)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve_store_client(table, stream)
        except Exception:  # a bug must not take the supervisor down
            log.exception("throttle store: internal error serving a worker")

    task_status.started()  # bound and listening: workers may connect
    await trio.serve_listeners(handle, [listener])


# -- the throttle ----------------------------------------------------------------------------


class Throttle:
    """The door's login throttle: keys, a store, the policy; one per process.

    ``socket_path`` is the supervisor's store (a worker of ``workers: N``);
    with ``store: redis`` the config's Redis is used instead.  :meth:`run`
    keeps the shared store connected (and swaps it when a reload changes it);
    without it, or with nothing shared, every count is local.
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        config: StoreConfig | None = None,
        *,
        socket_path: Path | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.socket_path = socket_path
        self._socket_secret: bytes | None = None
        if socket_path is not None:
            self._socket_secret = read_secret_file(socket_path.parent / "secret")
        self._random_secret = secrets.token_bytes(32)
        self.config = config or StoreConfig()
        self.local = LocalStore(self.config.max_entries)
        self.keyer = self._keyer(self.config)
        self.shared: Store | None = self._shared_for(self.config)
        self._changed = trio.Event()
        self._down_since: float | None = None

    @property
    def probe_timeout_s(self) -> float:
        """How long a probe may take: connecting and loading scripts included."""
        return max(2.0, 5 * self.config.timeout_s)

    # -- configuration ------------------------------------------------------------

    def _keyer(self, config: StoreConfig) -> Keyer:
        secret = config.secret or self._socket_secret or self._random_secret
        return Keyer(secret, config.key_prefix)

    def _shared_for(self, config: StoreConfig) -> Store | None:
        if config.kind == "redis":
            # coredis takes a second to import: only when it is used.
            from refd.redis_store import RedisStore  # noqa: PLC0415

            store: Store = RedisStore(config.redis_url, timeout_s=config.timeout_s)
        elif self.socket_path is not None:
            store = SocketStore(self.socket_path)
        else:
            return None
        self.metrics.store_up(store.name, True)
        return store

    def reconfigure(self, config: StoreConfig) -> None:
        """Apply a reloaded ``throttle:`` section; a changed store is reconnected."""
        old, self.config = self.config, config
        self.local.table.max_entries = config.max_entries
        self.keyer = self._keyer(config)
        if (old.kind, old.redis_url) != (config.kind, config.redis_url):
            log.info("throttle store changed: %s -> %s", old.kind, config.kind)
            self.shared = self._shared_for(config)
            self._down_since = None
            self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the shared store (if any) connected and watched; swap it when replaced.

        The first probe is awaited (bounded by ``probe_timeout_s``) so that
        the first logins find a warm connection; a store that is down then
        is reported as such and the door starts anyway.
        """
        started = False
        while True:
            self._changed = changed = trio.Event()
            async with trio.open_nursery() as nursery:
                store = self.shared
                if store is not None:
                    await nursery.start(store.run)
                    await self._probe(store)
                    nursery.start_soon(self._watch, store)
                if not started:
                    started = True
                    task_status.started()
                await changed.wait()
                nursery.cancel_scope.cancel()

    async def _probe(self, store: Store) -> bool:
        reason = f"no answer to a probe within {self.probe_timeout_s:g}s"
        with trio.move_on_after(self.probe_timeout_s):
            try:
                await store.probe()
            except StoreError as exc:
                reason = str(exc)
            else:
                self._store_up(store, None)
                return True
        self._store_down(store, reason)
        return False

    async def _watch(self, store: Store) -> None:
        """While the store is down, probe it every ``retry_s``."""
        while True:
            await trio.sleep(self.config.retry_s)
            if self._down_since is not None:
                await self._probe(store)

    # -- the shared store, guarded ---------------------------------------------------------

    async def _shared_call(self, call: Callable[[Store], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) from the shared store, or (False, None) if it is down or absent."""
        store = self.shared
        if store is None or self._down_since is not None:
            return False, None
        started = time.perf_counter()
        reason = f"no answer within {self.config.timeout_s:g}s"
        with trio.move_on_after(self.config.timeout_s):
            try:
                result = await call(store)
            except StoreError as exc:
                reason = str(exc)
            else:
                self._store_up(store, time.perf_counter() - started)
                return True, result
        self._store_down(store, reason)
        return False, None

    def _store_up(self, store: Store, elapsed: float | None) -> None:
        m = self.metrics
        if elapsed is not None:
            m.store_round_trip(store.name, elapsed)
        if self._down_since is not None:
            log.warning(
                "throttle store %s answers again after %.1fs: shared counters in use",
                store.name,
                trio.current_time() - self._down_since,
            )
            self._down_since = None
            m.store_up(store.name, True)

    def _store_down(self, store: Store, reason: str) -> None:
        m = self.metrics
        m.store_error(store.name)
        if self._down_since is None:
            self._down_since = trio.current_time()
            m.store_up(store.name, False)
            then = (
                "logins are answered NO [UNAVAILABLE]"
                if self.config.on_error == "closed"
                else "using this process's own counters"
            )
            log.error(
                "throttle store %s unavailable (%s): %s until it answers", store.name, reason, then
            )

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    # -- what sessions ask ---------------------------------------------------------------

    async def failed(
        self, address: str, user: str, rules: ThrottleRules, *, base_s: float, max_s: float
    ) -> Verdict:
        """Count a failed login; the delay before its answer."""
        keys = self.keyer.throttle_keys(address, user, rules)
        ttl = rules.forget_after_s
        local = self.local.table.add(keys, ttl)
        ok, shared = await self._shared_call(lambda s: s.add(keys, ttl))
        counts = Counts(*(shared if ok and shared is not None else local))
        delay = failure_delay(counts, rules, base_s=base_s, max_s=max_s)
        return self._verdict(delay, counts, ok)

    async def succeeded(
        self, address: str, user: str, rules: ThrottleRules, *, base_s: float, max_s: float
    ) -> Verdict:
        """A successful login: the delay before its answer; the user's failures there forgiven."""
        keys = self.keyer.throttle_keys(address, user, rules)
        local = self.local.table.settle(keys)
        ok, shared = await self._shared_call(lambda s: s.settle(keys))
        counts = Counts(*(shared if ok and shared is not None else local))
        delay = success_delay(counts, rules, base_s=base_s, max_s=max_s)
        return self._verdict(delay, counts, ok)

    def _verdict(self, delay: Delay, counts: Counts, ok: bool) -> Verdict:
        degraded = self.shared is not None and not ok
        refuse = degraded and self.config.on_error == "closed"
        return Verdict(delay, counts, degraded, refuse)

    # -- the imap source's shared positive cache ------------------------------------------

    def cache_key(self, parts: Sequence[bytes]) -> str:
        return self.keyer.key("c", b"\x00".join(parts))

    async def cache_get(self, key: str) -> bytes | None:
        ok, value = await self._shared_call(lambda s: s.get(key))
        return value if ok else self.local.table.get(key)

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.local.table.put(key, value, ttl_s)
        await self._shared_call(lambda s: s.put(key, value, ttl_s))
