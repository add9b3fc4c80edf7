"""The imap source's positive cache in Redis: one door's check serves another.

Two sources (two doors) check passwords on one real Dovecot; their caches
live in one real Redis through each door's throttle (``cache_shared``).
"""

from __future__ import annotations

import pytest
import trio

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.imap_backend import ImapBackendSource
from refd.config.loader import StoreConfig
from refd.metrics import Metrics
from refd.store import Throttle

from .conftest import USERS
from .dovecot import DovecotInstance
from .redis import RedisInstance

pytestmark = pytest.mark.interop


async def check(source: ImapBackendSource, user: str, password: str) -> AuthResult:
    return await source.authenticate(AuthRequest(user, password, client_address="192.0.2.7"))


async def test_one_doors_success_is_cached_for_every_door(
    nursery: trio.Nursery, dovecot: DovecotInstance, redis_server: RedisInstance
) -> None:
    # A generous store timeout: the CI host once took over the default 0.2 s
    # to open a loopback connection, and this test is about the cache.
    config = StoreConfig(kind="redis", redis_url=redis_server.url, secret=b"s" * 32, timeout_s=2.0)
    sources = []
    for _ in range(2):
        throttle = Throttle(Metrics(), config)
        await nursery.start(throttle.run)
        sources.append(
            ImapBackendSource(
                dovecot.address,
                cache_ttl_s=60,
                connect_timeout_s=0.5,
                response_timeout_s=1.0,
                shared_cache=throttle,
            )
        )
    one, two = sources
    assert await check(one, "alice", USERS["alice"]) == AuthResult(
        AuthStatus.SUCCESS, "alice", "backend accepted credentials"
    )
    assert (await check(one, "bob", "wrong")).status is AuthStatus.FAILURE
    await trio.to_thread.run_sync(dovecot.stop)  # the Redis clients' tasks keep running
    cached = await check(two, "alice", USERS["alice"])
    assert (cached.status, cached.reason.startswith("cached success")) == (AuthStatus.SUCCESS, True)
    # Never a failure, never another password.
    assert (await check(two, "bob", "wrong")).status is AuthStatus.UNAVAILABLE
    assert (await check(two, "alice", "other")).status is AuthStatus.UNAVAILABLE
    (key,) = redis_server.cli("--scan").split()
    assert key.startswith("refd:c:")
    assert 0 < int(redis_server.cli("PTTL", key)) <= 60_000
    assert USERS["alice"] not in redis_server.cli("GET", key) + key
