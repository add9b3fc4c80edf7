"""An auth service in nginx mail's auth_http protocol, for tests: real HTTP on loopback.

`AuthService` answers as a service written for nginx does: it URL-decodes
Auth-User and Auth-Pass, checks them against a dict of users and answers
``Auth-Status: OK`` (with ``Auth-Server``/``Auth-Port`` when the user has a
home) or ``Auth-Status: Invalid login or password`` (with ``Auth-Wait``
when set). It records every request exactly as received. A test can make it
slow (``delay_s``), or replace the answer with raw bytes (``raw``) or with
closing the connection (``raw = b""``).

Start it with ``port = await nursery.start(service.serve)``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

import trio

REQUEST_MAX_BYTES = 64 * 1024


@dataclass
class Seen:
    """One request as received: the request line and the headers, bytes as sent."""

    raw: bytes

    @property
    def request_line(self) -> bytes:
        return self.raw.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        lines = self.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        return [(n, v.lstrip(b" ")) for n, _, v in (line.partition(b":") for line in lines)]

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


@dataclass
class AuthService:
    users: dict[str, str]
    #: user -> (Auth-Server, Auth-Port) sent with OK
    homes: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Auth-Wait sent with a failure, if any
    wait_on_failure: str | None = None
    #: extra headers sent with OK (e.g. Auth-User)
    ok_headers: list[tuple[str, str]] = field(default_factory=list)
    #: seconds before answering (trio's clock)
    delay_s: float = 0.0
    #: answer these bytes instead (b"": close without answering)
    raw: bytes | None = None
    #: answers to give first, in order, before the users decide (raw bytes)
    first: list[bytes] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(port)
            await trio.serve_listeners(self.handle, listeners, handler_nursery=nursery)

    async def handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < REQUEST_MAX_BYTES:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            seen = Seen(data)
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await trio.sleep(self.delay_s)
                answer = self.answer(seen)
                if answer:
                    await stream.send_all(answer)
            finally:
                self.in_flight -= 1

    def answer(self, seen: Seen) -> bytes:
        if self.first:
            return self.first.pop(0)
        if self.raw is not None:
            return self.raw
        user = urllib.parse.unquote_to_bytes(seen.header(b"Auth-User") or b"").decode()
        password = urllib.parse.unquote_to_bytes(seen.header(b"Auth-Pass") or b"").decode()
        lines = ["HTTP/1.0 200 OK"]
        if user in self.users and self.users[user] == password:
            lines.append("Auth-Status: OK")
            if user in self.homes:
                server, port = self.homes[user]
                lines += [f"Auth-Server: {server}", f"Auth-Port: {port}"]
            lines += [f"{n}: {v}" for n, v in self.ok_headers]
        else:
            lines.append("Auth-Status: Invalid login or password")
            if self.wait_on_failure is not None:
                lines.append(f"Auth-Wait: {self.wait_on_failure}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
