"""The auth interface values: what they show and what they hide."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from refd.auth.base import AuthRequest, AuthResult, AuthStatus


def test_request_repr_hides_the_password() -> None:
    request = AuthRequest(
        user="alice", password="hunter2-s3cret", client_address="192.0.2.7", client_port=51234
    )
    shown = (
        "AuthRequest(user='alice', client_address='192.0.2.7', client_port=51234, "
        "local_address=None, local_port=None, session_id=None)"
    )
    assert repr(request) == shown
    assert str(request) == shown
    assert request.password == "hunter2-s3cret"


def test_result_repr_and_status_values() -> None:
    result = AuthResult(AuthStatus.FAILURE, "alice", "password mismatch")
    assert repr(result) == (
        "AuthResult(status=<AuthStatus.FAILURE: 'failure'>, user='alice', "
        "reason='password mismatch', home=None, ops=())"
    )
    assert [s.value for s in AuthStatus] == ["success", "failure", "unavailable"]


@pytest.mark.parametrize(
    ("value", "attribute"),
    [
        (AuthRequest("alice", "secret", "192.0.2.7"), "user"),
        (AuthResult(AuthStatus.SUCCESS, "alice", "password ok"), "status"),
    ],
)
def test_values_are_frozen(value: object, attribute: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, attribute, "bob")


def test_schemes_module_does_no_io_imports() -> None:
    # The scheme code is pure: importing it must not pull in trio.
    code = "import sys, refd.auth.schemes; print('trio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out == "False\n"
