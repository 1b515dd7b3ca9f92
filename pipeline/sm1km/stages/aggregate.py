"""``sm1km aggregate``: monthly means of the 1 km master into ``monthly.zarr``.

One task per (tile × 12 months) = one chunk of ``monthly.zarr``: it reads that tile's days from
the master (packed int16, ~10 MB per year at 120×120 px), and writes per month the mean of the
valid daily values (packed like the master) and ``n_valid_days``.

**Rule for thin months:** the mean is written only where ``n_valid_days`` is at least
``min_valid_fraction`` (default 0.5) of the month's *calendar* days; otherwise the mean is fill
(−32768) while ``n_valid_days`` still says how many days there were. So a run that starts on
20 April has no April mean (11 of 30 days), and a month is never represented by a few days.

The mean is computed exactly on the packed integers (``rint(Σq / n)``, round half to even), so the
result is independent of summation order and equals the mean of the decoded daily values to
within the packing resolution (0.0005 m³/m³).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import numpy as np
import pandas as pd

from sm1km.core.encoding import FILL
from sm1km.errors import StoreError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.runtime.runner import run_tasks
from sm1km.runtime.units import WorkUnit, plan_units
from sm1km.stages.downscale import n_shards as n_master_shards
from sm1km.storage import master, store

log = logging.getLogger(__name__)

MIN_VALID_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class AggregateContext:
    root: str
    master_url: str
    monthly_url: str
    storage_options: dict
    start: str                 # first day of the run (ISO); day d of the master is start + d
    n_days: int                # days of the run (of the master)
    min_valid_fraction: float


def month_index(dates) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """(month starts, month index of each date)."""
    d = pd.DatetimeIndex(dates)
    months = master.month_starts(d)
    idx = (d.year - months[0].year) * 12 + (d.month - months[0].month)
    return months, np.asarray(idx, dtype=np.int64)


def monthly_specs(cfg):
    """All monthly chunks of a run, lazily: tiles × blocks of 12 months (``t0``/``t1``: months of
    ``monthly.zarr``)."""
    months, _ = month_index(cfg.dates())
    blocks = master.time_blocks(len(months), master.MONTHLY_TIME_CHUNK)
    return plan_units(cfg.coarse_region, cfg.grid.tile_cells, blocks, cfg.grid.factor)


def master_days(spec: WorkUnit, start: str, n_days: int) -> tuple[int, int]:
    """Days [d0, d1) of the master (a run of ``n_days`` from ``start``) in the months of ``spec``."""
    _, idx = month_index(pd.date_range(start, periods=n_days, freq="D"))
    m0, m1 = spec.time_bounds
    days = np.flatnonzero((idx >= m0) & (idx < m1))
    return int(days[0]), int(days[-1]) + 1


def monthly_means(q: np.ndarray, month_of_day: np.ndarray, n_months: int, min_valid: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pure core: packed daily block ``q`` (t, y, x) → (packed monthly mean, n_valid_days), (m, y, x).

    ``month_of_day``: month (0..n_months-1) of each day; ``min_valid``: per month, the least number
    of valid days for a mean (else FILL).
    """
    _, ny, nx = q.shape
    mean = np.full((n_months, ny, nx), FILL, dtype=np.int16)
    count = np.zeros((n_months, ny, nx), dtype=np.int16)
    for m in range(n_months):
        sel = q[month_of_day == m]
        if sel.shape[0] == 0:
            continue
        valid = sel != FILL
        n = valid.sum(axis=0)
        s = np.where(valid, sel, 0).sum(axis=0, dtype=np.int64)
        count[m] = n
        ok = n >= max(int(min_valid[m]), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[m][ok] = np.rint(s[ok] / n[ok]).astype(np.int16)
    return mean, count


def aggregate_chunk(spec: WorkUnit, ctx: AggregateContext) -> dict[str, Any]:
    """The task: read the tile's days from the master, monthly means, write one monthly chunk, mark it."""
    so = ctx.storage_options
    y, x = spec.fine
    m0, m1 = spec.time_bounds
    d0, d1 = master_days(spec, ctx.start, ctx.n_days)
    q = store.read_window(store.array(store.open_group(ctx.master_url, so), "sm"), (slice(d0, d1), y, x),
                          ctx.master_url, "downscale")
    start = pd.Timestamp(ctx.start)
    days = pd.date_range(start + pd.Timedelta(days=d0), periods=d1 - d0, freq="D")
    mod = (days.year - start.year) * 12 + (days.month - start.month) - m0
    first = start.to_period("M").to_timestamp()
    months = pd.date_range(first, periods=m1, freq="MS")[m0:]
    dim = np.asarray(months.days_in_month)
    min_valid = np.ceil(ctx.min_valid_fraction * dim - 1e-9).astype(np.int64)
    mean, count = monthly_means(q, np.asarray(mod), m1 - m0, min_valid)
    master.write_packed(ctx.monthly_url, spec.region, {"sm": mean, "n_valid_days": count}, so)
    store.Ledger(ctx.root, master.MONTHLY_STORE, so).mark(spec.key, {"months": m1 - m0})
    return {"key": spec.key, "valid_means": int(np.count_nonzero(mean != FILL))}


def aggregate(cfg, client=None, *, min_valid_fraction: float = MIN_VALID_FRACTION,
              max_in_flight: int | None = None, **options) -> StageResult:
    """Write ``monthly.zarr`` from a complete ``master.zarr``; resumable like downscale.

    Returns ``{"monthly": url, "ledger": url}`` with ``.stats`` = units (monthly chunks)
    total/written/skipped (also as ``chunks_*``) and ``months``.
    """
    so = cfg.store.storage_options()
    murl, url = cfg.store.url(master.MASTER_STORE), cfg.store.url(master.MONTHLY_STORE)
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError("min_valid_fraction must be in [0, 1]")
    if not store.exists(murl, so):
        raise StoreError(murl, "no master store.", "run `sm1km downscale --config run.yaml` first.")
    done_master = len(store.Ledger(cfg.store.root, master.MASTER_STORE, so).keys())
    need = n_master_shards(cfg)
    if done_master < need:
        raise StoreError(murl, f"the master is incomplete ({done_master} of {need} shards written).",
                         "finish it with `sm1km downscale --config run.yaml` (it resumes), then aggregate.")
    months, _ = month_index(cfg.dates())
    src_attrs = dict(store.open_group(murl, so).attrs)
    tpl, enc = master.monthly_template(cfg, source_attrs=src_attrs)
    tpl.attrs["sm1km_monthly_rule"] = (f"mean written where n_valid_days >= {min_valid_fraction} x calendar days "
                                       "of the month; else fill")
    store.create_template(url, tpl, enc, so)
    ctx = AggregateContext(root=cfg.store.root, master_url=murl, monthly_url=url, storage_options=so,
                           start=str(cfg.period.start), n_days=cfg.period.n_days,
                           min_valid_fraction=float(min_valid_fraction))
    ledger = store.Ledger(cfg.store.root, master.MONTHLY_STORE, so)
    done = ledger.keys()
    total = sum(1 for _ in monthly_specs(cfg))
    skipped = sum(1 for s in monthly_specs(cfg) if s.key in done)
    todo = (s for s in monthly_specs(cfg) if s.key not in done)
    log.info("aggregate: %d monthly chunks, %d already done, %d to write -> %s", total, skipped,
             total - skipped, url)
    written = 0
    task = functools.partial(aggregate_chunk, ctx=ctx)
    with stage_client(cfg, client) as c:
        for _ in run_tasks(c, task, todo, window=max_in_flight, name="aggregate_chunk", total=total - skipped):
            written += 1
    store.finalize(url, so, store.coverage_attrs(cfg.dates()))
    stats = {"units_total": total, "units_written": written, "units_skipped": skipped,
             "chunks_total": total, "chunks_written": written, "chunks_skipped": skipped, "months": len(months)}
    log.info("aggregate done: %s", stats)
    return StageResult({"monthly": url, "ledger": ledger.url}, stats)
