"""Benchmark s3mpfs against its peers on a local S3 stand-in, and write docs/BENCHMARKS.md.

    .venv/bin/python scripts/bench.py [--size 1G] [--runs 3] [--out docs/BENCHMARKS.md]
    (or, with scripts/ on PYTHONPATH: python -m benchkit ...; scripts/bench.sh installs the
    peers first)

One run does, in this order: generate one file of random bytes (in /dev/shm when it fits),
start moto's S3 server on 127.0.0.1 as a subprocess, and then, `--runs` times, for every
tool in turn (the runs are interleaved, so a burst of background load hits every tool
rather than one), write the file to a fresh bucket, check the object (size, ETag part
count), read it back, and delete the object. The tools:

    s3mpfs            `cp FILE MNT/` into the mount, `cat MNT/key > /dev/null` from a fresh mount
    s3mpfs variants   upload_concurrency=8, part_size=16M (writes only: reads are the same code)
    boto3             upload_file / download_file with s3transfer's defaults, in a child process
    s3fs-fuse         the Debian package `s3fs`, mounted like s3mpfs, default options
    rclone            `rclone copyto` both ways, default options
    rclone mount      `rclone mount`, default options (--vfs-cache-mode off: streaming writes)

Write throughput is the wall time of `cp` (for the mounts, `close()` returns once the upload
is complete) or of the transfer call; read throughput is the wall time of `cat` or of the
download. Every mount is fresh for each phase, so reads cannot be served by a cache left
by the write. Peak RSS is VmHWM of the FUSE daemon (reset through /proc/PID/clear_refs at
the start of each phase) or ru_maxrss of the client process. CPU seconds of the client and
of the moto server are recorded per phase, to show where the time goes on this machine.

`--million` runs instead the million-entry listing (million.py): nulls3 holds 10
directories of 100,000 empty objects (`--million-shape`; `--million-distinct`: each with its
own size, ETag and times), and each mount (s3mpfs unless
`--tools` names others) is timed through `ls -lR` twice and `ls -f` of one directory, with
the requests, the daemon's peak RSS and, for s3mpfs, the inodes it holds.

A peer that cannot be installed or run is reported as "not available: <reason>".
Everything started here (mounts, servers, files) is cleaned up in `finally`, also on Ctrl-C
and SIGTERM. Nothing leaves this machine: the server listens on 127.0.0.1 only.

moto and ranged GETs: stock moto reads the whole object into memory for every ranged GET
and then slices it, so a 1 GiB object read in 8 MiB ranges copies 128 GiB inside the server,
and s3transfer's ten concurrent ranges hold ten copies (10 GiB) at once. Read numbers would
then measure how many ranges a tool asks for, not the tool. By default the server started
here serves a simple `Range: bytes=A-B` GET from the stored object at that offset (a small
patch applied in the server process only, see `_patch_moto_ranges`); `--stock-moto` turns
it off.

The package: base.py (constants, errors, sizes), procs.py (running and measuring
processes, cleanup), server.py (scratch space, environment, moto or nulls3 started here),
motoserver.py and transfers.py (the child modes), tools.py (the Tool interface, FUSE
mounts), peers.py (the tools compared), steps.py (what is measured), commits.py (SQLite
transactions and `git add` on s3mpfs beside local disk, with requests per transaction and
per file), stats.py and facts.py
(figures, machine and versions), moto_report.py, null_report.py and plots.py (the report),
runs.py (a whole run), million.py (the million-entry listing), cli.py (options, signals,
cleanup).
"""
