"""The differential state machine (tests/differential.py) against a real mount: the same
random operations on a mounted file and on a local one give the same results, step by
step, and the object in S3 equals the local file at the end. Bounded for CI: a fixed
number of examples and steps, derandomized, no example database; scripts/differential.py
runs it for as long as one likes. Sequences the long run found a difference in are kept
in tests/mount/differential_cases/ and replayed here, each on its own fresh mount."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from differential import Differential, replay
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

MAX_EXAMPLES = 20
STEPS = 25
CASES = sorted((Path(__file__).parent / "differential_cases").glob("*.txt"))


def _machine(s3: Any, bucket: str, mount: Any, tmp_path: Path,
             found: list[str]) -> type[Differential]:
    m = mount(bucket, "part_size=5M")
    local = tmp_path / "local"
    local.mkdir()

    class Machine(Differential):
        mount_root, local_root, failures = m.path, local, found

    Machine.s3 = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                              config=Config(response_checksum_validation="when_required"))
    Machine.bucket = bucket
    return Machine


def test_mount_behaves_like_a_local_file(s3: Any, bucket: str, mount: Any,
                                         tmp_path: Path) -> None:
    found: list[str] = []
    Machine = _machine(s3, bucket, mount, tmp_path, found)
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, derandomize=True,
            database=None, deadline=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.generate]))
    except Exception:
        if found:  # the difference itself, not hypothesis's failed replay of it
            pytest.fail(found[0], pytrace=False)
        raise


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_sequences_the_long_run_found(case: Path, s3: Any, bucket: str, mount: Any,
                                      tmp_path: Path) -> None:
    found: list[str] = []
    Machine = _machine(s3, bucket, mount, tmp_path, found)
    try:
        replay(Machine(), case.read_text().splitlines())
    except AssertionError:
        pytest.fail(found[0] if found else "a difference", pytrace=False)
