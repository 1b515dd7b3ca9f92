"""``inputs/predictors.zarr``: the 1 km predictors — static rasters and gap-filled daily LST/NDVI.

On the 1 km grid, chunked like the master shards ``(time_block_days, tile px, tile px)``. The
daily LST day/night and NDVI are **gap-filled in time, causally** (:mod:`sm1km.core.gapfill`, rule
``causal-locf``; ``observed_flags`` says which values were observed): day ``t`` depends only on
the ``FALLBACK_DAYS`` days ending on ``t``, so a new or changed day ``p`` changes only days
``[p, p + FALLBACK_DAYS)`` (:func:`sm1km.core.rechunk_plan.days_to_recompute`) — an append
recomputes the new days only and never touches a published one. Units of work are *time blocks*
(those holding a day to recompute; only those days are written) and *static rasters* (re-read
when their file changed). The read pass stages the hull of the trailing windows (days to read
from their files, earlier days' observations taken back from the store, and the *lead-in*: files
dated up to ``LEAD_IN_DAYS`` before the store's first day, read but not stored, so the first days
carry the scene/composite before the period); the write pass fills each (block, tile) from its
trailing window. A store gap-filled by another rule is recomputed whole. The predictor table and
the task functions are in :mod:`.predictor_tasks`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import xarray as xr

from sm1km.core.gapfill import GAPFILL_RULE
from sm1km.core.rechunk_plan import blocks_of, chunk_slices, days_to_recompute, hull, plan_staging, trailing_window
from sm1km.errors import InputError, Sm1kmError
from sm1km.storage import store
from sm1km.storage.deps import digest_of
from sm1km.storage.input_files import basename, display
from sm1km.storage.readers.modis import same_granule_day

from .cube import (
    Var,
    coord_arrays,
    day,
    final_attrs,
    grow_time_axis,
    iso,
    open_existing,
    rewrite_time,
    template,
    time_axis,
    time_repair_needed,
)
from .index import DIGEST_MOD, hex_digest
from .inputs import glob_files, hash_files, input_options, period_days
from .job import IngestContext, UnitCounts, raise_problems, run_units, succeeded, task_errors
from .predictor_tasks import (
    DYNAMIC,
    FALLBACK_DAYS,
    GAP_HALO_DAYS,
    LEAD_IN_DAYS,
    OBSERVED_FLAGS,
    STATIC,
    STATIC_BY_KEY,
    DaySource,
    PredictorBlockWrite,
    PredictorReadTask,
    StaticReadTask,
    StaticTileWrite,
    configured,
    read_predictor_band,
    read_static_band,
    write_predictor_block,
    write_static_tile,
)

log = logging.getLogger(__name__)


def _where(spec: str | list[str]) -> str:
    """A config entry as an error may name it (URLs redacted)."""
    return display(spec if isinstance(spec, str) else ", ".join(spec))


class PredictorJob:
    """``inputs/predictors.zarr`` (an :class:`~.job.IngestJob`; units: time blocks + static rasters)."""

    store_name = "inputs/predictors.zarr"

    def __init__(self, ctx: IngestContext):
        self.ctx = ctx
        self.url = ctx.cfg.store.url("inputs", "predictors.zarr")
        self.index_store = ctx.index(self.store_name)
        self.opts = input_options(ctx.cfg)
        pc = ctx.cfg.inputs.predictors
        self.dyn = [d for d in DYNAMIC if getattr(pc, d.key)]
        self.sta = [s for s in STATIC if getattr(pc, s.key)]
        missing = [d.key for d in DYNAMIC if not getattr(pc, d.key)] + [s.key for s in STATIC if not getattr(pc, s.key)]
        if missing:
            log.warning("predictors not configured (left out of %s): %s", self.store_name, ", ".join(missing))
        self.problems: list[Sm1kmError] = []
        self.action: str | None = None
        self.time_repair = False  # the stored time coordinate is corrupt: rewrite it
        self.axis = np.array([], dtype="datetime64[D]")
        self.chunks: tuple[int, ...] = ()
        self.blocks: list[int] = []
        self.regions: dict[int, slice] = {}   # time block -> the days of it to recompute
        self.lead0 = 0                        # position of the first lead-in day read (<= 0)
        self.static_todo: list[str] = []
        self.tiles: dict[tuple[str, str], list[str]] = {}  # (key, first MODIS tile of a day) -> its tiles

    def counts(self) -> UnitCounts:
        n_blocks = -(-len(self.axis) // self.chunks[0]) if (self.dyn and self.chunks) else 0
        written = len(self.blocks) + len(self.static_todo) if self.action else 0
        return UnitCounts(total=n_blocks + len(self.sta), written=written)

    def _vars(self) -> tuple[list[Var], list[Var]]:
        tv = [Var(d.var, "float32", {**d.attrs, "ancillary_variables": OBSERVED_FLAGS}) for d in self.dyn]
        if self.dyn:
            tv.append(Var(OBSERVED_FLAGS, "uint8", {
                "long_name": "which predictor values are observations (not gap-filled)",
                "flag_masks": [d.bit for d in self.dyn],
                "flag_meanings": " ".join(f"{d.var}_observed" for d in self.dyn)}, 0))
        sv = [Var(s.var, s.dtype, dict(s.attrs), -1 if s.dtype == "int16" else np.nan) for s in self.sta]
        return tv, sv

    # -- plan ---------------------------------------------------------------------------------
    def _find_files(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """(daily kind -> files, static key -> its one file); problems collected."""
        pc = self.ctx.cfg.inputs.predictors
        files: dict[str, list[str]] = {}
        for d in self.dyn:
            try:
                files[d.key] = glob_files(getattr(pc, d.key), f"predictors.{d.key}", self.ctx.cfg,
                                          days=period_days(self.ctx.cfg, LEAD_IN_DAYS))  # templates: + lead-in
            except InputError as exc:
                self.problems.append(exc)
        static_files = {}
        for s in self.sta:
            try:
                fs_ = glob_files(getattr(pc, s.key), f"predictors.{s.key}", self.ctx.cfg, days=())
            except InputError as exc:
                self.problems.append(exc)
                continue
            if len(fs_) > 1 and all(same_granule_day(a, b) for i, a in enumerate(fs_) for b in fs_[i + 1:]):
                self.tiles[s.key, fs_[0]] = list(fs_)  # the tiles of one MODIS granule (MCD12Q1): mosaicked
            elif len(fs_) != 1:
                self.problems.append(InputError(_where(getattr(pc, s.key)),
                                                f"{len(fs_)} files match a static predictor; expected one.",
                                                "point the config at a single (mosaicked) raster."))
                continue
            static_files[s.key] = fs_[0]
        return files, static_files

    def _day_files(self, files: dict[str, list[str]], lo, hi, lead: int = 0) -> dict[str, dict[str, str]]:
        """kind -> day -> file, for the days of ``[lo - lead, hi]`` (``lead`` days of lead-in before
        the period); problems collected."""
        from sm1km.storage.readers import raster_date

        pc = self.ctx.cfg.inputs.predictors
        out: dict[str, dict[str, str]] = {}
        for d in self.dyn:
            m: dict[str, str] = {}
            for f in files[d.key]:
                date = raster_date(basename(f))
                if date is None:
                    self.problems.append(InputError(
                        display(f), "no date (YYYYMMDD, YYYY-MM-DD, YYYY_DOY) in the file name of a daily predictor.",
                        "name daily predictor files with their date, e.g. lst_day_20200401.tif."))
                    continue
                day_ = iso(np.datetime64(date, "D") + np.timedelta64(d.date_offset_days, "D"))
                if not (lo - np.timedelta64(lead, "D") <= day(day_) <= hi):
                    continue
                if day_ in m:
                    if all(same_granule_day(t, f) for t in self.tiles.get((d.key, m[day_]), [m[day_]])):
                        self.tiles.setdefault((d.key, m[day_]), [m[day_]]).append(f)  # MODIS tiles: mosaicked
                        continue
                    self.problems.append(InputError(display(f), f"duplicate day {day_} for {d.key}: also {basename(m[day_])}.",
                                                    "keep one file per day (composite) in the input glob."))
                    continue
                m[day_] = f
            if not any(day(x) >= lo for x in m) and not self.index["days"].get(d.key):
                self.problems.append(InputError(_where(getattr(pc, d.key)),
                                                f"no {d.key} file falls within the period {iso(lo)}..{iso(hi)}.",
                                                "check the glob and the dates in the file names."))
            out[d.key] = m
        return out

    def _sha(self, key: str, f: str) -> str:
        """A day's file digest; a MODIS mosaic's combines its tiles' (a tile added or changed changes it)."""
        if (key, f) not in self.tiles:
            return self.sha[f]
        return hashlib.sha256("\n".join(sorted(self.sha[t] for t in self.tiles[key, f])).encode()).hexdigest()

    def _source(self, key: str, f: str) -> str | tuple[str, ...]:
        """What a task reads for file ``f``: the file, or the tiles of its MODIS mosaic."""
        return tuple(self.tiles[key, f]) if (key, f) in self.tiles else f

    def _name(self, key: str, f: str) -> str:
        """The index's name of a day's input: the file name, or its mosaic's tile names joined by '+'."""
        return "+".join(basename(t) for t in self.tiles.get((key, f), [f]))

    def plan(self) -> None:
        ctx = self.ctx
        lat, lon = coord_arrays(ctx.region, ctx.factor)
        tile = ctx.cfg.grid.tile_cells * ctx.factor
        files, static_files = self._find_files()
        if self.problems:
            return
        allf = sorted({f for v in files.values() for f in v} | set(static_files.values())
                      | {t for ts in self.tiles.values() for t in ts})
        self.sha = hash_files(ctx, allf, self.problems)
        if self.problems:
            return
        tvars, svars = self._vars()
        found = open_existing(ctx, self.url, self.index_store, lat, lon, {v.name for v in tvars + svars}, self.problems)
        if found is None:
            return
        ds, self.rebuild = found
        self.exists = ds is not None
        fresh = ds is None or self.rebuild
        index = None if fresh else self.index_store.read()
        self.index = index or self.index_store.empty()
        self.axis, stored = time_axis(ctx, ds, self.url, self.problems, self.rebuild)
        self.stored = stored
        if ds is not None and not fresh and self.dyn:
            enc = ds[self.dyn[0].var].encoding
            self.chunks = tuple(int(c) for c in enc["chunks"])
        else:
            self.chunks = (ctx.cfg.grid.time_block_days, min(tile, lat.size), min(tile, lon.size))
        lo, hi = self.axis[0], self.axis[-1]
        self.day_file = self._day_files(files, lo, hi, LEAD_IN_DAYS)
        if self.problems:
            return
        # classify days: todo = new day, newly arrived file, or changed file
        pos = {dd: i for i, dd in enumerate(map(iso, self.axis))}
        rule = None if ds is None else ds.attrs.get("gapfill_rule")
        redo_all = not fresh and bool(self.dyn) and rule != GAPFILL_RULE
        if redo_all:
            log.warning("%s: gap-filled by rule %r, not %r: recomputing every day", self.url, rule, GAPFILL_RULE)
        self.todo: dict[str, set[str]] = {}
        self.changed: dict[str, set[str]] = {}
        changed_pos = set()
        for d in self.dyn:
            kd = self.index["days"].get(d.key, {})
            todo, changed = set(), set()
            for day_ in pos:
                f = self.day_file[d.key].get(day_)
                ent = kd.get(day_)
                if ent is None:
                    todo.add(day_)
                elif f is not None and (ent[0] is None or self._sha(d.key, f) != self.index["files"].get(ent[0])):
                    todo.add(day_)
                    if ent[0] is not None:
                        changed.add(day_)
            self.todo[d.key], self.changed[d.key] = todo, changed
            changed_pos |= {pos[x] for x in todo}
        # the lead-in: files dated before the first day (read, not stored); a changed one changes
        # the first days
        self.lead = {d.key: {x: f for x, f in self.day_file[d.key].items() if day(x) < self.axis[0]}
                     for d in self.dyn}
        self.lead_sig = {k: {x: self._sha(k, f) for x, f in sorted(m.items())} for k, m in self.lead.items()}
        old_lead = self.index.get("lead_in", {})
        for k, m in self.lead_sig.items():
            for x in set(m) | set(old_lead.get(k, {})):
                if m.get(x) != old_lead.get(k, {}).get(x):
                    changed_pos.add(self._pos(x))
        if redo_all:
            changed_pos |= set(range(len(self.axis)))
        self.lead0 = min([self._pos(x) for m in self.lead.values() for x in m] + [0])
        ct = self.chunks[0]
        self.recompute = days_to_recompute(sorted(changed_pos), FALLBACK_DAYS, len(self.axis))
        self.regions = blocks_of(self.recompute, ct)
        self.blocks = sorted(self.regions)
        self.hull = hull(trailing_window(s, FALLBACK_DAYS, self.lead0) for s in self.regions.values())
        for s in self.sta:
            ent = self.index["static"].get(s.key)
            f = static_files[s.key]
            if fresh or ent is None or ent[1] != self._sha(s.key, f):
                self.static_todo.append(s.key)
        self.static_files = static_files
        grows = stored is not None and len(self.axis) > len(stored)
        self.time_repair = not fresh and time_repair_needed(ds)
        if fresh:
            self.action = "create"
        elif self.blocks or self.static_todo or grows or self.time_repair:
            self.action = "update"
        log.info("%s: %s (%d day(s) in %d time block(s) to compute, static to read: %s)", self.store_name,
                 self.action or "up to date", len(self.recompute), len(self.blocks),
                 ", ".join(self.static_todo) or "none")

    def _pos(self, day_: str) -> int:
        """Position of an ISO day on the store's time axis (negative: a lead-in day)."""
        return int((day(day_) - self.axis[0]).astype(int))

    # -- stage --------------------------------------------------------------------------------
    def _sources(self, fresh: bool) -> list[DaySource]:
        """Every day of the hull: per kind a file to read, the store's observations, or nothing."""
        assert self.hull is not None, "sources are for a staging hull"
        out = []
        for p in range(self.hull.start, self.hull.stop):
            day_ = iso(self.axis[0] + np.timedelta64(p, "D"))
            files: dict[str, str | tuple[str, ...]] = {}
            stored: list[str] = []
            if p < 0:  # lead-in: files only
                files = {k: self._source(k, m[day_]) for k, m in self.lead.items() if day_ in m}
                out.append(DaySource(day_, p, files, ()))
                continue
            for d in self.dyn:
                f = self.day_file[d.key].get(day_)
                ent = self.index["days"].get(d.key, {}).get(day_)
                if day_ in self.todo[d.key]:
                    if f:
                        files[d.key] = self._source(d.key, f)
                elif not fresh and ent is not None and ent[0] is not None:
                    stored.append(d.key)
            out.append(DaySource(day_, p, files, tuple(stored)))
        return out

    def stage(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        lat, lon = coord_arrays(ctx.region, ctx.factor)
        ct, cy, cx = self.chunks
        self.staging_url = store.join(ctx.staging_root, "predictors.zarr")
        fresh = self.action == "create"
        import dask.array as dsa

        n_st = (self.hull.stop - self.hull.start) if self.hull else 0
        plan = plan_staging(max(n_st, 1), lat.size, lon.size, cy, cx, 4 * max(len(self.dyn), 1), ctx.budget, ct)
        tpl = xr.Dataset(coords={"lat": lat, "lon": lon})
        enc = {}
        if n_st:
            for d in self.dyn:
                tpl[d.key] = (("day", "lat", "lon"), dsa.zeros((n_st, lat.size, lon.size), dtype="float32",
                                                               chunks=plan.chunks))
                enc[d.key] = {"chunks": plan.chunks, "_FillValue": np.float32(np.nan)}
        for key in self.static_todo:
            s = STATIC_BY_KEY[key]
            tpl[s.var] = (("lat", "lon"), dsa.zeros((lat.size, lon.size), dtype=s.dtype, chunks=(cy, cx)))
            enc[s.var] = {"chunks": (cy, cx), "_FillValue": np.float32(np.nan) if s.dtype == "float32" else None}
        store.create_template(self.staging_url, tpl, enc, ctx.so)
        problems = self.problems
        # dynamic: every day of the hull, from a file, the store, or nothing
        res: list[Any] = []
        if n_st:
            kinds = tuple(d.key for d in self.dyn)
            sources = self._sources(fresh)
            tasks = [PredictorReadTask(self.staging_url, ctx.so, self.url, kinds, tuple(sources[t.days]),
                                       ctx.band_region(t.rows, t.cols, ctx.factor), ctx.factor, t.days.start,
                                       t.rows, t.cols, (cy, cx), self.opts) for t in plan.tasks]
            res = run_units(ctx, read_predictor_band, tasks, "predictors-read")
            problems.extend(task_errors(res))
        incomplete: set[tuple[str | None, str | None]] = {(None, None) for r in res if isinstance(r, Sm1kmError)}
        for r in succeeded(res):
            incomplete.update(r.failed)
        # static: one task per (raster, band)
        splan = plan_staging(1, lat.size, lon.size, cy, cx, 8, ctx.budget, 1)
        stasks = [StaticReadTask(self.staging_url, ctx.so, key, self._source(key, self.static_files[key]),
                                 ctx.band_region(t.rows, t.cols, ctx.factor), ctx.factor, t.rows, t.cols, (cy, cx),
                                 self.opts)
                  for key in self.static_todo for t in splan.tasks]
        sres = run_units(ctx, read_static_band, stasks, "predictors-static")
        problems.extend(task_errors(sres))
        # digests and the "differs" check (on every day that was read without a problem)
        self.digests: dict[str, dict[str, int]] = {}
        for r in succeeded(res):
            for k, per in r.digests.items():
                tgt = self.digests.setdefault(k, {})
                for day_, v in per.items():
                    tgt[day_] = (tgt.get(day_, 0) + v) % DIGEST_MOD
        self.static_digests: dict[str, int] = {}
        for t, r in zip(stasks, sres):
            if isinstance(r, Sm1kmError):
                incomplete.add((t.predictor, "static"))
            else:
                self.static_digests[t.predictor] = (self.static_digests.get(t.predictor, 0) + r.digest) % DIGEST_MOD
        for d in self.dyn:
            for day_ in sorted(self.changed[d.key]):
                old = self.index["days"][d.key][day_]
                if (d.key, day_) in incomplete or old[1] == hex_digest(self.digests.get(d.key, {}).get(day_, 0)):
                    continue
                if ctx.overwrite:
                    log.warning("%s: %s on %s differs from the stored one: overwriting", self.store_name, d.key, day_)
                    continue
                problems.append(InputError(
                    display(self.day_file[d.key][day_]), f"{d.key} on {day_} differs from what {self.store_name} holds "
                                                f"(ingested from {old[0]}); stored data are not replaced silently.",
                    "pass --overwrite to replace it, or restore the original file."))
        for key in self.static_todo:
            old = self.index["static"].get(key)
            if (key, "static") in incomplete:
                continue
            if old and not fresh and old[2] != hex_digest(self.static_digests[key]) and not ctx.overwrite:
                problems.append(InputError(self.static_files[key],
                                           f"static predictor {key} differs from what {self.store_name} holds "
                                           f"(ingested from {old[0]}).",
                                           "pass --overwrite to replace it, or restore the original file."))

    # -- write --------------------------------------------------------------------------------
    def write(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        lat, lon = coord_arrays(ctx.region, ctx.factor)
        ct, cy, cx = self.chunks
        fresh = self.action == "create"
        days = self.axis
        tvars, svars = self._vars()
        if fresh:
            tpl, enc = template(days if self.dyn else None, lat, lon, tvars, svars, self.chunks, (cy, cx), {})
            store.create_template(self.url, tpl, enc, ctx.so, overwrite=self.exists)
        else:
            if self.time_repair and self.stored is not None:
                rewrite_time(self.url, ctx.so, self.stored)
            if self.stored is not None and len(days) > len(self.stored):
                grow_time_axis(self.url, ctx.so, days)
        kinds = tuple(d.key for d in self.dyn)
        h0 = self.hull.start if self.hull else 0  # blocks to write: there is a hull
        tasks = []
        for b in self.blocks:
            blk = self.regions[b]  # the days of block b to recompute
            w = trailing_window(blk, FALLBACK_DAYS, self.lead0)
            for rs in chunk_slices(lat.size, cy):
                for cs in chunk_slices(lon.size, cx):
                    tasks.append(PredictorBlockWrite(self.url, ctx.so, self.staging_url, kinds, blk, w, h0, rs, cs,
                                                     GAP_HALO_DAYS, FALLBACK_DAYS))
        stasks = []
        if self.static_todo:
            names = tuple(STATIC_BY_KEY[k].var for k in self.static_todo)
            stasks = [StaticTileWrite(self.url, ctx.so, self.staging_url, names, rs, cs)
                      for rs in chunk_slices(lat.size, cy) for cs in chunk_slices(lon.size, cx)]
        written = run_units(ctx, write_predictor_block, tasks, "predictors-write")
        raise_problems(task_errors(written))
        raise_problems(task_errors(run_units(ctx, write_static_tile, stasks, "predictors-static-write")))
        self.stored_digests: dict[int, int] = {}
        for r in succeeded(written):
            for t, v in r.digests.items():
                self.stored_digests[t] = (self.stored_digests.get(t, 0) + v) % DIGEST_MOD
        self._write_index_and_attrs(fresh, days, cy, cx)

    def _write_index_and_attrs(self, fresh: bool, days, cy: int, cx: int) -> None:
        ctx = self.ctx
        idx = self.index
        for d in self.dyn:
            kd = idx["days"].setdefault(d.key, {})
            for day_ in sorted(self.todo[d.key]):
                f = self.day_file[d.key].get(day_)
                if f is None:
                    kd[day_] = [None, None]
                else:
                    kd[day_] = [self._name(d.key, f), hex_digest(self.digests.get(d.key, {}).get(day_, 0))]
                    idx["files"][self._name(d.key, f)] = self._sha(d.key, f)
        for key in self.static_todo:
            f = self.static_files[key]
            idx["static"][key] = [self._name(key, f), self._sha(key, f), hex_digest(self.static_digests[key])]
        # what the store holds (storage.deps reads these): per day, the gap-filled values and flags
        stored = {} if fresh else dict(idx.get("stored_days", {}))
        stored.update({iso(days[t]): hex_digest(v) for t, v in self.stored_digests.items()})
        idx["stored_days"] = dict(sorted(stored.items())) if self.dyn else {}
        idx["stored_static"] = digest_of({s.key: idx["static"][s.key][2] for s in self.sta})
        idx["digest_tile"] = [cy, cx]
        idx["lead_in"] = self.lead_sig
        for k, m in self.lead.items():
            for f in m.values():
                idx["files"][self._name(k, f)] = self._sha(k, f)
        inputs = [{"name": n, "sha256": s} for n, s in sorted(idx["files"].items())]
        inputs += [{"name": v[0], "sha256": v[1], "role": k} for k, v in sorted(idx["static"].items())]
        note = (f"created {iso(days[0])}..{iso(days[-1])}" if fresh else
                f"{len(self.recompute)} day(s) in {len(self.blocks)} time block(s) recomputed, static: "
                f"{', '.join(self.static_todo) or 'none'}, axis {iso(days[0])}..{iso(days[-1])}")
        attrs = final_attrs(ctx.cfg, self.url, ctx.so, fresh,
                            "sm1km 1 km predictors: static rasters and gap-filled daily LST day/night and NDVI",
                            "Dynamic predictors are gap-filled in time at ingest, causally (a day depends only "
                            "on itself and earlier days): the last observation carried forward up to "
                            f"{GAP_HALO_DAYS} days, else the pixel's (then the tile's) mean over the trailing "
                            f"{FALLBACK_DAYS} days; observed_flags marks observed values.",
                            inputs, days if self.dyn else None, note,
                            {"sm1km_stage": "ingest", "gapfill_rule": GAPFILL_RULE,
                             "gapfill_max_gap_days": GAP_HALO_DAYS, "gapfill_fallback_days": FALLBACK_DAYS,
                             "gapfill_lead_in_days": LEAD_IN_DAYS,
                             "ndvi_composite_day_offset": DYNAMIC[2].date_offset_days,
                             "grid_factor": ctx.factor})
        store.finalize(self.url, ctx.so, attrs)
        self.index_store.write(idx)  # last: the store is complete
        log.info("%s: written (%s)", self.url, note)


__all__ = ["PredictorJob", "DYNAMIC", "STATIC", "GAP_HALO_DAYS", "OBSERVED_FLAGS", "configured", "read_predictor_band",
           "write_predictor_block"]
