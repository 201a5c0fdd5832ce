"""Shared by the benchmark's modules: where things are, the test credentials, the stop flag
set by signals, the two error kinds, logging, sizes, and how to start a child process
running one of the packages in scripts/ (benchkit itself, nulls3)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
MiB = 1024 * 1024
REGION = "us-east-1"
KEY = "bench.bin"
ACCESS_KEY = "benchkey"
SECRET_KEY = "benchsecret"
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Variables that could point a client at a real account, another endpoint, or (rclone)
# break it: the AWS SDK in rclone refuses AWS_CA_BUNDLE with its own HTTP transport.
AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CA_BUNDLE",
)


STOP = threading.Event()  # set by SIGINT/SIGTERM/SIGHUP


def check_stop() -> None:
    """Raise KeyboardInterrupt if a stop was asked for. The signal handler raises it too,
    but Python drops an exception raised while a finalizer runs (boto3's code sometimes
    is in one), so the loops below also look at the flag."""
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested")


class Unavailable(Exception):
    """A peer that cannot be installed or run here; its message is the reason."""


class BenchError(Exception):
    """A measurement that went wrong (a command failed, a wrong object)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 1G")
    unit = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}[match.group(2).lower()]
    size = int(match.group(1)) * unit
    if size < 16 * MiB:
        raise argparse.ArgumentTypeError("use at least 16M, so that every tool uses multipart")
    return size


def human(size: int) -> str:
    if size % (1024 * MiB) == 0:
        return f"{size // (1024 * MiB)} GiB"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} bytes"



# --------------------------------------------------------------------------- children


def python_module(module: str, *args: str) -> list[str]:
    """The argv of a child running `python -m MODULE` (a package in scripts/); give it an
    environment from `with_scripts`."""
    return [sys.executable, "-m", module, *args]


def with_scripts(env: dict[str, str]) -> dict[str, str]:
    """`env` with scripts/ first on PYTHONPATH, so that `python -m benchkit|nulls3` works
    from any working directory."""
    path = os.pathsep.join(p for p in (str(SCRIPTS), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path}
