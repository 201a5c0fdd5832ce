"""Long mode of the differential test (tests/differential.py): many seeds, many operations.

    .venv/bin/python scripts/differential.py [--seeds 0-9] [--examples 50] [--steps 200]
        [--endpoint URL] [--minutes N] [--seed-timeout S] [--options debug]
    .venv/bin/python scripts/differential.py --replay steps.txt

Starts moto in this process (or uses --endpoint with AWS_* keys set), creates a bucket,
mounts it with part_size=5M (python -m s3mpfs, from this checkout), and runs the state
machine with each seed in a child process; prints one line per seed (operations run, time,
outcome) and the first failure's steps in full. A seed whose child dies (a SIGBUS from a
mapped page the mount could not read) or runs past --seed-timeout (a hang) is reported
with its last steps; after a hang the run stops. Exit status 1 if any seed found a
difference.

The mount never outlives this script: it is unmounted in `finally` (SIGTERM, SIGHUP and
SIGINT end the script through it), and the mount process gets SIGTERM from the kernel
when this process dies in any other way (PR_SET_PDEATHSIG), on which it unmounts itself.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
PR_SET_PDEATHSIG = 1
TAIL = 60  # steps shown of a seed that died or hung


def seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def _die_with_parent() -> None:
    """In the mount process, before exec: SIGTERM (a clean unmount) when the script dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through `finally`: the mount is unmounted


def run_seed(seed: int, args: argparse.Namespace, endpoint: str, bucket: str, mnt: Path,
             local: Path, steps_file: Path, result_file: Path) -> None:
    """One seed, in a child process: its steps go to `steps_file` as they happen (the
    parent shows them if this process dies or hangs), its outcome to `result_file`."""
    import boto3
    import hypothesis.core
    from botocore.config import Config
    from differential import Differential
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    class StepsLog(list):
        def __init__(self, out: object) -> None:
            super().__init__()
            self.out = out

        def append(self, text: str) -> None:
            super().append(text)
            self.out.write(text + "\n")
            self.out.flush()

    found: list[str] = []
    documented: list[str] = []
    faulthandler.register(signal.SIGUSR1, open(f"{steps_file}.stack", "w"))  # noqa: SIM115
    with open(steps_file, "w") as out:
        steps = StepsLog(out)

        class Machine(Differential):
            mount_root, local_root, steps_log, failures = mnt, local, steps, found
            limitations = documented

        Machine.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                  config=Config(response_checksum_validation="when_required"))
        Machine.bucket = bucket
        hypothesis.core.global_force_seed = seed
        try:
            if args.replay:
                from differential import replay
                replay(Machine(), Path(args.replay).read_text().splitlines())
                raise SystemExit(_write_result(result_file, steps, documented, "same"))
            run_state_machine_as_test(Machine, settings=settings(
                max_examples=args.examples, stateful_step_count=args.steps,
                database=None, deadline=None, suppress_health_check=list(HealthCheck),
                print_blob=False, phases=[Phase.generate]))  # (found[0] is shown)
            outcome = "same"
        except Exception as exc:  # a difference: report it, go on with the next seed
            outcome = f"DIFFERENT\n{found[0] if found else exc}"
    _write_result(result_file, steps, documented, outcome)


def _write_result(result_file: Path, steps: list, documented: list[str], outcome: str) -> int:
    kinds = sorted({d.split(":")[0].split("(")[0] + ":" + d.split(":", 1)[1]
                    for d in documented})
    result_file.write_text(f"{len(steps)}\n{len(documented)}\n{kinds!r}\n{outcome}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seeds, default=seeds("0-9"))
    parser.add_argument("--examples", type=int, default=50, help="sequences per seed")
    parser.add_argument("--steps", type=int, default=200, help="operations per sequence")
    parser.add_argument("--endpoint", help="an S3 endpoint instead of moto in this process")
    parser.add_argument("--minutes", type=float, default=0, help="stop starting seeds after")
    parser.add_argument("--seed-timeout", type=float, default=600,
                        help="seconds a seed may run before it counts as a hang")
    parser.add_argument("--replay", metavar="FILE",
                        help="instead of seeds: apply the steps in FILE (as a failure "
                        "prints them) once, e.g. cut down by hand")
    parser.add_argument("--options", default="",
                        help="more mount options, e.g. debug (its log: mount.log)")
    args = parser.parse_args()
    if args.replay:
        args.seeds = [0]  # (one run of the steps)

    import boto3
    from botocore.config import Config

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("S3MPFS_PACK_AFTER", "1")  # idle nodes packed at once, as in tests
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
         f"endpoint_url={endpoint},region=us-east-1,part_size=5M,cache_dir={work / 'cache'}"
         + (f",{args.options}" if args.options else "")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        preexec_fn=_die_with_parent)
    failures = 0
    context = multiprocessing.get_context("spawn")  # (awscrt, loaded here, breaks in a fork)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                print((work / "mount.log").read_text(), file=sys.stderr)
                return 2
            time.sleep(0.05)
        started = time.monotonic()
        total_steps = documented = 0
        kinds: set[str] = set()
        for seed in args.seeds:
            if args.minutes and time.monotonic() - started > args.minutes * 60:
                break
            steps_file, result_file = work / f"seed-{seed}.steps", work / f"seed-{seed}.result"
            child = context.Process(target=run_seed, args=(
                seed, args, endpoint, bucket, mnt, local, steps_file, result_file))
            began = time.monotonic()
            child.start()
            child.join(args.seed_timeout)
            hung = child.is_alive()
            if hung:  # what the mount is doing, before anything else touches it
                status = subprocess.run(
                    [sys.executable, "-m", "s3mpfs", "status", "--json", str(mnt)],
                    capture_output=True, text=True, env=env, timeout=60, check=False)
                (work / f"seed-{seed}.status.json").write_text(status.stdout + status.stderr)
                os.kill(child.pid, signal.SIGUSR1)  # its stack, into seed-N.steps.stack
                with open(work / f"seed-{seed}.parent.stack", "w") as stacks:
                    faulthandler.dump_traceback(stacks)  # moto's threads, if in this process
                    port = endpoint.rsplit(":", 1)[1]  # the sockets of our S3 endpoint
                    subprocess.run(["ss", "-tnpo", f"( sport = :{port} or dport = :{port} )"],
                                   stdout=stacks, check=False)
                time.sleep(1)
                child.kill()
                child.join(30)
            if result_file.exists():
                count, met, seen, outcome = result_file.read_text().split("\n", 3)
                documented += int(met)
                kinds |= set(eval(seen))  # (our own repr of a list of strings)
            else:
                lines = steps_file.read_text().splitlines() if steps_file.exists() else []
                count = str(len(lines))
                why = (f"HUNG (over {args.seed_timeout:.0f} s; the mount's status: "
                       f"{work / f'seed-{seed}.status.json'})" if hung
                       else f"DIED ({_death(child.exitcode)})")
                outcome = f"{why}; its last steps:\n  " + "\n  ".join(lines[-TAIL:])
            if outcome != "same":
                failures += 1
            total_steps += int(count)
            print(f"seed {seed}: {count} operations in {time.monotonic() - began:.0f} s:"
                  f" {outcome}", flush=True)
            if hung:
                print("the mount hung: no further seed is run", flush=True)
                break
        print(f"documented differences met (then started afresh): {documented} "
              f"{sorted(kinds)}")
        print(f"{total_steps} operations, {failures} seed(s) with a difference, "
              f"{time.monotonic() - started:.0f} s; mount log {work / 'mount.log'}")
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # the cleanup runs to its end
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
        if server is not None:
            server.stop()
    return 1 if failures else 0


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return signal.Signals(-exitcode).name
    return f"exit status {exitcode}"


if __name__ == "__main__":
    sys.exit(main())
