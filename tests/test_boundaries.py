"""Module boundaries: what a module may import, checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The config loader (with every auth source's config) and the values in
# service are read by `refd check`, `explain` and tools: no event loop, no
# metrics registry.
HEAVY = ("trio", "prometheus_client")


@pytest.mark.parametrize("module", ["refd.config.loader", "refd.runtime", "refd.addresses"])
def test_importing_does_not_import_trio_or_prometheus(module: str) -> None:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []
