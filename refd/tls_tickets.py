"""TLS session-ticket keys: one set for every worker and every reload of one refd.

OpenSSL gives each ``SSL_CTX`` random ticket keys of its own. refd makes an
``SSLContext`` in each worker and a new one at each reload, so a ticket
resumed a session only on the worker that issued it, and only until the
next reload: with ``workers: 2``, 5 of 19 reconnections resumed
(bench/NOTES.md, "TLS session resumption with workers"). A resumption
skips the certificate and its signature, about two thirds of a full
RSA-2048 handshake's work.

So the supervisor makes one set of keys (`ticket_keys`) and hands it to
each worker it starts through an inherited pipe (`TICKET_KEYS_FD_ENV`,
`keys_pipe`); a single process makes its own. Every context the process
makes gets them (`share_ticket_keys`, from `refd.config.loader`), so a
ticket issued by any worker resumes on any worker, and across reloads, for
as long as the supervisor runs (restart refd to change the keys). The keys
stay in refd's processes and are never logged.

Python's `ssl` has no call for the keys. They are set with OpenSSL's
``SSL_CTX_set_tlsext_ticket_keys`` (``SSL_CTX_ctrl`` with
``SSL_CTRL_SET_TLSEXT_TICKET_KEYS``) on the context's ``SSL_CTX``, which
CPython's context object (``_ssl._SSLContext``) holds as its first field
after the object header. Before using that pointer, refd checks that it
is the context's: ``SSL_CTX_get_options`` must give the context's own
`options`, with one option flipped and back. Anything else
(another Python, a changed layout, a library without the call) leaves the
context with OpenSSL's own keys and logs one warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import secrets
import ssl
import sys

__all__ = [
    "TICKET_KEYS_BYTES",
    "TICKET_KEYS_FD_ENV",
    "keys_pipe",
    "share_ticket_keys",
    "ticket_keys",
]

log = logging.getLogger("refd.tls_tickets")

#: Set by the supervisor in each worker's environment: the descriptor to read the keys from.
TICKET_KEYS_FD_ENV = "REFD_TLS_TICKET_KEYS_FD"
#: A key name (16 bytes), an HMAC-SHA256 key (32) and an AES-256 key (32), as OpenSSL takes them.
TICKET_KEYS_BYTES = 80
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59  # OpenSSL's SSL_CTRL_SET_TLSEXT_TICKET_KEYS


@functools.cache
def ticket_keys() -> bytes:
    """This refd's ticket keys: the supervisor's (from the pipe it gave), else new ones."""
    fd_text = os.environ.pop(TICKET_KEYS_FD_ENV, "")
    if fd_text:
        keys = _read_keys(fd_text)
        if keys is not None:
            return keys
        log.warning(
            "tls tickets: no keys from the supervisor (%s=%s); this worker's tickets "
            "resume on this worker only",
            TICKET_KEYS_FD_ENV,
            fd_text,
        )
    return secrets.token_bytes(TICKET_KEYS_BYTES)


def _read_keys(fd_text: str) -> bytes | None:
    if not (fd_text.isascii() and fd_text.isdigit()):
        return None
    fd = int(fd_text)
    data = b""
    try:
        while len(data) < TICKET_KEYS_BYTES:
            chunk = os.read(fd, TICKET_KEYS_BYTES - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return data if len(data) == TICKET_KEYS_BYTES else None


def keys_pipe() -> int:
    """A pipe's read end holding this process's keys, for one worker to inherit and read.

    The caller passes it to the worker (``pass_fds``) and closes it after the
    start. 80 bytes fit a pipe's buffer, so the write never waits.
    """
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, ticket_keys())
    finally:
        os.close(write_end)
    return read_end


class _Libssl:
    """The two libssl calls, from the libssl Python's own `ssl` module uses."""

    def __init__(self) -> None:
        # dlsym on the _ssl extension's handle also searches the libraries it
        # was linked with: the very libssl the contexts live in.
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long


@functools.cache
def _libssl() -> _Libssl | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        return _Libssl()
    except (OSError, AttributeError):
        return None


def _ssl_ctx(ctx: ssl.SSLContext, lib: _Libssl) -> int | None:
    """The context's ``SSL_CTX`` pointer, if it checks out as the context's."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        return None
    before = ctx.options
    if lib.get_options(pointer) != int(before):
        return None
    # One option flipped through Python must show through the pointer too.
    ctx.options = before ^ ssl.OP_NO_COMPRESSION
    try:
        if lib.get_options(pointer) != int(ctx.options):
            return None
    finally:
        ctx.options = before
    return int(pointer)


def share_ticket_keys(ctx: ssl.SSLContext) -> bool:
    """Give ``ctx`` this refd's ticket keys; False (and one warning) if it cannot be done."""
    lib = _libssl()
    pointer = None if lib is None else _ssl_ctx(ctx, lib)
    if lib is None or pointer is None:
        _warn_once()
        return False
    keys = ctypes.create_string_buffer(ticket_keys(), TICKET_KEYS_BYTES)
    if lib.ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEYS_BYTES, keys) != 1:
        _warn_once()
        return False
    return True


@functools.cache
def _warn_once() -> None:
    log.warning(
        "tls tickets: cannot set the ticket keys on this Python/OpenSSL; each worker "
        "keeps its own, so a session resumes only on the worker that began it"
    )
