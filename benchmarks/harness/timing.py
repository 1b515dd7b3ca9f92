"""Timing helpers: wall and CPU time of a call, medians over repetitions, peak RSS of a process."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass
class Sample:
    """One timed run: wall seconds, CPU seconds of this process (all its threads), the result."""

    wall_s: float
    cpu_s: float
    result: Any = None


def timed(fn: Callable[[], Any]) -> Sample:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return Sample(time.perf_counter() - w0, time.process_time() - c0, out)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def figure(values: Sequence[float], unit: str, digits: int = 4, **extra) -> dict[str, Any]:
    """A benchmark figure: the median of the repetitions, the repetitions, their number and unit."""
    vals = [float(v) for v in values]
    return {"median": _round(median(vals), digits), "unit": unit, "n": len(vals),
            "reps": [_round(v, digits) for v in vals], **extra}


def rate_figure(amount: float, seconds: Sequence[float], unit: str, per: float = 1.0, **extra) -> dict[str, Any]:
    """``amount / s / per`` for every repetition (e.g. pixel-days per second per core)."""
    return figure([amount / s / per if s > 0 else float("inf") for s in seconds], unit, **extra)


def _round(v: float, digits: int) -> float:
    if v == 0 or v != v or v in (float("inf"), float("-inf")):
        return v
    from math import floor, log10

    return round(v, max(0, digits - 1 - int(floor(log10(abs(v))))))


def maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """``ru_maxrss`` in bytes (KiB on Linux, bytes on macOS).

    Beware on Linux: the kernel carries the high-water mark across ``exec``, so a child forked from
    a large parent reports at least the parent's RSS at fork time. Use :func:`peak_rss_bytes`.
    """
    r = resource.getrusage(who).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own address space: ``VmHWM`` of
    ``/proc/self/status`` on Linux (reset by ``exec``, unlike ``ru_maxrss``); ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return maxrss_bytes()
