"""``refd probe`` for real: every exit code, against in-process doors and Dovecot.

Each test writes a door's files (daemon config, routing table, passwd-file)
to a tmp dir and runs the whole door in-process (``Daemon.run``, as
tests/interop/test_door_with_dovecot.py does), with private Dovecot
backends behind it. The probe is blocking, so it runs in a thread via
``refd.probe.run`` with arguments from its own ``add_arguments`` parser
(the ``refd probe`` CLI wiring is not needed).

The loop (exit 5) is real too: two refd doors whose routing tables refer
to each other. refd refuses a server at its *own* address at load, but it
cannot know that another door refers back, which is exactly the loop the
probe must catch (RFC 2221 §3).

The helpers here (``write_door``, ``start_door``, ``probe``) are shared
with tests/interop/test_e2e.py.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from refd.config.loader import load_config, load_service
from refd.daemon import Daemon
from refd.probe import add_arguments, run
from tests.procs import free_port, free_ports

from .conftest import USERS, DovecotFactory

pytestmark = pytest.mark.interop

PLAIN_LISTENER = "  - {name: imap, address: 127.0.0.1, port: 0, tls: none}\n"


def write_door(
    directory: Path,
    routing: str,
    *,
    passwords: Mapping[str, str] = USERS,
    listeners: str = PLAIN_LISTENER,
    tls: tuple[bytes, bytes] | None = None,
    trusted_networks: Sequence[str] | None = None,
) -> Path:
    """A door's daemon config, routing table and passwd-file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "routing.yaml").write_text(routing)
    lines = "".join(f"{user}:{{PLAIN}}{password}\n" for user, password in passwords.items())
    (directory / "users.passwd").write_text(lines)
    extra = ""
    if tls is not None:
        (directory / "cert.pem").write_bytes(tls[0])
        (directory / "key.pem").write_bytes(tls[1])
        extra += "tls:\n  cert: cert.pem\n  key: key.pem\n"
    if trusted_networks is not None:
        extra += f"trusted_networks: [{', '.join(trusted_networks)}]\n"
    (directory / "refd.yaml").write_text(
        "routing: routing.yaml\n"
        "auth:\n"
        "  source: passwd-file\n"
        "  passwd_file: users.passwd\n"
        "  failure_delay_s: 0.01\n"
        "  failure_delay_max_s: 0.01\n"
        f"listeners:\n{listeners}"
        f"{extra}"
    )
    return directory / "refd.yaml"


@dataclass
class Door:
    daemon: Daemon
    ports: list[int]

    @property
    def port(self) -> int:
        return self.ports[0]


async def start_door(nursery: trio.Nursery, config_file: Path) -> Door:
    """Run the whole door in-process; return once it listens."""
    config = load_config(config_file)
    daemon = Daemon(config, load_service(config))
    bound = await nursery.start(
        lambda task_status: daemon.run(signals=False, task_status=task_status)
    )
    return Door(daemon, [listener.port for listener in bound[0]])


@dataclass
class Probed:
    """One probe run: exit code, the JSON document (or human text), stderr."""

    code: int
    out: str
    err: str
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> dict[str, Any]:
        return self.doc["result"]  # type: ignore[no-any-return]

    @property
    def hops(self) -> list[dict[str, Any]]:
        return self.doc["hops"]  # type: ignore[no-any-return]

    def steps(self) -> list[tuple[int, str, str]]:
        """(hop, command, response) of every step, in order."""
        return [(h["hop"], s["command"], s["response"]) for h in self.hops for s in h["steps"]]


def probe_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refd probe")
    add_arguments(parser)
    return parser


async def probe(
    tmp: Path, door: str, user: str, password: str, *argv: str, human: bool = False
) -> Probed:
    """``refd probe --door DOOR --user USER ... --json`` in a thread."""
    secret = tmp / f"password-{user}"
    secret.write_text(password + "\n")
    args = probe_parser().parse_args(
        [
            "--door",
            door,
            "--user",
            user,
            "--password-file",
            str(secret),
            "--timeout",
            "5",
            *argv,
            *([] if human else ["--json"]),
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(60):
        code = await trio.to_thread.run_sync(lambda: run(args, stdout=out, stderr=err))
    probed = Probed(code, out.getvalue(), err.getvalue())
    if not human:
        probed.doc = json.loads(probed.out)
        assert probed.result["exit_code"] == code
    assert password not in probed.out + probed.err
    return probed


def routing(servers: Mapping[str, tuple[str, int]], users: str, extra: str = "") -> str:
    lines = ["version: 1", "servers:"]
    lines += [f"  {name}: {{host: {host}, port: {port}}}" for name, (host, port) in servers.items()]
    return "\n".join(lines) + "\nusers:\n" + users + extra


# -- exit 0 ---------------------------------------------------------------------------


async def test_exit_0_login_referral_then_select_inbox_on_home(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    carol = 'Pässwörd "quoted" \\ back'  # 8-bit: a literal, at the door and the backend
    users = {**USERS, "carol": carol}
    home = dovecot_factory(users=users)
    decoy = dovecot_factory(users=users)
    for n in range(3):
        home.seed("alice", "INBOX", f"home {n}")
    decoy.seed("alice", "INBOX", "decoy")
    table = routing(
        {"home": home.address, "decoy": decoy.address},
        "  - user: alice\n    server: home\n  - default: true\n    server: home\n",
    )
    door = await start_door(nursery, write_door(tmp_path / "door", table, passwords=users))
    where = f"127.0.0.1:{door.port}"
    url = f"imap://alice;AUTH=*@127.0.0.1:{home.port}/"

    got = await probe(tmp_path, where, "alice", USERS["alice"])
    assert got.code == 0
    assert got.result["data"] == {"exists": 3, "uidvalidity": got.result["data"]["uidvalidity"]} | {
        "access": "READ-WRITE"
    }
    assert got.result["server"] == f"127.0.0.1:{home.port}"
    assert got.result["referrals"] == 1
    steps = got.steps()
    assert steps[1] == (
        1,
        "LOGIN alice",
        f"NO [REFERRAL {url}] Your mail is on 127.0.0.1; connect there.",
    )
    assert [(hop, command) for hop, command, _ in steps] == [
        (1, "connect"),
        (1, "LOGIN alice"),
        (2, "connect"),
        (2, "LOGIN alice"),
        (2, "SELECT INBOX"),
    ]
    assert got.hops[1]["url"] == url

    # The human form: one line per step, then the result.
    text = await probe(tmp_path, where, "alice", USERS["alice"], human=True)
    assert text.code == 0
    lines = text.out.splitlines()
    assert lines[1] == (
        f"hop 1 door {where}: LOGIN alice -> NO [REFERRAL {url}] Your mail is on 127.0.0.1; "
        "connect there."
    )
    assert re.fullmatch(rf"hop 2 {re.escape(url)}: SELECT INBOX -> OK \[READ-WRITE\] .*", lines[4])
    assert lines[-1].startswith(
        f"result: ok (exit 0): SELECT INBOX at 127.0.0.1:{home.port} as alice: EXISTS 3, "
        "UIDVALIDITY "
    )

    # An 8-bit password with quotes and a backslash goes through as a literal
    # (imapclient cannot even send it, so the probe's own APPEND seeds carol).
    got = await probe(tmp_path, where, "carol", carol, "--command", "APPEND")
    assert got.code == 0 and got.result["server"] == f"127.0.0.1:{home.port}"
    got = await probe(tmp_path, where, "carol", carol)
    assert got.code == 0 and got.result["data"]["exists"] == 1


# -- exit 3 ---------------------------------------------------------------------------


async def test_exit_3_authentication_failed_at_door_or_backend(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    backend = dovecot_factory(users={"alice": "alice-password", "dave": "backend-password"})
    table = routing({"home": backend.address}, "  - default: true\n    server: home\n")
    passwords = {"alice": "alice-password", "dave": "door-password"}
    door = await start_door(nursery, write_door(tmp_path / "d", table, passwords=passwords))
    where = f"127.0.0.1:{door.port}"

    got = await probe(tmp_path, where, "alice", "wrong-password")
    assert got.code == 3
    assert [h["hop"] for h in got.hops] == [1]
    assert got.result["message"] == (
        "LOGIN as alice at the door: NO [AUTHENTICATIONFAILED] Authentication failed."
    )

    # The door accepts dave's password, his backend does not.
    got = await probe(tmp_path, where, "dave", "door-password")
    assert got.code == 3
    assert got.steps()[-1][:2] == (2, "LOGIN dave")
    assert got.result["message"].startswith(f"LOGIN as dave at 127.0.0.1:{backend.port}: NO ")


# -- exit 4 ---------------------------------------------------------------------------


async def test_exit_4_no_referral_where_one_was_expected(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    backend = dovecot_factory()
    backend.seed("alice", "INBOX", "one")
    # No default rule: erin's password is right, but the table has no route.
    table = routing({"home": backend.address}, "  - user: alice\n    server: home\n")
    passwords = {**USERS, "erin": "erin-password"}
    door = await start_door(nursery, write_door(tmp_path / "d", table, passwords=passwords))
    got = await probe(tmp_path, f"127.0.0.1:{door.port}", "erin", "erin-password")
    assert got.code == 4
    assert got.result["message"] == (
        "LOGIN as erin at the door: NO [UNAVAILABLE] No mail server is configured for this account."
    )

    # A plain IMAP server as the "door": it refuses a mailbox without a referral -> 4 ...
    plain = f"127.0.0.1:{backend.port}"
    got = await probe(tmp_path, plain, "alice", USERS["alice"], "--mailbox", "Nope")
    assert got.code == 4
    assert got.result["message"].startswith(
        "SELECT Nope at the door as alice: NO Mailbox doesn't exist: Nope"
    )
    # ... and serves one it has itself: 0, with no referral, and the output says so.
    got = await probe(tmp_path, plain, "alice", USERS["alice"])
    assert got.code == 0 and got.result["referrals"] == 0
    assert got.result["data"]["exists"] == 1
    assert got.result["message"].endswith("(answered by the door itself: no referral)")


# -- exit 5 ---------------------------------------------------------------------------


async def test_exit_5_referral_loop_between_two_doors_and_max_hops(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    backend = dovecot_factory()
    port_a, port_b = free_ports(2)
    a, b = ("127.0.0.1", port_a), ("127.0.0.1", port_b)
    # Door A sends everyone to door B; door B sends alice back to A, bob to Dovecot.
    listener = "  - {{name: imap, address: 127.0.0.1, port: {}, tls: none}}\n"
    table_a = routing({"door_b": b}, "  - default: true\n    server: door_b\n")
    table_b = routing(
        {"door_a": a, "home": backend.address},
        "  - user: alice\n    server: door_a\n  - user: bob\n    server: home\n",
    )
    await start_door(
        nursery, write_door(tmp_path / "a", table_a, listeners=listener.format(port_a))
    )
    await start_door(
        nursery, write_door(tmp_path / "b", table_b, listeners=listener.format(port_b))
    )

    got = await probe(tmp_path, f"127.0.0.1:{port_a}", "alice", USERS["alice"])
    assert got.code == 5
    back = f"imap://alice;AUTH=*@127.0.0.1:{port_a}/"
    assert got.result["message"] == f"referral loop: {back} was already visited at hop 1"
    assert [h["hop"] for h in got.hops] == [1, 2]

    # Three hops (door A, door B, Dovecot) work by default ...
    got = await probe(tmp_path, f"127.0.0.1:{port_a}", "bob", USERS["bob"])
    assert got.code == 0 and got.result["referrals"] == 2
    assert got.result["server"] == f"127.0.0.1:{backend.port}"
    # ... and are one too many with --max-hops 2.
    got = await probe(tmp_path, f"127.0.0.1:{port_a}", "bob", USERS["bob"], "--max-hops", "2")
    assert got.code == 5
    assert got.result["message"] == (
        f"more than --max-hops 2 hops: not following imap://bob;AUTH=*@127.0.0.1:{backend.port}/"
    )


# -- exit 6, 7, 8 ---------------------------------------------------------------------


async def test_exit_6_backend_stopped_and_7_mailbox_missing(
    nursery: trio.Nursery, tmp_path: Path, dovecot_factory: DovecotFactory
) -> None:
    backend = dovecot_factory()
    table = routing({"home": backend.address}, "  - default: true\n    server: home\n")
    door = await start_door(nursery, write_door(tmp_path / "d", table))
    where = f"127.0.0.1:{door.port}"

    got = await probe(tmp_path, where, "alice", USERS["alice"], "--mailbox", "Missing")
    assert got.code == 7
    assert got.steps()[-1][:2] == (2, "SELECT Missing")
    assert got.result["message"].startswith(
        f"SELECT Missing at 127.0.0.1:{backend.port} as alice: NO Mailbox doesn't exist: Missing"
    )

    backend.stop()
    got = await probe(tmp_path, where, "alice", USERS["alice"])
    assert got.code == 6
    url = f"imap://alice;AUTH=*@127.0.0.1:{backend.port}/"
    assert got.hops[-1]["error"] == "connection refused"
    assert got.result["message"] == (
        f"no server of the referral at hop 1 answered ({url}: connection refused)"
    )


async def test_exit_8_door_unreachable(tmp_path: Path) -> None:
    where = f"127.0.0.1:{free_port()}"
    got = await probe(tmp_path, where, "alice", "no-such-door-password")
    assert got.code == 8
    assert got.result["message"] == f"door {where}: connection refused"
