"""The ``fuse`` stage: ``inputs/cci.zarr`` + ``inputs/era5.zarr`` → gap-free 25 km ``fused.zarr``.

One dask task per spatial chunk of ``fusion.space_chunk`` cells with the whole time series (a
:class:`~sm1km.runtime.units.WorkUnit` without a time block); each task reads its chunk plus a
halo of ``fusion.neighbourhood_cells`` (``unit.grown(halo, ...)``, for the neighbourhood
fallback), calls the pure :func:`sm1km.core.fusion.fuse_block_detailed`, writes its region and
marks it in the ledger. Template first, consolidated metadata last: a re-run finishes what is
missing and the store comes out byte-identical (with ``SOURCE_DATE_EPOCH`` set).

Land = ``land_fraction >= 0.5`` **or** CCI observed at least once in the period (a coastal cell that
the satellite sees is land even if ERA5 calls it sea). Everything else is sea: NaN, flag 0.

Returns a :class:`~sm1km.runtime.result.StageResult` ``{"fused": url}`` with ``stats``
``units_total/written/skipped`` (chunks) and the pixel counts of the whole store (the
``fusion_*`` attributes). The withheld-observation experiment that scores the fusion reads its
blocks through :func:`open_inputs` / :func:`read_block` / :func:`land_mask`: it is
``sm1km.validation.withheld``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core import fusion as fc
from sm1km.core import grid
from sm1km.errors import ConfigError, InputError, StoreError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.runtime.runner import run_tasks
from sm1km.runtime.units import WorkUnit, plan_units
from sm1km.storage import store

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
}
FLAG_ATTRS = {
    "long_name": "source of the fused soil moisture value",
    "flag_values": np.array(fc.FLAG_VALUES, dtype=np.uint8),
    "flag_meanings": fc.FLAG_MEANINGS,
    "valid_range": np.array([0, 3], dtype=np.uint8),
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


def positions(url: str, have, dates: pd.DatetimeIndex, what: str) -> list[int]:
    """Positions of ``dates`` in a store's time axis ``have``; an InputError if one is missing."""
    idx = pd.DatetimeIndex(have).normalize().get_indexer(dates)
    missing = dates[idx < 0]
    if len(missing):
        raise InputError(url, f"{what} lacks {len(missing)} day(s) of the run period "
                              f"(first missing: {missing[0].date()}).",
                         "ingest the whole period (sm1km ingest --config run.yaml) or shorten period.")
    return [int(i) for i in idx]


def _check_grid(url: str, ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> None:
    ok = ("lat" in ds.coords and "lon" in ds.coords and ds.sizes.get("lat") == lat.size and
          ds.sizes.get("lon") == lon.size and np.allclose(ds["lat"].values, lat, atol=1e-6) and
          np.allclose(ds["lon"].values, lon, atol=1e-6))
    if not ok:
        raise InputError(url, "its 0.25° grid does not match the config region "
                              f"({lat.size}×{lon.size} cells from lat {lat[0]} / lon {lon[0]}).",
                         "re-run sm1km ingest with this config (region changed?).")


def open_inputs(cfg: RunConfig) -> FusionInputs:
    """Check that both input stores exist, hold the variables, the region and the period."""
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
    dates = cfg.dates()
    return FusionInputs(cci_url, era5_url, so, positions(cci_url, cci["time"].values, dates, "cci.zarr"),
                        positions(era5_url, era5["time"].values, dates, "era5.zarr"),
                        int(lat.size), int(lon.size), region.row0, region.col0)


def time_indexer(pos: list[int]):
    """A slice when the positions are contiguous (efficient reads), else the list."""
    if pos and pos == list(range(pos[0], pos[0] + len(pos))):
        return slice(pos[0], pos[0] + len(pos))
    return pos


def fusion_units(cfg: RunConfig) -> Iterator[WorkUnit]:
    """The chunks of a run: ``fusion.space_chunk``² cells of the region each, whole period, row-major."""
    return plan_units(cfg.coarse_region, cfg.fusion.space_chunk)


def read_block(inp: FusionInputs, window: WorkUnit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cci (t,y,x), era5 (t,y,x), land_fraction (y,x)) of ``window`` (a haloed unit), float64."""
    rows, cols = window.coarse
    cci = store.open_dataset(inp.cci_url, inp.storage_options)
    era5 = store.open_dataset(inp.era5_url, inp.storage_options)
    c = cci["sm"].isel(time=time_indexer(inp.cci_time), lat=rows, lon=cols).values.astype(np.float64)
    e = era5["swvl1"].isel(time=time_indexer(inp.era5_time), lat=rows, lon=cols).values.astype(np.float64)
    lf = era5["land_fraction"].isel(lat=rows, lon=cols).values.astype(np.float64)
    return c, e, lf


def land_mask(cci: np.ndarray, land_fraction: np.ndarray) -> np.ndarray:
    """Land = land_fraction ≥ 0.5 or CCI observed at least once (the stage's documented rule)."""
    with np.errstate(invalid="ignore"):
        return (land_fraction >= LAND_FRACTION_MIN) | np.isfinite(cci).any(axis=0)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuseContext:
    """What every chunk task needs besides its unit (small: URLs, positions, parameters)."""

    inputs: FusionInputs
    url: str
    root: str
    method: str
    min_overlap_days: int
    neighbourhood_cells: int


def _fuse_chunk(unit: WorkUnit, ctx: FuseContext) -> dict:
    """One task: read the haloed chunk, fuse, write its region, mark it done. Returns pixel counts."""
    inp = ctx.inputs
    window = unit.grown(ctx.neighbourhood_cells, inp.ny, inp.nx)
    c, e, lf = read_block(inp, window)
    res = fc.fuse_block_detailed(c, e, land_mask(c, lf), ctx.method, ctx.min_overlap_days,
                                 ctx.neighbourhood_cells)
    ys, xs = unit.within(window)
    dims = ("time", "lat", "lon")
    block = xr.Dataset({"sm": (dims, res.sm[:, ys, xs]), "source_flag": (dims, res.source_flag[:, ys, xs])})
    rows, cols = unit.coarse
    region = {"time": slice(0, res.sm.shape[0]), "lat": rows, "lon": cols}
    store.write_region(ctx.url, block, region, inp.storage_options)
    inner = res.crop(ys, xs)
    counts = inner.counts()
    counts["land_pixel_days_without_data"] = int(((inner.source_flag == fc.FLAG_NO_DATA) &
                                                  (inner.pixel_kind != fc.PIXEL_NOT_LAND)[None]).sum())
    store.Ledger(ctx.root, STORE_NAME, inp.storage_options).mark(unit.key, counts)
    return counts


def _template(cfg: RunConfig, inp: FusionInputs, method: str) -> tuple[xr.Dataset, dict]:
    import dask.array as da

    lat, lon = grid.region_coords(cfg.coarse_region)
    times = cfg.dates()
    nt, sc = len(times), cfg.fusion.space_chunk
    chunks = (min(nt, MAX_TIME_CHUNK), min(sc, inp.ny), min(sc, inp.nx))
    dims = ("time", "lat", "lon")
    shape = (nt, inp.ny, inp.nx)
    sm_attrs = dict(SM_ATTRS)
    ds = xr.Dataset(
        {"sm": (dims, da.zeros(shape, dtype="float32", chunks=chunks), sm_attrs),
         "source_flag": (dims, da.zeros(shape, dtype="uint8", chunks=chunks), dict(FLAG_ATTRS))},
        coords={"time": ("time", times.values.astype("datetime64[ns]"), {"standard_name": "time", "axis": "T"}),
                "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
                "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"})})
    inputs = []
    for name, url in (("inputs/cci.zarr", inp.cci_url), ("inputs/era5.zarr", inp.era5_url)):
        inputs.append({"name": name, "sha256": store.sha256_file(store.join(url, "zarr.json"), inp.storage_options),
                       "sha256_of": "zarr.json (metadata)"})
    ds.attrs = store.provenance_attrs(
        cfg, title="sm1km fused 25 km daily surface soil moisture (gap-free)",
        summary="ESA CCI SM COMBINED where observed; elsewhere ERA5 swvl1 rescaled to CCI per pixel "
                f"({method} matching over the overlap days), neighbourhood or unscaled ERA5 where a pixel "
                "has too few CCI days (see source_flag).",
        inputs=inputs,
        extra={"fusion_method": method, "fusion_min_overlap_days": cfg.fusion.min_overlap_days,
               "fusion_neighbourhood_cells": cfg.fusion.neighbourhood_cells,
               "fusion_land_definition": f"land_fraction >= {LAND_FRACTION_MIN} or CCI observed at least once",
               "fusion_sm_clip": f"[{fc.SM_MIN}, max({fc.SM_MAX}, largest observed CCI of the pixel)]"})
    enc = {"sm": {"chunks": chunks, "_FillValue": np.float32("nan")},
           "source_flag": {"chunks": chunks},
           "time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"}}
    return ds, enc


def _read_marker(ledger: store.Ledger, key: str) -> dict[str, Any]:
    info = ledger.info(key)
    if info is None:  # cannot happen under the run lock: each unit's task marked it before returning
        raise StoreError(ledger.url, f"the ledger has no marker for the finished chunk {key}.",
                         "re-run the same command: it redoes the chunks without a marker.")
    return info


def fuse(cfg: RunConfig, client=None, *, method: str | None = None, overwrite: bool = False) -> StageResult:
    """Write ``fused.zarr`` (resumable). Returns ``{"fused": url}`` (``.stats``: units = chunks
    total/written/skipped, and the store's pixel counts).

    ``method`` overrides ``cfg.fusion.method``; ``overwrite`` discards an existing store and ledger.
    """
    method = method or cfg.fusion.method
    if method not in fc.METHODS:
        raise ConfigError("fusion.method", f"unknown method {method!r}.", f"use one of {', '.join(fc.METHODS)}.")
    so = cfg.store.storage_options()
    url = cfg.store.url(STORE_NAME)
    inp = open_inputs(cfg)
    ledger = store.Ledger(cfg.store.root, STORE_NAME, so)
    if overwrite:
        ledger.clear()
    elif store.exists(url, so):
        old = store.open_group(url, so).attrs.get("fusion_method")
        if old is not None and old != method:
            raise StoreError(url, f"an existing fused store was made with method {old!r}, not {method!r}.",
                             "pass --overwrite (fuse(..., overwrite=True)) to rebuild it, or keep the old method.")
    template, enc = _template(cfg, inp, method)
    if store.create_template(url, template, enc, so, overwrite=overwrite):
        ledger.clear()  # a new store: markers of an older one mean nothing
    halo = cfg.fusion.neighbourhood_cells
    units = list(fusion_units(cfg))
    done = ledger.keys()
    todo = [u for u in units if u.key not in done]
    log.info("fuse: %d chunks of %d cells, %d already done, %d to do (method %s)",
             len(units), cfg.fusion.space_chunk, len(units) - len(todo), len(todo), method)
    ctx = FuseContext(inputs=inp, url=url, root=cfg.store.root, method=method,
                      min_overlap_days=cfg.fusion.min_overlap_days, neighbourhood_cells=halo)
    with stage_client(cfg, client) as c:
        written = sum(1 for _ in run_tasks(c, functools.partial(_fuse_chunk, ctx=ctx), todo, name="fuse_chunk"))

    totals: dict[str, int] = {}
    for u in units:
        for k, v in _read_marker(ledger, u.key).items():
            totals[k] = totals.get(k, 0) + int(v)
    _warn_fallbacks(totals, cfg, "fuse")
    attrs: dict[str, Any] = store.coverage_attrs(cfg.dates())
    attrs.update({f"fusion_{k}": v for k, v in totals.items()})
    # one canonical (sorted) attribute order, whatever a crashed earlier run left behind
    group = store.open_group(url, so, mode="r+")
    merged = {**group.attrs.asdict(), **attrs}
    group.attrs.put(dict(sorted(merged.items())))
    store.finalize(url, so)
    log.info("fuse: wrote %s (%s)", url, ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))
    stats = {"units_total": len(units), "units_written": written, "units_skipped": len(units) - len(todo),
             **dict(sorted(totals.items()))}
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


__all__ = ["fuse", "fusion_units", "open_inputs", "read_block", "land_mask", "positions", "time_indexer",
           "FusionInputs", "STORE_NAME"]
