"""The package as a user installs it: the wheel is built in a clean virtualenv that has
no test dependencies, installed there, and that `s3mpfs` mounts a bucket. Needs the
package index (PyPI or the machine's mirror) for the dependencies; pip's cache makes it
quick after the first run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import REGION
from helpers import REPO_ROOT, is_mounted, wait_for

pytestmark = pytest.mark.mount

SOURCES = ("pyproject.toml", "README.md", "s3mpfs", "contrib")


def clean_env(venv: Path) -> dict[str, str]:
    """The test session's AWS settings, nothing pointing at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return env


def run(argv: list[Any], cwd: Path, env: dict[str, str],
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.moto_only("installing the wheel does not depend on the server (every other "
                       "mount test runs on both)")
def test_wheel_installs_and_mounts(tmp_path: Path, s3: Any, bucket: str,
                                   s3_server: str) -> None:
    source = tmp_path / "source"  # a copy: building leaves build/ and *.egg-info behind
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(REPO_ROOT / name, source / name)
    venv = tmp_path / "venv"
    env = clean_env(venv)
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", venv], tmp_path, env)
    run([venv / "bin/pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source],
        tmp_path, env)
    wheel = next((tmp_path / "dist").glob("s3mpfs-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "Requires-Python: >=3.11" in metadata and "Project-URL" in metadata
    assert "Description-Content-Type: text/markdown" in metadata and "## Install" in metadata
    assert any(n.endswith("share/man/man8/s3mpfs.8") for n in names), names
    run([venv / "bin/pip", "install", "-q", wheel], tmp_path, env)

    probe = run([venv / "bin/python", "-c", "import s3mpfs, importlib.util; "
                 "print(s3mpfs.__file__); print(importlib.util.find_spec('pytest'))"],
                tmp_path, env)
    where, pytest_spec = probe.stdout.split()
    assert where.startswith(str(venv)) and pytest_spec == "None"
    assert (venv / "share/man/man8/s3mpfs.8").exists()
    assert (venv / "share/bash-completion/completions/s3mpfs").exists()

    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello from S3")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run([venv / "bin/s3mpfs", bucket, mnt, "-o", f"endpoint_url={s3_server},region={REGION}"],
        tmp_path, env, timeout=60)
    try:
        assert (mnt / "hello.txt").read_bytes() == b"hello from S3"
        (mnt / "written.txt").write_bytes(b"through the installed s3mpfs")
        body = s3.get_object(Bucket=bucket, Key="written.txt")["Body"].read()
        assert body == b"through the installed s3mpfs"
        run([venv / "bin/s3mpfs", "unmount", mnt], tmp_path, env, timeout=60)
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, timeout=30)
    wait_for(lambda: not is_mounted(mnt), timeout=15, message="the unmount")
