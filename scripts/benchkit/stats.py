"""Figures from samples: medians, MiB/s, CPU per GiB, peak RSS, ratios, request counts,
and how they are printed in the reports' tables."""

from __future__ import annotations

import statistics

from .base import MiB
from .steps import SmallSample
from .tools import Sample


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def mibps(bench_size: int, samples: list[Sample]) -> float | None:
    seconds = median([s.seconds for s in samples])
    return bench_size / MiB / seconds if seconds else None


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def rss_mib(samples: list[Sample]) -> float | None:
    values = [s.rss_kib for s in samples if s.rss_kib is not None]
    return max(values) / 1024 if values else None


def per_gib(bench_size: int, samples: list[Sample], attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    return median(values) * (1024 * MiB) / bench_size if values else None


def spread(bench_size: int, samples: list[Sample]) -> str:
    if len(samples) < 2:
        return ""
    rates = sorted(bench_size / MiB / s.seconds for s in samples)
    return f" ({rates[0]:.0f}–{rates[-1]:.0f})"



def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "–"
    return f"{value / base:.2f}×"


def small_median(samples: list[SmallSample], attr: str) -> float | None:
    values = [getattr(x, attr) for x in samples if getattr(x, attr) is not None]
    return median(values) if values else None


def small_requests(samples: list[SmallSample]) -> dict[str, float]:
    """Median count per operation over the runs."""
    ops = sorted({op for x in samples for op in x.requests})
    return {op: statistics.median([x.requests.get(op, 0) for x in samples]) for op in ops}


def fmt_requests(counts: dict[str, float], per: int) -> str:
    total = sum(counts.values())
    if not counts:
        return "–"
    parts = ", ".join(f"{op} {n / per:.2f}" for op, n in sorted(counts.items(),
                                                                key=lambda kv: -kv[1]))
    return f"{total / per:.2f} ({parts})"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")
