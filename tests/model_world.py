"""The model tests' world: ``sm1km.testing.worlds.cells_world`` with the ``MODEL_CELLS`` variant
(2×2 coarse cells, factor 10 → 20×20 px, 60 days) and stations: ``n_stations`` inside + 1 outside
+ 1 with few days, observing the truth at their pixel plus noise (and, optionally, a per-station
offset = "station effect")."""

from __future__ import annotations

import xarray as xr

from sm1km.config import RunConfig
from sm1km.testing.worlds import CELLS_BBOX, CELLS_FACTOR, MODEL_CELLS, cells_config, cells_world

WEST, SOUTH, EAST, NORTH = CELLS_BBOX
FACTOR = CELLS_FACTOR
N_DAYS = MODEL_CELLS.days
START = MODEL_CELLS.start


def make_world(root: str, *, n_stations: int = 20, station_effect: float = 0.0, noise: float = 0.01,
               seed: int = 0, storage_options=None, cv_folds: int = 5, algorithm: str = "auto",
               min_station_days: int = 10) -> tuple[RunConfig, dict]:
    cfg = cells_config(root, MODEL_CELLS, storage_options,
                       model={"cv_folds": cv_folds, "algorithm": algorithm, "min_station_days": min_station_days})
    facts = cells_world(cfg, MODEL_CELLS, seed=seed, n_stations=n_stations, station_effect=station_effect,
                        noise=noise)
    p = facts["predictors"]
    truth = xr.DataArray(facts["truth"], dims=("time", "lat", "lon"),
                         coords={"time": facts["times"], "lat": p.lat.values, "lon": p.lon.values})
    return cfg, {"truth": truth, "fused": facts["fused"], "predictors": p, "stations": facts["stations"],
                 "station_rows": facts["station_rows"], "station_cols": facts["station_cols"],
                 "offsets": facts["offsets"]}
