"""The daemon configuration: files in, validated frozen values out.

- ``loader``: the daemon config file (listeners, limits, auth, throttle,
  where the routing table is) -> :class:`~refd.config.loader.DaemonConfig`,
  and ``load_service``, which reads what it points at and builds the
  :class:`~refd.runtime.Service` that goes into service.  ``refd serve``,
  ``refd check`` and a reload all call it, so a file ``check`` accepts is a
  file the daemon accepts.
- ``yamltree``: YAML text -> a tree of raw-text nodes that know their line,
  without YAML 1.1's type guessing.
- ``tree``: the typed reader over those nodes; every error is
  ``file:line: what is wrong``.

``tree`` and ``yamltree`` are pure (the routing table's loader uses them
too); ``loader`` imports no trio and no Prometheus (tests/test_boundaries.py
checks), so tools load a config without an event loop.  This ``__init__``
imports nothing, so that ``refd.routing`` can use ``tree`` without a cycle
through the loader (which itself loads routing tables).
"""
