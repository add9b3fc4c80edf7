"""The pure modules stay pure: no I/O imports, no open().

refd/routing/, refd/protocol/ (the server core and the IMAP client core),
refd/autodiscovery/ (setup answers and documents), refd/proxy_protocol.py,
refd/config/tree.py, refd/throttle.py, refd/addresses.py and refd/answers.py
take values in and give values out; trio, sockets, TLS and files live in the
adapters around them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "refd"
PURE = sorted(
    [
        *(ROOT / "routing").glob("*.py"),
        *(ROOT / "protocol").glob("*.py"),
        # server.py is the trio adapter around the pure documents
        *(p for p in (ROOT / "autodiscovery").glob("*.py") if p.name != "server.py"),
        ROOT / "proxy_protocol.py",
        ROOT / "config" / "tree.py",
        ROOT / "throttle.py",
        ROOT / "answers.py",
        ROOT / "addresses.py",
    ]
)
FORBIDDEN = frozenset(
    {
        "yaml",
        "trio",
        "socket",
        "ssl",
        "prometheus_client",
        "asyncio",
        "subprocess",
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "selectors",
    }
)


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level module names imported anywhere in ``tree`` (not only at the top)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.add("__import__")
    return found


def calls_open(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
        for node in ast.walk(tree)
    )


def test_the_scan_covers_the_modules() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PURE}
    assert {
        "config/tree.py",
        "routing/__init__.py",
        "routing/load.py",
        "routing/url.py",
        "protocol/client.py",
        "protocol/connection.py",
        "proxy_protocol.py",
        "autodiscovery/answer.py",
        "autodiscovery/documents.py",
        "autodiscovery/signing.py",
    } <= names


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert imported_modules(tree) & (FORBIDDEN | {"__import__"}) == set()
    assert not calls_open(tree)


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import os", True),
        ("import os.path as p", True),
        ("from pathlib import Path", True),
        ("def f():\n    import yaml\n", True),
        ("__import__('socket')", True),
        ("from . import model", False),
        ("import re, hashlib", False),
        ("from refd.config.tree import Map", False),
    ],
)
def test_the_scanner_itself(source: str, bad: bool) -> None:
    found = imported_modules(ast.parse(source)) & (FORBIDDEN | {"__import__"})
    assert bool(found) is bad
