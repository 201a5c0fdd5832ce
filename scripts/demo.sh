#!/usr/bin/env bash
# Demo: mount a bucket of a local S3 stand-in (moto) with s3mpfs, copy a 100 MiB + 3 byte
# file in, and show the object it became: a 13-part multipart upload, SSE-S3 encrypted,
# stored as STANDARD_IA, byte for byte identical when read back through the mount.
# Sets everything up first (scripts/setup.sh); cleans up on any exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./scripts/setup.sh

export AWS_ACCESS_KEY_ID=demo
export AWS_SECRET_ACCESS_KEY=demo
export AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 || true

PY="$ROOT/.venv/bin/python"
INSPECT=("$PY" "$ROOT/scripts/demo_inspect.py")
BUCKET=demo
KEY=big.bin
MNT=/tmp/s3mpfs-demo-mnt
SIZE=$((100 * 1024 * 1024 + 3))
FUSERMOUNT="$(command -v fusermount3 || command -v fusermount)"

WORK="$(mktemp -d /tmp/s3mpfs-demo.XXXXXX)"
MOTO_LOG="$WORK/moto.log"
MOTO_PID=""

step() { printf '\n== %s\n' "$*"; }
is_mounted() { "$PY" -c 'import os, sys; sys.exit(not os.path.ismount(sys.argv[1]))' "$MNT"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if is_mounted 2>/dev/null; then
        "$FUSERMOUNT" -u "$MNT" 2>/dev/null || "$FUSERMOUNT" -uz "$MNT" 2>/dev/null || true
    fi
    if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -s "$MOTO_LOG" ]]; then
        echo "--- last lines of the moto server log:" >&2
        tail -n 20 "$MOTO_LOG" >&2 || true
    fi
    rm -rf "$WORK"
    if [[ $rc -eq 0 ]]; then
        printf '\ndemo finished: OK\n'
    else
        printf '\ndemo FAILED (exit %s)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "starting the moto S3 server"
PORT="$("${INSPECT[@]}" free-port)"
ENDPOINT="http://127.0.0.1:$PORT"
"$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
"${INSPECT[@]}" wait "$ENDPOINT" --timeout 30 --pid "$MOTO_PID"
echo "moto is listening on $ENDPOINT (pid $MOTO_PID)"
"${INSPECT[@]}" create-bucket "$ENDPOINT" "$BUCKET"

step "mounting s3://$BUCKET on $MNT"
if is_mounted; then
    echo "$MNT is still mounted from an earlier run; unmounting it"
    "$FUSERMOUNT" -u "$MNT" 2>/dev/null || "$FUSERMOUNT" -uz "$MNT"
fi
mkdir -p "$MNT"
OPTS="endpoint_url=$ENDPOINT,sse=AES256,storage_class=STANDARD_IA"
echo "+ python -m s3mpfs $BUCKET $MNT -o $OPTS"
"$PY" -m s3mpfs "$BUCKET" "$MNT" -o "$OPTS"
is_mounted || { echo "s3mpfs returned but $MNT is not mounted" >&2; exit 1; }
grep " $MNT " /proc/mounts || true

step "creating a random file of $SIZE bytes (100 MiB + 3)"
SRC="$WORK/$KEY"
head -c "$SIZE" /dev/urandom >"$SRC"
ls -l "$SRC"

step "cp into the mount (close() returns once the upload is complete)"
time cp "$SRC" "$MNT/$KEY"

step "ls -l $MNT"
ls -l "$MNT"

step "the object in S3 (head_object)"
"${INSPECT[@]}" head "$ENDPOINT" "$BUCKET" "$KEY"

step "reading it back through the mount: cmp"
cmp "$SRC" "$MNT/$KEY"
echo "identical: $SIZE bytes"

step "unmounting"
"$FUSERMOUNT" -u "$MNT"
echo "unmounted $MNT"
"${INSPECT[@]}" pending "$ENDPOINT" "$BUCKET"
