#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), lint, and run every test.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k upload -x
# Exit status: pytest's, or ruff's when pytest passed but the lint did not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./scripts/setup.sh

lint=0
.venv/bin/ruff check s3mpfs tests scripts || lint=$?

status=0
.venv/bin/python -m pytest -q "$@" || status=$?

if [[ $status -eq 0 && $lint -ne 0 ]]; then
    echo "test.sh: tests passed but ruff check failed (exit $lint)" >&2
    exit "$lint"
fi
exit "$status"
