"""The differential state machine (tests/differential.py) against a real mount: the same
random operations on a mounted file and on a local one give the same results, step by
step, and the object in S3 equals the local file at the end. Bounded for CI: a fixed
number of examples and steps, derandomized, no example database; scripts/differential.py
runs it for as long as one likes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from differential import Differential
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

MAX_EXAMPLES = 20
STEPS = 25


def test_mount_behaves_like_a_local_file(s3: Any, bucket: str, mount: Any,
                                         tmp_path: Path) -> None:
    m = mount(bucket, "part_size=5M")
    local = tmp_path / "local"
    local.mkdir()

    found: list[str] = []

    class Machine(Differential):
        mount_root, local_root, failures = m.path, local, found

    Machine.s3 = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                              config=Config(response_checksum_validation="when_required"))
    Machine.bucket = bucket
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, derandomize=True,
            database=None, deadline=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.generate]))
    except Exception:
        if found:  # the difference itself, not hypothesis's failed replay of it
            pytest.fail(found[0], pytrace=False)
        raise
