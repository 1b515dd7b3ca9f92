"""``sm1km aggregate``: monthly means of the 1 km master into ``monthly.zarr``.

One unit per (tile × 12 months) = one shard of ``monthly.zarr`` (one inner chunk per month): its
task reads that tile's days of the months to compute from the master (packed int16, ~10 MB per
year at 120×120 px), and writes per month the mean of the valid daily values (packed like the
master) and ``n_valid_days``.

**Grows in time:** each month has a deps digest (:func:`month_deps`: the master's per-day digests
of its days, ``_ledger/master.zarr/days.json``) recorded in ``_ledger/monthly.zarr/blocks.json``;
only months whose digest changed are computed — the open month when the master gained days, new
months (the time axis is extended, ``append.grow_store``), months with revised days — and written
prefix-preserving, so a closed month keeps its bytes. A month is closed once all its days are in
the master.

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
import re
from typing import Any

import numpy as np
import pandas as pd

from sm1km.core.encoding import FILL
from sm1km.errors import StoreError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.runtime.runner import run_tasks
from sm1km.runtime.units import UnitGrid, WorkUnit, plan_units, scan_ledger
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


@dataclasses.dataclass(frozen=True)
class MonthsTask:
    """One task: months ``[m0, m1)`` of one monthly unit (a tile × 12 months) to (re)compute;
    ``deps``: the digest of every month of the unit (its ledger marker)."""

    unit: WorkUnit
    m0: int
    m1: int
    deps: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        return self.unit.key


def month_label(month: pd.Timestamp) -> str:
    """Key of a month in ``_ledger/monthly.zarr/blocks.json`` (``YYYY-MM``)."""
    return f"{month.year:04d}-{month.month:02d}"


def month_deps(cfg, storage_options, min_valid_fraction: float) -> dict[str, str]:
    """{``YYYY-MM``: deps digest} of every month of the run: the master's per-day digests of the
    month's days in the run (``_ledger/master.zarr/days.json``; "" for a day without one), how many
    there are, and the thin-month rule. A month gains days -> its digest changes; a closed month
    changes only if one of its days was recomputed with other inputs."""
    from sm1km.storage.deps import digest_of

    days = master.DayDigests(cfg.store.root, master.MASTER_STORE, storage_options).read()
    dates = pd.DatetimeIndex(cfg.dates())
    months, idx = month_index(dates)
    iso = [str(d.date()) for d in dates]
    out = {}
    for m, start in enumerate(months):
        sel = [iso[i] for i in np.flatnonzero(idx == m)]
        out[month_label(start)] = digest_of({"days": [[d, days.get(d, "")] for d in sel],
                                             "min_valid_fraction": float(min_valid_fraction)})
    return out


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


def monthly_grid(cfg) -> UnitGrid:
    """The plan of :func:`monthly_specs` as arithmetic (its size, a ledger key's position in it)."""
    months, _ = month_index(cfg.dates())
    return UnitGrid.of(cfg.coarse_region, cfg.grid.tile_cells, len(months), master.MONTHLY_TIME_CHUNK, cfg.grid.factor)


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


def aggregate_chunk(task: MonthsTask, ctx: AggregateContext) -> dict[str, Any]:
    """The task: read the tile's days of months ``[m0, m1)`` from the master, monthly means, write
    those months (prefix-preserving: the other months' inner chunks keep their bytes), mark the unit."""
    so = ctx.storage_options
    spec = task.unit
    y, x = spec.fine
    m0, m1 = task.m0, task.m1
    part = dataclasses.replace(spec, t0=m0, t1=m1)
    d0, d1 = master_days(part, ctx.start, ctx.n_days)
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
    # the arrays' own metadata: a growing monthly store is longer than what is published
    group = store.open_group(ctx.monthly_url, so, mode="r+", use_consolidated=False)
    master.write_packed(ctx.monthly_url, part.region, {"sm": mean, "n_valid_days": count}, so, group=group,
                        preserve=True)
    store.Ledger(ctx.root, master.MONTHLY_STORE, so).mark(
        spec.key, {"months": spec.time_bounds[1] - spec.time_bounds[0], "deps": dict(task.deps)})
    return {"key": spec.key, "months_written": m1 - m0, "valid_means": int(np.count_nonzero(mean != FILL))}


_UNIT_KEY = re.compile(r"^lat-\d+-\d+_lon-\d+-\d+_time-\d+-\d+$")


def aggregate(cfg, client=None, *, min_valid_fraction: float = MIN_VALID_FRACTION,
              max_in_flight: int | None = None, **options) -> StageResult:
    """Write ``monthly.zarr`` from a complete ``master.zarr``; resumable like downscale; grows.

    Each month's deps digest (:func:`month_deps`) is recorded in ``_ledger/monthly.zarr/blocks.json``
    (keys ``YYYY-MM``); only months whose digest changed are computed — the open month when the
    master gained days, new months, a month whose master days were recomputed — and a closed
    month's bytes stay as they are. New months extend the store's time axis (``append.grow_store``);
    consolidated metadata last; a run with nothing to do writes nothing.

    Returns ``{"monthly": url, "ledger": url}`` with ``.stats`` = units (monthly chunks)
    total/written/skipped (also as ``chunks_*``), ``months``, ``months_written`` (unit-months
    computed), ``months_redone`` (months whose digest changed) and ``months_open`` (0 or 1: the
    last month is not complete in the master).
    """
    from sm1km.stages.downscale import shard_grid
    from sm1km.storage.append import grow_store, published_length, write_time_values
    from sm1km.storage.deps import BLOCKS_VERSION, BlockDigests

    so = cfg.store.storage_options()
    murl, url = cfg.store.url(master.MASTER_STORE), cfg.store.url(master.MONTHLY_STORE)
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError("min_valid_fraction must be in [0, 1]")
    if not store.exists(murl, so):
        raise StoreError(murl, "no master store.", "run `sm1km downscale --config run.yaml` first.")
    src_attrs = dict(store.open_group(murl, so).attrs)
    # streamed: one byte per master shard, not a set of 3.9 million key strings (the global run)
    need = n_master_shards(cfg)
    done_master = scan_ledger(store.Ledger(cfg.store.root, master.MASTER_STORE, so), shard_grid(cfg)).n_done
    if done_master < need or published_length(murl, so) < cfg.period.n_days:
        raise StoreError(murl, f"the master is incomplete ({done_master} of {need} shards written, "
                               f"{published_length(murl, so)} of {cfg.period.n_days} days published).",
                         "finish it with `sm1km downscale --config run.yaml` (it resumes), then aggregate.")
    months, _ = month_index(cfg.dates())
    tpl, enc = master.monthly_template(cfg, source_attrs=src_attrs)
    tpl.attrs["sm1km_monthly_rule"] = (f"mean written where n_valid_days >= {min_valid_fraction} x calendar days "
                                       "of the month; else fill")
    existed = store.exists(url, so)
    n_pub, n_months = grow_store(url, tpl, enc, so)
    if existed and n_months > n_pub:
        write_time_values(url, "time_bnds", tpl["time_bnds"].values[n_pub:], n_pub, so)
    ctx = AggregateContext(root=cfg.store.root, master_url=murl, monthly_url=url, storage_options=so,
                           start=str(cfg.period.start), n_days=cfg.period.n_days,
                           min_valid_fraction=float(min_valid_fraction))
    cur = month_deps(cfg, so, min_valid_fraction)
    labels = [month_label(m) for m in months]
    blocks = BlockDigests(cfg.store.root, master.MONTHLY_STORE, so)
    recorded = blocks.read()
    stale = {m for m, lab in enumerate(labels) if recorded.get(lab) != cur[lab]}
    ledger = store.Ledger(cfg.store.root, master.MONTHLY_STORE, so)
    present = scan_ledger(ledger, monthly_grid(cfg))

    def task_of(spec: WorkUnit) -> MonthsTask | None:
        m0, m1 = spec.time_bounds
        todo = [m for m in range(m0, m1) if m in stale]
        if todo and present.has(spec.key):
            info = ledger.info(spec.key) or {}
            have = info.get("deps") or {}
            todo = [m for m in todo if have.get(labels[m]) != cur[labels[m]]]
        if not todo:
            return None
        return MonthsTask(spec, min(todo), max(todo) + 1, tuple((labels[m], cur[labels[m]]) for m in range(m0, m1)))

    total = sum(1 for _ in monthly_specs(cfg))
    n_tasks = sum(1 for sp in monthly_specs(cfg) if task_of(sp) is not None)
    skipped = total - n_tasks
    tasks = (t for t in map(task_of, monthly_specs(cfg)) if t is not None)  # lazily, like the plan
    if stale:
        log.info("aggregate: months to compute (new days, a new month or changed master days): %s",
                 ", ".join(labels[m] for m in sorted(stale)))
    log.info("aggregate: %d monthly chunks, %d already done, %d to write -> %s", total, skipped, n_tasks, url)
    written = months_written = 0
    task = functools.partial(aggregate_chunk, ctx=ctx)
    with stage_client(cfg, client) as c:
        for res in run_tasks(c, task, tasks, window=max_in_flight, name="aggregate_chunk", total=n_tasks):
            written += 1
            months_written += res["months_written"]
    for k in present.others:
        if _UNIT_KEY.match(k):  # a grown 12-month block's old key (no unit of the plan)
            ledger.fs.rm(ledger._key_path(k))
    if stale or set(recorded) != set(cur):
        store.write_json(blocks.url, {"version": BLOCKS_VERSION, "store": master.MONTHLY_STORE,
                                      "blocks": dict(sorted(cur.items()))}, so, separators=(",", ":"))
    coverage = store.coverage_attrs(cfg.dates())
    if written or n_pub != n_months or not _published(url, so) or _coverage_behind(url, so, coverage):
        store.finalize(url, so, coverage)
    else:
        log.info("aggregate: monthly.zarr is up to date (%d months): nothing written", n_months)
    last = months[-1]
    months_open = int(pd.Timestamp(cfg.period.end) < last + pd.offsets.MonthEnd(0))
    stats = {"units_total": total, "units_written": written, "units_skipped": skipped,
             "chunks_total": total, "chunks_written": written, "chunks_skipped": skipped, "months": len(months),
             "months_written": months_written, "months_redone": len(stale), "months_open": months_open}
    log.info("aggregate done: %s", stats)
    return StageResult({"monthly": url, "ledger": ledger.url}, stats)


def _coverage_behind(url: str, so: dict, coverage: dict[str, str]) -> bool:
    """Does the root still carry an older time range? A run killed after its last month was written
    and marked, before finalize: the re-run has no month to write but must still finalize (days
    added inside the open month change no month count)."""
    from sm1km.storage.publish import read_root_metadata

    attrs = read_root_metadata(url, so).get("attributes") or {}
    return any(attrs.get(k) != coverage[k] for k in ("time_coverage_start", "time_coverage_end"))


def _published(url: str, so: dict) -> bool:
    from sm1km.storage.publish import read_root_metadata

    return bool((read_root_metadata(url, so).get("consolidated_metadata") or {}).get("metadata"))
