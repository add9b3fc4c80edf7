"""The one interface every authentication source implements.

The session asks an `AuthSource` to check an `AuthRequest` and gets back an
`AuthResult`. The result never says *why* to the client: RFC 2221 §6 wants a
failed login answered the same way whatever the cause, so `reason` is for the
logs only. `UNAVAILABLE` means "could not decide" (a backend that did not
answer), which the session answers differently from a wrong password.

Nothing here holds a password longer than a request: `AuthRequest` hides it
from `repr`, and no `reason` ever contains it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from refd.routing.model import Home


class AuthStatus(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class DirectoryOp:
    """One request a source made to a directory or an auth service while deciding.

    The door counts these in ``refd_directory_requests_total`` and its
    latency histogram (`refd.login`). ``operation`` and ``result`` are from
    small fixed sets the source documents (e.g. search, bind, compare,
    starttls, http; ok, failure, error, timeout), so the labels stay bounded.
    """

    operation: str
    result: str
    seconds: float


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    # The user name as authenticated: the canonical form used for routing.
    user: str
    # For logs only, never shown to the client and never containing the password.
    reason: str
    # The home server, when the source names one (a directory's mailHost, an
    # auth service's Auth-Server): routed by the table (RoutingTable.route_user).
    home: Home | None = None
    # The directory or service requests made to decide, for the metrics.
    ops: tuple[DirectoryOp, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthRequest:
    user: str
    password: str = field(repr=False)
    # For logs and for later per-address policies.
    client_address: str
    # Where the client is and what it connected to, when known (after a
    # PROXY header, the header's endpoints); the imap source can tell the
    # backend (RFC 2971 ID, Dovecot's x-originating-* and x-connected-*).
    client_port: int | None = None
    local_address: str | None = None
    local_port: int | None = None
    # The door's connection id, to match the backend's log to the door's.
    session_id: str | None = None


class AuthSource(Protocol):
    """Something that can say whether a user name and password belong together.

    `name` is read-only here so that frozen dataclasses can implement it too.
    """

    @property
    def name(self) -> str:
        """Label for metrics and logs, e.g. "passwd-file"."""
        ...

    async def authenticate(self, request: AuthRequest) -> AuthResult: ...
