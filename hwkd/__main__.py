"""`python -m hwkd` runs the command-line interface."""

from hwkd.cli import main

raise SystemExit(main())
