"""Property-based fuzzing of the parser, the framing and the whole session (CI size).

Each test runs one target of ``tests/fuzz/targets.py`` with a fixed, small
number of examples so the set stays within CI's budget; ``python -m
tests.fuzz.run --minutes N`` runs the same targets for as long as you like.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from refd.limits import Limits
from refd.protocol import commands as c
from refd.protocol.connection import LiteralRequest, ProtocolLimits
from tests.fuzz.targets import TARGETS, frame, run_session

CI = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@CI
@given(TARGETS["parser"].strategy)
def test_parser_answers_a_command_or_a_bad(data: bytes) -> None:
    TARGETS["parser"].check(data)


@CI
@given(TARGETS["mutf7"].strategy)
def test_modified_utf7_round_trips_with_one_spelling(item: tuple[str, str]) -> None:
    TARGETS["mutf7"].check(item)


@CI
@given(TARGETS["mailbox_round_trip"].strategy)
def test_every_printed_mailbox_name_reads_back(name: str) -> None:
    TARGETS["mailbox_round_trip"].check(name)


@CI
@given(TARGETS["framing"].strategy)
def test_framing_never_raises_and_stays_bounded(item: object) -> None:
    TARGETS["framing"].check(item)


@CI
@given(TARGETS["framing_chunking"].strategy)
def test_framing_does_not_depend_on_segmentation(item: object) -> None:
    TARGETS["framing_chunking"].check(item)


@settings(CI, max_examples=150)
@given(TARGETS["session"].strategy)
def test_session_ends_with_bye_and_never_fails_internally(item: dict[str, object]) -> None:
    TARGETS["session"].check(item)


@settings(CI, max_examples=150)
@given(TARGETS["mailbox_session"].strategy)
def test_mailbox_commands_with_edge_names_never_fail_internally(item: dict[str, object]) -> None:
    TARGETS["mailbox_session"].check(item)


# -- what the session properties found (issue 9), kept as named regressions --------------


@pytest.mark.parametrize(
    ("script", "answer"),
    [
        (b'l1 LOGIN bob secret\r\n! SELECT ""\n', b"! NO [CANNOT] "),
        (b"l1 LOGIN carol secret\r\nx RENAME INBOX {0+}\r\n\r\n", b"x NO [CANNOT] "),
    ],
    ids=["select-empty-name", "rename-to-empty-literal"],
)
def test_empty_mailbox_name_found_by_the_session_fuzzer(script: bytes, answer: bytes) -> None:
    out = run_session({"plan": [(script, 0.0)], "address": "127.0.0.1", "limits": Limits()})
    assert answer in out


def test_empty_user_name_found_by_the_session_fuzzer() -> None:
    # With a default user rule, LOGIN "" succeeded (FakeAuth) and then had
    # no URL to refer to: an internal error.
    item = {"plan": [(b'l1 LOGIN "" secret\r\n', 0.0)], "address": "127.0.0.1"}
    out = run_session({**item, "limits": Limits(), "table": "default"})
    assert b"l1 NO [UNAVAILABLE] No mail server is configured for this account.\r\n" in out


# -- what the chunking property found near the line limit --------------------------------

LIMITS = ProtocolLimits(max_line_bytes=512)


def test_line_of_exactly_the_limit_split_between_cr_and_lf() -> None:
    head = b'a LOGIN alice "'
    line = head + b"x" * (512 - len(head) - 1) + b'"'
    assert len(line) == LIMITS.max_line_bytes
    whole = frame(LIMITS, [line + b"\r\n"], eof=False)
    assert whole == [c.Login("a", "alice", "x" * (512 - len(head) - 1))]
    split = frame(LIMITS, [line + b"\r", b"\n"], eof=False)
    assert split == whole


def test_overlong_line_after_a_literal_same_answer_in_any_segmentation() -> None:
    data = b"a1 LOGIN {3}\r\nabc " + b"x" * 600 + b"\r\n"
    whole = frame(LIMITS, [data], eof=False)
    split = frame(LIMITS, [data[:-2], data[-2:]], eof=False)
    assert isinstance(whole[0], LiteralRequest)
    assert split == whole
