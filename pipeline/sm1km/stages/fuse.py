"""The ``fuse`` stage: ``inputs/cci.zarr`` + ``inputs/era5.zarr`` → gap-free 25 km ``fused.zarr``.

One dask task per spatial chunk of ``fusion.space_chunk`` cells with the whole time series; each
task reads its chunk plus a halo of ``fusion.neighbourhood_cells`` (for the neighbourhood fallback),
calls the pure :func:`sm1km.core.fusion.fuse_block_detailed`, writes its region and marks it in
the ledger. Template first, consolidated metadata last: a re-run finishes what is missing and the
store comes out byte-identical (with ``SOURCE_DATE_EPOCH`` set).

Land = ``land_fraction >= 0.5`` **or** CCI observed at least once in the period (a coastal cell that
the satellite sees is land even if ERA5 calls it sea). Everything else is sea: NaN, flag 0.

``withheld_experiment`` hides a seeded random fraction of the CCI observations, fuses without them
(in memory, chunk-wise; ``fused.zarr`` is not touched) and scores fused / ERA5 / climatology at the
hidden points; the result goes into ``report/metrics.json`` under ``fusion``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.core import fusion as fc
from sm1km.core import grid
from sm1km.storage import store
from sm1km.config import RunConfig
from sm1km.errors import ConfigError, InputError, StoreError
from sm1km.core.metrics import Moments
from sm1km.storage.metrics_json import update_metrics_json
from sm1km.runtime.client import locked_cli, with_lock_arguments
from sm1km.runtime.client import add_config_argument, load_config, stage_client

log = logging.getLogger(__name__)

STORE_NAME = "fused.zarr"
LAND_FRACTION_MIN = 0.5
MAX_TIME_CHUNK = 4096
CLIMATOLOGY_HALF_WINDOW = 15

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


def _positions(url: str, have, dates: pd.DatetimeIndex, what: str) -> list[int]:
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
    return FusionInputs(cci_url, era5_url, so, _positions(cci_url, cci["time"].values, dates, "cci.zarr"),
                        _positions(era5_url, era5["time"].values, dates, "era5.zarr"),
                        int(lat.size), int(lon.size), region.row0, region.col0)


def _time_indexer(pos: list[int]):
    """A slice when the positions are contiguous (efficient reads), else the list."""
    if pos and pos == list(range(pos[0], pos[0] + len(pos))):
        return slice(pos[0], pos[0] + len(pos))
    return pos


def _chunks(ny: int, nx: int, size: int) -> list[tuple[int, int, int, int]]:
    return [(y0, min(y0 + size, ny), x0, min(x0 + size, nx))
            for y0 in range(0, ny, size) for x0 in range(0, nx, size)]


@dataclass(frozen=True)
class _Block:
    """A chunk [y0:y1, x0:x1] and its haloed read window [hy0:hy1, hx0:hx1] (region indices)."""

    y0: int
    y1: int
    x0: int
    x1: int
    hy0: int
    hy1: int
    hx0: int
    hx1: int

    @classmethod
    def make(cls, y0, y1, x0, x1, halo, ny, nx):
        return cls(y0, y1, x0, x1, max(y0 - halo, 0), min(y1 + halo, ny), max(x0 - halo, 0), min(x1 + halo, nx))

    @property
    def inner(self) -> tuple[slice, slice]:
        """The chunk inside the haloed arrays."""
        return (slice(self.y0 - self.hy0, self.y1 - self.hy0), slice(self.x0 - self.hx0, self.x1 - self.hx0))

    @property
    def key(self) -> str:
        return store.region_key(lat=slice(self.y0, self.y1), lon=slice(self.x0, self.x1))


def read_block(inp: FusionInputs, b: _Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cci (t,y,x), era5 (t,y,x), land_fraction (y,x)) of the haloed window, float64."""
    win = {"lat": slice(b.hy0, b.hy1), "lon": slice(b.hx0, b.hx1)}
    cci = store.open_dataset(inp.cci_url, inp.storage_options)
    era5 = store.open_dataset(inp.era5_url, inp.storage_options)
    c = cci["sm"].isel(time=_time_indexer(inp.cci_time), **win).values.astype(np.float64)
    e = era5["swvl1"].isel(time=_time_indexer(inp.era5_time), **win).values.astype(np.float64)
    lf = era5["land_fraction"].isel(**win).values.astype(np.float64)
    return c, e, lf


def land_mask(cci: np.ndarray, land_fraction: np.ndarray) -> np.ndarray:
    """Land = land_fraction ≥ 0.5 or CCI observed at least once (the stage's documented rule)."""
    with np.errstate(invalid="ignore"):
        return (land_fraction >= LAND_FRACTION_MIN) | np.isfinite(cci).any(axis=0)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _fuse_chunk(job: dict) -> dict:
    """One task: read the haloed chunk, fuse, write its region, mark it done. Returns pixel counts."""
    inp: FusionInputs = job["inputs"]
    b: _Block = job["block"]
    c, e, lf = read_block(inp, b)
    res = fc.fuse_block_detailed(c, e, land_mask(c, lf), job["method"], job["min_overlap_days"],
                                 job["neighbourhood_cells"])
    ys, xs = b.inner
    dims = ("time", "lat", "lon")
    block = xr.Dataset({"sm": (dims, res.sm[:, ys, xs]), "source_flag": (dims, res.source_flag[:, ys, xs])})
    region = {"time": slice(0, res.sm.shape[0]), "lat": slice(b.y0, b.y1), "lon": slice(b.x0, b.x1)}
    store.write_region(job["url"], block, region, inp.storage_options)
    inner = res.crop(ys, xs)
    counts = inner.counts()
    counts["land_pixel_days_without_data"] = int(((inner.source_flag == fc.FLAG_NO_DATA) &
                                                  (inner.pixel_kind != fc.PIXEL_NOT_LAND)[None]).sum())
    store.Ledger(job["root"], STORE_NAME, inp.storage_options).mark(b.key, counts)
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


def _run_jobs(client, fn, jobs: list[dict]) -> list:
    """Run ``fn`` over ``jobs`` on the dask client (or in-process when there is none), in order."""
    if not jobs:
        return []
    if client is None:
        return [fn(j) for j in jobs]
    from distributed import as_completed

    futures = client.map(fn, jobs, pure=False)
    done = 0
    for _ in as_completed(futures):
        done += 1
        if done == len(jobs) or done % max(1, len(jobs) // 10) == 0:
            log.info("%s: %d/%d chunks done", fn.__name__.strip("_"), done, len(jobs))
    return client.gather(futures)


def _read_marker(ledger: store.Ledger, key: str) -> dict:
    return ledger.info(key)


def fuse(cfg: RunConfig, client=None, *, method: str | None = None, overwrite: bool = False) -> dict[str, str]:
    """Write ``fused.zarr`` (resumable). Returns ``{"fused": url}``.

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
    blocks = [_Block.make(*c, halo, inp.ny, inp.nx) for c in _chunks(inp.ny, inp.nx, cfg.fusion.space_chunk)]
    done = ledger.keys()
    todo = [b for b in blocks if b.key not in done]
    log.info("fuse: %d chunks of %d cells, %d already done, %d to do (method %s)",
             len(blocks), cfg.fusion.space_chunk, len(blocks) - len(todo), len(todo), method)
    jobs = [{"inputs": inp, "block": b, "url": url, "root": cfg.store.root, "method": method,
             "min_overlap_days": cfg.fusion.min_overlap_days, "neighbourhood_cells": halo} for b in todo]
    with stage_client(cfg, client) as c:
        _run_jobs(c, _fuse_chunk, jobs)

    totals: dict[str, int] = {}
    for b in blocks:
        for k, v in _read_marker(ledger, b.key).items():
            totals[k] = totals.get(k, 0) + int(v)
    _warn_fallbacks(totals, cfg, "fuse")
    attrs = store.coverage_attrs(cfg.dates())
    attrs.update({f"fusion_{k}": v for k, v in totals.items()})
    # one canonical (sorted) attribute order, whatever a crashed earlier run left behind
    group = store.open_group(url, so, mode="r+")
    merged = {**group.attrs.asdict(), **attrs}
    group.attrs.put(dict(sorted(merged.items())))
    store.finalize(url, so)
    log.info("fuse: wrote %s (%s)", url, ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))
    return {"fused": url}


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


# --------------------------------------------------------------------------------------------
# the withheld-observation experiment
# --------------------------------------------------------------------------------------------
def truth_25km_url(cfg: RunConfig) -> str | None:
    """``truth_25km.zarr`` beside ``cfg.inputs.truth`` (synthetic world only), else None."""
    if not cfg.inputs.truth:
        return None
    t = cfg.inputs.truth.rstrip("/")
    return t.rsplit("/", 1)[0] + "/truth_25km.zarr" if "/" in t else "truth_25km.zarr"


@dataclass(frozen=True)
class _TruthMap:
    url: str
    storage_options: dict
    time: list
    row_off: int
    col_off: int


def _truth_map(cfg: RunConfig, inp: FusionInputs) -> _TruthMap | None:
    url = truth_25km_url(cfg)
    if url is None:
        return None
    so = cfg.store.storage_options() if store.is_remote(url) else {}
    try:
        ds = store.open_dataset(url, so)
    except StoreError:
        log.warning("withheld experiment: %s not found, so no comparison with the truth", url)
        return None
    lat, lon = ds["lat"].values, ds["lon"].values
    r = (grid.coarse_lat(inp.row0) - lat) * grid.COARSE_PER_DEG
    c = (lon - grid.coarse_lon(inp.col0)) * grid.COARSE_PER_DEG
    r0, c0 = int(np.rint(-r[0])), int(np.rint(-c[0]))
    if not (np.allclose(r, np.rint(r), atol=1e-3) and r0 >= 0 and c0 >= 0 and
            r0 + inp.ny <= lat.size and c0 + inp.nx <= lon.size):
        log.warning("withheld experiment: %s does not cover the region on the 0.25° grid; truth comparison skipped",
                    url)
        return None
    try:
        tpos = _positions(url, ds["time"].values, cfg.dates(), "truth_25km.zarr")
    except InputError as exc:
        log.warning("withheld experiment: %s; truth comparison skipped", exc)
        return None
    return _TruthMap(url, so, tpos, r0, c0)


def _withheld_chunk(job: dict) -> dict:
    """Moments at the hidden points of one chunk for every estimate (tuples, for pickling)."""
    inp: FusionInputs = job["inputs"]
    b: _Block = job["block"]
    tm: _TruthMap | None = job["truth"]
    c, e, lf = read_block(inp, b)
    land = land_mask(c, lf)
    obs = np.isfinite(c) & land[None]
    days = job["day_numbers"]
    rows = inp.row0 + np.arange(b.hy0, b.hy1)
    cols = inp.col0 + np.arange(b.hx0, b.hx1)
    hidden = fc.withheld_mask(obs, job["fraction"], job["seed"], days, rows, cols)
    train = np.where(hidden, np.nan, c)
    doy = job["doy"]
    mo, nb = job["min_overlap_days"], job["neighbourhood_cells"]
    est = {f"fused_{m}": fc.fuse_block_detailed(train, e, land, m, mo, nb).sm for m in job["methods"]}
    est["era5"] = np.where(land[None], e, np.nan)
    est["climatology"] = fc.doy_climatology(train, doy, CLIMATOLOGY_HALF_WINDOW)

    ys, xs = b.inner
    inner = (slice(None), ys, xs)
    h = hidden[inner]
    out: dict[str, Any] = {"withheld": {k: Moments.from_arrays(v[inner][h], c[inner][h]).as_tuple()
                                        for k, v in est.items()},
                           "counts": {"hidden": int(h.sum()), "observed": int(obs[inner].sum())}}
    if tm is not None:
        tr = store.open_dataset(tm.url, tm.storage_options)["sm"].isel(
            time=_time_indexer(tm.time), lat=slice(tm.row_off + b.y0, tm.row_off + b.y1),
            lon=slice(tm.col_off + b.x0, tm.col_off + b.x1)).values.astype(np.float64)
        out["vs_truth"] = {k: Moments.from_arrays(v[inner][h], tr[h]).as_tuple() for k, v in est.items()}
        out["vs_truth"]["cci"] = Moments.from_arrays(c[inner][h], tr[h]).as_tuple()
        # the real gaps (CCI never observed that day), fused with all observations
        gaps = (land[None] & ~np.isfinite(c))[inner]
        full = {f"fused_{m}": fc.fuse_block_detailed(c, e, land, m, mo, nb).sm for m in job["methods"]}
        full["era5"] = est["era5"]
        full["climatology"] = fc.doy_climatology(c, doy, CLIMATOLOGY_HALF_WINDOW)
        out["vs_truth_gaps"] = {k: Moments.from_arrays(v[inner][gaps], tr[gaps]).as_tuple() for k, v in full.items()}
    return out


def withheld_experiment(cfg: RunConfig, fraction: float = 0.2, client=None, *,
                        methods: tuple[str, ...] = fc.METHODS, write: bool = True) -> dict:
    """Hide ``fraction`` of the CCI observations (seed ``cfg.seeds.withhold``), fuse without them and
    score every estimate at the hidden points. Writes ``report/metrics.json`` → ``fusion``.

    Returns ``{"withheld": {name: {n, r, ubrmse, bias, rmse}}, "vs_truth": {...}, "vs_truth_gaps": {...},
    "default_method": ..., ...}`` with names ``fused`` (= the configured method), ``fused_<method>``,
    ``era5`` (raw, regridded) and ``climatology`` (smoothed CCI day-of-year climatology of the
    non-withheld days); ``vs_truth*`` only when the synthetic truth exists.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError("--withhold", f"the withheld fraction must be in (0, 1), got {fraction}.",
                          "use e.g. --withhold 0.2.")
    default = cfg.fusion.method
    methods = tuple(dict.fromkeys((default, *methods)))
    inp = open_inputs(cfg)
    tm = _truth_map(cfg, inp)
    dates = cfg.dates()
    day_numbers = ((dates - pd.Timestamp("1970-01-01")).days).to_numpy()
    halo = cfg.fusion.neighbourhood_cells
    blocks = [_Block.make(*c, halo, inp.ny, inp.nx) for c in _chunks(inp.ny, inp.nx, cfg.fusion.space_chunk)]
    jobs = [{"inputs": inp, "block": b, "truth": tm, "fraction": float(fraction), "seed": cfg.seeds.withhold,
             "day_numbers": day_numbers, "doy": dates.day_of_year.to_numpy(), "methods": methods,
             "min_overlap_days": cfg.fusion.min_overlap_days, "neighbourhood_cells": halo} for b in blocks]
    with stage_client(cfg, client) as c:
        parts = _run_jobs(c, _withheld_chunk, jobs)

    def merged(group: str) -> dict[str, dict]:
        acc: dict[str, Moments] = {}
        for p in parts:
            for k, tup in p.get(group, {}).items():
                acc[k] = acc.get(k, Moments()) + Moments(*tup)
        res = {k: v.to_dict() for k, v in acc.items()}
        if f"fused_{default}" in res:
            res["fused"] = dict(res[f"fused_{default}"])
        return dict(sorted(res.items()))

    withheld = merged("withheld")
    result: dict[str, Any] = {
        "withheld": withheld,
        "default_method": default,
        "fraction": float(fraction),
        "seed": cfg.seeds.withhold,
        "n_observed": sum(p["counts"]["observed"] for p in parts),
        "n_withheld": sum(p["counts"]["hidden"] for p in parts),
        "period": [str(cfg.period.start), str(cfg.period.end)],
        "climatology": f"per-pixel CCI day-of-year mean within ±{CLIMATOLOGY_HALF_WINDOW} days, "
                       "all years pooled, from the non-withheld days (pixel mean where the window is empty)",
    }
    if tm is not None:
        result["vs_truth"] = merged("vs_truth")
        result["vs_truth_gaps"] = merged("vs_truth_gaps")
    fused_scores = {m: withheld[f"fused_{m}"]["ubrmse"] for m in methods if f"fused_{m}" in withheld}
    finite = {m: s for m, s in fused_scores.items() if s is not None and np.isfinite(s)}
    result["best_method"] = min(finite, key=finite.get) if finite else None
    base = [withheld.get(k, {}).get("ubrmse") for k in ("era5", "climatology")]
    d = withheld.get("fused", {}).get("ubrmse")
    result["default_beats_baselines"] = bool(d is not None and np.isfinite(d) and
                                             all(x is None or not np.isfinite(x) or d < x for x in base))
    log.info("withheld experiment (%.0f%% of %d observations hidden): %s", 100 * fraction, result["n_observed"],
             "; ".join(f"{k} ubRMSE={v['ubrmse']:.4f} r={v['r']:.3f}" for k, v in withheld.items()
                       if np.isfinite(v["ubrmse"])))
    if write:
        result["metrics_json"] = update_metrics_json(cfg, "fusion", result)
    return result


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--method", choices=fc.METHODS, default=None,
                   help="matching method (default: fusion.method of the config)")
    p.add_argument("--withhold", type=float, default=None, metavar="FRACTION",
                   help="instead of writing fused.zarr, run the withheld-observation experiment hiding this "
                        "fraction of CCI observations (e.g. 0.2); results go to report/metrics.json")
    p.add_argument("--overwrite", action="store_true", help="discard an existing fused.zarr and its ledger")


@locked_cli("fuse")
def run_cli(args) -> int:
    cfg = load_config(args)
    if args.withhold is not None:
        if args.method:
            cfg = cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update={"method": args.method})})
        res = withheld_experiment(cfg, fraction=args.withhold)
        rows = [f"{'estimate':<14} {'n':>9} {'r':>7} {'ubRMSE':>8} {'bias':>8} {'RMSE':>8}"]
        for k, v in res["withheld"].items():
            rows.append(f"{k:<14} {v['n']:>9d} {v['r']:>7.3f} {v['ubrmse']:>8.4f} {v['bias']:>8.4f} {v['rmse']:>8.4f}")
        sys.stdout.write("withheld CCI observations (reference = the hidden CCI values):\n" + "\n".join(rows) + "\n")
        sys.stdout.write(f"default method: {res['default_method']}; best by ubRMSE: {res['best_method']}; "
                         f"written to {res['metrics_json']}\n")
        return 0
    out = fuse(cfg, method=args.method, overwrite=args.overwrite)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


__all__ = ["fuse", "withheld_experiment", "open_inputs", "land_mask", "truth_25km_url", "add_arguments",
           "run_cli", "STORE_NAME"]
