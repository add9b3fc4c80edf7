"""Log set-up and structured log events: one record, two renderings.

An event is logged once, with its fields (:func:`log_event`).  The text format
renders it as the familiar ``session end conn=… user=… outcome=…`` line
(``None`` shown as ``-``, booleans as ``yes``/``no``); the JSON format
writes one object per line with ``event`` and every field as its own key
(``None`` as ``null``, numbers as numbers), plus the rendered ``msg``.
Plain ``log.info(...)`` records (no fields) carry only ``msg``.

Field names are shared by every event: ``conn``, ``client`` (the address),
``listener``, ``tls``, ``user``, ``outcome``, ``server``, ``duration_s``,
``limit``, ``reason`` and so on.  No field ever holds a password or hash.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["log_event", "setup_logging"]


class _Fields(dict[str, Any]):
    """Event fields as a ``%``-format mapping: ``-`` for None, yes/no for booleans."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return value


def log_event(logger: logging.Logger, level: int, name: str, text: str, **fields: Any) -> None:
    """Log event ``name``; ``text`` is a ``%(field)s`` format over ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, text, _Fields(fields), extra={"event": name}, stacklevel=2)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name = getattr(record, "event", None)
        if name is not None and isinstance(record.args, _Fields):
            out["event"] = name
            out.update(dict.items(record.args))
        out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s``, the time text built once a second.

    ``Formatter.formatTime`` calls ``localtime`` and ``strftime`` for every
    record; under load most records (a line per session, thousands of
    sessions a second) fall in the same second as the one before.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr in ``fmt`` (text, json) at ``level`` and above."""
    # The formats print none of these: don't pay for them on every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor the caller's file, line and function: without a source file to
    # look for, Logger.findCaller (a frame walk per record) is skipped.
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
