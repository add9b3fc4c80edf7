"""refd.routing.usermap: the bulk user map in shards, read as a Mapping."""

from __future__ import annotations

import dataclasses
import gc

from refd.routing import LoginMode, RoutingTable, normalise_user, url_can_name
from refd.routing.load import parse_user_map
from refd.routing.model import Server
from refd.routing.usermap import SHARD_SHIFT, SHARDS, UserMap

from ._support import load

SERVERS = {name: Server(name, f"{name}.example.org", 143, (), 1) for name in ("m", "n")}
MAP_TEXT = "".join(f"u{i}@d{i % 7}.example.org {'mn'[i % 2]}\n" for i in range(2_000))


def test_the_entries_spread_over_the_shards_and_read_as_a_mapping() -> None:
    found = parse_user_map(MAP_TEXT, "users.map", SERVERS)
    assert isinstance(found, UserMap) and len(found.shards) == SHARDS
    # every shard is used, none holds a large share (2,000 keys: ~31 each)
    sizes = sorted(len(shard) for shard in found.shards)
    assert sizes[0] > 0 and sizes[-1] < 100, sizes
    assert len(found) == 2_000
    assert found["u1@d1.example.org"] is SERVERS["n"]
    assert found.get("u2@d2.example.org") is SERVERS["m"]
    assert "U1@d1.example.org" not in found  # keys are normalised by the caller
    assert 1 not in found and found.get("nobody") is None
    assert sorted(found) == sorted(f"u{i}@d{i % 7}.example.org" for i in range(2_000))
    expected = {f"u{i}@d{i % 7}.example.org": SERVERS["mn"[i % 2]] for i in range(2_000)}
    assert found == expected and dict(found.items()) == expected
    for key in ("u5@d5.example.org", "u6@d6.example.org"):
        assert key in found.shards[hash(key) >> SHARD_SHIFT]


def test_add_refuses_a_key_that_is_in_already() -> None:
    found = UserMap(SERVERS)
    assert found.add("bob@example.org", SERVERS["m"])
    assert not found.add("bob@example.org", SERVERS["n"])
    assert found["bob@example.org"] is SERVERS["m"] and len(found) == 1
    # the value stored is the Server's own name string, shared by all its users
    shard = found.shards[hash("bob@example.org") >> SHARD_SHIFT]
    assert shard["bob@example.org"] is SERVERS["m"].name


def test_the_garbage_collector_never_walks_the_map() -> None:
    """Only strings inside: a full collection skips the shards (~16 ms for 1M in one dict)."""
    found = parse_user_map(MAP_TEXT, "users.map", SERVERS)
    gc.collect()
    assert not any(gc.is_tracked(shard) for shard in found.shards)
    table = load(
        "version: 1\nservers:\n  m: {host: m}\n  n: {host: n}\nuser_map: users.map\n",
        user_map=MAP_TEXT,
    )
    assert not any(gc.is_tracked(shard) for shard in table.user_map.shards)


def test_a_table_reads_its_map_with_its_own_servers() -> None:
    table = load(
        "version: 1\nservers:\n  m: {host: m}\n  n: {host: n}\nuser_map: users.map\n",
        user_map="bob@example.org m\n",
    )
    assert table.user_map["bob@example.org"] is table.servers["m"]
    moved = {name: dataclasses.replace(s, port=1143) for name, s in table.servers.items()}
    # a replaced table shares the entries and reads them with its servers
    other = dataclasses.replace(table, servers=moved)
    assert other.user_map.shards is table.user_map.shards
    assert other.user_map["bob@example.org"] is moved["m"]
    route = other.route_user("Bob@Example.org")
    assert route is not None and route.server is moved["m"]
    # a plain mapping (tools, tests) becomes a UserMap too
    plain = dataclasses.replace(table, user_map={"carol@example.org": table.servers["n"]})
    assert isinstance(plain.user_map, UserMap)
    assert plain.user_map["carol@example.org"] is table.servers["n"]
    route = plain.route_user("CAROL@example.org")
    assert route is not None and route.server is table.servers["n"]
    assert plain.route_user("bob@example.org") is None


def test_the_lookup_keeps_the_one_case_rule_and_the_empty_name() -> None:
    """route_user writes normalise_user and url_can_name out: it must agree with them."""
    names = ["Bob@Example.ORG", "ÄNNE@EXAMPLE.org", "İ@example.org", "ß@example.org", "ǅ@x.org"]
    map_text = "".join(f"{normalise_user(n)} m\n" for n in names)
    table = load("version: 1\nservers:\n  m: {host: m}\nuser_map: users.map\n", user_map=map_text)
    assert isinstance(table, RoutingTable)
    for name in names:
        route = table.route_user(name)
        assert route is not None and route.login is LoginMode.REFER, name
        assert route.why(name) == f'user_map users.map "{normalise_user(name)}"'
        assert table.route_user(name.swapcase()) is table.route_user(name.swapcase().lower())
    assert not url_can_name("") and table.route_user("") is None
    rules = load("version: 1\nservers:\n  m: {host: m}\nusers:\n  - default: true\n    server: m\n")
    assert rules.route_user("") is None and rules.route_user("x") is not None
