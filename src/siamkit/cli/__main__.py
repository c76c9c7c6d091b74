"""``python -m siamkit.cli ...`` runs the ``siamkit`` command (torchrun starts it so)."""

import sys

from . import main

sys.exit(main())
