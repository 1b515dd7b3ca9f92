"""The predictors job's table and tasks: what each 1 km predictor is, and the read and write passes.

:data:`DYNAMIC` (daily LST day/night, NDVI composites) and :data:`STATIC` (terrain, soil texture,
land cover) say per predictor its config key, store variable, plausible range and attributes.
The tasks (one frozen dataclass in, one out; run by :class:`.predictors.PredictorJob`): the read
pass stages daily rasters per *batch of days × band* and static rasters per band; the write pass
gap-fills the days to recompute of one (time block, tile) from their trailing window (causal
rule, :mod:`sm1km.core.gapfill`), or copies one tile of static rasters.
Every raster task runs inside one ``rasterio.Env``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from sm1km.core import grid
from sm1km.core.gapfill import gapfill_time
from sm1km.errors import InputError, Sm1kmError
from sm1km.storage import store
from sm1km.storage.input_files import InputOptions, any_remote, display, local_paths

from .cube import coord_arrays
from .index import DIGEST_MOD, chunk_digests

log = logging.getLogger(__name__)

#: days an LST/NDVI observation is carried forward by the causal gap-fill (NDVI composites are 16
#: days apart); the name is kept from the centred rule, where it was the window's halo
GAP_HALO_DAYS = 48
#: days of the trailing mean that fills what nothing is carried to; also the reach of a day: day
#: ``t`` depends on days ``[t - FALLBACK_DAYS + 1, t]`` only (:mod:`sm1km.core.gapfill`)
FALLBACK_DAYS = 2 * GAP_HALO_DAYS
#: daily-predictor files dated up to this many days before the store's first day are read as
#: earlier observations (not stored): the first days carry the composite/scene before the period
LEAD_IN_DAYS = FALLBACK_DAYS - 1
OBSERVED_FLAGS = "observed_flags"


@dataclasses.dataclass(frozen=True)
class Dynamic:
    """A daily predictor (one file per day or composite)."""

    key: str            # config key under inputs.predictors
    var: str            # store variable
    bit: int            # bit in observed_flags
    valid: tuple        # plausible physical range (InputError outside)
    attrs: dict
    date_offset_days: int = 0   # days added to the file-name date (0: a composite sits on its first day)
    integer_scale: Any = "auto"


DYNAMIC = (
    Dynamic("lst_day", "lst_day_k", 1, (150.0, 400.0),
            {"standard_name": "surface_temperature", "long_name": "land surface temperature, daytime (gap-filled)",
             "units": "K"}),
    Dynamic("lst_night", "lst_night_k", 2, (150.0, 400.0),
            {"standard_name": "surface_temperature", "long_name": "land surface temperature, night (gap-filled)",
             "units": "K"}),
    Dynamic("ndvi", "ndvi", 4, (-1.0 - 1e-6, 1.0 + 1e-6),
            {"long_name": "normalized difference vegetation index, daily from 16-day composites (gap-filled)",
             "units": "1"}, date_offset_days=0, integer_scale=1e-4),
)


@dataclasses.dataclass(frozen=True)
class Static:
    """A static predictor (one raster)."""

    key: str
    var: str
    dtype: str
    resampling: str
    valid: tuple
    attrs: dict


STATIC = (
    Static("elevation", "elevation_m", "float32", "average", (-500.0, 9000.0),
           {"standard_name": "surface_altitude", "long_name": "elevation above sea level", "units": "m"}),
    Static("slope", "slope_deg", "float32", "average", (0.0, 90.0), {"long_name": "terrain slope", "units": "degree"}),
    Static("twi", "twi", "float32", "average", (-100.0, 100.0),
           {"long_name": "topographic wetness index ln(a / tan(beta))", "units": "1"}),
    Static("clay", "clay_frac", "float32", "average", (0.0, 1.0 + 1e-6),
           {"long_name": "clay mass fraction of the topsoil", "units": "1"}),
    Static("sand", "sand_frac", "float32", "average", (0.0, 1.0 + 1e-6),
           {"long_name": "sand mass fraction of the topsoil", "units": "1"}),
    Static("land_cover", "land_cover", "int16", "mode", (0.0, 32767.0),
           {"long_name": "land cover class code (as in the input raster)", "units": "1",
            "comment": "-1 = no data"}),
)
DYNAMIC_BY_KEY = {d.key: d for d in DYNAMIC}
STATIC_BY_KEY = {s.key: s for s in STATIC}


def configured(cfg) -> bool:
    """True if any predictor is configured (the job has something to do)."""
    pc = cfg.inputs.predictors
    return any(getattr(pc, d.key) for d in DYNAMIC) or any(getattr(pc, s.key) for s in STATIC)


# --------------------------------------------------------------------------------------------
# raster helpers
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


def _read_predictor(path: str | tuple[str, ...], region: grid.Region, factor: int, resampling: str, key: str,
                    input_options: InputOptions | None = None, **kwargs: Any) -> xr.DataArray:
    """A predictor raster on the fine grid: MODIS ``.hdf`` granules with the MODIS reader (its own
    scale, QC and resampling per product), every other file with ``read_raster``. Remote files
    (``input_options``) are read from copies in the bounded local input cache (HDF4, GDAL)."""
    from sm1km.storage.readers import read_raster
    from sm1km.storage.readers.modis import is_modis_path, read_modis

    paths = path if isinstance(path, tuple) else (path,)
    if any_remote(paths):
        with local_paths(list(paths), input_options) as local:
            return _read_predictor(tuple(local) if isinstance(path, tuple) else local[0], region, factor,
                                   resampling, key, **kwargs)

    if isinstance(path, tuple) or is_modis_path(path):
        return read_modis(path, region, factor, key)
    return read_raster(path, region, factor, resampling, **kwargs)


def validate_raster(da: xr.DataArray, path: str, lat, lon, valid: tuple, what: str) -> InputError | None:
    """Why a resampled raster cannot be ingested (None if it can)."""
    if da.shape != (lat.size, lon.size) or not (np.allclose(da["lat"].values, lat) and np.allclose(da["lon"].values, lon)):
        return InputError(path, "the raster did not resample onto the fine grid.",
                          "pass a georeferenced single-band GeoTIFF.")
    v = da.values
    fin = np.isfinite(v)
    if fin.any():
        lo, hi = float(v[fin].min()), float(v[fin].max())
        if lo < valid[0] or hi > valid[1]:
            return InputError(path, f"{what} values {lo:g}…{hi:g} are outside the plausible range {valid[0]:g}…"
                                    f"{valid[1]:g} (units '{da.attrs.get('units', '')}').",
                              f"check that this is the {what} raster and its units (see docs/ingest.md).")
    return None


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DaySource:
    """Where the values of one staged day come from, per kind: a file, the store, or nothing (a gap)."""

    day: str                        # ISO day
    pos: int                        # its position on the store's time axis
    files: Mapping[str, str | tuple[str, ...]]  # kind -> file to read (MODIS: the tiles of one day)
    stored: tuple[str, ...] = ()    # kinds whose observations are read back from the store


@dataclasses.dataclass(frozen=True)
class PredictorReadTask:
    """Read pass: the daily predictors ``kinds`` of ``sources`` over one band into the staging array."""

    staging_url: str
    so: dict
    store_url: str
    kinds: tuple[str, ...]
    sources: tuple[DaySource, ...]  # staged days day0, day0 + 1, ...
    band: grid.Region
    factor: int
    day0: int
    rows: slice
    cols: slice
    chunk: tuple[int, int]
    opts: InputOptions | None = None  # how remote inputs are reached

    @property
    def key(self) -> str:
        return f"d{self.day0}-r{self.rows.start}-c{self.cols.start}"


@dataclasses.dataclass(frozen=True)
class PredictorRead:
    """Digests per kind and day of the files read; the problems (their (kind, day) in ``failed``)."""

    digests: dict[str, dict[str, int]]
    errors: tuple[Sm1kmError, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()


@_one_raster_env
def read_predictor_band(task: PredictorReadTask) -> PredictorRead:
    """Task, read pass of the daily predictors: per staged day and kind, a file (validated), the
    stored observations (halo days already ingested) or nothing (a gap)."""
    region = task.band
    lat, lon = coord_arrays(region, task.factor)
    sources = task.sources
    n = len(sources)
    out = {k: np.full((n, lat.size, lon.size), np.nan, dtype=np.float32) for k in task.kinds}
    problems: list[tuple[str, str, Sm1kmError]] = []
    digests: dict[str, dict[str, int]] = {}
    from_store = [(i, k) for i, src in enumerate(sources) for k in task.kinds if k in src.stored]
    if from_store:
        ex = store.open_dataset(task.store_url, task.so, consolidated=False)
        pos = sorted({sources[i].pos for i, _ in from_store})
        sel = {"time": slice(pos[0], pos[-1] + 1), "lat": task.rows, "lon": task.cols}
        flags = np.asarray(ex[OBSERVED_FLAGS].isel(sel).values)
        cache = {}
        for i, k in from_store:
            if k not in cache:
                cache[k] = np.asarray(ex[DYNAMIC_BY_KEY[k].var].isel(sel).values, dtype=np.float32)
            j = sources[i].pos - pos[0]
            out[k][i] = np.where(flags[j] & DYNAMIC_BY_KEY[k].bit, cache[k][j], np.nan)
    for i, src in enumerate(sources):
        for k in task.kinds:
            path = src.files.get(k)
            if path is None:
                continue
            spec = DYNAMIC_BY_KEY[k]
            try:
                da = _read_predictor(path, region, task.factor, "average", k, integer_scale=spec.integer_scale,
                                     input_options=task.opts)
            except InputError as exc:
                problems.append((k, src.day, exc))
                continue
            err = validate_raster(da, display(path) if isinstance(path, str) else ", ".join(map(display, path)), lat, lon,
                                  spec.valid, k)
            if err:
                problems.append((k, src.day, err))
                continue
            out[k][i] = da.values
            digests.setdefault(k, {})[src.day] = chunk_digests(k, out[k][i], task.rows.start, task.cols.start,
                                                               *task.chunk)
    if problems:
        return PredictorRead(digests, tuple(e for _, _, e in problems), tuple((k, d) for k, d, _ in problems))
    block = xr.Dataset({k: (("day", "lat", "lon"), out[k]) for k in task.kinds})
    store.write_region(task.staging_url, block, {"day": slice(task.day0, task.day0 + n), "lat": task.rows,
                                                 "lon": task.cols}, task.so)
    return PredictorRead(digests)


@dataclasses.dataclass(frozen=True)
class StaticReadTask:
    """Read pass: one static predictor over one band into the staging array."""

    staging_url: str
    so: dict
    predictor: str    # config key
    path: str | tuple[str, ...]  # a raster, or the tiles of one MODIS granule
    band: grid.Region
    factor: int
    rows: slice
    cols: slice
    chunk: tuple[int, int]
    opts: InputOptions | None = None  # how remote inputs are reached

    @property
    def key(self) -> str:
        return f"{self.predictor}-r{self.rows.start}-c{self.cols.start}"


@dataclasses.dataclass(frozen=True)
class StaticRead:
    digest: int
    n_valid: int


@_one_raster_env
def read_static_band(task: StaticReadTask) -> StaticRead:
    """Task, read pass of one static predictor over one band (an InputError if it is not plausible).
    Remote rasters are read from copies in the bounded local input cache."""
    paths = task.path if isinstance(task.path, tuple) else (task.path,)
    if any_remote(paths):
        with local_paths(list(paths), task.opts) as local:
            return read_static_band(dataclasses.replace(
                task, path=tuple(local) if isinstance(task.path, tuple) else local[0]))
    spec = STATIC_BY_KEY[task.predictor]
    lat, lon = coord_arrays(task.band, task.factor)
    da = _read_predictor(task.path, task.band, task.factor, spec.resampling, task.predictor)
    vals = da.values.astype(np.float32)
    where = task.path if isinstance(task.path, str) else ", ".join(task.path)
    if task.predictor in ("clay", "sand") and isinstance(task.path, str):
        units = _raster_units(task.path, str(da.attrs.get("units", "")))
        vals = _convert_fraction(vals, units, task.path)
        da = da.copy(data=vals)
        da.attrs["units"] = units
    err = validate_raster(da, where, lat, lon, spec.valid, task.predictor)
    if err:
        raise err
    if spec.dtype == "int16":
        vals = np.where(np.isfinite(vals), np.round(vals), -1).astype(np.int16)
    block = xr.Dataset({spec.var: (("lat", "lon"), vals)})
    store.write_region(task.staging_url, block, {"lat": task.rows, "lon": task.cols}, task.so)
    return StaticRead(chunk_digests(spec.var, vals, task.rows.start, task.cols.start, *task.chunk),
                      int(np.isfinite(da.values).sum()))


@dataclasses.dataclass(frozen=True)
class PredictorBlockWrite:
    """Write pass: days ``block`` of one time block and tile, gap-filled (causally) from their
    trailing ``window`` (store positions; negative: lead-in days before the axis)."""

    url: str
    so: dict
    staging_url: str
    kinds: tuple[str, ...]
    block: slice      # time positions of the store: the days to write (within one time block)
    window: slice     # time positions (the days with their trailing window; may start below 0)
    h0: int           # store position of the staging array's first day
    rows: slice
    cols: slice
    halo: int         # max_gap_days of the gap-fill
    fallback_days: int = FALLBACK_DAYS

    @property
    def key(self) -> str:
        return f"t{self.block.start}-r{self.rows.start}-c{self.cols.start}"


@dataclasses.dataclass(frozen=True)
class PredictorWritten:
    """What a write task stored: ``{store time position: digest part}`` of the tile's stored values
    (every time-dependent variable, ``observed_flags`` included), summed over tiles by the job."""

    digests: dict[int, int]


def write_predictor_block(task: PredictorBlockWrite) -> PredictorWritten:
    """Task, write pass of the daily predictors: gap-fill days of one (time block, tile) from their trailing window."""
    stg = store.open_dataset(task.staging_url, task.so, consolidated=False)
    sel = {"day": slice(task.window.start - task.h0, task.window.stop - task.h0), "lat": task.rows, "lon": task.cols}
    b0, b1 = task.block.start - task.window.start, task.block.stop - task.window.start
    out: dict[str, tuple] = {}
    flags = None
    for k in task.kinds:
        raw = np.asarray(stg[k].isel(sel).values, dtype=np.float32)
        filled = gapfill_time(raw, max_gap_days=task.halo, fallback_days=task.fallback_days)[b0:b1]
        obs = np.isfinite(raw[b0:b1])
        bit = obs.astype(np.uint8) * DYNAMIC_BY_KEY[k].bit
        flags = (np.zeros(obs.shape, np.uint8) if flags is None else flags) | bit
        out[DYNAMIC_BY_KEY[k].var] = (("time", "lat", "lon"), filled)
    out[OBSERVED_FLAGS] = (("time", "lat", "lon"), flags)
    store.write_region(task.url, xr.Dataset(out), {"time": task.block, "lat": task.rows, "lon": task.cols}, task.so)
    ny, nx = task.rows.stop - task.rows.start, task.cols.stop - task.cols.start
    digests = {}
    for i, t in enumerate(range(task.block.start, task.block.stop)):
        digests[t] = sum(chunk_digests(name, np.asarray(arr)[i], task.rows.start, task.cols.start, ny, nx)
                         for name, (_, arr) in sorted(out.items())) % DIGEST_MOD
    return PredictorWritten(digests)


@dataclasses.dataclass(frozen=True)
class StaticTileWrite:
    """Write pass: the static predictors ``names`` of one tile."""

    url: str
    so: dict
    staging_url: str
    names: tuple[str, ...]
    rows: slice
    cols: slice

    @property
    def key(self) -> str:
        return f"r{self.rows.start}-c{self.cols.start}"


def write_static_tile(task: StaticTileWrite) -> None:
    """Task, write pass of the static predictors: one tile from the staging array."""
    stg = store.open_dataset(task.staging_url, task.so, consolidated=False)
    block = xr.Dataset({nm: (("lat", "lon"), np.asarray(stg[nm].isel(lat=task.rows, lon=task.cols).values))
                        for nm in task.names})
    store.write_region(task.url, block, {"lat": task.rows, "lon": task.cols}, task.so)



__all__ = ["DYNAMIC", "STATIC", "DYNAMIC_BY_KEY", "STATIC_BY_KEY", "Dynamic", "Static", "GAP_HALO_DAYS", "OBSERVED_FLAGS",
           "FALLBACK_DAYS", "LEAD_IN_DAYS",
           "configured", "validate_raster",
           "DaySource", "PredictorReadTask", "PredictorRead", "read_predictor_band", "StaticReadTask", "StaticRead",
           "read_static_band", "PredictorBlockWrite", "PredictorWritten", "write_predictor_block", "StaticTileWrite", "write_static_tile"]
