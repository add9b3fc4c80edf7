"""`refd.transport.SocketConnection`: an accepted connection's stream over its descriptor."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from refd.transport import SocketConnection


def _pair() -> tuple[SocketConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return SocketConnection(ours.detach(), socket.AF_UNIX), theirs


async def test_what_is_sent_arrives_whole_even_when_it_has_to_wait() -> None:
    conn, theirs = _pair()
    data = os.urandom(4 * 1024 * 1024)  # far more than a socket buffer holds
    got = bytearray()

    def drain() -> None:
        while len(got) < len(data):
            got.extend(theirs.recv(65536))

    with theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, drain)
            await conn.send_all(data)
        await conn.aclose()
    assert bytes(got) == data


async def test_receive_some_and_the_end_of_the_stream() -> None:
    conn, theirs = _pair()
    with theirs:
        theirs.sendall(b"* OK hello\r\n")
        assert await conn.receive_some(100) == b"* OK hello\r\n"
        theirs.shutdown(socket.SHUT_WR)
        assert await conn.receive_some() == b""
    await conn.aclose()


async def test_a_closed_connection_refuses_use_and_closes_once() -> None:
    conn, theirs = _pair()
    fd = conn.fd
    with theirs:
        await conn.aclose()
        await conn.aclose()  # again: nothing to do
        assert conn.fd == -1
        with pytest.raises(OSError):  # the descriptor is gone
            os.fstat(fd)
        with pytest.raises(trio.ClosedResourceError):
            await conn.receive_some(10)
        with pytest.raises(trio.ClosedResourceError):
            await conn.send_all(b"x")


async def test_a_peer_gone_is_a_broken_stream() -> None:
    conn, theirs = _pair()
    theirs.close()
    with pytest.raises(trio.BrokenResourceError):
        # the first write may still be taken; the peer's reset fails a later one
        for _ in range(10):
            await conn.send_all(b"* BYE\r\n" * 1000)
    await conn.aclose()


async def test_aclose_from_another_task_interrupts_a_wait() -> None:
    conn, theirs = _pair()
    with theirs:
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.sleep(0.01)
                await conn.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await conn.receive_some(10)


async def test_its_own_address() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        conn = SocketConnection(accepted.detach(), socket.AF_INET)
        assert conn.getsockname() == listener.getsockname()
        assert conn.fd >= 0  # still open: asking does not close it
        await conn.aclose()


async def test_the_owner_closes_after_its_waits_and_the_number_is_reused_cleanly() -> None:
    """close() skips notify_closing: a later connection on the same descriptor number waits
    and wakes as usual (trio kept no record of the closed one)."""
    for _ in range(3):
        conn, theirs = _pair()
        with theirs:
            async with trio.open_nursery() as nursery:

                async def answer(peer: socket.socket) -> None:
                    await trio.sleep(0.01)
                    peer.sendall(b"a1 NOOP\r\n")

                nursery.start_soon(answer, theirs)
                assert await conn.receive_some(100) == b"a1 NOOP\r\n"  # waited
            fd = conn.fd
            conn.close()
            with pytest.raises(OSError):
                os.fstat(fd)
