"""A tiny 0.25° world for the fusion tests: truth, CCI (noisy, gappy), ERA5 (biased), sea, coast,
a dense-forest pixel and a never-observed land pixel; written as ``inputs/cci.zarr`` /
``inputs/era5.zarr`` following the store contract (the ingest stage's outputs)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core import grid
from sm1km.storage import store

BBOX = {"west": 10.0, "south": 44.0, "east": 12.0, "north": 46.0}   # 8 x 8 cells


@dataclass
class World:
    truth: np.ndarray          # (t, y, x)
    cci: np.ndarray            # (t, y, x) NaN gaps
    era5: np.ndarray           # (t, y, x), 0 over sea
    land_fraction: np.ndarray  # (y, x)
    times: pd.DatetimeIndex


def make_world(nt: int = 60, ny: int = 8, nx: int = 8, seed: int = 0, start: str = "2020-03-01") -> World:
    rng = np.random.default_rng(seed)
    # regional rain pulses + slow drying, then per-pixel mean/amplitude and a local component
    rain = (rng.random(nt) < 0.15) * rng.uniform(0.5, 1.5, nt)
    s = np.zeros(nt)
    for i in range(1, nt):
        s[i] = 0.85 * s[i - 1] + rain[i]
    s = (s - s.mean()) / s.std()
    local = np.zeros((nt, ny, nx))
    for i in range(1, nt):
        local[i] = 0.8 * local[i - 1] + rng.normal(0, 0.4, (ny, nx))
    mean = rng.uniform(0.15, 0.32, (ny, nx))
    amp = rng.uniform(0.03, 0.07, (ny, nx))
    truth = np.clip(mean + amp * (s[:, None, None] + 0.4 * local), 0.02, 0.5)
    # ERA5: a different mean and variance per pixel, less noise
    a = rng.uniform(0.05, 0.15, (ny, nx))
    b = rng.uniform(0.6, 1.3, (ny, nx))
    era5 = a + b * truth + rng.normal(0, 0.008, truth.shape)
    cci = truth + rng.normal(0, 0.02, truth.shape)
    cci[rng.random(cci.shape) < 0.45] = np.nan
    land_fraction = np.ones((ny, nx))
    # sea in the south-east corner; ERA5 writes 0 there, CCI nothing
    land_fraction[-2:, -3:] = 0.0
    land_fraction[-1, -4] = 0.3          # coast, ERA5 says sea but CCI sees it -> land
    land_fraction[-2, -4] = 0.2          # coast, CCI never sees it -> sea
    sea = land_fraction < 0.5
    era5[:, sea] = 0.0
    cci[:, sea] = np.nan
    cci[:, -1, -4] = truth[:, -1, -4] + 0.01   # the coastal cell CCI sees; ERA5 has no land point there
    cci[:, -1, -4][::3] = np.nan
    era5[:, -1, -4] = np.nan
    cci[:, 2, 2] = np.nan                      # dense forest: only 5 observations
    cci[::12, 2, 2] = truth[::12, 2, 2]
    cci[:, 5, 1] = np.nan                      # land, never observed
    times = pd.date_range(start, periods=nt, freq="D")
    return World(truth.astype(np.float32), cci.astype(np.float32), era5.astype(np.float32),
                 land_fraction.astype(np.float32), times)


def make_cfg(root, world: World, **fusion) -> RunConfig:
    data = {"region": dict(BBOX),
            "period": {"start": str(world.times[0].date()), "end": str(world.times[-1].date())},
            "store": {"root": str(root)},
            "cluster": {"kind": "synchronous"},
            "fusion": {"min_overlap_days": 20, "neighbourhood_cells": 1, "space_chunk": 3, **fusion}}
    return RunConfig.from_dict(data)


def _write(url: str, ds: xr.Dataset, chunks: dict, so) -> None:
    enc = {v: {"chunks": tuple(chunks[d] for d in ds[v].dims)} for v in ds.data_vars}
    tpl = ds.chunk({d: chunks[d] for d in ds.dims})
    store.create_template(url, tpl, enc, so, overwrite=True)
    store.write_region(url, ds.drop_vars(["lat", "lon", "time"]), {d: slice(0, ds.sizes[d]) for d in ds.dims}, so)
    store.finalize(url, so, store.coverage_attrs(ds.time.values))


def day_digest(ds: xr.Dataset, i: int) -> str:
    """Digest of the decoded values of day ``i`` of every time-dependent variable (like ingest's
    ``stored_days``)."""
    h = hashlib.sha256()
    for v in sorted(ds.data_vars):
        if "time" in ds[v].dims:
            h.update(v.encode() + np.ascontiguousarray(ds[v].isel(time=i).values).tobytes())
    return h.hexdigest()


def write_index(cfg: RunConfig, name: str, ds: xr.Dataset, so=None) -> None:
    """The ingest index keys the fuse stage reads (``stored_days``, ``stored_static``) for ``ds``."""
    so = so if so is not None else cfg.store.storage_options()
    static = hashlib.sha256(b"".join(np.ascontiguousarray(ds[v].values).tobytes()
                                     for v in sorted(ds.data_vars) if "time" not in ds[v].dims)).hexdigest()
    days = {str(np.datetime64(t, "D")): day_digest(ds, i) for i, t in enumerate(ds.time.values)}
    store.write_json(store.join(cfg.store.root, "_ledger", name, "ingest-index.json"),
                     {"stored_days": days, "stored_static": static}, so)


def write_inputs(cfg: RunConfig, world: World, storage_options=None, index: bool = True) -> None:
    """inputs/cci.zarr and inputs/era5.zarr of ``world`` per the store contract (and their ingest
    index keys unless ``index=False``)."""
    so = storage_options if storage_options is not None else cfg.store.storage_options()
    lat, lon = grid.region_coords(cfg.coarse_region)
    assert (lat.size, lon.size) == world.cci.shape[1:]
    coords = {"time": world.times.values.astype("datetime64[ns]"), "lat": lat, "lon": lon}
    dims = ("time", "lat", "lon")
    sc = cfg.fusion.space_chunk
    chunks = {"time": len(world.times), "lat": sc, "lon": sc}
    flag = np.where(np.isfinite(world.cci), 0, -1).astype(np.int16)
    cci = xr.Dataset({"sm": (dims, world.cci, {"units": "m3 m-3"}), "flag": (dims, flag),
                      "sm_uncertainty": (dims, np.full(world.cci.shape, 0.04, np.float32))}, coords=coords)
    era5 = xr.Dataset({"swvl1": (dims, world.era5, {"units": "m3 m-3"}),
                       "land_fraction": (("lat", "lon"), world.land_fraction)}, coords=coords)
    _write(cfg.store.url("inputs", "cci.zarr"), cci, chunks, so)
    _write(cfg.store.url("inputs", "era5.zarr"), era5, chunks, so)
    if index:
        write_index(cfg, "inputs/cci.zarr", cci, so)
        write_index(cfg, "inputs/era5.zarr", era5, so)


def write_truth_25km(cfg: RunConfig, world: World, folder) -> str:
    """truth_25km.zarr beside a (not written) truth.zarr in ``folder``; returns the truth.zarr path."""
    lat, lon = grid.region_coords(cfg.coarse_region)
    ds = xr.Dataset({"sm": (("time", "lat", "lon"), world.truth)},
                    coords={"time": world.times.values.astype("datetime64[ns]"), "lat": lat, "lon": lon})
    url = str(folder / "truth_25km.zarr")
    n = dict(ds.sizes)
    _write(url, ds, n, {})
    return str(folder / "truth.zarr")
