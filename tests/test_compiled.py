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
from refd.protocol.commands import WIRE_NAMES
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


#: the dataclasses a PLAIN login-referral session builds, which write their
#: ``__init__`` out so that the compiled build runs it as C (refd/compiled.py)
SESSION_DATACLASSES = {
    "refd.answers": {"LoginAnswer"},
    "refd.auth.base": {"AuthRequest", "AuthResult"},
    "refd.login": {"LoginCheck"},
    # the commands that add fields to their base (the others take its __init__:
    # test_every_command_runs_a_written_out_init)
    "refd.protocol.commands": {
        "Command",
        "Id",
        "Login",
        "Authenticate",
        "_OneMailbox",
        "Rename",
        "Status",
        "Append",
        "List",
        "_ReferencePattern",
        "Unselected",
    },
    "refd.protocol.responses": {"Tagged", "UntaggedStatus", "Bye"},
    "refd.routing.model": {"Referral"},
    "refd.runtime": {"ClientInfo"},
    "refd.session": {"Reply"},
    "refd.transport": {"Endpoints"},
}


def _dataclass_fields(
    node: ast.ClassDef, module: dict[str, ast.ClassDef]
) -> list[tuple[str, str | None]]:
    """A dataclass's ``__init__`` parameters as ``@dataclass`` would make them: each
    field's name and the source text of its default (None when it has none; a
    ``default_factory`` field's written-out default is ``None``). The fields of
    a base class of the same ``module`` (its classes by name) come first."""
    fields: list[tuple[str, str | None]] = []
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in module:
            fields += _dataclass_fields(module[base.id], module)
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(item.annotation):
            continue
        default = None if item.value is None else ast.unparse(item.value)
        if isinstance(item.value, ast.Call) and ast.unparse(item.value.func) == "field":
            keywords = {k.arg: ast.unparse(k.value) for k in item.value.keywords}
            if keywords.get("init") == "False":
                continue
            default = keywords.get("default")
            if "default_factory" in keywords:
                default = "None"  # the written-out __init__ makes the value itself
        fields.append((item.target.id, default))
    return fields


def test_session_dataclasses_write_out_an_init_that_matches_their_fields() -> None:
    found: dict[str, set[str]] = {}
    for name, source in zip(compiled.MODULES, compiled.sources(), strict=True):
        body = ast.parse((ROOT / source).read_text()).body
        classes = {node.name: node for node in body if isinstance(node, ast.ClassDef)}
        for node in classes.values():
            if not any("dataclass" in ast.unparse(d) for d in node.decorator_list):
                continue
            init = next(
                (f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"),
                None,
            )
            if init is None:
                continue
            found.setdefault(name, set()).add(node.name)
            args = init.args
            assert not args.posonlyargs and not args.kwonlyargs and args.vararg is None
            names = [a.arg for a in args.args[1:]]
            defaults = [None] * (len(names) - len(args.defaults)) + [
                ast.unparse(d) for d in args.defaults
            ]
            assert list(zip(names, defaults, strict=True)) == _dataclass_fields(node, classes), (
                node.name
            )
    assert found == SESSION_DATACLASSES


def test_every_command_runs_a_written_out_init() -> None:
    # A dataclass subclass gets a generated __init__ unless it writes one out
    # or says init=False; with init=False it must add no field, so that its
    # base's written-out __init__ (checked above) is the whole of it.
    source = ROOT / "refd/protocol/commands.py"
    classes = {n.name: n for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef)}

    def writes_init(node: ast.ClassDef) -> bool:
        return any(isinstance(f, ast.FunctionDef) and f.name == "__init__" for f in node.body)

    for cls in WIRE_NAMES:
        node = classes[cls.__name__]
        if writes_init(node):
            continue
        (decorator,) = node.decorator_list
        assert "init=False" in ast.unparse(decorator), node.name
        assert not any(isinstance(item, ast.AnnAssign) for item in node.body), node.name
        (base,) = node.bases
        assert isinstance(base, ast.Name) and writes_init(classes[base.id]), node.name


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
