"""``python -m refd`` runs the ``refd`` command."""

from refd.cli import main

raise SystemExit(main())
