"""Metrics are tallied and published in bulk (refd.metrics): the published
values are exactly what one update per event gives, a scrape never misses
an event, and with workers the values reach the shared files on publish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from refd.metrics import Metrics

#: durations on, around and beyond the latency buckets' bounds
DURATIONS = (0.0, -0.5, 0.0005, 0.00050001, 0.001, 0.003, 0.25, 0.2500001, 30.0, 31.0, 1e9)


def samples(registry: CollectorRegistry, family: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for f in registry.collect()
        if f.name == family
        for s in f.samples
        if not s.name.endswith("_created")
    ]


def test_published_histograms_equal_one_observe_per_value() -> None:
    m = Metrics()
    reference = CollectorRegistry()
    # the same family as refd's, observed once per value
    direct = Histogram(
        "refd_command_duration_seconds",
        "Time from a command's first byte to its tagged answer.",
        ["command"],
        buckets=m.command_duration._upper_bounds[:-1],
        registry=reference,
    )
    for seconds in DURATIONS:
        m.command_answered("LOGIN", "ok", seconds)
        direct.labels("LOGIN").observe(seconds)
    got = samples(m.registry, "refd_command_duration_seconds")
    assert got == samples(reference, "refd_command_duration_seconds")
    count = [v for name, _, v in got if name == "refd_command_duration_seconds_count"]
    assert count == [len(DURATIONS)]
    # Published once: a second scrape adds nothing.
    assert samples(m.registry, "refd_command_duration_seconds") == got


def test_a_scrape_sees_every_event_counted_so_far() -> None:
    m = Metrics()
    value = m.registry.get_sample_value
    m.connection_opened("imap")
    m.session_started("imap")
    m.referral("login", "LOGIN", "mail1")
    m.referral("login", "LOGIN", "mail1")
    m.command_answered("LOGIN", "ok", 0.002)
    m.auth("passwd_file", "success", 0.0001)
    assert value("refd_connections_total", {"listener": "imap"}) == 1
    assert value("refd_connections_active", {"listener": "imap"}) == 1
    labels = {"kind": "login", "command": "LOGIN", "server": "mail1"}
    assert value("refd_referrals_total", labels) == 2
    assert value("refd_commands_total", {"command": "LOGIN", "result": "ok"}) == 1
    assert value("refd_auth_total", {"source": "passwd_file", "result": "success"}) == 1
    assert value("refd_auth_duration_seconds_bucket", {"source": "passwd_file", "le": "0.001"}) == 1
    m.session_ended("imap")
    m.referral("login", "LOGIN", "mail1")
    assert value("refd_connections_active", {"listener": "imap"}) == 0
    assert value("refd_referrals_total", labels) == 3
    # A session that began and ended between two scrapes still leaves its series.
    m.session_started("pop")
    m.session_ended("pop")
    assert b'refd_connections_active{listener="pop"} 0.0' in generate_latest(m.registry)


def test_the_publisher_is_told_once_per_change_after_a_publish() -> None:
    m = Metrics()
    told: list[int] = []
    m.on_change = lambda: told.append(1)
    m.referral("login", "LOGIN", "mail1")
    m.command_answered("LOGOUT", "ok", 0.001)
    m.limit_hit("bad_commands")
    assert told == [1]
    m.publish()
    m.publish()
    assert told == [1]
    m.tls_failure("imaps")
    assert told == [1, 1]


_WORKER = """
import json, sys
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from refd.metrics import Metrics

m = Metrics()
def shared():
    r = CollectorRegistry()
    MultiProcessCollector(r, path=sys.argv[1])
    v = r.get_sample_value
    return [
        v("refd_referrals_total", {"kind": "login", "command": "LOGIN", "server": "mail1"}),
        v("refd_command_duration_seconds_count", {"command": "LOGIN"}),
        v("refd_connections_active", {"listener": "imap"}),
    ]
m.session_started("imap")
m.referral("login", "LOGIN", "mail1")
m.command_answered("LOGIN", "ok", 0.002)
before = shared()
m.publish()
print(json.dumps([m.multiprocess, before, shared()]))
"""


def test_with_workers_a_publish_writes_the_shared_files(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(tmp_path)],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    multiprocess, before, after = json.loads(out.stdout)
    assert multiprocess is True
    # Counted, not yet published: the worker's publisher task (refd.daemon) does that.
    assert before == [None, None, None]
    assert after == [1.0, 1.0, 1.0]
