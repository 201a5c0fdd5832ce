#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with RGW (S3) on 127.0.0.1, for the tests.
#
#   scripts/rgw.sh start    start it (installs Debian's ceph packages when missing); prints
#                           the environment to use it, as `export NAME=value` lines
#   scripts/rgw.sh env      print those lines again (fails when it is not running)
#   scripts/rgw.sh status   exit 0 when every daemon is running and S3 answers
#   scripts/rgw.sh stop     kill the daemons by PID and remove the state directory
#   scripts/rgw.sh install  only install the Debian packages (ceph-mon, ceph-osd, radosgw,
#                           ceph-common; --no-install-recommends, about 61 MB)
#
# One monitor, one memstore OSD (objects in RAM, sized by S3MPFS_RGW_MEMSTORE), one radosgw;
# no authentication inside the cluster; every port on 127.0.0.1, picked free at start. All
# state (config, monitor store, logs, sockets, PID files) lives in one directory:
# $S3MPFS_RGW_DIR, by default ${TMPDIR:-/tmp}/s3mpfs-rgw. `start` is idempotent (a running
# cluster in that directory is reused) and takes a few seconds; `stop` removes the directory.
#
# The S3 user's keys are $S3MPFS_RGW_ACCESS_KEY / $S3MPFS_RGW_SECRET_KEY (defaults below).
# SSE-C and SSE-KMS work over plain http; KMS key ids testkey-1 and testkey-2 exist.
# Storage classes: STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR.
set -euo pipefail

DIR="${S3MPFS_RGW_DIR:-${TMPDIR:-/tmp}/s3mpfs-rgw}"
ACCESS_KEY="${S3MPFS_RGW_ACCESS_KEY:-s3mpfs-test-access}"
SECRET_KEY="${S3MPFS_RGW_SECRET_KEY:-s3mpfs-test-secret}"
# Memstore allocates as objects are written, so this is a cap, not a reservation. The suite's
# largest file is 1 GiB, written over an existing object at most once; deleted and overwritten
# data is garbage-collected within seconds (rgw gc settings below). Writes to a full memstore
# hang instead of failing, so keep generous headroom.
MEMSTORE_BYTES="${S3MPFS_RGW_MEMSTORE:-$((6 * 1024 * 1024 * 1024))}"
START_TIMEOUT="${S3MPFS_RGW_START_TIMEOUT:-60}"
# KMS keys of RGW's "testing" backend: fixed 32-byte keys, base64.
KMS_KEY_1="$(printf '%s' 's3mpfs-rgw-testing-kms-key-one!!' | base64 -w0)"
KMS_KEY_2="$(printf '%s' 's3mpfs-rgw-testing-kms-key-two!!' | base64 -w0)"
STORAGE_CLASSES=(STANDARD_IA ONEZONE_IA INTELLIGENT_TIERING GLACIER_IR)
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)

log() { printf 'rgw: %s\n' "$*" >&2; }
die() { printf 'rgw: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A free port below the kernel's ephemeral range (32768-60999), so that no program binding
# port 0 in the meantime (a test's moto server or proxy) can take it before our daemon does.
free_port() {
    python3 - <<'PY'
import random, socket
low, high = 20000, 32000
for port in random.sample(range(low, high), 200):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
PY
}

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

running() {
    [[ -f "$DIR/env" ]] && running_daemons
}

running_daemons() {
    local d
    for d in mon.a osd.0 client.rgw; do
        pid_alive "$DIR/run/$d.pid" || return 1
    done
}

s3_answers() {
    # radosgw (its request ids look like "tx0000...-default") serves anonymous ListBuckets.
    local port="$1"
    python3 - "$port" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2) as resp:
    assert resp.headers.get("x-amz-request-id", "").startswith("tx"), dict(resp.headers)
    assert b"ListAllMyBucketsResult" in resp.read()
PY
}

# wait_until SECONDS WHAT COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_until() {
    local timeout="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for $what; logs in $DIR/log"
            return 1
        fi
        sleep 0.1
    done
}

print_env() {
    cat "$DIR/env"
}

ceph_() { ceph -c "$DIR/ceph.conf" --connect-timeout 10 "$@"; }
rgw_admin() { radosgw-admin -c "$DIR/ceph.conf" -n client.admin "$@"; }

write_conf() {
    local mon_port="$1" rgw_port="$2" fsid="$3"
    cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public network = 127.0.0.1/32
ms bind msgr1 = false
ms bind msgr2 = true
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# With auth none the monitor must accept crc for clients, or radosgw waits 300 s.
ms mon client mode = crc secure
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = true
keyring = $DIR/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false

[mon]
mon data = $DIR/mon.\$id
mon initial members = a
# Proposals every 50 ms instead of 1 s: start-up in ~3 s instead of ~13 s.
paxos propose interval = 0.05
paxos min wait = 0.01
mon osd reporter subtree level = osd

[osd]
osd data = $DIR/\$name
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd max object name len = 460
osd max object namespace len = 64

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
rgw zonegroup = default
rgw zone = default
rgw enable usage log = false
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = testkey-1=$KMS_KEY_1 testkey-2=$KMS_KEY_2
# Deleted, overwritten and aborted data goes away within seconds, so the memstore OSD does
# not fill up over a test session.
rgw gc obj min wait = 1
rgw gc processor period = 2
rgw gc processor max time = 2
rgw lc debug interval = 10

[client.admin]
log file = $DIR/log/\$name.\$pid.log
EOF
}

start() {
    install_packages
    if running; then
        print_env
        return 0
    fi
    if [[ -e "$DIR" ]]; then
        # Leftovers of a cluster that is gone or half-started: start afresh.
        stop_daemons
        rm -rf "$DIR"
    fi
    local t0=$SECONDS
    mkdir -p "$DIR"/{run,log,rgw,mon.a,osd.0}
    local fsid mon_port rgw_port osd_uuid
    fsid="$(cat /proc/sys/kernel/random/uuid)"
    osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
    mon_port="$(free_port)"
    rgw_port="$(free_port)"
    write_conf "$mon_port" "$rgw_port" "$fsid"
    : >"$DIR/keyring"

    # Monitor.
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" \
        >/dev/null
    ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" >/dev/null
    ceph-mon -c "$DIR/ceph.conf" -i a 2>>"$DIR/log/stderr.log"
    wait_until "$START_TIMEOUT" "the monitor" ceph_ mon stat

    # One memstore OSD.
    local osd_id
    osd_id="$(ceph_ osd new "$osd_uuid")"
    [[ "$osd_id" == 0 ]] || die "unexpected OSD id $osd_id"
    ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
    ceph-osd -c "$DIR/ceph.conf" -i 0 2>>"$DIR/log/stderr.log"
    wait_until "$START_TIMEOUT" "the OSD" sh -c \
        "ceph -c '$DIR/ceph.conf' osd dump 2>/dev/null | grep -q '^osd.0 up'"

    # Zone placement (storage classes) and the S3 user, before radosgw reads the zone.
    # (user create first: it makes the default zone and zonegroup that placement changes.)
    rgw_admin user create --uid s3mpfs-test --display-name "s3mpfs tests" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >/dev/null
    local sc
    for sc in "${STORAGE_CLASSES[@]}"; do
        rgw_admin zonegroup placement add --rgw-zonegroup default \
            --placement-id default-placement --storage-class "$sc" >/dev/null
        rgw_admin zone placement add --rgw-zone default --placement-id default-placement \
            --storage-class "$sc" --data-pool default.rgw.buckets.data >/dev/null
    done

    # radosgw.
    radosgw -c "$DIR/ceph.conf" -n client.rgw 2>>"$DIR/log/stderr.log"
    wait_until "$START_TIMEOUT" "radosgw on 127.0.0.1:$rgw_port" s3_answers "$rgw_port"
    running_daemons || die "a daemon exited during start-up; logs in $DIR/log"

    cat >"$DIR/env" <<EOF
export S3MPFS_RGW_DIR=$DIR
export S3MPFS_RGW_ENDPOINT=http://127.0.0.1:$rgw_port
export S3MPFS_RGW_ACCESS_KEY=$ACCESS_KEY
export S3MPFS_RGW_SECRET_KEY=$SECRET_KEY
export S3MPFS_RGW_KMS_KEY_ID=testkey-1
EOF
    log "RGW at http://127.0.0.1:$rgw_port in $((SECONDS - t0)) s (state in $DIR)"
    print_env
}

stop_daemons() {
    # SIGKILL: the cluster is thrown away, so there is nothing to shut down cleanly (a memstore
    # OSD would otherwise spend seconds on it).
    local pids=() f pid
    for f in "$DIR"/run/*.pid; do
        [[ -s "$f" ]] || continue
        pid="$(cat "$f")"
        # Only our daemons: the process must be a ceph daemon using this directory's config.
        if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" \
            | grep -qF -- "$DIR/ceph.conf"; then
            kill -KILL "$pid" 2>/dev/null && pids+=("$pid")
        fi
    done
    local deadline=$((SECONDS + 10))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.05
        done
    done
}

stop() {
    [[ -d "$DIR" ]] || return 0
    stop_daemons
    rm -rf "$DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) running || die "not running (state directory $DIR)"; print_env ;;
    status) running && s3_answers "$(sed -n 's/.*ENDPOINT=.*:\([0-9]*\)$/\1/p' "$DIR/env")" ;;
    install) install_packages ;;
    *) usage ;;
esac
