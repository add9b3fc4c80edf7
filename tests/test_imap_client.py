"""The IMAP client's trio adapter: deadlines, literals, STARTTLS refusals, error words.

Over in-memory streams under trio's autojump clock (deadlines cost no real
time), with the server's side scripted in the test. The core's rules are
tested as tables in tests/protocol/test_client.py; the two users of this
adapter against fakes in tests/auth/test_imap_backend.py and
tests/test_probe_unit.py, and against Dovecot in tests/interop/.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from refd.imap_client import (
    LOGOUT_GRACE_S,
    ClientError,
    ImapClient,
    client_tls_context,
    connect,
    describe,
)

Server = Callable[[trio.abc.Stream], Awaitable[None]]


async def lines(stream: trio.abc.Stream, count: int) -> bytes:
    """What the client sent, up to `count` line ends."""
    data = b""
    while data.count(b"\n") < count:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


async def start(nursery: trio.Nursery, server: Server, timeout_s: float = 5) -> ImapClient:
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server, server_end)
    return ImapClient(client_end, timeout_s=timeout_s)


# -- words for errors -------------------------------------------------------------------


def _trio_connect_error() -> OSError:
    # What trio.open_tcp_stream raises when every address refused.
    inner = ConnectionRefusedError(errno.ECONNREFUSED, "Error connecting to ...: refused")
    exc = OSError("all attempts to connect to h:1 failed")
    exc.__cause__ = ExceptionGroup("all attempts to connect to h:1 failed", [inner])
    return exc


def _broken(cause: BaseException) -> trio.BrokenResourceError:
    exc = trio.BrokenResourceError()
    exc.__cause__ = cause
    return exc


def _certificate_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "unable to get local issuer certificate"
    return exc


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
        (_trio_connect_error(), "connection refused"),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "cannot resolve the host: Name or service not known",
        ),
        (_broken(ConnectionResetError(errno.ECONNRESET, "x")), "connection reset by peer"),
        (
            _broken(_certificate_error()),
            "TLS certificate not accepted: unable to get local issuer certificate",
        ),
        (UnicodeError("label empty or too long"), "label empty or too long"),
        (trio.ClosedResourceError(), "ClosedResourceError"),
    ],
)
def test_describe(exc: BaseException, words: str) -> None:
    assert describe(exc) == words


def test_client_tls_context() -> None:
    strict = client_tls_context()
    assert strict.verify_mode is ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.minimum_version is ssl.TLSVersion.TLSv1_2
    lab = client_tls_context(verify=False)
    assert lab.verify_mode is ssl.CERT_NONE and not lab.check_hostname
    with pytest.raises(OSError):
        client_tls_context("/nonexistent/ca.pem")


# -- connect ------------------------------------------------------------------------------


async def test_connect_deadline_and_errors(autojump_clock: trio.abc.Clock) -> None:
    async def black_hole(host: str, port: int) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    started = trio.current_time()
    with pytest.raises(ClientError, match=r"^timed out after 2 s$"):
        await connect("h", 143, timeout_s=2, open_tcp_stream=black_hole)
    assert trio.current_time() - started == pytest.approx(2)

    async def refused(host: str, port: int) -> trio.abc.Stream:
        raise _trio_connect_error()

    with pytest.raises(ClientError, match=r"^connection refused$"):
        await connect("h", 143, timeout_s=2, open_tcp_stream=refused)


async def test_connect_to_a_name_idna_cannot_encode() -> None:
    with pytest.raises(ClientError, match="label empty or too long"):
        await connect("a..b", 143, timeout_s=2)


# -- commands and deadlines ---------------------------------------------------------------


async def test_literal_waits_for_the_continuation(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    seen: list[bytes] = []

    async def server(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
        seen.append(await lines(stream, 1))
        with trio.move_on_after(0.5):  # nothing may arrive before "+"
            seen.append(await stream.receive_some(4096))
        await stream.send_all(b"+ go\r\n")
        seen.append(await lines(stream, 1))
        await stream.send_all(b"p1 OK [CAPABILITY IMAP4rev1 IDLE] in\r\n")

    client = await start(nursery, server)
    await client.greeting()
    answer = await client.login("a", "pä")
    assert seen == [b'p1 LOGIN "a" {3}\r\n', b"p\xc3\xa4\r\n"]
    assert answer.tagged.condition == "OK"
    assert client.capabilities == frozenset({"IMAP4REV1", "IDLE"})


async def test_each_response_has_its_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def server(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"* OK hi\r\n")
        await lines(stream, 1)
        for n in range(3):  # each line within the deadline, the whole well over it
            await trio.sleep(4)
            await stream.send_all(b"* %d EXISTS\r\n" % n)
        await trio.sleep(4)
        await stream.send_all(b"p1 OK done\r\n")
        await lines(stream, 1)
        await trio.sleep(6)  # one line that takes too long
        await stream.send_all(b"p2 OK late\r\n")

    client = await start(nursery, server, timeout_s=5)
    await client.greeting()
    answer = await client.simple("SELECT INBOX")
    assert [u.response.text for u in answer.untagged] == ["0 EXISTS", "1 EXISTS", "2 EXISTS"]
    started = trio.current_time()
    with pytest.raises(ClientError, match=r"^timed out after 5 s$"):
        await client.simple("NOOP")
    assert trio.current_time() - started == pytest.approx(5)


async def test_the_end_of_the_stream_names_the_bye(nursery: trio.Nursery) -> None:
    async def server(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"* OK hi\r\n")
        await lines(stream, 1)
        await stream.send_all(b"* BYE shutting down\r\n")
        await stream.aclose()

    client = await start(nursery, server)
    await client.greeting()
    with pytest.raises(ClientError) as info:
        await client.simple("NOOP")
    assert str(info.value) == "the server closed the connection after * BYE shutting down"


# -- STARTTLS refusals (the handshake itself: tests/interop/) -------------------------------


@pytest.mark.parametrize(
    ("greeting", "answer", "error", "sent"),
    [
        (b"* OK [CAPABILITY IMAP4rev1] hi\r\n", b"", "the server does not offer STARTTLS", b""),
        (
            b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
            b"",
            "PREAUTH greeting: STARTTLS is no longer possible",
            b"",
        ),
        (
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
            b"s1 NO not now\r\n",
            "STARTTLS refused: NO not now",
            b"s1 STARTTLS\r\n",
        ),
        (
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
            b"s1 OK go\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n",
            "data after the STARTTLS answer (injection?)",
            b"s1 STARTTLS\r\n",
        ),
    ],
)
async def test_starttls_refusals(
    nursery: trio.Nursery, greeting: bytes, answer: bytes, error: str, sent: bytes
) -> None:
    got: list[bytes] = []

    async def server(stream: trio.abc.Stream) -> None:
        await stream.send_all(greeting)
        if answer:
            got.append(await lines(stream, 1))
            await stream.send_all(answer)
        await trio.sleep_forever()

    client = await start(nursery, server)
    await client.greeting()
    with pytest.raises(ClientError) as info:
        tagged = await client.request_starttls("s1")
        await client.start_tls(tagged, client_tls_context(verify=False), "h")
    assert str(info.value) == error
    assert b"".join(got) == sent


# -- LOGOUT ------------------------------------------------------------------------------


async def test_logout_waits_briefly_and_never_raises(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    got: list[bytes] = []

    async def silent(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"* OK hi\r\n")
        got.append(await lines(stream, 1))
        await trio.sleep_forever()

    client = await start(nursery, silent, timeout_s=30)
    await client.greeting()
    started = trio.current_time()
    await client.logout()
    assert trio.current_time() - started == pytest.approx(LOGOUT_GRACE_S)
    assert got == [b"p1 LOGOUT\r\n"]

    async def gone(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"* OK hi\r\n")
        await stream.aclose()

    client = await start(nursery, gone)
    await client.greeting()
    await client.logout()  # the peer is gone: no error


async def test_no_logout_after_a_command_was_cut_short(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    got: list[bytes] = []

    async def server(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"* OK hi\r\n")
        while data := await stream.receive_some(4096):
            got.append(data)

    client = await start(nursery, server, timeout_s=1)
    await client.greeting()
    with pytest.raises(ClientError):
        await client.simple("NOOP")
    await client.logout()
    await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert got == [b"p1 NOOP\r\n"]
