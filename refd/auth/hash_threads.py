"""How many password hashes one refd process computes at once.

A slow hash (SHA-crypt, bcrypt, argon2) runs on a worker thread and keeps a
core busy for its whole length (bcrypt cost 10: about 80 ms). Threads beyond
the cores only share them: each hash takes longer and the event loops wait
for a core too. So each process has one `trio.CapacityLimiter` for hashing,
shared by every source it builds (a reload's new source too), and the
processes of ``workers: N`` together hash on as many threads as there are
cores: ``max(1, cores // N)`` each, the cores being those this process may
run on (`os.sched_getaffinity`). The supervisor computes the number and
passes it in `HASH_THREADS_ENV`; a single process uses every core.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import trio

__all__ = [
    "HASH_THREADS_ENV",
    "hash_limiter",
    "hash_threads",
    "usable_cores",
    "worker_hash_threads",
]

#: Set by the supervisor in each worker's environment: that worker's hashing threads.
HASH_THREADS_ENV = "REFD_HASH_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_hash_threads(workers: int, cores: int) -> int:
    """Hashing threads for each of `workers` processes, so that together they use `cores`."""
    return max(1, cores // workers)


def hash_threads(environ: Mapping[str, str]) -> int:
    """This process's hashing threads: `HASH_THREADS_ENV` if set (a worker), else the cores."""
    value = environ.get(HASH_THREADS_ENV, "")
    if value.isascii() and value.isdigit() and int(value) >= 1:
        return int(value)
    return usable_cores()


@functools.cache
def hash_limiter() -> trio.CapacityLimiter:
    """The process's one limiter for hashing threads (built on first use)."""
    return trio.CapacityLimiter(hash_threads(os.environ))
