"""One password check for every door: IMAP LOGIN, AUTHENTICATE and HTTP Basic.

`check_login` asks the authentication source in service and applies the
door's rules around it, so a password guessed over HTTP (Autodiscover, an
Apple profile) costs exactly what one guessed over IMAP costs:

- ``limits.max_auth_in_flight`` bounds the checks in progress;
- a password over ``limits.max_password_bytes`` is never hashed and fails
  like a wrong one;
- one answer, one delay for an unknown user and a wrong password (RFC 2221
  §6), counted from the start of the check, so the moment of the answer
  does not depend on what the check cost;
- the delay grows with recent failures of the address, its network and the
  user name (`refd.throttle`); a success waits what the address and
  network have earned, so hanging up early tells a guesser nothing; trusted
  networks only ever wait the base delay;
- a failure the source asks to answer later (``AuthResult.wait_s``, an
  auth service's ``Auth-Wait``) waits at least that long, up to
  ``auth.failure_delay_max_s`` (rule ``auth_wait`` in the log);
- one ``auth`` log line per check, never with the password.

The caller turns the `LoginCheck` into its protocol's answer and sends it
after ``delay_s``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.door import DoorState
from refd.logs import log_event
from refd.routing.model import Home
from refd.runtime import ClientInfo, Service
from refd.store import Verdict
from refd.throttle import Counts, Delay

__all__ = ["LoginCheck", "Outcome", "ask_source", "auth_request", "check_login"]

log = logging.getLogger("refd.session")


class Outcome(enum.Enum):
    """What a password check decided, as the door answers it."""

    OK = "ok"  # the source said yes: route the user
    FAILED = "failed"  # wrong password, unknown user, too long: one answer for all
    UNAVAILABLE = "unavailable"  # the source could not decide
    BUSY = "busy"  # limits.max_auth_in_flight: not checked at all
    REFUSED = "refused"  # throttle store down with on_store_error: closed


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """The verdict, the name as authenticated, and how long to wait before answering."""

    outcome: Outcome
    user: str
    delay_s: float = 0.0
    #: the home server the source named, if any (`refd.routing.model.Home`)
    home: Home | None = None

    def __init__(
        self,
        outcome: Outcome,
        user: str,
        delay_s: float = 0.0,
        home: Home | None = None,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "delay_s", delay_s)
        object.__setattr__(self, "home", home)


def auth_request(client: ClientInfo, user: str, password: str, attempt: int = 1) -> AuthRequest:
    """The request the source sees for ``client``'s ``attempt``-th login."""
    return AuthRequest(
        user=user,
        password=password,
        client_address=client.address,
        client_port=client.port,
        local_address=client.local_address,
        local_port=client.local_port,
        session_id=client.conn_id,
        attempt=attempt,
        tls=client.tls,
    )


#: a success from a trusted network: no delay, nothing counted (one value,
#: not three built per login)
_TRUSTED_SUCCESS = Verdict(Delay(0.0, "trusted"), Counts())


async def check_login(
    service: Service,
    door: DoorState,
    client: ClientInfo,
    user: str,
    password: str,
    limit_hit: Callable[[str, str], None],
    attempt: int = 1,
) -> LoginCheck:
    """Check ``user``/``password`` for ``client`` under the door's rules.

    ``service`` is the caller's one snapshot for the whole attempt;
    ``limit_hit(name, reason)`` reports a limit the way the caller's
    connection does (once per connection in the log); ``attempt`` counts
    the connection's logins (1 for the first).
    """
    limits = service.limits
    if door.auth_in_flight >= limits.max_auth_in_flight:
        # A flood of logins must not queue without bound behind the hashes.
        limit_hit(
            "auth_in_flight",
            f"{door.auth_in_flight} logins in progress; limits.max_auth_in_flight is "
            f"{limits.max_auth_in_flight}",
        )
        return LoginCheck(Outcome.BUSY, user)
    request = auth_request(client, user, password, attempt)
    door.auth_in_flight += 1
    # The delay counts from here, so the answer comes at the same time
    # whatever the check cost (a cheap hash, an unknown user's dummy).
    begun = trio.current_time()
    started = time.perf_counter()
    try:
        result = await ask_source(service, request, limit_hit)
    finally:
        door.auth_in_flight -= 1
    # ``_value_``: Enum's ``.value`` is a Python-level property, a call a login.
    status = result.status._value_
    door.metrics.auth(service.auth.name, status, time.perf_counter() - started)
    for op in result.ops:
        door.metrics.directory_request(service.auth.name, op.operation, op.result, op.seconds)
    if result.status is AuthStatus.UNAVAILABLE:
        log_event(
            log,
            logging.WARNING,
            "auth_unavailable",
            "auth unavailable conn=%(conn)s source=%(source)s reason=%(reason)s",
            conn=client.conn_id,
            source=service.auth.name,
            reason=result.reason,
        )
        return LoginCheck(Outcome.UNAVAILABLE, user)
    failed = result.status is not AuthStatus.SUCCESS
    policy = service.policy
    base_s, max_s = policy.auth_failure_delay_s, policy.auth_failure_delay_max_s
    if client.in_networks(policy.trusted_networks):
        verdict = Verdict(Delay(base_s, "trusted"), Counts()) if failed else _TRUSTED_SUCCESS
        delay = verdict.delay
    else:
        count = door.throttle.failed if failed else door.throttle.succeeded
        verdict = await count(client.address, user, policy.throttle, base_s=base_s, max_s=max_s)
        delay = verdict.delay
        if delay.rule in ("address", "network", "user"):
            result_label = "failure" if failed else "success"
            door.metrics.auth_throttled_answer(result_label, delay.rule)
            if failed:
                reason = f"recent failures ({delay.rule}): answer delayed {delay.seconds:g}s"
                limit_hit("auth_failures", reason)
    if failed and min(result.wait_s, max_s) > delay.seconds:
        # The source asked for a longer wait (an auth service's Auth-Wait).
        delay = Delay(min(result.wait_s, max_s), "auth_wait")
    degraded = " store=unavailable" if verdict.degraded else ""
    # A plain success is a DEBUG line: the session end line names the user,
    # so a login referral session logs one INFO line, not three.  A failure,
    # a delayed or refused success and a degraded store stay INFO.
    plain_ok = not failed and delay.seconds == 0 and not verdict.refuse and not verdict.degraded
    level = logging.DEBUG if plain_ok else logging.INFO
    if log.isEnabledFor(level):  # the fields cost ~2.5 us to gather for nothing
        log_event(
            log,
            level,
            "auth",
            "auth %(outcome)s conn=%(conn)s addr=%(client)s source=%(source)s reason=%(reason)s "
            "delay=%(delay_s).3f rule=%(rule)s" + degraded,
            outcome="failed" if failed else "ok",
            conn=client.conn_id,
            client=client.address,
            source=service.auth.name,
            reason=result.reason,
            delay_s=delay.seconds,
            rule=delay.rule,
            store_degraded=verdict.degraded,
        )
    outcome = Outcome.REFUSED if verdict.refuse else Outcome.FAILED if failed else Outcome.OK
    remaining = max(0.0, begun + delay.seconds - trio.current_time())
    return LoginCheck(outcome, result.user, remaining, result.home)


async def ask_source(
    service: Service, request: AuthRequest, limit_hit: Callable[[str, str], None]
) -> AuthResult:
    """Ask the source, unless the password is over ``limits.max_password_bytes``.

    An over-long password is never hashed (SHA-crypt's cost grows with the
    length, and libxcrypt refuses 512 bytes and more); it fails like a wrong
    one, so the throttle, the delay and the answer are the same.
    """
    size = len(request.password.encode("utf-8", "surrogatepass"))
    limit = service.limits.max_password_bytes
    if size <= limit:
        return await service.auth.authenticate(request)
    limit_hit(
        "password_length", f"a password of {size} bytes; limits.max_password_bytes is {limit}"
    )
    return AuthResult(AuthStatus.FAILURE, request.user, "password too long")
