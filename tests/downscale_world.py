"""The downscale/aggregate tests' world: ``sm1km.testing.worlds.cells_world`` with the
``DOWNSCALE_CELLS`` variant (2×2 coarse cells, factor 10 → 20×20 px, 40 days from 2020-01-01, the
south-east cell is sea, a 3×3 px lake in the north-west cell; shards of 1 cell × 16 days → 12),
plus a small XGBoost model trained on the world's own features (``train_cells_model``)."""

from __future__ import annotations

from sm1km.config import RunConfig
from sm1km.testing.worlds import CELLS_BBOX, CELLS_FACTOR, DOWNSCALE_CELLS, cells_config, cells_world, train_cells_model

WEST, SOUTH, EAST, NORTH = CELLS_BBOX
FACTOR = CELLS_FACTOR
N_DAYS = DOWNSCALE_CELLS.days
START = DOWNSCALE_CELLS.start
SEA_CELL = DOWNSCALE_CELLS.sea_cell
N_LAND_PX = 3 * 100 - 9  # three land cells minus the lake


def make_config(root: str, storage_options=None, **grid) -> RunConfig:
    return cells_config(root, DOWNSCALE_CELLS, storage_options, **grid)


def make_world(root: str, storage_options=None, *, seed: int = 0, train: bool = True, **grid):
    """Write fused.zarr, inputs/predictors.zarr, truth.zarr (+ model/) under ``root``; return (cfg, facts)."""
    cfg = make_config(root, storage_options, **grid)
    facts = cells_world(cfg, DOWNSCALE_CELLS, seed=seed)
    if train:
        facts["model"] = train_cells_model(cfg, facts)
    return cfg, facts


def train_model(cfg, fused, flag, pred_ds, truth, times, rounds: int = 60):
    """A small booster + quantile booster on the world's features, saved at cfg.model_path."""
    import xarray as xr

    fused_ds = xr.Dataset({"sm": (("time", "lat", "lon"), fused)})
    return train_cells_model(cfg, {"fused": fused_ds, "flag": flag, "predictors": pred_ds, "truth": truth,
                                   "times": times}, rounds=rounds)
