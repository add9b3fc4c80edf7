"""refd: an IMAP front door that answers with login and mailbox referrals.

Packages: ``protocol`` (sans-IO IMAP) and ``routing`` (the routing table)
are pure and import only each other, ``refd.config.tree`` and the standard library
without I/O; ``auth`` holds the password sources and their registry.  The
modules here are the rest: values (``runtime``, ``addresses``, ``limits``,
``throttle``), the config loader (``config``, ``tree``, ``yamltree``; no trio,
no Prometheus) and the trio side (``door``, ``session``, ``server``,
``daemon``, ``supervisor``, ``cli``).  The README's Development section shows
the layout.
"""

__version__ = "0.1.0"
