"""Operations, end to end in one process: metrics, reload, drain, shutdown.

The daemon runs in-process (``Daemon.run`` without signal handling) on
127.0.0.1 port 0, with its config in a temporary directory so reloads read
real files.  Clients are real sockets; metrics are scraped over HTTP from
the real endpoint and parsed with ``prometheus_client.parser``.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from prometheus_client.parser import text_string_to_metric_families

from refd.config.loader import DEMO_CONFIG, load_config, load_service
from refd.daemon import Daemon
from tests.procs import in_thread

ALICE = b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]"


def write_config(tmp: Path, extra: str = "", **replace: str) -> Path:
    for name in ("routing.yaml", "users.passwd"):
        if not (tmp / name).exists():
            shutil.copy(DEMO_CONFIG.parent / name, tmp / name)
    text = DEMO_CONFIG.read_text()
    text = text.replace("port: 1143", "port: 0").replace("port: 9143", "port: 0")
    text = text.replace("port: 1180", "port: 0")
    text = text.replace("failure_delay_s: 2", "failure_delay_s: 0.01")
    for old, new in replace.items():
        text = text.replace(old, new)
    (tmp / "refd.yaml").write_text(text + extra)
    return tmp / "refd.yaml"


@dataclasses.dataclass
class Running:
    daemon: Daemon
    port: int
    metrics_port: int


async def start(nursery: trio.Nursery, config_file: Path) -> Running:
    config = load_config(config_file)
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    return Running(daemon, bound[0][0].port, bound[1])


def imap(port: int, *commands: bytes) -> list[bytes]:
    """One session: greeting, then each command's lines up to its tagged answer."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as f,
    ):
        out = [f.readline()]
        for cmd in commands:
            sock.sendall(cmd + b"\r\n")
            tag = cmd.split(b" ")[0] + b" "
            while True:
                line = f.readline()
                out.append(line)
                if not line or line.startswith(tag):
                    break
        return out


def http_get(port: int, path: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await in_thread(http_get, port, "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def in_service(samples: dict[Any, float]) -> str:
    """The sha256 of ``refd_config_info`` that is 1 (there must be one)."""
    (sha,) = [dict(k[1])["sha256"] for k, v in samples.items() if k[0] == "refd_config_info" and v]
    return sha


async def test_every_metric_after_real_sessions(nursery: trio.Nursery, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "limits:\n  bad_commands: 3\n")
    run = await start(nursery, cfg)
    await in_thread(imap, run.port, b"a1 LOGIN alice secret", b"a2 LOGIN alice wrong")
    await in_thread(
        imap,
        run.port,
        b"b1 LOGIN bob secret",
        b"b2 SELECT Shared/Sales",
        b"b3 STATUS INBOX (MESSAGES)",
        b'b4 RLIST "" *',
    )
    # Five different unknown commands: one label value, not five.
    await in_thread(imap, run.port, b"c1 FROB1", b"c2 FROB2", b"c3 FROB3")
    await in_thread(imap, run.port, b"d1 XYZZY", b"d2 PLUGH")
    await trio.sleep(0.2)  # let the sessions' close paths run
    m = await scrape(run.metrics_port)
    sha = in_service(m)

    assert value(m, "refd_referrals_total", kind="login", command="LOGIN", server="mail1") == 1
    assert value(m, "refd_referrals_total", kind="login", command="LOGIN", server="mail2") == 1
    assert value(m, "refd_referrals_total", kind="mailbox", command="SELECT", server="shared1") == 1
    assert value(m, "refd_referrals_total", kind="mailbox", command="STATUS", server="mail2") == 1
    assert value(m, "refd_connections_total", listener="imap") == 4
    assert value(m, "refd_connections_active", listener="imap") == 0
    assert value(m, "refd_commands_total", command="LOGIN", result="no") == 2
    assert value(m, "refd_commands_total", command="LOGIN", result="ok") == 1
    assert value(m, "refd_commands_total", command="SELECT", result="no") == 1
    assert value(m, "refd_commands_total", command="RLIST", result="ok") == 1
    assert value(m, "refd_commands_total", command="UNKNOWN", result="bad") == 5
    assert not [k for k in m if ("command", "FROB1") in k[1]]
    assert value(m, "refd_command_duration_seconds_count", command="LOGIN") == 3
    assert value(m, "refd_auth_total", source="passwd-file", result="success") == 2
    assert value(m, "refd_auth_total", source="passwd-file", result="failure") == 1
    assert value(m, "refd_auth_duration_seconds_count", source="passwd-file") == 3
    assert value(m, "refd_limit_hits_total", limit="bad_commands") == 1
    assert value(m, "refd_config_info", sha256=sha) == 1
    assert value(m, "refd_build_info", version="0.1.0") == 1
    assert value(m, "refd_config_reloads_total", result="failure") == 0
    assert value(m, "refd_config_last_reload_success_timestamp_seconds") > 1.7e9
    assert value(m, "refd_config_last_reload_successful") == 1
    # This process's memory, CPU and open files (prometheus-client reads /proc).
    assert value(m, "process_resident_memory_bytes") > 10e6
    assert value(m, "process_cpu_seconds_total") > 0
    assert value(m, "process_open_fds") >= 3
    assert await in_thread(http_get, run.metrics_port, "/healthz") == (200, "ok\n")
    assert await in_thread(http_get, run.metrics_port, "/readyz") == (200, "ready\n")
    assert (await in_thread(http_get, run.metrics_port, "/nope"))[0] == 404
    run.daemon.door.stop()


async def test_reload_swaps_tables_and_counts(nursery: trio.Nursery, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    run = await start(nursery, cfg)
    old_sha = in_service(await scrape(run.metrics_port))
    routing = tmp_path / "routing.yaml"
    good = routing.read_text()
    routing.write_text(good + "bogus_key: 1\n")  # invalid: keep the old table
    assert not await run.daemon.reload()
    m = await scrape(run.metrics_port)
    assert value(m, "refd_config_last_reload_successful") == 0
    assert value(m, "refd_config_info", sha256=old_sha) == 1
    assert (await in_thread(imap, run.port, b"a1 LOGIN alice secret"))[1].startswith(ALICE)
    routing.write_text(good.replace("mail1.example.org", "mail9.example.org"))
    assert await run.daemon.reload()
    got = await in_thread(imap, run.port, b"a1 LOGIN alice secret")
    assert got[1].startswith(b"a1 NO [REFERRAL imap://alice;AUTH=*@mail9.example.org/]")
    m = await scrape(run.metrics_port)
    new_sha = in_service(m)
    assert new_sha != old_sha
    assert value(m, "refd_config_reloads_total", result="failure") == 1
    assert value(m, "refd_config_reloads_total", result="success") == 1
    assert value(m, "refd_config_last_reload_successful") == 1
    assert value(m, "refd_config_info", sha256=new_sha) == 1
    assert value(m, "refd_config_info", sha256=old_sha) == 0
    run.daemon.door.stop()


async def test_config_hash_covers_the_passwd_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The routing table is unchanged; only a password changed.
    cfg = write_config(tmp_path)
    run = await start(nursery, cfg)
    table_sha, old_sha = (
        run.daemon.ref.current.table.sha256,
        in_service(await scrape(run.metrics_port)),
    )
    passwd = tmp_path / "users.passwd"
    passwd.write_text(passwd.read_text().replace("bob:", "bobby:"))
    assert await run.daemon.reload()
    m = await scrape(run.metrics_port)
    assert run.daemon.ref.current.table.sha256 == table_sha
    assert in_service(m) != old_sha
    assert value(m, "refd_config_info", sha256=old_sha) == 0
    run.daemon.door.stop()


async def test_login_latency_with_and_without_the_failure_delay(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # refd_auth_duration_seconds is the source's decision alone;
    # refd_command_duration_seconds{command="LOGIN"} is what the client
    # waited, the deliberate failure delay included (README, Metrics).
    cfg = write_config(tmp_path, **{"failure_delay_s: 0.01": "failure_delay_s: 1.5"})
    run = await start(nursery, cfg)
    got = await in_thread(imap, run.port, b"a1 LOGIN alice wrong")
    assert got[1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    m = await scrape(run.metrics_port)
    assert value(m, "refd_auth_duration_seconds_count", source="passwd-file") == 1
    assert value(m, "refd_auth_duration_seconds_sum", source="passwd-file") < 1.5
    assert value(m, "refd_command_duration_seconds_count", command="LOGIN") == 1
    assert value(m, "refd_command_duration_seconds_sum", command="LOGIN") >= 1.5
    run.daemon.door.stop()


async def test_reload_under_load_loses_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    run = await start(nursery, cfg)
    routing = tmp_path / "routing.yaml"
    tables = [
        routing.read_text(),
        routing.read_text().replace("mail1.example.org", "mail9.example.org"),
        "version: 1\nservers: {}\nusers: [\n",  # broken: never served
        "",  # empty: never served
    ]
    allowed = {
        b"a NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/] "
        b"Your mail is on mail1.example.org; connect there.\r\n",
        b"a NO [REFERRAL imap://alice;AUTH=*@mail9.example.org/] "
        b"Your mail is on mail9.example.org; connect there.\r\n",
    }
    answers: list[bytes] = []

    def client() -> None:
        with (
            socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock,
            sock.makefile("rb") as f,
        ):
            f.readline()
            for _ in range(40):
                sock.sendall(b"a LOGIN alice secret\r\n")
                answers.append(f.readline())

    async with trio.open_nursery() as load:
        for _ in range(4):
            load.start_soon(in_thread, client)
        for i in range(24):
            routing.write_text(tables[i % len(tables)])
            await run.daemon.reload()
            await trio.sleep(0.01)
    assert len(answers) == 160
    assert set(answers) <= allowed
    run.daemon.door.stop()


async def test_drain_mode_refers_new_connections(nursery: trio.Nursery, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sibling: imap2.example.org\n")
    run = await start(nursery, cfg)
    assert await in_thread(http_get, run.metrics_port, "/readyz") == (200, "ready\n")
    write_config(tmp_path, "sibling: imap2.example.org\ndrain: true\n")
    assert await run.daemon.reload()  # drain is applied on reload
    got = await in_thread(imap, run.port)
    assert got == [
        b"* BYE [REFERRAL imap://;AUTH=*@imap2.example.org/] Server not accepting "
        b"connections. Try imap2.example.org.\r\n"
    ]
    assert await in_thread(http_get, run.metrics_port, "/readyz") == (503, "not ready\n")
    m = await scrape(run.metrics_port)
    assert (
        value(m, "refd_referrals_total", kind="greeting", command="GREETING", server="sibling") == 1
    )
    run.daemon.door.stop()


async def test_shutdown_says_bye_with_referral_and_stops(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "sibling: imap2.example.org:1143\nshutdown_grace_s: 5\n")
    run = await start(nursery, cfg)
    bob = socket.create_connection(("127.0.0.1", run.port), timeout=10)
    anon = socket.create_connection(("127.0.0.1", run.port), timeout=10)
    with bob, anon, bob.makefile("rb") as fb, anon.makefile("rb") as fa:
        await in_thread(fa.readline)
        await in_thread(fb.readline)
        bob.sendall(b"b1 LOGIN bob secret\r\n")
        await in_thread(fb.readline)
        assert (await in_thread(fb.readline)).startswith(b"b1 OK [REFERRAL")
        with trio.fail_after(10):
            run.daemon.door.stop()
            assert await in_thread(fb.readline) == (
                b"* BYE [REFERRAL imap://bob;AUTH=*@imap2.example.org:1143/] Server shutting "
                b"down. Try imap2.example.org.\r\n"
            )
            assert await in_thread(fa.readline) == (
                b"* BYE [REFERRAL imap://;AUTH=*@imap2.example.org:1143/] Server shutting "
                b"down. Try imap2.example.org.\r\n"
            )
            assert await in_thread(fa.readline) == b""
    # The listener is closed: nobody new gets in.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", run.port), timeout=5).close()


async def test_watch_reloads_on_configmap_symlink_swap(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # Kubernetes mounts a ConfigMap as files that are symlinks through
    # "..data", a symlink to a timestamped directory that is swapped.
    v1, v2 = tmp_path / "..2026_01", tmp_path / "..2026_02"
    v1.mkdir()
    write_config(v1, "watch_interval_s: 0.05\n")
    shutil.copytree(v1, v2)
    routing2 = v2 / "routing.yaml"
    routing2.write_text(routing2.read_text().replace("mail1.example.org", "mail7.example.org"))
    (tmp_path / "..data").symlink_to(v1.name)
    for name in ("refd.yaml", "routing.yaml", "users.passwd"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    run = await start(nursery, tmp_path / "refd.yaml")
    assert (await in_thread(imap, run.port, b"a1 LOGIN alice secret"))[1].startswith(ALICE)
    (tmp_path / "..data_tmp").symlink_to(v2.name)
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")  # atomic swap, as kubelet does
    with trio.fail_after(10):
        while True:
            got = await in_thread(imap, run.port, b"a1 LOGIN alice secret")
            if b"mail7" in got[1]:
                break
            await trio.sleep(0.05)
    run.daemon.door.stop()


async def test_tls_failures_on_the_endpoint(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    listeners = (
        "listeners:\n  - name: imaps\n    address: 127.0.0.1\n    port: 0\n    tls: implicit\n"
    )
    cfg = write_config(
        tmp_path,
        "tls:\n  cert: server.pem\n  key: server.pem\nlimits:\n  tls_handshake_timeout_s: 0.5\n",
    )
    text = cfg.read_text()
    cut, end = text.index("listeners:"), text.index("metrics:")
    cfg.write_text(text[:cut] + listeners + text[end:])
    run = await start(nursery, cfg)

    def garbage() -> bytes:
        with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
            sock.sendall(b"a1 LOGIN alice secret\r\n")
            return sock.recv(100)

    assert await in_thread(garbage) == b""
    m = await scrape(run.metrics_port)
    assert value(m, "refd_tls_handshake_failures_total", listener="imaps") == 1
    run.daemon.door.stop()
