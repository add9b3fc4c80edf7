"""What the door's sessions share across connections: counters, the throttle, stopping.

:class:`DoorState` lives as long as the process (a reload does not replace
it): the connection tracker, the logins in flight, the open sessions, the
login throttle, the metrics and the stop event.  It needs trio and the
metrics, so it is apart from the values in :mod:`refd.runtime`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from refd.limits import ConnectionTracker
from refd.logs import log_event
from refd.metrics import Metrics
from refd.store import Throttle

if TYPE_CHECKING:
    from refd.session import Session

__all__ = ["DoorState"]

log = logging.getLogger("refd.session")


class DoorState:
    """What the door's sessions share across connections (not reloaded)."""

    def __init__(self, metrics: Metrics | None = None, throttle: Throttle | None = None) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.throttle = throttle if throttle is not None else Throttle(self.metrics)
        self.connections = ConnectionTracker()
        #: the public HTTP side's connections (``autodiscovery.limits``)
        self.http_connections = ConnectionTracker()
        self.auth_in_flight = 0
        self.sessions: set[Session] = set()
        #: set by :meth:`stop`: listeners close and sessions are told BYE
        self.stopping = trio.Event()
        #: ``stopping.is_set()`` as an attribute, for the per-read checks of
        #: the sessions: ``is_set`` is a Python call, four a PLAIN session
        self.stopped = False
        #: listeners bound (readiness also needs a table and no drain)
        self.listening = False

    def idle(self) -> bool:
        """Whether this process has no connection open, IMAP or HTTP."""
        return self.connections.total == 0 and self.http_connections.total == 0

    def busy(self) -> bool:
        """Whether this process serves more than one connection or login (`HashClient.busy`)."""
        return self.connections.total + self.http_connections.total > 1 or self.auth_in_flight > 1

    def stop(self) -> None:
        """Begin shutdown: stop accepting, interrupt every idle session."""
        self.stopped = True
        self.stopping.set()
        for session in self.sessions:
            if session.waiting is not None:
                session.waiting.interrupt()

    def limit_hit(
        self, name: str, reason: str, *, conn_id: str, address: str, log_it: bool = True
    ) -> None:
        """Count a hit of limit ``name``; with ``log_it``, log it with its reason.

        The one place every limit is reported: ``refd_limit_hits_total`` by
        name, and one ``limit hit`` line (connections log it once each, see
        :meth:`Session.limit_hit`).  ``reason`` is for the admin: what the
        client did and the setting it ran into; never a password.
        """
        self.metrics.limit_hit(name)
        if log_it:
            log_event(
                log,
                logging.WARNING,
                "limit_hit",
                "limit hit conn=%(conn)s addr=%(client)s limit=%(limit)s reason=%(reason)s",
                conn=conn_id,
                client=address,
                limit=name,
                reason=reason,
            )
