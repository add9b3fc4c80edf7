"""Faults around the daemon: broken files at reload, killed processes, a hammered endpoint.

Nothing may be lost: the table in service stays, every client gets an
answer, the daemon stays up.  In-process tests run ``Daemon`` on config
files in a temporary directory; the ones that kill or may kill a process
run refd as a subprocess (``RefdProcess``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from refd import daemon
from refd.config.loader import Pacing, bulk_pacing, load_config, load_service
from refd.config.tree import TreeError
from refd.config.yamltree import parse_yaml
from refd.daemon import Daemon
from refd.routing import RoutingTable, load_table
from refd.routing.usermap import SHARD_SHIFT
from tests.robustness.helpers import (
    ALICE_REFERRAL,
    LineClient,
    LoginProber,
    RefdProcess,
    http_get,
    metric,
    write_config,
)


def load_routing_text(text: str) -> RoutingTable:
    return load_table(parse_yaml(text, "routing.yaml"), "routing.yaml", source_text=text)


NESTED_YAML = "version: 1\nservers: " + "[" * 900 + "]" * 900 + "\n"


async def start(nursery: trio.Nursery, cfg: Path) -> tuple[Daemon, int, int]:
    config = load_config(cfg)
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    return daemon, int(bound[0][0].port), int(bound[1])


async def in_thread(fn: object, *args: object) -> object:
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(fn, *args)  # type: ignore[arg-type]


def breakages(tmp: Path) -> list[tuple[str, object]]:
    """(name, action) pairs; each action breaks one file the reload reads."""
    routing = tmp / "routing.yaml"
    good = routing.read_text()

    def write(path: Path, data: str | bytes) -> object:
        def act() -> None:
            if path.is_dir():
                path.rmdir()
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data)

        return act

    def remove(path: Path) -> object:
        return lambda: path.unlink(missing_ok=True)

    def directory(path: Path) -> object:
        def act() -> None:
            path.unlink(missing_ok=True)
            path.mkdir()

        return act

    return [
        ("invalid YAML", write(routing, "version: 1\nservers: {mail1: [\n")),
        ("empty file", write(routing, "")),
        ("removed", remove(routing)),
        ("a directory", directory(routing)),
        ("binary", write(routing, b"\xff\xfe\x00\x01" * 100)),
        ("cut mid-string", write(routing, good[: good.index('"Shared/*"') + 5])),
        ("unknown server", write(routing, good.replace("server: mail1", "server: nowhere"))),
        ("a second document", write(routing, good + "---\nversion: 1\n")),
        ("an alias", write(routing, "version: 1\nservers: &s {}\nusers: *s\n")),
        ("passwd-file removed", remove(tmp / "users.passwd")),
        ("passwd-file garbage", write(tmp / "users.passwd", "alice {PLAIN}xyz\n")),
        ("passwd-file duplicate", write(tmp / "users.passwd", "a:{PLAIN}x\nA:{PLAIN}y\n")),
        ("daemon config garbage", write(tmp / "refd.yaml", "listeners: [\n")),
    ]


async def test_broken_files_at_reload_keep_the_table(nursery: trio.Nursery, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    daemon, port, mport = await start(nursery, cfg)
    sha, config_sha = daemon.ref.current.table.sha256, daemon.config_sha256
    originals = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    probers = [LoginProber(port) for _ in range(4)]
    stop = trio.Event()
    failed: list[str] = []
    async with trio.open_nursery() as load:
        for prober in probers:
            load.start_soon(prober.run, stop)
        for _ in range(2):
            for name, breakage in breakages(tmp_path):
                breakage()  # type: ignore[operator]
                if await daemon.reload():
                    failed.append(name)
                assert daemon.ref.current.table.sha256 == sha, name
                await trio.sleep(0.02)
                for path, data in originals.items():  # repair
                    if path.is_dir():
                        path.rmdir()
                    path.write_bytes(data)
        assert await daemon.reload()  # the repaired files load again
        stop.set()
    assert not failed, f"reload accepted a broken file: {failed}"
    for prober in probers:
        prober.check(at_least=5, max_latency_s=5.0)
    status, body = await in_thread(http_get, mport, "/metrics")  # type: ignore[misc]
    assert status == 200
    assert metric(body, "refd_config_reloads_total", result="failure") == 2 * len(
        breakages(tmp_path)
    )
    # The repaired files are the ones the door started with: the same hash.
    assert metric(body, "refd_config_info", sha256=config_sha) == 1
    assert metric(body, "refd_config_last_reload_successful") == 1
    daemon.door.stop()


async def login(port: int, user: bytes, password: bytes) -> bytes:
    client = await LineClient.connect(port)
    try:
        await client.line()  # the greeting
        await client.send(b"a1 LOGIN " + user + b" " + password + b"\r\n")
        return await client.line()
    finally:
        await client.stream.aclose()


SCHEMES = (
    "ARGON2I, ARGON2ID, BLF-CRYPT, CLEAR, CLEARTEXT, CRYPT, DES-CRYPT, LDAP-MD5, MD5, "
    "MD5-CRYPT, PBKDF2, PLAIN, PLAIN-MD5, PLAIN-TRUNC, SHA, SHA1, SHA256, SHA256-CRYPT, "
    "SHA512, SHA512-CRYPT, SMD5, SSHA, SSHA256, SSHA512"
)
FAILED = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


async def test_an_unusable_passwd_line_fails_one_user_at_start_and_reload(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = write_config(tmp_path)
    passwd = tmp_path / "users.passwd"
    good = passwd.read_text()
    n = len(good.splitlines())
    passwd.write_text(good + "mallory:{NOPE}secret\n")
    caplog.set_level(logging.INFO, logger="refd")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    def auth_reasons() -> list[str]:
        return [
            r.getMessage().split(" reason=")[1]
            for r in caplog.records
            if " reason=" in r.getMessage()
        ]

    mallory = f"{passwd}:{n + 1}: user mallory cannot log in: unsupported scheme NOPE; "
    daemon, port, _ = await start(nursery, cfg)
    assert warnings() == [mallory + f"refd verifies {SCHEMES}"]  # once, at start
    assert await login(port, b"alice", b"secret") == ALICE_REFERRAL
    assert await login(port, b"mallory", b"secret") == FAILED
    assert auth_reasons()[-1].startswith(
        f"unusable password at {passwd}:{n + 1}: unsupported scheme NOPE delay="
    )

    # A reload with one more such line loads, and says so once per line.
    caplog.clear()
    passwd.write_text(good + "mallory:{NOPE}secret\ntrent:{SHA1}c2VjcmV0\n")
    assert await daemon.reload()
    trent = (
        f"{passwd}:{n + 2}: user trent cannot log in: malformed SHA1 password: "
        "digest is 6 bytes, expected 20; "
    )
    assert warnings() == [mallory + f"refd verifies {SCHEMES}", trent + f"refd verifies {SCHEMES}"]
    assert await login(port, b"alice", b"secret") == ALICE_REFERRAL
    assert await login(port, b"trent", b"secret") == FAILED
    assert await login(port, b"mallory", b"secret") == FAILED
    assert "secret" not in caplog.text and "c2VjcmV0" not in caplog.text
    daemon.door.stop()


async def test_watch_survives_a_removed_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra="watch_interval_s: 0.05\n")
    daemon, port, _ = await start(nursery, cfg)
    routing = tmp_path / "routing.yaml"
    good = routing.read_text()
    sha = daemon.ref.current.table.sha256
    prober = LoginProber(port, pause_s=0.01)
    stop = trio.Event()
    await trio.sleep(0.2)  # the watcher takes its first look
    async with trio.open_nursery() as load:
        load.start_soon(prober.run, stop)
        routing.unlink()
        with trio.fail_after(10):
            while (
                daemon.metrics.registry.get_sample_value(
                    "refd_config_reloads_total", {"result": "failure"}
                )
                != 1
            ):
                await trio.sleep(0.05)
        assert daemon.ref.current.table.sha256 == sha
        routing.write_text(good.replace("mail1.example.org", "mail5.example.org"))
        with trio.fail_after(10):
            while daemon.ref.current.table.sha256 == sha:
                await trio.sleep(0.05)
            # A login begun before the swap may still get the old answer:
            # let two more logins start and end after it.
            seen = len(prober.answers)
            while len(prober.answers) < seen + 2:
                await trio.sleep(0.05)
        stop.set()
    old, new = ALICE_REFERRAL, ALICE_REFERRAL.replace(b"mail1", b"mail5")
    assert set(prober.answers) <= {old, new} and prober.answers[-1] == new
    daemon.door.stop()


async def test_watch_sees_a_change_made_during_a_reload(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, extra="watch_interval_s: 0.05\n")
    daemon, _, _ = await start(nursery, cfg)
    routing = tmp_path / "routing.yaml"
    good = routing.read_text()
    second = good.replace("mail1.example.org", "mail5.example.org")
    third = good.replace("mail1.example.org", "mail66.example.org")  # another size
    load = daemon._load

    def load_while_someone_writes() -> object:
        loaded = load()
        if routing.read_text() == second:
            routing.write_text(third)  # lands while the reload of "second" runs
        return loaded

    daemon._load = load_while_someone_writes  # type: ignore[method-assign]
    await trio.sleep(0.2)  # the watcher takes its first look
    routing.write_text(second)
    with trio.move_on_after(3):
        while "mail66" not in str(daemon.ref.current.table.login_referral("alice")):
            await trio.sleep(0.05)
    assert "mail66" in str(daemon.ref.current.table.login_referral("alice"))
    daemon.door.stop()


def test_sighup_with_a_deeply_nested_routing_file(tmp_path: Path) -> None:
    with RefdProcess(tmp_path) as refd:
        (tmp_path / "routing.yaml").write_text(NESTED_YAML)
        refd.daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while refd.alive() and not any("reload failed" in line for line in refd.daemon.log):
            assert time.monotonic() < deadline, "neither died nor reported the reload"
            with contextlib.suppress(queue.Empty):
                refd.daemon.log.append(refd.daemon.lines.get(timeout=0.1))
        assert refd.alive(), "refd died on SIGHUP"
        lines = subprocess_session(refd.port)
        assert lines[1] == ALICE_REFERRAL


def test_refd_check_reports_a_deeply_nested_file(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(NESTED_YAML)
    done = subprocess.run(
        [sys.executable, "-m", "refd", "check", str(tmp_path / "routing.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"refd check: {tmp_path / 'routing.yaml'}:")


def subprocess_session(port: int, *commands: bytes) -> list[bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as f,
    ):
        out = [f.readline()]
        for cmd in commands or (b"a1 LOGIN alice secret",):
            sock.sendall(cmd + b"\r\n")
            out.append(f.readline())
        return out


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()
    except FileNotFoundError:
        return True


def sockets_of(pid: int) -> int:
    """How many sockets process ``pid`` holds open (its ``/proc`` fd links)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


async def test_kill_9_a_worker_then_the_supervisor(tmp_path: Path) -> None:
    """New over test_workers.py: what the *clients* of a killed worker and of an
    orphaned one see (EOF at once; BYE then EOF), and that orphans exit."""
    # A cap per address above the most clients the loop below may open.
    limits = {"max_connections_per_address": 500}
    extra = "workers: 2\nshutdown_grace_s: 2\n"
    with RefdProcess(tmp_path, limits=limits, extra=extra) as refd:
        await trio.to_thread.run_sync(refd.daemon.wait_log, "supervisor ready workers=2")
        log = "".join(refd.daemon.log)
        workers = {
            int(slot): int(pid) for slot, pid in re.findall(r"worker (\d) started pid=(\d+)", log)
        }
        assert len(workers) == 2, log
        before = {pid: sockets_of(pid) for pid in workers.values()}
        clients = []
        # The kernel hands each connection to whichever worker takes it
        # first; on a loaded host one worker can take dozens in a row.
        # Connect until each worker holds some, so both outcomes are seen.
        while len(clients) < 40 or any(sockets_of(pid) <= before[pid] for pid in workers.values()):
            assert len(clients) < 400, {pid: sockets_of(pid) for pid in workers.values()}
            if len(clients) >= 40:
                await trio.sleep(0.05)  # time for a worker that is slow to wake
            client = await LineClient.connect(refd.port)
            assert (await client.line()).startswith(b"* OK ")
            clients.append(client)
        os.kill(workers[0], signal.SIGKILL)
        await trio.to_thread.run_sync(refd.daemon.wait_log, f"pid={workers[0]} died with -9")
        # The dead worker's clients see EOF at once; the other's still answer.
        alive = []
        for client in clients:
            await send_ignoring_reset(client, b"z NOOP\r\n")
            answer = await client.line(timeout=5)
            if answer == b"":
                await client.aclose()
            else:
                assert answer == b"z OK NOOP completed.\r\n"
                alive.append(client)
        assert 0 < len(alive) < len(clients), len(alive)
        # New clients are served (the survivor, then the restarted worker).
        for _ in range(10):
            assert (await trio.to_thread.run_sync(subprocess_session, refd.port))[1] == (
                ALICE_REFERRAL
            )
        await trio.to_thread.run_sync(refd.daemon.wait_log, "worker 0 ready pid=")
        log = "".join(refd.daemon.log)
        orphans = [int(pid) for pid in re.findall(r"worker \d started pid=(\d+)", log)]
        orphans = [pid for pid in orphans if pid != workers[0]]
        os.kill(refd.pid, signal.SIGKILL)
        # The orphaned workers notice within a second or two and stop as on
        # SIGTERM: their idle clients get BYE, then EOF.
        for client in alive:
            assert await client.line(timeout=10) == b"* BYE [UNAVAILABLE] Server shutting down.\r\n"
            assert await client.rest(timeout=5) == b""
            await client.aclose()
        with trio.fail_after(15):
            while not all(gone(pid) for pid in orphans):
                await trio.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", refd.port), timeout=5).close()


async def test_out_of_file_descriptors_the_listener_backs_off_and_serves_again(
    tmp_path: Path,
) -> None:
    """EMFILE on accept: one error line per try, no spin, no crash; the clients
    left in the queue are served once descriptors are free again."""
    with RefdProcess(tmp_path, limits={"max_connections_per_address": 500}) as refd:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        spare = 10
        # Counted once the readiness probe's connection is closed on refd's side.
        open_fds = await settled_fd_count(refd.pid)
        resource.prlimit(refd.pid, resource.RLIMIT_NOFILE, (open_fds + spare, hard))
        clients: list[LineClient] = []
        try:
            # The kernel completes every handshake into the listen queue;
            # refd can take only ``spare`` of them.
            for _ in range(2 * spare):
                clients.append(await LineClient.connect(refd.port))
            line = await trio.to_thread.run_sync(refd.daemon.wait_log, "accept failed on imap")
            assert "Too many open files" in line, line
            greeted = []
            waiting = []
            for client in clients:
                first = b""
                with trio.move_on_after(0.3):
                    first = await client.line()
                (greeted if first.startswith(b"* OK ") else waiting).append(client)
            assert 0 < len(greeted) <= spare and waiting, (len(greeted), len(waiting))
            # Backing off, not spinning: at most one try (and one line) per 0.1 s.
            await trio.to_thread.run_sync(refd.daemon.drain_log, 0.0)  # what came before
            lines = await trio.to_thread.run_sync(refd.daemon.drain_log, 1.0)
            assert len([x for x in lines if "accept failed on imap" in x]) <= 12, lines
            assert refd.alive()
            for client in greeted:
                await client.aclose()
            resource.prlimit(refd.pid, resource.RLIMIT_NOFILE, (soft, hard))
            for client in waiting:
                assert (await client.line(timeout=10)).startswith(b"* OK "), "not served"
                await client.send(b"a LOGOUT\r\n")
                assert (await client.line()).startswith(b"* BYE ")
        finally:
            for client in clients:
                await client.aclose()


async def settled_fd_count(pid: int) -> int:
    """How many descriptors ``pid`` holds, once five reads 50 ms apart agree."""
    counts: list[int] = []
    with trio.fail_after(10):
        while len(counts) < 5 or len(set(counts[-5:])) > 1:
            counts.append(len(os.listdir(f"/proc/{pid}/fd")))
            await trio.sleep(0.05)
    return counts[-1]


async def send_ignoring_reset(client: LineClient, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await client.send(data)


async def test_metrics_endpoint_hammered_while_imap_is_served(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, limits={"max_connections_per_address": 2000})
    daemon, port, mport = await start(nursery, cfg)
    prober = LoginProber(port, pause_s=0.01)
    stop = trio.Event()
    statuses: list[int] = []
    partial_closed: list[float] = []

    async def http(request: bytes) -> bytes:
        client = await LineClient.connect(mport)
        try:
            await client.send(request)
            return await client.rest(timeout=15)
        finally:
            await client.aclose()

    async def full_get(path: str) -> None:
        answer = await http(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        statuses.append(int(answer.split(b" ", 2)[1]))
        if path == "/metrics":
            assert b"refd_connections_total" in answer

    async def partial(request: bytes, dribble: bool = False) -> None:
        started = trio.current_time()
        client = await LineClient.connect(mport)
        try:
            if dribble:
                for byte in request:
                    await client.send(bytes([byte]))
                    await trio.sleep(0.5)
                    if client.eof:
                        break
            else:
                await client.send(request)
            assert await client.rest(timeout=15) == b""  # closed, never answered
            partial_closed.append(trio.current_time() - started)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            partial_closed.append(trio.current_time() - started)
        finally:
            await client.aclose()

    async def expect(request: bytes, status: bytes) -> None:
        answer = await http(request)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]

    async with trio.open_nursery() as load:
        load.start_soon(prober.run, stop)
        with trio.fail_after(30):
            async with trio.open_nursery() as hammer:
                for i in range(300):
                    hammer.start_soon(full_get, ("/metrics", "/healthz", "/readyz")[i % 3])
                for _ in range(200):
                    hammer.start_soon(partial, b"GET /metr")
                for _ in range(20):
                    hammer.start_soon(partial, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", True)
                for _ in range(20):
                    hammer.start_soon(expect, b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 9000, b"431")
                for _ in range(20):
                    hammer.start_soon(expect, b"\x00\xff garbage\r\n\r\n", b"400")
                for _ in range(20):
                    hammer.start_soon(expect, b"POST /metrics HTTP/1.1\r\n\r\n", b"405")
        stop.set()
    assert statuses == [200] * 300
    assert len(partial_closed) == 220
    assert max(partial_closed) < 10, max(partial_closed)  # the endpoint's 5 s deadline
    prober.check(at_least=20, max_latency_s=2.0)
    status, body = await in_thread(http_get, mport, "/metrics")  # type: ignore[misc]
    assert status == 200
    assert metric(body, "refd_referrals_total", kind="login", command="LOGIN", server="mail1") == (
        len(prober.answers)
    )
    daemon.door.stop()


async def test_a_reload_hands_the_gil_back_sooner_and_paces_only_while_it_loads() -> None:
    """The reload's thread runs with a 0.1 ms switch interval and its big files
    paced (`bulk_pacing`); then both are as before, in the thread's caller too."""
    seen: list[tuple[float, Pacing | None]] = []

    def load() -> str:
        seen.append((sys.getswitchinterval(), bulk_pacing.get()))
        return "table"

    before = sys.getswitchinterval()
    assert await daemon._in_thread(load) == "table"
    # the interval is held in whole us
    assert seen == [(pytest.approx(daemon.RELOAD_SWITCH_INTERVAL_S), daemon.RELOAD_PACING)]
    assert sys.getswitchinterval() == before
    assert bulk_pacing.get() is None

    def fails() -> str:
        raise TreeError("routing.yaml", 1, "broken")

    with pytest.raises(TreeError):
        await daemon._in_thread(fails)
    assert sys.getswitchinterval() == before
    assert bulk_pacing.get() is None


async def test_a_reload_frees_the_old_user_map_off_the_loop_once_nothing_reads_it(
    tmp_path: Path,
) -> None:
    """The replaced table's user map goes to the retirer, which empties it shard by
    shard in its thread -- but only once no table (a session mid-login) holds it."""
    cfg = write_config(tmp_path)
    (tmp_path / "routing.yaml").write_text(
        "version: 1\nservers:\n  m: {host: m.example.org}\n  n: {host: n.example.org}\n"
        "user_map: users.map\n"
    )
    (tmp_path / "users.map").write_text("bob@example.org m\ncarol@example.org n\n")
    config = load_config(cfg)
    door = Daemon(config, load_service(config))
    door.retirer = daemon.Retirer(pause_s=0, threaded=False)
    held = door.ref.current.table  # what a session in a login holds
    shard = held.user_map.shards[hash("bob@example.org") >> SHARD_SHIFT]
    assert await door.reload()
    assert door.retirer.pending == 1
    assert door.retirer.sweep() == 0  # still read: nothing is freed
    route = held.route_user("bob@example.org")
    assert route is not None and route.server.name == "m"
    del held, route
    assert door.retirer.sweep() == 1 and door.retirer.pending == 0
    assert not shard  # emptied by the retirer, not by a deallocation
    route = door.ref.current.table.route_user("Bob@example.org")
    assert route is not None and route.server.name == "m"
    assert await door.reload()  # the next one goes the same way
    assert door.retirer.sweep() == 1


async def test_an_idle_session_does_not_keep_the_replaced_user_map(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A session open across a reload reads the new table at its next command, so
    it holds nothing of the old one: the retirer frees the old map at once."""
    cfg = write_config(tmp_path)
    (tmp_path / "routing.yaml").write_text(
        "version: 1\nservers:\n  m: {host: m.example.org}\nuser_map: users.map\n"
    )
    (tmp_path / "users.map").write_text("bob@example.org m\n")
    door, port, _ = await start(nursery, cfg)
    door.retirer = daemon.Retirer(pause_s=0, threaded=False)
    client = await LineClient.connect(port)
    try:
        assert (await client.line()).startswith(b"* OK ")
        assert await door.reload()
        assert door.retirer.pending == 1
        # The session is still open and idle; nothing of it reads the old table.
        assert door.retirer.sweep() == 1 and door.retirer.pending == 0
        await client.send(b"a1 LOGOUT\r\n")
        assert (await client.line()) == b"* BYE Logging out.\r\n"
    finally:
        await client.stream.aclose()


def test_the_retiring_thread_ends_when_nothing_is_left() -> None:
    retirer = daemon.Retirer(pause_s=0)
    table = load_routing_text(
        "version: 1\nservers:\n  m: {host: m}\nuser_map: {bob@example.org: m}\n"
    )
    shard = table.user_map.shards[hash("bob@example.org") >> SHARD_SHIFT]
    retirer.retire(table)
    thread = retirer._thread
    assert thread is not None
    del table
    thread.join(timeout=10 * daemon.RETIRE_POLL_S + 5)
    assert not thread.is_alive() and retirer.pending == 0 and not shard
