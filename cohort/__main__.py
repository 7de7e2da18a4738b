"""``python -m cohort``: see ``cohort/cli.py``."""

import sys

from cohort.cli import main

sys.exit(main())
