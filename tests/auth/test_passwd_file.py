"""The passwd-file source: parsing, errors with file:line, and authentication under trio."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.hash_threads import HashClient, HashPool, hash_client
from refd.auth.passwd_file import (
    PasswdEntry,
    PasswdFileError,
    PasswdFileSource,
    parse_passwd_file,
)
from refd.auth.schemes import (
    Algorithm,
    PasswordHash,
    UnsupportedScheme,
    check_password,
    parse_password_hash,
)

DEMO_FILE = Path(__file__).parents[2] / "config" / "users.passwd"

# Drepper's vectors: "Hello world!" at 5000 and 10000 rounds.
SHA512_CRYPT_5000 = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS"
    "35inz1"
)
SHA512_CRYPT_10000 = (
    "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy"
    "/YTBmSK6H9qs/y3RnOaw5v."
)
# Openwall's "U*U" at cost 5.
BCRYPT_5 = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"

USERS = f"""\
# test users
alice:{{SHA512-CRYPT}}{SHA512_CRYPT_5000}:1000:1000:Alice:/home/alice:/bin/false:userdb_x=y

Bob:{{PLAIN}}hunter2
  # an indented comment
carol:{{BLF-CRYPT}}{BCRYPT_5}
dave:{{PLAIN}}pass:word:1003
erin:{{PLAIN.B64}}cGFzczp3b3Jk
frank:
grace:!{SHA512_CRYPT_5000}
heidi:{{SHA512-CRYPT}}*
ivan::1008:1008::/home/ivan:
judy:{{PLAIN}}!notlocked
"""


def parse(text: str) -> dict[str, PasswdEntry]:
    return dict(parse_passwd_file(text, "users.passwd").entries)


# --- parsing ------------------------------------------------------------------


def test_parse_keeps_users_with_their_line_and_scheme() -> None:
    table = parse_passwd_file(USERS, "users.passwd")
    summary = {
        key: (e.user, e.line, None if e.password is None else e.password.scheme)
        for key, e in table.entries.items()
    }
    assert summary == {
        "alice": ("alice", 2, "SHA512-CRYPT"),
        "bob": ("Bob", 4, "PLAIN"),
        "carol": ("carol", 6, "BLF-CRYPT"),
        "dave": ("dave", 7, "PLAIN"),
        "erin": ("erin", 8, "PLAIN.B64"),
        "frank": ("frank", 9, None),
        "grace": ("grace", 10, None),
        "heidi": ("heidi", 11, None),
        "ivan": ("ivan", 12, None),
        "judy": ("judy", 13, "PLAIN"),
    }
    assert len(table) == 10
    assert table.file == "users.passwd"


@pytest.mark.parametrize(
    ("login", "canonical"),
    [("alice", "alice"), ("ALICE", "alice"), ("bob", "Bob"), ("BoB", "Bob"), ("mallory", None)],
)
def test_lookup_ignores_case_and_returns_the_file_spelling(
    login: str, canonical: str | None
) -> None:
    entry = parse_passwd_file(USERS, "users.passwd").lookup(login)
    assert (None if entry is None else entry.user) == canonical


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("dave", "pass", True),  # fields split on every ':', as in Dovecot
        ("dave", "pass:word", False),
        ("erin", "pass:word", True),  # the way to store a ':'
        ("judy", "!notlocked", True),  # "!" locks crypt hashes only
    ],
)
def test_colon_and_bang_handling(user: str, password: str, expected: bool) -> None:
    entry = parse(USERS)[user]
    assert entry.password is not None
    assert check_password(entry.password, password) is expected


def test_crlf_line_endings() -> None:
    entries = parse("alice:{PLAIN}secret\r\n\r\nbob:{PLAIN}hunter2\r\n")
    assert entries["alice"].password == parse_password_hash("{PLAIN}secret")
    assert (entries["bob"].line, entries["bob"].password) == (
        3,
        parse_password_hash("{PLAIN}hunter2"),
    )


def test_default_scheme_for_fields_without_prefix() -> None:
    entries = parse_passwd_file("alice:secret\n", "users.passwd", default_scheme="PLAIN").entries
    assert entries["alice"].password == parse_password_hash("{PLAIN}secret")
    with pytest.raises(UnsupportedScheme, match=r"^unsupported scheme NOPE$"):
        parse_passwd_file("alice:{PLAIN}x\n", "users.passwd", default_scheme="NOPE")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("alice\n", 1, "missing ':' after the user name"),
        ("# users\n\n:{PLAIN}x\n", 3, "empty user name"),
        ("alice:{PLAIN}a\nbob:{PLAIN}b\nalice:{PLAIN}c\n", 3,
         "duplicate user 'alice' (first defined on line 1)"),
        ("Alice:{PLAIN}a\n\nALICE:{PLAIN}c\n", 3,
         "duplicate user 'ALICE' (first defined on line 1)"),
        # a line with an unusable password still counts for duplicates
        ("alice:{NOPE}a\nALICE:{PLAIN}c\n", 2,
         "duplicate user 'ALICE' (first defined on line 1)"),
    ],
)  # fmt: skip
def test_parse_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PasswdFileError) as info:
        parse_passwd_file(text, "users.passwd")
    assert str(info.value) == f"users.passwd:{line}: {message}"
    assert (info.value.file, info.value.line, info.value.message) == ("users.passwd", line, message)


SUPPORTED = (
    "ARGON2I, ARGON2ID, BLF-CRYPT, CLEAR, CLEARTEXT, CRYPT, DES-CRYPT, LDAP-MD5, MD5, "
    "MD5-CRYPT, PBKDF2, PLAIN, PLAIN-MD5, PLAIN-TRUNC, SHA, SHA1, SHA256, SHA256-CRYPT, "
    "SHA512, SHA512-CRYPT, SMD5, SSHA, SSHA256, SSHA512"
)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("alice:{PLAIN}a\nbob:{NOPE}abcdefgh\n", 2, "unsupported scheme NOPE"),
        ("bob:$y$j9T$salt$hash\n", 1, "unsupported scheme CRYPT ($y$ yescrypt)"),
        ("bob:hunter2\n", 1, "malformed CRYPT password: not a crypt(3) string"),
        ("bob:{SHA256}abcd\n", 1, "malformed SHA256 password: digest is 3 bytes, expected 32"),
        ("bob:{NOPE}\n", 1, "unsupported scheme NOPE"),  # unknown even when empty
        ("bob:{SHA1.XYZ}abcd\n", 1, "unsupported scheme SHA1.XYZ (unknown encoding suffix)"),
        ("bob:{PBKDF2}$1$salt$0$" + "0" * 40 + "\n", 1,
         "malformed PBKDF2 password: rounds 0 is outside 1..4294967295"),
    ],
)  # fmt: skip
def test_an_unusable_password_field_loads_the_user_with_a_problem(
    text: str, line: int, problem: str
) -> None:
    table = parse_passwd_file(text, "users.passwd")
    entry = table.lookup("bob")
    assert entry == PasswdEntry("bob", None, line, problem)
    assert [str(p) for p in table.problems()] == [
        f"users.passwd:{line}: user bob cannot log in: {problem}; refd verifies {SUPPORTED}"
    ]


def test_problems_never_echo_the_password_field() -> None:
    table = parse_passwd_file("alice:hunter2-plaintext-by-mistake\n", "users.passwd")
    [problem] = table.problems()
    assert "hunter2" not in str(problem)
    assert problem.line == 1


async def test_a_user_with_an_unusable_line_fails_and_the_others_log_in() -> None:
    text = "alice:{PLAIN}a\nbob:{NOPE}secret\ncarol:{SSHA}gVK8WC9YyFT1gMsQHTGCgT3sSv5zYWx0\n"
    source = PasswdFileSource.from_text(text, "users.passwd")
    assert await source.authenticate(request("alice", "a")) == AuthResult(
        AuthStatus.SUCCESS, "alice", "password ok"
    )
    assert await source.authenticate(request("carol", "secret")) == AuthResult(
        AuthStatus.SUCCESS, "carol", "password ok"
    )
    # Even the password written after the unknown scheme does not log bob in.
    for password in ("secret", "{NOPE}secret", ""):
        result = await source.authenticate(request("bob", password))
        assert result == AuthResult(
            AuthStatus.FAILURE,
            "bob",
            "unusable password at users.passwd:2: unsupported scheme NOPE",
        )


# --- the source ---------------------------------------------------------------


def request(user: str, password: str) -> AuthRequest:
    return AuthRequest(user=user, password=password, client_address="192.0.2.7")


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("alice", "Hello world!", AuthResult(AuthStatus.SUCCESS, "alice", "password ok")),
        ("ALICE", "Hello world!", AuthResult(AuthStatus.SUCCESS, "alice", "password ok")),
        ("bob", "hunter2", AuthResult(AuthStatus.SUCCESS, "Bob", "password ok")),
        ("carol", "U*U", AuthResult(AuthStatus.SUCCESS, "carol", "password ok")),
        ("alice", "hello world!", AuthResult(AuthStatus.FAILURE, "alice", "password mismatch")),
        ("carol", "U*U*", AuthResult(AuthStatus.FAILURE, "carol", "password mismatch")),
        ("alice", "", AuthResult(AuthStatus.FAILURE, "alice", "password mismatch")),
        ("mallory", "Hello world!", AuthResult(AuthStatus.FAILURE, "mallory", "unknown user")),
        ("frank", "", AuthResult(AuthStatus.FAILURE, "frank", "no password set")),
        ("grace", "Hello world!", AuthResult(AuthStatus.FAILURE, "grace", "no password set")),
    ],
)
async def test_authenticate(user: str, password: str, expected: AuthResult) -> None:
    source = PasswdFileSource.from_text(USERS, "users.passwd")
    assert await source.authenticate(request(user, password)) == expected


class SpyVerify:
    """A hashing pool's verify that records what it was asked to check, and where."""

    def __init__(self) -> None:
        self.calls: list[tuple[Algorithm, bytes]] = []
        self.threads: list[int] = []

    def __call__(self, hashed: PasswordHash, password: str) -> bool:
        self.calls.append((hashed.algorithm, hashed.value))
        self.threads.append(threading.get_ident())
        return check_password(hashed, password)


@contextlib.contextmanager
def spied(text: str) -> Iterator[tuple[PasswdFileSource, SpyVerify]]:
    """A source over `text` whose hashing pool (one thread) verifies with a spy."""
    spy = SpyVerify()
    pool = HashPool(1, verify=spy)
    client, replies = pool.add_client()
    hasher = HashClient(pool.request_socket, replies, client, threads=1, pool=pool)
    try:
        yield PasswdFileSource.from_text(text, "users.passwd", hasher=hasher), spy
    finally:
        hasher.close()


@pytest.mark.parametrize("user", ["mallory", "frank", "grace"])
async def test_unknown_and_locked_users_verify_the_dummy(user: str) -> None:
    # Mostly SHA512-CRYPT, so the dummy is one and goes to the pool, as
    # alice's own hash does.
    more = "".join(f"sha{n}:{{SHA512-CRYPT}}{SHA512_CRYPT_5000}\n" for n in range(4))
    with spied(USERS + more) as (source, spy):
        result = await source.authenticate(request(user, "Hello world!"))
    assert result.status is AuthStatus.FAILURE
    assert spy.calls == [(source.dummy.algorithm, source.dummy.value)]


@pytest.mark.parametrize(("user", "off_loop"), [("carol", True), ("alice", True), ("Bob", False)])
async def test_slow_schemes_verify_off_the_loop(user: str, off_loop: bool) -> None:
    # bcrypt and SHA-crypt go to the hashing pool; a single digest (PLAIN,
    # SSHA...) costs microseconds, less than the hop, and stays on the loop.
    with spied(USERS) as (source, spy):
        await source.authenticate(request(user, "wrong"))
    assert bool(spy.calls) is off_loop
    assert threading.get_ident() not in spy.threads


# "secret" in the schemes doveadm pw makes: the costly ones go to a thread.
LEGACY_USERS = """\
pbkdf2:{PBKDF2}$1$HzZ7EaTyGN74L820$5000$9169f636ff2699a4714f50dec6b75b07bbd9d87d
md5crypt:{MD5-CRYPT}$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.
des:{CRYPT}d.eSsVuuYTv7I
ssha:{SSHA}L9qz7gS7Wx/7R+nSHJoizbiCfso2d8zh
sha1:{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=
plainmd5:{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69
broken:{NOPE}secret
"""


@pytest.mark.parametrize(
    ("user", "off_loop"),
    [("pbkdf2", True), ("md5crypt", True), ("des", True), ("ssha", False), ("sha1", False),
     ("plainmd5", False)],
)  # fmt: skip
async def test_legacy_schemes_verify_where_their_cost_says(user: str, off_loop: bool) -> None:
    with spied(LEGACY_USERS) as (source, spy):
        assert await source.authenticate(request(user, "secret")) == AuthResult(
            AuthStatus.SUCCESS, user, "password ok"
        )
    assert bool(spy.calls) is off_loop


async def test_a_user_with_an_unusable_line_verifies_the_dummy() -> None:
    with spied(LEGACY_USERS) as (source, spy):
        result = await source.authenticate(request("broken", "secret"))
    assert result.status is AuthStatus.FAILURE
    assert spy.calls == [(source.dummy.algorithm, source.dummy.value)]


async def test_known_user_verifies_its_own_hash_once() -> None:
    with spied(USERS) as (source, spy):
        await source.authenticate(request("alice", "wrong"))
    hashed = parse_password_hash("{SHA512-CRYPT}" + SHA512_CRYPT_5000)
    assert spy.calls == [(hashed.algorithm, hashed.value)]


@pytest.mark.parametrize(
    ("text", "algorithm", "cost"),
    [
        # most common wins, whatever comes first
        (f"a:{BCRYPT_5}\nb:{SHA512_CRYPT_10000}\nc:{SHA512_CRYPT_10000}\n",
         Algorithm.SHA512_CRYPT, (10000,)),
        # same algorithm, different rounds: rounds count as a different kind
        (f"a:{SHA512_CRYPT_5000}\nb:{SHA512_CRYPT_10000}\nc:{SHA512_CRYPT_10000}\n",
         Algorithm.SHA512_CRYPT, (10000,)),
        (f"a:{BCRYPT_5}\nb:{SHA512_CRYPT_10000}\nc:{BCRYPT_5}\n", Algorithm.BLF_CRYPT, (5,)),
        # a tie goes to the earliest line
        (f"a:{{PLAIN}}x\nb:{BCRYPT_5}\nc:{BCRYPT_5}\nd:{{PLAIN}}y\n", Algorithm.PLAIN, ()),
        ("a:{ARGON2ID}$argon2id$v=19$m=1024,t=2,p=2$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8\n",
         Algorithm.ARGON2ID, (19, 1024, 2, 2, 24, 8)),
        # locked users do not count; nothing usable: SHA512-CRYPT at the default rounds
        (f"a:!{BCRYPT_5}\nb:\n", Algorithm.SHA512_CRYPT, (5000,)),
        ("", Algorithm.SHA512_CRYPT, (5000,)),
    ],
)  # fmt: skip
def test_dummy_copies_the_most_common_kind_of_hash(
    text: str, algorithm: Algorithm, cost: tuple[int, ...]
) -> None:
    source = PasswdFileSource.from_text(text, "users.passwd")
    assert (source.dummy.algorithm, source.dummy.cost) == (algorithm, cost)


async def test_slow_hashes_are_verified_on_the_pool_fast_ones_inline() -> None:
    seen: list[bytes] = []

    def recording_verify(hashed: PasswordHash, password: str) -> bool:
        seen.append(hashed.value)
        return check_password(hashed, password)

    pool = HashPool(1, verify=recording_verify)
    client, replies = pool.add_client()
    hasher = HashClient(pool.request_socket, replies, client, threads=1, pool=pool)
    try:
        text = f"alice:{{SHA512-CRYPT}}{SHA512_CRYPT_5000}\nbob:{{PLAIN}}pw\n"
        source = PasswdFileSource.from_text(text, "users.passwd", hasher=hasher)
        results = [
            await source.authenticate(request("alice", "Hello world!")),
            await source.authenticate(request("alice", "wrong")),
            await source.authenticate(request("mallory", "Hello world!")),
            await source.authenticate(request("bob", "pw")),
        ]
    finally:
        hasher.close()
    assert [(r.status, r.reason) for r in results] == [
        (AuthStatus.SUCCESS, "password ok"),
        (AuthStatus.FAILURE, "password mismatch"),
        (AuthStatus.FAILURE, "unknown user"),
        (AuthStatus.SUCCESS, "password ok"),
    ]
    # alice twice, and mallory against the dummy (the file's SHA512-CRYPT
    # kind); bob's PLAIN password never went to the pool.
    assert seen[:2] == [SHA512_CRYPT_5000.encode()] * 2
    assert len(seen) == 3 and seen[2].startswith(b"$6$")


async def test_a_closed_pool_makes_every_slow_login_unavailable() -> None:
    pool = HashPool(1)
    client, replies = pool.add_client()
    hasher = HashClient(pool.request_socket, replies, client, threads=1)
    text = f"alice:{{SHA512-CRYPT}}{SHA512_CRYPT_5000}\n"
    source = PasswdFileSource.from_text(text, "users.passwd", hasher=hasher)
    first = await source.authenticate(request("alice", "Hello world!"))
    assert first.status is AuthStatus.SUCCESS
    pool.close()
    results = [
        await source.authenticate(request("alice", "Hello world!")),
        await source.authenticate(request("mallory", "x")),
    ]
    replies.close()
    # The same answer whether or not the user exists: nothing was checked.
    assert [(r.status, r.reason) for r in results] == [
        (AuthStatus.UNAVAILABLE, "hashing pool unavailable"),
        (AuthStatus.UNAVAILABLE, "hashing pool unavailable"),
    ]


def test_default_hasher_is_the_process_hash_client() -> None:
    # Shared by every source, so a reload's new source and the old one
    # (still finishing its logins) queue on the same threads.
    source = PasswdFileSource.from_text(USERS, "users.passwd")
    assert source.hasher is hash_client()
    assert PasswdFileSource.from_text(USERS, "users.passwd").hasher is source.hasher
    assert source.hasher.threads == len(os.sched_getaffinity(0))
    assert source.name == "passwd-file"
    assert PasswdFileSource.from_text("", "x", name="users").name == "users"


# --- the demo file --------------------------------------------------------------


async def test_demo_users_log_in_with_secret() -> None:
    source = PasswdFileSource.from_text(DEMO_FILE.read_text(), str(DEMO_FILE))
    assert sorted(source.table.entries) == ["alice", "bob"]
    for user in ("alice", "bob"):
        assert await source.authenticate(request(user, "secret")) == AuthResult(
            AuthStatus.SUCCESS, user, "password ok"
        )
    # One SHA512-CRYPT, one SSHA256: the tie goes to alice's, the first.
    assert (source.dummy.algorithm, source.dummy.cost) == (Algorithm.SHA512_CRYPT, (5000,))


def test_demo_commented_examples_are_real_hashes_of_secret() -> None:
    examples = [
        line.removeprefix("#")
        for line in DEMO_FILE.read_text().splitlines()
        if line.startswith(("#carol:", "#dave:"))
    ]
    entries = parse("\n".join(examples))
    assert [(e.user, e.password.algorithm if e.password else None) for e in entries.values()] == [
        ("carol", Algorithm.BLF_CRYPT),
        ("dave", Algorithm.ARGON2ID),
    ]
    for entry in entries.values():
        assert entry.password is not None
        assert check_password(entry.password, "secret") is True
