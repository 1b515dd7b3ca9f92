"""The tiny worlds the tests run on, built on :mod:`sm1km.synth` (inputs in their real file formats).

* :func:`tiny_world` — the synth ``tiny`` preset (1°×1° = 4×4 cells, factor 10 → 40×40 px, 8
  stations), by default 12 days with shards of 2×2 cells × 4 days (12 master shards). Written once
  per folder (a ready marker makes a second call with the same parameters free), with a
  :class:`TinyWorld` whose :meth:`TinyWorld.config` is a run config ready for every stage on any
  store root (a folder or ``s3://bucket/prefix``): absolute input paths, ``cluster.kind:
  synchronous``, the truth under the root.
* :func:`tiny_run` — every stage run once on a tiny world (with :data:`TINY_OPTIONS`, fixed
  timestamps), cached per folder for the session: the object tree of the root **before** and
  **after** each stage, so a test starts any stage from a finished upstream in milliseconds
  (``sm1km.testing.trees.sync``) instead of re-running the chain.
* :func:`cells_world` — a 2×2-cell world written straight to the stores of the store contract,
  with known answers (a sea cell, a lake, stations with known offsets, a truth built from the
  predictors' cell anomalies); two variants, :data:`DOWNSCALE_CELLS` and :data:`MODEL_CELLS`, for
  the downscale/aggregate and the model tests (``tests/downscale_world.py``, ``tests/model_world.py``).
* :func:`fixed_timestamps` / :func:`child_env` — ``SOURCE_DATE_EPOCH`` (the reproducible-builds
  convention that ``store.now_iso`` honours), so that two runs write the same bytes.

The stages (:data:`STAGE_ORDER`, :func:`stage_function`: the real callables) run on the tiny world
with :data:`TINY_OPTIONS` (training cut to one algorithm, few trees and rounds, one thread: the
contract is about the stores, not the model's skill; validate without the withheld experiment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sm1km.config import RunConfig
from sm1km.storage import store
from sm1km.testing import trees

#: fixed timestamps in every store written by the tests (``store.now_iso`` honours it)
SOURCE_DATE_EPOCH = "1700000000"
#: the tiny world's defaults: 12 days, shards of 2×2 cells × 4 days (4 tiles × 3 time blocks)
TINY_DAYS, TINY_TILE_CELLS, TINY_TIME_BLOCK_DAYS, TINY_SEED = 12, 2, 4, 1


def _stages() -> dict[str, Callable[..., Any]]:
    from sm1km.stages.aggregate import aggregate
    from sm1km.stages.catalog import catalog
    from sm1km.stages.downscale import downscale
    from sm1km.stages.export import export
    from sm1km.stages.fuse import fuse
    from sm1km.stages.ingest import ingest
    from sm1km.stages.predictors import predictors
    from sm1km.stages.train import train
    from sm1km.validation.validate import validate

    def update(cfg: RunConfig, client: Any = None, **options: Any) -> Any:
        from sm1km.pipeline import Pipeline

        return Pipeline(cfg).update(client, **options)

    from sm1km.stages.publish import promote

    return {"ingest": ingest, "fuse": fuse, "train": train, "downscale": downscale, "aggregate": aggregate,
            "export": export, "validate": validate, "catalog": catalog, "update": update, "promote": promote,
            "predictors": predictors}


#: every stage that writes, in pipeline order
STAGE_ORDER = ("ingest", "fuse", "train", "downscale", "aggregate", "export", "validate", "catalog")
#: options each stage runs with on the tiny world (train: fast and single-threaded, deterministic)
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "train": {"n_threads": 1, "rf_trees": 10, "gbt_max_rounds": 30, "algorithms": ("gbt",), "target": "sm"},
    "export": {"fmt": "geotiff"},
    "validate": {"run_withheld": False},
}


def stage_function(name: str) -> Callable[..., Any]:
    """The real callable of a stage (``ingest`` … ``catalog``, the ``update`` verb's :meth:`Pipeline.update`,
    and ``promote``: :func:`sm1km.stages.publish.promote`, in place by default)."""
    return _stages()[name]


def run_stage(name: str, cfg: RunConfig, **options: Any) -> Any:
    """Run stage ``name`` on ``cfg`` with :data:`TINY_OPTIONS` (``options`` override), timestamps fixed."""
    with fixed_timestamps():
        return stage_function(name)(cfg, **{**TINY_OPTIONS.get(name, {}), **options})


@contextlib.contextmanager
def fixed_timestamps(epoch: str = SOURCE_DATE_EPOCH) -> Iterator[None]:
    """``SOURCE_DATE_EPOCH`` set for the block (this process), restored afterwards."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = epoch
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def child_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: dummy moto credentials, fixed timestamps, quiet dask, 1 thread."""
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "testing"),
                "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "testing"),
                "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
                "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
                "DASK_LOGGING__DISTRIBUTED": "warning",
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# the tiny synthetic world
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyWorld:
    """A synthetic world on disk: ``folder/inputs/`` (raw files), ``folder/store/`` (its truth
    stores), ``folder/run.yaml`` (as synth wrote it); :attr:`cfg` is the config on its own store."""

    folder: Path
    run_yaml: Path
    params: dict[str, Any] = field(default_factory=dict)
    root: str | None = None  # the store root of :attr:`cfg` (None: the world's own ``store/``)

    @property
    def store_root(self) -> str:
        return self.root or str(self.folder / "store")

    def with_root(self, root: str | None) -> TinyWorld:
        return dataclasses.replace(self, root=root)

    @property
    def cfg(self) -> RunConfig:
        return self.config()

    def config(self, root: str | None = None, *, endpoint_url: str | None = None,
               cluster: Mapping[str, Any] | None = None, name: str = "sm1km-tiny",
               **sections: Mapping[str, Any]) -> RunConfig:
        """A run config of this world with its stores under ``root`` (default: the world's store).

        Inputs stay the world's local files (absolute paths); ``inputs.truth`` is ``<root>/truth.zarr``
        (the truth stores travel with the root's tree); ``cluster`` defaults to synchronous;
        ``sections`` update top-level sections (``fusion={"space_chunk": 2}``).
        """
        data = RunConfig.from_yaml(self.run_yaml).model_dump(mode="json")
        root = root or self.store_root
        data["name"] = name
        data["store"] = {"root": root, "endpoint_url": endpoint_url, "anon": False, "region_name": None,
                         "client_kwargs": {}}
        data["inputs"]["truth"] = store.join(root, "truth.zarr")
        data["model"]["path"] = None
        data["cluster"] = {"kind": "synchronous", **dict(cluster or {})}
        data["fusion"]["space_chunk"] = 2  # 2×2 fusion chunks: more than one unit of work
        for k, v in sections.items():
            data[k] = {**(data.get(k) or {}), **dict(v)} if isinstance(data.get(k), dict) else v
        return RunConfig.from_dict(data)

    def write_run_yaml(self, cfg: RunConfig, dest: str | os.PathLike) -> Path:
        """``cfg`` as ``dest/run.yaml`` (what a CLI run or a subprocess reads)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / "run.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return path


def tiny_world(tmp: str | os.PathLike, *, root: str | None = None, days: int = TINY_DAYS, stations: int = 8,
               bbox: tuple[float, float, float, float] | None = None, seed: int = TINY_SEED,
               tile_cells: int = TINY_TILE_CELLS, time_block_days: int = TINY_TIME_BLOCK_DAYS) -> TinyWorld:
    """The synth ``tiny`` world with these parameters, in ``tmp/tiny-<hash>/`` (written once);
    ``root``: where :attr:`TinyWorld.cfg` puts the stores (default: the world's ``store/``)."""
    from sm1km.synth import preset, write_world

    overrides: dict[str, Any] = {"n_days": days, "n_stations": stations, "tile_cells": tile_cells,
                                 "time_block_days": time_block_days}
    if bbox is not None:
        overrides["bbox"] = tuple(bbox)
    params = {**overrides, "seed": seed}
    tag = hashlib.sha256(json.dumps(params, sort_keys=True, default=list).encode()).hexdigest()[:10]
    folder = Path(tmp) / f"tiny-{tag}"
    ready = folder / "tiny-world-ready.json"
    if not ready.exists():
        paths = write_world(folder, preset("tiny", **overrides), seed=seed, overwrite=True)
        ready.write_text(json.dumps({"run_yaml": str(paths.run_yaml), "params": params}, default=list))
    info = json.loads(ready.read_text())
    return TinyWorld(folder, Path(info["run_yaml"]), params, root)


# --------------------------------------------------------------------------------------------
# a finished run of every stage
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyRun:
    """Every stage run once on ``world`` at ``cfg.store.root`` (``<tmp>/tiny-run-<hash>/store``): the
    object tree of the root before and after each stage (``before["fuse"]`` = what fuse starts from)."""

    world: TinyWorld
    cfg: RunConfig
    before: dict[str, trees.Tree]
    after: dict[str, trees.Tree]
    sections: dict[str, Any] = field(default_factory=dict)  # config sections of every run on it

    def config(self, root: str, *, endpoint_url: str | None = None) -> RunConfig:
        """The run's config with its stores under ``root``."""
        return self.world.config(root, endpoint_url=endpoint_url, **self.sections)

    @property
    def final(self) -> trees.Tree:
        return self.after[STAGE_ORDER[-1]]


#: what synth writes under the world's store (evaluation only); every run's root starts with them
TRUTH_STORES = ("truth.zarr", "truth_25km.zarr")


@functools.cache
def _tiny_run(folder: str, params: tuple[tuple[str, Any], ...], sections: str) -> TinyRun:
    world = tiny_world(folder, **dict(params))
    root = str(Path(folder) / f"tiny-run-{world.folder.name.split('-', 1)[1]}" / "store")  # not the world's own store
    cfg = world.config(root, **json.loads(sections))
    trees.put(root, trees.subtree(trees.snapshot(world.store_root), *TRUTH_STORES))
    before, after = {}, {}
    for name in STAGE_ORDER:
        before[name] = trees.snapshot(root)
        run_stage(name, cfg)
        after[name] = trees.snapshot(root)
    return TinyRun(world.with_root(root), cfg, before, after, json.loads(sections))


def tiny_run(tmp: str | os.PathLike, *, sections: Mapping[str, Mapping[str, Any]] | None = None,
             **world: Any) -> TinyRun:
    """Every stage run once on ``tiny_world(tmp, **world)`` (cached per process; the world's folder
    is shared with other users of ``tiny_world(tmp)``, the run has its own root); ``sections``:
    config sections to update (``{"model": {"min_station_days": 5}}``), see :meth:`TinyWorld.config`."""
    return _tiny_run(str(Path(tmp)), tuple(sorted(world.items())), json.dumps(dict(sections or {}), sort_keys=True))


# --------------------------------------------------------------------------------------------
# the 2×2-cell world with known answers (written straight to the stores of the store contract)
# --------------------------------------------------------------------------------------------
#: the 2×2-cell world: 0.5° × 0.5° (2×2 cells of 0.25°), factor 10 → 20×20 px
CELLS_BBOX = (10.0, 45.0, 10.5, 45.5)
CELLS_FACTOR = 10


@dataclass(frozen=True)
class CellsVariant:
    """The knobs of :func:`cells_world` (two presets below: :data:`DOWNSCALE_CELLS`, :data:`MODEL_CELLS`).

    The 25 km ``fused`` series is ``base + 0.08·sin(t/season_days)`` plus either daily noise
    (``fused_kind="noise"``) or accumulated rain pulses (``"pulses"``); the fine truth is the fused
    value plus known sub-cell terms of the predictors' cell anomalies (``truth_twi``·TWI −
    0.004·(LST day−night) + ``truth_clay``·clay) plus ``truth_noise``; ``sea_cell`` is NaN in fused
    and truth (source_flag 0), ``lake`` puts a 3×3 px lake (land_cover 17) in the north-west cell.
    """

    days: int
    start: str
    tile_cells: int
    time_block_days: int
    fused_kind: str = "noise"
    season_days: float = 7.0
    sea_cell: tuple[int, int] | None = None
    lake: bool = False
    lst_night_k: float = 270.0
    lst_contrast_k: float = 10.0
    truth_twi: float = 0.015
    truth_clay: float = 0.08
    truth_noise: float = 0.003
    truth_store: bool = True     # write truth.zarr (and set inputs.truth)


#: the downscale/aggregate world: 40 days, a sea cell and a lake, 12 shards (4 tiles × 3 blocks of 16 days)
DOWNSCALE_CELLS = CellsVariant(days=40, start="2020-01-01", tile_cells=1, time_block_days=16, sea_cell=(1, 1),
                               lake=True)
#: the model world: 60 days, no sea, rain pulses, no truth store (the stations observe the truth)
MODEL_CELLS = CellsVariant(days=60, start="2020-04-01", tile_cells=2, time_block_days=32, fused_kind="pulses",
                           season_days=9.0, lst_night_k=285.0, lst_contrast_k=15.0, truth_twi=0.012, truth_clay=0.05,
                           truth_noise=0.0, truth_store=False)


def cell_anomaly(a, f: int):
    """``a`` minus the mean of its 0.25° cell (blocks of ``f``×``f`` px over the last two axes)."""
    import numpy as np

    *lead, ny, nx = a.shape
    m = np.nanmean(a.reshape(*lead, ny // f, f, nx // f, f), axis=(-3, -1))
    return a - np.repeat(np.repeat(m, f, -2), f, -1)


def cells_config(root: str, variant: CellsVariant = DOWNSCALE_CELLS, storage_options: Mapping[str, Any] | None = None,
                 *, model: Mapping[str, Any] | None = None, **grid: Any) -> RunConfig:
    """The run config of the 2×2-cell world on ``root`` (``grid`` overrides grid keys)."""
    import pandas as pd

    w, s, e, n = CELLS_BBOX
    end = (pd.Timestamp(variant.start) + pd.Timedelta(days=variant.days - 1)).date()
    data: dict[str, Any] = {
        "region": {"west": w, "south": s, "east": e, "north": n},
        "period": {"start": variant.start, "end": str(end)},
        "grid": {"factor": CELLS_FACTOR, "tile_cells": variant.tile_cells,
                 "time_block_days": variant.time_block_days, **grid},
        "store": {"root": root, **({"endpoint_url": storage_options["endpoint_url"]} if storage_options else {})},
        "cluster": {"kind": "synchronous"},
    }
    if variant.truth_store:
        data["inputs"] = {"truth": root.rstrip("/") + "/truth.zarr"}
    if model:
        data["model"] = dict(model)
    return RunConfig.from_dict(data)


def cells_world(cfg: RunConfig, variant: CellsVariant = DOWNSCALE_CELLS, *, seed: int = 0, n_stations: int = 0,
                station_effect: float = 0.0, noise: float = 0.01) -> dict[str, Any]:
    """Write ``fused.zarr``, ``inputs/predictors.zarr`` (and ``truth.zarr``, ``inputs/stations.zarr``
    with ``n_stations``) of the 2×2-cell world under ``cfg.store.root``; returns the facts.

    Stations (``n_stations`` > 0): distinct random pixels observing the truth plus ``noise`` and a
    per-station offset (``station_effect``·N(0, 1)), 10 % gaps, plus one station outside the region
    and one with 4 days only. Facts: ``fused`` and ``predictors`` (Datasets), ``truth`` (ndarray),
    ``times``, ``sea`` (px mask); with stations ``stations``, ``station_rows``/``cols``, ``offsets``.
    """
    import numpy as np
    import pandas as pd
    import xarray as xr

    from sm1km.core.grid import FineGrid, region_coords

    f = CELLS_FACTOR
    rng = np.random.default_rng(seed)
    so = cfg.store.storage_options()
    clat, clon = region_coords(cfg.coarse_region)
    flat, flon = region_coords(cfg.coarse_region, f)
    times = pd.date_range(variant.start, periods=variant.days, freq="D")
    nt, ny, nx = variant.days, len(flat), len(flon)

    base = 0.25 + 0.05 * rng.standard_normal((1, 2, 2))
    season = 0.08 * np.sin(np.arange(nt) / variant.season_days)[:, None, None]
    if variant.fused_kind == "pulses":  # seasonal drying + rain pulses, different per cell
        pulses = np.cumsum(rng.exponential(1, (nt, 2, 2)) * (rng.random((nt, 2, 2)) < 0.15), axis=0)
        fused = (base + season + 0.02 * (pulses - pulses.mean(0))).astype(np.float32)
    else:
        fused = (base + season + 0.02 * rng.standard_normal((nt, 2, 2))).astype(np.float32)
    flag = np.where(rng.random((nt, 2, 2)) < 0.6, 1, 2).astype(np.uint8)
    sea = np.zeros((ny, nx), bool)
    if variant.sea_cell is not None:
        r0, c0 = variant.sea_cell
        fused[:, r0, c0] = np.nan
        flag[:, r0, c0] = 0
        sea[r0 * f:(r0 + 1) * f, c0 * f:(c0 + 1) * f] = True

    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    twi = (6 + 3 * np.sin(yy / 3.0) * np.cos(xx / 4.0) + rng.normal(0, 0.5, (ny, nx))).astype(np.float32)
    elev = (300 + 40 * yy + 15 * rng.standard_normal((ny, nx))).astype(np.float32)
    slope = np.abs(rng.normal(5, 3, (ny, nx))).astype(np.float32)
    clay = rng.uniform(0.1, 0.4, (ny, nx)).astype(np.float32)
    sand = rng.uniform(0.2, 0.6, (ny, nx)).astype(np.float32)
    lc = rng.choice(np.array([10, 12, 14], np.int16), (ny, nx))
    if variant.lake:
        lc[:3, :3] = 17  # a lake (IGBP water) in the north-west land cell: fill at 1 km
    ndvi = (0.5 + 0.2 * np.cos(xx / 5.0) + 0.05 * rng.standard_normal((nt, ny, nx))).astype(np.float32)
    lst_night = (variant.lst_night_k + 3 * rng.standard_normal((nt, 1, 1)) - 0.0065 * (elev - 500)
                 + rng.normal(0, 0.5, (nt, ny, nx))).astype(np.float32)
    up = np.repeat(np.repeat(fused, f, 1), f, 2)
    lst_day = (lst_night + variant.lst_contrast_k - 20 * (np.nan_to_num(up, nan=0.25) - 0.25)
               + 4 * np.sin(xx / 3.0 + yy / 5.0) + rng.normal(0, 0.7, (nt, ny, nx))).astype(np.float32)
    truth = (up + variant.truth_twi * cell_anomaly(twi, f) - 0.004 * cell_anomaly(lst_day - lst_night, f)
             + variant.truth_clay * cell_anomaly(clay, f))
    if variant.truth_noise:
        truth = truth + rng.normal(0, variant.truth_noise, (nt, ny, nx))
    truth = truth.astype(np.float32)
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
    out = {"fused.zarr": fused_ds, "inputs/predictors.zarr": pred_ds}
    if variant.truth_store:
        out["truth.zarr"] = xr.Dataset({"sm": (("time", "lat", "lon"), truth)},
                                       coords={"time": times, "lat": flat, "lon": flon})
    facts: dict[str, Any] = {"fused": fused_ds, "predictors": pred_ds, "truth": truth, "times": times, "sea": sea,
                             "flag": fused_ds["source_flag"].values}
    if n_stations:
        g = FineGrid(f)
        pix = rng.choice(ny * nx, n_stations, replace=False)
        r, c = pix // nx, pix % nx
        lat = list(flat[r] + rng.uniform(-0.3, 0.3, n_stations) * g.res_deg)
        lon = list(flon[c] + rng.uniform(-0.3, 0.3, n_stations) * g.res_deg)
        offsets = station_effect * rng.standard_normal(n_stations)
        obs = truth[:, r, c].T + offsets[:, None] + noise * rng.standard_normal((n_stations, nt))
        obs[rng.random(obs.shape) < 0.1] = np.nan  # gaps
        nets = ["NETA" if i % 2 == 0 else "NETB" for i in range(n_stations)]
        names = [f"S{i:02d}" for i in range(n_stations)]
        lat += [46.3, flat[3]]     # an outside station and a sparse one (reported, not used)
        lon += [10.2, flon[7]]
        nets += ["NETA", "NETB"]
        names += ["OUTSIDE", "SPARSE"]
        sparse = np.full(nt, np.nan, np.float32)
        sparse[:4] = 0.2
        obs = np.vstack([obs, np.full((1, nt), 0.3), sparse[None]]).astype(np.float32)
        ids = [f"{a}/{b}" for a, b in zip(nets, names, strict=True)]
        st_ds = xr.Dataset(
            {"sm": (("station", "time"), obs),
             "n_hours": (("station", "time"), np.where(np.isfinite(obs), 24, 0).astype(np.int16))},
            coords={"station": np.array(ids, dtype=object).astype(str), "time": times,
                    "network": ("station", np.array(nets).astype(str)),
                    "station_name": ("station", np.array(names).astype(str)),
                    "lat": ("station", np.array(lat)), "lon": ("station", np.array(lon)),
                    "depth_from": ("station", np.zeros(len(ids))), "depth_to": ("station", np.full(len(ids), 0.05)),
                    "sensor": ("station", np.array(["probe"] * len(ids)).astype(str))})
        out["inputs/stations.zarr"] = st_ds
        facts.update(stations=st_ds, station_rows=r, station_cols=c, offsets=offsets)
    for name, ds in out.items():
        ds.to_zarr(store.zarr_target(cfg.store.url(name), so), mode="w", zarr_format=3, consolidated=True)
    return facts


def train_cells_model(cfg: RunConfig, facts: Mapping[str, Any], rounds: int = 60) -> Any:
    """A small booster + quantile booster on ``build_features`` of the whole 2×2-cell world, saved
    at ``cfg.model_path`` (so the product can beat the 25 km baseline against the truth)."""
    import numpy as np
    import xgboost as xgb

    from sm1km.core.features import PREDICTOR_NAMES, build_features
    from sm1km.storage.model import save_model

    pred_ds = facts["predictors"]
    preds = {k: pred_ds[k].values for k in PREDICTOR_NAMES}
    X = build_features(facts["fused"]["sm"].values, facts["flag"], preds, facts["times"].values, CELLS_FACTOR)
    y = facts["truth"].reshape(-1)
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


__all__ = ["SOURCE_DATE_EPOCH", "STAGE_ORDER", "TINY_OPTIONS", "TRUTH_STORES", "TinyWorld", "TinyRun", "tiny_world",
           "tiny_run", "stage_function", "run_stage", "fixed_timestamps", "child_env", "CELLS_BBOX", "CELLS_FACTOR",
           "CellsVariant", "DOWNSCALE_CELLS", "MODEL_CELLS", "cell_anomaly", "cells_config", "cells_world",
           "train_cells_model"]
