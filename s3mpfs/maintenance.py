"""`s3mpfs uploads` and `s3mpfs cleanup`: list and abort pending multipart uploads."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(args: Sequence[str]) -> int:
    print("s3mpfs: subcommand not implemented yet", file=sys.stderr)
    return 2
