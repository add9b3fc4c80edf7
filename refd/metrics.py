"""Prometheus metrics of the door, on an injected registry.

One :class:`Metrics` object holds every collector; the server and sessions
record through its small methods, so metric names and label sets live here
and nowhere else.  Label values are bounded: command names come from the
fixed command table (anything else is ``UNKNOWN``), servers are the routing
table's server names, never a user or a mailbox.

With several worker processes, prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR`` set before the first import); every gauge then
says how workers' values combine (``multiprocess_mode``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from refd import __version__
from refd.protocol.commands import PARSERS

__all__ = ["KNOWN_COMMANDS", "Metrics", "command_label"]

#: Every label value the ``command`` label can take.
KNOWN_COMMANDS = frozenset(PARSERS) | {"UNKNOWN"}

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_AUTH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def command_label(name: str | None) -> str:
    """A command name as a label value: known names, or ``UNKNOWN``."""
    return name if name in KNOWN_COMMANDS and name is not None else "UNKNOWN"


class Metrics:
    """All collectors of one process, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.referrals = Counter(
            "refd_referrals",
            "Referrals sent, by kind (login, mailbox, greeting), command and server name.",
            ["kind", "command", "server"],
            registry=r,
        )
        self.connections = Counter(
            "refd_connections", "Connections accepted, by listener.", ["listener"], registry=r
        )
        self.connections_active = Gauge(
            "refd_connections_active",
            "Connections open now, by listener.",
            ["listener"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.commands = Counter(
            "refd_commands",
            "Commands answered, by command and result (ok, no, bad).",
            ["command", "result"],
            registry=r,
        )
        self.command_duration = Histogram(
            "refd_command_duration_seconds",
            "Time from a command's first byte to its tagged answer.",
            ["command"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.auth = Counter(
            "refd_auth",
            "Authentication checks, by source and result (success, failure, unavailable).",
            ["source", "result"],
            registry=r,
        )
        self.auth_duration = Histogram(
            "refd_auth_duration_seconds",
            "Time an authentication source took to decide (before any failure delay).",
            ["source"],
            buckets=_AUTH_BUCKETS,
            registry=r,
        )
        self.limit_hits = Counter(
            "refd_limit_hits", "Abuse limits hit, by limit name.", ["limit"], registry=r
        )
        self.auth_throttled = Counter(
            "refd_auth_throttled",
            "Login answers delayed past the base failure delay, by result (failure, success) "
            "and the counter that set the delay (address, network, user).",
            ["result", "rule"],
            registry=r,
        )
        self.throttle_store_errors = Counter(
            "refd_throttle_store_errors",
            "Throttle store operations that failed or timed out, by store (supervisor, redis); "
            "the door used its own counters instead.",
            ["store"],
            registry=r,
        )
        self.throttle_store_up = Gauge(
            "refd_throttle_store_up",
            "1 while the shared throttle store answers, 0 while the door counts alone.",
            ["store"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.throttle_store_duration = Histogram(
            "refd_throttle_store_duration_seconds",
            "Round trip of one throttle store operation that answered, by store.",
            ["store"],
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        self.tls_failures = Counter(
            "refd_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener.",
            ["listener"],
            registry=r,
        )
        self.reloads = Counter(
            "refd_config_reloads",
            "Configuration reloads, by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.last_reload = Gauge(
            "refd_config_last_reload_success_timestamp_seconds",
            "When the configuration in service was loaded (Unix time).",
            registry=r,
            multiprocess_mode="max",
        )
        self.config_info = Gauge(
            "refd_config_info",
            "The routing table in service: its sha256 (value 1).",
            ["sha256"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.build_info = Gauge(
            "refd_build_info",
            "refd's version (value 1).",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__).set(1)
        self._sha256: str | None = None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        for result in ("success", "failure"):
            self.reloads.labels(result)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (label sets are bounded)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def config_loaded(self, sha256: str, when: float) -> None:
        """A table went into service (at start or by a reload)."""
        if self._sha256 is not None and self._sha256 != sha256:
            # Zero first: in multiprocess mode the value file keeps the
            # series after remove(), and 0 says "no longer in service".
            self.config_info.labels(self._sha256).set(0)
            self.config_info.remove(self._sha256)
        self._sha256 = sha256
        self.config_info.labels(sha256).set(1)
        self.last_reload.set(when)
