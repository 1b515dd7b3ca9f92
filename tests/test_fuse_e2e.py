"""End to end on the synthetic world: synth (real file formats) → ingest → fuse → withheld experiment."""

from __future__ import annotations

import numpy as np
import pytest

from sm1km.config import RunConfig
from sm1km.stages.fuse import fuse
from sm1km.storage import store
from sm1km.validation.withheld import withheld_experiment


@pytest.mark.slow
def test_synth_ingest_fuse_tiny_world(tmp_path):
    from sm1km.stages.ingest import ingest
    from sm1km.synth import preset, write_world

    paths = write_world(tmp_path / "world", preset("tiny", n_days=40, n_stations=2), seed=3)
    base = RunConfig.from_yaml(paths.run_yaml).model_dump()
    inp = base["inputs"]
    base["inputs"] = {"cci": inp["cci"], "era5": inp["era5"], "era5_lsm": inp["era5_lsm"], "truth": inp["truth"]}
    base["cluster"] = {"kind": "synchronous"}
    base["fusion"] = {"min_overlap_days": 10, "neighbourhood_cells": 1, "space_chunk": 2}
    cfg = RunConfig.from_dict(base)
    ingest(cfg)
    out = fuse(cfg)
    ds = store.open_dataset(out["fused"], consolidated=True)
    era5 = store.open_dataset(cfg.store.url("inputs", "era5.zarr"))
    cci = store.open_dataset(cfg.store.url("inputs", "cci.zarr"))
    land = (era5.land_fraction.values >= 0.5) | np.isfinite(cci.sm.values).any(0)
    assert ds.sm.shape == (40, 4, 4) and land.any()
    assert np.isfinite(ds.sm.values[:, land]).all()            # gap-free over land
    assert np.isnan(ds.sm.values[:, ~land]).all() and (ds.source_flag.values[:, ~land] == 0).all()
    obs = np.isfinite(cci.sm.values) & land[None]
    np.testing.assert_array_equal(ds.sm.values[obs], cci.sm.values[obs])
    assert set(np.unique(ds.source_flag.values[:, land])) <= {1, 2, 3} and (ds.source_flag.values == 2).any()
    res = withheld_experiment(cfg, 0.2)
    assert res["vs_truth"]["fused"]["n"] == res["n_withheld"] > 0
    # at the hidden observations fusion beats both baselines; against the truth it beats the
    # climatology (on a 40-day record raw ERA5 can be closer to the truth than ERA5 matched to the
    # noisy CCI: see docs/fusion.md)
    w = res["withheld"]
    assert w["fused"]["ubrmse"] < min(w["era5"]["ubrmse"], w["climatology"]["ubrmse"])
    assert res["vs_truth"]["fused"]["ubrmse"] < res["vs_truth"]["climatology"]["ubrmse"]
