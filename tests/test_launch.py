"""Which command lines re-execute with the huge-pages tunable (s3mpfs/launch.py): mounts,
whatever their bucket and mount point are called; not subcommands nor questions."""

from __future__ import annotations

import pytest

from s3mpfs.launch import _mounts


@pytest.mark.parametrize("args", [
    ["b", "/mnt/helpdesk", "-f"],
    ["b", "status"],  # a mount point called status
    ["b:help", "/m", "-o", "ro,helper=1"],
    ["b", "/m"],
])
def test_mounts_re_execute(args: list[str]) -> None:
    assert _mounts(args)


@pytest.mark.parametrize("args", [
    ["status", "/mnt"], ["unmount", "/mnt"], ["uploads", "b"], ["cleanup", "b"],
    ["--version"], ["-V"], ["b", "/m", "--help"],
    ["b", "/m", "-o", "help"], ["b", "/m", "-ohelp"], ["b", "/m", "-o", "ro,help"],
])
def test_subcommands_and_questions_do_not(args: list[str]) -> None:
    assert not _mounts(args)
