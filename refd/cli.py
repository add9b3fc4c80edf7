"""The ``refd`` command: serve, check, config, schema, explain, probe, dns, auth.

``main(argv=None) -> int`` is the entry point; every subcommand goes through
the same loaders as the daemon (``refd.config``), so ``refd check`` accepts
exactly what ``refd serve`` accepts.  The decisions the tools show are the
daemon's own: ``explain`` (`refd.explain`) runs `refd.answers`, ``check``
adds `refd.checks`, ``config`` prints `refd.effective`, ``schema``
`refd.schema`, ``auth`` asks the source as a login does (`refd.authtest`).
A file error or a port that cannot be had is one line, ``refd: ...``, and
exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from refd import __version__, authtest, compiled, probe
from refd.auth.auth_http import AuthHttpSource
from refd.auth.ldap import LdapSource
from refd.auth.passwd_file import PasswdFileSource
from refd.auth.trust import TrustConfig
from refd.checks import Finding, check_config, port_conflicts, routing_warnings
from refd.config.loader import DEMO_CONFIG, DaemonConfig, load_config, load_routing, load_service
from refd.config.tree import Reader, TreeError
from refd.config.yamltree import parse_yaml
from refd.daemon import Daemon, run
from refd.dns import zone_lines
from refd.effective import effective_text
from refd.explain import explain, explain_setup
from refd.listen import BindError, Bound, authority, bind_all
from refd.logs import setup_logging
from refd.routing import RoutingTable
from refd.routing.url import split_host_port
from refd.runtime import Service
from refd.schema import KINDS, schema_text
from refd.supervisor import STORE_SOCKET_ENV, Supervisor

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="refd",
        description="IMAP front door that answers with login and mailbox referrals.",
    )
    p.add_argument(
        "--version", action="version", version=f"refd {__version__} ({compiled.describe()})"
    )
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    s.add_argument("--log-format", choices=("text", "json"))
    # Internal: how the supervisor starts a worker (inherited listening
    # sockets: name=fd,...).
    s.add_argument("--worker", metavar="FDS", help=argparse.SUPPRESS)

    c = sub.add_parser(
        "check",
        help="validate daemon configs and routing tables, and what they name",
        description="Load each file exactly as the daemon would and say what was checked. "
        "A daemon config is checked with everything it names (routing table, user map, "
        "passwd-file, TLS files) and against this host (ports, addresses); warnings do "
        "not change the exit code.",
    )
    c.add_argument(
        "-c",
        "--config",
        dest="checks",
        action="append",
        type=lambda text: ("config", Path(text)),
        default=[],
        metavar="CONFIG",
        help="a daemon config",
    )
    c.add_argument(
        "-r",
        "--routing",
        dest="checks",
        action="append",
        type=lambda text: ("routing", Path(text)),
        metavar="FILE",
        help="a routing table",
    )
    c.add_argument(
        "files", type=Path, nargs="*", metavar="FILE", help="either kind, told by its keys"
    )

    g = sub.add_parser(
        "config",
        help="print the effective daemon configuration (defaults filled in, secrets redacted)",
    )
    g.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")

    sc = sub.add_parser(
        "schema", help="print the JSON Schema (draft 2020-12) of the daemon config or routing table"
    )
    sc.add_argument("kind", choices=sorted(KINDS))

    pr = sub.add_parser(
        "probe",
        help="log in at a door and follow its referrals like a client",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_arguments(pr)

    d = sub.add_parser(
        "dns",
        help="print the DNS records (SRV, autoconfig, autodiscover) of the routing table's domains",
        description="Zone-file records for each domain under domains: in the routing table: "
        "RFC 6186 / RFC 8314 SRV records naming the domain-level server, and the "
        "autoconfig. / autodiscover. names of the host that serves account-setup documents "
        "(the config's hostname, or --web-host). Exit code 2: the config or table is invalid.",
    )
    dsrc = d.add_mutually_exclusive_group()
    dsrc.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")
    dsrc.add_argument("-r", "--routing", type=Path, help="a routing table file (needs --web-host)")
    d.add_argument(
        "--web-host",
        metavar="HOST",
        help="the public name of the host serving autoconfig/autodiscover (default: hostname)",
    )

    a = sub.add_parser(
        "auth",
        help="check a password with the configured source and show the route (doveadm auth test)",
        description="Ask the configured authentication source about USER's password, as a "
        "login does, and print the verdict, the route and where it came from, and the "
        "directory requests made. Exit 0: OK and routed; 3: authentication failed; "
        "6: unavailable (the source could not decide, or no route); 2: usage; 1: config error.",
    )
    a.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")
    a.add_argument("user")
    password = a.add_mutually_exclusive_group(required=True)
    password.add_argument("--password-env", metavar="VAR", help="take the password from $VAR")
    password.add_argument(
        "--password-file",
        metavar="FILE",
        help="take the password from FILE's first line (-: stdin)",
    )
    a.add_argument("--client-ip", default="127.0.0.1", help="the client address the source is told")

    e = sub.add_parser(
        "explain",
        help="show which rules match and the referral sent",
        description="Trace a login as USER (and a SELECT of MAILBOX), or with --setup what "
        "the account-setup documents (autoconfig, Autodiscover, Apple profile) name for "
        "ADDRESS, or for a bare domain its domain-level answer.",
    )
    src = e.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", type=Path, help="daemon config (default: embedded demo)")
    src.add_argument("-r", "--routing", type=Path, help="a routing table file")
    e.add_argument("--setup", metavar="ADDRESS", help="explain the setup documents for ADDRESS")
    e.add_argument(
        "--domain-level",
        action="store_true",
        help="with --setup: answer as with per-user answers switched off",
    )
    e.add_argument("user", nargs="?")
    e.add_argument("mailbox", nargs="?")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.subcommand == "explain" and (args.setup is None) == (args.user is None):
        parser.error("explain takes USER [MAILBOX] or --setup ADDRESS")
    if args.subcommand == "explain" and args.domain_level and args.setup is None:
        parser.error("--domain-level goes with --setup")
    try:
        if args.subcommand == "serve":
            return _serve(args)
        if args.subcommand == "check":
            return _check(args)
        if args.subcommand == "config":
            print(effective_text(load_config(args.config or DEMO_CONFIG)), end="")
            return 0
        if args.subcommand == "schema":
            print(schema_text(args.kind), end="")
            return 0
        if args.subcommand == "probe":
            return probe.run(args)
        if args.subcommand == "dns":
            return _dns(args)
        if args.subcommand == "auth":
            return _auth(args)
        return _explain(args)
    except (TreeError, BindError) as exc:
        print(f"refd: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`refd dns | head`): no traceback. stdout is
        # pointed at /dev/null so the interpreter's own flush at exit is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
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
    conflicts = port_conflicts(config)
    if conflicts:
        print(f"refd: {conflicts[0]}", file=sys.stderr)
        return 1
    # Bound here, before trio or any worker starts: a port that cannot be
    # had is one BindError line (see main), not a traceback.
    if config.workers > 1:
        log_args = [f"--log-level={args.log_level or config.log_level}"]
        log_args.append(f"--log-format={args.log_format or config.log_format}")
        trio.run(Supervisor(config, log_args=log_args).run)
        return 0
    run(config, service, bind_all(config))
    return 0


def _worker(config: DaemonConfig, fds: str) -> int:
    """One worker under the supervisor: inherited listening sockets, no metrics endpoint."""
    inherited = {
        name: socket.socket(fileno=int(fd))
        for name, fd in (i.split("=", 1) for i in fds.split(","))
    }
    http_names = {lc.name for lc in config.http_listeners}
    bound = Bound(
        {n: s for n, s in inherited.items() if n not in http_names},
        http={n: s for n, s in inherited.items() if n in http_names},
    )
    ports = bound.ports()

    def pin(config: DaemonConfig) -> DaemonConfig:
        listeners = tuple(
            dataclasses.replace(lc, port=ports.get(lc.name, lc.port)) for lc in config.listeners
        )
        autodiscovery = config.autodiscovery
        if autodiscovery is not None:
            http = tuple(
                dataclasses.replace(lc, port=ports.get(lc.name, lc.port))
                for lc in autodiscovery.listeners
            )
            autodiscovery = dataclasses.replace(autodiscovery, listeners=http)
        return dataclasses.replace(
            config, listeners=listeners, metrics_address=None, autodiscovery=autodiscovery
        )

    config = pin(config)
    store_socket = os.environ.get(STORE_SOCKET_ENV)
    daemon = Daemon(
        config,
        load_service(config),
        adjust=pin,
        sockets=bound,
        store_socket=Path(store_socket) if store_socket else None,
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


def _check(args: argparse.Namespace) -> int:
    items: list[tuple[str | None, Path]] = [*args.checks, *((None, f) for f in args.files)]
    if not items:
        print(
            "refd check: name a file: refd check [-c CONFIG] [-r ROUTING] [FILE ...]",
            file=sys.stderr,
        )
        return 2
    status = 0
    for kind, path in items:
        try:
            summary, findings = _check_one(kind, path)
        except TreeError as exc:
            print(f"refd check: {exc}", file=sys.stderr)
            status = 1
            continue
        errors = [f for f in findings if not f.warning]
        for finding in findings:
            print(f"refd check: {finding}", file=sys.stderr)
        if errors:
            status = 1
            continue
        print(f"{path}: OK ({summary[0]})")
        for line in summary[1:]:
            print(f"  {line}")
    return status


#: Keys only a daemon config has, and keys only a routing table has.
_CONFIG_KEYS = frozenset({"routing", "auth", "listeners"})
_ROUTING_KEYS = frozenset({"version", "servers", "users", "mailboxes", "user_map"})
_PASSWD_LINE = re.compile(r"[^\s:#]+:\S")


def _guess(path: Path) -> str:
    """``config`` or ``routing``, told by the file's keys; never quotes the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise TreeError(str(path), 0, f"cannot read the file: {reason}") from None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()[:1] not in ("", "#")), "")
    name_it = "name its kind: refd check -c CONFIG, or refd check --routing FILE"
    if first.startswith("-----BEGIN "):
        raise TreeError(str(path), 0, "this is a PEM certificate or key, not a refd file")
    if _PASSWD_LINE.match(first):
        raise TreeError(
            str(path),
            0,
            "this looks like a passwd-file (user:password lines), not a refd file; "
            "a passwd-file is checked with the daemon config that names it: refd check -c CONFIG",
        )
    root = parse_yaml(text, str(path))
    if root is None:
        raise TreeError(
            str(path),
            0,
            f"the file is empty, neither a daemon config nor a routing table; {name_it}",
        )
    top = Reader(str(path)).as_root(root, "a daemon config or a routing table", empty="")
    keys = set(top.keys())
    config, routing = len(keys & _CONFIG_KEYS), len(keys & _ROUTING_KEYS)
    if config == routing:
        raise TreeError(
            str(path),
            top.line,
            "cannot tell a daemon config (routing, auth, listeners) from a routing table "
            f"(version, servers, users ...) by these keys; {name_it}",
        )
    return "config" if config > routing else "routing"


def _check_one(kind: str | None, path: Path) -> tuple[list[str], list[Finding]]:
    """Load ``path`` as the daemon would; a summary of what was checked, and findings."""
    kind = kind or _guess(path)
    if kind == "routing":
        table = load_routing(path)
        summary = [f"routing table sha256 {table.sha256[:12]}", _table_summary(table)]
        return summary, routing_warnings(table)
    config = load_config(path)
    service = load_service(config)
    table = service.table
    summary = [
        f"daemon config; routing table sha256 {table.sha256[:12]}",
        f"routing table {table.file}: {_table_summary(table)}",
        f"auth: {_auth_summary(config, service)}",
        "listeners: "
        + ", ".join(
            f"{lc.name} {authority(lc.address, lc.port)} tls {lc.tls}" for lc in config.listeners
        ),
    ]
    if config.autodiscovery is not None:
        ad = config.autodiscovery.policy
        summary.append(
            "autodiscovery: "
            + ", ".join(
                f"{lc.name} {authority(lc.address, lc.port)} tls {lc.tls}"
                for lc in config.autodiscovery.listeners
            )
            + f"; {len(table.domains)} domain{'' if len(table.domains) == 1 else 's'}"
            + f"; per_user {'yes' if ad.per_user else 'no'}"
            + f"; require_auth {', '.join(ad.require_auth) or 'none'}"
        )
    if config.metrics_address is not None:
        summary.append(f"metrics: {authority(*config.metrics_address)}")
    if config.tls_cert is not None:
        summary.append(f"tls: certificate {config.tls_cert}, key {config.tls_key}")
    return summary, check_config(config, service)


def _table_summary(table: RoutingTable) -> str:
    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    parts = [
        count(len(table.servers), "server", "servers"),
        count(len(table.user_rules), "user rule", "user rules"),
        count(len(table.user_map), "user_map entry", "user_map entries")
        + (f" ({table.user_map_file})" if table.user_map_file not in ("", table.file) else ""),
        count(len(table.mailbox_rules), "mailbox rule", "mailbox rules"),
        count(len(table.published), "published mailbox", "published mailboxes"),
    ]
    return ", ".join(parts)


def _auth_summary(config: DaemonConfig, service: Service) -> str:
    auth = service.auth
    if isinstance(auth, PasswdFileSource):
        n = len(auth.table)
        return f"passwd-file {auth.table.file}: {n} user{'' if n == 1 else 's'}"
    if isinstance(config.auth, TrustConfig):
        return "trust: " + ", ".join(str(n) for n in config.auth.networks)
    if isinstance(auth, AuthHttpSource):
        return f"auth_http {auth.url}"
    if isinstance(auth, LdapSource):
        s = auth.settings
        route = f", home from {s.route_attribute}" if s.route_attribute else ""
        tls = " (StartTLS)" if any(srv.starttls for srv in s.servers) else ""
        servers = ", ".join(str(srv) for srv in s.servers)
        return f"ldap {servers}{tls}: {s.mode} mode, base {s.base}{route}"
    return config.auth_source


def _dns(args: argparse.Namespace) -> int:
    try:
        if args.routing is not None:
            table = load_routing(args.routing)
            web_host = args.web_host
            source = str(args.routing)
        else:
            config = load_config(args.config or DEMO_CONFIG)
            table = load_routing(config.routing_file, self_addresses=config.self_addresses())
            web_host = args.web_host or config.policy.hostname
            source = str(config.file)
    except TreeError as exc:
        print(f"refd dns: {exc}", file=sys.stderr)
        return 2
    if web_host is None:
        print(
            "refd dns: with --routing, name the autodiscovery host: --web-host HOST",
            file=sys.stderr,
        )
        return 2
    try:
        host = ipaddress.ip_address(web_host.removeprefix("[").removesuffix("]")).compressed
        port = None
    except ValueError:
        try:
            host, port = split_host_port(web_host)
        except ValueError as exc:
            print(f'refd dns: --web-host "{web_host}": {exc}', file=sys.stderr)
            return 2
    if port is not None or not host:
        print(f'refd dns: --web-host "{web_host}": a host name, without a port', file=sys.stderr)
        return 2
    if not table.domains:
        print(
            f"refd dns: {table.file} has no domains: section; add one (see config/routing.yaml)",
            file=sys.stderr,
        )
        return 1
    via = "" if source == table.file else f" (routing of {source})"
    print(f"; refd dns: records for the mail domains of {table.file}{via}")
    for line in zone_lines(table, host.lower()):
        print(line)
    return 0


def _auth(args: argparse.Namespace) -> int:
    try:
        password = authtest.read_password(args.password_env, args.password_file)
    except authtest.UsageError as exc:
        print(f"refd auth: {exc}", file=sys.stderr)
        return authtest.EXIT_USAGE
    service = load_service(load_config(args.config or DEMO_CONFIG))
    code, line = authtest.run(service, args.user, password, args.client_ip)
    print(line)
    return code


def _explain(args: argparse.Namespace) -> int:
    if args.setup is not None:
        table = (
            load_routing(args.routing)
            if args.routing is not None
            else load_service(load_config(args.config or DEMO_CONFIG)).table
        )
        found = explain_setup(table, args.setup, per_user=not args.domain_level)
    elif args.routing is not None:
        found = explain(load_routing(args.routing), args.user, args.mailbox)
    else:
        service = load_service(load_config(args.config or DEMO_CONFIG))
        # A directory source answers "which entry, which home" without a
        # password, with the same search and route cache the door uses.
        lookup = getattr(service.auth, "lookup", None)
        directory = trio.run(lookup, args.user) if lookup is not None else None
        close = getattr(service.auth, "close", None)
        if close is not None:
            close()
        found = explain(service.table, args.user, args.mailbox, service.auth, directory)
    for line in found.lines:
        print(line)
    return 0 if found.referred else 2


if __name__ == "__main__":
    raise SystemExit(main())
