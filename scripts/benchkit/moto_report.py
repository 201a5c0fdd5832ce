"""docs/BENCHMARKS.md for a run on moto (`--server moto`): big-file tables and notes."""

from __future__ import annotations

import datetime
from pathlib import Path

from .base import human
from .server import Bench
from .stats import fmt, mibps, per_gib, ratio, rss_mib, spread
from .tools import ToolResult


def write_report(path: Path, bench: Bench, results: list[ToolResult], facts: dict[str, str],
                 found: dict[str, str], command: str, started: datetime.datetime,
                 elapsed: float, loads: tuple[str, str], note: str) -> str:
    size = bench.size
    base = next((r for r in results if r.name == "s3mpfs"), None)
    base_w = mibps(size, base.writes) if base else None
    base_r = mibps(size, base.reads) if base else None
    base_rss = rss_mib(base.writes) if base else None
    runs = bench.args.runs
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py` (run it through `scripts/bench.sh`, which installs the "
        "peers); do not edit by hand. Every figure below comes from one run of the script, "
        "in which all tools moved the same file to and from the same local S3 server.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} "
        f"(took {elapsed / 60:.1f} min)",
        f"- Command: `{command}`",
        f"- File: {human(size)} of random bytes, read from "
        f"{'tmpfs (/dev/shm)' if str(bench.source).startswith('/dev/shm') else 'a temporary file'}"
        f"; {runs} run(s) per tool, interleaved; figures are medians (range in brackets)",
        *([f"- Note: {bench.args.note}"] if bench.args.note else []),
        f"- Machine: {facts.get('nproc')} CPUs ({facts.get('cpu', '?')}), "
        f"{facts.get('memory', '?')} memory, Linux {facts.get('kernel')}, {facts.get('os')}; "
        f"load average (1 min) {loads[0]} at the start, {loads[1]} at the end",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        "- S3 server: moto on 127.0.0.1, in its own process"
        + ("" if bench.args.stock_moto else
           ", ranged GETs served from the offset asked for (see the note)"),
        "",
        "## Results",
        "",
        "| tool | write MiB/s | read MiB/s | peak RSS write / read (MiB) | parts | "
        "client CPU s/GiB write / read | moto CPU s/GiB write / read |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.unavailable or (r.failed and not r.writes):
            reason = r.unavailable and f"not available: {r.unavailable}" or f"failed: {r.failed}"
            lines.append(f"| {r.label} | {reason} | | | | | |")
            continue
        parts = sorted({s.parts for s in r.writes if s.parts is not None})
        read_cell = (fmt(mibps(size, r.reads)) + spread(size, r.reads) if r.measure_read
                     else "(same as defaults)")
        client_w = per_gib(size, r.writes, "client_cpu")
        tool_w = per_gib(size, r.writes, "tool_cpu")
        client_r = per_gib(size, r.reads, "client_cpu")
        tool_r = per_gib(size, r.reads, "tool_cpu")
        lines.append(
            f"| {r.label} | {fmt(mibps(size, r.writes))}{spread(size, r.writes)} | {read_cell} | "
            f"{fmt(rss_mib(r.writes), '.0f')} / {fmt(rss_mib(r.reads), '.0f')} | "
            f"{', '.join(map(str, parts)) or '–'} | "
            f"{fmt(client_w)}{'' if tool_w is None else f' (+{tool_w:.1f} cp)'} / "
            f"{fmt(client_r)}{'' if tool_r is None else f' (+{tool_r:.1f} cat)'} | "
            f"{fmt(per_gib(size, r.writes, 'server_cpu'))} / "
            f"{fmt(per_gib(size, r.reads, 'server_cpu'))} |")
    failures = [r for r in results if r.failed]
    if failures:
        lines += ["", "Failures:"] + [f"- {r.label}: {r.failed}" for r in failures]
    lines += [
        "",
        "Peak RSS is the FUSE daemon's (VmHWM, reset at the start of each phase; each phase "
        "mounts afresh) or the client process's whole-life peak (boto3 child: interpreter and "
        "imports included; rclone). `cp`/`cat` are not counted. Parts: the part count in the "
        "object's ETag. CPU columns: CPU seconds per GiB moved, of the client (FUSE daemon, "
        "boto3 child or rclone; for mounts the `cp`/`cat` process in brackets, which includes "
        "the kernel's FUSE copying) and of the moto server.",
        "",
        "## Ratios against s3mpfs (defaults), same run",
        "",
        "Above 1× means more than s3mpfs: faster for throughput, more memory for RSS.",
        "",
        "| tool | write | read | peak RSS while writing |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results:
        if r is base or r.unavailable or not r.writes:
            continue
        read = ratio(mibps(size, r.reads), base_r) if r.measure_read else "–"
        lines.append(f"| {r.label} | {ratio(mibps(size, r.writes), base_w)} | {read} | "
                     f"{ratio(rss_mib(r.writes), base_rss)} |")
    lines += ["", "In words:", ""]
    for r in results:
        if r is base or r.unavailable or not r.writes:
            continue
        words = [f"write {ratio(mibps(size, r.writes), base_w)} s3mpfs"]
        if r.measure_read:
            words.append(f"read {ratio(mibps(size, r.reads), base_r)} s3mpfs")
        lines.append(f"- {r.label}: " + "; ".join(words) + ".")
    verified = [f"{r.label}: {r.verified}" for r in results if r.verified]
    lines += [
        "",
        "## How each tool was run",
        "",
    ] + [f"- {r.label}: {r.how}" for r in results] + [
        "",
        "rclone's buckets are versioned: after each upload rclone HEADs the object with "
        "the version id the server returned, and moto returns `null` on unversioned buckets "
        "(S3 sends no version id there) and then refuses that HEAD with 400. Every version "
        "is deleted after each run.",
        "",
        "Read-back checked with `cmp` against the source after the last run (not timed): "
        + ("; ".join(verified) if verified else "not checked (--no-verify)") + ".",
        "",
        "## What these numbers mean",
        "",
        note,
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


NOTE = """\
- The S3 server is moto, a Python stand-in, on loopback. It is CPU-bound: it parses every
  request in Python, verifies checksums, writes each part to a temporary file and assembles
  the whole object in memory at CompleteMultipartUpload. The machine has {nproc} cores, shared
  by the client under test, the kernel's FUSE traffic, `cp`/`cat` and the server, so a tool
  that spends less CPU leaves more to moto and looks faster. The CPU columns show where the
  time went.
- Other work on the machine (load average above) adds noise; runs are interleaved so that it
  spreads over all tools, and the range of each figure is shown.
- The numbers compare tools with each other on this machine in this run. They do not predict
  throughput against AWS S3, where network latency and bandwidth, not CPU, usually set the
  pace and more parts in flight help more than here.
- The tools do not do the same work: s3mpfs and boto3 send a CRC32 checksum with every part
  (moto verifies it), s3fs sends none and stages the whole file in a temporary file before
  uploading at close (disk space instead of memory), rclone computes the file's MD5 before
  uploading, and the mounts pay for every byte crossing the kernel twice.
- Ranged GETs: stock moto reads the whole object for every ranged GET and slices it, so read
  figures would measure how many ranges a tool asks for (and s3transfer's ten concurrent
  ranges would hold ten copies of the object in the server). {moto_patch}"""
