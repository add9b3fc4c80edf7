"""``refd config``: the daemon configuration as the daemon sees it.

What ``doveconf -n`` and ``nginx -T`` do for their daemons: the loaded
`DaemonConfig` written back as YAML in the file's own layout, with every
default filled in and every path absolute, so the admin sees the values in
force, not the values written.  The output is itself a valid config: a test
loads it back and gets the same configuration, and checks it against the
schema (`refd.schema`) and for every key the loader knows.

Secrets are redacted: a value under a key that names one (``password``,
``secret``, ``token`` ...) and the password in a URL's user-info are printed
as ``<redacted>``.  refd's own keys hold no secret today (the passwd-file's
hashes stay in their file); the rule is here so a key that does cannot leak.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from refd.auth.imap_backend import ImapAuthConfig
from refd.auth.passwd_file import PasswdFileConfig
from refd.auth.trust import TrustConfig, public_networks
from refd.config.loader import DaemonConfig, ListenerConfig
from refd.config.yamltree import dump_yaml
from refd.listen import authority

__all__ = ["REDACTED", "effective_config", "effective_text", "redact"]

REDACTED = "<redacted>"
#: a key that holds a secret ends in one of these words (max_password_bytes does not)
_SECRET_KEY = re.compile(r"(?:^|_)(?:password|passwd|secret|token|credentials?|api_key)$", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*(?P<tail>@)", re.I)


def redact(value: Any, key: str = "") -> Any:
    """``value`` with secrets replaced by `REDACTED` (recursively)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<tail>", value)
    return value


def _imap(ia: ImapAuthConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ia.server is not None:  # else: the user's home server
        out["server"] = authority(*ia.server)
    out["tls"] = ia.tls
    if ia.ca_file is not None:
        out["ca_file"] = str(ia.ca_file)
    out |= {
        "verify_certificate": ia.verify_certificate,
        "connect_timeout_s": ia.connect_timeout_s,
        "response_timeout_s": ia.response_timeout_s,
        "max_concurrent_per_backend": ia.max_concurrent_per_backend,
        "cache_ttl_s": ia.cache_ttl_s,
        "cache_max_entries": ia.cache_max_entries,
        "send_id": list(ia.send_id),
        "cache_shared": ia.cache_shared,
    }
    return out


def _throttle(config: DaemonConfig) -> dict[str, Any]:
    store = config.store
    out: dict[str, Any] = dataclasses.asdict(config.policy.throttle)
    out |= {"max_entries": store.max_entries, "store": store.kind}
    if store.redis_url:
        # The URL may carry a password: redact() masks it.
        out["redis"] = {"url": store.redis_url, "key_prefix": store.key_prefix}
    if store.secret_file is not None:
        out["secret_file"] = str(store.secret_file)
    out |= {
        "store_timeout_s": store.timeout_s,
        "store_retry_s": store.retry_s,
        "on_store_error": store.on_error,
    }
    return out


def _listener(lc: ListenerConfig) -> dict[str, Any]:
    return {
        "name": lc.name,
        "address": lc.address,
        "port": lc.port,
        "tls": lc.tls,
        "proxy_protocol": lc.proxy_protocol,
    }


def effective_config(config: DaemonConfig) -> dict[str, Any]:
    """The configuration in force, in the file's layout, defaults included."""
    auth: dict[str, Any] = {"source": config.auth_source}
    if isinstance(config.auth, PasswdFileConfig):
        auth["passwd_file"] = str(config.auth.path)
    if isinstance(config.auth, ImapAuthConfig):
        auth["imap"] = _imap(config.auth)
    if isinstance(config.auth, TrustConfig):
        auth["trust_networks"] = [str(n) for n in config.auth.networks]
        # It loaded, so public networks were allowed explicitly.
        auth["trust_allow_public"] = bool(public_networks(config.auth.networks))
    auth |= {
        "failure_delay_s": config.policy.auth_failure_delay_s,
        "failure_delay_max_s": config.policy.auth_failure_delay_max_s,
        "advertise_plain": config.policy.advertise_auth_plain,
    }
    out: dict[str, Any] = {
        "hostname": config.policy.hostname,
        "routing": str(config.routing_file),
        "auth": auth,
        "listeners": [_listener(lc) for lc in config.listeners],
    }
    if config.tls_cert is not None and config.tls_key is not None:
        out["tls"] = {"cert": str(config.tls_cert), "key": str(config.tls_key)}
    out["trusted_networks"] = [str(n) for n in config.policy.trusted_networks]
    out["proxy_networks"] = [str(n) for n in config.proxy_networks]
    out["limits"] = dataclasses.asdict(config.limits)
    out["throttle"] = _throttle(config)
    out["log"] = {"level": config.log_level, "format": config.log_format}
    out["drain"] = config.policy.drain
    if config.policy.sibling is not None:
        out["sibling"] = authority(*config.policy.sibling)
    out["shutdown_grace_s"] = config.shutdown_grace_s
    if config.metrics_address is not None:
        host, port = config.metrics_address
        out["metrics"] = {"address": host, "port": port}
    out["workers"] = config.workers
    out["watch_interval_s"] = config.watch_interval_s
    if config.autodiscovery is not None:
        policy = config.autodiscovery.policy
        out["autodiscovery"] = {
            "listeners": [_listener(lc) for lc in config.autodiscovery.listeners],
            "per_user": policy.per_user,
            "require_auth": list(policy.require_auth),
            "hosts": list(policy.hosts),
            "sign_profiles": policy.sign_profiles,
            "limits": dataclasses.asdict(policy.limits),
        }
    return redact(out)  # type: ignore[no-any-return]


def effective_text(config: DaemonConfig) -> str:
    """`effective_config` as YAML, with a header naming the file."""
    head = (
        f"# refd effective configuration of {config.file}\n"
        "# (every default filled in, paths absolute, secrets redacted)\n"
    )
    return head + dump_yaml(effective_config(config))
