"""refd's build: pure Python, or with its per-session hot path compiled by mypyc.

    pip install .                      # pure Python (the default)
    REFD_COMPILE=1 pip install .       # + the modules of refd/compiled.py as C
                                       #   extensions (needs gcc and Python's headers)

The project's metadata is in pyproject.toml; this file only adds the
compiled modules when asked.  mypyc compiles the same source that
``mypy --strict`` checks, so the pinned mypy below is the one the code is
checked with.  Under pip's build isolation the first pass of this file
asks for mypy and what mypy must see (``setup_requires``), and the second
compiles.
"""

from __future__ import annotations

import os
import runpy
import sys
import tomllib
from pathlib import Path

from setuptools import setup

#: mypyc's version: the generated C differs from one release to the next, so
#: a compiled build is made, tested and benchmarked with this one.
MYPY = "mypy==2.4.1"

ROOT = Path(__file__).resolve().parent


def compile_requires() -> list[str]:
    """What compiling needs in pip's build environment: mypy, and what mypy must see.

    mypyc type-checks the modules it compiles, so the build environment needs
    refd's dependencies and the stubs the test extra names (types-*), as the
    project's own ``mypy --strict`` run has them; without them, in a fresh
    venv, the imports of trio and the rest are errors.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stubs = [r for r in project["optional-dependencies"]["test"] if r.startswith("types-")]
    return [MYPY, *project["dependencies"], *stubs]


def compiled_extensions() -> tuple[list[object], list[str]]:
    """The extension modules to build, and the build's own requirements."""
    if os.environ.get("REFD_COMPILE", "") not in ("1", "yes", "true"):
        return [], []
    if "editable_wheel" in sys.argv:
        # The extensions would land beside the sources and shadow them: an
        # edited .py would silently not be the code that runs.
        raise SystemExit("REFD_COMPILE=1 is for `pip install .`, not an editable install")
    try:
        from mypy.version import __version__ as mypy_version  # noqa: PLC0415
        from mypyc.build import mypycify  # noqa: PLC0415 (only a compiled build needs it)
    except ImportError:
        return [], compile_requires()  # pip installs them, then runs this file again
    if mypy_version != MYPY.partition("==")[2]:
        print(f"refd: compiling with mypy {mypy_version}, not the tested {MYPY}", file=sys.stderr)
    hot = runpy.run_path(str(ROOT / "refd" / "compiled.py"))["sources"]()
    return mypycify(hot, opt_level="3", debug_level="0"), []


if __name__ == "__main__":  # as pip's build backend runs it
    extensions, build_requires = compiled_extensions()
    setup(ext_modules=extensions, setup_requires=build_requires)
