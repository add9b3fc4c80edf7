"""Abuse limits that span connections: connection counts per address.

These are plain objects (no trio, no sockets), owned by the server and
shared by its sessions; the login throttle is ``refd.throttle`` (policy)
and ``refd.store`` (where its counters live).  The numbers they enforce come
from the config in service, so a reload changes them for the next
connection or login.  Every refusal is counted by limit name in the
``refd_limit_hits_total`` metric (``refd.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

from refd.protocol.connection import ProtocolLimits

__all__ = ["ConnectionTracker", "HttpLimits", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits(ProtocolLimits):
    """Named limits; the defaults are what a hardened daemon ships with.

    The protocol core's limits (line, literal and command sizes, bad
    commands, LIST patterns) are inherited from
    :class:`~refd.protocol.connection.ProtocolLimits`: a ``Limits`` is what
    the :class:`~refd.protocol.connection.Connection` gets.
    """

    max_connections: int = 10000
    max_connections_per_address: int = 50
    max_auth_in_flight: int = 256
    #: longer passwords fail like wrong ones, unhashed.  511 is the longest
    #: that libxcrypt's crypt(3) takes (CRYPT_MAX_PASSPHRASE_SIZE is 512,
    #: NUL included), so SHA-crypt never leaves C; Dovecot's own cap is 4096.
    max_password_bytes: int = 511
    #: patterns x published names one LIST may test; more: NO [LIMIT] before
    #: any work (a pattern test costs about a microsecond)
    max_list_tests: int = 250_000
    preauth_idle_timeout_s: float = 60.0
    # RFC 9051 §5.4: the autologout timer is at least 30 minutes.
    idle_timeout_s: float = 1800.0
    #: from connect to a successful login, however busy the client keeps it
    #: (a client dribbling a byte at a time never goes idle)
    login_timeout_s: float = 180.0
    #: from a command's first byte to its last
    command_timeout_s: float = 60.0
    write_timeout_s: float = 60.0
    tls_handshake_timeout_s: float = 10.0
    proxy_header_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The public HTTP side's limits (``autodiscovery.limits``).

    A setup request is a few hundred bytes and one round trip, so the caps
    are small: a client that sends more, or slower, is answered 431, 413 or
    408 and its connection closed.  The TLS handshake, PROXY header and
    write deadlines are the door's own (:class:`Limits`).
    """

    #: the request line and headers together (h11's max_incomplete_event_size)
    max_header_bytes: int = 8192
    #: an Autodiscover request is about 400 bytes
    max_body_bytes: int = 16384
    #: from a request's first byte to its last
    request_timeout_s: float = 10.0
    #: a kept-alive connection waiting for its next request (or its first)
    idle_timeout_s: float = 15.0
    max_connections: int = 1000
    max_connections_per_address: int = 20
    max_requests_per_connection: int = 100


class ConnectionTracker:
    """Open connections, in total and per client address."""

    def __init__(self) -> None:
        self.total = 0
        self.per_address: dict[str, int] = {}

    def try_open(self, address: str, *, max_total: int, max_per_address: int) -> str | None:
        """Count a new connection, or name the limit that refuses it."""
        if self.total >= max_total:
            return "connections_total"
        if self.per_address.get(address, 0) >= max_per_address:
            return "connections_per_address"
        self.total += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        return None

    def close(self, address: str) -> None:
        self.total -= 1
        left = self.per_address[address] - 1
        if left:
            self.per_address[address] = left
        else:
            del self.per_address[address]
