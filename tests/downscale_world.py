"""A tiny world for the downscale/aggregate tests, written straight to stores of the store contract.

2×2 coarse cells (factor 10 → 20×20 px), 40 days from 2020-01-01, the south-east cell is sea
(fused NaN, source_flag 0) and a 3×3 px lake (land_cover 17) lies in the north-west cell.
Shards: tile_cells 1 × time_block_days 16 → 4 tiles × 3 blocks = 12.
Truth = fused value + known sub-cell terms of the predictors' cell anomalies; a small XGBoost model
(plus quantile model) is trained on ``build_features`` of the whole world and saved with
``model.save_model`` — so the product can beat the 25 km baseline against the truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core.grid import region_coords

WEST, SOUTH, EAST, NORTH = 10.0, 45.0, 10.5, 45.5
FACTOR = 10
N_DAYS = 40
START = "2020-01-01"
SEA_CELL = (1, 1)
N_LAND_PX = 3 * 100 - 9  # three land cells minus the lake


def _cell_anom(a, f):
    *lead, ny, nx = a.shape
    m = np.nanmean(a.reshape(*lead, ny // f, f, nx // f, f), axis=(-3, -1))
    return a - np.repeat(np.repeat(m, f, -2), f, -1)


def make_config(root: str, storage_options=None, **grid) -> RunConfig:
    return RunConfig.from_dict({
        "region": {"west": WEST, "south": SOUTH, "east": EAST, "north": NORTH},
        "period": {"start": START, "end": str((pd.Timestamp(START) + pd.Timedelta(days=N_DAYS - 1)).date())},
        "grid": {"factor": FACTOR, "tile_cells": 1, "time_block_days": 16, **grid},
        "store": {"root": root, **({"endpoint_url": storage_options["endpoint_url"]} if storage_options else {})},
        "inputs": {"truth": root.rstrip("/") + "/truth.zarr"},
        "cluster": {"kind": "synchronous"},
    })


def make_world(root: str, storage_options=None, *, seed: int = 0, train: bool = True, **grid):
    """Write fused.zarr, inputs/predictors.zarr, truth.zarr (+ model/) under ``root``; return (cfg, facts)."""
    from sm1km.storage.store import zarr_target

    rng = np.random.default_rng(seed)
    cfg = make_config(root, storage_options, **grid)
    so = cfg.store.storage_options()
    region = cfg.coarse_region
    clat, clon = region_coords(region)
    flat, flon = region_coords(region, FACTOR)
    times = pd.date_range(START, periods=N_DAYS, freq="D")
    nt, ny, nx = N_DAYS, len(flat), len(flon)

    base = 0.25 + 0.05 * rng.standard_normal((1, 2, 2))
    fused = (base + 0.08 * np.sin(np.arange(nt) / 7.0)[:, None, None]
             + 0.02 * rng.standard_normal((nt, 2, 2))).astype(np.float32)
    flag = np.where(rng.random((nt, 2, 2)) < 0.6, 1, 2).astype(np.uint8)
    fused[:, SEA_CELL[0], SEA_CELL[1]] = np.nan
    flag[:, SEA_CELL[0], SEA_CELL[1]] = 0
    sea = np.zeros((ny, nx), bool)
    sea[SEA_CELL[0] * FACTOR:(SEA_CELL[0] + 1) * FACTOR, SEA_CELL[1] * FACTOR:(SEA_CELL[1] + 1) * FACTOR] = True

    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    twi = (6 + 3 * np.sin(yy / 3.0) * np.cos(xx / 4.0) + rng.normal(0, 0.5, (ny, nx))).astype(np.float32)
    elev = (300 + 40 * yy + 15 * rng.standard_normal((ny, nx))).astype(np.float32)
    slope = np.abs(rng.normal(5, 3, (ny, nx))).astype(np.float32)
    clay = rng.uniform(0.1, 0.4, (ny, nx)).astype(np.float32)
    sand = rng.uniform(0.2, 0.6, (ny, nx)).astype(np.float32)
    lc = rng.choice(np.array([10, 12, 14], np.int16), (ny, nx))
    lc[:3, :3] = 17  # a lake (IGBP water) in the north-west land cell: fill at 1 km
    ndvi = (0.5 + 0.2 * np.cos(xx / 5.0) + 0.05 * rng.standard_normal((nt, ny, nx))).astype(np.float32)
    lst_night = (270 + 3 * rng.standard_normal((nt, 1, 1)) - 0.0065 * (elev - 500)
                 + rng.normal(0, 0.5, (nt, ny, nx))).astype(np.float32)
    up = np.repeat(np.repeat(fused, FACTOR, 1), FACTOR, 2)
    lst_day = (lst_night + 10 - 20 * (np.nan_to_num(up, nan=0.25) - 0.25) + 4 * np.sin(xx / 3.0 + yy / 5.0)
               + rng.normal(0, 0.7, (nt, ny, nx))).astype(np.float32)
    truth = (up + 0.015 * _cell_anom(twi, FACTOR) - 0.004 * _cell_anom(lst_day - lst_night, FACTOR)
             + 0.08 * _cell_anom(clay, FACTOR) + rng.normal(0, 0.003, (nt, ny, nx))).astype(np.float32)
    truth[:, sea] = np.nan

    fused_ds = xr.Dataset({"sm": (("time", "lat", "lon"), fused), "source_flag": (("time", "lat", "lon"), flag)},
                          coords={"time": times, "lat": clat, "lon": clon})
    static = {"elevation_m": elev, "slope_deg": slope, "twi": twi, "clay_frac": clay, "sand_frac": sand,
              "land_cover": lc}
    pred_ds = xr.Dataset({**{k: (("lat", "lon"), v) for k, v in static.items()},
                          "lst_day_k": (("time", "lat", "lon"), lst_day),
                          "lst_night_k": (("time", "lat", "lon"), lst_night),
                          "ndvi": (("time", "lat", "lon"), ndvi)},
                         coords={"time": times, "lat": flat, "lon": flon})
    truth_ds = xr.Dataset({"sm": (("time", "lat", "lon"), truth)}, coords={"time": times, "lat": flat, "lon": flon})
    for name, ds in (("fused.zarr", fused_ds), ("inputs/predictors.zarr", pred_ds), ("truth.zarr", truth_ds)):
        ds.to_zarr(zarr_target(cfg.store.url(name), so), mode="w", zarr_format=3, consolidated=True)
    facts = {"fused": fused_ds, "predictors": pred_ds, "truth": truth, "sea": sea}
    if train:
        facts["model"] = train_model(cfg, fused, flag, pred_ds, truth, times)
    return cfg, facts


def train_model(cfg, fused, flag, pred_ds, truth, times, rounds: int = 60):
    """A small booster + quantile booster on the world's features, saved at cfg.model_path."""
    import xgboost as xgb

    from sm1km.core.features import PREDICTOR_NAMES, build_features
    from sm1km.storage.model import save_model

    preds = {k: pred_ds[k].values for k in PREDICTOR_NAMES}
    X = build_features(fused, flag, preds, times.values, FACTOR)
    y = truth.reshape(-1)
    ok = np.isfinite(y)
    X, y = X[ok], y[ok]
    booster = xgb.train({"max_depth": 4, "eta": 0.2, "nthread": 1, "seed": 0, "tree_method": "hist"},
                        xgb.DMatrix(X, y), num_boost_round=rounds)
    resid = y - booster.inplace_predict(X)
    unc = xgb.train({"objective": "reg:quantileerror", "quantile_alpha": np.array([0.16, 0.84]), "max_depth": 3,
                     "eta": 0.1, "nthread": 1, "seed": 0, "tree_method": "hist"},
                    xgb.DMatrix(X, resid), num_boost_round=10)
    return save_model(cfg.model_path, booster, {"algorithm": "gbt", "created": "2020-01-01T00:00:00Z"},
                      uncertainty_booster=unc, storage_options=cfg.store.storage_options())
