"""Running the daemon: load, serve, reload, drain and stop.

The loaded :class:`~refd.runtime.Service` sits behind one
:class:`~refd.runtime.ServiceRef`.  SIGHUP (or a changed file, when
``watch_interval_s`` is set) re-reads the daemon config, the routing table,
its user map, the passwd-file and the TLS certificate in a worker thread,
never on the event loop, and only a complete, valid result replaces the
reference; on any error the old service stays, the error is logged as
``file:line: reason`` and counted.  Listeners are bound once: a changed
``listeners:`` section is reported and needs a restart.

SIGTERM / SIGINT stop the door: listeners close, ``/readyz`` turns 503,
every session is told ``* BYE`` (with a referral to the sibling door when
one is configured), and the process exits once they are gone or
``shutdown_grace_s`` has passed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from refd import __version__, compiled
from refd.auth.hash_threads import hash_client
from refd.auth.registry import source_spec
from refd.autodiscovery.server import serve_autodiscovery
from refd.config.loader import (
    DaemonConfig,
    Pacing,
    bind_shared_cache,
    bulk_pacing,
    load_config,
    load_service,
)
from refd.config.tree import TreeError
from refd.door import DoorState
from refd.http import serve_http
from refd.listen import Bound
from refd.logs import log_event
from refd.metrics import Metrics
from refd.routing import RoutingTable
from refd.routing.usermap import UserMap
from refd.runtime import Service, ServiceRef
from refd.server import BoundListener, serve
from refd.store import Throttle
from refd.tls_tickets import ticket_keys

__all__ = ["Daemon", "announce", "config_sha256", "run"]

_T = TypeVar("_T")
log = logging.getLogger("refd.daemon")

#: how long a worker gathers counts before it writes them to the shared
#: metric files.  Publishing after every pass of the event loop that
#: counted something cost an extra pass per publish: at c=1 that was three
#: per session, 965 against 758 us of CPU per PLAIN session with two
#: workers (bench/ab.py, 6 rounds); gathering for 50 ms gave 750 us there.
#: At c=64: 558 us (min 479) against 525 (min 480) per pass, and 592
#: (min 541) before the tally.  A worker killed by SIGKILL loses at most
#: this long's counts.
PUBLISH_INTERVAL_S = 0.05


def _identity(config: DaemonConfig) -> DaemonConfig:
    return config


def announce(config: DaemonConfig, service: Service) -> None:
    """Say loudly what an admin must know about a loaded config."""
    spec = source_spec(config.auth_source)
    if (warning := spec.warning(config.auth)) is not None:
        log.warning("%s", warning)
    for problem in spec.problems(service.auth):
        log.warning("%s", problem)
    if config.policy.drain:
        log.warning("drain mode: new connections are answered with * BYE")


def watched_files(config: DaemonConfig, service: Service) -> list[Path]:
    """Every file a reload reads."""
    files = [config.file, config.routing_file]
    if service.table.user_map_file:
        files.append(Path(service.table.user_map_file))
    files.extend(source_spec(config.auth_source).watched(config.auth))
    for extra in (config.tls_cert, config.tls_key, config.store.secret_file):
        if extra is not None:
            files.append(extra)
    return files


def config_sha256(config: DaemonConfig, service: Service) -> str:
    """The sha256 over every file in service, by role and content.

    The daemon config, the routing table, its user map and the passwd-file:
    a change to any of them changes the hash.  Not the TLS files (doors often
    have a certificate each) nor the throttle secret.  Paths do not count, so
    doors that serve the same files from different places agree.
    ``refd_config_info{sha256}`` and the start-up and reload lines carry it.
    """
    user_map = service.table.user_map_file
    files = {
        "config": config.file,
        "routing": config.routing_file,
        "user_map": Path(user_map) if user_map else None,
        "passwd_file": getattr(config.auth, "path", None),
    }
    outer = hashlib.sha256()
    for role, path in files.items():
        if path is None:
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "unreadable"
        outer.update(f"{role}\0{digest}\n".encode())
    return outer.hexdigest()


def _fingerprint(files: list[Path]) -> tuple[tuple[int, int, int], ...]:
    # os.stat follows symlinks, so a Kubernetes ConfigMap update (which
    # swaps the "..data" symlink) changes the inode seen here.
    out = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            out.append((-1, -1, -1))
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


#: The interpreter's thread switch interval while a reload parses in a thread.
#: The default, 5 ms, is how long the event loop waits for the GIL after each
#: syscall while the parser runs Python: a NOOP round trip needs several.
#: 0.1 ms rather than 0.5: the longest NOOP gap while a 1M-user table was
#: reloaded under login load (bench/run --parts reload, workers: 1; runs in
#: which the host let the reloads take 2-3 s) 9.4, 9.7 and 12.9 ms against
#: 32.3, 48.8 and 68.2 ms, for reloads about 10 % longer.
RELOAD_SWITCH_INTERVAL_S = 0.0001

#: How a reload's thread paces its big files (`bulk_pacing`): 2 ms asleep
#: after each 10 ms of reading, hashing or parsing.  A virtual machine's host
#: can take a vCPU away for a whole scheduling period when both vCPUs have
#: run without a pause: 100 ms each time on the bench machine (two busy
#: threads saw 7 such gaps in 8 s, one busy thread none, a busy one beside
#: one that slept 2 ms in every 12 none).  When the vCPU taken is the one
#: whose reload thread holds the GIL, the event loop waits the whole 100 ms.
#: Three reloads of a 1M-user table beside a busy event loop
#: (bench/routing_bench.py reload), two runs each: the longest gap 102.2 and
#: 104.4 ms without the pauses, 17.8 and 8.7 ms with them (each reload
#: 3.5-9.6 s either way); bench/NOTES.md (The reload stall on this machine).
RELOAD_PACING = Pacing(work_s=0.010, pause_s=0.002)


_loading: list[float] = []  # the interval before each reload that is running


async def _in_thread(load: Callable[[], _T]) -> _T:
    """``load()`` in a worker thread, with the GIL handed back sooner meanwhile
    and the big files it reads paced (`RELOAD_PACING`)."""
    _loading.append(sys.getswitchinterval())
    sys.setswitchinterval(RELOAD_SWITCH_INTERVAL_S)
    paced = bulk_pacing.set(RELOAD_PACING)  # the thread runs in a copy of this context
    try:
        return await trio.to_thread.run_sync(load)
    finally:
        bulk_pacing.reset(paced)
        before = _loading.pop()
        if not _loading:  # the last of overlapping reloads (daemons in one process)
            sys.setswitchinterval(before)


#: How often the retiring thread looks whether a replaced user map is free.
RETIRE_POLL_S = 0.5
#: The retiring thread's pause between two shards, so the event loop gets the GIL.
RETIRE_PAUSE_S = 0.001


def _references(held: list[tuple[dict[str, str], ...]], i: int) -> int:
    return sys.getrefcount(held[i])


# What sys.getrefcount says of an object only a list holds, asked as above.
_ONLY_THE_LIST = _references([({},)], 0)


class Retirer:
    """Frees the user maps of replaced routing tables off the event loop.

    Dropping a table of a million users frees a million strings in one
    deallocation that holds the GIL for 10-25 ms, on the event loop, whenever
    its last reference goes (a reload, or the end of the last session that
    still reads it). Instead the reload hands the table's map storage
    (`UserMap.shards`) to this object, whose thread waits until nothing else
    refers to it -- no table and no lookup can reach it then -- and empties
    it one shard at a time with a pause between shards: 64 short calls.
    (A plain drop in a thread would still be one long call holding the GIL.)
    In ``bench/routing_bench.py reload`` (1M users, three reloads) the
    longest event-loop gap fell from 57-93 ms to 24-28 ms with the shards.
    """

    def __init__(self, pause_s: float = RETIRE_PAUSE_S, *, threaded: bool = True) -> None:
        self.pause_s = pause_s
        #: False: no thread; the owner calls `sweep` (tests)
        self.threaded = threaded
        self._held: list[tuple[dict[str, str], ...]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def retire(self, table: RoutingTable) -> None:
        """Free ``table``'s user map once the table and its lookups are gone."""
        user_map = table.user_map
        if not isinstance(user_map, UserMap) or not any(user_map.shards):
            return
        shards = user_map.shards
        del user_map
        with self._lock:
            self._held.append(shards)
            if self.threaded and self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="refd-retire-tables", daemon=True
                )
                self._thread.start()

    @property
    def pending(self) -> int:
        """How many maps wait for their last user."""
        with self._lock:
            return len(self._held)

    def sweep(self) -> int:
        """Free every held map that nothing else refers to; how many were freed."""
        with self._lock:
            free = [
                i for i in range(len(self._held)) if _references(self._held, i) <= _ONLY_THE_LIST
            ]
            # Nothing but the list holds these, so nothing can take a new
            # reference: they are this thread's alone once out of the list.
            taken = [self._held[i] for i in free]
            for i in reversed(free):
                del self._held[i]
        for shards in taken:
            for shard in shards:
                shard.clear()
                time.sleep(self.pause_s)
        return len(taken)

    def _run(self) -> None:
        while True:
            time.sleep(RETIRE_POLL_S)
            self.sweep()
            with self._lock:
                if not self._held:
                    self._thread = None
                    return


#: The process's one retirer (each worker of ``workers: N`` is a process).
retirer = Retirer()


class Daemon:
    """One door process: its service reference, shared state and metrics."""

    def __init__(
        self,
        config: DaemonConfig,
        service: Service,
        metrics: Metrics | None = None,
        *,
        adjust: Callable[[DaemonConfig], DaemonConfig] = _identity,
        store_socket: Path | None = None,
        sockets: Bound | None = None,
    ) -> None:
        #: applied to every config loaded (a worker pins its bound ports)
        self.adjust = adjust
        #: listening sockets bound before the start (`refd.listen`), if any
        self.sockets = sockets
        self.config = config
        self.ref = ServiceRef(service)
        self.metrics = metrics or Metrics()
        # store_socket: the supervisor's throttle store (a worker of workers: N)
        throttle = Throttle(self.metrics, config.store, socket_path=store_socket)
        self.door = DoorState(self.metrics, throttle)
        bind_shared_cache(config, service, throttle)
        self.config_sha256 = config_sha256(config, service)
        self.metrics.config_loaded(self.config_sha256, time.time())
        self._reload_lock = trio.Lock()
        #: frees the user maps of replaced tables (the process's one, by default)
        self.retirer = retirer
        #: the autodiscovery listeners as bound, once :meth:`run` has started
        self.http_bound: list[BoundListener] = []

    def ready(self) -> bool:
        return self.door.listening and not self.door.stopped and not self.ref.current.policy.drain

    def _load(self) -> tuple[DaemonConfig, Service, str]:
        config = self.adjust(load_config(self.config.file))
        service = load_service(config)
        return config, service, config_sha256(config, service)

    async def reload(self) -> bool:
        """Load everything afresh and swap it in; keep what is in service on error."""
        async with self._reload_lock:
            try:
                new_config, service, sha256 = await _in_thread(self._load)
            except TreeError as exc:
                self.metrics.reload_failed()
                log.error("reload failed, keeping the tables in service: %s", exc)
                return False
            except Exception:
                # A bug in a loader must not take the door down with it.
                self.metrics.reload_failed()
                log.exception("reload failed unexpectedly, keeping the tables in service")
                return False
            if (
                new_config.listeners != self.config.listeners
                or new_config.http_listeners != self.config.http_listeners
            ):
                log.warning("reload: listener changes take effect only after a restart")
            self.door.throttle.reconfigure(new_config.store)
            bind_shared_cache(new_config, service, self.door.throttle)
            old = self.ref.current
            self.ref.current = service
            self.retirer.retire(old.table)
            del old  # a session may still hold it; its user map is freed off the loop
            self.config = new_config
            self.config_sha256 = sha256
            self.metrics.config_loaded(sha256, time.time(), reload=True)
            announce(new_config, service)
            log_event(
                log,
                logging.INFO,
                "reload",
                "reload ok routing_sha256=%(routing_sha256)s config_sha256=%(config_sha256)s",
                routing_sha256=service.table.sha256,
                config_sha256=sha256,
            )
            return True

    async def _watch(self, interval_s: float) -> None:
        files = watched_files(self.config, self.ref.current)
        seen = _fingerprint(files)
        while True:
            await trio.sleep(interval_s)
            now = _fingerprint(files)
            if now != seen:
                log.info("a configuration file changed: reloading")
                await self.reload()
                # Compare the next poll with what was seen *before* this
                # reload read the files: a change made while it was reading
                # then triggers another one.
                new_files = watched_files(self.config, self.ref.current)
                seen = now if new_files == files else _fingerprint(new_files)
                files = new_files

    async def run(
        self,
        *,
        signals: bool = True,
        task_status: trio.TaskStatus[list[object]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until stopped (SIGTERM / SIGINT, or :meth:`DoorState.stop`)."""
        # A worker reads the supervisor's TLS ticket keys from their pipe by
        # now, with a TLS listener (the config's context took them) or without
        # one (then its pipe is closed here, for a TLS section a reload adds).
        ticket_keys()
        hasher = hash_client()
        hasher.busy = self.door.busy
        log_event(
            log,
            logging.INFO,
            "start",
            "refd %(version)s starting config=%(config)s routing_sha256=%(routing_sha256)s "
            "config_sha256=%(config_sha256)s hash_threads=%(hash_threads)d pid=%(pid)d",
            version=__version__,
            config=str(self.config.file),
            routing_sha256=self.ref.current.table.sha256,
            config_sha256=self.config_sha256,
            hash_threads=hasher.threads,
            pid=os.getpid(),
        )
        announce(self.config, self.ref.current)
        async with trio.open_nursery() as nursery:
            if signals:
                # Before anything listens: a SIGHUP sent as soon as /readyz
                # says 200 must reach the reload, not the default action
                # (which ends the process).
                await nursery.start(self._signals)
            await nursery.start(self.door.throttle.run)
            if self.metrics.multiprocess:
                nursery.start_soon(self._publish_metrics)
            bound: list[object] = []
            if self.config.metrics_address is not None:
                host, port = self.config.metrics_address
                bound.append(
                    await nursery.start(
                        partial(serve_http, sock=self.sockets.metrics if self.sockets else None),
                        host,
                        port,
                        self.metrics.registry,
                        self.ready,
                    )
                )

            async def serve_then_stop(task_status: trio.TaskStatus[object]) -> None:
                # The IMAP door and the HTTP side stop together, each after
                # its own grace; then the rest (metrics, watcher) goes.
                async with trio.open_nursery() as doors:
                    if self.config.http_listeners:
                        self.http_bound = await doors.start(
                            partial(
                                serve_autodiscovery,
                                self.config,
                                self.ref,
                                door=self.door,
                                sockets=self.sockets.http if self.sockets else None,
                            )
                        )
                    await serve(
                        self.config,
                        self.ref,
                        door=self.door,
                        sockets=self.sockets.listeners if self.sockets else None,
                        task_status=task_status,
                    )
                nursery.cancel_scope.cancel()

            bound.insert(0, await nursery.start(serve_then_stop))
            if self.config.watch_interval_s > 0:
                nursery.start_soon(self._watch, self.config.watch_interval_s)
            log_event(
                log,
                logging.INFO,
                "ready",
                "refd ready routing_sha256=%(routing_sha256)s build=%(build)s",
                routing_sha256=self.ref.current.table.sha256,
                build=compiled.describe(),
            )
            task_status.started(bound)

    async def _publish_metrics(self) -> None:
        """A worker's counts into the shared metric files, at most every
        `PUBLISH_INTERVAL_S` and only after something was counted (`refd.metrics`:
        the tally); the last counts once more when the worker stops."""
        try:
            while True:
                changed = trio.Event()
                self.metrics.on_change = changed.set
                self.metrics.publish()
                await changed.wait()
                await trio.sleep(PUBLISH_INTERVAL_S)
        finally:
            self.metrics.on_change = None
            self.metrics.publish()

    async def _signals(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("stopping on %s", signal.Signals(signum).name)
                    self.door.stop()


def run(config: DaemonConfig, service: Service, sockets: Bound | None = None) -> None:
    """Serve until SIGTERM or SIGINT (on ``sockets``, when bound already)."""
    trio.run(Daemon(config, service, sockets=sockets).run)
