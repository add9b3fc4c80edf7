"""Long fuzz runs of the targets in ``tests/fuzz/targets.py``.

    python -m tests.fuzz.run --minutes 30                 # every target, round robin
    python -m tests.fuzz.run --seconds 20 --target session
    python -m tests.fuzz.run --engine atheris --target framing --minutes 10

The hypothesis engine (the default, no extra dependency) runs each target in
rounds of many examples with fresh randomness, round robin, until the time
is up; a failure is shrunk, printed with its minimal input, saved in the
example database (``.hypothesis/fuzz``, replayed first next time) and ends
the run with exit status 1.  The atheris engine (``pip install atheris``)
drives one target coverage-guided through hypothesis's ``fuzz_one_input``.
See README.md in this folder.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase

DB_PATH = ".hypothesis/fuzz"


@dataclass
class Progress:
    examples: int = 0
    rounds: int = 0
    seconds: float = 0.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long to run (default 5)")
    length.add_argument("--seconds", type=float, help="how long to run, in seconds")
    p.add_argument("--target", action="append", help="a target to run (repeatable; default: all)")
    p.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    p.add_argument("--round-seconds", type=float, default=10.0, help="aim of one round")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    return p.parse_args(argv)


def _counted(check: Callable[[Any], None], count: list[int]) -> Callable[[Any], None]:
    def run(value: Any) -> None:
        count[0] += 1
        check(value)

    return run


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    budget = args.seconds if args.seconds is not None else 60 * (args.minutes or 5)
    if args.engine == "atheris":
        return _atheris(args, budget)
    from tests.fuzz.targets import TARGETS

    # The session target makes the door log every limit it hits; only errors
    # (which the target turns into failures) are worth printing.
    logging.getLogger("refd").setLevel(logging.ERROR)
    if args.list:
        print("\n".join(TARGETS))
        return 0
    names = args.target or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; try --list", file=sys.stderr)
        return 2
    database = DirectoryBasedExampleDatabase(DB_PATH)
    progress = {n: Progress() for n in names}
    # Seconds per example, learnt as we go; the pessimistic start makes the
    # first round a handful of examples each, so a short run reaches every
    # target even when one (the whole session) is slow on a busy machine.
    per_example = dict.fromkeys(names, 1.0)
    round_s = max(0.2, min(args.round_seconds, budget / (2 * len(names))))
    deadline = time.monotonic() + budget
    print(f"fuzzing {', '.join(names)} for {budget:.0f} s (hypothesis)", flush=True)
    while time.monotonic() < deadline:
        for name in names:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            target = TARGETS[name]
            n = max(5, int(min(round_s, left) / per_example[name]))
            count = [0]
            test = settings(
                max_examples=n,
                deadline=None,
                database=database,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )(given(target.strategy)(_counted(target.check, count)))
            started = time.monotonic()
            # A hang (a blocked event loop) cannot fail a check: dump every
            # thread's stack and exit instead of waiting forever.
            faulthandler.dump_traceback_later(round_s * 5 + 600, exit=True)
            try:
                test()
            except Exception:
                traceback.print_exc()
                print(f"\nFAILED: target {name!r} (minimal input above)", flush=True)
                return 1
            finally:
                faulthandler.cancel_dump_traceback_later()
            took = time.monotonic() - started
            prog = progress[name]
            prog.examples += count[0]
            prog.rounds += 1
            prog.seconds += took
            per_example[name] = max(1e-4, took / max(1, count[0]))
    for name, prog in progress.items():
        print(
            f"{name:20} {prog.examples:8d} examples {prog.rounds:4d} rounds {prog.seconds:7.1f} s",
            flush=True,
        )
    print("OK: no failure")
    return 0


def _atheris(args: argparse.Namespace, budget: float) -> int:
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["refd"]):
        from tests.fuzz.targets import TARGETS
    if not args.target or len(args.target) != 1 or args.target[0] not in TARGETS:
        print(f"--engine atheris needs one --target of: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    target = TARGETS[args.target[0]]
    logging.getLogger("refd").setLevel(logging.ERROR)
    test = settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))(
        given(target.strategy)(target.check)
    )
    atheris.Setup([sys.argv[0], f"-max_total_time={int(budget)}"], test.hypothesis.fuzz_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
