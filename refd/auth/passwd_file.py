"""Dovecot passwd-file authentication source.

The file has one user per line, `user:password:uid:gid:gecos:home:shell:extra`;
only the first two fields matter here and a line may stop after the
password. Blank lines and lines whose first non-blank character is `#` are
skipped. Fields are split on every `:`, as Dovecot does, so a password field
cannot contain one: a plaintext password with `:` must be written as
`{PLAIN.B64}...` or `{PLAIN.HEX}...` (`hash_password("PLAIN", ...)` does
this), and the hashes of every scheme here never contain `:`.

`parse_password_hash` runs on every password field at load time. A field
it cannot use (an unknown `{SCHEME}`, an unsupported crypt format, data of
the wrong shape) does not stop the load: that one user loads with no
password and a `problem`, and every other user keeps working. The problem
(`file:line: user NAME cannot log in: <why>; refd verifies <schemes>`, never
the hash) is logged as a warning at every load (`SPEC.problems`, which the
daemon logs) and reported by `refd check`; a login as that user fails like a
wrong password, and its log reason names the line and the scheme. A broken
line (no `:`, no user name, a duplicate user) is still an error that stops
the load. An empty password field, or a crypt-style field starting with `!`
or `*` (the shadow(5) convention for a locked account), loads as a user with
no password: that user can never log in.

User names are matched case-insensitively, by refd's one case rule
(`refd.routing.model.normalise_user`, which routing uses too; Dovecot
lowercases login names by default, auth_username_format=%Lu); the name as
written in the file is the canonical one handed to routing and sent in the
referral URL, and two lines that differ only in case are duplicates.

`PasswdFileSource.authenticate` verifies a slow hash on the process's
hashing pool (`refd.auth.hash_threads`: a thread per core, in the order
asked; with ``workers: N`` one pool in the supervisor for all workers), so
hashing does not block the event loop while it serves anything else (a
process with nothing but this login to do verifies a hash measured at a
few milliseconds in place: see that module).
bcrypt, argon2-cffi and the libxcrypt SHA-crypt path release the GIL, so
these threads use several cores; the pure-Python SHA-crypt fallback (used
when no libxcrypt is found) holds the GIL and does not scale.

User enumeration: an unknown user (or one with no password) is verified
against a dummy hash with the algorithm and cost parameters of the file's
most common kind of hash (same bcrypt cost, SHA-crypt rounds, argon2
parameters), through the same code path as a known user, so both cost the
same CPU time. Only the log reason differs: "unknown user" vs "password
mismatch".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from refd.auth.base import AuthRequest, AuthResult, AuthStatus
from refd.auth.hash_threads import HashClient, HashPoolGone, hash_client
from refd.auth.registry import AuthSourceSpec, BuildContext, ParseContext
from refd.auth.schemes import (
    CRYPT_SCHEMES,
    INLINE_ALGORITHMS,
    SUPPORTED_SCHEMES,
    Algorithm,
    PasswordHash,
    SchemeError,
    check_password,
    dummy_hash,
    parse_password_hash,
    split_scheme,
    validate_scheme_name,
)
from refd.config.loader import read_text, resolve_path
from refd.config.tree import TreeError
from refd.routing.model import normalise_user

# With no usable hash in the file, unknown users are checked against this.
_FALLBACK_HASH_LIKE = PasswordHash("SHA512-CRYPT", Algorithm.SHA512_CRYPT, (5000,), b"")
# Named in the warning about an unusable line.
_SUPPORTED = ", ".join(sorted(SUPPORTED_SCHEMES))


class PasswdFileError(ValueError):
    """A passwd-file line that cannot be loaded. Never contains a password."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    user: str
    # None: no usable password (empty field, locked with "!"/"*", or a problem).
    password: PasswordHash | None
    line: int
    # Why the password field could not be used (never quotes it), if it could not.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class PasswdTable:
    file: str
    # Keyed by normalise_user(name).
    entries: Mapping[str, PasswdEntry]

    def lookup(self, user: str) -> PasswdEntry | None:
        return self.entries.get(normalise_user(user))

    def __len__(self) -> int:
        return len(self.entries)

    def problems(self) -> list[TreeError]:
        """The lines whose password field is unusable, in file order."""
        return [
            TreeError(
                self.file,
                e.line,
                f"user {e.user} cannot log in: {e.problem}; refd verifies {_SUPPORTED}",
            )
            for e in self.entries.values()
            if e.problem is not None
        ]


def _parse_password_field(field: str, default_scheme: str) -> PasswordHash | None:
    scheme, data = split_scheme(field, default_scheme)
    canonical = validate_scheme_name(scheme)
    if not data:
        return None
    if canonical.partition(".")[0] in CRYPT_SCHEMES and data[0] in "!*":
        return None
    return parse_password_hash(field, default_scheme=default_scheme)


def parse_passwd_file(text: str, file: str, *, default_scheme: str = "CRYPT") -> PasswdTable:
    """Parse passwd-file text; `file` names it in errors.

    Raises PasswdFileError for a line that is not `user:password...` or
    repeats a user, UnsupportedScheme for a bad `default_scheme` (used for
    fields without a `{SCHEME}` prefix).  A password field that cannot be
    used loads as an entry without password and with its `problem`.
    """
    validate_scheme_name(default_scheme)
    entries: dict[str, PasswdEntry] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        user, colon, rest = line.partition(":")
        if not colon:
            raise PasswdFileError(file, number, "missing ':' after the user name")
        if not user:
            raise PasswdFileError(file, number, "empty user name")
        key = normalise_user(user)
        if key in entries:
            first = entries[key].line
            message = f"duplicate user {user!r} (first defined on line {first})"
            raise PasswdFileError(file, number, message)
        try:
            password = _parse_password_field(rest.split(":", 1)[0], default_scheme)
        except SchemeError as exc:
            entries[key] = PasswdEntry(user, None, number, str(exc))
            continue
        entries[key] = PasswdEntry(user, password, number)
    return PasswdTable(file, entries)


def _most_common_hash(table: PasswdTable) -> PasswordHash:
    """A hash of the file's most common (algorithm, cost); ties go to the earliest."""
    kinds: Counter[tuple[Algorithm, tuple[int, ...]]] = Counter()
    first: dict[tuple[Algorithm, tuple[int, ...]], PasswordHash] = {}
    for entry in table.entries.values():  # dicts keep file order
        if entry.password is not None:
            kind = (entry.password.algorithm, entry.password.cost)
            kinds[kind] += 1
            first.setdefault(kind, entry.password)
    if not kinds:
        return _FALLBACK_HASH_LIKE
    # Counter.most_common keeps insertion order among equal counts.
    return first[kinds.most_common(1)[0][0]]


class PasswdFileSource:
    """An AuthSource over a parsed passwd-file."""

    def __init__(
        self,
        table: PasswdTable,
        *,
        hasher: HashClient | None = None,
        name: str = "passwd-file",
    ) -> None:
        self.name = name
        self.table = table
        # Built without hashing: cheap here even for costly parameters.
        self.dummy = dummy_hash(_most_common_hash(table))
        #: where slow hashes are verified: the process's pool unless given
        self.hasher = hasher if hasher is not None else hash_client()

    @classmethod
    def from_text(
        cls,
        text: str,
        file: str,
        *,
        default_scheme: str = "CRYPT",
        hasher: HashClient | None = None,
        name: str = "passwd-file",
    ) -> Self:
        """Parse `text` (read by the caller from `file`); raises PasswdFileError."""
        table = parse_passwd_file(text, file, default_scheme=default_scheme)
        return cls(table, hasher=hasher, name=name)

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        entry = self.table.lookup(request.user)
        hashed = self.dummy if entry is None or entry.password is None else entry.password
        # Same path for every request up to here: one verification.  The
        # slow schemes run on the hashing pool; a plain or salted digest
        # takes microseconds, less than the hop would, and no checkpoint
        # follows it: the session yields at its next read, or after the
        # answer when more commands are waiting (a yield here cost ~10 us
        # per PLAIN login).
        if hashed.algorithm in INLINE_ALGORITHMS:
            matched = check_password(hashed, request.password)
        else:
            try:
                matched = await self.hasher.verify(hashed, request.password)
            except HashPoolGone:
                # The same answer for every user: no hash was checked.
                return AuthResult(AuthStatus.UNAVAILABLE, request.user, "hashing pool unavailable")
        if entry is None:
            return AuthResult(AuthStatus.FAILURE, request.user, "unknown user")
        if entry.problem is not None:
            # The scheme is named in the problem; the stored data never is.
            reason = f"unusable password at {self.table.file}:{entry.line}: {entry.problem}"
            return AuthResult(AuthStatus.FAILURE, entry.user, reason)
        if entry.password is None:
            return AuthResult(AuthStatus.FAILURE, entry.user, "no password set")
        if not matched:
            return AuthResult(AuthStatus.FAILURE, entry.user, "password mismatch")
        return AuthResult(AuthStatus.SUCCESS, entry.user, "password ok")


# -- configuration: ``auth.source: passwd-file`` (see refd.auth.registry) --


@dataclass(frozen=True, slots=True)
class PasswdFileConfig:
    """``auth.passwd_file``: the file, and the config line that names it."""

    path: Path
    line: int = 0


def _parse(ctx: ParseContext) -> PasswdFileConfig:
    r = ctx.reader
    node = r.require(ctx.auth, "passwd_file", "auth")
    return PasswdFileConfig(resolve_path(ctx.file, r.as_str(node, "auth.passwd_file")), node.line)


def _build(settings: PasswdFileConfig, ctx: BuildContext) -> PasswdFileSource:
    text = read_text(settings.path, referer=str(ctx.file), line=settings.line)
    try:
        return PasswdFileSource.from_text(text, str(settings.path))
    except PasswdFileError as exc:
        raise TreeError(exc.file, exc.line, exc.message) from None


def _problems(source: PasswdFileSource) -> list[TreeError]:
    return source.table.problems()


SPEC = AuthSourceSpec(
    name="passwd-file",
    keys=frozenset({"passwd_file"}),
    parse=_parse,
    build=_build,
    watched=lambda settings: (settings.path,),
    problems=_problems,
)
