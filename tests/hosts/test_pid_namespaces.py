"""Two mounts of one bucket on one host, in different PID namespaces (containers sharing
the host's name and boot id): neither may take the other's live upload for abandoned."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest
from helpers import STORE_DEADLINE, wait_for

pytestmark = pytest.mark.mount

MiB = 1024 * 1024

# Inside the namespace: writes the first 6 MiB of a seeded stream to argv[1], says
# "ready", and on "go" from stdin writes the rest (11 MiB in all) and closes the file.
WRITER = """
import random, sys
data = random.Random(4).randbytes(11 * 1024 * 1024)
f = open(sys.argv[1], "wb", buffering=0)
f.write(data[:6 * 1024 * 1024])
print("ready", flush=True)
sys.stdin.readline()
f.write(data[6 * 1024 * 1024:])
f.close()
print("closed", flush=True)
"""


def registered(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=".s3mpfs/uploads/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_a_mount_in_another_pid_namespace_leaves_a_live_upload_alone(
    s3: Any, bucket: str, mount: Any, pidns_mount: Any
) -> None:
    a = pidns_mount("part_size=5M")
    writer = a.run_inside([sys.executable, "-c", WRITER, str(a.mountpoint / "big.bin")],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline() == "ready\n"  # a part: the upload exists
        wait_for(lambda: registered(s3, bucket), timeout=STORE_DEADLINE,
                 message="the upload's registry entry")
        b = mount(bucket, "part_size=5M")  # sweeps abandoned uploads at mount
        wait_for(lambda: "abandoned" in b.log_text(), timeout=STORE_DEADLINE,
                 message="the second mount's sweep to end")
        out, err = writer.communicate("go\n", timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0 and out == "closed\n", err  # close() succeeded
    written = random.Random(4).randbytes(11 * MiB)
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == written
    assert "aborted" not in b.log_text()
