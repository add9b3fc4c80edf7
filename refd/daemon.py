"""Running the daemon: load, serve, reload on SIGHUP, stop on SIGTERM.

The loaded :class:`~refd.session.Service` sits behind one
:class:`~refd.session.ServiceRef`.  SIGHUP re-reads the daemon config, the
routing table, its user map, the passwd-file and the TLS certificate in a
worker thread (never on the event loop), and only a complete, valid result
replaces the reference; on any error the old service stays and the error is
logged as ``file:line: reason``.  Listeners are bound once: a changed
``listeners:`` section is reported and needs a restart.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import trio

from refd.config import DaemonConfig, load_config, load_service
from refd.server import serve
from refd.session import DoorState, Service, ServiceRef
from refd.tree import TreeError

__all__ = ["announce", "reload_service", "run"]

log = logging.getLogger("refd.daemon")


def _load(path: Path) -> tuple[DaemonConfig, Service]:
    config = load_config(path)
    return config, load_service(config)


async def reload_service(config: DaemonConfig, ref: ServiceRef) -> bool:
    """Load everything afresh and swap it in; keep what is in service on error."""
    try:
        new_config, service = await trio.to_thread.run_sync(_load, config.file)
    except TreeError as exc:
        log.error("reload failed, keeping the tables in service: %s", exc)
        return False
    if new_config.listeners != config.listeners:
        log.warning("reload: listener changes take effect only after a restart")
    ref.current = service
    announce(new_config)
    log.info("reload ok routing_sha256=%s", service.table.sha256)
    return True


def announce(config: DaemonConfig) -> None:
    """Say loudly what an admin must know about a loaded config."""
    if config.auth_source == "trust":
        nets = ", ".join(str(n) for n in config.trust_networks)
        log.warning(
            "auth source is TRUST: any password is accepted from %s; "
            "make sure only an authenticating proxy can connect from there",
            nets,
        )


async def _main(config: DaemonConfig, service: Service) -> None:
    ref = ServiceRef(service)
    door = DoorState()
    announce(config)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(config, ref, door=door, task_status=task_status)
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
