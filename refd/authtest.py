"""``refd auth``: check one password with the configured source, as the daemon does.

What ``doveadm auth test`` is for Dovecot: the config is loaded by the
daemon's loaders (`load_config`, `load_service`), the password goes through
the door's own path to the source (`refd.login.ask_source`: the length cap,
then the source's ``authenticate``), and a success is routed by the door's
own answer (`refd.answers.login_answer`, with the home the source named).
Only the door's delay and throttle are left out: they do not change the
verdict.

One line is printed: the verdict and the source's reason, the route (server
and referral URL) with where it came from (the table's rule, or the home
the source named), and the directory requests the source made. The password
is never printed: the sources keep it out of their reasons.

Exit codes follow what an IMAP client would get:

- 0: the password is right and the door refers (or logs in) the user;
- 3: the password is wrong, the user unknown or refused: ``NO [AUTHENTICATIONFAILED]``;
- 6: ``NO [UNAVAILABLE]``: the source could not decide (down, slow,
  garbage), or the password is right but the door has no route (no rule
  matches, or the source named a home the table lacks);
- 2: usage (no password given, the variable unset, the file unreadable);
- 1: a config error (``refd: FILE:LINE: ...``, as every subcommand).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from refd.answers import login_answer
from refd.auth.base import AuthRequest, AuthResult, AuthStatus, DirectoryOp
from refd.login import ask_source
from refd.runtime import Service

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "read_password", "verdict"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_UNAVAILABLE = 6


class UsageError(Exception):
    """The password could not be had; ``str()`` says why."""


def read_password(env: str | None, file: str | None) -> str:
    """The password from the variable ``env`` or the first line of ``file`` (``-``: stdin)."""
    if env is not None:
        value = os.environb.get(os.fsencode(env))
        if value is None:
            raise UsageError(f"the environment variable {env} is not set")
        return value.decode("utf-8", "surrogateescape")
    assert file is not None
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    return line.decode("utf-8", "surrogateescape")


def _ops(ops: tuple[DirectoryOp, ...]) -> str:
    if not ops:
        return "none"
    return ", ".join(f"{op.operation} {op.result} {op.seconds * 1000:.0f} ms" for op in ops)


def verdict(service: Service, user: str, result: AuthResult) -> tuple[int, str]:
    """The exit code and the line for ``result``, routed by ``service``'s table."""
    source = service.auth.name
    who = user if result.user == user else f"{user} (authenticated as {result.user})"
    ops = f"directory requests: {_ops(result.ops)}"
    if result.status is AuthStatus.UNAVAILABLE:
        return EXIT_UNAVAILABLE, f"UNAVAILABLE {who}: {source}: {result.reason}; {ops}"
    if result.status is AuthStatus.FAILURE:
        wait = f" (answer delayed {result.wait_s:g} s)" if result.wait_s else ""
        return EXIT_FAILED, f"FAILED {who}: {source}: {result.reason}{wait}; {ops}"
    answer = login_answer(service.table, result.user, result.home)
    head = f"OK {who}: {source}: {result.reason}"
    if answer.error is not None:
        return EXIT_UNAVAILABLE, f"{head}; no route: {answer.error}; {ops}"
    if answer.route is None or answer.referral is None:
        where = f"no rule of {service.table.file} matches {result.user}"
        return EXIT_UNAVAILABLE, f"{head}; no route: {where}; {ops}"
    route = answer.route
    url = answer.referral.urls[0]
    line = (
        f"{head}; route: {route.server.name} {url} (login {route.login.value}) "
        f"from {route.why(result.user)}; {ops}"
    )
    return EXIT_OK, line


def run(service: Service, user: str, password: str, client_ip: str) -> tuple[int, str]:
    """Ask ``service``'s source about ``user``/``password`` from ``client_ip``."""
    limits: list[str] = []

    async def ask() -> AuthResult:
        request = AuthRequest(user=user, password=password, client_address=client_ip)
        return await ask_source(service, request, lambda _name, reason: limits.append(reason))

    result = trio.run(ask)
    code, line = verdict(service, user, result)
    if limits:
        line += "; limit: " + "; ".join(limits)
    return code, line
