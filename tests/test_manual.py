"""The man page and the bash completion in contrib/ are what `python -m s3mpfs.manual`
makes from the option table, and they name every option `s3mpfs -o help` lists."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from helpers import REPO_ROOT

from s3mpfs.config import OPTIONS
from s3mpfs.manual import bash_completion, man_page

MAN_PAGE = REPO_ROOT / "contrib" / "s3mpfs.8"
COMPLETION = REPO_ROOT / "contrib" / "bash-completion" / "s3mpfs"


def test_contrib_files_are_up_to_date() -> None:
    assert MAN_PAGE.read_text() == man_page(), \
        "run: python -m s3mpfs.manual man > contrib/s3mpfs.8"
    assert COMPLETION.read_text() == bash_completion(), \
        "run: python -m s3mpfs.manual bash > contrib/bash-completion/s3mpfs"


def test_every_option_is_in_both() -> None:
    page, completion = man_page(), bash_completion()
    for option in OPTIONS:
        assert "\\fB" + option.name + "\\fP" in page, option.name  # names have no "-"
        assert option.name in completion.split('local options="', 1)[1].split('"', 1)[0]


@pytest.mark.skipif(not shutil.which("groff"), reason="needs groff")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN_PAGE)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_completion_completes_subcommands_and_option_names() -> None:
    script = f"""
    _init_completion() {{ cur=${{COMP_WORDS[COMP_CWORD]}}; prev=${{COMP_WORDS[COMP_CWORD-1]}};
        words=("${{COMP_WORDS[@]}}"); cword=$COMP_CWORD; }}
    compopt() {{ :; }}
    _filedir() {{ :; }}
    source {COMPLETION}
    COMP_WORDS=(s3mpfs st); COMP_CWORD=1; _s3mpfs; echo "${{COMPREPLY[*]}}"
    COMP_WORDS=(s3mpfs b /mnt -o sse=AES256,part_s); COMP_CWORD=4; _s3mpfs
    echo "${{COMPREPLY[*]}}"
    COMP_WORDS=(s3mpfs unmount --); COMP_CWORD=2; _s3mpfs; echo "${{COMPREPLY[*]}}"
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.splitlines() == ["status", "sse=AES256,part_size=",
                                          "--wait --if-dead --help"], result.stdout
