"""The command line's words, read the same way by the entry point (before anything heavy
is imported: standard library only) and by the command itself."""

from __future__ import annotations

SUBCOMMANDS = ("status", "unmount", "uploads", "cleanup")  # only as the first word


def split_options(groups: list[str]) -> list[tuple[str, str | None]]:
    """['a=1,b', 'c'] -> [('a', '1'), ('b', None), ('c', None)]."""
    pairs: list[tuple[str, str | None]] = []
    for group in groups:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            pairs.append((name.strip(), value if sep else None))
    return pairs


def asks_for_option_help(args: list[str]) -> bool:
    """`-o help` (or `-ohelp`, or help among other options), as mount.fuse3 passes it."""
    groups = [b for a, b in zip(args, args[1:], strict=False) if a == "-o"]
    groups += [a[2:] for a in args if a.startswith("-o") and len(a) > 2]
    return any(name == "help" for name, _ in split_options(groups))
