"""CI runs the long fuzz runner briefly, so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[2]


def test_fuzz_runner_for_a_few_seconds() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "--seconds", "6"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("OK: no failure")
    for name in TARGETS:
        m = re.search(rf"^{name} +(\d+) examples", done.stdout, re.MULTILINE)
        assert m and int(m.group(1)) > 0, (name, done.stdout)


def test_fuzz_runner_refuses_an_unknown_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "--seconds", "1", "--target", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown target(s): nope" in done.stderr
