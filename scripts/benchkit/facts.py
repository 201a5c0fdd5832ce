"""The machine and the versions of every tool, for the reports' headers."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from .base import FUSERMOUNT, REPO
from .procs import version_of


def machine_facts() -> dict[str, str]:
    facts: dict[str, str] = {"nproc": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    facts["kernel"] = platform.release()
    facts["os"] = version_of(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]) or "?"
    return facts


def versions() -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {"python": platform.python_version()}
    for dist in ("s3mpfs", "boto3", "botocore", "s3transfer", "moto", "pyfuse3", "trio"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    commit = version_of(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if commit and re.fullmatch(r"[0-9a-f]+", commit):
        dirty = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--",
                                "s3mpfs"], capture_output=True).returncode
        found["s3mpfs"] += f" (git {commit}{', s3mpfs/ modified' if dirty else ''})"
    found["s3fs"] = (version_of(["s3fs", "--version"], r"V(\d[\w.\-]*)")
                     if shutil.which("s3fs") else None) or "not installed"
    found["rclone"] = (version_of(["rclone", "version"], r"rclone (v\S+)")
                       if shutil.which("rclone") else None) or "not installed"
    found["fuse3"] = version_of([FUSERMOUNT, "-V"], r"version:?\s*(\S+)") or "?"
    return found
