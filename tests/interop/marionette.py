"""A minimal client for Gecko's Marionette remote protocol (Thunderbird, Firefox).

The protocol is JSON over TCP, each message framed as ``<length>:<json>``.
The server speaks first (``{"applicationType": "gecko", "marionetteProtocol":
3}``); a command is ``[0, id, "Name", {params}]`` and its answer ``[1, id,
error, result]``, with ``error`` null on success. Only what the Thunderbird
tests use is here: ``WebDriver:NewSession``, ``Marionette:SetContext`` (the
chrome context, granted only when the application was started with
``-remote-allow-system-access``), ``WebDriver:ExecuteAsyncScript`` and
``WebDriver:DeleteSession``.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

HOST = "127.0.0.1"


class MarionetteError(RuntimeError):
    """The server answered a command with an error (its ``error``, ``message``, ``stacktrace``)."""


class Marionette:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.last_id = 0
        self.hello = self._read()
        if self.hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected Marionette greeting {self.hello!r}")

    @classmethod
    def connect(cls, port: int, timeout_s: float) -> Marionette:
        """Connect once the port accepts; every later read waits at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection((HOST, port), timeout=timeout_s)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("Marionette closed the connection")
        self.buffer += data

    def _read(self) -> Any:
        while b":" not in self.buffer:
            self._recv()
        length, _, self.buffer = self.buffer.partition(b":")
        size = int(length)
        while len(self.buffer) < size:
            self._recv()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return json.loads(body)

    def call(self, command: str, params: dict[str, Any] | None = None) -> Any:
        self.last_id += 1
        data = json.dumps([0, self.last_id, command, params or {}]).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data)
        kind, message_id, error, result = self._read()
        if kind != 1 or message_id != self.last_id:
            raise MarionetteError(f"answer {message_id} of kind {kind} to command {self.last_id}")
        if error is not None:
            raise MarionetteError(
                f"{command}: {error.get('error')}: {error.get('message')}\n"
                f"{error.get('stacktrace', '')}"
            )
        return result

    def new_session(self) -> dict[str, Any]:
        """Returns the session's capabilities (browserName, browserVersion, ...)."""
        result = self.call("WebDriver:NewSession", {"capabilities": {}})
        capabilities: dict[str, Any] = result["capabilities"]
        return capabilities

    def chrome_context(self) -> None:
        self.call("Marionette:SetContext", {"value": "chrome"})

    def execute_async(self, script: str, args: list[Any], timeout_s: float) -> Any:
        """Run ``script``; its last argument is the callback that returns the value."""
        result = self.call(
            "WebDriver:ExecuteAsyncScript",
            {"script": script, "args": args, "scriptTimeout": int(timeout_s * 1000)},
        )
        return result["value"]

    def delete_session(self) -> None:
        self.call("WebDriver:DeleteSession")
