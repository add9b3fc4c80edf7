"""The login throttle over real sockets: TLS clients from real loopback addresses.

Only 127.0.0.1 is trusted, so clients binding 127.0.1.x (one /24) and
127.0.2.x (another) are throttled like internet clients; delays are read
from the door's ``auth ... delay=`` log lines.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from refd.config.loader import DaemonConfig
from refd.door import DoorState
from refd.runtime import Service
from tests.conftest import hits
from tests.logins import ALICE, NO, AuthLine, client_context, parse_auth, start_tls_door, tls_login
from tests.procs import in_thread

BASE_S, MAX_S = 0.05, 0.2
BOB = (
    b"a1 OK [REFERRAL imap://bob;AUTH=*@mail2.example.org:10143/] "
    b"Logged in. Your mailboxes are on mail2.example.org.\r\n"
)


@dataclasses.dataclass
class Door:
    port: int
    door: DoorState
    ctx: ssl.SSLContext


@pytest.fixture
async def tls_door(
    nursery: trio.Nursery, tmp_path: Path, demo_config: DaemonConfig, demo_service: Service
) -> Door:
    ca = trustme.CA()
    door = DoorState()
    port = await start_tls_door(
        nursery, tmp_path, ca, demo_config, demo_service, door, base_s=BASE_S, max_s=MAX_S
    )
    return Door(port, door, client_context(ca))


def auth_lines(caplog: pytest.LogCaptureFixture) -> list[AuthLine]:
    found = (parse_auth(r.getMessage()) for r in caplog.records if r.name == "refd.session")
    return [line for line in found if line is not None]


async def test_a_good_login_of_his_own_does_not_reset_the_guesser(
    tls_door: Door, caplog: pytest.LogCaptureFixture
) -> None:
    # Finding 6: one wrong guess at alice, one good login as bob (the
    # attacker's own account), again and again, from one address.  A success
    # used to reset the address (0.05 s for every guess); now it does not.
    caplog.set_level(logging.INFO, logger="refd.session")
    answers = []
    for _ in range(4):
        answers.append(
            await in_thread(tls_login, tls_door.port, tls_door.ctx, "127.0.1.9", "alice", "guess")
        )
        answers.append(
            await in_thread(tls_login, tls_door.port, tls_door.ctx, "127.0.1.9", "bob", "secret")
        )
    assert answers == [NO, BOB] * 4
    lines = auth_lines(caplog)
    assert [(a.result, a.delay) for a in lines] == [
        ("failed", 0.05), ("ok", 0.05), ("failed", 0.1), ("ok", 0.1),
        ("failed", 0.2), ("ok", 0.2), ("failed", 0.2), ("ok", 0.2),
    ]  # fmt: skip
    assert {a.addr for a in lines} == {"127.0.1.9"}
    assert hits(tls_door.door, "auth_failures") == 3
    registry = tls_door.door.metrics.registry
    assert (
        registry.get_sample_value(
            "refd_auth_throttled_total", {"result": "success", "rule": "address"}
        )
        == 4
    )


async def test_spraying_from_one_network_is_slowed_a_user_elsewhere_is_not(
    tls_door: Door, caplog: pytest.LogCaptureFixture
) -> None:
    # 200 user names (alice among them) from 50 addresses of 127.0.1.0/24,
    # four names per address, the addresses all at once.  Per address that
    # is 0.05, 0.1, 0.2, 0.2 s; the network's count slows even each
    # address's first guess.  Meanwhile alice logs in from 127.0.2.7.
    caplog.set_level(logging.DEBUG, logger="refd.session")  # a plain success is DEBUG
    names = ["alice", *(f"user{i}" for i in range(1, 200))]
    answers: list[bytes] = []
    limiter = trio.CapacityLimiter(50)

    async def sprayer(k: int) -> None:
        for name in names[k::50]:
            answer = await trio.to_thread.run_sync(
                tls_login, tls_door.port, tls_door.ctx, f"127.0.1.{k + 1}", name, "Summer2024!",
                limiter=limiter,
            )  # fmt: skip
            answers.append(answer)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for k in range(50):
                nursery.start_soon(sprayer, k)
            while sum(a.result == "failed" for a in auth_lines(caplog)) < 30:
                await trio.sleep(0.01)
            legit = await in_thread(
                tls_login, tls_door.port, tls_door.ctx, "127.0.2.7", "alice", "secret"
            )
            spraying = len(answers) < 200
    assert legit == ALICE
    assert spraying, "alice's login should come while the spraying goes on"
    assert answers == [NO] * 200
    lines = auth_lines(caplog)
    failures = [a for a in lines if a.result == "failed"]
    assert len(failures) == 200
    # Only the network's first 10 failures wait the base delay ...
    assert sum(a.delay == BASE_S for a in failures) <= 10
    # ... so most addresses' very first guess is already slowed, which a
    # per-address count alone never does.
    first = {}
    for a in failures:
        first.setdefault(a.addr, a)
    assert len(first) == 50
    assert sum(a.delay > BASE_S for a in first.values()) >= 40
    assert sum(a.rule == "network" for a in first.values()) >= 40
    # alice, sprayed too, is not delayed from her own network.
    (ok,) = [a for a in lines if a.result == "ok"]
    assert (ok.addr, ok.delay, ok.rule) == ("127.0.2.7", 0.0, "none")
