"""docs/BENCHMARKS.md for a run on the null server (the default): goals, big-file tables
per protocol, small-file tables, plots, notes."""

from __future__ import annotations

import datetime
from pathlib import Path

from .base import human
from .commits import CommitResult, commits_section
from .server import Bench
from .stats import (
    fmt,
    fmt_requests,
    mibps,
    per_gib,
    ratio,
    rss_mib,
    small_median,
    small_requests,
    spread,
    verdict,
)
from .steps import SMALL_SIZE, SmallResult
from .tools import ToolResult


def write_null_report(path: Path, bench: Bench, big: dict[str, dict[str, ToolResult]],
                      small: dict[str, SmallResult], facts: dict[str, str],
                      found: dict[str, str], command: str, started: datetime.datetime,
                      elapsed: float, loads: tuple[str, str], plots: list[str],
                      commits: CommitResult | None = None) -> str:
    size, runs, args = bench.size, bench.args.runs, bench.args

    def rate(proto: str, tool: str, direction: str) -> float | None:
        r = big.get(proto, {}).get(tool)
        if r is None or r.unavailable:
            return None
        return mibps(size, r.writes if direction == "write" else r.reads)

    def cpu(proto: str, tool: str, direction: str) -> float | None:
        r = big.get(proto, {}).get(tool)
        if r is None or r.unavailable:
            return None
        return per_gib(size, r.writes if direction == "write" else r.reads, "client_cpu")

    def small_seconds(label: str, tool: str, attr: str) -> float | None:
        r = small.get(f"{label}/{tool}")
        return small_median(getattr(r, attr), "seconds") if r and not r.failed else None

    def cmp(a: float | None, b: float | None, better: str) -> tuple[bool | None, str]:
        if a is None or b is None:
            return None, "not measured"
        ok = a < b if better == "lower" else a >= b
        return ok, f"{a:.2f} vs {b:.2f} ({a / b:.2f}×)"

    goals: list[tuple[str, bool | None, str]] = []
    labels = sorted({r.label for r in small.values()})
    for label in labels:
        ok, text = cmp(small_seconds(label, "s3mpfs", "copies"),
                       small_seconds(label, "rclone-mount", "copies"), "lower")
        files = next(r.files for r in small.values() if r.label == label)
        goals.append((f"`cp -r` of {files} files of 4 KiB, {label}: s3mpfs faster than "
                      "rclone mount (s)", ok, text))
        r = small.get(f"{label}/s3mpfs")
        if r and r.copies:
            counts = small_requests(r.copies)
            extra = sum(n for op, n in counts.items() if op != "PutObject")
            puts = counts.get("PutObject", 0)
            ok2 = puts <= files + 1 and extra <= 10  # a fixed few, not one per file
            goals.append((f"at most one S3 request per new file in a directory s3mpfs "
                          f"created ({label})", ok2,
                          f"{puts / files:.3f} PutObject per file (the files and the new "
                          f"directory's marker); {extra:g} other requests in all, not per "
                          "file: the new directory's lookup in its parent (a LIST, and a "
                          "HEAD of each entry of the parent not seen before, here the "
                          "earlier runs' directories) and the mount's start-up sweep"))
        ok, text = cmp(small_seconds(label, "s3mpfs", "listings"),
                       small_seconds(label, "s3fs", "listings"), "lower")
        if ok is not None:
            a, b = small_seconds(label, "s3mpfs", "listings"), small_seconds(label, "s3fs",
                                                                              "listings")
            ok = a is not None and b is not None and a <= b
        goals.append((f"cold `ls -l` of {files} files, {label}: s3mpfs no slower than "
                      "s3fs-fuse (s)", ok, text))
    for proto in big:
        w, sw = rate(proto, "s3mpfs", "write"), rate(proto, "s3fs", "write")
        ok = None if w is None or sw is None else w >= 1.3 * sw
        goals.append((f"1 GiB-class write over {proto}: at least 1.3× s3fs-fuse (MiB/s)", ok,
                      "not measured" if ok is None else
                      f"{w:.0f} vs {sw:.0f} ({w / sw:.2f}×)"))
        c = cpu(proto, "s3mpfs", "write")
        goals.append((f"daemon CPU per GiB written over {proto}: at most 3 s", None if c is None
                      else c <= 3.0, fmt(c, ".2f", " s")))
        ok, text = cmp(rate(proto, "s3mpfs", "read"), rate(proto, "s3fs", "read"), "higher")
        goals.append((f"read over {proto}: at least s3fs-fuse's throughput (MiB/s)", ok, text))
    peaks = [x.rss_kib for r in big.values() for t in r.values() if t.name == "s3mpfs"
             for x in t.writes + t.reads if x.rss_kib]
    peaks += [x.rss_kib for r in small.values() if r.tool == "s3mpfs"
              for x in r.copies + r.listings if x.rss_kib]
    goals.append(("s3mpfs peak memory under 200 MiB in every step (VmHWM)",
                  bool(peaks) and max(peaks) < 200 * 1024 if peaks else None,
                  f"{max(peaks) / 1024:.0f} MiB at most" if peaks else "not measured"))

    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py` (run it through `scripts/bench.sh`, which installs the "
        "peers and matplotlib); do not edit by hand. Every figure below comes from one run of "
        "the script, in which all tools worked against the same local S3 endpoint.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} "
        f"(took {elapsed / 60:.1f} min)",
        f"- Command: `{command}`",
        f"- Big file: {human(size)} of random bytes in tmpfs (/dev/shm); small files: "
        f"{SMALL_SIZE} bytes each; {runs} run(s) per tool, interleaved; figures are medians "
        "(range in brackets); each big-file transfer starts from an empty page cache "
        "(`drop_caches`, as root: written files stay cached, and a full memory made later "
        "runs pay the kernel's reclaim)",
        *([f"- Note: {args.note}"] if args.note else []),
        f"- Machine: {facts.get('nproc')} CPUs ({facts.get('cpu', '?')}), "
        f"{facts.get('memory', '?')} memory, Linux {facts.get('kernel')}, {facts.get('os')}; "
        f"load average (1 min) {loads[0]} at the start, {loads[1]} at the end",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        "- S3 server: `scripts/nulls3/`, started by the script on 127.0.0.1: it reads every "
        "body and drops it, keeps sizes, ETags and metadata, serves GETs from a fixed "
        "pattern; one process with three listeners on the same buckets: http, https "
        f"(throwaway certificate) and http answering every request {args.delay_ms} ms late "
        "(a distant server's round trip)",
        "",
        "## Goals",
        "",
        "| goal | measured (s3mpfs vs peer) | |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {g} | {t} | {verdict(ok)} |" for g, ok, t in goals]
    lines += ["", "Distance to what the machine allows: s3mpfs against the awscrt S3 client "
              "(C, no FUSE), same run:", ""]
    for proto in big:
        for direction in ("write", "read"):
            a, b = rate(proto, "s3mpfs", direction), rate(proto, "awscrt", direction)
            lines.append(f"- {direction} over {proto}: {fmt(a, '.0f')} vs {fmt(b, '.0f')} "
                         f"MiB/s ({ratio(a, b)} of awscrt)")
    for proto, results in big.items():
        lines += [
            "",
            f"## {human(size)} file over {proto}",
            "",
            "| tool | write MiB/s | read MiB/s | client CPU s/GiB write / read | "
            "peak RSS write / read (MiB) | parts | server CPU s/GiB write / read |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results.values():
            if r.unavailable or (r.failed and not r.writes):
                lines.append(f"| {r.label} | {r.unavailable or r.failed} | | | | | |")
                continue
            parts = sorted({x.parts for x in r.writes if x.parts is not None})
            tool_w = per_gib(size, r.writes, "tool_cpu")
            tool_r = per_gib(size, r.reads, "tool_cpu")
            lines.append(
                f"| {r.label} | {fmt(mibps(size, r.writes))}{spread(size, r.writes)} | "
                f"{fmt(mibps(size, r.reads))}{spread(size, r.reads)} | "
                f"{fmt(per_gib(size, r.writes, 'client_cpu'))}"
                f"{'' if tool_w is None else f' (+{tool_w:.1f} cp)'} / "
                f"{fmt(per_gib(size, r.reads, 'client_cpu'))}"
                f"{'' if tool_r is None else f' (+{tool_r:.1f} cat)'} | "
                f"{fmt(rss_mib(r.writes), '.0f')} / {fmt(rss_mib(r.reads), '.0f')} | "
                f"{', '.join(map(str, parts)) or '–'} | "
                f"{fmt(per_gib(size, r.writes, 'server_cpu'))} / "
                f"{fmt(per_gib(size, r.reads, 'server_cpu'))} |")
        if results.get("failed"):
            pass
    for label in labels:
        rows = [r for r in small.values() if r.label == label]
        files = rows[0].files
        lines += [
            "",
            f"## Small files, {label}: `cp -r` of {files} files into a new directory, then "
            "`ls -f` (names only) and `ls -l` of it, each on a fresh mount",
            "",
            "| tool | cp -r s | ms per file | daemon CPU ms per file | requests per file | "
            "ls -f s | requests per entry | "
            "ls -l s | ms per entry | daemon CPU ms per entry | requests per entry | "
            "listing |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- |",
        ]
        for r in rows:
            if r.failed and not r.copies:
                lines.append(f"| {r.tool} | {r.failed} | | | | | | | | | | |")
                continue
            c, ls_ = small_median(r.copies, "seconds"), small_median(r.listings, "seconds")
            cc, lc = small_median(r.copies, "daemon_cpu"), small_median(r.listings,
                                                                         "daemon_cpu")
            lines.append(
                f"| {r.tool} | {fmt(c, '.2f')} | {fmt(c and c * 1000 / files, '.2f')} | "
                f"{fmt(cc and cc * 1000 / files, '.2f')} | "
                f"{fmt_requests(small_requests(r.copies), files)} | "
                f"{fmt(small_median(r.names, 'seconds'), '.2f')} | "
                f"{fmt_requests(small_requests(r.names), files)} | {fmt(ls_, '.2f')} | "
                f"{fmt(ls_ and ls_ * 1000 / files, '.3f')} | "
                f"{fmt(lc and lc * 1000 / files, '.3f')} | "
                f"{fmt_requests(small_requests(r.listings), files)} | {r.checked or '–'} |")
    lines += commits_section(commits)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}](bench/{p})" for p in plots]
    how = {r.label: r.how.replace("; bucket versioned (see below)", "")  # moto only
           for results in big.values() for r in results.values()}
    lines += [
        "",
        "## How each tool was run",
        "",
    ] + [f"- {label}: {text}" for label, text in how.items()] + [
        "- Small files: `cp -r SRC MNT/treeN` on a fresh mount, then `ls -l MNT/treeN` on "
        "another fresh mount (cold caches); the wall time is the command's; daemon CPU is "
        "the FUSE daemon's during the command; requests are those the server saw from the "
        "command's start to 1 s after it ended (0.2 s for `ls`), by S3 operation, divided "
        "by the number of files; the listing column checks names and modes against the "
        "source.",
        "- https: s3mpfs, boto3 and the awscrt client trust the throwaway certificate "
        "(AWS_CA_BUNDLE); rclone through RCLONE_CA_CERT; s3fs-fuse with "
        "`no_check_certificate` (it has no option for a CA file).",
        "",
        "## What these numbers mean",
        "",
        "- The server does almost nothing, so the figures measure the clients: their CPU per "
        "byte and per request, and how much of each request's wait they overlap. The machine "
        f"has {facts.get('nproc')} cores shared by the client, the kernel's FUSE traffic, "
        "`cp`/`cat` and the server; a tool that spends less CPU is faster here.",
        "- Other work on the machine (load average above) adds noise; runs are interleaved so "
        "that it spreads over all tools, and the range of each figure is shown.",
        "- Read-back is not compared with the source: the server keeps no bytes. The moto "
        "run (`--server moto`) compares every read with `cmp`.",
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
