"""Structured log events: the text line as before, the JSON object with fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from refd.logs import log_event, setup_logging


def render(fmt: str, **fields: object) -> str:
    setup_logging("info", fmt)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    log_event(
        logging.getLogger("refd.test"),
        logging.INFO,
        "session_end",
        "session end conn=%(conn)s tls=%(tls)s user=%(user)s duration=%(duration_s).3f",
        **fields,
    )
    return stream.getvalue()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_renders_none_as_dash_and_booleans_as_yes_no() -> None:
    line = render("text", conn="c-1", tls=False, user=None, duration_s=0.25)
    assert line.endswith(" INFO refd.test: session end conn=c-1 tls=no user=- duration=0.250\n")


def test_json_keeps_the_fields_typed() -> None:
    record = json.loads(render("json", conn="c-1", tls=True, user=None, duration_s=0.25))
    assert record["event"] == "session_end"
    assert (record["conn"], record["tls"], record["user"], record["duration_s"]) == (
        "c-1",
        True,
        None,
        0.25,
    )
    assert record["msg"] == "session end conn=c-1 tls=yes user=- duration=0.250"
    assert (record["level"], record["logger"]) == ("info", "refd.test")


def test_a_plain_record_has_no_event() -> None:
    setup_logging("info", "json")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger("refd.test").info("worker %d ready", 3)
    record = json.loads(stream.getvalue())
    assert "event" not in record and record["msg"] == "worker 3 ready"


def test_text_time_is_the_standard_formatters() -> None:
    """The time text, built once a second, reads as logging.Formatter's own."""
    setup_logging("info", "text")
    ours = logging.getLogger().handlers[0].formatter
    assert ours is not None
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for created in (1764600000.0, 1764600000.5, 1764600000.999, 1764600001.001, 1764500000.25):
        record = logging.LogRecord("refd.test", logging.INFO, __file__, 1, "x", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
