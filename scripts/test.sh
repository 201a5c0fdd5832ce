#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), lint, and run every test.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k upload -x
# Tests that use S3 run against moto and Ceph RGW (scripts/rgw.sh, started by the tests);
# choose with --backend moto|rgw|both or S3MPFS_TEST_BACKEND (default both).
# Exit status: pytest's, or ruff's when pytest passed but the lint did not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./scripts/setup.sh

# The RGW backend needs Debian's ceph packages: install them now rather than inside the
# first test that needs them.
backend="${S3MPFS_TEST_BACKEND:-both}"
prev=""
for arg in "$@"; do
    case "$arg" in
        --backend=*) backend="${arg#--backend=}" ;;
    esac
    [[ "$prev" == "--backend" ]] && backend="$arg"
    prev="$arg"
done
if [[ "$backend" != moto ]]; then
    ./scripts/rgw.sh install
fi

# Programs some tests run, installed from Debian's packages when missing (one apt-get):
# ffmpeg (with ffprobe) for the muxer tests in tests/mount/test_random_writes.py, restic
# for the restore through a flaky network in tests/mount/test_reads.py, git for `git add`
# in tests/mount/test_request_counts.py, strace for the getxattr calls of `ls -l` in
# tests/mount/test_posix.py.
wanted=()
for tool in ffmpeg restic git strace; do
    command -v "$tool" >/dev/null 2>&1 || wanted+=("$tool")
done
if (( ${#wanted[@]} )); then
    as_root=()
    [[ $EUID -ne 0 ]] && as_root=(sudo)
    echo "test.sh: installing ${wanted[*]} for the tests that use them" >&2
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
fi

lint=0
.venv/bin/ruff check s3mpfs tests scripts || lint=$?

status=0
.venv/bin/python -m pytest -q "$@" || status=$?

if [[ $status -eq 0 && $lint -ne 0 ]]; then
    echo "test.sh: tests passed but ruff check failed (exit $lint)" >&2
    exit "$lint"
fi
exit "$status"
