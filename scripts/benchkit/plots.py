"""The PNG plots of docs/bench/ (matplotlib, optional): throughput, CPU per GiB, small files."""

from __future__ import annotations

from pathlib import Path

from .base import human, log
from .stats import mibps, per_gib, small_median
from .steps import SmallResult
from .tools import ToolResult


def make_plots(outdir: Path, size: int, big: dict[str, dict[str, ToolResult]],
               small: dict[str, SmallResult]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (scripts/bench.sh installs it)")
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    protos = list(big)
    tools = [r for r in next(iter(big.values())).values()] if big else []
    groups = [(p, d) for p in protos for d in ("write", "read")]
    for what, fname, ylabel in (("rate", "throughput.png", "MiB/s (median)"),
                                ("cpu", "cpu_per_gib.png", "client CPU s per GiB (median)")):
        fig, ax = plt.subplots(figsize=(9, 4.2))
        width = 0.8 / max(len(tools), 1)
        for i, tool in enumerate(tools):
            values = []
            for proto, direction in groups:
                r = big[proto].get(tool.name)
                samples = (r.writes if direction == "write" else r.reads) if r else []
                if what == "rate":
                    v = mibps(size, samples) if samples else None
                else:
                    v = per_gib(size, samples, "client_cpu") if samples else None
                values.append(v or 0.0)
            ax.bar([g + i * width for g in range(len(groups))], values, width,
                   label=tool.label)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
        ax.set_xticklabels([f"{d} {p}" for p, d in groups])
        ax.set_ylabel(ylabel)
        ax.set_title(f"{human(size)} file, null S3 server on loopback")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / fname, dpi=90)
        plt.close(fig)
        made.append(fname)
    labels = sorted({r.label for r in small.values()})
    if labels:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        names = sorted({r.tool for r in small.values()})
        width = 0.8 / max(len(names), 1)
        for ax, (attr, title) in zip(axes, (("copies", "cp -r: ms per file"),
                                            ("listings", "cold ls -l: ms per entry")),
                                     strict=True):
            for i, name in enumerate(names):
                values = []
                for label in labels:
                    r = small.get(f"{label}/{name}")
                    seconds = small_median(getattr(r, attr), "seconds") if r else None
                    values.append(seconds * 1000 / r.files if seconds and r else 0.0)
                ax.bar([g + i * width for g in range(len(labels))], values, width, label=name)
            ax.set_xticks([g + 0.4 - width / 2 for g in range(len(labels))])
            ax.set_xticklabels(labels)
            ax.set_title(title)
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "small_files.png", dpi=90)
        plt.close(fig)
        made.append("small_files.png")
    return made
