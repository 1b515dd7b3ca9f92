"""The 0.25° cubes ``inputs/cci.zarr`` and ``inputs/era5.zarr``: daily maps rechunked long in time.

Chunked ``(4096 days, space_chunk, space_chunk)`` — a whole series per pixel in one chunk, as the
fusion reads it. Units of work are days: CCI days come from the file names, the days of an ERA5
file (monthly files are fine) from one cheap read of one cell, once per new file. The read pass
is one task per *batch of days × spatial band* (:func:`sm1km.core.rechunk_plan.plan_staging`),
the write pass one task per output chunk: the stored chunk with the staged days put in.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import xarray as xr

from sm1km.core import grid
from sm1km.core.rechunk_plan import chunk_slices, output_chunks, plan_staging
from sm1km.errors import InputError, Sm1kmError
from sm1km.storage import store
from sm1km.storage.deps import digest_of
from sm1km.storage.input_files import InputOptions, basename, display

from .cube import (
    COARSE_TIME_CHUNK,
    SM_STANDARD_NAME,
    Var,
    coord_arrays,
    day,
    final_attrs,
    grow_time_axis,
    iso,
    open_existing,
    rewrite_time,
    staging_var,
    template,
    time_axis,
    time_repair_needed,
)
from .index import DIGEST_MOD, chunk_digests, hex_digest
from .inputs import glob_files, hash_files, input_options
from .job import IngestContext, UnitCounts, raise_problems, run_units, succeeded, task_errors

log = logging.getLogger(__name__)

#: days per batch of the read pass for the 0.25° cubes
COARSE_BATCH_DAYS = 32

CCI_VARS = (
    Var("sm", "float32", {"standard_name": SM_STANDARD_NAME, "long_name": "ESA CCI SM COMBINED volumetric soil moisture",
                          "units": "m3 m-3", "valid_min": 0.0, "valid_max": 1.0}),
    Var("flag", "int16", {"long_name": "ESA CCI SM flag (bit field as in the product version)",
                          "flag_masks": [1, 2, 4, 8, 16, 32, 64],
                          "flag_meanings": "snow_or_frozen dense_vegetation no_model_convergence "
                                           "beyond_physical_bounds weight_below_threshold all_datasets_unreliable "
                                           "barren_ground_advisory",
                          "comment": "-1 = no flag (missing in the file)"}, -1),
    Var("sm_uncertainty", "float32", {"standard_name": f"{SM_STANDARD_NAME} standard_error",
                                      "long_name": "ESA CCI SM uncertainty", "units": "m3 m-3"}),
)
ERA5_VARS = (
    Var("swvl1", "float32", {"standard_name": SM_STANDARD_NAME, "long_name": "ERA5 volumetric soil water layer 1 "
                             "(0-7 cm), daily mean on the CCI cell centres", "units": "m3 m-3",
                             "cell_methods": "time: mean"}),
)
ERA5_STATIC = (Var("land_fraction", "float32", {"standard_name": "land_area_fraction", "units": "1",
                                                "long_name": "land fraction from the ERA5 land-sea mask"}),)


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Era5ScanTask:
    """Which days one ERA5 file holds (read on one probe cell)."""

    path: str
    probe: grid.Region
    lsm: str | None
    opts: InputOptions | None = None  # how remote inputs are reached


def scan_era5_file(task: Era5ScanTask) -> list[str]:
    """Task: the days (ISO) of one ERA5 file."""
    from sm1km.storage.readers import read_era5

    ds = read_era5([task.path], region=task.probe, lsm_path=task.lsm, input_options=task.opts)
    return [iso(t) for t in ds["time"].values]


@dataclasses.dataclass(frozen=True)
class CoarseReadTask:
    """Read pass: ``days`` of one band (``rows``/``cols`` of the region) into the staging array."""

    kind: str                  # "cci" | "era5"
    staging_url: str
    so: dict
    days: tuple[str, ...]      # ISO days, positions day0.. of the staging array
    files: tuple[str, ...]     # cci: one per day; era5: the files holding these days
    band: grid.Region          # the band as a coarse region (what the readers take)
    day0: int
    rows: slice
    cols: slice
    chunk: tuple[int, int]     # store chunk (cy, cx): the tiles of the content digest
    lsm: str | None            # era5: the land-sea mask file
    want_static: bool          # era5: also stage (and digest) the land fraction
    opts: InputOptions | None = None  # how remote inputs are reached

    @property
    def key(self) -> str:
        return f"{self.kind}-d{self.day0}-r{self.rows.start}-c{self.cols.start}"


@dataclasses.dataclass(frozen=True)
class CoarseRead:
    """What a read task found: per-day content digests and valid counts, the static digest parts,
    the problems (the days they concern in ``failed_days``)."""

    digests: dict[str, int]
    n_valid: dict[str, int]
    static: dict[str, int]
    errors: tuple[Sm1kmError, ...] = ()
    failed_days: tuple[str | None, ...] = ()


def read_coarse_band(task: CoarseReadTask) -> CoarseRead:
    """Task, read pass of the 0.25° cubes: read ``days`` of the band, validate, write the staging region."""
    region = task.band
    lat, lon = coord_arrays(region, None)
    n = len(task.days)
    names = [v.name for v in (CCI_VARS if task.kind == "cci" else ERA5_VARS)]
    out = {nm: np.full((n, region.n_rows, region.n_cols), (CCI_VARS[1].fill if nm == "flag" else np.nan),
                       dtype=("int16" if nm == "flag" else "float32")) for nm in names}
    problems: list[tuple[str, Sm1kmError]] = []
    digests, n_valid, static = {}, {}, {}
    if task.kind == "cci":
        from sm1km.storage.readers import read_cci_day

        for i, (d, path) in enumerate(zip(task.days, task.files)):
            try:
                ds = read_cci_day(path, region, input_options=task.opts)
            except InputError as exc:
                problems.append((d, exc))
                continue
            err = validate_cci(ds, display(path), d, lat, lon)
            if err:
                problems.append((d, err))
                continue
            out["sm"][i] = ds["sm"].values[0]
            out["flag"][i] = ds["flag"].values[0]
            if "sm_uncertainty" in ds:
                out["sm_uncertainty"][i] = ds["sm_uncertainty"].values[0]
    else:
        from sm1km.storage.readers import read_era5

        ds = read_era5(list(task.files), region=region, lsm_path=task.lsm,  # an InputError: the task's result
                       input_options=task.opts)
        have = {iso(t): k for k, t in enumerate(ds["time"].values)}
        land = ds["land_fraction"].values
        vals = ds["swvl1"].values
        where = ", ".join(basename(f) for f in task.files)
        partial = ds.attrs.get("partial_days") or {}
        for i, d in enumerate(task.days):
            if d in partial:
                problems.append((d, InputError(where, f"day {d} is incomplete in these ERA5 files: {partial[d]} time "
                                                      "steps (a partial day: a download cut off, or ERA5T not yet "
                                                      "complete for that day).",
                                               "download the complete UTC day; for the latest days wait until the "
                                               "CDS has all of its hours (period.end: latest does).")))
                continue
            if d not in have:
                problems.append((d, InputError(where, f"day {d} is not in these ERA5 files.",
                                               "download complete UTC days of ERA5 swvl1.")))
                continue
            day_vals = vals[have[d]]
            if np.nanmax(np.nan_to_num(land, nan=0.0), initial=0.0) > 0 and not np.isfinite(day_vals).any():
                problems.append((d, InputError(where, f"swvl1 is missing on every land cell of the region on {d} "
                                                      "(all-missing day).",
                                               "re-download the ERA5 file(s) for that day.")))
                continue
            out["swvl1"][i] = day_vals
        if task.want_static:
            lf = land.astype(np.float32)
            static["land_fraction"] = chunk_digests("land_fraction", lf, task.rows.start, task.cols.start, *task.chunk)
    bad_days = {d for d, _ in problems}
    for i, d in enumerate(task.days):
        if d in bad_days:
            continue
        digests[d] = sum(chunk_digests(nm, out[nm][i], task.rows.start, task.cols.start, *task.chunk)
                         for nm in names) % DIGEST_MOD
        n_valid[d] = int(np.isfinite(out[names[0]][i]).sum())
    if problems:  # digests of the good days still serve the "differs" check
        return CoarseRead(digests, n_valid, {}, tuple(e for _, e in problems), tuple(d for d, _ in problems))
    block = xr.Dataset({nm: (("day", "lat", "lon"), out[nm]) for nm in names})
    region_w = {"day": slice(task.day0, task.day0 + n), "lat": task.rows, "lon": task.cols}
    if task.kind == "era5" and task.want_static:
        block["land_fraction"] = (("lat", "lon"), lf)
    store.write_region(task.staging_url, block, region_w, task.so)
    return CoarseRead(digests, n_valid, static)


def validate_cci(ds: xr.Dataset, path: str, day_: str, lat, lon) -> InputError | None:
    """Why a decoded CCI day cannot be ingested (None if it can)."""
    def bad(problem, fix):
        return InputError(path, problem, fix)

    if "sm" not in ds:
        return bad(f"no volumetric 'sm' (found {sorted(map(str, ds.data_vars))}); an ACTIVE product in percent "
                   "of saturation cannot be ingested as CCI COMBINED.", "pass ESA CCI SM COMBINED files (m3 m-3).")
    t = iso(ds["time"].values[0])
    if t != day_:
        return bad(f"the file name says {day_} but its time variable says {t}.",
                   "rename the file to its day or re-download it.")
    if ds.sizes["lat"] != lat.size or ds.sizes["lon"] != lon.size:
        return bad("the file does not come on the 0.25° grid of the region.", "pass ESA CCI SM L3S files.")
    sm = ds["sm"].values
    with np.errstate(invalid="ignore"):
        if np.nanmax(sm, initial=0.0) > 1.0 + 1e-6 or np.nanmin(sm, initial=0.0) < -1e-6:
            return bad(f"'sm' values {np.nanmin(sm):g}…{np.nanmax(sm):g} are outside 0–1 m3 m-3.",
                       "pass ESA CCI SM COMBINED (volumetric) files.")
    product = str(ds.attrs.get("product", "")).upper()
    if product and product not in ("COMBINED", "UNKNOWN"):
        log.warning("%s: product %s, not COMBINED", path, product)
    return None


@dataclasses.dataclass(frozen=True)
class CoarseChunkWrite:
    """Write pass: one whole output chunk (``time``/``rows``/``cols``) = stored values + staged days."""

    url: str
    so: dict
    staging_url: str
    names: tuple[str, ...]            # time-dependent variables
    static_names: tuple[str, ...]     # static variables written with this chunk (first time block)
    time: slice
    rows: slice
    cols: slice
    pairs: tuple[tuple[int, int], ...]  # (time position in the store, position in the staging array)
    fresh: bool                       # a new store: nothing stored to keep
    fills: dict                       # name -> (fill value, dtype)

    @property
    def key(self) -> str:
        return f"t{self.time.start}-r{self.rows.start}-c{self.cols.start}"


def write_coarse_chunk(task: CoarseChunkWrite) -> None:
    """Task, write pass of the 0.25° cubes: one whole output chunk = stored values + staged days."""
    t0, t1 = task.time.start, task.time.stop
    shape = (t1 - t0, task.rows.stop - task.rows.start, task.cols.stop - task.cols.start)
    region = {"time": task.time, "lat": task.rows, "lon": task.cols}
    fills = task.fills
    if task.fresh:
        base = {nm: np.full(shape, fills[nm][0], dtype=fills[nm][1]) for nm in task.names}
    else:
        ex = store.open_dataset(task.url, task.so, consolidated=False)
        base = {nm: np.array(ex[nm].isel(region).values, dtype=fills[nm][1]) for nm in task.names}
    stg = store.open_dataset(task.staging_url, task.so, consolidated=False)
    if task.pairs:
        at = [a - t0 for a, _ in task.pairs]
        sp = [s for _, s in task.pairs]
        sub = stg[list(task.names)].isel(day=sp, lat=task.rows, lon=task.cols)
        for nm in task.names:
            base[nm][at] = sub[nm].values
    block = xr.Dataset({nm: (("time", "lat", "lon"), base[nm]) for nm in task.names})
    for nm in task.static_names:
        block[nm] = (("lat", "lon"), np.asarray(stg[nm].isel(lat=task.rows, lon=task.cols).values))
    store.write_region(task.url, block, region, task.so)


#: most output chunks one write task handles (a 4096-day chunk of the three CCI variables at the
#: default 16 x 16 cells is ~10 MB; the budget usually binds first)
MAX_CHUNKS_PER_WRITE = 256


def group_chunks(regions: list[tuple[slice, slice, slice]], bytes_per_cell_day: int, budget: int,
                 max_chunks: int = MAX_CHUNKS_PER_WRITE) -> list[tuple[slice, slice, slice]]:
    """Whole output chunks merged into rectangles one write task handles: neighbouring chunks of one
    time block, first along a row of chunks, then whole rows of chunks, while the rectangle's
    stored + staged values (twice its cell-days x ``bytes_per_cell_day`` / cells) fit ``budget`` and it
    holds at most ``max_chunks`` chunks. The chunks written are the same (a rectangle is a union of
    whole chunks, each encoded on its own): only the number of tasks, store opens and xarray writes
    falls — one per chunk cost ~80 ms each, 650 s for a global 2-day ingest of 8,100 chunks.
    ``bytes_per_cell_day``: bytes of one cell-day of all variables times the cells of one chunk
    (``itemsizes x cy x cx``)."""
    out: list[tuple[slice, slice, slice]] = []
    # 1. runs along the columns of one (time block, row band)
    rows_of: list[list[tuple[slice, slice, slice]]] = []
    for ts, rs, cs in regions:
        cur = rows_of[-1] if rows_of else None
        if cur and cur[-1][0] == ts and cur[-1][1] == rs:
            cur.append((ts, rs, cs))
        else:
            rows_of.append([(ts, rs, cs)])

    def cost(ts: slice, n_chunks: int) -> int:
        return 2 * (ts.stop - ts.start) * bytes_per_cell_day * n_chunks

    runs: list[tuple[slice, slice, slice, int]] = []  # (ts, rs, cs, chunks)
    for row in rows_of:
        start, n = 0, 0
        for i, (ts, rs, _cs) in enumerate(row):
            if n and (cost(ts, n + 1) > budget or n + 1 > max_chunks):
                runs.append((ts, rs, slice(row[start][2].start, row[i - 1][2].stop), n))
                start, n = i, 0
            n += 1
        ts, rs, _ = row[-1]
        runs.append((ts, rs, slice(row[start][2].start, row[-1][2].stop), n))
    # 2. whole row bands stacked while they fit (same time block and the same column span)
    out_n: list[int] = []
    for ts, rs, cs, n in runs:
        if out:
            pts, prs, pcs = out[-1]
            pn = out_n[-1]
            if (pts == ts and pcs == cs and prs.stop == rs.start and cost(ts, pn + n) <= budget
                    and pn + n <= max_chunks):
                out[-1] = (ts, slice(prs.start, rs.stop), cs)
                out_n[-1] = pn + n
                continue
        out.append((ts, rs, cs))
        out_n.append(n)
    return out


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------
class CoarseJob:
    """``inputs/cci.zarr`` or ``inputs/era5.zarr`` (an :class:`~.job.IngestJob`; units: days)."""

    def __init__(self, ctx: IngestContext, kind: str):
        self.ctx, self.kind = ctx, kind
        self.store_name = f"inputs/{kind}.zarr"
        self.url = ctx.cfg.store.url("inputs", f"{kind}.zarr")
        self.index_store = ctx.index(self.store_name)
        self.tvars = CCI_VARS if kind == "cci" else ERA5_VARS
        self.svars = () if kind == "cci" else ERA5_STATIC
        self.spec = (ctx.cfg.inputs.cci if kind == "cci" else ctx.cfg.inputs.era5) or ""  # set: the job exists
        self.pattern: str = display(self.spec if isinstance(self.spec, str) else ", ".join(self.spec))
        self.opts = input_options(ctx.cfg)
        self.lsm = ctx.cfg.inputs.era5_lsm if kind == "era5" else None
        self.problems: list[Sm1kmError] = []
        self.action: str | None = None
        self.time_repair = False  # the stored time coordinate is corrupt: rewrite it
        self.axis = np.array([], dtype="datetime64[D]")
        self.todo: list[str] = []
        self.changed: set[str] = set()
        self.static_todo = False

    def counts(self) -> UnitCounts:
        return UnitCounts(total=len(self.axis), written=len(self.todo) if self.action else 0)

    # -- plan ---------------------------------------------------------------------------------
    def plan(self) -> None:
        ctx = self.ctx
        lat, lon = coord_arrays(ctx.region, None)
        files = glob_files(self.spec, self.kind, ctx.cfg)
        hashed = files + ([self.lsm] if self.lsm else [])
        self.sha = hash_files(ctx, hashed, self.problems)
        if self.problems:
            return
        found = open_existing(ctx, self.url, self.index_store, lat, lon, {v.name for v in self.tvars + self.svars},
                              self.problems)
        if found is None:
            return
        ds, self.rebuild = found
        self.exists = ds is not None
        index = None if (ds is None or self.rebuild) else self.index_store.read()
        self.index = index or self.index_store.empty()
        self.axis, stored = time_axis(ctx, ds, self.url, self.problems, self.rebuild)
        if ds is not None and not self.rebuild:
            enc = ds[self.tvars[0].name].encoding
            self.chunks = tuple(int(c) for c in enc.get("chunks") or enc.get("preferred_chunks", {}).values())
        else:
            sc = ctx.cfg.fusion.space_chunk
            self.chunks = (COARSE_TIME_CHUNK, min(sc, lat.size), min(sc, lon.size))
        self.stored = stored
        lo, hi = self.axis[0], self.axis[-1]
        self.day_file = self._day_files(files, lo, hi)  # (on a duplicate the first file stays: reported)
        # classify the days of the axis
        lsm_changed = False
        if self.lsm:
            lsm_changed = self.index["static"].get("lsm_sha256") not in (None, self.sha[self.lsm])
        if lsm_changed:
            log.warning("%s: the land-sea mask file changed since the last ingest: every day is re-read", self.url)
        missing = []
        for d in map(iso, self.axis):
            f = self.day_file.get(d)
            ent = self.index["days"].get(d)
            if ent is None or lsm_changed:
                if f is None:
                    missing.append(d)
                else:
                    self.todo.append(d)
                    if ent is not None:
                        self.changed.add(d)
            elif f is not None and self.sha[f] != self.index["files"].get(ent[0]):
                self.todo.append(d)
                self.changed.add(d)
        if missing:
            shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
            self.problems.append(InputError(
                self.pattern, f"no {self.kind.upper()} file for {len(missing)} day(s) of the period: {shown}.",
                "download the missing days, or shorten the period in the config."))
        fresh = ds is None or self.rebuild
        self.static_todo = bool(self.svars) and (fresh or lsm_changed or not self.index["static"])
        grows = stored is not None and len(self.axis) > len(stored)
        self.time_repair = not fresh and time_repair_needed(ds)
        self.action = "create" if fresh else ("update" if (self.todo or grows or self.time_repair) else None)
        log.info("%s: %s (%d day(s) to read, %d changed)", self.store_name, self.action or "up to date",
                 len(self.todo), len(self.changed))

    def _day_files(self, files: list[str], lo, hi) -> dict[str, str]:
        """day -> file, for the days of ``[lo, hi]``."""
        day_file: dict[str, str] = {}
        versions: dict[tuple[str, str], str] = {}
        if self.kind == "cci":
            from sm1km.storage.readers import parse_cci_filename

            for f in files:
                info = parse_cci_filename(basename(f))
                if not info:
                    self.problems.append(InputError(
                        display(f), "no ESA CCI SM / C3S SM file name (…-YYYYMMDD000000-fv… or …-DAILY-YYYYMMDD000000-"
                           "TCDR-v…): cannot tell its day.", "keep the original ESA CCI SM / C3S SM file names."))
                    continue
                if info["frequency"] != "DAILY":
                    self.problems.append(InputError(
                        display(f), f"a {info['service']} {info['frequency']} file (period means); the pipeline needs "
                           "daily values.", "pass the DAILY product files only (…-COMBINED-DAILY-…)."))
                    continue
                versions.setdefault((info["service"], info["version"]), f)
                self._add_day(day_file, iso(info["date"]), f, lo, hi)
            if len(versions) > 1:
                (s1, v1), (s2, v2) = sorted(versions)[:2]
                self.problems.append(InputError(
                    display(versions[(s2, v2)]), f"the CCI glob mixes product versions ({s1} v{v1}, e.g. "
                    f"{basename(versions[(s1, v1)])}, and {s2} v{v2}); one record must come from one version.",
                    "point inputs.cci at the files of one product version (TCDR and ICDR of one C3S version mix "
                    "fine)."))
            return day_file
        r = self.ctx.region
        probe = grid.Region(r.row0, r.row0 + 1, r.col0, r.col0 + 1)
        scan, known = [], {}
        for f in files:
            name = basename(f)
            if self.index["files"].get(name) == self.sha.get(f) and name in self.index["file_days"]:
                known[f] = self.index["file_days"][name]
            else:
                scan.append(Era5ScanTask(f, probe, self.lsm, self.opts))
        res = run_units(self.ctx, scan_era5_file, scan, "era5-scan")
        self.problems.extend(task_errors(res))
        for t, r_ in zip(scan, res):
            if not isinstance(r_, Sm1kmError):
                known[t.path] = r_
        self.file_days = {basename(f): d for f, d in known.items()}
        for f in files:
            for d in known.get(f, []):
                self._add_day(day_file, d, f, lo, hi)
        return day_file

    def _add_day(self, day_file, d, f, lo, hi):
        if not (lo <= day(d) <= hi):
            return
        if d in day_file and day_file[d] != f:
            self.problems.append(InputError(display(f), f"duplicate day {d}: also in {basename(day_file[d])}.",
                                            "keep one file per day in the input glob (e.g. one product version)."))
            return
        day_file[d] = f

    # -- stage --------------------------------------------------------------------------------
    def stage(self) -> None:
        if not self.todo:
            return
        ctx = self.ctx
        lat, lon = coord_arrays(ctx.region, None)
        ct, cy, cx = self.chunks
        bpp = sum(np.dtype(v.dtype).itemsize for v in self.tvars) + 4
        plan = plan_staging(len(self.todo), lat.size, lon.size, cy, cx, bpp, ctx.budget, COARSE_BATCH_DAYS)
        self.staging_url = store.join(ctx.staging_root, f"{self.kind}.zarr")
        # staging chunk = one row of output chunks of a read task's band (the band is whole rows of
        # chunks, or whole chunks of one row): a read task fills whole staging chunks, a write task
        # (whole rows of chunks, or a run along one) reads whole ones; per output chunk, the global
        # 2-day ingest wrote, and removed, 20,000 staging files (50 s of unlink alone)
        sy, sx = min(cy, lat.size), min(plan.band_cols, lon.size)
        tpl, enc = template(None, lat, lon, (), self.svars if self.static_todo else (), None, (sy, sx), {})
        for v in self.tvars:
            staging_var(tpl, enc, v.name, v.dtype, (len(self.todo), lat.size, lon.size),
                        (plan.batch_days, sy, sx))
        store.create_template(self.staging_url, tpl, enc, ctx.so)
        tasks = []
        for t in plan.tasks:
            days = self.todo[t.days]
            files = [self.day_file[d] for d in days] if self.kind == "cci" else sorted({self.day_file[d] for d in days})
            tasks.append(CoarseReadTask(self.kind, self.staging_url, ctx.so, tuple(days), tuple(files),
                                        ctx.band_region(t.rows, t.cols), t.days.start, t.rows, t.cols, (cy, cx),
                                        self.lsm, self.static_todo and t.days.start == 0, self.opts))
        res = run_units(ctx, read_coarse_band, tasks, f"{self.kind}-read")
        self.problems.extend(task_errors(res))
        incomplete: set[str | None] = {None for r in res if isinstance(r, Sm1kmError)}
        self.digests: dict[str, int] = {}
        static = 0
        n_valid: dict[str, int] = {}
        for r in succeeded(res):
            incomplete.update(r.failed_days)
            for d, v in r.digests.items():
                self.digests[d] = (self.digests.get(d, 0) + v) % DIGEST_MOD
            for d, v in r.n_valid.items():
                n_valid[d] = n_valid.get(d, 0) + v
            static = (static + sum(r.static.values())) % DIGEST_MOD
        self.static_digest = hex_digest(static) if self.static_todo else None
        empty = [d for d in self.todo if n_valid.get(d, 0) == 0]
        if empty:
            log.warning("%s: %d day(s) without any valid value inside the region (kept as gaps): %s",
                        self.store_name, len(empty), ", ".join(empty[:5]))
        for d in sorted(self.changed):
            old = self.index["days"][d]
            if d in incomplete or d not in self.digests or old[1] == hex_digest(self.digests[d]):
                continue
            if ctx.overwrite:
                log.warning("%s: day %s differs from the stored one: overwriting (--overwrite)", self.store_name, d)
                continue
            self.problems.append(InputError(
                display(self.day_file[d]), f"day {d} differs from what {self.store_name} holds (ingested from {old[0]}); "
                                  "stored data are not replaced silently.",
                "pass --overwrite to replace the stored day, or restore the original file."))
        old_static = self.index["static"].get("digest")
        if self.static_todo and not self.problems and old_static and old_static != self.static_digest \
                and self.action != "create" and not ctx.overwrite:
            self.problems.append(InputError(self.lsm or self.pattern,
                                            f"the land fraction differs from what {self.store_name} holds.",
                                            "pass --overwrite to replace it, or restore the original mask."))

    # -- write --------------------------------------------------------------------------------
    def write(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        lat, lon = coord_arrays(ctx.region, None)
        ct, cy, cx = self.chunks
        fresh = self.action == "create"
        days = self.axis
        if fresh:
            tpl, enc = template(days, lat, lon, self.tvars, self.svars, self.chunks, (cy, cx), {})
            store.create_template(self.url, tpl, enc, ctx.so, overwrite=self.exists)
            store.Ledger(ctx.cfg.store.root, self.store_name, ctx.so).clear()
        else:
            if self.time_repair and self.stored is not None:
                rewrite_time(self.url, ctx.so, self.stored)
            if self.stored is not None and len(days) > len(self.stored):
                grow_time_axis(self.url, ctx.so, days)
        pos = {d: i for i, d in enumerate(map(iso, days))}
        staged_pos = {d: k for k, d in enumerate(self.todo)}
        regions = output_chunks([pos[d] for d in self.todo], len(days), ct, lat.size, cy, lon.size, cx)
        per_day = sum(np.dtype(v.dtype).itemsize for v in self.tvars) * cy * cx
        regions = group_chunks(regions, per_day, ctx.budget)
        names = tuple(v.name for v in self.tvars)
        static_names = tuple(v.name for v in self.svars)
        fills = {v.name: (v.fill, v.dtype) for v in self.tvars}
        tasks = []
        for ts, rs, cs in regions:
            pairs = tuple((pos[d], staged_pos[d]) for d in self.todo if ts.start <= pos[d] < ts.stop)
            statics = static_names if (self.static_todo and ts.start == 0) else ()
            tasks.append(CoarseChunkWrite(self.url, ctx.so, self.staging_url, names, statics, ts, rs, cs, pairs,
                                          fresh, fills))
        if self.static_todo and not any(t.static_names for t in tasks):
            # land fraction changed but the first time block has nothing staged: write it with that block
            for rs in chunk_slices(lat.size, cy):
                for cs in chunk_slices(lon.size, cx):
                    tasks.append(CoarseChunkWrite(self.url, ctx.so, self.staging_url, names, static_names,
                                                  slice(0, min(ct, len(days))), rs, cs, (), fresh, fills))
        raise_problems(task_errors(run_units(ctx, write_coarse_chunk, tasks, f"{self.kind}-write")))
        self._write_index_and_attrs(fresh, days, cy, cx)

    def _write_index_and_attrs(self, fresh: bool, days, cy: int, cx: int) -> None:
        ctx = self.ctx
        idx = self.index
        for d in self.todo:
            f = self.day_file[d]
            idx["days"][d] = [basename(f), hex_digest(self.digests[d])]
            idx["files"][basename(f)] = self.sha[f]
        if self.kind == "era5":
            idx["file_days"].update(self.file_days)
            if self.static_todo:
                idx["static"] = {"digest": self.static_digest,
                                 "lsm_sha256": self.sha.get(self.lsm) if self.lsm else None}
        else:
            for d in self.todo:
                idx["file_days"][basename(self.day_file[d])] = [d]
        idx["digest_tile"] = [cy, cx]
        # what the store holds (storage.deps reads these): a day's digest is its decoded content
        idx["stored_days"] = {d: ent[1] for d, ent in sorted(idx["days"].items())}
        idx["stored_static"] = digest_of({"land_fraction": idx["static"].get("digest")} if self.svars else {})
        inputs = [{"name": n, "sha256": s} for n, s in sorted(idx["files"].items())]
        if self.lsm:
            inputs.append({"name": basename(self.lsm), "sha256": self.sha[self.lsm], "role": "land-sea mask"})
        note = (f"created {iso(days[0])}..{iso(days[-1])}" if fresh else
                f"{len(self.todo)} day(s) written, axis {iso(days[0])}..{iso(days[-1])}")
        title = ("ESA CCI SM COMBINED daily, 0.25 degree, region of the run" if self.kind == "cci" else
                 "ERA5 swvl1 daily mean on the ESA CCI 0.25 degree cell centres, region of the run")
        attrs = final_attrs(ctx.cfg, self.url, ctx.so, fresh, title,
                            "Input cube of sm1km, chunked long in time (whole series per pixel) for the fusion.",
                            inputs, days, note, {"sm1km_stage": "ingest"})
        store.finalize(self.url, ctx.so, attrs)
        # the index last: it marks the store complete (a run killed before this rebuilds the store)
        self.index_store.write(idx)
        log.info("%s: written (%s)", self.url, note)


__all__ = ["CoarseJob", "CCI_VARS", "ERA5_VARS", "ERA5_STATIC", "COARSE_BATCH_DAYS", "CoarseReadTask", "CoarseRead",
           "read_coarse_band", "CoarseChunkWrite", "write_coarse_chunk", "Era5ScanTask", "scan_era5_file",
           "validate_cci"]
