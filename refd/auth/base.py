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
    # A failure is answered no sooner than this (an auth service's Auth-Wait);
    # the door bounds it by auth.failure_delay_max_s (refd.login).
    wait_s: float = 0.0

    def __init__(
        self,
        status: AuthStatus,
        user: str,
        reason: str,
        home: Home | None = None,
        ops: tuple[DirectoryOp, ...] = (),
        wait_s: float = 0.0,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "home", home)
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "wait_s", wait_s)


@dataclass(frozen=True, slots=True)
class DirectoryRoute:
    """What a directory says about a user without a password (``refd explain``).

    SUCCESS: one usable entry (``user`` its own name for the user, ``home``
    the home server it names, None if none); FAILURE: no usable entry, or
    several; UNAVAILABLE: the directory did not answer. ``reason`` names the
    entry (e.g. ``entry uid=alice,ou=people,dc=example,dc=org``) or why not;
    ``cached``: from the source's route cache, no request made.
    """

    status: AuthStatus
    user: str
    home: Home | None
    reason: str
    cached: bool = False
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
    # Which login attempt of the connection this is (1 for the first), and
    # whether the client is on TLS: an auth service may want to know.
    attempt: int = 1
    tls: bool = False

    def __init__(
        self,
        user: str,
        password: str,
        client_address: str,
        client_port: int | None = None,
        local_address: str | None = None,
        local_port: int | None = None,
        session_id: str | None = None,
        attempt: int = 1,
        tls: bool = False,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "client_address", client_address)
        object.__setattr__(self, "client_port", client_port)
        object.__setattr__(self, "local_address", local_address)
        object.__setattr__(self, "local_port", local_port)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "attempt", attempt)
        object.__setattr__(self, "tls", tls)


def redacted(result: AuthResult, *secrets: str) -> AuthResult:
    """Last guard: a reason that somehow holds a secret (the password) is withheld whole."""
    if any(secret and secret in result.reason for secret in secrets):
        reason = "reason withheld: it contained the password"
        return AuthResult(
            result.status, result.user, reason, result.home, result.ops, result.wait_s
        )
    return result


class AuthSource(Protocol):
    """Something that can say whether a user name and password belong together.

    `name` is read-only here so that frozen dataclasses can implement it too.
    """

    @property
    def name(self) -> str:
        """Label for metrics and logs, e.g. "passwd-file"."""
        ...

    async def authenticate(self, request: AuthRequest) -> AuthResult: ...
