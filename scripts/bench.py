#!/usr/bin/env python3
"""The benchmark's entry point at its usual path: the code is in scripts/benchkit/.

    .venv/bin/python scripts/bench.py [--size 1G] [--runs 3] [--out docs/BENCHMARKS.md]
"""

import sys

from benchkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
