"""Which of refd's modules a build compiles to C with mypyc, and which are loaded compiled.

refd is pure Python.  A build with ``REFD_COMPILE=1`` (``setup.py``)
compiles the modules below, the ones every login-referral session runs
through, with mypyc: the same source, type-checked by ``mypy --strict``,
turned into C extension modules that sit beside the ``.py`` files in the
installed package and are imported instead of them.  A PLAIN session then
executes about a quarter fewer instructions (bench/NOTES.md: 626,709 ->
479,483).  The rest stays interpreted: configuration, reloads, the
supervisor and the other protocols are not per-session work.

Dataclasses: mypyc compiles the methods a class spells out, but the ones
``@dataclass`` generates (``__init__``, ``__eq__``, ``__repr__``) stay
interpreted Python, and a frozen dataclass's ``__init__`` sets each field
through ``object.__setattr__`` from there.  Built that way, an
``AuthRequest`` cost 11,548 instructions and a ``Tagged`` response 4,853;
together the eleven dataclasses a PLAIN session builds cost ~67,000 of its
~483,000 (callgrind, 2026-12-02).  Those classes write their ``__init__``
out, with the dataclass's own parameters in the same order
(tests/test_compiled.py checks that they match), and the compiled build
runs it as C; the dataclass still gives ``__eq__``, ``__repr__`` and
``replace``.

This module is read by ``setup.py`` before refd is installed, so it uses
the standard library only and is never compiled itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

#: the modules a compiled build turns into C extensions.  A class of a
#: compiled module cannot be subclassed outside one (``limits`` is here for
#: ``protocol.connection``'s class).  The log handler is in
#: ``refd.log_handler``, which is not here: a ``logging.StreamHandler``
#: subclass compiled by mypy 2.4.1 crashed the garbage collector after the
#: handler's lock was taken (``setStream``).
MODULES = (
    "refd.addresses",
    "refd.limits",
    "refd.runtime",
    "refd.deadlines",
    "refd.metrics",
    "refd.door",
    "refd.logs",
    "refd.protocol.grammar",
    "refd.protocol.commands",
    "refd.protocol.responses",
    "refd.protocol.connection",
    "refd.routing.model",
    "refd.routing.url",
    "refd.routing.usermap",
    "refd.routing.match",
    "refd.auth.base",
    "refd.auth.trust",
    "refd.auth.schemes",
    "refd.auth.passwd_file",
    "refd.answers",
    "refd.login",
    "refd.session",
    "refd.transport",
    "refd.connection_tasks",
    "refd.server",
)


def sources() -> list[str]:
    """The files of `MODULES`, relative to the project's root (for ``setup.py``)."""
    return [name.replace(".", "/") + ".py" for name in MODULES]


def compiled() -> list[str]:
    """Those of `MODULES` that this installation imports from a compiled extension.

    Found without importing them (``importlib.util.find_spec``: the file a
    module would be loaded from), so it can be asked before start-up.
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and (spec.origin or "").endswith(suffixes):
            found.append(name)
    return found


def describe() -> str:
    """``compiled``, ``interpreted``, or how many of `MODULES` are compiled."""
    count = len(compiled())
    if count == len(MODULES):
        return "compiled"
    if count == 0:
        return "interpreted"
    return f"partly compiled ({count} of {len(MODULES)} hot-path modules)"
