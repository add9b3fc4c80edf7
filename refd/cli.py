"""The ``refd`` command: serve, check, explain, probe.

``main(argv=None) -> int`` is the entry point; every subcommand goes through
the same loaders as the daemon (``refd.config``), so ``refd check`` accepts
exactly what ``refd serve`` accepts.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from refd import __version__, probe
from refd.config import DEMO_CONFIG, DaemonConfig, load_config, load_routing, load_service
from refd.daemon import Daemon, run
from refd.logs import setup_logging
from refd.supervisor import STORE_SOCKET_ENV, Supervisor
from refd.tree import TreeError
from refd.yamltree import parse_yaml

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="refd",
        description="IMAP front door that answers with login and mailbox referrals.",
    )
    p.add_argument("--version", action="version", version=f"refd {__version__}")
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    s.add_argument("--log-format", choices=("text", "json"))
    # Internal: how the supervisor starts a worker (bound ports: name=port,...).
    s.add_argument("--worker", metavar="PORTS", help=argparse.SUPPRESS)

    c = sub.add_parser("check", help="validate a daemon config or a routing table")
    c.add_argument("files", type=Path, nargs="+", metavar="FILE")

    pr = sub.add_parser(
        "probe",
        help="log in at a door and follow its referrals like a client",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_arguments(pr)

    e = sub.add_parser("explain", help="show which rules match and the referral sent")
    src = e.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")
    src.add_argument("-r", "--routing", type=Path, help="a routing table file")
    e.add_argument("user")
    e.add_argument("mailbox", nargs="?")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.subcommand == "serve":
            return _serve(args)
        if args.subcommand == "check":
            return _check(args.files)
        if args.subcommand == "probe":
            return probe.run(args)
        return _explain(args)
    except TreeError as exc:
        print(f"refd: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    path = args.config or DEMO_CONFIG
    config = load_config(path)
    setup_logging(args.log_level or config.log_level, args.log_format or config.log_format)
    log = logging.getLogger("refd")
    if args.config is None:
        log.info("no -c given: serving the embedded demo config %s (demo users alice, bob)", path)
    if args.worker is not None:
        return _worker(config, args.worker)
    service = load_service(config)  # fail fast, before any worker starts
    if config.workers > 1:
        log_args = [f"--log-level={args.log_level or config.log_level}"]
        log_args.append(f"--log-format={args.log_format or config.log_format}")
        trio.run(Supervisor(config, log_args=log_args).run)
        return 0
    run(config, service)
    return 0


def _worker(config: DaemonConfig, ports: str) -> int:
    """One worker under the supervisor: bound ports given, no metrics endpoint."""
    given = dict(item.split("=", 1) for item in ports.split(",") if item)

    def pin(config: DaemonConfig) -> DaemonConfig:
        listeners = tuple(
            dataclasses.replace(lc, port=int(given.get(lc.name, lc.port)))
            for lc in config.listeners
        )
        return dataclasses.replace(config, listeners=listeners, metrics_address=None)

    config = pin(config)
    socket = os.environ.get(STORE_SOCKET_ENV)
    daemon = Daemon(
        config,
        load_service(config),
        adjust=pin,
        store_socket=Path(socket) if socket else None,
    )

    parent = os.getppid()

    async def orphaned() -> None:
        # A worker must not outlive its supervisor (kill -9 of the supervisor
        # included): once re-parented, stop as on SIGTERM.
        while os.getppid() == parent:
            await trio.sleep(1)
        logging.getLogger("refd").error("supervisor %d is gone: stopping", parent)
        daemon.door.stop()

    async def main() -> None:
        async with trio.open_nursery() as watch:
            watch.start_soon(orphaned)
            async with trio.open_nursery() as serving:
                await serving.start(daemon.run)
                print("ready", flush=True)  # the supervisor waits for this line
            watch.cancel_scope.cancel()  # the daemon has stopped: so does the worker

    trio.run(main)
    return 0


def _check(files: list[Path]) -> int:
    status = 0
    for path in files:
        try:
            kind = _check_one(path)
        except TreeError as exc:
            print(f"refd check: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"{path}: OK ({kind})")
    return status


def _check_one(path: Path) -> str:
    """Validate a daemon config (and all it names) or a routing table."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TreeError(str(path), 0, f"cannot read the file: {exc.strerror}") from None
    root = parse_yaml(text, str(path))
    keys = set(root.keys()) if root is not None and hasattr(root, "keys") else set()
    if "listeners" in keys or "routing" in keys:
        config = load_config(path)
        service = load_service(config)
        return f"daemon config; routing table sha256 {service.table.sha256[:12]}"
    table = load_routing(path)
    return f"routing table sha256 {table.sha256[:12]}"


def _explain(args: argparse.Namespace) -> int:
    if args.routing is not None:
        table = load_routing(args.routing)
    else:
        config = load_config(args.config or DEMO_CONFIG)
        table = load_service(config).table
    for line in table.explain(args.user, args.mailbox):
        print(line)
    return 0 if table.route_user(args.user) is not None else 2


if __name__ == "__main__":
    raise SystemExit(main())
