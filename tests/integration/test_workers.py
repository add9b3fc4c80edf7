"""``workers: N``: real processes sharing the listening sockets, a supervisor, one endpoint.

Kill -9 a worker: connections are still served, the supervisor restarts it,
and the metrics endpoint still adds up every worker, the dead one included.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from refd.config.loader import DEMO_CONFIG
from tests.procs import Daemon, session
from tests.robustness.helpers import http_get

REFERRAL = b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]"


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    text = data.partition(b"\r\n\r\n")[2].decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid")))
            out[key] = out.get(key, 0.0) + s.value
    return out


def logins(port: int, n: int) -> list[bytes]:
    return [session(port, b"a1 LOGIN alice secret")[1][: len(REFERRAL)] for _ in range(n)]


def test_two_workers_kill_one(tmp_path: Path) -> None:
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    text = DEMO_CONFIG.read_text().replace("port: 1143", "port: 0").replace("port: 9143", "port: 0")
    text = text.replace("port: 1180", "port: 0")
    (tmp_path / "refd.yaml").write_text(text + "workers: 2\nshutdown_grace_s: 2\n")
    daemon = Daemon(["serve", "-c", str(tmp_path / "refd.yaml")])
    try:
        ready = daemon.wait_log("supervisor ready workers=2", timeout=60)
        port = int(re.search(r"'imap': (\d+)", ready).group(1))  # type: ignore[union-attr]
        mport = int(re.search(r"metrics listening .* port=(\d+)", "".join(daemon.log)).group(1))  # type: ignore[union-attr]
        pids = {
            int(slot): int(pid)
            for slot, pid in re.findall(r"worker (\d) started pid=(\d+)", "".join(daemon.log))
        }
        assert sorted(pids) == [0, 1]
        # The workers share the supervisor's hashing pool: a thread per core.
        # alice's password is SHA512-CRYPT, so every login below goes there.
        threads = str(len(os.sched_getaffinity(0)))
        log_text = "".join(daemon.log)
        assert re.search(f"supervisor starting [^\\n]* hash_threads={threads} ", log_text)
        starts = re.findall(
            r"refd \S+ starting config=[^\n]* hash_threads=(\d+) pid=(\d+)", "".join(daemon.log)
        )
        assert sorted(starts) == sorted((threads, str(pid)) for pid in pids.values())

        assert logins(port, 20) == [REFERRAL] * 20
        # The autodiscovery listener is shared the same way (the demo's, on port 0 here).
        http_port = int(re.search(r"'http': (\d+)", ready).group(1))  # type: ignore[union-attr]
        for _ in range(4):
            status, body = http_get(http_port, "/mail/config-v1.1.xml?emailaddress=bob@example.org")
            assert status == 200 and b"<hostname>mail2.example.org</hostname>" in body
        key = (
            "refd_referrals_total",
            (("command", "LOGIN"), ("kind", "login"), ("server", "mail1")),
        )
        # A worker writes what it counted to the shared files within 50 ms
        # (refd.daemon.PUBLISH_INTERVAL_S); what it wrote outlives it.
        deadline = time.monotonic() + 10
        while metrics(mport).get(key) != 20:
            assert time.monotonic() < deadline, metrics(mport).get(key)
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)
        # The workers share the supervisor's listening sockets (one accept
        # queue): the live worker serves every new client.
        daemon.wait_log(f"pid={pids[0]} died with -9")
        assert logins(port, 10) == [REFERRAL] * 10
        daemon.wait_log("worker 0 ready pid=", timeout=30)  # restarted
        assert logins(port, 10) == [REFERRAL] * 10

        deadline = time.monotonic() + 10
        while True:
            m = metrics(mport)
            if (
                m.get(key) == 40
                and m.get(("refd_connections_active", (("listener", "imap"),))) == 0
            ):
                break
            assert time.monotonic() < deadline, m.get(key)
            time.sleep(0.1)
        assert m[("refd_connections_total", (("listener", "imap"),))] == 40
        assert m[("refd_build_info", (("version", "0.1.0"),))] == 1
        assert m[("refd_config_last_reload_successful", ())] == 1
        # process_*: the supervisor's own series unlabelled, each live
        # worker's labelled by its slot (the restarted worker 0 included).
        for worker in ((), (("worker", "0"),), (("worker", "1"),)):
            assert m[("process_resident_memory_bytes", worker)] > 10e6
            assert m[("process_open_fds", worker)] >= 3
            assert ("process_cpu_seconds_total", worker) in m
        workers = {k[1] for k in m if k[0] == "process_resident_memory_bytes"}
        assert workers == {(), (("worker", "0"),), (("worker", "1"),)}

        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload ok")
        daemon.wait_log("reload ok")
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert daemon.proc.wait(timeout=30) == 0
        # Idle workers stop at once (well within shutdown_grace_s), on their own.
        assert time.monotonic() - stopping < 2
        daemon.wait_log("exited with 0")
        daemon.wait_log("exited with 0")
    finally:
        daemon.stop()
