"""The command's entry point, kept light: a mount re-executes itself with glibc's huge
pages tunable before anything heavy is imported, so the imports (0.2 s of a mount's
start) are paid once, not once on each side of the exec."""

from __future__ import annotations

import os
import sys

from .argv import SUBCOMMANDS, asks_for_option_help

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_ANSWERS = {"-h", "--help", "--version", "-V"}


def main() -> int:
    args = sys.argv[1:]
    if _mounts(args):
        _reexec_with_huge_pages(args)
    from .cli import main as cli_main

    return cli_main(args)


def _mounts(args: list[str]) -> bool:
    """Whether the command line asks for a mount: not a subcommand, not a question
    (`--help`, `--version`, `-o help`)."""
    if args and args[0] in SUBCOMMANDS or _ANSWERS & set(args):
        return False
    return not asks_for_option_help(args)


def _reexec_with_huge_pages(args: list[str]) -> None:
    """Run the mount in a process whose malloc puts its large blocks (parts being cut,
    2 MiB and up) on transparent huge pages: joining an 8 MiB part then costs 4 page
    faults instead of 2,048 (3.4 ms instead of 12.7 ms here). glibc reads the tunable
    only at start-up, hence the exec (same pid; glibc >= 2.35, ignored by older ones)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or os.environ.get("S3MPFS_NO_REEXEC"):
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables \
        else HUGE_PAGES_TUNABLE
    env["S3MPFS_NO_REEXEC"] = "1"
    try:
        os.execve(sys.executable, [sys.executable, "-m", "s3mpfs", *args], env)
    except OSError:
        pass  # go on without
