"""Objects other tools wrote in shapes a path cannot show as they are, and what the mount
says about them.

Keys no path can name (`a//b`, `a/./b`, `a/../b`, a name longer than 255 bytes), a file
hidden by a directory of the same name, a directory marker that holds bytes, a symbolic
link longer than PATH_MAX. The mount leaves them as they are: no operation deletes or
rewrites them on the way (rmdir refuses a directory that holds them), and the log says
once what was not shown and how to reach it. See docs/SEMANTICS.md, "Objects from other
tools".
"""

from __future__ import annotations

import logging
import shlex

from ..errors import NameTooLong, NotEmpty

log = logging.getLogger(__name__)

PATH_MAX = 4096  # bytes, NUL included: a link target is at most PATH_MAX - 1 bytes
SHOWN = 5  # keys named in one log line; the rest are counted


class Foreign:
    """Tells, once each, what the mount does not show of the bucket."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._told: set[str] = set()
        self._hidden: dict[str, frozenset[str]] = {}  # listing prefix -> what it hid

    def _once(self, about: str, message: str, *args: object) -> None:
        if about not in self._told:
            self._told.add(about)
            log.warning(message, *args)

    def _list_command(self, prefix: str) -> str:
        return (f"aws s3api list-objects-v2 --bucket {shlex.quote(self.bucket)} "
                f"--prefix {shlex.quote(prefix)} --delimiter /")

    def hidden(self, prefix: str, keys: list[str], shadowed: list[str]) -> None:
        """A listing of `prefix` left out `keys` (objects, and prefixes ending in "/",
        that no path can name) and `shadowed` (files a directory of the same name hides).
        Logged once per directory, and again if what it hides changes."""
        everything = frozenset(keys) | frozenset(shadowed)
        if self._hidden.get(prefix, frozenset()) == everything:
            return
        self._hidden[prefix] = everything
        if not everything:
            return
        named = [f"{key!r}" + (" (and the keys below it)" if key.endswith("/") else "")
                 for key in sorted(keys)]
        named += [f"{key!r} (a file, hidden by the directory {key + '/'!r})"
                  for key in sorted(shadowed)]
        more = f" and {len(named) - SHOWN} more" if len(named) > SHOWN else ""
        log.warning("%s: %d %s hidden, no path can show them: %s%s; list them with `%s`, "
                    "read or remove one with `aws s3api get-object` / `delete-object "
                    "--bucket %s --key KEY`", _where(prefix), len(named),
                    "entry" if len(named) == 1 else "entries",
                    ", ".join(named[:SHOWN]), more, self._list_command(prefix),
                    shlex.quote(self.bucket))

    def unnamable_inside(self, doing: str, path: str, prefix: str, keys: list[str],
                         more: bool) -> NotEmpty:
        """`doing` (rmdir, a rename onto it) a directory that looks empty but holds keys
        no path can name (`keys`, and `more` of them)."""
        log.warning("%s %s: not empty: it holds %s%s, which no path can name (not "
                    "deleted); list them with `%s`", doing, path or "/",
                    ", ".join(repr(k) for k in keys), ", ..." if more else "",
                    self._list_command(prefix))
        return NotEmpty(path)

    def marker_with_body(self, path: str, key: str, size: int, *, doing: str = "") -> NotEmpty:
        """A directory whose `dir/` object holds bytes no path can show. Seen: said once;
        `doing` (rmdir, a rename onto it) refused: said each time."""
        where = f"s3://{self.bucket}/{key}"
        if doing:
            log.warning("%s %s: its marker object %r holds %d bytes another tool wrote: "
                        "not deleted; read them with `aws s3 cp %s -`, then remove it with "
                        "`aws s3 rm %s`", doing, path, key, size, shlex.quote(where),
                        shlex.quote(where))
        else:
            self._once(f"marker {key}", "%s: its marker object %r holds %d bytes, which a "
                       "directory cannot show; read them with `aws s3 cp %s -`", path, key,
                       size, shlex.quote(where))
        return NotEmpty(path)

    def directory_mode_on_file(self, path: str, key: str) -> None:
        """An object without a trailing "/" whose x-amz-meta-mode says directory."""
        self._once(f"dirmode {key}", "%s: x-amz-meta-mode says directory, but the key %r has "
                   "no trailing '/': shown as a regular file", path, key)

    def link_too_long(self, path: str, key: str, etag: str, size: int) -> NameTooLong:
        """A symbolic link whose body is longer than a link target can be."""
        self._once(f"link {key} {etag}", "%s: x-amz-meta-mode says symbolic link, but its "
                   "body (%d bytes) is too long for a link target (PATH_MAX, %d bytes, NUL "
                   "included): not read, readlink fails with ENAMETOOLONG; read it with "
                   "`aws s3 cp %s -`", path, size, PATH_MAX,
                   shlex.quote(f"s3://{self.bucket}/{key}"))
        return NameTooLong(f"{path}: link target of {size} bytes, PATH_MAX is {PATH_MAX}")


def _where(prefix: str) -> str:
    return repr(prefix) if prefix else "the bucket's top level"
