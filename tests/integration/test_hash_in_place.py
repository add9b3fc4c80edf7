"""A real ``refd serve``: an otherwise idle process verifies a short hash on its event loop.

The demo's alice has a SHA512-CRYPT hash (5000 rounds, a few milliseconds).
Logins one after another, with nothing else open: the event loop's thread
does the hashing and the pool's threads stay idle.  The same logins while
another connection is open: the pool's threads do it.  Told apart by the
CPU each thread of the process spent (``/proc/PID/task``), as
``bench/split.py`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

from refd.config.loader import DEMO_CONFIG
from tests.procs import Daemon, session

REFERRAL = b"a1 NO [REFERRAL imap://alice;AUTH=*@mail1.example.org/]"
LOGINS = 100


def thread_ticks(pid: int) -> tuple[int, int]:
    """CPU clock ticks of the process's main thread, and of all its other threads."""
    main = others = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
        if int(tid) == pid:
            main += ticks
        else:
            others += ticks
    return main, others


def test_an_idle_daemon_hashes_in_place_and_a_busy_one_on_the_pool(tmp_path: Path) -> None:
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    text = DEMO_CONFIG.read_text().replace("port: 1143", "port: 0").replace("port: 9143", "port: 0")
    (tmp_path / "refd.yaml").write_text(text.replace("port: 1180", "port: 0"))
    daemon = Daemon(["serve", "-c", str(tmp_path / "refd.yaml")])
    try:
        line = daemon.wait_log("listening name=imap ", timeout=60)
        port = int(re.search(r"port=(\d+)", line).group(1))  # type: ignore[union-attr]
        pid = daemon.proc.pid
        # The first login of this kind of hash goes to the pool and is measured.
        assert session(port, b"a1 LOGIN alice secret")[1].startswith(REFERRAL)

        before = thread_ticks(pid)
        for _ in range(LOGINS):
            assert session(port, b"a1 LOGIN alice secret")[1].startswith(REFERRAL)
        after = thread_ticks(pid)
        main, others = after[0] - before[0], after[1] - before[1]
        assert others * 4 < main, (main, others)

        # Another connection open: the process is busy, the pool hashes.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            assert idle.recv(1024).startswith(b"* OK")
            before = thread_ticks(pid)
            for _ in range(LOGINS):
                assert session(port, b"a1 LOGIN alice secret")[1].startswith(REFERRAL)
            after = thread_ticks(pid)
        main, others = after[0] - before[0], after[1] - before[1]
        assert others > main, (main, others)
    finally:
        daemon.stop()
