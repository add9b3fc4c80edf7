"""JSON Schemas (draft 2020-12) of the daemon config and the routing table.

For editors: with ``# yaml-language-server: $schema=...`` at the top of a
file (the examples in ``config/`` carry it), editors that speak the YAML
language server (VS Code, Neovim, Helix, JetBrains ...) complete keys,
show each key's description and flag mistakes as the admin types.
``refd schema config`` / ``refd schema routing`` print them; ``schema/``
holds the same text, and a test keeps the two equal.

The schemas are built from the loaders' own names -- the enumerations
(`refd.config.TLS_MODES`, `AUTH_SOURCES`, `LoginMode`, ``ID_FIELDS``), the
limits and their ranges, the server-name pattern -- and a test asks the
loaders which keys they accept at every level and compares those with the
schemas' properties, so the two cannot drift apart.

``refd check`` stays the judge: it knows what no schema can say (servers
that exist, regexes that compile, loops, leading zeros, files on disk).
The editor reads YAML 1.2, so ``port: 143`` is a number there and the text
``"143"`` to refd; both are fine.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from refd.auth.imap_backend import ID_FIELDS
from refd.auth.registry import AUTH_SOURCES
from refd.config.loader import (
    _LIMIT_INTS,
    _LIMIT_SECONDS,
    HTTP_LIMIT_INTS,
    HTTP_LIMIT_SECONDS,
    HTTP_TLS_MODES,
    STORE_KINDS,
    TLS_MODES,
)
from refd.limits import HttpLimits, Limits
from refd.routing.load import _LOGIN_NAMES, _SERVER_NAME, FORMAT_VERSION
from refd.routing.model import ClientTls, LoginMode
from refd.runtime import AUTH_PROTOCOLS

__all__ = ["KINDS", "config_schema", "routing_schema", "schema_text"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

Schema = dict[str, Any]


def _str(description: str = "") -> Schema:
    return {"type": "string", **({"description": description} if description else {})}


def _bool(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def _int(lo: int, hi: int, description: str = "") -> Schema:
    out: Schema = {"type": "integer", "minimum": lo, "maximum": hi}
    if description:
        out["description"] = description
    return out


def _seconds(description: str, *, positive: bool = False) -> Schema:
    bound = {"exclusiveMinimum": 0} if positive else {"minimum": 0}
    return {"type": "number", **bound, "description": description}


def _enum(values: tuple[str, ...], description: str) -> Schema:
    return {"enum": list(values), "description": description}


def _str_or_list(description: str, *, min_items: int = 0) -> Schema:
    items: Schema = {"type": "array", "items": {"type": "string"}}
    if min_items:
        items["minItems"] = min_items
    return {"anyOf": [{"type": "string"}, items], "description": description}


def _object(
    properties: dict[str, Schema], description: str, required: tuple[str, ...] = ()
) -> Schema:
    out: Schema = {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        out["required"] = list(required)
    return out


_NETWORKS = "IP networks in CIDR form, e.g. [10.0.0.0/8, 2001:db8::/32]"


def _limits() -> Schema:
    props: dict[str, Schema] = {}
    for f in dataclasses.fields(Limits):
        if f.name in _LIMIT_INTS:
            lo, hi = _LIMIT_INTS[f.name]
            props[f.name] = _int(lo, hi, f"default {f.default}")
        elif f.name in _LIMIT_SECONDS:
            props[f.name] = _seconds(f"seconds, default {f.default:g}", positive=True)
    return _object(props, "Limits; every value has a default")


def _http_limits() -> Schema:
    props: dict[str, Schema] = {}
    for f in dataclasses.fields(HttpLimits):
        if f.name in HTTP_LIMIT_INTS:
            lo, hi = HTTP_LIMIT_INTS[f.name]
            props[f.name] = _int(lo, hi, f"default {f.default}")
        elif f.name in HTTP_LIMIT_SECONDS:
            props[f.name] = _seconds(f"seconds, default {f.default:g}", positive=True)
    return _object(props, "Limits of the HTTP side; every value has a default")


def _autodiscovery() -> Schema:
    listener = _object(
        {
            "name": _str("for logs and metric labels; default httpN"),
            "address": _str("an IP address to listen on (0.0.0.0 or :: for all)"),
            "port": _int(0, 65535, "0: any free port"),
            "tls": _enum(HTTP_TLS_MODES, "none (plain HTTP, port 80) or implicit (HTTPS, 443)"),
            "proxy_protocol": _bool("expect a PROXY v1/v2 header from proxy_networks"),
        },
        "One HTTP listening socket",
        ("address", "port"),
    )
    return _object(
        {
            "listeners": {
                "type": "array",
                "minItems": 1,
                "items": listener,
                "description": "where setup clients connect (autoconfig., autodiscover. names)",
            },
            "per_user": _bool(
                "answer with the user's own server (default true); false: domain-level answers only"
            ),
            "require_auth": {
                "anyOf": [
                    {"enum": list(AUTH_PROTOCOLS)},
                    {"type": "array", "items": {"enum": list(AUTH_PROTOCOLS)}, "uniqueItems": True},
                ],
                "description": "protocols answered only after HTTP Basic credentials; default both",
            },
            "hosts": _str_or_list(
                "Host values accepted besides autoconfig.D, autodiscover.D and D of each "
                "domain, and hostname"
            ),
            "sign_profiles": _bool("sign Apple profiles with the tls: certificate (default false)"),
            "limits": _http_limits(),
        },
        "Account-setup documents (Mozilla autoconfig, Microsoft Autodiscover, Apple "
        "profiles) over HTTP",
        ("listeners",),
    )


def config_schema() -> Schema:
    """The schema of the daemon configuration (``refd.yaml``)."""
    imap = _object(
        {
            "server": _str("host[:port] to check passwords at; default: the user's home server"),
            "tls": _enum(TLS_MODES, "TLS towards the backend"),
            "ca_file": _str("CA certificates (PEM) to verify the backend with"),
            "verify_certificate": _bool("verify the backend's certificate (default true)"),
            "connect_timeout_s": _seconds("seconds, default 5", positive=True),
            "response_timeout_s": _seconds("seconds, default 10", positive=True),
            "max_concurrent_per_backend": _int(1, 10000, "default 16"),
            "cache_ttl_s": _seconds("cache successful checks this long; 0 (default): off"),
            "cache_max_entries": _int(1, 10_000_000, "default 10000"),
            "send_id": {
                "anyOf": [
                    {"type": "boolean"},
                    {
                        "type": "array",
                        "items": {"enum": list(ID_FIELDS)},
                        "uniqueItems": True,
                    },
                ],
                "description": "RFC 2971 ID fields sent before LOGIN: true (all), false, or a list",
            },
            "cache_shared": _bool(
                "keep the positive cache in the throttle's store (default false)"
            ),
        },
        "auth.imap: check passwords with one LOGIN on a backend",
    )
    auth = _object(
        {
            "source": _enum(tuple(AUTH_SOURCES), "where passwords are checked"),
            "passwd_file": _str("a Dovecot passwd-file (source: passwd-file)"),
            "imap": imap,
            "trust_networks": _str_or_list(
                "source: trust: networks whose logins are accepted with any password"
            ),
            "trust_allow_public": _bool("allow trust_networks beyond private address space"),
            "failure_delay_s": _seconds("seconds before a failed login is answered, default 2"),
            "failure_delay_max_s": _seconds("the delay's growth stops here, default 15"),
            "advertise_plain": _bool("advertise AUTH=PLAIN (default false)"),
        },
        "Authentication",
        ("source",),
    )
    auth["allOf"] = [
        {
            "if": {"properties": {"source": {"const": source}}, "required": ["source"]},
            "then": {"required": [needs]},
        }
        for source, needs in (
            ("passwd-file", "passwd_file"),
            ("imap", "imap"),
            ("trust", "trust_networks"),
        )
    ]
    listener = _object(
        {
            "name": _str("for logs and metric labels; default imapN"),
            "address": _str("an IP address to listen on (0.0.0.0 or :: for all)"),
            "port": _int(0, 65535, "0: any free port"),
            "tls": _enum(TLS_MODES, "none, starttls (port 143) or implicit (port 993)"),
            "proxy_protocol": _bool("expect a PROXY v1/v2 header from proxy_networks"),
        },
        "One listening socket",
        ("address", "port"),
    )
    return {
        "$schema": DIALECT,
        "title": "refd daemon configuration",
        "description": "refd.yaml: listeners, TLS, authentication, limits, logging "
        "and where the routing table is. Check with: refd check -c FILE",
        "type": "object",
        "additionalProperties": False,
        "required": ["routing", "auth", "listeners"],
        "properties": {
            "hostname": _str("the name in the greeting; also one of the door's own addresses"),
            "routing": _str("the routing table, relative to this file"),
            "auth": auth,
            "listeners": {
                "type": "array",
                "minItems": 1,
                "items": listener,
                "description": "where clients connect",
            },
            "tls": _object(
                {
                    "cert": _str("certificate followed by its chain (PEM)"),
                    "key": _str("private key (PEM); keep it unreadable to others"),
                },
                "Certificate and key for TLS listeners; reloaded on SIGHUP",
                ("cert", "key"),
            ),
            "trusted_networks": _str_or_list(
                "clients that may log in without TLS; default loopback. " + _NETWORKS
            ),
            "proxy_networks": _str_or_list(
                "load balancers allowed to send PROXY headers. " + _NETWORKS
            ),
            "limits": _limits(),
            "log": _object(
                {
                    "level": _enum(("debug", "info", "warning", "error"), "default info"),
                    "format": _enum(("text", "json"), "default text"),
                },
                "Logging",
            ),
            "drain": _bool("answer new connections with * BYE [REFERRAL sibling]"),
            "sibling": _str("another door, host[:port], for drain and shutdown"),
            "shutdown_grace_s": _seconds("SIGTERM: how long busy sessions may finish"),
            "metrics": _object(
                {
                    "address": _str("an IP address"),
                    "port": _int(0, 65535),
                },
                "Prometheus /metrics, /healthz and /readyz",
                ("address", "port"),
            ),
            "throttle": _object(
                {
                    "forget_after_s": _seconds(
                        "a counter is forgotten this long after its last failure, default 900",
                        positive=True,
                    ),
                    "network_threshold": _int(
                        1, 1_000_000, "failures of a network before it adds delay, default 10"
                    ),
                    "user_threshold": _int(
                        1, 1_000_000, "failures of a user name before it adds delay, default 5"
                    ),
                    "ipv4_prefix": _int(8, 32, "what an IPv4 network is, default 24"),
                    "ipv6_prefix": _int(16, 128, "what an IPv6 network is, default 64"),
                    "max_entries": _int(100, 100_000_000, "counters kept per process"),
                    "store": _enum(STORE_KINDS, "where the counters live, default local"),
                    "redis": _object(
                        {
                            "url": _str("redis://host:6379/0, rediss://... or unix:///path"),
                            "key_prefix": _str("default refd:"),
                        },
                        "The Redis or Valkey server every door shares",
                        ("url",),
                    ),
                    "secret_file": _str("the HMAC key every door shares; required with redis"),
                    "store_timeout_s": _seconds("default 0.2", positive=True),
                    "store_retry_s": _seconds("default 1", positive=True),
                    "on_store_error": _enum(
                        ("open", "closed"), "open (default): count locally; closed: refuse"
                    ),
                },
                "Login throttle: counters per address, network and user name",
            ),
            "workers": _int(1, 256, "worker processes sharing the ports; one per core"),
            "watch_interval_s": _seconds("> 0: poll the files and reload on change"),
            "autodiscovery": _autodiscovery(),
        },
    }


_TLS = tuple(mode.value for mode in ClientTls)
# A DNS name of letters, digits and "-" labels (any case: the loader lower-cases it).
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_NAME = rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$"


def _submission(description: str) -> Schema:
    endpoint = _object(
        {
            "host": _str("DNS name or IP address"),
            "port": _int(1, 65535, "default 587"),
            "tls": _enum(_TLS, "default implicit on port 465, else starttls"),
        },
        "An SMTP submission endpoint",
        ("host",),
    )
    return {
        "anyOf": [_str("host[:port]; port default 587, TLS implicit on 465"), endpoint],
        "description": description,
    }


def routing_schema() -> Schema:
    """The schema of the routing table (``routing.yaml``)."""
    server = _object(
        {
            "host": _str("DNS name, IPv4, or IPv6 (::1 or [::1])"),
            "port": _int(1, 65535, "default 143"),
            "replicas": _str_or_list("servers holding the same mailboxes, tried after this one"),
            "imaps_port": _int(1, 65535, "the server's implicit-TLS port (993), if any"),
            "client_tls": _enum(
                _TLS,
                "what setup documents offer: implicit (imaps_port; default with it), "
                "starttls (port; default without), none (plaintext: demo and tests only)",
            ),
            "submission": _submission("SMTP submission for this server's users"),
        },
        "A backend IMAP server; port is what referral URLs name (STARTTLS, not 993)",
        ("host",),
    )
    domain = _object(
        {
            "login_name": _enum(_LOGIN_NAMES, "what users log in with; default address"),
            "display_name": _str("the account's name in clients; default the domain"),
            "server": _str(
                'the domain-level answer\'s server; default: the users: rule glob "*@DOMAIN", '
                "else the default rule's"
            ),
            "submission": _submission("SMTP submission for the domain"),
        },
        "A mail domain served by account-setup documents and refd dns",
    )
    selectors = ("user", "glob", "regex", "default")
    user_rule = _object(
        {
            "user": {"type": ["string", "integer"], "description": "an exact user name"},
            "glob": _str("* any characters, ? one, [abc] / [!abc] a class"),
            "regex": _str("a Python regular expression over the whole (lower-cased) name"),
            "default": {"const": True, "description": "the catch-all; the last rule"},
            "server": _str("the user's home server (a name under servers)"),
            "login": _enum(
                tuple(mode.value for mode in LoginMode),
                "refer (default): NO [REFERRAL]; accept: OK [REFERRAL]; stay: plain OK",
            ),
        },
        "A user rule: exactly one of user, glob, regex, default; then server",
        ("server",),
    )
    user_rule["oneOf"] = [{"required": [s]} for s in selectors]
    mailbox_rule = _object(
        {
            "match": _str("* any characters, % any but the delimiter; the whole name"),
            "servers": _str_or_list("one or more server names", min_items=1),
            "rename": _str("the name on the remote server, same wildcards"),
        },
        "A mailbox rule",
        ("match", "servers"),
    )
    return {
        "$schema": DIALECT,
        "title": "refd routing table",
        "description": "routing.yaml: servers, user rules, mailbox rules. "
        "Check with: refd check --routing FILE; try with: refd explain -r FILE USER",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "servers"],
        "properties": {
            "version": {"const": FORMAT_VERSION, "description": "the format version"},
            "delimiter": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1,
                "description": 'the hierarchy delimiter, default "/"',
            },
            "self": _str_or_list("this door's own host[:port] names: never a referral target"),
            "servers": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": f"^{_SERVER_NAME.pattern}$"},
                "additionalProperties": server,
                "description": "name -> backend",
            },
            "user_map": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "object", "additionalProperties": {"type": "string"}},
                ],
                "description": "a USER SERVER file, or an inline user: server mapping",
            },
            "users": {
                "type": "array",
                "items": user_rule,
                "description": "first match wins",
            },
            "mailboxes": {
                "type": "array",
                "items": mailbox_rule,
                "description": "first match wins",
            },
            "published": {
                "type": "array",
                "items": {"type": "string"},
                "uniqueItems": True,
                "description": "listed by RLIST / RLSUB after INBOX",
            },
            "domains": {
                "type": "object",
                "propertyNames": {"pattern": _DOMAIN_NAME},
                "additionalProperties": domain,
                "description": "mail domain -> its account-setup facts",
            },
            "namespaces": _object(
                {
                    kind: _str_or_list(f"{kind} namespace prefixes")
                    for kind in ("personal", "other", "shared")
                },
                "The NAMESPACE answer (RFC 2342)",
            ),
        },
    }


KINDS = {"config": config_schema, "routing": routing_schema}


def schema_text(kind: str) -> str:
    """The schema of ``kind`` (``config`` or ``routing``) as the JSON text printed."""
    return json.dumps(KINDS[kind](), indent=2, ensure_ascii=False) + "\n"
