"""A tiny world for the model tests, written straight to stores of the store contract.

2×2 coarse cells (factor 10 → 20×20 px), 60 days, 20 stations inside + 1 outside + 1 with few
days. Fine truth = fused 25 km value + known sub-cell terms of the predictors' cell anomalies
(wetter where TWI is high, drier where the day−night LST contrast is large); stations observe the
truth at their pixel plus noise (and, optionally, a per-station offset = "station effect").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core.grid import FineGrid, region_coords

WEST, SOUTH, EAST, NORTH = 10.0, 45.0, 10.5, 45.5
FACTOR = 10
N_DAYS = 60
START = "2020-04-01"


def _cell_anom(a, f):
    *lead, ny, nx = a.shape
    m = a.reshape(*lead, ny // f, f, nx // f, f).mean(axis=(-3, -1))
    return a - np.repeat(np.repeat(m, f, -2), f, -1)


def make_world(root: str, *, n_stations: int = 20, station_effect: float = 0.0, noise: float = 0.01,
               seed: int = 0, storage_options=None, cv_folds: int = 5, algorithm: str = "auto",
               min_station_days: int = 10) -> tuple[RunConfig, dict]:
    rng = np.random.default_rng(seed)
    cfg = RunConfig.from_dict({
        "region": {"west": WEST, "south": SOUTH, "east": EAST, "north": NORTH},
        "period": {"start": START, "end": str((pd.Timestamp(START) + pd.Timedelta(days=N_DAYS - 1)).date())},
        "grid": {"factor": FACTOR, "tile_cells": 2, "time_block_days": 32},
        "store": {"root": root, **({"endpoint_url": storage_options["endpoint_url"]} if storage_options else {})},
        "cluster": {"kind": "synchronous"},
        "model": {"cv_folds": cv_folds, "algorithm": algorithm, "min_station_days": min_station_days},
    })
    so = cfg.store.storage_options()
    region = cfg.coarse_region
    clat, clon = region_coords(region)
    flat, flon = region_coords(region, FACTOR)
    times = pd.date_range(START, periods=N_DAYS, freq="D")
    nt, ny, nx = N_DAYS, len(flat), len(flon)

    # 25 km fused: seasonal drying + rain pulses, different per cell
    base = 0.25 + 0.05 * rng.standard_normal((1, 2, 2))
    pulses = np.cumsum(rng.exponential(1, (nt, 2, 2)) * (rng.random((nt, 2, 2)) < 0.15), axis=0)
    fused = (base + 0.08 * np.sin(np.arange(nt) / 9.0)[:, None, None] + 0.02 * (pulses - pulses.mean(0))
             ).astype(np.float32)
    flag = np.where(rng.random((nt, 2, 2)) < 0.6, 1, 2).astype(np.uint8)

    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    twi = (6 + 3 * np.sin(yy / 3.0) * np.cos(xx / 4.0) + rng.normal(0, 0.5, (ny, nx))).astype(np.float32)
    elev = (300 + 40 * yy + 15 * rng.standard_normal((ny, nx))).astype(np.float32)
    slope = np.abs(rng.normal(5, 3, (ny, nx))).astype(np.float32)
    clay = rng.uniform(0.1, 0.4, (ny, nx)).astype(np.float32)
    sand = rng.uniform(0.2, 0.6, (ny, nx)).astype(np.float32)
    lc = rng.choice(np.array([10, 12, 14], np.int16), (ny, nx))
    ndvi = (0.5 + 0.2 * np.cos(xx / 5.0) + 0.05 * rng.standard_normal((nt, ny, nx))).astype(np.float32)
    lst_night = (285 + 3 * rng.standard_normal((nt, 1, 1)) - 0.0065 * (elev - 500)
                 + rng.normal(0, 0.5, (nt, ny, nx))).astype(np.float32)
    up = np.repeat(np.repeat(fused, FACTOR, 1), FACTOR, 2)
    lst_day = (lst_night + 15 - 20 * (up - 0.25) + 4 * np.sin(xx / 3.0 + yy / 5.0)
               + rng.normal(0, 0.7, (nt, ny, nx))).astype(np.float32)
    truth = (up + 0.012 * _cell_anom(twi, FACTOR) - 0.004 * _cell_anom(lst_day - lst_night, FACTOR)
             + 0.05 * _cell_anom(clay, FACTOR)).astype(np.float32)

    fused_ds = xr.Dataset({"sm": (("time", "lat", "lon"), fused), "source_flag": (("time", "lat", "lon"), flag)},
                          coords={"time": times, "lat": clat, "lon": clon})
    static = {"elevation_m": elev, "slope_deg": slope, "twi": twi, "clay_frac": clay, "sand_frac": sand,
              "land_cover": lc}
    pred_ds = xr.Dataset({**{k: (("lat", "lon"), v) for k, v in static.items()},
                          "lst_day_k": (("time", "lat", "lon"), lst_day),
                          "lst_night_k": (("time", "lat", "lon"), lst_night),
                          "ndvi": (("time", "lat", "lon"), ndvi)},
                         coords={"time": times, "lat": flat, "lon": flon})

    # stations: distinct random pixels inside the region + one outside + one sparse
    g = FineGrid(FACTOR)
    pix = rng.choice(ny * nx, n_stations, replace=False)
    r, c = pix // nx, pix % nx
    lat = list(flat[r] + rng.uniform(-0.3, 0.3, n_stations) * g.res_deg)
    lon = list(flon[c] + rng.uniform(-0.3, 0.3, n_stations) * g.res_deg)
    offsets = station_effect * rng.standard_normal(n_stations)
    obs = truth[:, r, c].T + offsets[:, None] + noise * rng.standard_normal((n_stations, nt))
    obs[rng.random(obs.shape) < 0.1] = np.nan  # gaps
    nets = ["NETA" if i % 2 == 0 else "NETB" for i in range(n_stations)]
    names = [f"S{i:02d}" for i in range(n_stations)]
    # an outside station and a sparse one (reported, not used)
    lat += [46.3, flat[3]]
    lon += [10.2, flon[7]]
    nets += ["NETA", "NETB"]
    names += ["OUTSIDE", "SPARSE"]
    sparse = np.full(nt, np.nan, np.float32)
    sparse[:4] = 0.2
    obs = np.vstack([obs, np.full((1, nt), 0.3), sparse[None]]).astype(np.float32)
    ids = [f"{n}/{s}" for n, s in zip(nets, names)]
    st_ds = xr.Dataset(
        {"sm": (("station", "time"), obs),
         "n_hours": (("station", "time"), np.where(np.isfinite(obs), 24, 0).astype(np.int16))},
        coords={"station": np.array(ids, dtype=object).astype(str), "time": times,
                "network": ("station", np.array(nets).astype(str)), "station_name": ("station", np.array(names).astype(str)),
                "lat": ("station", np.array(lat)), "lon": ("station", np.array(lon)),
                "depth_from": ("station", np.zeros(len(ids))), "depth_to": ("station", np.full(len(ids), 0.05)),
                "sensor": ("station", np.array(["probe"] * len(ids)).astype(str))})
    from sm1km.storage.store import zarr_target

    for name, ds in (("fused.zarr", fused_ds), ("inputs/predictors.zarr", pred_ds), ("inputs/stations.zarr", st_ds)):
        ds.to_zarr(zarr_target(cfg.store.url(name), so), mode="w", zarr_format=3, consolidated=True)
    truth_da = xr.DataArray(truth, dims=("time", "lat", "lon"), coords={"time": times, "lat": flat, "lon": flon})
    return cfg, {"truth": truth_da, "fused": fused_ds, "predictors": pred_ds, "stations": st_ds,
                 "station_rows": r, "station_cols": c, "offsets": offsets}
