"""Running the daemon: load, serve, reload on SIGHUP, stop on SIGTERM.

The loaded :class:`~refd.session.Service` sits behind one
:class:`~refd.session.ServiceRef`.  SIGHUP re-reads the routing table, its
user map and the passwd-file in a worker thread (never on the event loop),
and only a complete, valid result replaces the reference; on any error the
old tables stay in service and the error is logged as ``file:line: reason``.
"""

from __future__ import annotations

import logging
import signal
import ssl
from collections.abc import Callable

import trio

from refd.config import DaemonConfig, load_service
from refd.server import make_tls_context, serve
from refd.session import Service, ServiceRef
from refd.tree import TreeError

__all__ = ["reload_service", "run"]

log = logging.getLogger("refd.daemon")


async def reload_service(config: DaemonConfig, ref: ServiceRef) -> bool:
    """Load the tables afresh and swap them in; keep the old ones on error."""
    try:
        service: Service = await trio.to_thread.run_sync(load_service, config)
    except TreeError as exc:
        log.error("reload failed, keeping the tables in service: %s", exc)
        return False
    ref.current = service
    log.info("reload ok routing_sha256=%s", service.table.sha256)
    return True


def _tls_loader(config: DaemonConfig) -> Callable[[], ssl.SSLContext | None]:
    if config.tls_cert is None or config.tls_key is None:
        return lambda: None
    ctx = make_tls_context(str(config.tls_cert), str(config.tls_key))
    return lambda: ctx


async def _main(config: DaemonConfig, service: Service) -> None:
    ref = ServiceRef(service)
    tls = _tls_loader(config)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(config, ref, tls_context=tls, task_status=task_status)
            )
            log.info("refd ready routing_sha256=%s", service.table.sha256)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await reload_service(config, ref)
                else:
                    log.info("stopping on %s", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break


def run(config: DaemonConfig, service: Service) -> None:
    """Serve until SIGTERM or SIGINT."""
    trio.run(_main, config, service)
