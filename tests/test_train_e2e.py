"""End to end on the synthetic world: synth (tiny, 20 days) → ingest → fuse → train → load → predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sm1km.config import RunConfig
from sm1km.core import features as F
from sm1km.storage import model as M
from sm1km.storage import store


@pytest.mark.slow
def test_tiny_world_end_to_end(tmp_path):
    from sm1km.stages.fuse import fuse
    from sm1km.stages.ingest import ingest
    from sm1km.stages.train import train
    from sm1km.synth import write_world
    from sm1km.synth.params import preset

    paths = write_world(tmp_path / "world", preset("tiny", n_days=20, n_stations=10), seed=5)
    cfg = RunConfig.from_yaml(paths.run_yaml)
    cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"kind": "synchronous"})})
    ingest(cfg)
    fuse(cfg)
    urls = train(cfg, n_threads=1, rf_trees=30, gbt_max_rounds=100)
    card = json.loads(open(urls["card"]).read())
    n_st = card["training"]["n_stations"]
    n_excl = len(card["training"]["excluded_stations"])
    stations = store.open_dataset(cfg.store.url("inputs", "stations.zarr"))
    assert n_st + n_excl == stations.sizes["station"]  # every station is used or reported
    assert n_st >= 2
    for scheme in ("random_kfold", "station_grouped", "cell_grouped", "spatial_block", "year_out", "nested"):
        assert card["cv"][scheme]["n_stations"] == n_st
        assert np.isfinite(card["cv"][scheme]["ubrmse_pooled"])
    # raw ERA5 and CCI scored at the same station-days as the fused 25 km value
    base = card["cv"]["baselines"]
    assert set(base) == {"fused_25km", "era5", "cci"}
    assert base["era5"]["n_samples"] == base["fused_25km"]["n_samples"] == card["cv"]["nested"]["n_samples"]
    assert 0 < base["cci"]["n_samples"] <= base["fused_25km"]["n_samples"]
    assert card["cv"]["station_grouped"]["baseline_era5"] == base["era5"]
    metrics = json.loads(open(urls["metrics"]).read())
    assert metrics["model"]["default_algorithm"] == card["algorithm"]

    # inference on a real block of the stores gives finite values on land, NaN where fused is NaN
    m = M.load_model(urls["model"])
    fused = store.open_dataset(cfg.store.url("fused.zarr")).isel(time=slice(0, 3)).load()
    preds = store.open_dataset(cfg.store.url("inputs", "predictors.zarr")).isel(time=slice(0, 3)).load()
    X = F.build_features(fused["sm"].values, fused["source_flag"].values,
                         {n: preds[n].values for n in F.PREDICTOR_NAMES}, fused["time"].values, cfg.grid.factor)
    sm = m.predict(X)
    land = np.isfinite(X[:, F.column("sm_25km")])
    assert land.any() and np.isfinite(sm[land]).all() and np.isnan(sm[~land]).all()
    assert ((sm[land] >= 0) & (sm[land] <= 1)).all()
