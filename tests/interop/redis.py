"""Private redis-server instances for interop tests.

`start_redis(binary, directory)` writes a config into `directory` (loopback
only, a free port, no persistence, its own log file), starts `redis-server`
in the foreground in its own session, and returns once it answers PING.
The tests stop it by PID: `stop()` (SIGTERM, then SIGKILL), `kill()`
(SIGKILL: Redis gone mid-test), `pause()` / `resume()` (SIGSTOP / SIGCONT:
Redis that accepts connections and never answers).  `restart()` starts a
fresh process on the same port.  `cli(...)` runs `redis-cli` against it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "redis-server not installed: apt-get install redis-server"
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def find_redis() -> str | None:
    """redis-server: $REFD_REDIS if set, else on PATH or in /usr/bin."""
    override = os.environ.get("REFD_REDIS")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisInstance:
    binary: str
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        conf = self.directory / "redis.conf"
        conf.write_text(
            f"bind {HOST}\nport {self.port}\nprotected-mode yes\ndaemonize no\n"
            f'dir {self.directory}\nlogfile "{self.directory}/redis.log"\n'
            'save ""\nappendonly no\n'
        )
        self.process = subprocess.Popen(
            [self.binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}")
            time.sleep(0.02)

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        self.resume()
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL. Idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str) -> str:
        """``redis-cli`` against this instance; its output."""
        cli = Path(self.binary).with_name("redis-cli")
        done = subprocess.run(
            [str(cli), "-h", HOST, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout


def start_redis(binary: str, directory: Path) -> RedisInstance:
    directory.mkdir(parents=True, exist_ok=True)
    instance = RedisInstance(binary, directory, _free_port())
    instance.start()
    return instance
