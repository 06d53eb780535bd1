"""``python -m ltxv``: the ``ltxv`` command."""

from ltxv.cli import main

raise SystemExit(main())
