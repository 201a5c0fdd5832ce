"""Capture `s3mpfs status --watch` during a copy (for the README), with tmux.

Starts moto and the test proxy, mounts a bucket, holds four parts of a 200 MiB `cp` at
the proxy (so the screen shows parts in flight), runs `s3mpfs status --watch` in a
detached tmux pane, prints `tmux capture-pane`, then lets the copy finish and cleans up.

    .venv/bin/python scripts/status_screenshot.py
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import is_mounted, random_file, wait_for  # noqa: E402
from s3proxy import FAULT_500, HOLD, S3Proxy  # noqa: E402


def main() -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="backups")
    proxy = S3Proxy(f"http://{host}:{port}").start()
    work = Path(tempfile.mkdtemp(prefix="s3mpfs-shot"))
    mnt = work / "mnt"
    mnt.mkdir()
    src = random_file(work / "db-dump.tar", 200 * 1024 * 1024, seed=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mount = subprocess.Popen([sys.executable, "-m", "s3mpfs", "backups:nightly", str(mnt),
                              "-f", "-o", f"endpoint_url={proxy.url},metrics=9464"],
                             env=env, stderr=subprocess.DEVNULL)
    copy = None
    try:
        wait_for(lambda: is_mounted(mnt), timeout=20, message="mount")
        (mnt / "notes.txt").write_text("committed before the copy\n")
        proxy.add_fault("UploadPart", FAULT_500, part_number=3, times=1)
        holds = [proxy.add_fault("UploadPart", HOLD, part_number=n) for n in range(9, 13)]
        copy = subprocess.Popen(["cp", str(src), str(mnt / "db-dump.tar")])
        wait_for(lambda: all(r.held.is_set() for r in holds), timeout=60, message="holds")
        subprocess.run(["tmux", "new-session", "-d", "-s", "s3mpfs-shot", "-x", "104", "-y",
                        "24", f"{sys.executable} -m s3mpfs status {mnt} --watch"],
                       env=env, check=True)
        time.sleep(3)  # let --watch draw a few frames (and the rate settle)
        shot = subprocess.run(["tmux", "capture-pane", "-p", "-t", "s3mpfs-shot"],
                              capture_output=True, text=True, check=True).stdout
        print(shot.rstrip().replace(str(mnt), "/mnt/backups"))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "s3mpfs-shot"], check=False)
        proxy.clear_faults()
        if copy is not None:
            copy.wait()
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        mount.wait()
        proxy.stop()
        server.stop()


if __name__ == "__main__":
    main()
