"""Several worker processes sharing the listening ports (``workers: N``).

One trio process is bound by one core; a door that must use every core runs
N workers.  The supervisor:

- reserves each listener's port (resolving port 0) with a bound, never
  listening, ``SO_REUSEPORT`` socket, and starts the workers with those
  ports; each worker binds its own ``SO_REUSEPORT`` listening socket, so the
  kernel spreads new connections over the live workers;
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
  the socket in ``REFD_THROTTLE_SOCKET``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.multiprocess import MultiProcessCollector

from refd.config import DaemonConfig, load_config
from refd.http import serve_http
from refd.store import serve_store
from refd.throttle import CounterTable

__all__ = ["STORE_SOCKET_ENV", "Supervisor"]

log = logging.getLogger("refd.supervisor")

#: A worker that dies sooner than this after its start is restarted more slowly.
_MIN_LIFETIME_S = 5.0
_BACKOFF_MAX_S = 30.0
#: Where a worker finds the supervisor's throttle store.
STORE_SOCKET_ENV = "REFD_THROTTLE_SOCKET"


def _reserve(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    return sock


class Supervisor:
    """Run and watch ``config.workers`` worker processes."""

    def __init__(self, config: DaemonConfig, *, log_args: list[str] | None = None) -> None:
        self.config = config
        self.log_args = log_args or []
        self.multiproc_dir = Path(tempfile.mkdtemp(prefix="refd-metrics-"))
        # mkdtemp makes it 0700: only this user reaches the socket and secret.
        self.store_dir = Path(tempfile.mkdtemp(prefix="refd-store-"))
        self.store_socket = self.store_dir / "throttle.sock"
        secret = self.store_dir / "secret"
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_hex(32))
        self.store_table = CounterTable(trio.current_time, max_entries=config.store.max_entries)
        self.reserved = [_reserve(lc.address, lc.port) for lc in config.listeners]
        self.ports = {
            lc.name: sock.getsockname()[1]
            for lc, sock in zip(config.listeners, self.reserved, strict=True)
        }
        self.workers: dict[int, trio.Process] = {}
        self.ready: set[int] = set()
        self.stopping = False
        self.restarts = 0

    def worker_command(self) -> list[str]:
        bound = ",".join(f"{name}={port}" for name, port in self.ports.items())
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
        while not self.stopping:
            started = trio.current_time()
            proc = await trio.lowlevel.open_process(
                self.worker_command(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
            )
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
                multiprocess.mark_process_dead(proc.pid, str(self.multiproc_dir))  # type: ignore[no-untyped-call]
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
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiproc_dir))  # type: ignore[no-untyped-call]
        try:
            with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_store, self.store_table, self.store_socket)
                    metrics_port = None
                    if self.config.metrics_address is not None:
                        host, port = self.config.metrics_address
                        metrics_port = await nursery.start(
                            serve_http, host, port, registry, self.is_ready
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
                            break
                        with trio.move_on_after(self.config.shutdown_grace_s + 5) as scope:
                            while any(p.returncode is None for p in self.workers.values()):
                                await trio.sleep(0.05)
                        if scope.cancelled_caught:
                            self._signal_workers(signal.SIGKILL)
                    nursery.cancel_scope.cancel()
        finally:
            for sock in self.reserved:
                sock.close()
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
