"""Allows ``python -m proxy``, the same as the ``pullgate`` console script."""

from proxy.cli import main

raise SystemExit(main())
