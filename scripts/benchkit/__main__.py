"""`python -m benchkit` (with scripts/ on the path): the benchmark's command line."""

import sys

from .cli import main

sys.exit(main())
