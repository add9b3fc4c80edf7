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

A compiled build compiles this module (`refd.compiled`), the handler
(`refd.log_handler`) apart: a login-referral session's end line cost
~36,800 of its ~232,000 instructions with both interpreted (callgrind,
PLAIN, c=16).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from refd.log_handler import LineHandler

__all__ = ["EventFormatter", "log_event", "setup_logging"]


def log_event(logger: logging.Logger, level: int, name: str, text: str, **fields: Any) -> None:
    """Log event ``name``; ``text`` is a ``%(field)s`` format over ``fields``.

    The text gets the values as shown (`_shown`: ``-`` for None, yes/no for
    booleans), the JSON format the values themselves (``record.fields``).

    When the daemon's own handler is the one place the event would go
    (`_sole_line_handler`), the line is rendered and written here
    (`_write_event`), without a `logging.LogRecord` and the logger's
    dispatch, with the same bytes.  That took refd's CPU per PLAIN session
    from 502 to 483 us (bench/ab.py, medians of 10 rounds; a prototype 519
    -> 490, and without the end line at all 470 us).  Anything else that
    listens (pytest's caplog, a handler or filter added by an embedding
    program) gets the record as before.
    """
    if logger.isEnabledFor(level):
        handler = _sole_line_handler(logger, level)
        if handler is not None:
            _write_event(handler, level, logger.name, name, _render(text, fields), fields)
            return
        logger.log(
            level, text, _shown_all(fields), extra={"event": name, "fields": fields}, stacklevel=2
        )


def _shown(value: Any) -> Any:
    """A field's value as an event's text shows it: ``-`` for None, yes/no for booleans."""
    if value is None:
        return "-"
    if type(value) is bool:
        return "yes" if value else "no"
    return value


def _shown_all(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: _shown(value) for key, value in fields.items()}


def _write_event(
    handler: LineHandler, level: int, logger: str, event: str, msg: str, fields: dict[str, Any]
) -> None:
    """Write event ``event`` as the handler's ``emit`` would write its record.

    Here rather than a method of `LineHandler`, which stays interpreted
    (`refd.log_handler`): taken from compiled code, the lock and the
    formatter cost no Python frames.  With the values shown as `_render`
    reads them (no ``shown`` dict) and the time text's milliseconds without
    ``:03d``, a session's end line went from ~28,000 to ~20,300
    instructions (callgrind, PLAIN, c=16).
    """
    formatter: EventFormatter = handler.formatter  # type: ignore[assignment]
    lock = handler.lock
    if lock is not None:
        lock.acquire()
    try:
        handler.write_line(formatter.line(time.time(), level, logger, event, msg, fields))
    except RecursionError:
        raise
    except Exception:
        handler.handleError(logging.LogRecord(logger, level, "", 0, msg, None, None))
    finally:
        if lock is not None:
            lock.release()


# An event's text, parsed once: its ``%(name)s`` and ``%(name).Nf`` fields
# and the literal text between them.  ``text % shown`` parses the text on
# every call and makes a new string of each field's name to look it up:
# ~9,600 instructions for a session's end line (callgrind).
_FIELD = re.compile(r"%\((\w+)\)(s|\.\d+f)")
#: text -> (literal before each field, field, its format spec), the literal after
#: the last; None for a text with a conversion `_render` leaves to ``%``
_TEMPLATES: dict[str, tuple[tuple[tuple[str, str, str], ...], str] | None] = {}
_MAX_TEMPLATES = 256  # event texts are refd's own literals; a bound all the same


def _template(text: str) -> tuple[tuple[tuple[str, str, str], ...], str] | None:
    if "%" in _FIELD.sub("", text):  # "%%", "%(x)d", ...: left to ``%``
        return None
    parts = []
    start = 0
    for match in _FIELD.finditer(text):
        parts.append((text[start : match.start()], match.group(1), match.group(2)))
        start = match.end()
    return tuple(parts), text[start:]


def _render(text: str, fields: dict[str, Any]) -> str:
    """``text % shown``, the same string, from the text's parsed template; ``shown``
    is ``fields`` with each value as `_shown` shows it, made only for ``%``."""
    if text in _TEMPLATES:
        template = _TEMPLATES[text]
    else:
        template = _template(text)
        if len(_TEMPLATES) < _MAX_TEMPLATES:
            _TEMPLATES[text] = template
    if template is None:
        return text % _shown_all(fields)
    parts, tail = template
    out = []
    try:
        for literal, key, spec in parts:
            out.append(literal)
            value = _shown(fields[key])
            out.append(str(value) if spec == "s" else format(value, spec))
    except (KeyError, TypeError, ValueError):
        return text % _shown_all(fields)  # raises as it always did
    out.append(tail)
    return "".join(out)


def _sole_line_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The handler a record of ``logger`` at ``level`` reaches, if it is the only one,
    is refd's own, and nothing on the way (a filter, a disabled logger) looks at it."""
    if logger.filters or logger.disabled:
        return None
    found: LineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not LineHandler
                or handler.filters
                or level < handler.level
                or not isinstance(handler.formatter, EventFormatter)
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


class EventFormatter(logging.Formatter):
    """A formatter that can also render an event from its parts, without a record."""

    def line(
        self, created: float, level: int, logger: str, event: str, msg: str, fields: dict[str, Any]
    ) -> str:
        raise NotImplementedError


class _JsonFormatter(EventFormatter):
    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "event", None)
        fields = getattr(record, "fields", None)
        out = self._head(record.created, record.msecs, record.levelname, record.name)
        if name is not None and isinstance(fields, dict):
            out["event"] = name
            out.update(fields)
        out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)

    def line(
        self, created: float, level: int, logger: str, event: str, msg: str, fields: dict[str, Any]
    ) -> str:
        msecs = int((created - int(created)) * 1000)
        out = self._head(created, msecs, logging.getLevelName(level), logger)
        out["event"] = event
        out.update(fields)
        out["msg"] = msg
        return json.dumps(out, ensure_ascii=False, default=str)

    @staticmethod
    def _head(created: float, msecs: float, levelname: str, logger: str) -> dict[str, Any]:
        return {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z",
            "level": levelname.lower(),
            "logger": logger,
        }


class _TextFormatter(EventFormatter):
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

    def line(
        self, created: float, level: int, logger: str, event: str, msg: str, fields: dict[str, Any]
    ) -> str:
        when = self._time_text(created, (created - int(created)) * 1000)
        return f"{when} {logging.getLevelName(level)} {logger}: {msg}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time_text(record.created, record.msecs)

    def _time_text(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        # the milliseconds' three digits without a format spec: ``:03d``
        # calls ``int.__format__`` from compiled code, and this method cost
        # ~4,700 instructions a line with it, ~1,050 without (callgrind)
        return f"{self._second_text},{str(1000 + int(msecs))[1:]}"


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr in ``fmt`` (text, json) at ``level`` and above."""
    # The formats print none of these: don't pay for them on every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor the caller's file, line and function: without a source file to
    # look for, Logger.findCaller (a frame walk per record) is skipped.
    logging._srcfile = None
    handler = LineHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
