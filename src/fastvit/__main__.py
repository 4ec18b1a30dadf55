"""``python -m fastvit``: the ``fastvit`` command; also what ``torchrun -m fastvit`` runs in each process."""

import sys

from .cli import main

sys.exit(main())
