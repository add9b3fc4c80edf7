"""Several worker processes sharing the listening ports (``workers: N``).

One trio process is bound by one core; a door that must use every core runs
N workers.  The supervisor:

- binds each listener once (`refd.listen`: no ``SO_REUSEPORT``, so a port
  another process serves is refused) and starts the workers with those
  listening sockets (inherited file descriptors): the kernel hands each new
  connection to one of the workers waiting in accept, and connections still
  queued when a worker dies are taken by the others;
- restarts a worker that dies (with a short back-off), and tells
  prometheus-client the dead process's live gauges are gone;
- forwards SIGHUP (reload) and SIGTERM / SIGINT (graceful stop) to every
  worker, and exits when they have;
- serves the one metrics endpoint, adding up every worker's metrics with
  prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a
  fresh directory wiped at start; the workers get it in their environment
  before they import the client).  How each gauge combines across workers is
  chosen in ``refd.metrics``;
- hosts the login throttle's counters (``refd.store.serve_store``) on a Unix
  socket in a private directory, with a random HMAC secret next to it, so
  every worker counts against the same table without Redis; the workers find
  the socket in ``REFD_THROTTLE_SOCKET``;
- hosts the hashing pool (`refd.auth.hash_threads.HashPool`: a thread per
  core) that every worker sends its password verifications to, so all of
  them share one queue; each worker finds its sockets in
  ``REFD_HASH_SOCKETS``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from refd import __version__
from refd.auth.hash_threads import HASH_SOCKETS_ENV, HashPool, usable_cores
from refd.config.loader import DaemonConfig, load_config
from refd.http import serve_http
from refd.listen import bind_all
from refd.logs import log_event
from refd.metrics import supervisor_registry, worker_gone
from refd.store import serve_store
from refd.throttle import CounterTable
from refd.tls_tickets import TICKET_KEYS_FD_ENV, keys_pipe

__all__ = ["STORE_SOCKET_ENV", "Supervisor"]

log = logging.getLogger("refd.supervisor")

#: A worker that dies sooner than this after its start is restarted more slowly.
_MIN_LIFETIME_S = 5.0
_BACKOFF_MAX_S = 30.0
#: Where a worker finds the supervisor's throttle store.
STORE_SOCKET_ENV = "REFD_THROTTLE_SOCKET"


class Supervisor:
    """Run and watch ``config.workers`` worker processes."""

    def __init__(self, config: DaemonConfig, *, log_args: list[str] | None = None) -> None:
        self.config = config
        self.log_args = log_args or []
        #: every listening socket, bound here before any worker starts (a BindError if not)
        self.bound = bind_all(config)
        self.ports = dict(self.bound.ports())
        self.multiproc_dir = Path(tempfile.mkdtemp(prefix="refd-metrics-"))
        # mkdtemp makes it 0700: only this user reaches the socket and secret.
        self.store_dir = Path(tempfile.mkdtemp(prefix="refd-store-"))
        self.store_socket = self.store_dir / "throttle.sock"
        secret = self.store_dir / "secret"
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_hex(32))
        self.store_table = CounterTable(trio.current_time, max_entries=config.store.max_entries)
        self.workers: dict[int, trio.Process] = {}
        self.ready: set[int] = set()
        self.stopping = False
        self.restarts = 0
        #: the workers' one hashing pool, started by `run`
        self.hash_pool: HashPool | None = None

    def worker_command(self) -> list[str]:
        # name=fd of each listening socket, IMAP and HTTP; the worker inherits the fds.
        every = {**self.bound.listeners, **self.bound.http}
        bound = ",".join(f"{name}={sock.fileno()}" for name, sock in every.items())
        return [
            sys.executable,
            "-m",
            "refd",
            "serve",
            "-c",
            str(self.config.file),
            "--worker",
            bound,
            *self.log_args,
        ]

    def _live_workers(self) -> dict[int, int]:
        """slot -> pid of every worker process running now."""
        return {slot: p.pid for slot, p in self.workers.items() if p.returncode is None}

    def is_ready(self) -> bool:
        return bool(self.ready) and not self.stopping and not self.config.policy.drain

    async def _run_worker(self, slot: int) -> None:
        """Keep worker ``slot`` running until the supervisor stops."""
        backoff = 0.5
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc_dir),
            STORE_SOCKET_ENV: str(self.store_socket),
        }
        pool = self.hash_pool
        assert pool is not None
        while not self.stopping:
            started = trio.current_time()
            # A reply socket of its own for each start: answers to a dead
            # worker's requests can never reach the next one.
            client, replies = pool.add_client()
            # The TLS ticket keys, through a pipe of its own (never the environment).
            keys = keys_pipe()
            try:
                proc = await trio.lowlevel.open_process(
                    self.worker_command(),
                    env={
                        **env,
                        HASH_SOCKETS_ENV: pool.environment(client, replies),
                        TICKET_KEYS_FD_ENV: str(keys),
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    pass_fds=[
                        *(
                            sock.fileno()
                            for sock in [
                                *self.bound.listeners.values(),
                                *self.bound.http.values(),
                                pool.request_socket,
                                replies,
                            ]
                        ),
                        keys,
                    ],
                )
            finally:
                replies.close()
                os.close(keys)
            self.workers[slot] = proc
            log.info("worker %d started pid=%d", slot, proc.pid)
            try:
                assert proc.stdout is not None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_ready, slot, proc)
                    code = await proc.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self.ready.discard(slot)
                pool.remove_client(client)
                worker_gone(proc.pid, self.multiproc_dir)
            if self.stopping:
                log.info("worker %d pid=%d exited with %d", slot, proc.pid, code)
                return
            self.restarts += 1
            log.error("worker %d pid=%d died with %d; restarting", slot, proc.pid, code)
            if trio.current_time() - started < _MIN_LIFETIME_S:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            else:
                backoff = 0.5

    async def _watch_ready(self, slot: int, proc: trio.Process) -> None:
        assert proc.stdout is not None
        buf = b""
        async for chunk in proc.stdout:
            buf += chunk
            if b"ready\n" in buf:
                self.ready.add(slot)
                log.info("worker %d ready pid=%d", slot, proc.pid)
                buf = b""

    def _signal_workers(self, signum: int) -> None:
        for slot, proc in self.workers.items():
            # A worker still starting has no SIGHUP handler yet (the default
            # action would kill it); it reads the current files anyway.
            if proc.returncode is None and (signum != signal.SIGHUP or slot in self.ready):
                proc.send_signal(signum)

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, object]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        log_event(
            log,
            logging.INFO,
            "start",
            "refd %(version)s supervisor starting config=%(config)s workers=%(workers)d "
            "hash_threads=%(hash_threads)d pid=%(pid)d",
            version=__version__,
            config=str(self.config.file),
            workers=self.config.workers,
            hash_threads=usable_cores(),
            pid=os.getpid(),
        )
        self.hash_pool = pool = HashPool(usable_cores())
        registry = supervisor_registry(self.multiproc_dir, self._live_workers)
        try:
            with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_store, self.store_table, self.store_socket)
                    metrics_port = None
                    if self.config.metrics_address is not None:
                        host, port = self.config.metrics_address
                        metrics_port = await nursery.start(
                            partial(serve_http, sock=self.bound.metrics),
                            host,
                            port,
                            registry,
                            self.is_ready,
                        )
                    async with trio.open_nursery() as workers:
                        for slot in range(self.config.workers):
                            workers.start_soon(self._run_worker, slot)
                        with trio.move_on_after(30):
                            while len(self.ready) < self.config.workers:
                                await trio.sleep(0.05)
                        log.info(
                            "supervisor ready workers=%d ports=%s", len(self.ready), self.ports
                        )
                        task_status.started({"ports": self.ports, "metrics_port": metrics_port})
                        async for signum in signals:
                            if signum == signal.SIGHUP:
                                self._reload_config()
                                self._signal_workers(signal.SIGHUP)
                                continue
                            log.info("stopping workers on %s", signal.Signals(signum).name)
                            self.stopping = True
                            self._signal_workers(signal.SIGTERM)
                            # New clients are refused once the workers close theirs.
                            self.bound.close_listeners()
                            break
                        with trio.move_on_after(self.config.shutdown_grace_s + 5) as scope:
                            while any(p.returncode is None for p in self.workers.values()):
                                await trio.sleep(0.05)
                        if scope.cancelled_caught:
                            self._signal_workers(signal.SIGKILL)
                    nursery.cancel_scope.cancel()
        finally:
            pool.close()
            self.bound.close()
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def _reload_config(self) -> None:
        # The supervisor itself only needs drain (for /readyz); the workers
        # reload everything and report their own errors.
        try:
            self.config = load_config(self.config.file)
        except Exception as exc:
            log.error("supervisor: config reload failed: %s", exc)
            return
        self.store_table.max_entries = self.config.store.max_entries
