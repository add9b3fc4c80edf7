"""Helpers shared by the routing tests: load tables from YAML text."""

from __future__ import annotations

from pathlib import Path

from refd.config.yamltree import parse_yaml
from refd.routing import RoutingTable, load_table, read_user_map_name

CONFIG = Path(__file__).resolve().parents[2] / "config"


def load(
    text: str,
    *,
    user_map: str | None = None,
    self_addresses: frozenset[tuple[str, int]] = frozenset(),
) -> RoutingTable:
    """Load a routing table from ``text`` as file "routing.yaml"."""
    root = parse_yaml(text, "routing.yaml")
    return load_table(
        root,
        "routing.yaml",
        user_map_text=user_map,
        user_map_file="users.map" if user_map is not None else "",
        self_addresses=self_addresses,
        source_text=text,
    )


def load_example() -> RoutingTable:
    """The shipped example, config/routing.yaml with config/users.map."""
    text = (CONFIG / "routing.yaml").read_text(encoding="utf-8")
    root = parse_yaml(text, "routing.yaml")
    name = read_user_map_name(root, "routing.yaml")
    assert name == "users.map"
    map_text = (CONFIG / name).read_text(encoding="utf-8")
    return load_table(
        root, "routing.yaml", user_map_text=map_text, user_map_file=name, source_text=text
    )
