"""Structured log events: the text line as before, the JSON object with fields."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refd.logs import _render, log_event, setup_logging


def logging_to_a_string(fmt: str) -> io.StringIO:
    """refd's log set-up in ``fmt``, its handler writing to the string returned."""
    setup_logging("info", fmt)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return stream


def render(fmt: str, **fields: object) -> str:
    stream = logging_to_a_string(fmt)
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
    stream = logging_to_a_string("json")
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


FIELDS = {"conn": "c-1", "tls": True, "user": None, "duration_s": 0.25}
TEXT = "session end conn=%(conn)s tls=%(tls)s user=%(user)s duration=%(duration_s).3f"


def both_paths(fmt: str) -> tuple[str, str]:
    """One event's line written directly (refd's handler alone) and from its record
    (another handler listening too)."""
    stream = logging_to_a_string(fmt)
    logger = logging.getLogger("refd.test")
    log_event(logger, logging.INFO, "session_end", TEXT, **FIELDS)
    direct = stream.getvalue()
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    log_event(logger, logging.INFO, "session_end", TEXT, **FIELDS)
    logging.getLogger().removeHandler(other)
    return direct, stream.getvalue()[len(direct) :]


def test_the_direct_text_line_is_the_records_line() -> None:
    direct, from_record = both_paths("text")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    rest = "INFO refd.test: session end conn=c-1 tls=yes user=- duration=0.250\n"
    assert re.fullmatch(stamp + re.escape(rest), direct)
    assert re.fullmatch(stamp + re.escape(rest), from_record)


def test_the_direct_json_line_is_the_records_line() -> None:
    direct, from_record = (json.loads(line) for line in both_paths("json"))
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(stamp, direct.pop("ts")) and re.fullmatch(stamp, from_record.pop("ts"))
    assert (
        direct
        == from_record
        == {
            "level": "info",
            "logger": "refd.test",
            "event": "session_end",
            **FIELDS,
            "msg": "session end conn=c-1 tls=yes user=- duration=0.250",
        }
    )


def test_another_listener_gets_the_record(caplog: pytest.LogCaptureFixture) -> None:
    stream = logging_to_a_string("text")
    logging.getLogger().addHandler(caplog.handler)
    log_event(logging.getLogger("refd.test"), logging.INFO, "session_end", TEXT, **FIELDS)
    [record] = [r for r in caplog.records if r.name == "refd.test"]
    assert (vars(record)["event"], vars(record)["fields"]) == ("session_end", FIELDS)
    assert stream.getvalue().endswith("session end conn=c-1 tls=yes user=- duration=0.250\n")


def test_a_handler_level_and_a_logger_filter_still_hold() -> None:
    stream = logging_to_a_string("text")
    logger = logging.getLogger("refd.test")
    handler = logging.getLogger().handlers[0]
    handler.setLevel(logging.WARNING)
    log_event(logger, logging.INFO, "session_end", TEXT, **FIELDS)
    assert stream.getvalue() == ""
    handler.setLevel(logging.NOTSET)
    drop = logging.Filter("somewhere.else")
    logger.addFilter(drop)
    try:
        log_event(logger, logging.INFO, "session_end", TEXT, **FIELDS)
    finally:
        logger.removeFilter(drop)
    assert stream.getvalue() == ""
    log_event(logger, logging.INFO, "session_end", TEXT, **FIELDS)
    assert stream.getvalue().endswith("duration=0.250\n")


_PIECES = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="%"), max_size=6),
    st.sampled_from(["%%", "%(a)s", "%(b)s", "%(a).3f", "%(b).1f", "%(a)d", "%(c)s", "%(a)r"]),
)
_VALUES = st.one_of(
    st.sampled_from(["-", "yes", "no", None, True, False]),
    st.text(max_size=5),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
)


def _as_shown(value: object) -> object:
    """What an event's text shows of a field: "-" for None, yes/no for booleans."""
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return value


@given(
    pieces=st.lists(_PIECES, max_size=8),
    fields=st.dictionaries(st.sampled_from(["a", "b"]), _VALUES, max_size=2),
)
def test_a_parsed_template_renders_what_percent_renders(
    pieces: list[str], fields: dict[str, object]
) -> None:
    text = "".join(pieces)
    try:
        expected: str | type[Exception] = text % {k: _as_shown(v) for k, v in fields.items()}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # "%(a)d" % {"a": inf}
        expected = type(exc)
    try:
        got: str | type[Exception] = _render(text, fields)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        got = type(exc)
    assert got == expected
