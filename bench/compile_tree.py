"""Compile a source tree's hot path in place, for the tools that compare trees.

    git archive HEAD refd setup.py pyproject.toml README.md | tar -x -C /tmp/new
    python bench/compile_tree.py /tmp/new
    python bench/instructions.py interpreted=. compiled=/tmp/new

DIR must hold refd/ and the build files (setup.py, pyproject.toml,
README.md) of one commit.  The extension modules of ``REFD_COMPILE=1 pip
install .`` (refd/compiled.py's list, mypyc at setup.py's pin) are put
beside the tree's sources, which a refd started from the tree then imports
first; ``bench/run`` does the same to its snapshot.  ``ab.py``, ``calls.py``
and ``instructions.py`` print which build each tree is.  About 3 minutes on
2 cores; needs gcc and Python's headers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness as H


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    tree = Path(sys.argv[1]).resolve()
    missing = [n for n in ("refd/compiled.py", *H.BUILD_FILES) if not (tree / n).is_file()]
    if missing:
        raise SystemExit(f"{tree}: no {', '.join(missing)}: not a tree that can be compiled")
    print(f"{tree}: {H.compile_tree(sys.executable, tree)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
