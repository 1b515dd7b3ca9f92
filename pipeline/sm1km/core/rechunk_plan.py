"""The ingest chunk planner — a small pure algorithm, separate from execution (cf. rechunker).

Daily input maps are rechunked into time-long cubes in two passes whose memory does not depend
on the length of the period:

* **read pass** (one task per *batch of days × spatial band*): reads the batch's files for the
  band and writes them into a staging array chunked ``(batch_days, cy, cx)``. A band is a whole
  number of store chunks, so each staging chunk is written by exactly one task.
* **write pass** (one task per *output chunk*): reads its piece of the staging array and writes
  one whole chunk of the final store; concurrent tasks never share a chunk.

:func:`plan_staging` picks ``batch_days`` and the band shape so that one read task holds at most
``mem_budget`` bytes; :func:`output_chunks` lists the output chunks a set of days touches;
:func:`days_to_recompute` / :func:`trailing_window` / :func:`blocks_of` give the days that must be
recomputed when days change, for the causally gap-filled predictors, the trailing window they are
computed from and the time blocks they fall in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ReadTask", "StagingPlan", "plan_staging", "chunk_slices", "output_chunks", "days_to_recompute",
           "trailing_window", "blocks_of", "hull"]


@dataclass(frozen=True)
class ReadTask:
    """One read-pass task: positions in the staged-day list and rows/cols of the region."""

    days: slice
    rows: slice
    cols: slice


@dataclass(frozen=True)
class StagingPlan:
    batch_days: int
    band_rows: int
    band_cols: int
    chunks: tuple[int, int, int]  # staging chunks (batch_days, cy, cx)
    task_bytes: int               # largest read task: batch_days * band_rows * band_cols * bytes
    tasks: list[ReadTask] = field(repr=False)


def chunk_slices(n: int, size: int, start: int = 0) -> list[slice]:
    """Consecutive slices of ``size`` covering ``[start, n)`` (the last one may be shorter)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return [slice(i, min(i + size, n)) for i in range(start, n, size)]


def plan_staging(n_days: int, n_rows: int, n_cols: int, chunk_rows: int, chunk_cols: int,
                 bytes_per_px_day: int, mem_budget: int, preferred_batch_days: int = 32) -> StagingPlan:
    """Read-pass plan for ``n_days`` daily maps of ``n_rows × n_cols`` pixels.

    Keeps ``preferred_batch_days`` if one chunk of that many days fits ``mem_budget`` (else fewer
    days, at least 1), then grows a band to as many whole chunks as fit — full rows first, then
    several chunk rows. The result depends on the chunk grid, never on ``n_days`` beyond the batch.
    """
    if min(n_rows, n_cols, chunk_rows, chunk_cols, bytes_per_px_day, mem_budget) < 1 or n_days < 0:
        raise ValueError("sizes must be positive")
    cy, cx = min(chunk_rows, n_rows), min(chunk_cols, n_cols)
    batch = max(1, min(preferred_batch_days, max(n_days, 1)))
    per_chunk_day = cy * cx * bytes_per_px_day
    if batch * per_chunk_day > mem_budget:
        batch = max(1, mem_budget // per_chunk_day)
    max_px = max(mem_budget // (batch * bytes_per_px_day), cy * cx)
    n_chunk_cols = math.ceil(n_cols / cx)
    if max_px >= n_cols * cy:
        band_cols = n_chunk_cols * cx
        band_rows = cy * max(1, max_px // (n_cols * cy))
    else:
        band_rows = cy
        band_cols = cx * max(1, max_px // (cy * cx))
    band_rows = min(band_rows, math.ceil(n_rows / cy) * cy)
    band_cols = min(band_cols, n_chunk_cols * cx)
    tasks = [ReadTask(d, r, c) for d in chunk_slices(n_days, batch)
             for r in chunk_slices(n_rows, band_rows) for c in chunk_slices(n_cols, band_cols)]
    task_bytes = batch * min(band_rows, n_rows) * min(band_cols, n_cols) * bytes_per_px_day
    return StagingPlan(batch, band_rows, band_cols, (batch, cy, cx), task_bytes, tasks)


def output_chunks(time_positions: Iterable[int], n_time: int, chunk_time: int, n_rows: int, chunk_rows: int,
                  n_cols: int, chunk_cols: int) -> list[tuple[slice, slice, slice]]:
    """Regions (time, rows, cols) of every output chunk that holds one of ``time_positions``."""
    t_blocks = sorted({int(p) // chunk_time for p in time_positions if 0 <= int(p) < n_time})
    out: list[tuple[slice, slice, slice]] = []
    for b in t_blocks:
        ts = slice(b * chunk_time, min((b + 1) * chunk_time, n_time))
        for r in chunk_slices(n_rows, chunk_rows):
            for c in chunk_slices(n_cols, chunk_cols):
                out.append((ts, r, c))
    return out


def days_to_recompute(changed_positions: Iterable[int], reach: int, n_time: int) -> list[int]:
    """Days whose value depends on a changed day, for a causal rule whose day ``t`` depends on days
    ``[t - reach + 1, t]``: every ``[p, p + reach)`` of a changed ``p``, clipped to ``[0, n_time)``.

    Positions may be negative (days before the axis that are read but not stored, e.g. the
    lead-in of the gap-fill). Appending days at the end therefore recomputes only the new days.
    """
    if reach < 1:
        raise ValueError("reach must be >= 1")
    out: set[int] = set()
    for p in changed_positions:
        p = int(p)
        out.update(range(max(p, 0), min(p + reach, n_time)))
    return sorted(out)


def trailing_window(days: slice, reach: int, first: int = 0) -> slice:
    """Days ``[start - reach + 1, stop)`` a causal rule needs to compute ``days``, clipped at ``first``
    (the first day that can be read: 0, or the first day of a lead-in before the axis)."""
    if reach < 1:
        raise ValueError("reach must be >= 1")
    return slice(max(days.start - reach + 1, first), days.stop)


def blocks_of(positions: Iterable[int], block_days: int) -> dict[int, slice]:
    """``{time block: the smallest slice holding its positions}`` (sorted by block)."""
    out: dict[int, slice] = {}
    for p in sorted({int(p) for p in positions}):
        b = p // block_days
        s = out.get(b)
        out[b] = slice(p, p + 1) if s is None else slice(s.start, p + 1)
    return out


def hull(slices: Iterable[slice]) -> slice | None:
    """The smallest slice covering all ``slices`` (None if there are none)."""
    items = list(slices)
    if not items:
        return None
    return slice(min(s.start for s in items), max(s.stop for s in items))
