"""The deadlines of the IMAP sessions' waits, kept by one timer task per trio run.

A session waits for its client under a deadline that moves at every read
(the idle, login and command timeouts) and at a write that has to wait (the
write timeout): `refd.server`.  Moving a trio cancel scope's deadline runs a
generator-based context manager, raises and catches a ``StopIteration``
(with its traceback) and pushes an entry on the run loop's heap: about
13,000 instructions a move (callgrind, four moves per login-referral
session: 54,000 of its 739,000 instructions).  Here a session's `Wait`
holds its deadline, moving it is setting an attribute, and the run's timer
task interrupts a wait whose deadline has passed: it sets `Wait.fired` and
calls the wait's ``interrupt`` (`refd.server` passes trio's
``notify_closing`` of the session's socket, or a cancel scope's
``cancel`` for a session over another stream).

The timer's heap holds at most one live entry per wait: the earliest time
the wait has to be looked at.  A deadline that moves later (the usual case:
an idle timeout starts again at every read) leaves the entry as it is; when
that entry comes up, the timer finds the real deadline later and pushes a
new entry for it.  A deadline that moves earlier pushes a new entry (the old
one goes stale) and wakes the timer sooner if it is now the earliest.  The
entry of a session that ended goes stale too; the heap is rebuilt without
stale entries once they are the majority, so it stays about as long as the
number of open sessions.  A timeout fires as a trio deadline would: at the
first pass of the run loop after its time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from heapq import heapify, heappop, heappush

import trio

__all__ = ["Deadlines", "Wait", "deadlines"]

#: stale heap entries tolerated before a rebuild is considered
_PRUNE_MIN = 1024


class Wait:
    """One session's wait deadline: ``interrupt()`` is called when ``when`` passes."""

    __slots__ = ("_entry", "fired", "interrupt", "name", "when")

    def __init__(self, interrupt: Callable[[], object], name: str = "") -> None:
        #: ends the wait under way, if there is one (a socket's notify_closing
        #: does nothing otherwise), so the waiter checks ``fired`` after each wait
        self.interrupt = interrupt
        #: set by the timer just before it calls ``interrupt``
        self.fired = False
        #: when the wait under way ends, on trio's clock (inf: not waiting)
        self.when = math.inf
        #: which limit ``when`` is (the caller's name for it)
        self.name = name
        #: the time of this wait's live heap entry (inf: none)
        self._entry = math.inf

    def clear(self) -> None:
        """The wait is over: no deadline until the next `Deadlines.set`."""
        self.when = math.inf


class Deadlines:
    """The heap of wait deadlines of one trio run, and the task that keeps them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Wait]] = []
        self._order = itertools.count()  # ties: first pushed, first looked at
        self._stale = 0  # entries in the heap that no longer count
        self._sleep = trio.CancelScope()  # the timer's sleep, until the earliest entry
        #: trio's time (the run's clock): one Python call where
        #: ``trio.current_time()`` makes three, and a session asks it thrice
        self.now = trio.lowlevel.current_clock().current_time

    def set(self, wait: Wait, when: float, name: str) -> None:
        """Interrupt ``wait`` at ``when`` (trio's clock) unless the deadline moves first."""
        wait.when = when
        wait.name = name
        if when < wait._entry:
            if wait._entry != math.inf:
                self._stale += 1
            self._push(wait, when)
            # Not min(): setting a scope's deadline is the cost this module saves.
            if when < self._sleep.deadline:  # noqa: PLR1730
                self._sleep.deadline = when

    def forget(self, wait: Wait) -> None:
        """``wait``'s session is over: its deadline no longer counts."""
        wait.when = math.inf
        if wait._entry != math.inf:
            wait._entry = math.inf
            self._stale += 1
            if self._stale > _PRUNE_MIN and 2 * self._stale > len(self._heap):
                self._prune()

    def __len__(self) -> int:
        """Waits with a live entry (tests: nothing is left behind)."""
        return len(self._heap) - self._stale

    def _prune(self) -> None:
        """Rebuild the heap with one entry per wait that has a live one.

        A stale entry can carry the same time as its wait's live entry (the
        deadline moved earlier, then back to that time after the timer
        looked at it): keep one of the two, so every entry left is live.
        """
        kept: list[tuple[float, int, Wait]] = []
        seen: set[Wait] = set()
        for entry in self._heap:
            wait = entry[2]
            if entry[0] == wait._entry and wait not in seen:
                seen.add(wait)
                kept.append(entry)
        heapify(kept)
        self._heap = kept
        self._stale = 0

    def _push(self, wait: Wait, when: float) -> None:
        wait._entry = when
        heappush(self._heap, (when, next(self._order), wait))

    async def run(self) -> None:
        """Interrupt the waits whose deadline passed, until the run ends."""
        while True:
            self._sleep = trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf)
            with self._sleep:
                await trio.sleep_forever()
            now = self.now()
            heap = self._heap
            while heap and heap[0][0] <= now:
                when, _, wait = heappop(heap)
                if when != wait._entry:
                    self._stale -= 1
                    continue
                wait._entry = math.inf
                if wait.when <= now:
                    wait.fired = True
                    wait.interrupt()
                elif wait.when != math.inf:
                    self._push(wait, wait.when)


_RUN_DEADLINES: trio.lowlevel.RunVar[Deadlines] = trio.lowlevel.RunVar("refd_deadlines")


def deadlines() -> Deadlines:
    """This trio run's `Deadlines`, its timer started as a system task at first use."""
    try:
        return _RUN_DEADLINES.get()
    except LookupError:
        found = Deadlines()
        _RUN_DEADLINES.set(found)
        trio.lowlevel.spawn_system_task(found.run, name="refd.deadlines")
        return found
