"""Routing tables with account-setup facts, for the autodiscovery tests.

The users and rules come from YAML text through the real loader
(`tests.routing._support.load`). The TLS facts of each server and the
``domains:`` entries are given as values (`Server` fields, `Domain`), put
into the loaded table with `dataclasses.replace`: every rule, map entry
and chain then holds the server with its facts, as the loader builds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from refd.routing import RoutingTable, Server
from refd.routing.model import ClientTls, Domain, Endpoint, LoginName
from tests.routing._support import load

ROUTING = """\
version: 1
servers:
  mail1: {host: mail1.example.org}
  mail2: {host: mail2.example.org, port: 10143}
  mail3: {host: mail3.example.org}
users:
  - user: carol@example.org
    server: mail2
  - user: dave
    server: mail3
  - glob: "*@other.test"
    server: mail3
  - default: true
    server: mail1
"""

# (imaps_port, client_tls, submission) per server
FACTS: dict[str, tuple[int | None, ClientTls, Endpoint | None]] = {
    "mail1": (993, ClientTls.IMPLICIT, None),
    "mail2": (None, ClientTls.STARTTLS, Endpoint("smtp2.example.org", 465, ClientTls.IMPLICIT)),
    "mail3": (None, ClientTls.NONE, None),
}


def with_facts(
    table: RoutingTable,
    facts: Mapping[str, tuple[int | None, ClientTls, Endpoint | None]],
) -> RoutingTable:
    """``table`` with each named server given (imaps_port, client_tls, submission)."""
    new = {
        name: dataclasses.replace(
            server, imaps_port=facts[name][0], client_tls=facts[name][1], submission=facts[name][2]
        )
        if name in facts
        else server
        for name, server in table.servers.items()
    }

    def swap(server: Server) -> Server:
        return new[server.name]

    return dataclasses.replace(
        table,
        servers=new,
        chains={name: tuple(swap(s) for s in chain) for name, chain in table.chains.items()},
        user_rules=tuple(dataclasses.replace(r, server=swap(r.server)) for r in table.user_rules),
        user_map={user: swap(s) for user, s in table.user_map.items()},
    )


def domain(
    table: RoutingTable,
    name: str,
    server: str,
    *,
    login_name: LoginName = "address",
    display_name: str | None = None,
    submission: Endpoint | None = None,
    line: int = 40,
) -> Domain:
    """A ``domains:`` entry whose domain-level server is ``server``."""
    return Domain(
        name=name,
        login_name=login_name,
        display_name=display_name if display_name is not None else name,
        server=table.servers[server],
        submission=submission,
        line=line,
    )


def table_with(*domains: Domain, base: RoutingTable) -> RoutingTable:
    return dataclasses.replace(base, domains={d.name: d for d in domains})


def example_table() -> RoutingTable:
    """`ROUTING` with `FACTS`, serving example.org (address logins, submission
    smtp.example.org:587) and other.test (local-part logins, no submission)."""
    base = with_facts(load(ROUTING), FACTS)
    return table_with(
        domain(
            base,
            "example.org",
            "mail1",
            display_name="Example Org",
            submission=Endpoint("smtp.example.org", 587, ClientTls.STARTTLS),
            line=30,
        ),
        domain(base, "other.test", "mail3", login_name="local_part", line=35),
        base=base,
    )
