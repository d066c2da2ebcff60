"""``python -m examples.hiring``: see ``examples/hiring/run.py``."""

import sys

from examples.hiring.run import main

sys.exit(main())
