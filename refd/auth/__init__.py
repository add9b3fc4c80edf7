"""Authentication sources: who may log in, behind one small interface.

``base`` is the interface (``AuthSource``, ``AuthRequest``, ``AuthResult``);
``registry`` maps ``auth.source`` to the module that brings each source,
whose ``SPEC`` holds its config keys, parser, builder and watched files;
``schemes`` verifies password hashes.  A source may import ``base``,
``registry``, ``schemes``, ``refd.config.tree``, ``refd.addresses`` and the config
helpers of ``refd.config``; never ``refd.session``, ``refd.server`` or the
metrics (the session counts what a source answers).
"""
