"""The ``imap`` auth source against backends that are down, silent or broken.

The door runs in-process (``Daemon`` on config files, real sockets) with
``auth.source: imap`` on each user's home server.  alice's home is a tiny
well-behaved fake IMAP server; every other user's home misbehaves in its
own way: stopped (connection refused), black-holed (a listening socket
nobody ever accepts or answers on), or a fake server that answers garbage.
Each of those users must get ``NO [UNAVAILABLE]`` promptly — never a
referral, never a hang — while a ``LoginProber`` keeps logging alice in and
getting her referral the whole time.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from refd.config.loader import load_config, load_service
from refd.daemon import Daemon
from tests.robustness.helpers import LineClient, LoginProber, write_config

UNAVAILABLE = b"a1 NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.\r\n"
RESPONSE_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 1.0
#: "promptly": the slowest honest path is a slot wait plus a connect, then
#: one answer timing out; anything beyond this and some slack is a hang.
PROMPT_S = CONNECT_TIMEOUT_S + RESPONSE_TIMEOUT_S + 2.0

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def read_line(stream: trio.SocketStream, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            return b""
        buf += data
    i = buf.index(b"\n") + 1
    line = bytes(buf[:i])
    del buf[:i]
    return line


async def good_backend(stream: trio.SocketStream) -> None:
    """alice / secret is right; anything else is a wrong password."""
    buf = bytearray()
    await stream.send_all(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] fake backend ready\r\n")
    while line := await read_line(stream, buf):
        tag, _, rest = line.partition(b" ")
        if rest.startswith(b"LOGIN "):
            ok = rest.strip() == b'LOGIN "alice" "secret"'
            await stream.send_all(
                tag + (b" OK done\r\n" if ok else b" NO [AUTHENTICATIONFAILED] no\r\n")
            )
        elif rest.startswith(b"LOGOUT"):
            await stream.send_all(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
            return
        else:
            await stream.send_all(tag + b" BAD what\r\n")


def garbage(*chunks: bytes, then: str = "hang") -> Handler:
    """A backend that sends ``chunks``, then hangs or closes."""

    async def handler(stream: trio.SocketStream) -> None:
        for chunk in chunks:
            await stream.send_all(chunk)
        if then == "hang":
            await trio.sleep_forever()

    return handler


def login_answered_with(answer: bytes) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        buf = bytearray()
        await stream.send_all(b"* OK [CAPABILITY IMAP4rev1] fake\r\n")
        line = await read_line(stream, buf)
        tag = line.split(b" ", 1)[0]
        await stream.send_all(answer.replace(b"TAG", tag))
        await trio.sleep_forever()

    return handler


def untagged_forever(interval_s: float) -> Handler:
    """Greets, then answers LOGIN with untagged lines, one per interval, forever."""

    async def handler(stream: trio.SocketStream) -> None:
        buf = bytearray()
        await stream.send_all(b"* OK [CAPABILITY IMAP4rev1] fake\r\n")
        await read_line(stream, buf)
        while True:
            await stream.send_all(b"* OK still thinking\r\n")
            await trio.sleep(interval_s)

    return handler


def dribble(data: bytes, interval_s: float) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
            await trio.sleep(interval_s)
        await trio.sleep_forever()

    return handler


BROKEN: dict[str, Handler] = {
    "binary-greeting": garbage(bytes(range(256)) * 4 + b"\r\n"),
    "no-newline-ever": garbage(b"* OK " + b"x" * (1 << 20)),
    "bye-greeting": garbage(b"* BYE go away\r\n"),
    "preauth-greeting": garbage(b"* PREAUTH welcome\r\n"),
    "greeting-then-close": garbage(b"* OK [CAPABILITY IMAP4rev1] hi\r\n", then="close"),
    "huge-literal-in-greeting": garbage(b"* OK {2147483648}\r\n"),
    "http-server": garbage(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", then="close"),
    "tls-alert": garbage(b"\x15\x03\x03\x00\x02\x02\x46", then="close"),
    "login-answered-bad": login_answered_with(b"TAG BAD what\r\n"),
    "login-answered-with-wrong-tag": login_answered_with(b"zz OK fine\r\n"),
    "login-answered-serverbug": login_answered_with(b"TAG NO [SERVERBUG] oops\r\n"),
    "login-answered-bye": login_answered_with(b"* BYE shutting down\r\n"),
    "login-answered-continuation": login_answered_with(b"+ go on\r\n"),
    "login-answered-garbage": login_answered_with(b"\x00\xff\xfe\r\n"),
    "greeting-dribbled": dribble(b"* OK [CAPABILITY IMAP4rev1] fake\r\n", 0.2),
}


async def start_backend(nursery: trio.Nursery, handler: Handler) -> int:
    async def guarded(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await handler(stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, guarded, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def black_hole() -> tuple[socket.socket, int]:
    """A listening socket nobody accepts on: TCP connects, nothing is ever said."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock, sock.getsockname()[1]


def stopped_port() -> int:
    """A port that was just free: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hole() -> Iterator[tuple[socket.socket, int]]:
    sock, port = black_hole()
    with sock:
        yield sock, port


async def login(port: int, user: str) -> tuple[bytes, float]:
    started = trio.current_time()
    client = await LineClient.connect(port)
    try:
        await client.line()
        await client.send(f"a1 LOGIN {user} secret\r\n".encode())
        answer = await client.line(timeout=60)
    finally:
        await client.aclose()
    return answer, trio.current_time() - started


async def run_door(nursery: trio.Nursery, tmp: Path, homes: dict[str, int]) -> tuple[Daemon, int]:
    servers = "".join(
        f"  s{i}: {{host: 127.0.0.1, port: {p}}}\n" for i, p in enumerate(homes.values())
    )
    users = "".join(f"  - user: {user}\n    server: s{i}\n" for i, user in enumerate(homes))
    (tmp / "routing.yaml").write_text(f"version: 1\nservers:\n{servers}users:\n{users}")
    cfg = write_config(tmp)
    cfg.write_text(
        cfg.read_text().replace(
            "  source: passwd-file\n  passwd_file: users.passwd\n",
            "  source: imap\n  imap:\n"
            f"    connect_timeout_s: {CONNECT_TIMEOUT_S}\n"
            f"    response_timeout_s: {RESPONSE_TIMEOUT_S}\n"
            "    max_concurrent_per_backend: 16\n",
        )
    )
    config = load_config(cfg)
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    return daemon, int(bound[0][0].port)


def alice_referral(port: int) -> bytes:
    return (
        f"a1 NO [REFERRAL imap://alice;AUTH=*@127.0.0.1:{port}/] "
        "Your mail is on 127.0.0.1; connect there.\r\n"
    ).encode()


async def test_broken_backends_answer_unavailable_promptly(
    nursery: trio.Nursery, tmp_path: Path, hole: tuple[socket.socket, int]
) -> None:
    good = await start_backend(nursery, good_backend)
    homes = {"alice": good, "stopped": stopped_port(), "blackhole": hole[1]}
    for name, handler in BROKEN.items():
        homes[name] = await start_backend(nursery, handler)
    daemon, port = await run_door(nursery, tmp_path, homes)
    prober = LoginProber(port, expected=alice_referral(good), pause_s=0.02)
    stop = trio.Event()
    answers: dict[str, tuple[bytes, float]] = {}

    async def one(user: str) -> None:
        answers[user] = await login(port, user)

    async with trio.open_nursery() as outer:
        outer.start_soon(prober.run, stop)
        with trio.fail_after(30):
            async with trio.open_nursery() as logins:
                for user in homes:
                    if user != "alice":
                        logins.start_soon(one, user)
        stop.set()
    for user, (answer, took) in answers.items():
        assert answer == UNAVAILABLE, user
        assert took < PROMPT_S, f"{user}: answered after {took:.1f} s"
    prober.check(at_least=5, max_latency_s=2.0)
    registry = daemon.metrics.registry
    assert registry.get_sample_value(
        "refd_auth_total", {"source": "imap", "result": "unavailable"}
    ) == len(answers)
    daemon.door.stop()


async def test_a_flood_of_logins_to_a_black_hole(
    nursery: trio.Nursery, tmp_path: Path, hole: tuple[socket.socket, int]
) -> None:
    """More checks than backend slots: the queue is bounded by the connect timeout."""
    good = await start_backend(nursery, good_backend)
    daemon, port = await run_door(nursery, tmp_path, {"alice": good, "blackhole": hole[1]})
    prober = LoginProber(port, expected=alice_referral(good), pause_s=0.02)
    stop = trio.Event()
    results: list[tuple[bytes, float]] = []

    async def one() -> None:
        results.append(await login(port, "blackhole"))

    async with trio.open_nursery() as outer:
        outer.start_soon(prober.run, stop)
        with trio.fail_after(30):
            async with trio.open_nursery() as logins:
                for _ in range(48):  # three times max_concurrent_per_backend
                    logins.start_soon(one)
        stop.set()
    assert [a for a, _ in results] == [UNAVAILABLE] * 48
    assert max(t for _, t in results) < PROMPT_S
    prober.check(at_least=5, max_latency_s=2.0)
    daemon.door.stop()


async def test_backend_chattering_untagged_lines_forever(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    good = await start_backend(nursery, good_backend)
    chatty = await start_backend(nursery, untagged_forever(RESPONSE_TIMEOUT_S / 4))
    daemon, port = await run_door(nursery, tmp_path, {"alice": good, "chatty": chatty})
    with trio.move_on_after(PROMPT_S + 1) as waited:
        answer, _ = await login(port, "chatty")
    assert not waited.cancelled_caught, "no answer: the login hangs on a chattering backend"
    assert answer == UNAVAILABLE
    daemon.door.stop()
