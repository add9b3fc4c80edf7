#!/usr/bin/env python3
"""bcrypt per hash: pyca/bcrypt against libxcrypt's crypt_rn, and does each release the GIL?

    .venv/bin/python bench/bcrypt_paths.py [--cost 10] [--repeat 5]

For each path, the best and median wall time of one verification at the
given cost (one thread), then `2 * repeat` verifications serially and on two
threads (`repeat` each): a speed-up near 2 on a 2-core machine means the
library releases the GIL during the hash. Both paths verify the same hash
(made by pyca/bcrypt), through the functions refd uses: `bcrypt.checkpw` and
`refd.auth.schemes.native_crypt`. Print `uptime` next to the numbers: other
processes on the machine change them.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import bcrypt

from refd.auth.schemes import native_crypt


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cost", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    password = b"correct horse battery staple"
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=args.cost))
    if native_crypt(password, hashed) != hashed:
        raise SystemExit("the system libcrypt does not compute bcrypt")
    paths: dict[str, Callable[[], object]] = {
        "pyca/bcrypt": lambda: bcrypt.checkpw(password, hashed),
        "libxcrypt": lambda: native_crypt(password, hashed),
    }
    for name, verify in paths.items():
        one = [timed(verify) for _ in range(args.repeat)]

        def batch(verify: Callable[[], object] = verify) -> None:
            for _ in range(args.repeat):
                verify()

        serial = timed(lambda: (batch(), batch()))

        def two_threads() -> None:
            threads = [threading.Thread(target=batch) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        parallel = timed(two_threads)
        print(
            f"{name:12} cost {args.cost}: best {min(one) * 1000:6.1f} ms, "
            f"median {statistics.median(one) * 1000:6.1f} ms; "
            f"{2 * args.repeat} serial {serial * 1000:6.0f} ms, "
            f"on 2 threads {parallel * 1000:6.0f} ms (x{serial / parallel:.2f})"
        )


if __name__ == "__main__":
    main()
