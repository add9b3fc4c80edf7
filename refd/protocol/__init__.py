"""The IMAP protocol core, sans-IO: bytes in, events out, responses to bytes.

``grammar`` (tokens), ``commands`` (one frozen dataclass per command),
``responses``, ``connection`` (``receive_data`` / ``next_event`` / ``send``,
state and limits), ``listing`` (LIST patterns) and ``mutf7``.  Pure: it may
import only the standard library without I/O and itself; no trio, socket,
ssl, yaml or prometheus (tests/protocol/test_responses.py checks).
"""
