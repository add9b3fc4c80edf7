"""Listening sockets, bound before anything is served.

``refd serve`` binds every IMAP listener, every autodiscovery (HTTP)
listener and the metrics endpoint here, with
plain sockets, before trio (or any worker) starts: a port that cannot be had
is one `BindError` whose text names the address and the reason, e.g.
``cannot listen on 127.0.0.1:143 (listener imap): Address already in use``,
and the command exits 1.

No socket sets ``SO_REUSEPORT``, so a port that another refd, or any other
program, already serves is refused ("Address already in use"), as Dovecot
and nginx refuse it.  With ``workers: N`` the supervisor binds once and
every worker inherits the same listening sockets (their file descriptors):
the workers of one supervisor share a port, through one accept queue, and
nobody else can join it.  A worker that dies loses only the connections it
had accepted; the ones still queued are taken by the others.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refd.config.loader import DaemonConfig

__all__ = ["BindError", "Bound", "bind_all", "bind_tcp"]

#: "as large as possible": the kernel clamps it to net.core.somaxconn (as trio does).
_BACKLOG = 0xFFFF


class BindError(Exception):
    """A listening socket could not be had: address, what it is for, and why."""


def authority(address: str, port: int) -> str:
    """``address:port``, IPv6 in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def bind_tcp(address: str, port: int, what: str) -> socket.socket:
    """A listening TCP socket on ``address:port`` (port 0: any free port).

    ``SO_REUSEADDR`` lets a restart bind while old connections linger in
    TIME_WAIT; it does not let two sockets listen on one port.  An IPv6
    socket is IPv6 only, so ``::`` and ``0.0.0.0`` are two listeners.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {authority(address, port)} ({what}): {reason}") from None
    return sock


@dataclass
class Bound:
    """The sockets of one door: IMAP and HTTP listeners by name, and metrics."""

    listeners: dict[str, socket.socket] = field(default_factory=dict)
    metrics: socket.socket | None = None
    #: the autodiscovery listeners (names are unique across both kinds)
    http: dict[str, socket.socket] = field(default_factory=dict)

    def close_listeners(self) -> None:
        for sock in [*self.listeners.values(), *self.http.values()]:
            sock.close()

    def close(self) -> None:
        self.close_listeners()
        if self.metrics is not None:
            self.metrics.close()

    def ports(self) -> Mapping[str, int]:
        """The bound port of each listener, IMAP and HTTP (port 0 in the config resolved)."""
        every = {**self.listeners, **self.http}
        return {name: int(sock.getsockname()[1]) for name, sock in every.items()}


def bind_all(config: DaemonConfig, *, metrics: bool = True) -> Bound:
    """Bind every listener of ``config`` (and its metrics endpoint); all or none."""
    bound = Bound()
    try:
        for lc in config.listeners:
            bound.listeners[lc.name] = bind_tcp(lc.address, lc.port, f"listener {lc.name}")
        for lc in config.http_listeners:
            bound.http[lc.name] = bind_tcp(lc.address, lc.port, f"listener {lc.name}")
        if metrics and config.metrics_address is not None:
            host, port = config.metrics_address
            bound.metrics = bind_tcp(host, port, "metrics")
    except BindError:
        bound.close()
        raise
    return bound
