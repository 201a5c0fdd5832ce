"""Long mode of the differential test (tests/differential.py): many seeds, many operations.

    .venv/bin/python scripts/differential.py [--seeds 0-9] [--examples 50] [--steps 200]
        [--endpoint URL] [--minutes N]

Starts moto in this process (or uses --endpoint with AWS_* keys set), creates a bucket,
mounts it with part_size=5M (python -m s3mpfs, from this checkout), and runs the state
machine with each seed; prints one line per seed (operations run, time, outcome) and the
first failure's steps in full. Exit status 1 if any seed found a difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


def seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seeds, default=seeds("0-9"))
    parser.add_argument("--examples", type=int, default=50, help="sequences per seed")
    parser.add_argument("--steps", type=int, default=200, help="operations per sequence")
    parser.add_argument("--endpoint", help="an S3 endpoint instead of moto in this process")
    parser.add_argument("--minutes", type=float, default=0, help="stop starting seeds after")
    args = parser.parse_args()

    import boto3
    from botocore.config import Config
    from differential import Differential
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        import logging

        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(response_checksum_validation="when_required"))
    bucket = f"differential-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    work = Path(tempfile.mkdtemp(prefix="s3mpfs-differential-"))
    mnt, local = work / "mnt", work / "local"
    mnt.mkdir()
    local.mkdir()
    log = open(work / "mount.log", "wb")  # noqa: SIM115 (open for the mount's lifetime)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3mpfs", bucket, str(mnt), "-f", "-o",
         f"endpoint_url={endpoint},region=us-east-1,part_size=5M,cache_dir={work / 'cache'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    failures = 0
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                print((work / "mount.log").read_text(), file=sys.stderr)
                return 2
            time.sleep(0.05)
        started = time.monotonic()
        total_steps = 0
        documented: list[str] = []
        for seed in args.seeds:
            if args.minutes and time.monotonic() - started > args.minutes * 60:
                break
            steps: list[str] = []

            found: list[str] = []

            class Machine(Differential):
                mount_root, local_root, steps_log, failures = mnt, local, steps, found
                limitations = documented

            Machine.s3, Machine.bucket = s3, bucket
            import hypothesis.core
            hypothesis.core.global_force_seed = seed
            began = time.monotonic()
            try:
                run_state_machine_as_test(Machine, settings=settings(
                    max_examples=args.examples, stateful_step_count=args.steps,
                    database=None, deadline=None, suppress_health_check=list(HealthCheck),
                    print_blob=False))
                outcome = "same"
            except Exception as exc:  # a difference: report it, go on with the next seed
                failures += 1
                outcome = f"DIFFERENT\n{found[0] if found else exc}"
            total_steps += len(steps)
            print(f"seed {seed}: {len(steps)} operations in {time.monotonic() - began:.0f} s:"
                  f" {outcome}", flush=True)
        kinds = sorted({d.split(":")[0].split("(")[0] + ":" + d.split(":", 1)[1]
                        for d in documented})
        print(f"documented differences met (then started afresh): {len(documented)} "
              f"{kinds}")
        print(f"{total_steps} operations, {failures} seed(s) with a difference, "
              f"{time.monotonic() - started:.0f} s; mount log {work / 'mount.log'}")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if server is not None:
            server.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
