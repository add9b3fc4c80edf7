"""``refd auth``: the password check and route the daemon would make, and its exit codes.

With the demo config (passwd-file) and with auth_http against the
nginx-style service of tests/auth_http_service.py, run in a thread of its
own (``refd auth`` runs trio itself). Exit codes: 0 OK and routed, 3
failed, 6 unavailable or no route, 2 usage, 1 config error.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from refd.cli import main
from tests.auth_http_service import AuthService

DEMO_ROUTING = Path(__file__).resolve().parents[1] / "refd" / "demo" / "routing.yaml"
ALICE_LINE = DEMO_ROUTING.read_text().splitlines().index("  - user: alice") + 1
SECRET = "top secret%"


def refd_auth(
    capsys: pytest.CaptureFixture[str], *args: str, password: str = SECRET
) -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REFD_TEST_PW", password)
        code = main(["auth", *args])
    out, err = capsys.readouterr()
    assert password not in out + err
    return code, out, err


# -- the demo config: passwd-file -------------------------------------------------------


def test_demo_ok_names_the_route_and_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = refd_auth(capsys, "alice", "--password-env", "REFD_TEST_PW", password="secret")
    assert code == 0
    assert out == (
        "OK alice: passwd-file: password ok; route: mail1 imap://alice;AUTH=*@mail1.example.org/ "
        f'(login refer) from users[1] user "alice" ({DEMO_ROUTING}:{ALICE_LINE}); '
        "directory requests: none\n"
    )


def test_demo_wrong_password_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = refd_auth(capsys, "alice", "--password-env", "REFD_TEST_PW")
    assert (code, out) == (
        3,
        "FAILED alice: passwd-file: password mismatch; directory requests: none\n",
    )


def test_demo_password_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"secret\r\nignored\n")
    code, out, _ = refd_auth(
        capsys, "bob", "--password-file", str(tmp_path / "pw"), password="secret"
    )
    assert code == 0
    assert out.startswith("OK bob: passwd-file: password ok; route: mail2 ")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["auth", "alice"])  # no password option
    assert exit_.value.code == 2
    assert main(["auth", "alice", "--password-env", "REFD_TEST_UNSET_VARIABLE"]) == 2
    assert main(["auth", "alice", "--password-file", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "refd auth: the environment variable REFD_TEST_UNSET_VARIABLE is not set" in err
    assert f"refd auth: cannot read {tmp_path / 'missing'}: No such file or directory" in err


def test_a_config_error_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "refd.yaml").write_text("routing: routing.yaml\n")
    code, _, err = refd_auth(
        capsys, "-c", str(tmp_path / "refd.yaml"), "alice", "--password-env", "REFD_TEST_PW"
    )
    assert code == 1
    assert err.startswith(f"refd: {tmp_path / 'refd.yaml'}:")


# -- auth_http ----------------------------------------------------------------------------

ROUTING = """\
version: 1
servers:
  mail1: {host: 192.0.2.10}
  mail2: {host: 192.0.2.20, port: 10143}
users:
  - user: bob
    server: mail2
"""


@pytest.fixture
def http_service() -> Iterator[AuthService]:
    """The service in a thread with its own trio loop; ``port`` set."""
    svc = AuthService(
        {"alice": SECRET, "bob": "b0b", "carol": "c4rol-pw"},
        homes={"alice": ("192.0.2.10", "143"), "carol": ("192.0.2.99", "143")},
    )
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken]] = queue.Queue()
    stop = trio.Event()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(svc.serve)
            started.put((port, trio.lowlevel.current_trio_token()))
            await stop.wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    svc.port, token = started.get(timeout=10)  # type: ignore[attr-defined]
    yield svc
    trio.from_thread.run_sync(stop.set, trio_token=token)
    thread.join(timeout=10)


def http_config(tmp_path: Path, port: int, timeout_s: float = 2) -> str:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    (tmp_path / "refd.yaml").write_text(
        "routing: routing.yaml\n"
        "auth:\n"
        "  source: auth_http\n"
        "  auth_http:\n"
        f"    url: http://127.0.0.1:{port}/auth\n"
        f"    timeout_s: {timeout_s}\n"
        "listeners:\n"
        "  - {address: 127.0.0.1, port: 0}\n"
    )
    return str(tmp_path / "refd.yaml")


def test_auth_http_ok_names_the_home_and_the_service(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, http_service: AuthService
) -> None:
    port = http_service.port  # type: ignore[attr-defined]
    config = http_config(tmp_path, port)
    code, out, _ = refd_auth(capsys, "-c", config, "alice", "--password-env", "REFD_TEST_PW")
    url = f"http://127.0.0.1:{port}/auth"
    assert code == 0
    assert out.startswith(
        "OK alice: auth_http: service accepted credentials, Auth-Server 192.0.2.10:143; "
        "route: mail1 imap://alice;AUTH=*@192.0.2.10/ (login refer) "
        f"from auth_http {url} names '192.0.2.10:143'; directory requests: http ok "
    )
    assert http_service.seen[0].header(b"Auth-Pass") == b"top%20secret%25"


def test_auth_http_table_route_failure_and_no_route(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, http_service: AuthService
) -> None:
    config = http_config(tmp_path, http_service.port)  # type: ignore[attr-defined]
    code, out, _ = refd_auth(
        capsys, "-c", config, "bob", "--password-env", "REFD_TEST_PW", password="b0b"
    )
    assert code == 0
    assert (
        ' route: mail2 imap://bob;AUTH=*@192.0.2.20:10143/ (login refer) from users[1] user "bob" ('
        in out
    )
    code, out, _ = refd_auth(capsys, "-c", config, "bob", "--password-env", "REFD_TEST_PW")
    assert code == 3
    assert out.startswith(
        "FAILED bob: auth_http: service refused: Auth-Status 'Invalid login or password'; "
        "directory requests: http failure "
    )
    # the service names a server the table lacks: the client would get NO [UNAVAILABLE]
    code, out, _ = refd_auth(
        capsys, "-c", config, "carol", "--password-env", "REFD_TEST_PW", password="c4rol-pw"
    )
    assert code == 6
    assert "; no route: auth_http http://127.0.0.1:" in out
    assert "names '192.0.2.99:143': no server of the table; directory requests: http ok " in out


def test_auth_http_unavailable_exits_6(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, http_service: AuthService
) -> None:
    http_service.raw = b"HTTP/1.0 502 Bad Gateway\r\n\r\n"
    config = http_config(tmp_path, http_service.port)  # type: ignore[attr-defined]
    code, out, _ = refd_auth(capsys, "-c", config, "alice", "--password-env", "REFD_TEST_PW")
    assert code == 6
    assert out.startswith("UNAVAILABLE alice: auth_http: http://127.0.0.1:")
    assert "answer not understood: no Auth-Status header; directory requests: http error " in out
    http_service.raw, http_service.delay_s = None, 30  # slower than timeout_s: 1
    config = http_config(tmp_path, http_service.port, timeout_s=1)  # type: ignore[attr-defined]
    code, out, _ = refd_auth(capsys, "-c", config, "alice", "--password-env", "REFD_TEST_PW")
    assert code == 6
    assert "no answer: timed out after 1 s; directory requests: http timeout " in out
