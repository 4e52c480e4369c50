"""``python -m bimfs``: the same as the ``bimfs`` command."""

import sys

from bimfs.cli import main

sys.exit(main())
