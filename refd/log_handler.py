"""The daemon's log handler: one line per record or event, written and flushed in place.

Apart from `refd.logs` because a compiled build compiles that module and
not this one: a ``logging.StreamHandler`` subclass compiled by mypyc (mypy
2.4.1) crashed the garbage collector after the handler's lock was taken
(``setStream``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refd.logs import EventFormatter

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
            self._write(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_event(
        self, level: int, logger: str, event: str, msg: str, fields: dict[str, Any]
    ) -> None:
        """Write event ``event`` as :meth:`emit` would write its record (`refd.logs.log_event`)."""
        formatter: EventFormatter = self.formatter  # type: ignore[assignment]
        self.acquire()
        try:
            self._write(formatter.line(time.time(), level, logger, event, msg, fields))
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.LogRecord(logger, level, "", 0, msg, None, None))
        finally:
            self.release()

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
