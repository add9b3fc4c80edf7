"""The sans-IO IMAP cores: bytes in, values out, no I/O.

The server side, what a client says to the door and what the door answers:

- ``grammar``: the IMAP tokens (tag, atom, astring, quoted, literal) as
  named character sets and a reader;
- ``commands``: one frozen dataclass per command, parse errors as values;
- ``responses``: tagged, untagged, continuation and BYE responses to bytes;
- ``connection``: ``receive_data`` / ``next_event`` / ``send``, with the
  connection's state and limits;
- ``listing``: LIST pattern matching; ``mutf7``: modified UTF-7.

The client side, what refd says to an IMAP server and how it reads the
answer: ``client``, shared by the ``imap`` auth source and ``refd probe``
(its trio adapter is ``refd.imap_client``).

These modules may import the standard library and each other, nothing
else of refd and nothing that does I/O: no trio, socket, ssl, yaml or
prometheus_client (tests/routing/test_purity.py checks).
"""
