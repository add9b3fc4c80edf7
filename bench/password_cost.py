#!/usr/bin/env python3
# ruff: noqa: S603
"""CPU per failed login, by password length: does it depend on what the attacker sends?

    bench/password_cost.py                    # this checkout
    bench/password_cost.py --refd-path DIR    # another tree's refd/ (e.g. a git archive)
    bench/password_cost.py --logins 80 --json /tmp/cost.json

Starts ``refd serve`` (``python -m refd`` with PYTHONPATH=<tree>) on free
loopback ports with the demo users and a 10 ms failure delay, and sends
``--logins`` wrong LOGINs for ``alice`` (whose demo hash is SHA512-CRYPT,
5000 rounds) over one connection, for each password length in turn. The
CPU the refd process spent (user + system, all threads, from
``/proc/PID/stat``) during each batch, divided by the batch size, is the
cost of one failed login. Passwords go as quoted strings (lengths up to
4096 fit in one 8192-byte line).

Prints one line per length and, with ``--json``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LENGTHS = (6, 64, 256, 511, 512, 4096)
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def write_config(directory: Path, port: int) -> Path:
    demo = REPO / "refd" / "demo"
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(demo / name, directory / name)
    text = (demo / "refd.yaml").read_text()
    text = text.replace("port: 1143", f"port: {port}").replace("port: 9143", f"port: {free_port()}")
    text = text.replace("port: 1180", "port: 0")
    text = text.replace("failure_delay_s: 2", "failure_delay_s: 0.01\n  failure_delay_max_s: 0.01")
    text = text.replace("level: info", "level: warning")
    (directory / "refd.yaml").write_text(text)
    return directory / "refd.yaml"


def wait_greeting(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("refd exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("refd did not answer")


def batch(port: int, pid: int, length: int, logins: int) -> tuple[float, bytes]:
    password = b"w" * length
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as sock,
        sock.makefile("rb") as f,
    ):
        f.readline()
        before = cpu_seconds(pid)
        answer = b""
        for i in range(logins):
            sock.sendall(b'a%d LOGIN alice "%s"\r\n' % (i, password))
            answer = f.readline()
        used = cpu_seconds(pid) - before
    return used / logins, answer.split(b" ", 1)[1].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refd-path", type=Path, default=REPO, help="tree holding refd/")
    parser.add_argument("--logins", type=int, default=80, help="failed logins per length")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), port)
        env = {**os.environ, "PYTHONPATH": str(args.refd_path.resolve())}
        proc = subprocess.Popen(
            [sys.executable, "-m", "refd", "serve", "-c", str(config)],
            env=env,
            cwd=tmp,  # not this checkout: ``-m`` puts the working directory first
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_greeting(port, proc)
            results = []
            for length in LENGTHS:
                per_login, answer = batch(port, proc.pid, length, args.logins)
                results.append({"bytes": length, "cpu_ms": round(per_login * 1000, 2)})
                print(
                    f"{length:5d}-byte password: {per_login * 1000:7.2f} ms CPU per failed login"
                    f"  ({answer.decode()})"
                )
        finally:
            proc.kill()
            proc.wait()
    if args.json:
        args.json.write_text(json.dumps({"logins": args.logins, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
