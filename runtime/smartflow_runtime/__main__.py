"""``python -m smartflow_runtime``: the same as the ``smartflow-runtime`` command."""

import sys

from .cli import main

sys.exit(main())
