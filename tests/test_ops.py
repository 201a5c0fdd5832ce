"""Operability: --version, `-o help`, syslog in the background, `s3mpfs status`,
`s3mpfs unmount --wait`, the Prometheus endpoint."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from s3mpfs import __version__
from s3mpfs.config import build_config
from s3mpfs.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
Run = Callable[..., subprocess.CompletedProcess[str]]


def help_names(text: str) -> list[str]:
    """The option names `s3mpfs -o help` lists (one per line, indented by two spaces)."""
    return re.findall(r"^  ([a-z_]+) ", text, flags=re.M)


def readme_names() -> list[str]:
    """The options named in the first column of the README's "Mount options" table."""
    section = (REPO / "README.md").read_text().split("## Mount options", 1)[1]
    section = section.split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += re.findall(r"`([a-z_]+)`", first)
    return names


def test_version(run_cli: Run) -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"s3mpfs {__version__}"


@pytest.mark.parametrize("args", [["-o", "help"], ["-ohelp"], ["-o", "ro,help"]])
def test_option_help_lists_what_the_parser_accepts(run_cli: Run, tmp_path: Path,
                                                   args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    names = help_names(result.stdout)
    assert len(names) == len(set(names)) > 20
    for name in names:  # each one listed is one the parser knows (a bad value is fine)
        for value in ("1", "x", None):
            option = name if value is None else f"{name}={value}"
            try:
                build_config("bucket", str(tmp_path), [option])
            except ConfigError as exc:
                assert "unknown option" not in str(exc), (option, exc)
    with pytest.raises(ConfigError, match="unknown option"):
        build_config("bucket", str(tmp_path), ["not_an_option=1"])
    assert "(default: 8M)" in result.stdout.split("part_size", 1)[1].splitlines()[0]


def test_help_lists_the_options_too(run_cli: Run) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert set(help_names(result.stdout)) >= set(help_names(run_cli("-o", "help").stdout))


def test_readme_names_the_same_options(run_cli: Run) -> None:
    listed = help_names(run_cli("-o", "help").stdout)
    assert sorted(readme_names()) == sorted(listed)
