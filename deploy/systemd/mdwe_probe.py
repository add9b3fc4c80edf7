"""Prove that refd runs under the unit's MemoryDenyWriteExecute=yes.

systemd (252, Debian 12) implements MemoryDenyWriteExecute= as a seccomp
filter that refuses mmap() with PROT_WRITE|PROT_EXEC together, mprotect() and
pkey_mprotect() adding PROT_EXEC, and shmat() with SHM_EXEC. This script
installs the same filter on itself, with no systemd needed, then re-executes
the given Python to import refd and run every password scheme it verifies
(libxcrypt through ctypes, bcrypt, argon2-cffi), a ctypes callback (a libffi
closure, the classic victim of this setting) and trio's worker threads.
A first step checks that the filter really refuses a W+X mapping, so the
probe cannot pass by testing nothing.

Usage: python mdwe_probe.py   (with the interpreter that has refd installed)
Exit 0 when everything works under the filter; non-zero with the reason.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little endian).
ARCH_OFFSET, NR_OFFSET, ARG2_OFFSET = 4, 0, 16 + 2 * 8
ARCHES = {  # AUDIT_ARCH_*, then mmap, mprotect, pkey_mprotect, shmat
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | 1
LD_ABS_W, JEQ_K, AND_K, RET_K = 0x20, 0x15, 0x54, 0x06
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _filter(arch: int, mmap: int, mprotect: int, pkey_mprotect: int, shmat: int) -> bytes:
    """Classic BPF; jumps name labels and are resolved to offsets below."""
    prog: list[tuple[int, int, str | None, str | None] | str] = [
        (LD_ABS_W, ARCH_OFFSET, None, None),
        (JEQ_K, arch, "native", "deny"),  # SystemCallArchitectures=native
        "native",
        (LD_ABS_W, NR_OFFSET, None, None),
        (JEQ_K, mmap, "mmap", None),
        (JEQ_K, mprotect, "mprotect", None),
        (JEQ_K, pkey_mprotect, "mprotect", None),
        (JEQ_K, shmat, "shmat", "allow"),
        "mmap",  # mmap() asking for PROT_WRITE and PROT_EXEC at once
        (LD_ABS_W, ARG2_OFFSET, None, None),
        (AND_K, PROT_WRITE | PROT_EXEC, None, None),
        (JEQ_K, PROT_WRITE | PROT_EXEC, "deny", "allow"),
        "mprotect",  # mprotect() / pkey_mprotect() adding PROT_EXEC
        (LD_ABS_W, ARG2_OFFSET, None, None),
        (AND_K, PROT_EXEC, None, None),
        (JEQ_K, PROT_EXEC, "deny", "allow"),
        "shmat",  # shmat() with SHM_EXEC
        (LD_ABS_W, ARG2_OFFSET, None, None),
        (AND_K, SHM_EXEC, None, None),
        (JEQ_K, SHM_EXEC, "deny", "allow"),
        "allow",
        (RET_K, RET_ALLOW, None, None),
        "deny",
        (RET_K, RET_EPERM, None, None),
    ]
    labels: dict[str, int] = {}
    code: list[tuple[int, int, str | None, str | None]] = []
    for item in prog:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)

    def offset(pc: int, label: str | None) -> int:
        return 0 if label is None else labels[label] - pc - 1

    return b"".join(
        struct.pack("=HBBI", op, offset(pc, jt), offset(pc, jf), k)
        for pc, (op, k, jt, jf) in enumerate(code)
    )


def install() -> None:
    spec = ARCHES.get(platform.machine())
    if spec is None:
        sys.exit(f"mdwe_probe: no syscall table for {platform.machine()}")
    code = _filter(*spec)
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        sys.exit(f"mdwe_probe: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        sys.exit(f"mdwe_probe: PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")


# Runs in the filtered process.
PROBE = r"""
import ctypes, mmap, sys
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit("mdwe_probe: the filter is not in force (a W+X mapping succeeded)")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
RW, ANON = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
page = libc.mmap(None, 4096, RW, ANON, -1, 0)
if libc.mprotect(ctypes.c_void_p(page), 4096, mmap.PROT_READ | mmap.PROT_EXEC) == 0:
    sys.exit("mdwe_probe: the filter is not in force (mprotect added PROT_EXEC)")
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
import refd.cli, refd.daemon, refd.server
from refd.auth import schemes
schemes_run = []
for scheme in ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID", "SSHA512"):
    stored = schemes.hash_password(scheme, "secret")
    assert schemes.verify_password(stored, "secret"), scheme
    assert not schemes.verify_password(stored, "wrong"), scheme
    schemes_run.append(scheme)
for stored in ("{MD5-CRYPT}$1$pqbdloVY$cUHEuC89KdBwePqn5YOvX.", "{DES-CRYPT}d.eSsVuuYTv7I",
               "{PBKDF2}$1$HzZ7EaTyGN74L820$5000$9169f636ff2699a4714f50dec6b75b07bbd9d87d"):
    assert schemes.verify_password(stored, "secret"), stored
    assert not schemes.verify_password(stored, "wrong"), stored
    schemes_run.append(stored[1:stored.index("}")])
import trio
async def main():
    assert await trio.to_thread.run_sync(lambda: 42) == 42
trio.run(main)
print("mdwe_probe: under MemoryDenyWriteExecute's filter: ctypes callback, trio threads,"
      f" libxcrypt={schemes.native_sha_crypt_available()}, schemes {', '.join(schemes_run)}: ok")
"""

if __name__ == "__main__":
    install()
    # The filter is inherited across exec: the probe starts from a clean interpreter.
    os.execv(sys.executable, [sys.executable, "-c", PROBE])  # noqa: S606
