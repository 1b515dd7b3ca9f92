"""``sm1km ingest``: raw inputs → Zarr v3 cubes (``inputs/*.zarr``) — validated, idempotent, appendable.

Stores (docs/architecture.md): ``inputs/cci.zarr`` and ``inputs/era5.zarr`` on the 0.25° cells of
the snapped region, chunked ``(4096 days, space_chunk, space_chunk)`` — a whole series per pixel in
one chunk; ``inputs/predictors.zarr`` on the 1 km grid, chunked like the master shards
``(time_block_days, tile px, tile px)``, static predictors plus the daily LST day/night and NDVI
**gap-filled in time** (:mod:`sm1km.core.gapfill`; ``observed_flags`` says which values were observed);
``inputs/stations.zarr`` (station, time), one chunk, with ``in_region``.

How it works (docs/ingest.md has the long version):

1. **prepare** (no writes): list the files, sha256 every file (one dask task per file), compare
   with the per-store *ingest index* ``_ledger/<store>/ingest-index.json`` (day → file, sha256 and
   a content digest). Days whose file is unchanged are skipped without decoding; new or changed
   days are *to do*. Duplicate days, days without a file (CCI/ERA5), a period starting before the
   store are errors.
2. **stage** (writes only under ``<root>/_staging/``): one task per *batch of days × spatial band*
   (:mod:`sm1km.core.rechunk_plan`) reads and validates every file to do and writes it into a staging
   array chunked like the output in space. A day whose content differs from what the store holds
   is an :class:`InputError` unless ``overwrite``. Any problem → the staging area is removed and
   one InputError names the file(s): **the stores are untouched**.
3. **write**: create the template (or grow the time axis), then one task per output chunk reads
   its piece of the staging array and writes that whole chunk (coarse cubes: existing chunk +
   staged days; predictors: gap-fill of the chunk's window with a halo). Then the index is
   updated and :func:`store.finalize` writes attributes and consolidated metadata last.

Re-running with the same files changes nothing (byte-identical stores); a longer period appends
days; memory per task does not depend on the length of the period.
"""

from __future__ import annotations

import dataclasses
import functools
import glob as _glob
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from sm1km.core import grid
from sm1km.storage import store
from sm1km.config import RunConfig
from sm1km.errors import ConfigError, InputError, ModelError, Sm1kmError, StoreError
from sm1km.core.gapfill import gapfill_time
from sm1km.core.rechunk_plan import block_window, blocks_touched, chunk_slices, hull, output_chunks, plan_staging
from sm1km.runtime.client import locked_cli, with_lock_arguments
from sm1km.runtime.client import add_config_argument, load_config, stage_client

log = logging.getLogger(__name__)

#: time chunk of the 0.25° cubes: the whole period up to ~11 years in one chunk; fixed so that
#: appending days rewrites the same chunk instead of changing the chunk grid
COARSE_TIME_CHUNK = 4096
#: reach of an LST/NDVI observation in days (gap-fill window halo; NDVI composites are 16 days apart)
GAP_HALO_DAYS = 48
#: days per batch of the read pass for the 0.25° cubes
COARSE_BATCH_DAYS = 32
INDEX_VERSION = 1
TIME_UNITS = "days since 1970-01-01"
_EPOCH = np.datetime64("1970-01-01", "D")
_SM_STD = "volume_fraction_of_condensed_water_in_soil"
_DIGEST_MOD = 1 << 128

_LATLON_ATTRS = {
    "lat": {"standard_name": "latitude", "long_name": "latitude of cell centre", "units": "degrees_north", "axis": "Y"},
    "lon": {"standard_name": "longitude", "long_name": "longitude of cell centre", "units": "degrees_east", "axis": "X"},
}
_TIME_ATTRS = {"standard_name": "time", "long_name": "day (UTC)", "axis": "T"}


@dataclasses.dataclass(frozen=True)
class _Var:
    name: str
    dtype: str
    attrs: dict
    fill: Any = np.nan  # value of "nothing" in memory (also the zarr fill for floats)


CCI_VARS = (
    _Var("sm", "float32", {"standard_name": _SM_STD, "long_name": "ESA CCI SM COMBINED volumetric soil moisture",
                           "units": "m3 m-3", "valid_min": 0.0, "valid_max": 1.0}),
    _Var("flag", "int16", {"long_name": "ESA CCI SM flag (bit field as in the product version)",
                           "flag_masks": [1, 2, 4, 8, 16, 32, 64],
                           "flag_meanings": "snow_or_frozen dense_vegetation no_model_convergence "
                                            "beyond_physical_bounds weight_below_threshold all_datasets_unreliable "
                                            "barren_ground_advisory",
                           "comment": "-1 = no flag (missing in the file)"}, -1),
    _Var("sm_uncertainty", "float32", {"standard_name": f"{_SM_STD} standard_error",
                                       "long_name": "ESA CCI SM uncertainty", "units": "m3 m-3"}),
)
ERA5_VARS = (
    _Var("swvl1", "float32", {"standard_name": _SM_STD, "long_name": "ERA5 volumetric soil water layer 1 (0-7 cm), "
                              "daily mean on the CCI cell centres", "units": "m3 m-3", "cell_methods": "time: mean"}),
)
ERA5_STATIC = (_Var("land_fraction", "float32", {"standard_name": "land_area_fraction", "units": "1",
                                                 "long_name": "land fraction from the ERA5 land-sea mask"}),)


@dataclasses.dataclass(frozen=True)
class _Dynamic:
    key: str            # config key under inputs.predictors
    var: str            # store variable
    bit: int            # bit in observed_flags
    valid: tuple        # plausible physical range (InputError outside)
    attrs: dict
    date_offset_days: int = 0   # days added to the file-name date (0: a composite sits on its first day)
    integer_scale: Any = "auto"


DYNAMIC = (
    _Dynamic("lst_day", "lst_day_k", 1, (150.0, 400.0),
             {"standard_name": "surface_temperature", "long_name": "land surface temperature, daytime (gap-filled)",
              "units": "K"}),
    _Dynamic("lst_night", "lst_night_k", 2, (150.0, 400.0),
             {"standard_name": "surface_temperature", "long_name": "land surface temperature, night (gap-filled)",
              "units": "K"}),
    _Dynamic("ndvi", "ndvi", 4, (-1.0 - 1e-6, 1.0 + 1e-6),
             {"long_name": "normalized difference vegetation index, daily from 16-day composites (gap-filled)",
              "units": "1"}, date_offset_days=0, integer_scale=1e-4),
)


@dataclasses.dataclass(frozen=True)
class _Static:
    key: str
    var: str
    dtype: str
    resampling: str
    valid: tuple
    attrs: dict


STATIC = (
    _Static("elevation", "elevation_m", "float32", "average", (-500.0, 9000.0),
            {"standard_name": "surface_altitude", "long_name": "elevation above sea level", "units": "m"}),
    _Static("slope", "slope_deg", "float32", "average", (0.0, 90.0), {"long_name": "terrain slope", "units": "degree"}),
    _Static("twi", "twi", "float32", "average", (-100.0, 100.0),
            {"long_name": "topographic wetness index ln(a / tan(beta))", "units": "1"}),
    _Static("clay", "clay_frac", "float32", "average", (0.0, 1.0 + 1e-6),
            {"long_name": "clay mass fraction of the topsoil", "units": "1"}),
    _Static("sand", "sand_frac", "float32", "average", (0.0, 1.0 + 1e-6),
            {"long_name": "sand mass fraction of the topsoil", "units": "1"}),
    _Static("land_cover", "land_cover", "int16", "mode", (0.0, 32767.0),
            {"long_name": "land cover class code (as in the input raster)", "units": "1",
             "comment": "-1 = no data"}),
)
OBSERVED_FLAGS = "observed_flags"


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _iso(d) -> str:
    return str(np.datetime64(d, "D"))


def _day(s) -> np.datetime64:
    return np.datetime64(s, "D")


def _axis(a0, a1) -> np.ndarray:
    return np.arange(_day(a0), _day(a1) + np.timedelta64(1, "D"), dtype="datetime64[D]")


def _digest(key: str, arr: np.ndarray) -> int:
    """Content digest of one array piece (NaN-canonical), as an int to be summed mod 2**128."""
    a = np.ascontiguousarray(arr)
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.nan, a).astype(a.dtype)
    h = hashlib.sha256(f"{key}|{a.dtype.str}|{a.shape}|".encode() + a.tobytes()).digest()
    return int.from_bytes(h[:16], "big")


def _chunk_digests(key: str, arr2d: np.ndarray, row0: int, col0: int, cy: int, cx: int) -> int:
    """Sum of digests of the store-chunk tiles of a 2-D band (independent of how bands are cut)."""
    total = 0
    ny, nx = arr2d.shape
    for r in range(0, ny, cy):
        for c in range(0, nx, cx):
            total += _digest(f"{key}@{row0 + r},{col0 + c}", arr2d[r:r + cy, c:c + cx])
    return total % _DIGEST_MOD


def _hex(d: int) -> str:
    return f"{d % _DIGEST_MOD:032x}"


def _problem(exc: Sm1kmError) -> dict:
    return {"kind": type(exc).__name__, "where": exc.where, "problem": exc.problem, "fix": exc.fix}


def _guarded(fn: Callable) -> Callable:
    """Tasks return Sm1kmErrors as records (our exceptions do not survive pickling across workers)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Sm1kmError as exc:
            return {"problems": [_problem(exc)]}
    return wrapper


def _raise(problems: list[dict]) -> None:
    if not problems:
        return
    for p in problems:
        log.error("ingest: %s: %s", p["where"], p["problem"])
    first = problems[0]
    cls = {"InputError": InputError, "StoreError": StoreError, "ConfigError": ConfigError,
           "ModelError": ModelError}.get(first["kind"], InputError)
    more = ""
    if len(problems) > 1:
        shown = "; ".join(f"{Path(p['where']).name}: {p['problem']}" for p in problems[1:6])
        more = f" ({len(problems) - 1} more problem(s): {shown}{'; …' if len(problems) > 6 else ''})"
    raise cls(first["where"], first["problem"] + more, first["fix"])


def _run_tasks(client, fn: Callable, arglist: list[tuple], label: str) -> list:
    """Run ``fn(*args)`` for every args tuple: on the dask client (one task each) or in-process."""
    if not arglist:
        return []
    log.info("ingest: %d %s task(s)", len(arglist), label)
    if client is None:
        return [fn(*a) for a in arglist]
    tok = uuid.uuid4().hex[:8]
    futures = [client.submit(fn, *a, pure=False, key=f"ingest-{label}-{tok}-{i}") for i, a in enumerate(arglist)]
    try:
        return client.gather(futures)
    finally:
        for f in futures:
            f.release()


def _collect(results: list[dict]) -> list[dict]:
    return [p for r in results for p in (r.get("problems") or [])]


@_guarded
def _sha256_task(path: str) -> dict:
    try:
        return {"path": path, "sha256": store.sha256_file(path)}
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise InputError(path, f"cannot read the file ({exc}).", "check the path and permissions.") from None


def _glob_files(pattern: str, what: str) -> list[str]:
    if _glob.has_magic(pattern):
        files = sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
    else:
        files = [pattern] if os.path.isfile(pattern) else []
    if not files:
        raise InputError(pattern, f"no {what} files match this path/pattern.",
                         f"check inputs.{what} in the config (paths are relative to the config file).")
    return files


def _hash_files(client, files: list[str], problems: list) -> dict[str, str]:
    res = _run_tasks(client, _sha256_task, [(f,) for f in files], "sha256")
    problems.extend(_collect(res))
    return {r["path"]: r["sha256"] for r in res if "sha256" in r}


def _index_url(root: str, store_name: str) -> str:
    return store.join(root, "_ledger", store_name, "ingest-index.json")


def _read_json(url: str, so) -> dict | None:
    try:
        return store.read_json(url, so)
    except (ValueError, OSError) as exc:
        raise StoreError(url, f"the ingest index is unreadable ({exc}).",
                         "remove it and re-run `sm1km ingest --overwrite`.") from None


def _write_json(url: str, so, obj: dict) -> None:
    store.write_json(url, obj, so, separators=(",", ":"))


def _empty_index(store_name: str) -> dict:
    return {"version": INDEX_VERSION, "store": store_name, "files": {}, "file_days": {}, "days": {}, "static": {}}


def _memory_budget(cfg: RunConfig) -> int:
    """Bytes one task may hold: a quarter of a worker thread's share of the memory limit."""
    from dask.utils import parse_bytes

    try:
        limit = parse_bytes(cfg.cluster.memory_limit)
    except (ValueError, TypeError):
        limit = 4 << 30
    return max(1 << 20, limit // max(cfg.cluster.threads_per_worker, 1) // 4)


def _coord_arrays(region: grid.Region, factor: int | None):
    lat, lon = grid.region_coords(region, factor)
    return lat.astype(np.float64), lon.astype(np.float64)


def _time_coord(days: np.ndarray) -> np.ndarray:
    return np.asarray(days, dtype="datetime64[D]").astype("datetime64[ns]")


def _template(days: np.ndarray | None, lat, lon, tvars, svars, chunks_t, chunks_s, attrs) -> tuple[xr.Dataset, dict]:
    """Lazy (dask) template Dataset + encoding: time-dependent ``tvars``, static ``svars``."""
    import dask.array as dsa

    coords = {"lat": ("lat", lat, _LATLON_ATTRS["lat"]), "lon": ("lon", lon, _LATLON_ATTRS["lon"])}
    enc: dict[str, dict] = {"lat": {"_FillValue": None}, "lon": {"_FillValue": None}}
    data = {}
    if days is not None:
        coords["time"] = ("time", _time_coord(days), _TIME_ATTRS)
        enc["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int32",
                       "chunks": (max(COARSE_TIME_CHUNK, chunks_t[0]),)}
    for v in tvars:
        shape = (len(days), lat.size, lon.size)
        data[v.name] = (("time", "lat", "lon"), dsa.zeros(shape, dtype=v.dtype, chunks=chunks_t), dict(v.attrs))
        enc[v.name] = {"chunks": chunks_t, "dtype": v.dtype,
                       "_FillValue": np.dtype(v.dtype).type(np.nan) if np.dtype(v.dtype).kind == "f" else None}
    for v in svars:
        data[v.name] = (("lat", "lon"), dsa.zeros((lat.size, lon.size), dtype=v.dtype, chunks=chunks_s), dict(v.attrs))
        enc[v.name] = {"chunks": chunks_s, "dtype": v.dtype,
                       "_FillValue": np.dtype(v.dtype).type(np.nan) if np.dtype(v.dtype).kind == "f" else None}
    return xr.Dataset(data, coords=coords, attrs=dict(attrs)), enc


def _grow_time_axis(url: str, so, days: np.ndarray) -> None:
    """Grow every time-dependent array to ``len(days)`` and write the new time coordinate values."""
    g = store.open_group(url, so, mode="r+")
    n = len(days)
    tarr = g["time"]
    if tarr.attrs.get("units") != TIME_UNITS:
        raise StoreError(url, f"time units {tarr.attrs.get('units')!r} are not {TIME_UNITS!r}; this store was not "
                              "written by sm1km ingest.", "remove it, or ingest into another store.root.")
    for name, arr in g.arrays():
        dims = tuple(arr.metadata.dimension_names or ())
        if dims and dims[0] == "time" and arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))
    tarr[:] = (np.asarray(days, dtype="datetime64[D]") - _EPOCH).astype(np.int32)


def _update_attrs(cfg: RunConfig, url: str, so, fresh: bool, title: str, summary: str, inputs: list[dict],
                  days: np.ndarray | None, note: str, extra: dict | None = None) -> dict:
    """Final attributes: provenance (kept from creation on updates), history line, coverage."""
    new = store.provenance_attrs(cfg, title=title, summary=summary, inputs=inputs, extra=extra)
    if not fresh:
        old = dict(store.open_group(url, so, mode="r").attrs)
        new["date_created"] = old.get("date_created", new["date_created"])
        hist = old.get("history", "")
        new["history"] = (hist + "\n" if hist else "") + f"{store.now_iso()} sm1km ingest: {note}"
    else:
        new["history"] = f"{store.now_iso()} sm1km ingest: {note}"
    if days is not None and len(days):
        new.update(store.coverage_attrs(_time_coord(days)))
    else:
        new["last_updated"] = store.now_iso()
    return new


@dataclasses.dataclass
class _Ctx:
    cfg: RunConfig
    so: dict
    region: grid.Region
    factor: int
    overwrite: bool
    staging_root: str
    budget: int
    client: Any = None

    def band_region(self, rows: slice, cols: slice, factor: int | None = None) -> grid.Region:
        f = factor or 1
        return grid.Region(self.region.row0 + rows.start // f, self.region.row0 + rows.stop // f,
                           self.region.col0 + cols.start // f, self.region.col0 + cols.stop // f)


def _existing_store(url: str, so) -> xr.Dataset | None:
    if not store.exists(url, so):
        return None
    return store.open_dataset(url, so, consolidated=False)


def _unfinished(ds: xr.Dataset | None, index: dict | None, url: str) -> bool:
    """True for a store without its ingest index: the remains of a first ingest that was interrupted
    (the index is written last), to be created again from scratch."""
    if ds is None or index is not None:
        return False
    log.warning("%s: no ingest index: an earlier ingest was interrupted while creating this store; "
                "creating it again", url)
    return True


def _check_layout(ds: xr.Dataset, url: str, lat, lon, names: set[str]) -> str | None:
    """Why an existing store cannot be appended to (None if it can)."""
    if ds.sizes.get("lat") != lat.size or ds.sizes.get("lon") != lon.size or \
            not np.allclose(ds["lat"].values, lat, atol=1e-9) or not np.allclose(ds["lon"].values, lon, atol=1e-9):
        return "it covers another region or grid"
    have = set(map(str, ds.data_vars))
    if have != names:
        return f"its variables differ ({sorted(have)} vs {sorted(names)})"
    return None


def _starts_before(ctx: _Ctx, ds: xr.Dataset | None) -> bool:
    """True if the period starts before the stored time axis (only a rebuild can do that)."""
    if ds is None or "time" not in ds.coords or ds.sizes.get("time", 0) == 0:
        return False
    return _day(ctx.cfg.period.start) < np.asarray(ds["time"].values, dtype="datetime64[D]")[0]


def _time_axis(ctx: _Ctx, ds: xr.Dataset | None, url: str, problems: list, rebuild: bool):
    """(axis days, stored days or None): the period, extended to the stored start/end on appends."""
    p = ctx.cfg.period
    if ds is None or rebuild or "time" not in ds.coords:
        return _axis(p.start, p.end), None
    stored = np.asarray(ds["time"].values, dtype="datetime64[D]")
    if stored.size == 0:
        return _axis(p.start, p.end), None
    s0, s1 = stored[0], stored[-1]
    if _day(p.start) < s0:
        problems.append({"kind": "StoreError", "where": url,
                         "problem": f"the store starts on {_iso(s0)} but the period starts earlier ({p.start}); "
                                    "days can only be appended at the end.",
                         "fix": "pass --overwrite to rebuild the store for the new period, or start the period "
                                f"on {_iso(s0)} or later."})
    return _axis(s0, max(s1, _day(p.end))), stored


# --------------------------------------------------------------------------------------------
# 0.25° cubes: CCI and ERA5
# --------------------------------------------------------------------------------------------
@_guarded
def _scan_era5_task(path: str, probe: tuple, lsm: str | None) -> dict:
    """Days held by one ERA5 file (read on one probe cell)."""
    from sm1km.storage.readers import read_era5

    ds = read_era5([path], region=grid.Region(*probe), lsm_path=lsm)
    return {"path": path, "days": [_iso(t) for t in ds["time"].values]}


@_guarded
def _read_coarse_task(kind: str, staging_url: str, so: dict, days: list[str], files: list[str], band: tuple,
                      day0: int, rows: tuple, cols: tuple, chunk: tuple, lsm: str | None, want_static: bool) -> dict:
    """Read pass, 0.25° cubes: read ``days`` of the band, validate, write the staging region."""
    region = grid.Region(*band)
    lat, lon = _coord_arrays(region, None)
    n = len(days)
    names = [v.name for v in (CCI_VARS if kind == "cci" else ERA5_VARS)]
    out = {nm: np.full((n, region.n_rows, region.n_cols), (CCI_VARS[1].fill if nm == "flag" else np.nan),
                       dtype=("int16" if nm == "flag" else "float32")) for nm in names}
    problems, digests, n_valid, static = [], {}, {}, {}
    if kind == "cci":
        from sm1km.storage.readers import read_cci_day

        for i, (d, path) in enumerate(zip(days, files)):
            try:
                ds = read_cci_day(path, region)
            except InputError as exc:
                problems.append({**_problem(exc), "day": d})
                continue
            err = _validate_cci(ds, path, d, lat, lon)
            if err:
                problems.append({**err, "day": d})
                continue
            out["sm"][i] = ds["sm"].values[0]
            out["flag"][i] = ds["flag"].values[0]
            if "sm_uncertainty" in ds:
                out["sm_uncertainty"][i] = ds["sm_uncertainty"].values[0]
    else:
        from sm1km.storage.readers import read_era5

        try:
            ds = read_era5(files, region=region, lsm_path=lsm)
        except InputError as exc:
            return {"problems": [_problem(exc)]}
        have = {_iso(t): k for k, t in enumerate(ds["time"].values)}
        land = ds["land_fraction"].values
        vals = ds["swvl1"].values
        for i, d in enumerate(days):
            if d not in have:
                problems.append({"kind": "InputError", "day": d, "where": ", ".join(Path(f).name for f in files),
                                 "problem": f"day {d} is not in these ERA5 files.",
                                 "fix": "download complete UTC days of ERA5 swvl1."})
                continue
            day_vals = vals[have[d]]
            if np.nanmax(np.nan_to_num(land, nan=0.0), initial=0.0) > 0 and not np.isfinite(day_vals).any():
                problems.append({"kind": "InputError", "day": d, "where": ", ".join(Path(f).name for f in files),
                                 "problem": f"swvl1 is missing on every land cell of the region on {d} (all-missing day).",
                                 "fix": "re-download the ERA5 file(s) for that day."})
                continue
            out["swvl1"][i] = day_vals
        if want_static:
            static["land_fraction"] = _chunk_digests("land_fraction", land.astype(np.float32), rows[0], cols[0], *chunk)
            lf = land.astype(np.float32)
    bad_days = {p_.get("day") for p_ in problems}
    for i, d in enumerate(days):
        if d in bad_days:
            continue
        digests[d] = sum(_chunk_digests(nm, out[nm][i], rows[0], cols[0], *chunk) for nm in names) % _DIGEST_MOD
        n_valid[d] = int(np.isfinite(out[names[0]][i]).sum())
    if problems:  # digests of the good days still serve the "differs" check
        return {"problems": problems, "digests": digests, "n_valid": n_valid, "static": {}}
    block = xr.Dataset({nm: (("day", "lat", "lon"), out[nm]) for nm in names})
    region_w = {"day": slice(day0, day0 + n), "lat": slice(*rows), "lon": slice(*cols)}
    if kind == "era5" and want_static:
        block["land_fraction"] = (("lat", "lon"), lf)
    store.write_region(staging_url, block, region_w, so)
    return {"digests": digests, "n_valid": n_valid, "static": static}


def _validate_cci(ds: xr.Dataset, path: str, day: str, lat, lon) -> dict | None:
    def bad(problem, fix):
        return {"kind": "InputError", "where": path, "problem": problem, "fix": fix}

    if "sm" not in ds:
        return bad(f"no volumetric 'sm' (found {sorted(map(str, ds.data_vars))}); an ACTIVE product in percent "
                   "of saturation cannot be ingested as CCI COMBINED.", "pass ESA CCI SM COMBINED files (m3 m-3).")
    t = _iso(ds["time"].values[0])
    if t != day:
        return bad(f"the file name says {day} but its time variable says {t}.",
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


@_guarded
def _write_coarse_chunk(url: str, so: dict, staging_url: str, names: list[str], static_names: list[str],
                        ts: tuple, rs: tuple, cs: tuple, pairs: list[tuple[int, int]], fresh: bool,
                        fills: dict) -> dict:
    """Write pass, 0.25° cubes: one whole output chunk = stored values + staged days."""
    t0, t1 = ts
    shape = (t1 - t0, rs[1] - rs[0], cs[1] - cs[0])
    region = {"time": slice(*ts), "lat": slice(*rs), "lon": slice(*cs)}
    if fresh:
        base = {nm: np.full(shape, fills[nm][0], dtype=fills[nm][1]) for nm in names}
    else:
        ex = store.open_dataset(url, so, consolidated=False)
        base = {nm: np.array(ex[nm].isel(region).values, dtype=fills[nm][1]) for nm in names}
    stg = store.open_dataset(staging_url, so, consolidated=False)
    if pairs:
        at = [a - t0 for a, _ in pairs]
        sp = [s for _, s in pairs]
        sub = stg[names].isel(day=sp, lat=slice(*rs), lon=slice(*cs))
        for nm in names:
            base[nm][at] = sub[nm].values
    block = xr.Dataset({nm: (("time", "lat", "lon"), base[nm]) for nm in names})
    for nm in static_names:
        block[nm] = (("lat", "lon"), np.asarray(stg[nm].isel(lat=slice(*rs), lon=slice(*cs)).values))
    store.write_region(url, block, region, so)
    return {}


class _CoarseJob:
    """``inputs/cci.zarr`` or ``inputs/era5.zarr``."""

    def __init__(self, ctx: _Ctx, kind: str):
        self.ctx, self.kind = ctx, kind
        self.store_name = f"inputs/{kind}.zarr"
        self.url = ctx.cfg.store.url("inputs", f"{kind}.zarr")
        self.tvars = CCI_VARS if kind == "cci" else ERA5_VARS
        self.svars = () if kind == "cci" else ERA5_STATIC
        self.pattern = ctx.cfg.inputs.cci if kind == "cci" else ctx.cfg.inputs.era5
        self.lsm = ctx.cfg.inputs.era5_lsm if kind == "era5" else None
        self.problems: list[dict] = []
        self.action: str | None = None
        self.todo: list[str] = []
        self.changed: set[str] = set()
        self.static_todo = False

    # -- prepare ------------------------------------------------------------------------------
    def prepare(self) -> None:
        ctx = self.ctx
        lat, lon = _coord_arrays(ctx.region, None)
        files = _glob_files(self.pattern, self.kind)
        hashed = files + ([self.lsm] if self.lsm else [])
        self.sha = _hash_files(ctx.client, hashed, self.problems)
        if self.problems:
            return
        ds = _existing_store(self.url, ctx.so)
        self.rebuild = False
        if ds is not None:
            why = _check_layout(ds, self.url, lat, lon, {v.name for v in self.tvars + self.svars})
            if why:
                if not ctx.overwrite:
                    self.problems.append({"kind": "StoreError", "where": self.url,
                                          "problem": f"an existing store cannot take this ingest: {why}.",
                                          "fix": "pass --overwrite to rebuild it, or use another store.root."})
                    return
                self.rebuild = True
        if ctx.overwrite and _starts_before(ctx, ds):
            log.warning("%s: the period starts before the store: rebuilding it (--overwrite)", self.url)
            self.rebuild = True
        if not self.rebuild and _unfinished(ds, _read_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so)
                                            if ds is not None else None, self.url):
            self.rebuild = True
        self.exists = ds is not None
        index = None if (ds is None or self.rebuild) else _read_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so)
        self.index = index or _empty_index(self.store_name)
        self.axis, stored = _time_axis(ctx, ds, self.url, self.problems, self.rebuild)
        if ds is not None and not self.rebuild:
            enc = ds[self.tvars[0].name].encoding
            self.chunks = tuple(int(c) for c in enc.get("chunks") or enc.get("preferred_chunks", {}).values())
        else:
            sc = ctx.cfg.fusion.space_chunk
            self.chunks = (COARSE_TIME_CHUNK, min(sc, lat.size), min(sc, lon.size))
        self.stored = stored
        lo, hi = self.axis[0], self.axis[-1]
        # day -> file
        day_file: dict[str, str] = {}
        if self.kind == "cci":
            from sm1km.storage.readers import parse_cci_filename

            for f in files:
                info = parse_cci_filename(f)
                if not info:
                    self.problems.append({"kind": "InputError", "where": f,
                                          "problem": "no ESA CCI SM file name (…-YYYYMMDD000000-fv…): cannot tell its day.",
                                          "fix": "keep the original ESA CCI SM file names."})
                    continue
                self._add_day(day_file, _iso(info["date"]), f, lo, hi)
        else:
            probe = (ctx.region.row0, ctx.region.row0 + 1, ctx.region.col0, ctx.region.col0 + 1)
            scan, known = [], {}
            for f in files:
                name = Path(f).name
                if self.index["files"].get(name) == self.sha.get(f) and name in self.index["file_days"]:
                    known[f] = self.index["file_days"][name]
                else:
                    scan.append((f, probe, self.lsm))
            res = _run_tasks(ctx.client, _scan_era5_task, scan, "era5-scan")
            self.problems.extend(_collect(res))
            for r in res:
                if "days" in r:
                    known[r["path"]] = r["days"]
            self.file_days = {Path(f).name: d for f, d in known.items()}
            for f in files:
                for d in known.get(f, []):
                    self._add_day(day_file, d, f, lo, hi)
        self.day_file = day_file  # (on a duplicate the first file stays: problems are reported below)
        # classify the days of the axis
        lsm_changed = bool(self.lsm) and self.index["static"].get("lsm_sha256") not in (None, self.sha[self.lsm])
        if lsm_changed:
            log.warning("%s: the land-sea mask file changed since the last ingest: every day is re-read", self.url)
        missing = []
        for d in map(_iso, self.axis):
            f = day_file.get(d)
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
            self.problems.append({"kind": "InputError", "where": self.pattern,
                                  "problem": f"no {self.kind.upper()} file for {len(missing)} day(s) of the period: {shown}.",
                                  "fix": "download the missing days, or shorten the period in the config."})
        fresh = ds is None or self.rebuild
        self.static_todo = bool(self.svars) and (fresh or lsm_changed or not self.index["static"])
        grows = stored is not None and len(self.axis) > len(stored)
        self.action = "create" if fresh else ("update" if (self.todo or grows) else None)
        log.info("%s: %s (%d day(s) to read, %d changed)", self.store_name, self.action or "up to date",
                 len(self.todo), len(self.changed))

    def _add_day(self, day_file, d, f, lo, hi):
        if not (lo <= _day(d) <= hi):
            return
        if d in day_file and day_file[d] != f:
            self.problems.append({"kind": "InputError", "where": f,
                                  "problem": f"duplicate day {d}: also in {Path(day_file[d]).name}.",
                                  "fix": "keep one file per day in the input glob (e.g. one product version)."})
            return
        day_file[d] = f

    # -- stage --------------------------------------------------------------------------------
    def stage(self) -> None:
        if not self.todo:
            return
        ctx = self.ctx
        lat, lon = _coord_arrays(ctx.region, None)
        ct, cy, cx = self.chunks
        bpp = sum(np.dtype(v.dtype).itemsize for v in self.tvars) + 4
        plan = plan_staging(len(self.todo), lat.size, lon.size, cy, cx, bpp, ctx.budget, COARSE_BATCH_DAYS)
        self.staging_url = store.join(ctx.staging_root, f"{self.kind}.zarr")
        tpl, enc = _template(None, lat, lon, (), self.svars if self.static_todo else (), None, (cy, cx), {})
        import dask.array as dsa

        for v in self.tvars:
            tpl[v.name] = (("day", "lat", "lon"), dsa.zeros((len(self.todo), lat.size, lon.size), dtype=v.dtype,
                                                            chunks=plan.chunks))
            enc[v.name] = {"chunks": plan.chunks, "dtype": v.dtype,
                           "_FillValue": np.dtype(v.dtype).type(np.nan) if np.dtype(v.dtype).kind == "f" else None}
        store.create_template(self.staging_url, tpl, enc, ctx.so)
        args = []
        for t in plan.tasks:
            days = self.todo[t.days]
            if self.kind == "cci":
                files = [self.day_file[d] for d in days]
            else:
                files = sorted({self.day_file[d] for d in days})
            band = ctx.band_region(t.rows, t.cols)
            args.append((self.kind, self.staging_url, ctx.so, days, files,
                         (band.row0, band.row1, band.col0, band.col1), t.days.start, (t.rows.start, t.rows.stop),
                         (t.cols.start, t.cols.stop), (cy, cx), self.lsm, self.static_todo and t.days.start == 0))
        res = _run_tasks(ctx.client, _read_coarse_task, args, f"{self.kind}-read")
        self.problems.extend(_collect(res))
        self.digests: dict[str, int] = {}
        static = 0
        n_valid: dict[str, int] = {}
        incomplete = {p_.get("day") for p_ in self.problems}
        for r in res:
            for d, v in r.get("digests", {}).items():
                self.digests[d] = (self.digests.get(d, 0) + v) % _DIGEST_MOD
            for d, v in r.get("n_valid", {}).items():
                n_valid[d] = n_valid.get(d, 0) + v
            static = (static + sum(r.get("static", {}).values())) % _DIGEST_MOD
        self.static_digest = _hex(static) if self.static_todo else None
        empty = [d for d in self.todo if n_valid.get(d, 0) == 0]
        if empty:
            log.warning("%s: %d day(s) without any valid value inside the region (kept as gaps): %s",
                        self.store_name, len(empty), ", ".join(empty[:5]))
        for d in sorted(self.changed):
            old = self.index["days"][d]
            if d in incomplete or d not in self.digests or old[1] == _hex(self.digests[d]):
                continue
            if ctx.overwrite:
                log.warning("%s: day %s differs from the stored one: overwriting (--overwrite)", self.store_name, d)
                continue
            self.problems.append({"kind": "InputError", "where": self.day_file[d],
                                  "problem": f"day {d} differs from what {self.store_name} holds (ingested from "
                                             f"{old[0]}); stored data are not replaced silently.",
                                  "fix": "pass --overwrite to replace the stored day, or restore the original file."})
        old_static = self.index["static"].get("digest")
        if self.static_todo and not self.problems and old_static and old_static != self.static_digest and self.action != "create":
            if not ctx.overwrite:
                self.problems.append({"kind": "InputError", "where": self.lsm or self.pattern,
                                      "problem": f"the land fraction differs from what {self.store_name} holds.",
                                      "fix": "pass --overwrite to replace it, or restore the original mask."})

    # -- write --------------------------------------------------------------------------------
    def write(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        lat, lon = _coord_arrays(ctx.region, None)
        ct, cy, cx = self.chunks
        fresh = self.action == "create"
        days = self.axis
        if fresh:
            tpl, enc = _template(days, lat, lon, self.tvars, self.svars, self.chunks, (cy, cx), {})
            store.create_template(self.url, tpl, enc, ctx.so, overwrite=self.exists)
            store.Ledger(ctx.cfg.store.root, self.store_name, ctx.so).clear()
        elif self.stored is not None and len(days) > len(self.stored):
            _grow_time_axis(self.url, ctx.so, days)
        pos = {d: i for i, d in enumerate(map(_iso, days))}
        staged_pos = {d: k for k, d in enumerate(self.todo)}
        regions = output_chunks([pos[d] for d in self.todo], len(days), ct, lat.size, cy, lon.size, cx)
        names = [v.name for v in self.tvars]
        fills = {v.name: (v.fill, v.dtype) for v in self.tvars}
        args = []
        for ts, rs, cs in regions:
            pairs = [(pos[d], staged_pos[d]) for d in self.todo if ts.start <= pos[d] < ts.stop]
            statics = [v.name for v in self.svars] if (self.static_todo and ts.start == 0) else []
            args.append((self.url, ctx.so, self.staging_url, names, statics, (ts.start, ts.stop), (rs.start, rs.stop),
                         (cs.start, cs.stop), pairs, fresh, fills))
        if self.static_todo and not any(a[4] for a in args):
            # land fraction changed but the first time block has nothing staged: write it with that block
            for rs in chunk_slices(lat.size, cy):
                for cs in chunk_slices(lon.size, cx):
                    args.append((self.url, ctx.so, self.staging_url, names, [v.name for v in self.svars],
                                 (0, min(ct, len(days))), (rs.start, rs.stop), (cs.start, cs.stop), [], fresh, fills))
        _raise(_collect(_run_tasks(ctx.client, _write_coarse_chunk, args, f"{self.kind}-write")))
        # index
        idx = self.index
        for d in self.todo:
            f = self.day_file[d]
            idx["days"][d] = [Path(f).name, _hex(self.digests[d])]
            idx["files"][Path(f).name] = self.sha[f]
        if self.kind == "era5":
            idx["file_days"].update(self.file_days)
            if self.static_todo:
                idx["static"] = {"digest": self.static_digest,
                                 "lsm_sha256": self.sha.get(self.lsm) if self.lsm else None}
        else:
            for d in self.todo:
                idx["file_days"][Path(self.day_file[d]).name] = [d]
        idx["digest_tile"] = [cy, cx]
        inputs = [{"name": n, "sha256": s} for n, s in sorted(idx["files"].items())]
        if self.lsm:
            inputs.append({"name": Path(self.lsm).name, "sha256": self.sha[self.lsm], "role": "land-sea mask"})
        note = (f"created {_iso(days[0])}..{_iso(days[-1])}" if fresh else
                f"{len(self.todo)} day(s) written, axis {_iso(days[0])}..{_iso(days[-1])}")
        title = ("ESA CCI SM COMBINED daily, 0.25 degree, region of the run" if self.kind == "cci" else
                 "ERA5 swvl1 daily mean on the ESA CCI 0.25 degree cell centres, region of the run")
        attrs = _update_attrs(ctx.cfg, self.url, ctx.so, fresh, title,
                              "Input cube of sm1km, chunked long in time (whole series per pixel) for the fusion.",
                              inputs, days, note, {"sm1km_stage": "ingest"})
        store.finalize(self.url, ctx.so, attrs)
        # the index last: it marks the store complete (a run killed before this rebuilds the store)
        _write_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so, idx)
        log.info("%s: written (%s)", self.url, note)


# --------------------------------------------------------------------------------------------
# 1 km predictors
# --------------------------------------------------------------------------------------------
def _raster_units(path: str, units: str) -> str:
    """Units of band 1: the band's unit type, else a ``units`` metadata tag (band, then dataset)."""
    if units:
        return units
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return ds.tags(1).get("units") or ds.tags().get("units") or ""
    except Exception:  # unreadable files were reported by read_raster already
        return ""


def _convert_fraction(values: np.ndarray, units: str, path: str) -> np.ndarray:
    """Soil texture to a 0-1 fraction: percent (/100) and g/kg (/1000) are converted."""
    u = (units or "").strip().lower().replace(" ", "")
    if u in ("percent", "%", "pct"):
        return values / np.float32(100.0)
    if u in ("g/kg", "gkg-1", "g/kg-1", "permille"):
        return values / np.float32(1000.0)
    return values


def _one_raster_env(fn: Callable) -> Callable:
    """Run a task inside one ``rasterio.Env``: rasterio otherwise builds a new (AWS) session for
    every file it opens, which costs far more than reading a small GeoTIFF."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import rasterio

        with rasterio.Env():
            return fn(*args, **kwargs)
    return wrapper


@_guarded
@_one_raster_env
def _read_predictor_task(staging_url: str, so: dict, store_url: str, kinds: list[str], sources: list[dict],
                         band: tuple, factor: int, day0: int, rows: tuple, cols: tuple, chunk: tuple) -> dict:
    """Read pass, dynamic predictors: per staged day and kind, a file (validated), the stored
    observations (halo days already ingested) or nothing (a gap)."""
    from sm1km.storage.readers import read_raster

    region = grid.Region(*band)
    lat, lon = _coord_arrays(region, factor)
    n = len(sources)
    out = {k: np.full((n, lat.size, lon.size), np.nan, dtype=np.float32) for k in kinds}
    spec = {d.key: d for d in DYNAMIC}
    problems, digests = [], {}
    from_store = [(i, k) for i, src in enumerate(sources) for k in kinds if src[k][0] == "store"]
    if from_store:
        ex = store.open_dataset(store_url, so, consolidated=False)
        pos = sorted({sources[i]["pos"] for i, _ in from_store})
        sel = {"time": slice(pos[0], pos[-1] + 1), "lat": slice(*rows), "lon": slice(*cols)}
        flags = np.asarray(ex[OBSERVED_FLAGS].isel(sel).values)
        cache = {}
        for i, k in from_store:
            if k not in cache:
                cache[k] = np.asarray(ex[spec[k].var].isel(sel).values, dtype=np.float32)
            j = sources[i]["pos"] - pos[0]
            out[k][i] = np.where(flags[j] & spec[k].bit, cache[k][j], np.nan)
    for i, src in enumerate(sources):
        for k in kinds:
            if src[k][0] != "file":
                continue
            path = src[k][1]
            try:
                da = read_raster(path, region, factor, "average", integer_scale=spec[k].integer_scale)
            except InputError as exc:
                problems.append({**_problem(exc), "day": src["day"], "what": k})
                continue
            err = _validate_raster(da, path, lat, lon, spec[k].valid, k)
            if err:
                problems.append({**err, "day": src["day"], "what": k})
                continue
            out[k][i] = da.values
            digests.setdefault(k, {})[src["day"]] = _chunk_digests(k, out[k][i], rows[0], cols[0], *chunk)
    if problems:
        return {"problems": problems, "digests": digests}
    block = xr.Dataset({k: (("day", "lat", "lon"), out[k]) for k in kinds})
    store.write_region(staging_url, block, {"day": slice(day0, day0 + n), "lat": slice(*rows), "lon": slice(*cols)}, so)
    return {"digests": digests}


def _validate_raster(da: xr.DataArray, path: str, lat, lon, valid: tuple, what: str) -> dict | None:
    if da.shape != (lat.size, lon.size) or not (np.allclose(da["lat"].values, lat) and np.allclose(da["lon"].values, lon)):
        return {"kind": "InputError", "where": path, "problem": "the raster did not resample onto the fine grid.",
                "fix": "pass a georeferenced single-band GeoTIFF."}
    v = da.values
    fin = np.isfinite(v)
    if fin.any():
        lo, hi = float(v[fin].min()), float(v[fin].max())
        if lo < valid[0] or hi > valid[1]:
            return {"kind": "InputError", "where": path,
                    "problem": f"{what} values {lo:g}…{hi:g} are outside the plausible range {valid[0]:g}…{valid[1]:g} "
                               f"(units '{da.attrs.get('units', '')}').",
                    "fix": f"check that this is the {what} raster and its units (see docs/ingest.md)."}
    return None


@_guarded
@_one_raster_env
def _read_static_task(staging_url: str, so: dict, key: str, path: str, band: tuple, factor: int, rows: tuple,
                      cols: tuple, chunk: tuple) -> dict:
    """Read pass, one static predictor over one band."""
    from sm1km.storage.readers import read_raster

    spec = {s.key: s for s in STATIC}[key]
    region = grid.Region(*band)
    lat, lon = _coord_arrays(region, factor)
    da = read_raster(path, region, factor, spec.resampling)
    vals = da.values.astype(np.float32)
    if key in ("clay", "sand"):
        units = _raster_units(path, str(da.attrs.get("units", "")))
        vals = _convert_fraction(vals, units, path)
        da = da.copy(data=vals)
        da.attrs["units"] = units
    err = _validate_raster(da, path, lat, lon, spec.valid, key)
    if err:
        return {"problems": [err]}
    if spec.dtype == "int16":
        vals = np.where(np.isfinite(vals), np.round(vals), -1).astype(np.int16)
    block = xr.Dataset({spec.var: (("lat", "lon"), vals)})
    store.write_region(staging_url, block, {"lat": slice(*rows), "lon": slice(*cols)}, so)
    return {"digest": _chunk_digests(spec.var, vals, rows[0], cols[0], *chunk), "n_valid": int(np.isfinite(da.values).sum())}


@_guarded
def _write_predictor_block(url: str, so: dict, staging_url: str, kinds: list[str], block: tuple, window: tuple,
                           h0: int, rows: tuple, cols: tuple, halo: int) -> dict:
    """Write pass, dynamic predictors: gap-fill one (time block, tile) from its haloed window."""
    spec = {d.key: d for d in DYNAMIC}
    stg = store.open_dataset(staging_url, so, consolidated=False)
    sel = {"day": slice(window[0] - h0, window[1] - h0), "lat": slice(*rows), "lon": slice(*cols)}
    b0, b1 = block[0] - window[0], block[1] - window[0]
    out = {}
    flags = None
    for k in kinds:
        raw = np.asarray(stg[k].isel(sel).values, dtype=np.float32)
        filled = gapfill_time(raw, max_gap_days=halo)[b0:b1]
        obs = np.isfinite(raw[b0:b1])
        flags = (np.zeros(obs.shape, np.uint8) if flags is None else flags) | (obs.astype(np.uint8) * spec[k].bit)
        out[spec[k].var] = (("time", "lat", "lon"), filled)
    out[OBSERVED_FLAGS] = (("time", "lat", "lon"), flags)
    store.write_region(url, xr.Dataset(out), {"time": slice(*block), "lat": slice(*rows), "lon": slice(*cols)}, so)
    return {}


@_guarded
def _write_static_tile(url: str, so: dict, staging_url: str, names: list[str], rows: tuple, cols: tuple) -> dict:
    stg = store.open_dataset(staging_url, so, consolidated=False)
    block = xr.Dataset({nm: (("lat", "lon"), np.asarray(stg[nm].isel(lat=slice(*rows), lon=slice(*cols)).values))
                        for nm in names})
    store.write_region(url, block, {"lat": slice(*rows), "lon": slice(*cols)}, so)
    return {}


class _PredictorJob:
    """``inputs/predictors.zarr``: static rasters + gap-filled daily LST day/night and NDVI."""

    store_name = "inputs/predictors.zarr"

    def __init__(self, ctx: _Ctx):
        self.ctx = ctx
        self.url = ctx.cfg.store.url("inputs", "predictors.zarr")
        pc = ctx.cfg.inputs.predictors
        self.dyn = [d for d in DYNAMIC if getattr(pc, d.key)]
        self.sta = [s for s in STATIC if getattr(pc, s.key)]
        missing = [d.key for d in DYNAMIC if not getattr(pc, d.key)] + [s.key for s in STATIC if not getattr(pc, s.key)]
        if missing:
            log.warning("predictors not configured (left out of %s): %s", self.store_name, ", ".join(missing))
        self.problems: list[dict] = []
        self.action = None
        self.blocks: list[int] = []
        self.static_todo: list[str] = []

    def _vars(self):
        tv = [_Var(d.var, "float32", {**d.attrs, "ancillary_variables": OBSERVED_FLAGS}) for d in self.dyn]
        if self.dyn:
            tv.append(_Var(OBSERVED_FLAGS, "uint8", {
                "long_name": "which predictor values are observations (not gap-filled)",
                "flag_masks": [d.bit for d in self.dyn],
                "flag_meanings": " ".join(f"{d.var}_observed" for d in self.dyn)}, 0))
        sv = [_Var(s.var, s.dtype, dict(s.attrs), -1 if s.dtype == "int16" else np.nan) for s in self.sta]
        return tv, sv

    def prepare(self) -> None:
        ctx = self.ctx
        pc = ctx.cfg.inputs.predictors
        lat, lon = _coord_arrays(ctx.region, ctx.factor)
        tile = ctx.cfg.grid.tile_cells * ctx.factor
        files: dict[str, list[str]] = {}
        for d in self.dyn:
            try:
                files[d.key] = _glob_files(getattr(pc, d.key), f"predictors.{d.key}")
            except InputError as exc:
                self.problems.append(_problem(exc))
        static_files = {}
        for s in self.sta:
            try:
                fs_ = _glob_files(getattr(pc, s.key), f"predictors.{s.key}")
            except InputError as exc:
                self.problems.append(_problem(exc))
                continue
            if len(fs_) != 1:
                self.problems.append({"kind": "InputError", "where": getattr(pc, s.key),
                                      "problem": f"{len(fs_)} files match a static predictor; expected one.",
                                      "fix": "point the config at a single (mosaicked) raster."})
                continue
            static_files[s.key] = fs_[0]
        if self.problems:
            return
        allf = sorted({f for v in files.values() for f in v} | set(static_files.values()))
        self.sha = _hash_files(ctx.client, allf, self.problems)
        if self.problems:
            return
        tvars, svars = self._vars()
        ds = _existing_store(self.url, ctx.so)
        self.rebuild = False
        if ds is not None:
            why = _check_layout(ds, self.url, lat, lon, {v.name for v in tvars + svars})
            if why:
                if not ctx.overwrite:
                    self.problems.append({"kind": "StoreError", "where": self.url,
                                          "problem": f"an existing store cannot take this ingest: {why}.",
                                          "fix": "pass --overwrite to rebuild it, or use another store.root."})
                    return
                self.rebuild = True
        if ctx.overwrite and _starts_before(ctx, ds):
            log.warning("%s: the period starts before the store: rebuilding it (--overwrite)", self.url)
            self.rebuild = True
        if not self.rebuild and _unfinished(ds, _read_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so)
                                            if ds is not None else None, self.url):
            self.rebuild = True
        self.exists = ds is not None
        fresh = ds is None or self.rebuild
        index = None if fresh else _read_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so)
        self.index = index or _empty_index(self.store_name)
        self.axis, stored = _time_axis(ctx, ds, self.url, self.problems, self.rebuild)
        self.stored = stored
        if not fresh and self.dyn:
            enc = ds[self.dyn[0].var].encoding
            self.chunks = tuple(int(c) for c in enc["chunks"])
        else:
            self.chunks = (ctx.cfg.grid.time_block_days, min(tile, lat.size), min(tile, lon.size))
        lo, hi = self.axis[0], self.axis[-1]
        from sm1km.storage.readers import raster_date

        self.day_file: dict[str, dict[str, str]] = {}
        for d in self.dyn:
            m: dict[str, str] = {}
            for f in files[d.key]:
                date = raster_date(f)
                if date is None:
                    self.problems.append({"kind": "InputError", "where": f,
                                          "problem": "no date (YYYYMMDD, YYYY-MM-DD, YYYY_DOY) in the file name of a daily predictor.",
                                          "fix": "name daily predictor files with their date, e.g. lst_day_20200401.tif."})
                    continue
                day = _iso(np.datetime64(date, "D") + np.timedelta64(d.date_offset_days, "D"))
                if not (lo <= _day(day) <= hi):
                    continue
                if day in m:
                    self.problems.append({"kind": "InputError", "where": f,
                                          "problem": f"duplicate day {day} for {d.key}: also {Path(m[day]).name}.",
                                          "fix": "keep one file per day (composite) in the input glob."})
                    continue
                m[day] = f
            if not m and not self.index["days"].get(d.key):
                self.problems.append({"kind": "InputError", "where": getattr(pc, d.key),
                                      "problem": f"no {d.key} file falls within the period {_iso(lo)}..{_iso(hi)}.",
                                      "fix": "check the glob and the dates in the file names."})
            self.day_file[d.key] = m
        if self.problems:
            return
        # classify days: todo = new day, newly arrived file, or changed file
        pos = {dd: i for i, dd in enumerate(map(_iso, self.axis))}
        self.todo: dict[str, set[str]] = {}
        self.changed: dict[str, set[str]] = {}
        changed_pos = set()
        for d in self.dyn:
            kd = self.index["days"].get(d.key, {})
            todo, changed = set(), set()
            for day in pos:
                f = self.day_file[d.key].get(day)
                ent = kd.get(day)
                if ent is None:
                    todo.add(day)
                elif f is not None and (ent[0] is None or self.sha[f] != self.index["files"].get(ent[0])):
                    todo.add(day)
                    if ent[0] is not None:
                        changed.add(day)
            self.todo[d.key], self.changed[d.key] = todo, changed
            changed_pos |= {pos[x] for x in todo}
        ct = self.chunks[0]
        self.blocks = blocks_touched(sorted(changed_pos), ct, GAP_HALO_DAYS, len(self.axis))
        windows = [block_window(b, ct, GAP_HALO_DAYS, len(self.axis)) for b in self.blocks]
        self.hull = hull(windows)
        for s in self.sta:
            ent = self.index["static"].get(s.key)
            f = static_files[s.key]
            if fresh or ent is None or ent[1] != self.sha[f]:
                self.static_todo.append(s.key)
        self.static_files = static_files
        grows = stored is not None and len(self.axis) > len(stored)
        if fresh:
            self.action = "create"
        elif self.blocks or self.static_todo or grows:
            self.action = "update"
        log.info("%s: %s (%d time block(s) to compute, static to read: %s)", self.store_name,
                 self.action or "up to date", len(self.blocks), ", ".join(self.static_todo) or "none")

    def stage(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        lat, lon = _coord_arrays(ctx.region, ctx.factor)
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
        spec_s = {s.key: s for s in STATIC}
        for key in self.static_todo:
            s = spec_s[key]
            tpl[s.var] = (("lat", "lon"), dsa.zeros((lat.size, lon.size), dtype=s.dtype, chunks=(cy, cx)))
            enc[s.var] = {"chunks": (cy, cx), "_FillValue": np.float32(np.nan) if s.dtype == "float32" else None}
        store.create_template(self.staging_url, tpl, enc, ctx.so)
        problems = self.problems
        # dynamic: every day of the hull, from a file, the store, or nothing
        res = []
        if n_st:
            kinds = [d.key for d in self.dyn]
            days = [_iso(x) for x in self.axis[self.hull]]
            sources = []
            for j, day in enumerate(days):
                src = {"day": day, "pos": self.hull.start + j}
                for d in self.dyn:
                    f = self.day_file[d.key].get(day)
                    ent = self.index["days"].get(d.key, {}).get(day)
                    if day in self.todo[d.key]:
                        src[d.key] = ("file", f) if f else ("none",)
                    elif not fresh and ent is not None and ent[0] is not None:
                        src[d.key] = ("store",)
                    else:
                        src[d.key] = ("none",)
                sources.append(src)
            args = []
            for t in plan.tasks:
                band = ctx.band_region(t.rows, t.cols, ctx.factor)
                args.append((self.staging_url, ctx.so, self.url, kinds, sources[t.days],
                             (band.row0, band.row1, band.col0, band.col1), ctx.factor, t.days.start,
                             (t.rows.start, t.rows.stop), (t.cols.start, t.cols.stop), (cy, cx)))
            res = _run_tasks(ctx.client, _read_predictor_task, args, "predictors-read")
            problems.extend(_collect(res))
        incomplete = {(p_.get("what"), p_.get("day")) for p_ in problems}
        # static: one task per (raster, band)
        splan = plan_staging(1, lat.size, lon.size, cy, cx, 8, ctx.budget, 1)
        sargs = []
        for key in self.static_todo:
            for t in splan.tasks:
                band = ctx.band_region(t.rows, t.cols, ctx.factor)
                sargs.append((self.staging_url, ctx.so, key, self.static_files[key],
                              (band.row0, band.row1, band.col0, band.col1), ctx.factor,
                              (t.rows.start, t.rows.stop), (t.cols.start, t.cols.stop), (cy, cx)))
        sres = _run_tasks(ctx.client, _read_static_task, sargs, "predictors-static")
        problems.extend(_collect(sres))
        # digests and the "differs" check (on every day that was read without a problem)
        self.digests: dict[str, dict[str, int]] = {}
        for r in res:
            for k, per in r.get("digests", {}).items():
                tgt = self.digests.setdefault(k, {})
                for day, v in per.items():
                    tgt[day] = (tgt.get(day, 0) + v) % _DIGEST_MOD
        self.static_digests: dict[str, int] = {}
        for a, r in zip(sargs, sres):
            if "digest" in r:
                self.static_digests[a[2]] = (self.static_digests.get(a[2], 0) + r["digest"]) % _DIGEST_MOD
            else:
                incomplete.add((a[2], "static"))
        for d in self.dyn:
            for day in sorted(self.changed[d.key]):
                old = self.index["days"][d.key][day]
                if (d.key, day) in incomplete or old[1] == _hex(self.digests.get(d.key, {}).get(day, 0)):
                    continue
                if ctx.overwrite:
                    log.warning("%s: %s on %s differs from the stored one: overwriting", self.store_name, d.key, day)
                    continue
                problems.append({"kind": "InputError", "where": self.day_file[d.key][day],
                                 "problem": f"{d.key} on {day} differs from what {self.store_name} holds (ingested from "
                                            f"{old[0]}); stored data are not replaced silently.",
                                 "fix": "pass --overwrite to replace it, or restore the original file."})
        for key in self.static_todo:
            old = self.index["static"].get(key)
            if (key, "static") in incomplete:
                continue
            if old and not fresh and old[2] != _hex(self.static_digests[key]) and not ctx.overwrite:
                problems.append({"kind": "InputError", "where": self.static_files[key],
                                 "problem": f"static predictor {key} differs from what {self.store_name} holds "
                                            f"(ingested from {old[0]}).",
                                 "fix": "pass --overwrite to replace it, or restore the original file."})

    def write(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        lat, lon = _coord_arrays(ctx.region, ctx.factor)
        ct, cy, cx = self.chunks
        fresh = self.action == "create"
        days = self.axis
        tvars, svars = self._vars()
        if fresh:
            tpl, enc = _template(days if self.dyn else None, lat, lon, tvars, svars, self.chunks, (cy, cx), {})
            store.create_template(self.url, tpl, enc, ctx.so, overwrite=self.exists)
        elif self.stored is not None and len(days) > len(self.stored):
            _grow_time_axis(self.url, ctx.so, days)
        kinds = [d.key for d in self.dyn]
        args = []
        for b in self.blocks:
            w = block_window(b, ct, GAP_HALO_DAYS, len(days))
            blk = (b * ct, min((b + 1) * ct, len(days)))
            for rs in chunk_slices(lat.size, cy):
                for cs in chunk_slices(lon.size, cx):
                    args.append((self.url, ctx.so, self.staging_url, kinds, blk, (w.start, w.stop), self.hull.start,
                                 (rs.start, rs.stop), (cs.start, cs.stop), GAP_HALO_DAYS))
        spec_s = {s.key: s for s in STATIC}
        sargs = []
        if self.static_todo:
            names = [spec_s[k].var for k in self.static_todo]
            for rs in chunk_slices(lat.size, cy):
                for cs in chunk_slices(lon.size, cx):
                    sargs.append((self.url, ctx.so, self.staging_url, names, (rs.start, rs.stop), (cs.start, cs.stop)))
        _raise(_collect(_run_tasks(ctx.client, _write_predictor_block, args, "predictors-write")))
        _raise(_collect(_run_tasks(ctx.client, _write_static_tile, sargs, "predictors-static-write")))
        idx = self.index
        for d in self.dyn:
            kd = idx["days"].setdefault(d.key, {})
            for day in sorted(self.todo[d.key]):
                f = self.day_file[d.key].get(day)
                if f is None:
                    kd[day] = [None, None]
                else:
                    kd[day] = [Path(f).name, _hex(self.digests.get(d.key, {}).get(day, 0))]
                    idx["files"][Path(f).name] = self.sha[f]
        for key in self.static_todo:
            f = self.static_files[key]
            idx["static"][key] = [Path(f).name, self.sha[f], _hex(self.static_digests[key])]
        idx["digest_tile"] = [cy, cx]
        inputs = [{"name": n, "sha256": s} for n, s in sorted(idx["files"].items())]
        inputs += [{"name": v[0], "sha256": v[1], "role": k} for k, v in sorted(idx["static"].items())]
        note = (f"created {_iso(days[0])}..{_iso(days[-1])}" if fresh else
                f"{len(self.blocks)} time block(s) recomputed, static: {', '.join(self.static_todo) or 'none'}, "
                f"axis {_iso(days[0])}..{_iso(days[-1])}")
        attrs = _update_attrs(ctx.cfg, self.url, ctx.so, fresh,
                              "sm1km 1 km predictors: static rasters and gap-filled daily LST day/night and NDVI",
                              "Dynamic predictors are gap-filled in time at ingest (linear interpolation between "
                              "observations, nearest at the ends, pixel/block mean fallback; reach "
                              f"{GAP_HALO_DAYS} days); observed_flags marks observed values.",
                              inputs, days if self.dyn else None, note,
                              {"sm1km_stage": "ingest", "gapfill_max_gap_days": GAP_HALO_DAYS,
                               "ndvi_composite_day_offset": DYNAMIC[2].date_offset_days,
                               "grid_factor": ctx.factor})
        store.finalize(self.url, ctx.so, attrs)
        _write_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so, idx)  # last: the store is complete
        log.info("%s: written (%s)", self.url, note)


# --------------------------------------------------------------------------------------------
# stations
# --------------------------------------------------------------------------------------------
def _ismn_files(source: str) -> list[str]:
    if _glob.has_magic(source):
        hits = sorted(p for p in _glob.glob(source, recursive=True) if os.path.isfile(p))
    elif os.path.isdir(source):
        hits = sorted(str(p) for p in Path(source).rglob("*") if p.is_file() and "python_metadata" not in p.parts)
    elif os.path.isfile(source):
        hits = [source]
    else:
        hits = []
    if not hits:
        raise InputError(source, "no ISMN files here.", "check inputs.ismn (a download folder, zip or glob).")
    return hits


def _station_arrays_equal(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """Stations of ``a`` whose overlapping days differ in ``b`` (or that ``b`` lacks)."""
    bad = []
    bst = {str(s): i for i, s in enumerate(b["station"].values)}
    common_t = np.intersect1d(a["time"].values, b["time"].values)
    ai = np.searchsorted(a["time"].values, common_t)
    bi = np.searchsorted(b["time"].values, common_t)
    for i, s in enumerate(map(str, a["station"].values)):
        j = bst.get(s)
        if j is None:
            bad.append(s)
            continue
        if not (np.array_equal(a["sm"].values[i, ai], b["sm"].values[j, bi], equal_nan=True)
                and np.array_equal(a["n_hours"].values[i, ai], b["n_hours"].values[j, bi])):
            bad.append(s)
    return bad


@_guarded
def _stage_stations(source: str, min_hours: int, axis: tuple, region: tuple, staging_url: str, url: str, so: dict,
                    compare: bool, overwrite: bool) -> dict:
    from sm1km.storage.readers import read_ismn

    ds = read_ismn(source, min_hours)
    days = _time_coord(_axis(*axis))
    ds = ds.reindex(time=days)
    ds["sm"] = ds["sm"].astype(np.float32)
    ds["n_hours"] = ds["n_hours"].fillna(0).astype(np.int16)
    reg = grid.Region(*region)
    b = reg.bbox
    lat, lon = ds["lat"].values, ds["lon"].values
    inside = (lat >= b.south) & (lat < b.north) & (lon >= b.west) & (lon < b.east)
    ds["in_region"] = ("station", inside, {"long_name": "station lies inside the region of the run"})
    ds["sm"].attrs = {"standard_name": _SM_STD, "long_name": "daily mean in-situ soil moisture (ISMN, flag G)",
                      "units": "m3 m-3", "comment": f"NaN if fewer than {min_hours} good hours in the UTC day"}
    ds["n_hours"].attrs = {"long_name": "hours with a good (flag G) value in the UTC day", "units": "1"}
    for c in ("lat", "lon"):
        ds[c].attrs = {k: v for k, v in _LATLON_ATTRS[c].items() if k != "axis"}
    for c in ("depth_from", "depth_to"):
        ds[c].attrs = {"units": "m", "long_name": f"sensor depth ({c.split('_')[1]})", "positive": "down"}
    ds["time"].attrs = dict(_TIME_ATTRS)
    # variable-length UTF-8 strings (fixed-length '<U' has no stable Zarr v3 data type)
    vstr = np.dtypes.StringDType()
    ds = ds.assign_coords({c: ("station", np.asarray(ds[c].values, dtype=vstr), ds[c].attrs)
                           for c in ("station", "network", "station_name", "sensor")})
    outside = [str(s) for s, ok in zip(ds["station"].values, inside) if not ok]
    skipped = ds.attrs.get("skipped", "[]")
    ds.attrs = {"ismn_skipped": skipped, "stations_outside_region": json.dumps(outside),
                "min_hours_per_day": int(min_hours)}
    problems = []
    if compare:
        old = store.open_dataset(url, so, consolidated=False).load()
        bad = _station_arrays_equal(old, ds)
        if bad and not overwrite:
            # a station usually goes missing because its file became unreadable: say which and why
            unreadable = [s_ for s_ in json.loads(skipped) if str(s_.get("reason", "")).startswith("unreadable")]
            why = "; ".join(f"{Path(s_['source']).name}: {s_['reason'].removeprefix('unreadable: ')}"
                            for s_ in unreadable[:3])
            problems.append({"kind": "InputError", "where": unreadable[0]["source"] if unreadable else source,
                             "problem": f"{len(bad)} station(s) differ from (or are missing in) what inputs/stations.zarr "
                                        f"holds: {', '.join(bad[:5])}{', …' if len(bad) > 5 else ''}."
                                        + (f" Unreadable ISMN file(s): {why}" if why else ""),
                             "fix": ("repair or restore the unreadable file(s); " if why else "")
                                    + "pass --overwrite to replace the stored stations, or restore the original ISMN files."})
    if problems:
        return {"problems": problems}
    digest = 0
    for name in ("sm", "n_hours", "lat", "lon", "in_region"):
        digest += _digest(name, np.asarray(ds[name].values))
    digest += _digest("station", np.array("\n".join(map(str, ds["station"].values)).encode()))
    enc = {v: {"_FillValue": None} for v in ("lat", "lon", "elevation", "depth_from", "depth_to")}
    enc["sm"] = {"_FillValue": np.float32(np.nan)}
    enc["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int32"}
    store.create_template(staging_url, ds, enc, so)  # numpy data: written now
    return {"digest": _hex(digest), "n": int(ds.sizes["station"]), "outside": outside}


@_guarded
def _write_stations(staging_url: str, url: str, so: dict, exists: bool, attrs: dict) -> dict:
    ds = store.open_dataset(staging_url, so, consolidated=False).load()
    enc = {v: {"_FillValue": None} for v in ("lat", "lon", "elevation", "depth_from", "depth_to") if v in ds.variables}
    enc["sm"] = {"_FillValue": np.float32(np.nan)}
    enc["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int32"}
    for v in ds.variables.values():
        v.encoding = {}
    ds.attrs = {**ds.attrs, **attrs}
    store.create_template(url, ds, enc, so, overwrite=exists)  # numpy data: written now
    return {}


class _StationJob:
    store_name = "inputs/stations.zarr"

    def __init__(self, ctx: _Ctx):
        self.ctx = ctx
        self.url = ctx.cfg.store.url("inputs", "stations.zarr")
        self.source = ctx.cfg.inputs.ismn
        self.problems: list[dict] = []
        self.action = None

    def prepare(self) -> None:
        ctx = self.ctx
        files = _ismn_files(self.source)
        self.sha = _hash_files(ctx.client, files, self.problems)
        if self.problems:
            return
        base = self.source if os.path.isdir(self.source) else os.path.dirname(files[0])
        self.files = {os.path.relpath(f, base): s for f, s in self.sha.items()}
        ds = _existing_store(self.url, ctx.so)
        self.exists = ds is not None
        index = _read_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so) if ds is not None else None
        if _unfinished(ds, index, self.url):
            ds = None  # created again from scratch (overwriting the remains)
        self.index = index or _empty_index(self.store_name)
        self.axis, _ = _time_axis(ctx, ds, self.url, self.problems, ctx.overwrite and _starts_before(ctx, ds))
        unchanged = (ds is not None and self.index.get("files") == self.files
                     and self.index.get("axis") == [_iso(self.axis[0]), _iso(self.axis[-1])]
                     and self.index.get("min_hours") == ctx.cfg.model.min_hours_per_day)
        self.compare = ds is not None and not ctx.overwrite
        self.action = None if unchanged else ("update" if ds is not None else "create")
        log.info("%s: %s", self.store_name, self.action or "up to date")

    def stage(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        self.staging_url = store.join(ctx.staging_root, "stations.zarr")
        r = ctx.region
        res = _run_tasks(ctx.client, _stage_stations, [(self.source, ctx.cfg.model.min_hours_per_day,
                                                        (_iso(self.axis[0]), _iso(self.axis[-1])),
                                                        (r.row0, r.row1, r.col0, r.col1), self.staging_url, self.url,
                                                        ctx.so, self.compare, ctx.overwrite)], "stations-read")
        self.problems.extend(_collect(res))
        if not self.problems:
            self.result = res[0]
            if self.result["outside"]:
                log.warning("ISMN: %d station(s) lie outside the region (kept, in_region = false): %s",
                            len(self.result["outside"]), ", ".join(self.result["outside"][:10]))

    def write(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        if self.exists and self.index.get("digest") == self.result["digest"]:
            # same content, other files/axis bookkeeping: only the index changes
            self._write_index()
            return
        inputs = [{"name": n, "sha256": s} for n, s in sorted(self.files.items())]
        attrs = _update_attrs(ctx.cfg, self.url, ctx.so, self.action == "create", "ISMN in-situ daily surface soil moisture",
                              "Daily means of flag-G hourly values of the shallowest sensor at 0-0.05 m per station.",
                              inputs, self.axis, f"{self.result['n']} station(s), axis {_iso(self.axis[0])}.."
                                                 f"{_iso(self.axis[-1])}",
                              {"sm1km_stage": "ingest", "n_stations_outside_region": len(self.result["outside"])})
        _raise(_collect(_run_tasks(ctx.client, _write_stations, [(self.staging_url, self.url, ctx.so, self.exists,
                                                                   attrs)], "stations-write")))
        store.finalize(self.url, ctx.so)
        self._write_index()  # last: the store is complete

    def _write_index(self):
        ctx = self.ctx
        idx = {"version": INDEX_VERSION, "store": self.store_name, "files": self.files, "digest": self.result["digest"],
               "axis": [_iso(self.axis[0]), _iso(self.axis[-1])], "min_hours": ctx.cfg.model.min_hours_per_day}
        _write_json(_index_url(ctx.cfg.store.root, self.store_name), ctx.so, idx)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _remove_staging(staging_root: str, so) -> None:
    try:
        store.remove(staging_root, so)
        if not store.is_remote(staging_root):
            parent = os.path.dirname(staging_root.rstrip("/"))
            if os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
    except OSError as exc:  # leave it; the next run uses another token
        log.warning("could not remove the staging area %s (%s)", staging_root, exc)


def ingest(cfg: RunConfig, client=None, overwrite: bool = False, *,
           task_memory_bytes: int | None = None) -> dict[str, str]:
    """Ingest the configured raw inputs into ``inputs/*.zarr``; returns {store name: URL}.

    Validates every input to read before writing anything (an InputError leaves the stores
    exactly as they were); re-running with the same files changes nothing; a longer period
    appends days; a day whose content differs from the stored one is an InputError unless
    ``overwrite``. ``task_memory_bytes`` overrides the memory one read task may hold (default: a
    quarter of a worker thread's share of ``cluster.memory_limit``).
    """
    so = cfg.store.storage_options()
    token = uuid.uuid4().hex[:12]
    ctx = _Ctx(cfg=cfg, so=so, region=cfg.coarse_region, factor=cfg.grid.factor, overwrite=overwrite,
               staging_root=store.join(cfg.store.root, "_staging", f"ingest-{token}"), budget=task_memory_bytes or _memory_budget(cfg))
    jobs: list = []
    if cfg.inputs.cci:
        jobs.append(_CoarseJob(ctx, "cci"))
    if cfg.inputs.era5:
        jobs.append(_CoarseJob(ctx, "era5"))
    pc = cfg.inputs.predictors
    if any(getattr(pc, d.key) for d in DYNAMIC) or any(getattr(pc, s.key) for s in STATIC):
        jobs.append(_PredictorJob(ctx))
    if cfg.inputs.ismn:
        jobs.append(_StationJob(ctx))
    if not jobs:
        raise ConfigError("inputs", "no inputs are configured.", "set inputs.cci / era5 / predictors / ismn.")
    with stage_client(cfg, client) as c:
        ctx.client = c
        try:
            problems: list[dict] = []
            for j in jobs:  # 1. what is to do (reads only)
                try:
                    j.prepare()
                except Sm1kmError as exc:
                    j.problems.append(_problem(exc))
                problems += j.problems
            _raise(problems)
            for j in jobs:  # 2. read + validate everything to do into the staging area
                j.stage()
                problems += j.problems
            _raise(problems)
            for j in jobs:  # 3. write the stores (templates, chunks, index, consolidated metadata)
                j.write()
        finally:
            _remove_staging(ctx.staging_root, so)
    return {j.store_name: j.url for j in jobs}


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace stored days whose input differs (default: such a day is an error)")


@locked_cli("ingest")
def run_cli(args) -> int:
    cfg = load_config(args)
    urls = ingest(cfg, overwrite=args.overwrite)
    for name, url in urls.items():
        log.info("%s -> %s", name, url)
    import sys

    sys.stdout.write(json.dumps(urls, indent=2) + "\n")
    return 0
