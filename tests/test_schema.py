"""``refd schema``: JSON Schemas that match the loaders, for editors.

- the printed schemas are valid draft 2020-12 schemas, and ``schema/`` holds
  exactly what ``refd schema`` prints;
- every example and demo file names its schema in a yaml-language-server
  modeline, and the schema accepts it (as an editor reads it: YAML 1.2);
- the structural mistakes ``refd check`` rejects, the schema rejects too;
- no drift: at every level, the keys the loader accepts (it lists them when
  it refuses an unknown one) are exactly the schema's properties.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from refd.cli import main
from refd.config.loader import DEMO_CONFIG
from refd.config.tree import Map, Node, Scalar, Seq
from refd.config.yamltree import parse_yaml
from refd.schema import config_schema, routing_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = {
    "config": ROOT / "schema" / "refd.schema.json",
    "routing": ROOT / "schema" / "routing.schema.json",
}
EXAMPLES = {
    ROOT / "config" / "refd.yaml": "config",
    ROOT / "config" / "routing.yaml": "routing",
    DEMO_CONFIG: "config",
    DEMO_CONFIG.parent / "routing.yaml": "routing",
}
VALIDATORS = {
    "config": Draft202012Validator(config_schema()),
    "routing": Draft202012Validator(routing_schema()),
}


# -- YAML as an editor reads it ---------------------------------------------------

_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def yaml12(node: Node | None) -> Any:
    """The JSON value of a refd tree under YAML 1.2's core schema (what editors use)."""
    if node is None:
        return None
    if isinstance(node, Map):
        return {k.value: yaml12(v) for k, v in node.items}
    if isinstance(node, Seq):
        return [yaml12(item) for item in node.items]
    assert isinstance(node, Scalar)
    text = node.value
    if node.quoted:
        return text
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def instance(text: str) -> Any:
    return yaml12(parse_yaml(text, "x.yaml"))


def errors(kind: str, text: str) -> list[str]:
    return [e.message for e in VALIDATORS[kind].iter_errors(instance(text))]


# -- the schemas themselves ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["config", "routing"])
def test_schema_is_draft_2020_12_and_matches_the_committed_file(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "refd", "schema", kind],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert SCHEMAS[kind].read_text() == done.stdout, "run: refd schema KIND > schema/..."


@pytest.mark.parametrize("path", list(EXAMPLES), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_examples_carry_the_modeline_and_pass(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, first
    assert (path.parent / match.group(1)).resolve() == SCHEMAS[EXAMPLES[path]]
    assert errors(EXAMPLES[path], path.read_text()) == []


def test_the_deploy_configmap_passes() -> None:
    data = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())["data"]
    assert errors("config", data["refd.yaml"]) == []
    assert errors("routing", data["routing.yaml"]) == []


def test_the_effective_config_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "-c", str(ROOT / "config" / "refd.yaml")]) == 0
    assert errors("config", capsys.readouterr().out) == []


# -- mistakes: refd check and the schema both reject them -------------------------

CONFIG = """\
routing: routing.yaml
auth:
  source: passwd-file
  passwd_file: users.passwd
listeners:
  - name: imap
    address: 127.0.0.1
    port: 1143
"""
ROUTING = """\
version: 1
servers:
  mail1: {host: mail1.example.org}
users:
  - user: alice
    server: mail1
mailboxes:
  - match: "Shared/*"
    servers: [mail1]
"""

CONFIG_MISTAKES = {
    "unknown top key": CONFIG + "listen: 1\n",
    "unknown auth key": CONFIG.replace("  source:", "  sorce: x\n  source:"),
    "unknown listener key": CONFIG + "    tsl: none\n",
    "unknown limit": CONFIG + "limits: {max_lines: 5}\n",
    "missing listeners": CONFIG.split("listeners:", maxsplit=1)[0],
    "no listener": CONFIG.split("listeners:", maxsplit=1)[0] + "listeners: []\n",
    "missing port": CONFIG.replace("    port: 1143\n", ""),
    "port out of range": CONFIG.replace("1143", "70000"),
    "port not a number": CONFIG.replace("1143", "imap"),
    "bad tls mode": CONFIG + "    tls: maybe\n",
    "bad auth source": CONFIG.replace("source: passwd-file", "source: ldap"),
    "passwd-file without the file": CONFIG.replace("  passwd_file: users.passwd\n", ""),
    "yes is not a boolean": CONFIG + "drain: yes\n",
    "workers zero": CONFIG + "workers: 0\n",
    "negative seconds": CONFIG + "shutdown_grace_s: -1\n",
    "listeners not a list": CONFIG.split("listeners:", maxsplit=1)[0] + "listeners: {a: 1}\n",
    "tls without key": CONFIG + "tls: {cert: c.pem}\n",
    "bad log level": CONFIG + "log: {level: loud}\n",
    "autodiscovery starttls": CONFIG
    + "autodiscovery: {listeners: [{address: 127.0.0.1, port: 80, tls: starttls}]}\n",
    "autodiscovery without listeners": CONFIG + "autodiscovery: {per_user: true}\n",
    "autodiscovery require_auth autoconfig": CONFIG
    + "autodiscovery: {listeners: [{address: 127.0.0.1, port: 80}], require_auth: autoconfig}\n",
    "autodiscovery zero timeout": CONFIG
    + "autodiscovery:\n  listeners: [{address: 127.0.0.1, port: 80}]\n"
    + "  limits: {request_timeout_s: 0}\n",
}
ROUTING_MISTAKES = {
    "unknown top key": ROUTING + "mailbox: []\n",
    "missing version": ROUTING.replace("version: 1\n", ""),
    "version 2": ROUTING.replace("version: 1", "version: 2"),
    "missing servers": ROUTING.split("servers:", maxsplit=1)[0],
    "unknown server key": ROUTING.replace("{host: mail1.example.org}", "{host: a, prot: 1}"),
    "server without host": ROUTING.replace("{host: mail1.example.org}", "{port: 143}"),
    "port out of range": ROUTING.replace("{host: mail1.example.org}", "{host: a, port: 0}"),
    "bad server name": ROUTING.replace("  mail1:", "  mail 1:"),
    "two selectors": ROUTING.replace("  - user: alice\n", "  - user: alice\n    glob: a*\n"),
    "no selector": ROUTING.replace("  - user: alice\n", "  - login: refer\n"),
    "bad login mode": ROUTING + "  - {glob: '*', server: mail1, login: always}\n",
    "unknown user rule key": ROUTING.replace("    server: mail1\n", "    servr: mail1\n", 1),
    "mailbox rule without servers": ROUTING.replace("    servers: [mail1]\n", ""),
    "long delimiter": ROUTING + "delimiter: '//'\n",
    "users not a list": ROUTING.split("users:", maxsplit=1)[0] + "users: {alice: mail1}\n",
    "unknown namespace": ROUTING + "namespaces: {public: []}\n",
    "default false": ROUTING + "  - {default: false, server: mail1}\n",
    "bad client_tls": ROUTING.replace("{host: mail1.example.org}", "{host: a, client_tls: ssl}"),
    "imaps_port out of range": ROUTING.replace(
        "{host: mail1.example.org}", "{host: a, imaps_port: 0}"
    ),
    "submission without host": ROUTING.replace(
        "{host: mail1.example.org}", "{host: a, submission: {port: 465}}"
    ),
    "unknown domain key": ROUTING + "domains: {example.org: {login: address}}\n",
    "bad login_name": ROUTING + "domains: {example.org: {login_name: uid}}\n",
    "bad domain name": ROUTING + "domains: {'exa mple.org': {server: mail1}}\n",
}


def check_rejects(tmp_path: Path, kind: str, text: str) -> str:
    """``refd check`` (in-process: many cases) on ``text``; it must fail. Its stderr."""
    (tmp_path / "routing.yaml").write_text(ROUTING)
    (tmp_path / "users.passwd").write_text("alice:{PLAIN}secret\n")
    path = tmp_path / ("refd.yaml" if kind == "config" else "table.yaml")
    path.write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["check", "-c" if kind == "config" else "--routing", str(path)]) == 1
    return err.getvalue()


def test_the_valid_bases_pass_both(tmp_path: Path) -> None:
    assert errors("config", CONFIG) == [] and errors("routing", ROUTING) == []
    (tmp_path / "routing.yaml").write_text(ROUTING)
    (tmp_path / "users.passwd").write_text("alice:{PLAIN}secret\n")
    (tmp_path / "refd.yaml").write_text(CONFIG)
    assert main(["check", "-c", str(tmp_path / "refd.yaml")]) == 0


@pytest.mark.parametrize("name", list(CONFIG_MISTAKES))
def test_config_mistakes_are_rejected_by_both(tmp_path: Path, name: str) -> None:
    text = CONFIG_MISTAKES[name]
    assert check_rejects(tmp_path, "config", text).startswith("refd check: ")
    assert errors("config", text), name


@pytest.mark.parametrize("name", list(ROUTING_MISTAKES))
def test_routing_mistakes_are_rejected_by_both(tmp_path: Path, name: str) -> None:
    text = ROUTING_MISTAKES[name]
    assert check_rejects(tmp_path, "routing", text).startswith("refd check: ")
    assert errors("routing", text), name


# -- no drift: the loader's keys are the schema's properties ------------------------

_KNOWN = re.compile(r'unknown key "zzz_unknown" in .* \(known keys: ([^)]*)\)')


def loader_keys(tmp_path: Path, kind: str, text: str) -> set[str]:
    """The keys the loader accepts where ``zzz_unknown`` sits in ``text``."""
    stderr = check_rejects(tmp_path, kind, text)
    found = _KNOWN.search(stderr)
    assert found, stderr
    return set(found.group(1).split(", "))


def schema_properties(schema: dict[str, Any], path: tuple[str, ...]) -> set[str]:
    node = schema
    for step in path:
        if step == "[]":
            node = node["items"]
        elif step == "*":
            node = node["additionalProperties"]
        else:
            node = _mapping(node["properties"][step])
    return set(_mapping(node)["properties"])


def _mapping(node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or its one ``anyOf`` member that is a mapping (``host[:port]`` or a map)."""
    if "anyOf" in node and "properties" not in node:
        (found,) = [n for n in node["anyOf"] if "properties" in n]
        return found
    return node


IMAP = CONFIG.replace(
    "  source: passwd-file\n  passwd_file: users.passwd\n", "  source: imap\n  imap: {}\n"
)
LEVELS = [
    ("config", (), CONFIG + "zzz_unknown: 1\n"),
    ("config", ("auth",), CONFIG.replace("  source:", "  zzz_unknown: 1\n  source:")),
    ("config", ("auth", "imap"), IMAP.replace("imap: {}", "imap: {zzz_unknown: 1}")),
    ("config", ("listeners", "[]"), CONFIG + "    zzz_unknown: 1\n"),
    ("config", ("tls",), CONFIG + "tls: {zzz_unknown: 1}\n"),
    ("config", ("log",), CONFIG + "log: {zzz_unknown: 1}\n"),
    ("config", ("metrics",), CONFIG + "metrics: {zzz_unknown: 1}\n"),
    ("config", ("limits",), CONFIG + "limits: {zzz_unknown: 1}\n"),
    ("config", ("throttle",), CONFIG + "throttle: {zzz_unknown: 1}\n"),
    ("config", ("throttle", "redis"), CONFIG + "throttle: {redis: {zzz_unknown: 1}}\n"),
    ("config", ("autodiscovery",), CONFIG + "autodiscovery: {zzz_unknown: 1}\n"),
    (
        "config",
        ("autodiscovery", "listeners", "[]"),
        CONFIG + "autodiscovery: {listeners: [{address: 127.0.0.1, port: 80, zzz_unknown: 1}]}\n",
    ),
    (
        "config",
        ("autodiscovery", "limits"),
        CONFIG
        + "autodiscovery: {listeners: [{address: 127.0.0.1, port: 80}],"
        + " limits: {zzz_unknown: 1}}\n",
    ),
    ("routing", (), ROUTING + "zzz_unknown: 1\n"),
    ("routing", ("servers", "*"), ROUTING.replace("{host: mail1", "{zzz_unknown: 1, host: mail1")),
    (
        "routing",
        ("users", "[]"),
        ROUTING.replace("    server: mail1\n", "    server: mail1\n    zzz_unknown: 1\n", 1),
    ),
    ("routing", ("mailboxes", "[]"), ROUTING + "    zzz_unknown: 1\n"),
    ("routing", ("namespaces",), ROUTING + "namespaces: {zzz_unknown: 1}\n"),
    (
        "routing",
        ("servers", "*", "submission"),
        ROUTING.replace("{host: mail1.example.org}", "{host: h, submission: {zzz_unknown: 1}}"),
    ),
    ("routing", ("domains", "*"), ROUTING + "domains: {example.org: {zzz_unknown: 1}}\n"),
    (
        "routing",
        ("domains", "*", "submission"),
        ROUTING + "domains: {example.org: {submission: {zzz_unknown: 1}}}\n",
    ),
]


@pytest.mark.parametrize(
    ("kind", "path", "text"), LEVELS, ids=lambda v: ".".join(v) if isinstance(v, tuple) else None
)
def test_every_key_the_loader_accepts_is_in_the_schema(
    tmp_path: Path, kind: str, path: tuple[str, ...], text: str
) -> None:
    schema = config_schema() if kind == "config" else routing_schema()
    assert loader_keys(tmp_path, kind, text) == schema_properties(schema, path)


def test_every_level_of_the_schema_is_compared() -> None:
    """A new mapping in the schema needs a row in LEVELS."""

    def levels(node: dict[str, Any], path: tuple[str, ...]) -> set[tuple[str, ...]]:
        found = set()
        if "properties" in node:
            found.add(path)
            for key, sub in node["properties"].items():
                found |= levels(sub, (*path, key))
        if isinstance(node.get("items"), dict):
            found |= levels(node["items"], (*path, "[]"))
        if isinstance(node.get("additionalProperties"), dict):
            found |= levels(node["additionalProperties"], (*path, "*"))
        for member in node.get("anyOf", ()):
            if "properties" in member:
                found |= levels(member, path)
        return found

    compared = {(kind, path) for kind, path, _ in LEVELS}
    present = {("config", p) for p in levels(config_schema(), ())}
    present |= {("routing", p) for p in levels(routing_schema(), ())}
    assert present == compared
