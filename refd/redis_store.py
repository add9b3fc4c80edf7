"""The throttle store on Redis or Valkey, through coredis (anyio: runs on trio).

Each multi-key update is one Lua script, so it is atomic however many doors
write at once: ``add`` increments every key and renews its expiry;
``settle`` reads the counts and takes the pair's failures off the others.
A key that has expired is never written by ``settle`` (``DECRBY`` on a
missing key would create one without expiry), so every key this store
writes expires by itself.  The keys are ``refd.store.Keyer`` HMACs.

Only the primary of a single Redis or Valkey is supported: the four keys of
one login hash to different Redis Cluster slots.  coredis is imported only
when ``store: redis`` is configured.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import coredis
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from refd.store import StoreError, as_counts

__all__ = ["RedisStore", "describe_url"]

log = logging.getLogger("refd.store")

# coredis logs every failed connection attempt with a traceback; refd.store
# logs an outage once and its end once, and counts the rest.
logging.getLogger("coredis").setLevel(logging.CRITICAL)

# KEYS: counters.  ARGV[1]: time to live in ms.  Returns the new counts.
_ADD = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[1])
end
return out
"""

# KEYS: address, network, user, pair.  Returns the counts found; then the
# pair's count is taken off the other live keys and the pair is deleted.
_SETTLE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = tonumber(redis.call('GET', key) or '0')
end
local n = out[#KEYS]
if n > 0 then
  for i = 1, #KEYS - 1 do
    if out[i] > 0 and out[i] <= n then
      redis.call('DEL', KEYS[i])
    elseif out[i] > n then
      redis.call('DECRBY', KEYS[i], n)
    end
  end
  redis.call('DEL', KEYS[#KEYS])
end
return out
"""


def describe_url(url: str) -> str:
    """Where a Redis URL points, without its password (for logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}"


class RedisStore:
    """Counters and values in Redis; every call raises StoreError on trouble."""

    name = "redis"

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client: coredis.Redis[bytes] | None = None
        self._add: Any = None
        self._settle: Any = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the client (and its connection pool) open until cancelled.

        Entering does not connect: a Redis that is down now is simply an
        error on each call until it is back.
        """
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            connect_timeout=self.timeout_s,
            stream_timeout=self.timeout_s,
            # A retried script could count one failure twice: no retries.
            retry_policy=NoRetryPolicy(),
        )
        log.info("throttle store redis at %s", describe_url(self.url))
        async with client:
            self._add = client.register_script(_ADD)
            self._settle = client.register_script(_SETTLE)
            self._client = client
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._client = None

    async def _do(self, call: Callable[[coredis.Redis[bytes]], Awaitable[Any]]) -> Any:
        client = self._client
        if client is None:
            raise StoreError("not connected")
        try:
            return await call(client)
        except (RedisError, OSError) as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from None

    async def probe(self) -> None:
        """PING, and load both scripts (a restarted Redis has none)."""
        await self._do(lambda c: c.ping())
        await self._do(lambda c: c.script_load(_ADD))
        await self._do(lambda c: c.script_load(_SETTLE))

    async def add(self, keys: Sequence[str], ttl_s: float) -> tuple[int, ...]:
        ms = max(1, int(ttl_s * 1000))
        out = await self._do(lambda c: self._add(keys=list(keys), args=[ms]))
        return as_counts(out, len(keys))

    async def settle(self, keys: Sequence[str]) -> tuple[int, ...]:
        out = await self._do(lambda c: self._settle(keys=list(keys)))
        return as_counts(out, len(keys))

    async def get(self, key: str) -> bytes | None:
        value = await self._do(lambda c: c.get(key))
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        ms = max(1, int(ttl_s * 1000))
        await self._do(lambda c: c.set(key, value, px=ms))
