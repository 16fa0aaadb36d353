"""``python -m rkfarm.cli``."""

import sys

from rkfarm.cli import main

sys.exit(main())
