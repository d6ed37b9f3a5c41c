"""Allow ``python -m pyrauc``."""

from pyrauc.cli import main

raise SystemExit(main())
