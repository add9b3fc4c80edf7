"""The floor under refd's CPU per PLAIN session: trio alone, the same exchange on the wire.

    python bench/floor_server.py PORT [PROCESSES]

Serves `bench/loadgen.c`'s login flow on 127.0.0.1:PORT the way the
shortest trio program would (``trio.serve_tcp``, ``SocketStream``): a greeting,
one line read (the LOGIN), a fixed ``NO [REFERRAL ...]`` answer, one line
read (the LOGOUT), ``* BYE`` and the tagged OK, close.  Nothing is parsed,
checked, looked up, logged or counted.  ``bench/ab.py --floor`` runs it
beside refd in the same interleaved cells, so the part of refd's CPU per
session that is trio's and the kernel's, and the part that is refd's own,
are measured in one sitting.  With PROCESSES > 1 the listening socket is
bound once and the processes (forked before trio starts) accept from its one
queue, as refd's ``workers: N`` do.
"""

from __future__ import annotations

import os
import socket
import sys

import trio

GREETING = b"* OK [CAPABILITY IMAP4rev1 LOGIN-REFERRALS] floor ready.\r\n"
REFERRAL = b" NO [REFERRAL imap://u@mail1.bench.invalid/] Try mail1.\r\n"
LOGOUT = b"* BYE Logging out.\r\n"


async def _line(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """The next CRLF-ended line (from ``buffer`` first); None at the end of the stream."""
    while (end := buffer.find(b"\r\n")) < 0:
        data = await stream.receive_some(16384)
        if not data:
            return None
        buffer += data
    line = bytes(buffer[: end + 2])
    del buffer[: end + 2]
    return line


async def session(stream: trio.SocketStream) -> None:
    buffer = bytearray()
    try:
        await stream.send_all(GREETING)
        line = await _line(stream, buffer)
        if line is None:
            return
        await stream.send_all(line.split(b" ", 1)[0] + REFERRAL)
        line = await _line(stream, buffer)
        if line is None:
            return
        await stream.send_all(LOGOUT + line.split(b" ", 1)[0] + b" OK LOGOUT completed.\r\n")
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def serve(sock: socket.socket) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    await trio.serve_listeners(session, [listener])  # type: ignore[arg-type]


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
