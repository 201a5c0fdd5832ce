"""The man page s3mpfs(8) and the bash completion, made from the same option table as
`s3mpfs -o help` (`config.OPTIONS`), so the three cannot disagree.

    python -m s3mpfs.manual man  > contrib/s3mpfs.8
    python -m s3mpfs.manual bash > contrib/bash-completion/s3mpfs

tests/test_manual.py checks that the files in contrib/ are what this prints.
"""

from __future__ import annotations

import sys

from . import __version__
from .argv import SUBCOMMANDS
from .config import FUSE_FLAGS, FUSE_VALUED, KERNEL_SECURITY, MOUNT_ONLY, OPTIONS


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def man_page() -> str:
    lines = [
        f'.TH S3MPFS 8 "" "s3mpfs {__version__}" "System Administration"',
        ".SH NAME",
        "s3mpfs \\- mount an S3 bucket; files written are streamed as multipart uploads",
        ".SH SYNOPSIS",
        ".B s3mpfs",
        ".I BUCKET\\fR[\\fP:PREFIX\\fR]\\fP MOUNTPOINT",
        "[\\fB\\-f\\fP] [\\fB\\-o\\fP \\fIOPT\\fP[,\\fIOPT\\fP...]]",
        ".br",
        ".B s3mpfs status",
        ".I MOUNTPOINT",
        "[\\fB\\-\\-watch\\fP] [\\fB\\-\\-json\\fP]",
        ".br",
        ".B s3mpfs unmount",
        ".I MOUNTPOINT",
        "[\\fB\\-\\-wait\\fP] [\\fB\\-\\-if\\-dead\\fP]",
        ".br",
        ".B s3mpfs uploads",
        ".I BUCKET\\fR[\\fP:PREFIX\\fR]\\fP",
        ".br",
        ".B s3mpfs cleanup",
        ".I BUCKET\\fR[\\fP:PREFIX\\fR]\\fP",
        "[\\fB\\-\\-older\\-than\\fP \\fIAGE\\fP] [\\fB\\-\\-all\\fP] [\\fB\\-\\-dry\\-run\\fP]",
        ".SH DESCRIPTION",
        "s3mpfs is a FUSE file system that mounts an S3 bucket, or a prefix of one, as a",
        "directory. Each file is one S3 object under the same key. A file written into the",
        "mount is streamed to S3 as a multipart upload while it is being written;",
        ".BR close (2)",
        "completes the upload and reports whether it succeeded. The previous version of an",
        "object stays intact until an upload completes.",
        ".PP",
        "Without \\fB\\-f\\fP, s3mpfs returns once the file system is mounted and serves it",
        "in the background, logging to syslog (or, without one, to a file it names). Every",
        "error is one line on standard error and a non\\-zero exit status.",
        ".PP",
        "Mounts are \\fBnosuid,nodev\\fP whatever",
        ".BR mount (8)",
        "passes: stored setuid/setgid bits are not shown and device files cannot be",
        "opened, unless \\fBallow_suid\\fP / \\fBallow_dev\\fP are given.",
        ".SH OPTIONS",
        ".TP",
        ".B \\-f",
        "Stay in the foreground and log to standard error.",
        ".TP",
        ".BI \\-o \" OPT\\fR[\\fP,OPT\\fR...]\"",
        "Mount options, fstab style, listed below (and by \\fBs3mpfs \\-o help\\fP).",
        ".TP",
        ".B \\-\\-version",
        "Print the version.",
        ".SH MOUNT OPTIONS",
    ]
    for o in OPTIONS:
        lines.append(".TP")
        name = f"\\fB{_roff(o.name)}\\fP"
        if o.parse is not None:
            name += f"=\\fI{_roff(o.values)}\\fP"
        lines.append(name)
        text = _roff(o.meaning[:1].upper() + o.meaning[1:]) + "."
        if o.default and o.default != "off":
            text += f" Default: {_roff(o.default)}."
        lines.append(text)
    fuse = sorted(FUSE_FLAGS - MOUNT_ONLY - KERNEL_SECURITY)
    fuse += sorted(n + "=" for n in FUSE_VALUED - MOUNT_ONLY)
    lines += [
        ".TP",
        ".B FUSE options",
        _roff(", ".join(fuse)) + ": passed to FUSE. " +
        _roff(", ".join(sorted(MOUNT_ONLY | KERNEL_SECURITY))) + " are accepted and ignored.",
        ".SH SUBCOMMANDS",
        ".TP",
        ".B status \\fIMOUNTPOINT\\fP",
        "What the mount is doing: files being written, then the mount's totals.",
        ".TP",
        ".B unmount \\fIMOUNTPOINT\\fP",
        "Unmount once no file is being written (\\fB\\-\\-wait\\fP waits for them). A dead",
        "mount (its process ended: crash or kill \\-9) is cleared; \\fB\\-\\-if\\-dead\\fP",
        "clears only a dead one.",
        ".TP",
        ".B uploads \\fIBUCKET\\fP[:\\fIPREFIX\\fP]",
        "List pending multipart uploads.",
        ".TP",
        ".B cleanup \\fIBUCKET\\fP[:\\fIPREFIX\\fP]",
        "Abort s3mpfs's own stale uploads (\\fB\\-\\-all\\fP: other tools' too).",
        ".SH FILES",
        ".TP",
        ".I /etc/fstab",
        "\\fBmybucket:backups /mnt/backups fuse.s3mpfs _netdev,sse=AES256 0 0\\fP",
        ".TP",
        ".I /etc/s3mpfs/INSTANCE.conf",
        "Source, options and credentials of the systemd unit \\fBs3mpfs@INSTANCE\\fP.",
        ".SH ENVIRONMENT",
        "boto3's: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE,",
        "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE.",
        ".SH SEE ALSO",
        ".BR fusermount3 (1),",
        ".BR mount.fuse3 (8),",
        ".BR fstab (5)",
    ]
    return "\n".join(lines) + "\n"


def bash_completion() -> str:
    """Subcommands, their flags and the -o option names (NAME= for the valued ones)."""
    names = [o.name + ("=" if o.parse is not None else "") for o in OPTIONS]
    names += sorted(FUSE_FLAGS - MOUNT_ONLY - KERNEL_SECURITY)
    names += sorted(n + "=" for n in FUSE_VALUED - MOUNT_ONLY)
    return f"""# bash completion for s3mpfs (made by: python -m s3mpfs.manual bash)
_s3mpfs() {{
    local cur prev words cword
    _init_completion -n =: || return
    local options="{' '.join(names)}"
    if [[ $prev == -o ]]; then
        local done="${{cur%,*}}" last="${{cur##*,}}"
        [[ $cur == *,* ]] && done="$done," || done=""
        compopt -o nospace
        COMPREPLY=($(compgen -P "$done" -W "$options" -- "$last"))
        return
    fi
    case ${{words[1]}} in
        status) COMPREPLY=($(compgen -W "--watch --json --interval --help" -- "$cur"));;
        unmount) COMPREPLY=($(compgen -W "--wait --if-dead --help" -- "$cur"));;
        uploads) COMPREPLY=($(compgen -W "-o --help" -- "$cur"));;
        cleanup) COMPREPLY=($(compgen -W "--older-than --all --dry-run -o --help" -- "$cur"));;
        *)
            if [[ $cword -eq 1 ]]; then
                COMPREPLY=($(compgen -W "{' '.join(SUBCOMMANDS)} -f -o --help --version" \\
                    -- "$cur"))
            else
                COMPREPLY=($(compgen -W "-f -o" -- "$cur"))
            fi;;
    esac
    [[ $cur == -* || ${{#COMPREPLY[@]}} -gt 0 ]] || _filedir -d
}}
complete -F _s3mpfs s3mpfs
"""


def main(argv: list[str]) -> int:
    if argv == ["man"]:
        sys.stdout.write(man_page())
    elif argv == ["bash"]:
        sys.stdout.write(bash_completion())
    else:
        print("usage: python -m s3mpfs.manual man|bash", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
