"""``python -m divekit`` is the ``divekit`` command (also what ``torchrun -m divekit`` runs)."""

import sys

from divekit.cli import main

sys.exit(main())
