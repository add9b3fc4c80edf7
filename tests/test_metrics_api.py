"""The metric API is typed: only refd/metrics.py touches prometheus-client objects.

Every other module records through one :class:`refd.metrics.Metrics` method
per event; the HTTP endpoint (refd/http.py) only renders a registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.routing.test_purity import imported_modules

ROOT = Path(__file__).resolve().parents[1] / "refd"
MODULES = sorted(ROOT.rglob("*.py"))
#: where prometheus_client may be imported, and why
ALLOWED = {"metrics.py": "the collectors", "http.py": "renders a registry for /metrics"}


def test_the_scan_covers_the_modules() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in MODULES}
    assert {"session.py", "server.py", "store.py", "daemon.py", "supervisor.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_only_metrics_touches_prometheus_client(path: Path) -> None:
    name = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    if name not in ALLOWED:
        assert "prometheus_client" not in imported_modules(tree)
    if name != "metrics.py":
        # No label lookups on a collector, and no untyped child(metric, *labels).
        calls = {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        assert not calls & {"labels", "child", "_child", "inc", "dec", "observe"}
