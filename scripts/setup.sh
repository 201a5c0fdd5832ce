#!/usr/bin/env bash
# Prepare this machine for s3mpfs: Debian packages, /dev/fuse, and a virtualenv
# (.venv in the repo root) with the package installed editable plus its test extras.
#
# Idempotent and quick on reruns: apt runs only when a package is missing, the venv is
# created only when missing or broken, and pip runs only when pyproject.toml changed.
# Runs as root (or through sudo) on Debian 12; needs only the Debian mirrors and PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.s3mpfs-setup-stamp"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi
as_root() {
    if [[ $EUID -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "need root (or sudo) to run: $*"
    fi
    "${SUDO[@]}" "$@"
}

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# The first interpreter that is Python >= 3.11, or nothing.
find_python() {
    local cand
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

# A venv that runs and is ours to keep?
venv_ok() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys, pip' >/dev/null 2>&1
}

# Can this interpreter make a venv with pip in it? (Debian's needs python3-venv for that.)
can_make_venv() {
    local tmp rc=0
    tmp="$(mktemp -d)"
    "$1" -m venv "$tmp/v" >/dev/null 2>&1 || rc=1
    rm -rf "$tmp"
    return $rc
}

# --- Debian packages ---------------------------------------------------------------
missing=()
# (zip, unzip, curl, systemd-analyze, setpriv and groff are used by the tests: groff
# renders the man page in tests/test_manual.py)
for pkg in fuse3 libfuse3-dev pkg-config rsync tar diffutils python3-dev gcc zip unzip curl; do
    pkg_installed "$pkg" || missing+=("$pkg")
done
for tool in fusermount3 pkg-config rsync tar cmp gcc zip unzip curl systemd-analyze setpriv \
        groff; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        case "$tool" in
            fusermount3) p=fuse3 ;; cmp) p=diffutils ;; systemd-analyze) p=systemd ;;
            setpriv) p=util-linux ;; groff) p=groff-base ;; *) p="$tool" ;;
        esac
        [[ " ${missing[*]-} " == *" $p "* ]] || missing+=("$p")
    fi
done

PY="$(find_python || true)"
if ! venv_ok; then
    if [[ -z "$PY" ]]; then
        missing+=(python3 python3-venv)
    elif ! can_make_venv "$PY"; then
        pkg_installed python3-venv || missing+=(python3-venv)
    fi
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- /dev/fuse -----------------------------------------------------------------------
if [[ ! -e /dev/fuse ]]; then
    as_root modprobe fuse >/dev/null 2>&1 || true
fi
if [[ ! -e /dev/fuse && $EUID -eq 0 ]]; then
    mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
fi
if [[ ! -e /dev/fuse ]]; then
    log "warning: /dev/fuse is missing; mounting will not work on this machine"
elif [[ $EUID -ne 0 && ! ( -r /dev/fuse && -w /dev/fuse ) ]]; then
    as_root chmod 0666 /dev/fuse || log "warning: /dev/fuse is not usable by $(id -un)"
fi

# --- virtualenv ----------------------------------------------------------------------
if ! venv_ok; then
    PY="${PY:-$(find_python || true)}"
    [[ -n "$PY" ]] || die "no Python >= 3.11 found (tried python3.11, python3)"
    log "creating $VENV with $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

# Reinstall when pyproject.toml or the interpreter changed, or the install is incomplete.
want="$(cat pyproject.toml "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md
import importlib.util as iu
md.version("s3mpfs")
for mod in ("pyfuse3", "trio", "boto3", "moto", "pytest", "pytest_trio", "hypothesis", "ruff"):
    assert iu.find_spec(mod) is not None, mod
PY
then
    log "installing s3mpfs (editable) and its test dependencies into .venv"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$want" >"$STAMP"
fi
log "ready: $VENV"
