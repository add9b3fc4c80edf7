"""The bulk user map as it is kept in memory: 64 small dicts instead of one big one.

A table's ``user_map`` (normalised user name -> `Server`) can hold a million
entries, and it is built in a thread while the event loop keeps serving. One
dict of a million keys costs the event loop three single C calls that hold
the GIL: its last resize while it is filled (24-68 ms measured for 1M keys
on a loaded 2-core VM), a full garbage-collector pass over it (~16 ms), and
its deallocation when the old table is dropped (10-25 ms). So `UserMap`:

- spreads the entries over `SHARDS` dicts picked by the key's hash, so no
  resize copies more than ~1/64 of the entries (the worst insert of 1M:
  59 -> 4-6 ms CPU time on that VM, where a vCPU's stolen time counts too);
- stores each server's *name* (one shared string per server), not the
  `Server`: a dict holding only strings is never tracked by the garbage
  collector, so a full collection does not walk it;
- can be freed one shard at a time once it is out of service (the daemon
  does that in a thread: `refd.daemon.Retirer`), 64 short calls instead of
  one long one.

Picking the shard (``hash(key) >> SHARD_SHIFT``) costs a lookup ~0.12 us.

Reading it is the `Mapping` interface (values are the `Server` objects of
``servers``); `RoutingTable.route_user` makes `server_name`'s lookup itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping

from refd.routing.model import Server

__all__ = ["SHARDS", "SHARD_SHIFT", "UserMap"]

#: The number of dicts; a power of two (a shard is picked by the hash's top bits).
SHARDS = 64
# hash() is a signed number of hash_info.width bits; its top 6 bits, taken
# with an arithmetic shift, give -32..31, and a tuple index in that range
# reaches all 64 shards. The top bits, not the bottom ones: a dict picks a
# key's slot from the bottom bits, which would then be equal in a shard.
SHARD_SHIFT = sys.hash_info.width - (SHARDS.bit_length() - 1)


class UserMap(Mapping[str, Server]):
    """Normalised user name -> `Server`, in `SHARDS` dicts of name -> server name.

    Built empty for a set of ``servers`` and filled with `add` by the loader;
    after that it is a value and does not change. `on` shares ``shards``
    between maps: the tuple is the map's storage, whoever holds it.
    """

    __slots__ = ("_servers", "shards")

    def __init__(self, servers: Mapping[str, Server]) -> None:
        self._servers = servers
        #: user -> server name; the shard of a key is ``hash(key) >> SHARD_SHIFT``
        self.shards: tuple[dict[str, str], ...] = tuple({} for _ in range(SHARDS))

    @classmethod
    def of(cls, entries: Mapping[str, Server], servers: Mapping[str, Server]) -> UserMap:
        """A map of ``entries`` (keys already normalised) over ``servers``."""
        found = cls(servers)
        for key, server in entries.items():
            found.add(key, server)
        return found

    def on(self, servers: Mapping[str, Server]) -> UserMap:
        """The same entries, read as ``servers`` (same names; shares the dicts)."""
        if servers is self._servers:
            return self
        found = UserMap(servers)
        found.shards = self.shards
        return found

    def add(self, key: str, server: Server) -> bool:
        """Enter ``key`` -> ``server``; False (and no change) when ``key`` is in already."""
        shard = self.shards[hash(key) >> SHARD_SHIFT]
        if key in shard:
            return False
        shard[key] = server.name  # the Server's own string: shared by all its users
        return True

    def server_name(self, key: str) -> str | None:
        """The name of ``key``'s server, or None: the lookup `route_user` makes."""
        return self.shards[hash(key) >> SHARD_SHIFT].get(key)

    # -- Mapping ---------------------------------------------------------------

    def __getitem__(self, key: str) -> Server:
        name = self.server_name(key)
        if name is None:
            raise KeyError(key)
        return self._servers[name]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.server_name(key) is not None

    def __iter__(self) -> Iterator[str]:
        for shard in self.shards:
            yield from shard

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def __repr__(self) -> str:
        return f"<UserMap of {len(self)} users>"
