"""One hashing limiter per process, sized so that N workers together use the cores."""

from __future__ import annotations

import os

import pytest

from refd.auth.hash_threads import (
    HASH_THREADS_ENV,
    hash_limiter,
    hash_threads,
    usable_cores,
    worker_hash_threads,
)


@pytest.mark.parametrize(
    ("workers", "cores", "threads"),
    [(1, 2, 2), (2, 2, 1), (3, 2, 1), (4, 2, 1), (2, 8, 4), (3, 8, 2), (1, 1, 1), (256, 64, 1)],
)
def test_workers_together_hash_on_the_cores(workers: int, cores: int, threads: int) -> None:
    assert worker_hash_threads(workers, cores) == threads


def test_usable_cores_is_the_affinity() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({HASH_THREADS_ENV: "1"}, 1),
        ({HASH_THREADS_ENV: "3"}, 3),
        # Anything else is ignored: every core.
        ({}, None),
        ({HASH_THREADS_ENV: ""}, None),
        ({HASH_THREADS_ENV: "0"}, None),
        ({HASH_THREADS_ENV: "-2"}, None),
        ({HASH_THREADS_ENV: "two"}, None),
        ({HASH_THREADS_ENV: "\u0663"}, None),  # a non-ASCII digit
    ],
)
def test_hash_threads_from_the_environment(environ: dict[str, str], expected: int | None) -> None:
    assert hash_threads(environ) == (usable_cores() if expected is None else expected)


def test_one_limiter_per_process() -> None:
    assert hash_limiter() is hash_limiter()
    assert hash_limiter().total_tokens == hash_threads(os.environ)
