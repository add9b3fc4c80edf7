"""The daemon's log handler: one line per record or event, written and flushed in place.

Apart from `refd.logs` because a compiled build compiles that module and
not this one: a ``logging.StreamHandler`` subclass compiled by mypyc (mypy
2.4.1) crashed the garbage collector after the handler's lock was taken
(``setStream``).
"""

from __future__ import annotations

import logging

__all__ = ["LineHandler"]


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose ``emit`` writes and flushes the line in place.

    ``Handler.handle`` already holds the handler's lock around ``emit``;
    ``StreamHandler.flush`` takes it again and asks ``hasattr`` per record
    (~0.5 us).  Its formatter is a `refd.logs.EventFormatter`
    (`refd.logs.setup_logging`).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Write ``line`` and flush; the caller holds the lock (``emit``, `refd.logs.log_event`)."""
        self.stream.write(line + "\n")
        self.stream.flush()
