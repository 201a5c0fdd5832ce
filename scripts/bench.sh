#!/usr/bin/env bash
# Benchmark s3mpfs against s3fs-fuse, rclone and awscrt on a local S3 endpoint and write
# docs/BENCHMARKS.md. Sets up the machine (scripts/setup.sh), installs the peers (Debian
# packages s3fs and rclone) when they are missing, then runs scripts/bench.py (the entry
# point of the scripts/benchkit/ package); arguments go to it, e.g.
# ./scripts/bench.sh --size 512M --runs 3
# A peer that cannot be installed is reported as "not available" instead of failing the run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./scripts/setup.sh

missing=()
for tool in s3fs rclone; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    SUDO=()
    if [[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
    if [[ $EUID -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        echo "bench.sh: need root (or sudo) to install ${missing[*]}; running without" >&2
    else
        echo "bench.sh: installing Debian packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! { "${SUDO[@]}" apt-get update -qq \
                && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
                    >/dev/null; }; then
            echo "bench.sh: could not install ${missing[*]}; the report will say so" >&2
        fi
    fi
fi

# matplotlib draws the plots of docs/BENCHMARKS.md: a benchmark-only dependency.
.venv/bin/python -c "import matplotlib" 2>/dev/null \
    || .venv/bin/pip install -q matplotlib \
    || echo "bench.sh: could not install matplotlib; the report will have no plots" >&2

exec .venv/bin/python scripts/bench.py "$@"
