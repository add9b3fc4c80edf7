"""The ``throttle:`` section: values, defaults, file:line errors, reload."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refd.auth.imap_backend import ImapBackendSource
from refd.config.loader import (
    DEMO_CONFIG,
    StoreConfig,
    bind_shared_cache,
    load_config,
    load_service,
)
from refd.config.tree import TreeError
from refd.daemon import Daemon
from refd.store import Throttle
from refd.throttle import ThrottleRules
from tests.test_config import write

BASE = """\
routing: routing.yaml
auth:
  source: passwd-file
  passwd_file: users.passwd
listeners:
  - {address: 127.0.0.1, port: 0}
"""
SECRET = "0123456789abcdef0123456789abcdef\n"


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    for name in ("routing.yaml", "users.passwd"):
        shutil.copy(DEMO_CONFIG.parent / name, tmp_path / name)
    (tmp_path / "throttle.secret").write_text(SECRET)
    (tmp_path / "short.secret").write_text("too short\n")
    return tmp_path


def test_defaults(cfgdir: Path) -> None:
    config = load_config(write(cfgdir, BASE))
    assert config.policy.throttle == ThrottleRules(
        forget_after_s=900, network_threshold=10, user_threshold=5, ipv4_prefix=24, ipv6_prefix=64
    )
    assert config.store == StoreConfig()
    assert (config.store.kind, config.store.timeout_s, config.store.on_error) == (
        "local",
        0.2,
        "open",
    )
    # The service serves the config's own policy value, not a copy of its fields.
    assert load_service(config).policy is config.policy


def test_every_key(cfgdir: Path) -> None:
    text = BASE + (
        "throttle:\n"
        "  forget_after_s: 600\n"
        "  network_threshold: 20\n"
        "  user_threshold: 8\n"
        "  ipv4_prefix: 16\n"
        "  ipv6_prefix: 48\n"
        "  max_entries: 5000\n"
        "  store: redis\n"
        "  redis:\n"
        '    url: "redis://:hunter2@10.0.0.5:6379/2"\n'
        "    key_prefix: door-a/\n"
        "  secret_file: throttle.secret\n"
        "  store_timeout_s: 0.5\n"
        "  store_retry_s: 3\n"
        "  on_store_error: closed\n"
    )
    config = load_config(write(cfgdir, text))
    assert config.policy.throttle == ThrottleRules(600, 20, 8, 16, 48)
    store = config.store
    assert (store.kind, store.redis_url, store.key_prefix) == (
        "redis",
        "redis://:hunter2@10.0.0.5:6379/2",
        "door-a/",
    )
    assert store.secret == SECRET.strip().encode()
    assert store.secret_file == cfgdir / "throttle.secret"
    assert (store.timeout_s, store.retry_s, store.on_error, store.max_entries) == (
        0.5,
        3.0,
        "closed",
        5000,
    )
    # Neither the secret nor the Redis password shows in a repr (logs, tracebacks).
    assert "hunter2" not in repr(config) and "0123456789abcdef" not in repr(config)


BAD = [
    ("throttle:\n  bogus: 1\n", ':8: unknown key "bogus" in throttle'),
    ("throttle:\n  store: memcached\n", ":8: store must be one of local, redis"),
    (
        "throttle:\n  store: redis\n  secret_file: throttle.secret\n",
        ':8: throttle: store: redis needs a "redis:" section with its url',
    ),
    (
        "throttle:\n  store: redis\n  redis: {url: 'redis://127.0.0.1'}\n",
        ":8: throttle: store: redis needs secret_file, the HMAC key every door shares",
    ),
    (
        "throttle:\n  redis: {url: 'http://:pw@127.0.0.1'}\n",
        ":8: throttle.redis.url must start with redis://, rediss:// or unix://",
    ),
    ("throttle:\n  secret_file: short.secret\n", ":8: throttle.secret_file "),
    ("throttle:\n  secret_file: missing.secret\n", ":8: throttle.secret_file: cannot read "),
    ("throttle:\n  ipv4_prefix: 33\n", ":8: throttle.ipv4_prefix must be between 8 and 32"),
    ("throttle:\n  ipv6_prefix: 8\n", ":8: throttle.ipv6_prefix must be between 16 and 128"),
    ("throttle:\n  user_threshold: 0\n", ":8: throttle.user_threshold must be between 1"),
    ("throttle:\n  store_timeout_s: 0\n", ":8: throttle.store_timeout_s must be more than 0"),
    ("throttle:\n  forget_after_s: -5\n", ":8: throttle.forget_after_s must be a number"),
    ("throttle:\n  on_store_error: maybe\n", ":8: on_store_error must be one of open, closed"),
]


@pytest.mark.parametrize(("extra", "error"), BAD)
def test_bad_throttle_section(cfgdir: Path, extra: str, error: str) -> None:
    path = write(cfgdir, BASE + extra)
    with pytest.raises(TreeError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}{error}"), str(info.value)
    assert "pw@" not in str(info.value)


def test_short_secret_is_explained(cfgdir: Path) -> None:
    with pytest.raises(TreeError, match="holds 9 bytes; it needs at least 16"):
        load_config(write(cfgdir, BASE + "throttle:\n  secret_file: short.secret\n"))


def test_cache_shared_binds_the_imap_cache_to_the_door_store(cfgdir: Path) -> None:
    text = BASE.replace(
        "source: passwd-file\n  passwd_file: users.passwd",
        "source: imap\n  imap:\n    server: 127.0.0.1:143\n    cache_ttl_s: 30\n"
        "    cache_shared: true",
    )
    config = load_config(write(cfgdir, text))
    assert config.auth.cache_shared
    service = load_service(config)
    assert isinstance(service.auth, ImapBackendSource)
    assert service.auth.shared_cache is None  # `refd check` binds nothing
    throttle = Throttle()
    bind_shared_cache(config, service, throttle)
    assert service.auth.shared_cache is throttle
    unshared = load_config(write(cfgdir, text.replace("cache_shared: true", "cache_shared: false")))
    other = load_service(unshared)
    bind_shared_cache(unshared, other, throttle)
    assert other.auth.shared_cache is None  # type: ignore[attr-defined]


async def test_reload_applies_the_new_section(cfgdir: Path) -> None:
    path = write(cfgdir, BASE)
    config = load_config(path)
    daemon = Daemon(config, load_service(config))
    path.write_text(BASE + "throttle:\n  network_threshold: 3\n  max_entries: 500\n")
    assert await daemon.reload()
    assert daemon.ref.current.policy.throttle.network_threshold == 3
    assert daemon.door.throttle.local.table.max_entries == 500
    path.write_text(BASE + "throttle:\n  store: redis\n")
    assert not await daemon.reload()  # refused whole: the section in service stays
    assert daemon.door.throttle.config.kind == "local"
