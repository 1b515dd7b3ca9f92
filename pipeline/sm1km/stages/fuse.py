"""The ``fuse`` stage: ``inputs/cci.zarr`` + ``inputs/era5.zarr`` → gap-free 25 km ``fused.zarr``.

Two steps (docs/fusion.md):

1. **fit** — once, on ``fusion.reference_period`` (default: the period of the run that first fits):
   one task per spatial chunk of ``fusion.space_chunk`` cells reads the chunk plus a halo of
   ``fusion.neighbourhood_cells`` (``unit.grown(halo, ...)``, for the neighbourhood fallback),
   calls the pure :func:`sm1km.core.fusion.fit_params` and writes ``fused_params.zarr``, whose
   digest (``fusion_params_digest``) is written last. Later runs reuse it; another reference period
   or method is refused unless ``--overwrite`` (refit, rebuild).
2. **apply** — one task per unit = (spatial chunk × time block of ``grid.time_block_days``):
   :func:`sm1km.core.fusion.apply_params` on the unit's days (pure, per day), one chunk object per
   variable, a ledger marker with the block's deps digest.

The store **grows in time**: a ``fused.zarr`` holding a prefix of the period is extended
(``storage.append.extend_time``, invisible until the consolidated metadata, written last) and only
the blocks whose deps digest (:mod:`sm1km.storage.deps`: parameters + the ingest index's per-day
digests of the block's days) is not recorded in ``_ledger/fused.zarr/blocks.json`` are computed —
the new and partly filled blocks, and those holding a day revised upstream (logged by name). A
second run is a no-op that says so and writes nothing.

Land = ``land_fraction >= 0.5`` **or** CCI observed at least once in the reference period (a coastal
cell that the satellite sees is land even if ERA5 calls it sea). Everything else is sea: NaN, flag 0.

Returns a :class:`~sm1km.runtime.result.StageResult` ``{"fused": url}`` with ``stats``
``units_total/written/skipped`` (chunk × block units), ``blocks_total/blocks_redone`` and the pixel
counts of the whole store (the ``fusion_*`` attributes). The withheld-observation experiment that
scores the fusion reads its blocks through :func:`open_inputs` / :func:`read_block` /
:func:`land_mask`: it is ``sm1km.validation.withheld`` (it fits and applies in memory on the run's
whole period, ``fuse_block_detailed``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sm1km._version import __version__
from sm1km.config import RunConfig
from sm1km.core import fusion as fc
from sm1km.core import grid
from sm1km.errors import ConfigError, InputError, StoreError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.runtime.runner import run_tasks
from sm1km.runtime.units import WorkUnit, plan_units
from sm1km.storage import deps, store
from sm1km.storage.append import extend_time, write_packed_preserving
from sm1km.storage.master import crs_variable, time_blocks

log = logging.getLogger(__name__)

STORE_NAME = "fused.zarr"
LAND_FRACTION_MIN = 0.5
MAX_TIME_CHUNK = 4096

SM_ATTRS = {
    "standard_name": "volume_fraction_of_condensed_water_in_soil",
    "long_name": "surface soil moisture (0-5 cm), ESA CCI SM COMBINED gap-filled with rescaled ERA5 swvl1",
    "units": "m3 m-3",
    "valid_min": fc.SM_MIN,
    "valid_max": 1.0,
    "ancillary_variables": "source_flag",
    "coverage_content_type": "modelResult",
    "grid_mapping": "crs",
}
FLAG_ATTRS = {
    "long_name": "source of the fused soil moisture value",
    "flag_values": np.array(fc.FLAG_VALUES, dtype=np.uint8),
    "flag_meanings": fc.FLAG_MEANINGS,
    "valid_range": np.array([0, 3], dtype=np.uint8),
    "coverage_content_type": "qualityInformation",
    "grid_mapping": "crs",
}


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionInputs:
    """Where the inputs are and how the run's period/region map into them (no data arrays)."""

    cci_url: str
    era5_url: str
    storage_options: dict
    cci_time: list          # positions of the period's days in cci.zarr
    era5_time: list         # positions in era5.zarr
    ny: int
    nx: int
    row0: int               # global CCI row/col of the region's first cell
    col0: int


def positions(url: str, have, dates: pd.DatetimeIndex, what: str, period: str = "run period") -> list[int]:
    """Positions of ``dates`` in a store's time axis ``have``; an InputError if one is missing."""
    idx = pd.DatetimeIndex(have).normalize().get_indexer(dates)
    missing = dates[idx < 0]
    if len(missing):
        fix = ("ingest the whole period (sm1km ingest --config run.yaml) or shorten period." if period == "run period"
               else f"ingest the whole {period} (sm1km ingest with a period covering it) or change it.")
        raise InputError(url, f"{what} lacks {len(missing)} day(s) of the {period} "
                              f"(first missing: {missing[0].date()}).", fix)
    return [int(i) for i in idx]


def _check_grid(url: str, ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> None:
    ok = ("lat" in ds.coords and "lon" in ds.coords and ds.sizes.get("lat") == lat.size and
          ds.sizes.get("lon") == lon.size and np.allclose(ds["lat"].values, lat, atol=1e-6) and
          np.allclose(ds["lon"].values, lon, atol=1e-6))
    if not ok:
        raise InputError(url, "its 0.25° grid does not match the config region "
                              f"({lat.size}×{lon.size} cells from lat {lat[0]} / lon {lon[0]}).",
                         "re-run sm1km ingest with this config (region changed?).")


def open_inputs(cfg: RunConfig, dates: pd.DatetimeIndex | None = None, period: str = "run period") -> FusionInputs:
    """Check that both input stores exist, hold the variables, the region and the period
    (``dates``, default the run's; ``period`` names them in the error)."""
    so = cfg.store.storage_options()
    cci_url, era5_url = cfg.store.url("inputs", "cci.zarr"), cfg.store.url("inputs", "era5.zarr")
    cci = store.open_dataset(cci_url, so)
    era5 = store.open_dataset(era5_url, so)
    for url, ds, names in ((cci_url, cci, ("sm",)), (era5_url, era5, ("swvl1", "land_fraction"))):
        absent = [n for n in names if n not in ds.data_vars]
        if absent:
            raise InputError(url, f"variable(s) {absent} missing.", "re-run sm1km ingest (the store is incomplete).")
    region = cfg.coarse_region
    lat, lon = grid.region_coords(region)
    _check_grid(cci_url, cci, lat, lon)
    _check_grid(era5_url, era5, lat, lon)
    dates = cfg.dates() if dates is None else dates
    return FusionInputs(cci_url, era5_url, so, positions(cci_url, cci["time"].values, dates, "cci.zarr", period),
                        positions(era5_url, era5["time"].values, dates, "era5.zarr", period),
                        int(lat.size), int(lon.size), region.row0, region.col0)


def time_indexer(pos: list[int]):
    """A slice when the positions are contiguous (efficient reads), else the list."""
    if pos and pos == list(range(pos[0], pos[0] + len(pos))):
        return slice(pos[0], pos[0] + len(pos))
    return pos


def fusion_units(cfg: RunConfig) -> Iterator[WorkUnit]:
    """The chunks of a run: ``fusion.space_chunk``² cells of the region each, whole period, row-major."""
    return plan_units(cfg.coarse_region, cfg.fusion.space_chunk)


def read_block(inp: FusionInputs, window: WorkUnit, days: slice | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cci (t,y,x), era5 (t,y,x), land_fraction (y,x)) of ``window`` (a haloed unit), float64;
    ``days``: a slice of the inputs' period (default all of it)."""
    rows, cols = window.coarse
    d = days if days is not None else slice(None)
    cci = store.open_dataset(inp.cci_url, inp.storage_options)
    era5 = store.open_dataset(inp.era5_url, inp.storage_options)
    c = cci["sm"].isel(time=time_indexer(inp.cci_time[d]), lat=rows, lon=cols).values.astype(np.float64)
    e = era5["swvl1"].isel(time=time_indexer(inp.era5_time[d]), lat=rows, lon=cols).values.astype(np.float64)
    lf = era5["land_fraction"].isel(lat=rows, lon=cols).values.astype(np.float64)
    return c, e, lf


def land_mask(cci: np.ndarray, land_fraction: np.ndarray) -> np.ndarray:
    """Land = land_fraction ≥ 0.5 or CCI observed at least once (the stage's documented rule)."""
    with np.errstate(invalid="ignore"):
        return (land_fraction >= LAND_FRACTION_MIN) | np.isfinite(cci).any(axis=0)


# --------------------------------------------------------------------------------------------
# input digests (what a fused block and the parameters are computed from)
# --------------------------------------------------------------------------------------------
CCI_STORE, ERA5_STORE = "inputs/cci.zarr", "inputs/era5.zarr"


def _ingest_index(root: str, name: str, so: dict) -> dict[str, Any]:
    idx = store.read_json(store.join(root, "_ledger", name, "ingest-index.json"), so)
    return idx if isinstance(idx, dict) else {}


def day_digests(root: str, name: str, so: dict) -> dict[str, str] | None:
    """{ISO day: digest} of an input store's days: the ingest index's ``stored_days``
    (:func:`sm1km.storage.deps.input_day_digests`), else its per-day content digests (``days``:
    [file, digest]); None without an ingest index (then a revised day cannot be detected)."""
    got = deps.input_day_digests(root, name, so)
    if got:
        return got
    days = _ingest_index(root, name, so).get("days") or {}
    out = {str(d): str(v[1]) for d, v in days.items() if isinstance(v, (list, tuple)) and len(v) > 1}
    return out or None


def static_digest(root: str, name: str, so: dict) -> str:
    """Digest of an input store's static fields (land_fraction): ``stored_static``, else ``static.digest``."""
    got = deps.input_static_digest(root, name, so)
    return got or str((_ingest_index(root, name, so).get("static") or {}).get("digest", ""))


@dataclass(frozen=True)
class InputDigests:
    cci: dict[str, str]
    era5: dict[str, str]
    static: str

    @classmethod
    def read(cls, cfg: RunConfig, so: dict) -> InputDigests:
        root = cfg.store.root
        out = {}
        for name in (CCI_STORE, ERA5_STORE):
            d = day_digests(root, name, so)
            if d is None:
                log.warning("fuse: %s has no ingest index with per-day digests: a day revised upstream will not be "
                            "detected (re-run sm1km ingest to write one)", name)
            out[name] = d or {}
        return cls(out[CCI_STORE], out[ERA5_STORE], static_digest(root, ERA5_STORE, so))

    def of(self, day: str) -> list[str]:
        return [self.cci.get(day, ""), self.era5.get(day, "")]


def _iso(d) -> str:
    return str(np.datetime64(d, "D"))


# --------------------------------------------------------------------------------------------
# the parameter store (fitted once on the reference period)
# --------------------------------------------------------------------------------------------
PARAMS_NAME = "fused_params.zarr"
FIT_VERSION = 1      # bump when fit_params would give other parameters for the same inputs
APPLY_VERSION = 1    # bump when apply_params would give other values for the same day and parameters
FIT_RECORD = "fit.json"          # _ledger/fused_params.zarr/fit.json: the reference days' input digests
APPLIED_RECORD = "applied.json"  # _ledger/fused_params.zarr/applied.json: input digests of every fused day


@dataclass(frozen=True)
class FitSettings:
    """What the parameters depend on besides the reference period's data."""

    method: str
    min_overlap_days: int
    neighbourhood_cells: int
    start: str
    end: str

    def attrs(self) -> dict[str, Any]:
        return {"fusion_method": self.method, "fusion_min_overlap_days": self.min_overlap_days,
                "fusion_neighbourhood_cells": self.neighbourhood_cells,
                "fusion_reference_period_start": self.start, "fusion_reference_period_end": self.end}

    @classmethod
    def from_attrs(cls, a: dict) -> FitSettings:
        return cls(str(a["fusion_method"]), int(a["fusion_min_overlap_days"]), int(a["fusion_neighbourhood_cells"]),
                   str(a["fusion_reference_period_start"]), str(a["fusion_reference_period_end"]))

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, self.end, freq="D")


@dataclass(frozen=True)
class StoredParams:
    """A complete parameter store: its settings, digest and pixel counts."""

    settings: FitSettings
    digest: str
    counts: dict[str, int]


def _params_ledger(cfg: RunConfig, so: dict) -> str:
    return store.join(cfg.store.root, "_ledger", PARAMS_NAME)


def read_stored_params(cfg: RunConfig, so: dict) -> StoredParams | None:
    """The complete parameter store of the root (None if absent or an interrupted fit)."""
    url = cfg.store.url(PARAMS_NAME)
    if not store.exists(url, so):
        return None
    a: dict[str, Any] = dict(store.open_group(url, so).attrs.asdict())
    if "fusion_params_digest" not in a:
        return None
    counts = {k[len("fusion_"):]: int(v) for k, v in a.items() if k.endswith("_pixels") and k.startswith("fusion_")}
    return StoredParams(FitSettings.from_attrs(a), str(a["fusion_params_digest"]), counts)


def _param_dims(name: str) -> tuple[str, ...]:
    return ("node", "lat", "lon") if name in fc.FusionParams.NODE_ARRAYS else ("lat", "lon")


_PARAM_DTYPES = {"land": "uint8", "kind": "uint8", "n_overlap": "int32", "n_match": "int32"}


@dataclass(frozen=True)
class FitContext:
    inputs: FusionInputs
    url: str
    method: str
    min_overlap_days: int
    neighbourhood_cells: int


def _fit_chunk(unit: WorkUnit, ctx: FitContext) -> dict:
    """One task: read the haloed chunk over the reference period, fit, write its parameters."""
    inp = ctx.inputs
    window = unit.grown(ctx.neighbourhood_cells, inp.ny, inp.nx)
    c, e, lf = read_block(inp, window)
    p = fc.fit_params(c, e, land_mask(c, lf), ctx.method, ctx.min_overlap_days, ctx.neighbourhood_cells)
    p = p.crop(*unit.within(window))
    rows, cols = unit.coarse
    data = {n: (_param_dims(n), v.astype(_PARAM_DTYPES.get(n, "float64"))) for n, v in p.arrays().items()}
    region = {"lat": rows, "lon": cols}
    if ctx.method == "cdf":
        region["node"] = slice(0, fc.CDF_NODES)
    store.write_region(ctx.url, xr.Dataset(data), region, inp.storage_options)
    return p.counts()


def fit(cfg: RunConfig, settings: FitSettings, digests: InputDigests, client=None,
        inputs: FusionInputs | None = None) -> StoredParams:
    """Fit the parameters on ``settings``' reference period and write ``fused_params.zarr`` (one task
    per spatial chunk, a halo of ``neighbourhood_cells``); its digest (attrs ``fusion_params_digest``)
    covers the fit's inputs, settings and the parameter bytes. Replaces an existing parameter store."""
    import dask.array as da

    so = cfg.store.storage_options()
    url = cfg.store.url(PARAMS_NAME)
    ref = settings.dates
    inp = inputs if inputs is not None else open_inputs(cfg, ref, "fusion reference period")
    lat, lon = grid.region_coords(cfg.coarse_region)
    sc = cfg.fusion.space_chunk
    ch = (min(sc, inp.ny), min(sc, inp.nx))
    names = list(fc.FusionParams.PIXEL_ARRAYS + fc.FusionParams.NODE_ARRAYS if settings.method == "cdf"
                 else fc.FusionParams.PIXEL_ARRAYS[:-1])
    variables, enc = {}, {}
    for n in names:
        dims = _param_dims(n)
        dt = _PARAM_DTYPES.get(n, "float64")
        shape = (fc.CDF_NODES, inp.ny, inp.nx) if len(dims) == 3 else (inp.ny, inp.nx)
        chunks = (fc.CDF_NODES, *ch) if len(dims) == 3 else ch
        variables[n] = (dims, da.zeros(shape, dtype=dt, chunks=chunks))
        enc[n] = {"chunks": chunks, **({"_FillValue": np.float64("nan")} if dt == "float64" else {})}
    tpl = xr.Dataset(variables, coords={"lat": ("lat", lat), "lon": ("lon", lon)})
    tpl.attrs = dict(sorted({"title": "sm1km fusion parameters (fitted once on the reference period)",
                             "sm1km_version": __version__,
                             **settings.attrs()}.items()))
    store.create_template(url, tpl, enc, so, overwrite=True)
    units = list(fusion_units(cfg))
    log.info("fuse: fitting the %s parameters on %s..%s (%d days, %d chunks)", settings.method, settings.start,
             settings.end, len(ref), len(units))
    ctx = FitContext(inp, url, settings.method, settings.min_overlap_days, settings.neighbourhood_cells)
    counts: dict[str, int] = {}
    with stage_client(cfg, client) as c:
        for part in run_tasks(c, functools.partial(_fit_chunk, ctx=ctx), units, name="fuse_fit"):
            for k, v in part.items():
                counts[k] = counts.get(k, 0) + int(v)
    ref_days = {_iso(d): digests.of(_iso(d)) for d in ref}
    fit_deps = {"version": FIT_VERSION, **asdict(settings), "region": [inp.row0, inp.col0, inp.ny, inp.nx],
                "days": ref_days, "static": digests.static}
    objects = {k: v for k, v in store.checksum_tree(url, so).items() if not k.endswith("zarr.json")}
    digest = deps.digest_of({"fit": deps.digest_of(fit_deps), "objects": objects})
    store.write_json(store.join(_params_ledger(cfg, so), FIT_RECORD),
                     {"settings": asdict(settings), "days": ref_days, "static": digests.static}, so,
                     separators=(",", ":"))
    store.finalize(url, so, {"fusion_params_digest": digest, **{f"fusion_{k}": v for k, v in sorted(counts.items())}})
    log.info("fuse: parameters written to %s (digest %s…; %s)", url, digest[:12],
             ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return StoredParams(settings, digest, counts)


def read_params(url: str, storage_options: dict, window: WorkUnit, method: str,
                neighbourhood_cells: int) -> fc.FusionParams:
    """The fitted parameters of ``window`` (coarse cells of the region)."""
    rows, cols = window.coarse
    ds = store.open_dataset(url, storage_options).isel(lat=rows, lon=cols)
    return fc.FusionParams.from_arrays(method, neighbourhood_cells, {str(n): ds[n].values for n in ds.data_vars})


def _warn_revised_reference(cfg: RunConfig, so: dict, digests: InputDigests) -> None:
    rec = store.read_json(store.join(_params_ledger(cfg, so), FIT_RECORD), so) or {}
    revised = [d for d, v in (rec.get("days") or {}).items() if list(v) != digests.of(d) and any(v)]
    if revised or (rec.get("static") and rec.get("static") != digests.static):
        what = f"{len(revised)} day(s) (first {revised[0]})" if revised else "the land fraction"
        log.warning("fuse: the inputs of the fusion reference period changed since the parameters were fitted "
                    "(%s revised upstream): the parameters are kept, so published days stay as they are; "
                    "refit with sm1km fuse --overwrite (every fused day changes)", what)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuseContext:
    """What every unit task needs besides its unit (small: URLs, positions, digests)."""

    inputs: FusionInputs
    url: str
    params_url: str
    root: str
    method: str
    neighbourhood_cells: int
    block_days: int
    deps: dict[str, str]     # time block key -> deps digest


def block_key(t0: int, block_days: int) -> str:
    """Key of the time block starting at day ``t0`` (nominal length, also while partly filled)."""
    return f"time-{t0}-{t0 + block_days}"


def _fuse_unit(unit: WorkUnit, ctx: FuseContext) -> dict:
    """One task: (space chunk × time block): read the haloed chunk's days, apply the parameters,
    write the chunk objects (whole: one per variable), mark it in the ledger. Returns day counts."""
    inp = ctx.inputs
    t0, t1 = unit.time_bounds
    window = unit.grown(ctx.neighbourhood_cells, inp.ny, inp.nx)
    c, e, _ = read_block(inp, window, slice(t0, t1))
    params = read_params(ctx.params_url, inp.storage_options, window, ctx.method, ctx.neighbourhood_cells)
    res = fc.apply_params(params, c, e)
    ys, xs = unit.within(window)
    inner = res.crop(ys, xs)
    rows, cols = unit.coarse
    write_packed_preserving(ctx.url, {"time": slice(t0, t1), "lat": rows, "lon": cols},
                            {"sm": inner.sm, "source_flag": inner.source_flag}, inp.storage_options)
    counts = {"era5_borrowed_pixel_days": int(0 if inner.era5_borrowed_days is None else inner.era5_borrowed_days.sum()),
              "land_pixel_days_without_data": int(((inner.source_flag == fc.FLAG_NO_DATA) &
                                                   (inner.pixel_kind != fc.PIXEL_NOT_LAND)[None]).sum())}
    store.Ledger(ctx.root, STORE_NAME, inp.storage_options).mark(
        unit.key, {"deps": ctx.deps[block_key(t0, ctx.block_days)], **counts})
    return counts


def _template(cfg: RunConfig, inp: FusionInputs, settings: FitSettings, params_digest: str) -> tuple[xr.Dataset, dict]:
    import dask.array as da

    lat, lon = grid.region_coords(cfg.coarse_region)
    times = cfg.dates()
    nt, sc, tb = len(times), cfg.fusion.space_chunk, cfg.grid.time_block_days
    chunks = (tb, min(sc, inp.ny), min(sc, inp.nx))
    dims = ("time", "lat", "lon")
    shape = (nt, inp.ny, inp.nx)
    # one never-computed dask chunk (as master._lazy): a graph of one task per store chunk took
    # 119 s and ~800 MB of driver memory for the global 2000-2020 template (243,000 chunks)
    ds = xr.Dataset(
        {"sm": (dims, da.empty(shape, dtype="float32", chunks=shape), dict(SM_ATTRS)),
         "source_flag": (dims, da.empty(shape, dtype="uint8", chunks=shape), dict(FLAG_ATTRS)),
         "crs": crs_variable(cfg.coarse_region, 1)},  # factor 1: the 0.25 degree grid
        coords={"time": ("time", times.values.astype("datetime64[ns]"),
                         {"standard_name": "time", "long_name": "time", "axis": "T"}),
                "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                                     "axis": "Y"}),
                "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                                     "axis": "X"})}
    ).set_coords("crs")
    ds.attrs = dict(sorted(_store_attrs(cfg, inp, settings, params_digest).items()))
    enc = {"sm": {"chunks": chunks, "_FillValue": np.float32("nan")},
           "source_flag": {"chunks": chunks},
           "time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64",
                    "chunks": (tb,), "_FillValue": None},
           "lat": {"_FillValue": None}, "lon": {"_FillValue": None}}  # CF 2.5.1: no fill on coordinates
    return ds, enc


def _store_attrs(cfg: RunConfig, inp: FusionInputs, settings: FitSettings, params_digest: str) -> dict[str, Any]:
    method = settings.method
    inputs = []
    for name, url in (("inputs/cci.zarr", inp.cci_url), ("inputs/era5.zarr", inp.era5_url)):
        inputs.append({"name": name, "sha256": store.sha256_file(store.join(url, "zarr.json"), inp.storage_options),
                       "sha256_of": "zarr.json (metadata)"})
    return store.provenance_attrs(
        cfg, title="sm1km fused 25 km daily surface soil moisture (gap-free)", name="fused",
        summary="ESA CCI SM COMBINED where observed; elsewhere ERA5 swvl1 rescaled to CCI per pixel "
                f"({method} matching over the overlap days of the reference period {settings.start}..{settings.end}), "
                "neighbourhood or unscaled ERA5 where a pixel has too few CCI days (see source_flag).",
        inputs=inputs,
        extra={**settings.attrs(), "fusion_params_digest": params_digest,
               "time_coverage_resolution": "P1D", "standard_name_vocabulary": "CF Standard Name Table v85",
               "geospatial_lat_resolution": "0.25 degree", "geospatial_lon_resolution": "0.25 degree",
               "cdm_data_type": "Grid",
               "fusion_land_definition": f"land_fraction >= {LAND_FRACTION_MIN} or CCI observed at least once "
                                         "in the reference period",
               "fusion_sm_clip": f"[{fc.SM_MIN}, max({fc.SM_MAX}, largest observed CCI of the pixel)]"})


def _read_marker(ledger: store.Ledger, key: str) -> dict[str, Any]:
    info = ledger.info(key)
    if info is None:  # cannot happen under the run lock: each unit's task marked it before returning
        raise StoreError(ledger.url, f"the ledger has no marker for the finished chunk {key}.",
                         "re-run the same command: it redoes the chunks without a marker.")
    return info


_OVERWRITE = "pass --overwrite (fuse(..., overwrite=True)) to refit the parameters and rebuild fused.zarr " \
             "(every published day may change)"


def _resolve_settings(cfg: RunConfig, method: str, stored: StoredParams | None, params_url: str) -> FitSettings:
    """The fit settings of this run: the stored ones (checked against the config), or new ones."""
    ref = cfg.fusion.reference_period
    f = cfg.fusion
    if stored is None:
        start, end = (ref.start, ref.end) if ref is not None else (cfg.period.start, cfg.period.end)
        return FitSettings(method, f.min_overlap_days, f.neighbourhood_cells, str(start), str(end))
    s = stored.settings
    if ref is not None and (str(ref.start), str(ref.end)) != (s.start, s.end):
        raise StoreError(params_url, f"the fusion parameters were fitted on the reference period {s.start}..{s.end}, "
                                     f"the config asks for fusion.reference_period {ref.start}..{ref.end}.",
                         f"set fusion.reference_period back to {{start: {s.start}, end: {s.end}}} (or remove it), "
                         f"or {_OVERWRITE}.")
    changed = [f"{k} {getattr(s, k)} -> {v}" for k, v in (("method", method), ("min_overlap_days", f.min_overlap_days),
                                                          ("neighbourhood_cells", f.neighbourhood_cells))
               if getattr(s, k) != v]
    if changed:
        raise StoreError(params_url, f"the fusion parameters were fitted with other settings ({'; '.join(changed)}).",
                         f"keep the old settings, or {_OVERWRITE}.")
    return s


def _published_times(url: str, so: dict) -> tuple[pd.DatetimeIndex, dict[str, Any], xr.Dataset]:
    ds = store.open_dataset(url, so)
    return pd.DatetimeIndex(ds["time"].values), dict(ds.attrs), ds


def _check_existing(cfg: RunConfig, url: str, so: dict, method: str, params: StoredParams | None) -> int:
    """Checks an existing fused store against this run; returns its published length (days)."""
    times, attrs, ds = _published_times(url, so)
    old = attrs.get("fusion_method")
    if old is not None and old != method:
        raise StoreError(url, f"an existing fused store was made with method {old!r}, not {method!r}.",
                         "pass --overwrite (fuse(..., overwrite=True)) to rebuild it, or keep the old method.")
    if "fusion_params_digest" not in attrs:
        raise StoreError(url, "this fused store was written by an older sm1km (parameters fitted over its whole "
                              "period, whole-series chunks): it cannot grow in time.", f"{_OVERWRITE}.")
    if params is None:
        raise StoreError(url, f"the fusion parameters it was made with ({PARAMS_NAME}) are missing or incomplete.",
                         f"{_OVERWRITE}.")
    if attrs["fusion_params_digest"] != params.digest:
        raise StoreError(url, f"it was made with other fusion parameters than those in {PARAMS_NAME} "
                              f"(digest {attrs['fusion_params_digest'][:12]}… vs {params.digest[:12]}…).",
                         f"{_OVERWRITE}.")
    tb = cfg.grid.time_block_days
    have = ds["sm"].encoding.get("chunks", (None,))[0]
    if have != tb:
        raise StoreError(url, f"its time chunks are {have} days, the config's grid.time_block_days is {tb}.",
                         f"set grid.time_block_days: {have}, or {_OVERWRITE}.")
    lat, lon = grid.region_coords(cfg.coarse_region)
    if ds.sizes.get("lat") != lat.size or ds.sizes.get("lon") != lon.size or \
            not np.allclose(ds["lat"].values, lat, atol=1e-6) or not np.allclose(ds["lon"].values, lon, atol=1e-6):
        raise StoreError(url, "its grid does not match the config region.", f"choose another store.root, or {_OVERWRITE}.")
    dates = cfg.dates()
    n = len(times)
    if n > len(dates) or not times.equals(dates[:n]):
        extra = (f"it holds {times[0].date()}..{times[-1].date()}" if n else "it holds no day")
        raise StoreError(url, f"{extra}, which is not a prefix of the run period {dates[0].date()}..{dates[-1].date()} "
                              "(a fused store only grows at its end).",
                         f"set period to start on {times[0].date() if n else dates[0].date()} and end on or after "
                         f"{times[-1].date() if n else dates[-1].date()}, or {_OVERWRITE}.")
    return n


#: ledger key written once the fused store's template is complete (not a unit: no region key)
TEMPLATE_MARK = "template"


def _template_complete(ledger: store.Ledger) -> bool:
    """Was the existing store's template written to the end? Its mark, or (stores from before the
    mark) any unit marker: units are written only after the template."""
    keys = ledger.keys()
    return TEMPLATE_MARK in keys or any(k.startswith(("lat-", "lon-", "time-")) for k in keys)


def fuse(cfg: RunConfig, client=None, *, method: str | None = None, overwrite: bool = False) -> StageResult:
    """Write or grow ``fused.zarr`` (resumable). Returns ``{"fused": url}`` (``.stats``: units =
    (chunk × time block) total/written/skipped, blocks_total/blocks_redone, and the store's pixel counts).

    The parameters are fitted once (``fused_params.zarr``, on ``fusion.reference_period``, default the
    run's period) and reused by every later run: a store holding a prefix of the period grows by the
    missing days only; a time block whose inputs changed (a day revised upstream) is recomputed.
    ``method`` overrides ``cfg.fusion.method``; ``overwrite`` refits the parameters and rebuilds the store.
    """
    method = method or cfg.fusion.method
    if method not in fc.METHODS:
        raise ConfigError("fusion.method", f"unknown method {method!r}.", f"use one of {', '.join(fc.METHODS)}.")
    so = cfg.store.storage_options()
    url = cfg.store.url(STORE_NAME)
    params_url = cfg.store.url(PARAMS_NAME)
    inp = open_inputs(cfg)
    digests = InputDigests.read(cfg, so)
    ledger = store.Ledger(cfg.store.root, STORE_NAME, so)
    blocks_rec = deps.BlockDigests(cfg.store.root, STORE_NAME, so)
    stored = None if overwrite else read_stored_params(cfg, so)
    exists = store.exists(url, so) and not overwrite
    if exists and not _template_complete(ledger):
        # a run killed while it wrote the store's template (metadata, coordinates) and before any unit:
        # the partial store is not resumed, it is written again (nothing in it is published or computed)
        log.warning("fuse: %s was left half-created by an interrupted run: writing its template again", url)
        exists = False
    n_pub = _check_existing(cfg, url, so, method, stored) if exists else 0
    settings = _resolve_settings(cfg, method, stored, params_url)
    if stored is None:  # first run, --overwrite, or an interrupted fit: (re)fit, then a new fused store
        ref_inp = open_inputs(cfg, settings.dates, "fusion reference period")  # before anything is removed
        if overwrite:
            ledger.clear()
            store.remove(url, so)
            store.remove(_params_ledger(cfg, so), so)
        stored = fit(cfg, settings, digests, client, ref_inp)
        exists = False
    else:
        _warn_revised_reference(cfg, so, digests)
    dates = cfg.dates()
    nt, tb = len(dates), cfg.grid.time_block_days
    if not exists:
        template, enc = _template(cfg, inp, settings, stored.digest)
        store.create_template(url, template, enc, so, overwrite=True)
        ledger.clear()  # a new store: markers of an older one mean nothing
        ledger.mark(TEMPLATE_MARK, {"store": STORE_NAME})  # the template is complete
    elif n_pub < nt:
        extend_time(url, dates[n_pub:], so)
    published = exists and n_pub == nt and store.open_group(url, so).metadata.consolidated_metadata is not None

    blocks = time_blocks(nt, tb)
    day_iso = [_iso(d) for d in dates]
    current = {block_key(b.start, tb): deps.digest_of({"version": APPLY_VERSION, "params": stored.digest,
                                                       "days": day_iso[b], "inputs": [digests.of(d) for d in day_iso[b]]})
               for b in blocks}
    recorded = blocks_rec.read()
    stale = [k for k in current if recorded.get(k) != current[k]]
    units = list(plan_units(cfg.coarse_region, cfg.fusion.space_chunk, blocks))
    if published and not stale:
        log.info("fuse: %s is up to date (%d days %s..%s, %d time blocks, parameters %s…): nothing to do",
                 url, nt, day_iso[0], day_iso[-1], len(blocks), stored.digest[:12])
        pub: dict[str, Any] = dict(store.open_group(url, so).attrs.asdict())
        pub_totals = {k[len("fusion_"):]: int(v) for k, v in pub.items() if k.startswith("fusion_") and
                      (k.endswith("_pixels") or k.endswith("_pixel_days") or k.endswith("_without_data"))}
        return StageResult({"fused": url}, {"units_total": len(units), "units_written": 0,
                                            "units_skipped": len(units), "blocks_total": len(blocks),
                                            "blocks_redone": 0, **dict(sorted(pub_totals.items()))})

    applied_url = store.join(_params_ledger(cfg, so), APPLIED_RECORD)
    record = (store.read_json(applied_url, so) or {}) if exists else {}
    applied = record.get("days", {})
    ledger.fs.invalidate_cache(ledger.path)
    present = ledger.keys()
    todo: list[WorkUnit] = []
    for b in blocks:
        k = block_key(b.start, tb)
        if k not in stale:
            continue
        bunits = [u for u in units if u.t0 == b.start]
        redo = [u for u in bunits if not (u.key in present and deps.unit_fresh(ledger.info(u.key), current[k]))]
        todo += redo
        revised = [d for d in day_iso[b] if d in applied and list(applied[d]) != digests.of(d)]
        new = [d for d in day_iso[b] if d not in applied]
        why = "; ".join(filter(None, [f"{len(new)} new day(s)" if new and exists else "",
                                      f"revised upstream: {', '.join(revised)}" if revised else "",
                                      "new store" if not exists else ""])) or "not recorded as finished"
        log.info("fuse: time block %s (%s..%s): %d of %d chunks to do (%s)", k, day_iso[b][0], day_iso[b][-1],
                 len(redo), len(bunits), why)
    log.info("fuse: %d units (%d chunks of %d cells × %d time blocks of %d days), %d to do (method %s)",
             len(units), len(units) // max(len(blocks), 1), cfg.fusion.space_chunk, len(blocks), tb, len(todo), method)
    ctx = FuseContext(inputs=inp, url=url, params_url=params_url, root=cfg.store.root, method=method,
                      neighbourhood_cells=settings.neighbourhood_cells, block_days=tb, deps=current)
    with stage_client(cfg, client) as c:
        written = sum(1 for _ in run_tasks(c, functools.partial(_fuse_unit, ctx=ctx), todo, name="fuse_chunk"))
    ledger.fs.invalidate_cache(ledger.path)  # s3fs: a listing cached before the tasks wrote their markers

    # day counts per block: the record's for the blocks left alone, the markers' for the others
    old_counts = record.get("block_counts", {})
    block_counts: dict[str, dict[str, int]] = {}
    for b in blocks:
        k = block_key(b.start, tb)
        if k not in stale and k in old_counts:
            block_counts[k] = {n: int(v) for n, v in old_counts[k].items()}
            continue
        acc: dict[str, int] = {}
        for u in (u for u in units if u.t0 == b.start):
            for n, v in _read_marker(ledger, u.key).items():
                if n != "deps":
                    acc[n] = acc.get(n, 0) + int(v)
        block_counts[k] = acc
    totals: dict[str, int] = dict(stored.counts)
    for acc in block_counts.values():
        for n, v in acc.items():
            totals[n] = totals.get(n, 0) + v
    keep = {u.key for u in units}
    for k in ledger.keys():  # markers of partly filled blocks a grown block replaced
        if k not in keep and k.startswith("lat-") and "_time-" in k:
            store.remove(store.join(ledger.url, f"{k}.json"), so)
    _warn_fallbacks(totals, cfg, "fuse")
    old_attrs = store.open_group(url, so, use_consolidated=False).attrs.asdict()
    attrs: dict[str, Any] = _store_attrs(cfg, inp, settings, stored.digest)
    for k in ("date_created", "history"):  # the store's creation stays what it was
        if k in old_attrs:
            attrs[k] = old_attrs[k]
    attrs.update(store.coverage_attrs(dates))
    attrs.update({f"fusion_{k}": v for k, v in totals.items()})
    store.finalize(url, so, dict(sorted(attrs.items())))
    # then the records (a run killed before them redoes no unit: the markers are current, it finalizes again)
    store.write_json(applied_url, {"days": {d: digests.of(d) for d in day_iso}, "block_counts": block_counts}, so,
                     separators=(",", ":"))
    blocks_rec.record({k: current[k] for k in stale})
    log.info("fuse: wrote %s (%s)", url, ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))
    stats = {"units_total": len(units), "units_written": written, "units_skipped": len(units) - len(todo),
             "blocks_total": len(blocks), "blocks_redone": len(stale), **dict(sorted(totals.items()))}
    return StageResult({"fused": url}, stats)


def _warn_fallbacks(totals: dict, cfg: RunConfig, what: str) -> None:
    nb, un = totals.get("neighbourhood_pixels", 0), totals.get("unscaled_pixels", 0)
    if nb or un:
        log.warning("%s: %d of %d land pixels have fewer than %d days with both CCI and ERA5: %d matched on "
                    "their neighbourhood (radius %d cells), %d filled with unscaled ERA5 (source_flag 3)",
                    what, nb + un, totals.get("land_pixels", 0), cfg.fusion.min_overlap_days, nb,
                    cfg.fusion.neighbourhood_cells, un)
    borrowed = totals.get("era5_borrowed_pixel_days", 0)
    if borrowed:
        log.warning("%s: %d land pixel-days had no ERA5 of their own (coast): filled from the neighbours' ERA5 "
                    "(source_flag 3)", what, borrowed)
    gaps = totals.get("land_pixel_days_without_data", 0)
    if gaps:
        log.warning("%s: %d land pixel-days have neither CCI nor ERA5 and stay NaN (source_flag 0)", what, gaps)


__all__ = ["fuse", "fit", "fusion_units", "open_inputs", "read_block", "read_params", "land_mask", "positions",
           "time_indexer", "block_key", "FusionInputs", "FitSettings", "STORE_NAME", "PARAMS_NAME"]
