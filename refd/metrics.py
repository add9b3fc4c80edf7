"""Prometheus metrics of the door, on an injected registry.

One :class:`Metrics` object holds every collector; the server, sessions,
throttle and daemon record through its typed methods, one per event
(:meth:`Metrics.referral`, :meth:`Metrics.limit_hit`, ...), so metric names
and label sets live here and nowhere else, and no other module touches a
prometheus-client object (the HTTP endpoint only renders a registry).
Label values are bounded: command names come from the fixed command table
(anything else is ``UNKNOWN``), servers are the routing table's server
names, never a user or a mailbox.

With several worker processes, prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR`` set before the first import); every gauge then
says how workers' values combine (``multiprocess_mode``).  The supervisor's
registry (:func:`supervisor_registry`) adds its own ``process_*`` metrics and
every live worker's, labelled ``worker``.

Counters, the active-connections gauge and histograms are tallied per
series (a `_Series` each, found by one dict lookup) and published to their
collectors in bulk (:meth:`Metrics.publish`): first thing in every
collection of the registry (a scrape), and, with workers, by each worker's
publisher task at most every 50 ms after something was counted
(`refd.daemon.PUBLISH_INTERVAL_S`).  A PLAIN login session made ten
updates, each 0.9 us (a histogram observation 1.6 us) in one process and
2.4 us (4.5 us) in multiprocess mode, where each writes its value file
under a lock (timeit, hot); a dict update is 0.25 us.  With the tally,
refd's CPU per PLAIN session with two workers fell from 513 to 451 us
(bench/ab.py, medians of 8 interleaved rounds); with none of those
updates at all it was 429 against 500 us.  A worker killed by SIGKILL loses
what it counted in its last 50 ms.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from refd import __version__
from refd.protocol.commands import PARSERS

__all__ = [
    "AUTODISCOVERY_PROTOCOLS",
    "AUTODISCOVERY_RESULTS",
    "KNOWN_COMMANDS",
    "Metrics",
    "command_label",
    "supervisor_registry",
    "worker_gone",
]

#: Every label value the ``command`` label can take.
KNOWN_COMMANDS = frozenset(PARSERS) | {"UNKNOWN"}

#: the ``protocol`` label of the autodiscovery metrics ("other": no route matched)
AUTODISCOVERY_PROTOCOLS = frozenset({"autoconfig", "autodiscover", "mobileconfig", "other"})
#: the ``result`` label: what the answer was, one word per kind of status
AUTODISCOVERY_RESULTS = frozenset(
    {
        "ok",  # 200
        "bad_request",  # 400, or another framing error
        "bad_host",  # 400 / 421: no Host, or one not served here
        "not_found",  # 404: unknown path or mail domain
        "method_not_allowed",  # 405
        "auth_required",  # 401: no credentials
        "auth_failed",  # 401: a failed password check
        "forbidden",  # 403: plain HTTP from outside trusted_networks, another user's address
        "unavailable",  # 503: the password could not be checked
        "too_large",  # 413 / 431
        "timeout",  # 408
        "error",  # 500: a bug, logged
    }
)
_SETUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_AUTH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def command_label(name: str | None) -> str:
    """A command name as a label value: known names, or ``UNKNOWN``."""
    return name if name in KNOWN_COMMANDS and name is not None else "UNKNOWN"


class _Series:
    """One series' tally since the last publish, and the collector's child it goes to.

    Made on the series' first event and kept (label sets are bounded), so
    an event is one dict lookup and an add in place.  The tally as a dict
    of amounts, made anew after every publish, took a get and a set on a
    new ``(metric, labels)`` key per event: ~1,600 instructions, seven
    times a PLAIN session.  The child is made at the first publish, so a
    series is in no collector (nor, with workers, in the shared files)
    before then.
    """

    __slots__ = ("amount", "bounds", "buckets", "child", "labels", "metric")

    def __init__(self, metric: Any, labels: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.metric = metric
        self.labels = labels
        self.child: Any = None
        #: a counter's or gauge's amount; a histogram's sum
        self.amount = 0.0
        #: a histogram's bucket bounds (none for a counter or gauge) and its
        #: count per bucket (each its own range, not cumulative)
        self.bounds = bounds
        self.buckets = [0] * len(bounds)


class _PublishFirst(Collector):
    """Registered before every other collector of a `Metrics`: each
    collection of the registry publishes the tally first, so a scrape (or
    ``get_sample_value``) sees every event counted so far."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self.metrics.publish()
        return ()


class Metrics:
    """All collectors of one process, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        #: prometheus-client's multiprocess mode (workers): values live in files
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # The tally: (collector, *label values) -> its series (`_Series`).  A
        # flat key: one with the labels in a tuple of their own costs about
        # twice as much to look up (the inner tuples are compared too).
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._bounds: dict[Any, tuple[float, ...]] = {}
        self._dirty = False
        #: called when the tally changes after a publish (a worker's publisher wakes)
        self.on_change: Callable[[], None] | None = None
        r.register(_PublishFirst(self))
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
        self.command_duration = self._histogram(
            "refd_command_duration_seconds",
            "Time from a command's first byte to its tagged answer.",
            ["command"],
            _LATENCY_BUCKETS,
        )
        self.auth_checks = Counter(
            "refd_auth",
            "Authentication checks, by source and result (success, failure, unavailable).",
            ["source", "result"],
            registry=r,
        )
        self.auth_duration = self._histogram(
            "refd_auth_duration_seconds",
            "Time an authentication source took to decide (before any failure delay).",
            ["source"],
            _AUTH_BUCKETS,
        )
        self.directory_requests = Counter(
            "refd_directory_requests",
            "Requests of the auth source to its directory or service, by operation and result.",
            ["source", "operation", "result"],
            registry=r,
        )
        self.directory_duration = self._histogram(
            "refd_directory_request_duration_seconds",
            "Time one directory or auth-service request took.",
            ["source", "operation"],
            _AUTH_BUCKETS,
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
        self.throttle_store_duration = self._histogram(
            "refd_throttle_store_duration_seconds",
            "Round trip of one throttle store operation that answered, by store.",
            ["store"],
            _STORE_BUCKETS,
        )
        self.autodiscovery_requests = Counter(
            "refd_autodiscovery_requests",
            "Account-setup HTTP requests answered, by protocol (autoconfig, autodiscover, "
            "mobileconfig, other) and result (ok, bad_request, not_found, auth_failed, ...).",
            ["protocol", "result"],
            registry=r,
        )
        self.autodiscovery_duration = self._histogram(
            "refd_autodiscovery_request_duration_seconds",
            "Time from an account-setup request's first byte to its answer, by protocol "
            "(a failed password's delay included).",
            ["protocol"],
            _SETUP_BUCKETS,
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
            "The configuration in service: the sha256 over the daemon config, routing "
            "table, user map and passwd-file (value 1).",
            ["sha256"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.last_reload_ok = Gauge(
            "refd_config_last_reload_successful",
            "1 if the last load or reload of the configuration succeeded, else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.build_info = Gauge(
            "refd_build_info",
            "refd's version (value 1).",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__).set(1)
        # memory, CPU, open fds of this process (a worker's are collected by
        # its supervisor, see supervisor_registry)
        ProcessCollector(registry=r)
        self._sha256: str | None = None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        for result in ("success", "failure"):
            self.reloads.labels(result)

    def _histogram(
        self, name: str, documentation: str, labels: list[str], buckets: tuple[float, ...]
    ) -> Histogram:
        """A histogram on this registry, its bucket bounds kept for the tally."""
        histogram = Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)
        self._bounds[histogram] = (*buckets, float("inf"))
        return histogram

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (label sets are bounded)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # -- the tally ---------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty = True
        if self.on_change is not None:
            self.on_change()

    def _series_of(self, key: tuple[Any, ...]) -> _Series:
        """The tally of series ``key`` (the collector, then its label values), made on its
        first event."""
        series = self._series.get(key)
        if series is None:
            metric = key[0]
            series = _Series(metric, key[1:], self._bounds.get(metric, ()))
            self._series[key] = series
        return series

    def _add(self, key: tuple[Any, ...], amount: float = 1.0) -> None:
        """Count ``amount`` on a counter's (or gauge's) series ``key``, to publish later."""
        if not self._dirty:
            self._changed()
        self._series_of(key).amount += amount

    def _observe(self, key: tuple[Any, ...], value: float) -> None:
        """One observation of a histogram's series ``key``, to publish later."""
        if not self._dirty:
            self._changed()
        series = self._series_of(key)
        # the first bucket whose bound is >= value, as Histogram.observe picks
        series.buckets[bisect.bisect_left(series.bounds, value)] += 1
        series.amount += value

    def publish(self) -> None:
        """Move the tally into the collectors (and, with workers, their files)."""
        self._dirty = False
        for series in self._series.values():
            child = series.child
            if child is None:
                child = series.child = series.metric.labels(*series.labels)
            buckets = series.buckets
            if not buckets:
                if series.amount:  # a session's +1 and -1 on the active gauge
                    child.inc(series.amount)
                    series.amount = 0.0
                continue
            # prometheus-client has no public bulk observe: add to the
            # buckets and the sum as Histogram.observe does, one value each.
            # tests/test_metrics_tally.py checks the result equals observe's.
            for i, n in enumerate(buckets):
                if n:
                    child._buckets[i].inc(n)
                    buckets[i] = 0
            if series.amount:
                child._sum.inc(series.amount)
                series.amount = 0.0

    # -- one method per event ------------------------------------------------------

    def connection_opened(self, listener: str) -> None:
        """A listener accepted a connection."""
        self._add((self.connections, listener))

    def session_started(self, listener: str) -> None:
        """A session began (it counts as active until :meth:`session_ended`)."""
        self._add((self.connections_active, listener))

    def session_ended(self, listener: str) -> None:
        self._add((self.connections_active, listener), -1.0)

    def command_answered(self, command: str | None, result: str, seconds: float | None) -> None:
        """A tagged (or ``* BAD``) answer to ``command``; ``seconds`` since its first byte."""
        label = command_label(command)
        self._add((self.commands, label, result))
        if seconds is not None:
            self._observe((self.command_duration, label), seconds)

    def referral(self, kind: str, command: str, server: str) -> None:
        """A referral of ``kind`` (login, mailbox, greeting) to the table's ``server``."""
        self._add((self.referrals, kind, command, server))

    def auth(self, source: str, result: str, seconds: float) -> None:
        """Auth source ``source`` decided ``result`` in ``seconds`` (no failure delay)."""
        self._observe((self.auth_duration, source), seconds)
        self._add((self.auth_checks, source, result))

    def directory_request(self, source: str, operation: str, result: str, seconds: float) -> None:
        """Source ``source`` made one ``operation`` request that ended in ``result``."""
        self._observe((self.directory_duration, source, operation), seconds)
        self._add((self.directory_requests, source, operation, result))

    def auth_throttled_answer(self, result: str, rule: str) -> None:
        """A login answer delayed past the base delay by counter ``rule``."""
        self._add((self.auth_throttled, result, rule))

    def autodiscovery_request(self, protocol: str, result: str, seconds: float) -> None:
        """An account-setup request answered with ``result`` after ``seconds``."""
        if protocol not in AUTODISCOVERY_PROTOCOLS:
            protocol = "other"
        if result not in AUTODISCOVERY_RESULTS:
            result = "error"
        self._add((self.autodiscovery_requests, protocol, result))
        self._observe((self.autodiscovery_duration, protocol), seconds)

    def limit_hit(self, name: str) -> None:
        self._add((self.limit_hits, name))

    def tls_failure(self, listener: str) -> None:
        self._add((self.tls_failures, listener))

    def store_up(self, store: str, up: bool) -> None:
        """The shared throttle store answers again (or is marked down)."""
        self._child(self.throttle_store_up, store).set(1 if up else 0)

    def store_error(self, store: str) -> None:
        self._add((self.throttle_store_errors, store))

    def store_round_trip(self, store: str, seconds: float) -> None:
        self._observe((self.throttle_store_duration, store), seconds)

    def reload_failed(self) -> None:
        """A reload was refused; what is in service stays."""
        self._add((self.reloads, "failure"))
        self.last_reload_ok.set(0)

    def config_loaded(self, sha256: str, when: float, *, reload: bool = False) -> None:
        """A configuration went into service (at start, or by a reload)."""
        if reload:
            self._add((self.reloads, "success"))
        if self._sha256 is not None and self._sha256 != sha256:
            # Zero first: in multiprocess mode the value file keeps the
            # series after remove(), and 0 says "no longer in service".
            self.config_info.labels(self._sha256).set(0)
            self.config_info.remove(self._sha256)
        self._sha256 = sha256
        self.config_info.labels(sha256).set(1)
        self.last_reload.set(when)
        self.last_reload_ok.set(1)


class _WorkerProcesses(Collector):
    """``process_*`` of every live worker, each series labelled ``worker``."""

    def __init__(self, workers: Callable[[], Mapping[int, int]]) -> None:
        self.workers = workers
        self._collectors: dict[int, ProcessCollector] = {}

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        live = dict(self.workers())
        for pid in set(self._collectors) - set(live.values()):
            del self._collectors[pid]
        for slot, pid in sorted(live.items()):
            collector = self._collectors.get(pid)
            if collector is None:
                collector = self._collectors[pid] = ProcessCollector(
                    pid=functools.partial(str, pid), registry=None
                )
            for family in collector.collect():
                out = families.get(family.name)
                if out is None:
                    out = families[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(slot)}
                    out.add_sample(sample.name, labels, sample.value)
        return list(families.values())


def supervisor_registry(
    multiproc_dir: Path, workers: Callable[[], Mapping[int, int]]
) -> CollectorRegistry:
    """The supervisor's registry: every worker's refd_* summed, and process_*.

    ``workers()`` gives the live workers as slot -> pid.  The supervisor's
    own ``process_*`` series carry no label; each worker's carry
    ``worker="<slot>"``, so ``sum(process_resident_memory_bytes)`` is the
    whole door.
    """
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    registry.register(_WorkerProcesses(workers))
    return registry


def worker_gone(pid: int, multiproc_dir: Path) -> None:
    """A worker exited: its live gauges no longer count."""
    _multiprocess.mark_process_dead(pid, str(multiproc_dir))  # type: ignore[no-untyped-call]
