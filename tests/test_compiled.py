"""The compiled build's list of modules (refd/compiled.py) and setup.py's choice of build.

That a compiled build passes the whole suite is checked by running the
suite in one (`.ci/run`, REFD_TEST_BUILD=compiled; conftest.py refuses a
run whose build is not the one it names).
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from refd import compiled
from tests.conftest import EXPECTED_BUILD

ROOT = Path(__file__).resolve().parents[1]


def setup_module_namespace() -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "setup.py"), run_name="refd_setup")


def test_every_listed_module_is_a_source_file_of_refd() -> None:
    assert len(set(compiled.MODULES)) == len(compiled.MODULES)
    for source in compiled.sources():
        assert (ROOT / source).is_file(), source


def test_no_interpreted_class_subclasses_a_compiled_one() -> None:
    # mypyc: a class defined in an interpreted module cannot subclass a
    # compiled one. So no module left interpreted subclasses a class of a
    # compiled module (found by name in the sources' class statements).
    compiled_classes: dict[str, str] = {}
    for name, source in zip(compiled.MODULES, compiled.sources(), strict=True):
        tree = ast.parse((ROOT / source).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                compiled_classes[node.name] = name
    offenders = []
    for path in sorted((ROOT / "refd").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module in compiled.MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                    if base_name in compiled_classes:
                        offenders.append(f"{module}.{node.name}({compiled_classes[base_name]})")
    assert offenders == []


def test_the_build_under_test_is_the_one_named() -> None:
    assert compiled.describe() == EXPECTED_BUILD
    expected = list(compiled.MODULES) if EXPECTED_BUILD == "compiled" else []
    assert compiled.compiled() == expected


def test_setup_builds_pure_python_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = setup_module_namespace()
    for value in ("", "0", "no"):
        monkeypatch.setenv("REFD_COMPILE", value)
        assert setup["compiled_extensions"]() == ([], [])


def test_setup_refuses_a_compiled_editable_install(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = setup_module_namespace()
    monkeypatch.setenv("REFD_COMPILE", "1")
    monkeypatch.setattr(sys, "argv", ["setup.py", "editable_wheel"])
    with pytest.raises(SystemExit, match="not an editable install"):
        setup["compiled_extensions"]()


def test_setup_asks_for_its_pinned_mypy_before_it_can_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pip's first pass: mypyc cannot be imported yet, so the build asks for it.
    setup = setup_module_namespace()
    monkeypatch.setenv("REFD_COMPILE", "1")
    monkeypatch.setitem(sys.modules, "mypyc.build", None)  # import fails
    extensions, requires = setup["compiled_extensions"]()
    assert extensions == []
    assert setup["MYPY"].startswith("mypy==")
    # mypyc type-checks what it compiles: in a fresh build environment it
    # needs refd's dependencies and their stubs, as `mypy --strict` has them.
    assert requires[0] == setup["MYPY"]
    assert {"trio>=0.25", "pyyaml>=6.0", "prometheus-client>=0.20", "types-PyYAML"} <= set(requires)
