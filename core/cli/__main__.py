"""``python -m igrun.core.cli``."""

import sys

from igrun.core.cli.main import main

sys.exit(main())
