"""Response amplification and memory: the attack of issue 9, finding 1, over real sockets.

A logged-in user sent one 257 KB ``LIST (REMOTE) "" (* * * ...)`` with
128,000 patterns; the door answered every name once per pattern (20 MB),
spent seconds of CPU on its one event loop, and clients that did not read
their answers kept the whole of them in memory.  Each test runs
``refd serve`` as a subprocess (its RSS is read from ``/proc``) and asserts:

- the 257 KB LIST gets one short ``NO [LIMIT]``; a LIST at the limit answers
  each name once;
- a long answer (a table publishing 30,000 names) reaches a reader whole and
  exact, while clients that never read hold one chunk each and are dropped
  at the write timeout;
- after a burst of such connections the door's RSS returns to within
  ``RSS_MARGIN_KIB`` of its baseline, and other clients are served
  throughout.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from refd.config.loader import DEMO_CONFIG
from tests.robustness.helpers import (
    BOB_LOGIN,
    LineClient,
    LoginProber,
    RefdProcess,
    metric,
    scrape,
)

LIMIT_NO = b"x1 NO [LIMIT] Too many patterns: at most 100 in one LIST.\r\n"
PUBLISHED = 30_000
#: RSS allowed above the baseline while ten clients sit on a 1.5 MiB answer
#: each (they hold one chunk each: about 1 MiB in all)
PEAK_MARGIN_KIB = 8 * 1024
#: RSS allowed above the baseline once abusive connections are gone: the
#: allocator keeps the high-water mark of the burst (about 8 MiB here; it
#: does not grow with more bursts), where answers kept would be hundreds
RSS_MARGIN_KIB = 16 * 1024


def amplification_list(tag: bytes) -> bytes:
    """The attack: 257 KB of ``*`` patterns in one LIST.

    A line may carry 8 KiB (``max_line_bytes``), so the patterns run on over
    one-octet non-synchronizing literals (RFC 7888), as the attacker's did.
    """
    segment = b"* " * 4000 + b"{1+}\r\n* "
    return tag + b' LIST (REMOTE) "" (' + segment * 32 + b"*)\r\n"


def publish_many(tmp: Path, count: int = PUBLISHED) -> list[bytes]:
    """A routing table in ``tmp`` that publishes ``count`` more names; their LIST lines."""
    names = [f"Shared/Projects/Project {i:05d}" for i in range(count)]
    text = (DEMO_CONFIG.parent / "routing.yaml").read_text()
    (tmp / "routing.yaml").write_text(text + "".join(f"  - {n}\n" for n in names))
    return [b'* LIST (\\Remote) "/" "%s"\r\n' % n.encode() for n in names]


def demo_lines() -> list[bytes]:
    return [
        b'* LIST (\\Remote) "/" INBOX\r\n',
        b'* LIST (\\Remote) "/" Shared/Sales\r\n',
        b'* LIST (\\Remote) "/" "Shared/Caf&AOk- Menu"\r\n',
    ]


async def login_bob(port: int) -> LineClient:
    client = await LineClient.connect(port)
    assert (await client.line()).startswith(b"* OK ")
    await client.send(b"b1 LOGIN bob secret\r\n")
    assert await client.lines(2) == BOB_LOGIN
    return client


async def silent_client(port: int, request: bytes) -> trio.SocketStream:
    """A client with a small receive buffer that sends ``request`` and never reads."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    await stream.send_all(b"b1 LOGIN bob secret\r\n" + request)
    return stream


async def drain(stream: trio.SocketStream, timeout: float = 10) -> bytes:
    """Everything the door sent before it closed (fails if it has not closed)."""
    got = bytearray()
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset: the door closed with data unread
                break
            if not data:
                break
            got += data
    await stream.aclose()
    return bytes(got)


async def active(refd: RefdProcess) -> float:
    return metric(await scrape(refd.metrics_port), "refd_connections_active", listener="imap")


async def test_a_list_of_128000_patterns_gets_one_short_no(tmp_path: Path) -> None:
    with RefdProcess(tmp_path) as refd:
        client = await login_bob(refd.port)
        try:
            attack = amplification_list(b"x1")
            assert 256_000 < len(attack) < 262_144  # under max_command_bytes
            await client.send(attack)
            # The exact answer, and nothing before it: 59 octets for 257 KB.
            assert await client.line() == LIMIT_NO
            # A hundred patterns (the limit) that all match: each name once.
            patterns = b" ".join([b"*", b"%", b"Shared/*", b"INBOX", b"*"] * 20)
            await client.send(b'x2 LIST (REMOTE) "" (' + patterns + b")\r\n")
            assert await client.lines(5) == [
                *demo_lines(),
                b'* LIST (\\NonExistent \\HasChildren) "/" Shared\r\n',
                b"x2 OK LIST completed.\r\n",
            ]
            await client.send(b"x3 NOOP\r\n")
            assert await client.line() == b"x3 OK NOOP completed.\r\n"
        finally:
            await client.aclose()
        body = await scrape(refd.metrics_port)
        assert metric(body, "refd_limit_hits_total", limit="list_patterns") == 1
        line = await trio.to_thread.run_sync(refd.daemon.wait_log, "limit=list_patterns")
        assert "limit hit conn=" in line and "addr=127.0.0.1" in line


async def test_clients_that_never_read_hold_one_chunk_and_are_dropped(tmp_path: Path) -> None:
    published = publish_many(tmp_path)
    with RefdProcess(tmp_path, limits={"write_timeout_s": 2}) as refd:
        # A reader gets the whole answer, streamed, exactly.
        reader = await login_bob(refd.port)
        try:
            await reader.send(b'b2 LIST (REMOTE) "" "*"\r\n')
            expected = [*demo_lines(), *published, b"b2 OK LIST completed.\r\n"]
            assert await reader.lines(len(expected), timeout=60) == expected
        finally:
            await reader.aclose()
        full = b"".join([*BOB_LOGIN, *expected])
        baseline = refd.rss_kib()

        request = b'b2 LIST (REMOTE) "" "*"\r\n'
        silent = [await silent_client(refd.port, request) for _ in range(10)]
        try:
            sent = time.monotonic()
            peak = baseline
            with trio.fail_after(20):
                while await active(refd):
                    peak = max(peak, refd.rss_kib())
                    await trio.sleep(0.1)
            dropped_after = time.monotonic() - sent
            answers = [await drain(stream) for stream in silent]
        finally:
            for stream in silent:
                await stream.aclose()
        print(
            f"\n10 silent clients of a {len(full) // 1024} KiB answer: dropped after "
            f"{dropped_after:.1f} s; RSS {baseline // 1024} MiB, peak +{peak - baseline} KiB; "
            f"each got {sorted(len(a) for a in answers)} octets"
        )
        # Each got the greeting and a beginning of the exact answer, then
        # the door hung up.
        for answer in answers:
            greeting, _, rest = answer.partition(b"\r\n")
            assert greeting.startswith(b"* OK [CAPABILITY ")
            assert full.startswith(rest) and len(rest) < len(full) // 2
        # Not ten answers in memory (15 MiB), a chunk each.
        assert peak - baseline < PEAK_MARGIN_KIB


async def test_rss_returns_to_baseline_after_a_burst_of_abusive_connections(
    tmp_path: Path,
) -> None:
    publish_many(tmp_path)
    with RefdProcess(tmp_path, limits={"write_timeout_s": 3}, log_level="warning") as refd:
        # Warm up: the hierarchy of the published names is worked out once,
        # on the first LIST that needs it.
        client = await login_bob(refd.port)
        await client.send(b'b2 LIST (REMOTE) "" "%" RETURN (CHILDREN)\r\n')
        assert await client.lines(3) == [
            b'* LIST (\\HasNoChildren \\Remote) "/" INBOX\r\n',
            b'* LIST (\\NonExistent \\HasChildren) "/" Shared\r\n',
            b"b2 OK LIST completed.\r\n",
        ]
        await client.aclose()
        while await active(refd):
            await trio.sleep(0.1)
        baseline = refd.rss_kib()

        prober = LoginProber(refd.port, pause_s=0.05)
        stop = trio.Event()
        peak = baseline

        async def amplifier() -> None:
            c = await login_bob(refd.port)
            for _ in range(3):
                await c.send(amplification_list(b"x1"))
                assert await c.line(timeout=30) == LIMIT_NO
            await c.aclose()

        async def leaver(request: bytes) -> None:
            stream = await silent_client(refd.port, request)
            await trio.sleep(1)
            await stream.aclose()  # gone without reading

        async def sitter(request: bytes) -> None:
            stream = await silent_client(refd.port, request)
            await trio.sleep(8)  # the door gives up after 3 s without progress
            assert len(await drain(stream)) < 256 * 1024  # so it sent little

        listing = b'b2 LIST (REMOTE) "" ("*" "%") RETURN (CHILDREN)\r\n'
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(prober.run, stop)
                async with trio.open_nursery() as burst:
                    for _ in range(15):
                        burst.start_soon(amplifier)
                        burst.start_soon(leaver, listing)
                    for _ in range(10):
                        burst.start_soon(sitter, listing)
                    while True:  # the peak, while the burst lasts
                        peak = max(peak, refd.rss_kib())
                        if not burst.child_tasks:
                            break
                        await trio.sleep(0.1)
                stop.set()
            while await active(refd):
                await trio.sleep(0.1)
        await trio.sleep(1)
        after = refd.rss_kib()
        print(
            f"\nburst of 40 abusive connections: RSS {baseline} KiB, peak {peak} KiB, "
            f"after {after} KiB; {len(prober.answers)} logins, "
            f"worst {max(prober.latencies) * 1000:.0f} ms"
        )
        prober.check(at_least=10, max_latency_s=3.0)
        assert refd.alive()
        assert after - baseline < RSS_MARGIN_KIB
