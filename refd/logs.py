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


def log_event(logger: logging.Logger, level: int, name: str, text: str, **fields: Any) -> None:
    """Log event ``name``; ``text`` is a ``%(field)s`` format over ``fields``.

    The text gets the values as shown (``-`` for None, yes/no for booleans),
    the JSON format the values themselves (``record.fields``).  Rendering
    them here in one comprehension, rather than in a mapping whose
    ``__getitem__`` renders each as ``%`` asks for it, saves a Python call
    per field: ~2 of the ~20-26 us a session's end line costs (8 fields).
    """
    if logger.isEnabledFor(level):
        shown = {
            key: "-"
            if value is None
            else ("yes" if value else "no")
            if type(value) is bool
            else value
            for key, value in fields.items()
        }
        logger.log(level, text, shown, extra={"event": name, "fields": fields}, stacklevel=2)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name = getattr(record, "event", None)
        fields = getattr(record, "fields", None)
        if name is not None and isinstance(fields, dict):
            out["event"] = name
            out.update(fields)
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

    def format(self, record: logging.LogRecord) -> str:
        # Formatter.format's generic steps (usesTime, the style's mapping
        # format over the record's __dict__) for this one fixed format cost
        # ~1 us of a session's end line; a traceback or stack still goes
        # through them.
        if record.exc_info or record.stack_info:
            return super().format(record)
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose ``emit`` writes and flushes the line in place.

    ``Handler.handle`` already holds the handler's lock around ``emit``;
    ``StreamHandler.flush`` takes it again and asks ``hasattr`` per record
    (~0.5 us).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr in ``fmt`` (text, json) at ``level`` and above."""
    # The formats print none of these: don't pay for them on every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor the caller's file, line and function: without a source file to
    # look for, Logger.findCaller (a frame walk per record) is skipped.
    logging._srcfile = None
    handler = _LineHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
