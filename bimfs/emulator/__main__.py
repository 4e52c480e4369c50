"""``python -m bimfs.emulator``: see ``bimfs.emulator.server``."""

import sys

from bimfs.emulator.server import main

sys.exit(main())
