"""The floor under refd's CPU per PLAIN session: trio alone, the same exchange on the wire.

    python bench/floor_server.py PORT [PROCESSES]

Serves `bench/loadgen.c`'s login flow on 127.0.0.1:PORT as the leanest trio
program we know: a greeting, one line read (the LOGIN), a fixed
``NO [REFERRAL ...]`` answer, one line read (the LOGOUT), ``* BYE`` and the
tagged OK, close.  Nothing is parsed, checked, looked up, logged or counted.
It uses trio only to wait: the listening socket gives up to 16 connections
per wake-up (as refd's accept loop), each connection is a task on a plain
non-blocking socket, written with ``os.write`` and read with ``os.read``,
and waits (``trio.lowlevel.wait_readable``) only when there is nothing to
read; no ``SocketStream``, no cancel scope, no checkpoint of its own.  The
same exchange through ``trio.serve_tcp`` and ``SocketStream`` cost about
2.7x as much CPU per session (319 against 116 us, workers: 1, c=64, one
interleaved run on 2026-12-02), so this is a floor for any trio server, not
for trio's high-level streams.

``bench/ab.py --floor`` runs it beside refd in the same interleaved cells,
so the part of refd's CPU per session that is trio's and the kernel's, and
the part that is refd's own, are measured in one sitting.  With PROCESSES >
1 the listening socket is bound once and the processes (forked before trio
starts) accept from its one queue, as refd's ``workers: N`` do.
"""

from __future__ import annotations

import os
import socket
import sys

import trio

GREETING = b"* OK [CAPABILITY IMAP4rev1 LOGIN-REFERRALS] floor ready.\r\n"
REFERRAL = b" NO [REFERRAL imap://u@mail1.bench.invalid/] Try mail1.\r\n"
LOGOUT = b"* BYE Logging out.\r\n"
ACCEPT_BATCH = 16


async def _line(fd: int, buffer: bytearray) -> bytes | None:
    """The next CRLF-ended line (from ``buffer`` first); None at the end of the stream."""
    while (end := buffer.find(b"\r\n")) < 0:
        try:
            data = os.read(fd, 16384)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        if not data:
            return None
        buffer += data
    line = bytes(buffer[: end + 2])
    del buffer[: end + 2]
    return line


async def session(sock: socket.socket) -> None:
    fd = sock.fileno()
    buffer = bytearray()
    try:
        os.write(fd, GREETING)
        line = await _line(fd, buffer)
        if line is None:
            return
        os.write(fd, line.split(b" ", 1)[0] + REFERRAL)
        line = await _line(fd, buffer)
        if line is None:
            return
        os.write(fd, LOGOUT + line.split(b" ", 1)[0] + b" OK LOGOUT completed.\r\n")
    except OSError:
        pass
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def serve(listening: socket.socket) -> None:
    listening.setblocking(False)
    async with trio.open_nursery() as nursery:
        while True:
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, _address = listening.accept()
                except BlockingIOError:
                    break
                except OSError:
                    continue  # a connection reset before it was accepted
                sock.setblocking(False)
                nursery.start_soon(session, sock)
            await trio.lowlevel.wait_readable(listening)


def main() -> None:
    port = int(sys.argv[1])
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(socket.SOMAXCONN)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    trio.run(serve, sock)


if __name__ == "__main__":
    main()
