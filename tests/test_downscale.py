"""Downscale stage: end to end on a local path and on S3, resume gives a byte-identical store, the
model is loaded once per worker process, sea is fill, and the product beats the 25 km baseline
against the synthetic truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from downscale_world import FACTOR, N_DAYS, N_LAND_PX, make_world
from sm1km.core import metrics
from sm1km.core.encoding import FILL, encode_int16
from sm1km.core.features import PREDICTOR_NAMES, build_features
from sm1km.core.predict import predict_shard
from sm1km.errors import InputError, ModelError, StoreError
from sm1km.runtime.caches import model_loads
from sm1km.stages import downscale
from sm1km.storage import store
from sm1km.storage.model import load_model
from sm1km.validation.truth import truth_metrics, write_truth_metrics


def _expected_shard(cfg, facts, t0, t1, r0, r1, c0, c1):
    """Independent reference for one shard: build_features → predict → sea mask → pack."""
    m = load_model(cfg.model_path, cfg.store.storage_options())
    f = facts["fused"].isel(time=slice(t0, t1), lat=slice(r0, r1), lon=slice(c0, c1))
    y, x = slice(r0 * FACTOR, r1 * FACTOR), slice(c0 * FACTOR, c1 * FACTOR)
    p = facts["predictors"]
    preds = {k: (p[k].values[t0:t1, y, x] if p[k].ndim == 3 else p[k].values[y, x]) for k in PREDICTOR_NAMES}
    X = build_features(f.sm.values, f.source_flag.values, preds, f.time.values, FACTOR)
    nt, ny, nx = t1 - t0, (r1 - r0) * FACTOR, (c1 - c0) * FACTOR
    sm = m.predict(X).reshape(nt, ny, nx)
    unc = m.predict_uncertainty(X).reshape(nt, ny, nx)
    sea = np.repeat(np.repeat(f.source_flag.values == 0, FACTOR, 1), FACTOR, 2) | (preds["land_cover"] == 17)
    sm[sea] = np.nan
    unc[sea] = np.nan
    return encode_int16(sm), encode_int16(unc)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One local world, downscaled once, shared by the read-only tests below."""
    cfg, facts = make_world(str(tmp_path_factory.mktemp("world") / "run"))
    downscale.downscale(cfg)
    return cfg, facts


def test_plan_covers_the_region_once():
    from downscale_world import make_config

    cfg = make_config("/tmp/unused")
    specs = list(downscale.shard_specs(cfg))
    assert len(specs) == downscale.n_shards(cfg) == 12
    assert len({s.key for s in specs}) == 12
    cover = np.zeros((N_DAYS, 20, 20), int)
    for s in specs:
        y, x = s.fine
        cover[s.t0:s.t1, y, x] += 1
    assert (cover == 1).all()
    # every spec is small (the driver never ships arrays)
    import pickle

    assert max(len(pickle.dumps(s)) for s in specs) < 300


def test_downscale_end_to_end(store_root, monkeypatch):
    root, so = store_root
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    cfg, facts = make_world(root, so)
    out = downscale.downscale(cfg)
    assert out["master"] == cfg.store.url("master.zarr")
    assert out.stats == {"units_total": 12, "units_written": 12, "units_skipped": 0,
                         "shards_total": 12, "shards_written": 12, "shards_skipped": 0,
                         "land_pixel_days_written": N_LAND_PX * N_DAYS, "days_published": 0,
                         "days_added": N_DAYS, "blocks_redone": 3}
    g = store.open_group(out["master"], so)
    # shards equal the independent reference exactly (one with the lake, one without)
    for t0, t1, r0, c0 in ((16, 32, 0, 1), (32, 40, 0, 0)):
        want_sm, want_unc = _expected_shard(cfg, facts, t0, t1, r0, r0 + 1, c0, c0 + 1)
        y, x = slice(r0 * 10, r0 * 10 + 10), slice(c0 * 10, c0 * 10 + 10)
        np.testing.assert_array_equal(g["sm"][t0:t1, y, x], want_sm)
        np.testing.assert_array_equal(g["sm_uncertainty"][t0:t1, y, x], want_unc)
    # sea cell (south-east) and the lake are fill everywhere, other land never
    q = g["sm"][:]
    assert (q[:, 10:, 10:] == FILL).all() and (q[:, :3, :3] == FILL).all()
    land = np.ones((20, 20), bool)
    land[10:, 10:] = land[:3, :3] = False
    assert (q[:, land] != FILL).all()
    assert ((q[q != FILL] >= 0) & (q[q != FILL] <= 1000)).all()
    # consolidated metadata + coverage, readable in one go
    ds = store.open_dataset(out["master"], so, consolidated=True)
    assert ds.attrs["time_coverage_end"] == "2020-02-09" and ds.attrs["last_updated"] == "2023-11-14T22:13:20Z"
    assert ds.attrs["model_sha256"] == load_model(cfg.model_path, so).sha256
    assert float(ds.sm.isel(time=0, lat=5, lon=5)) == pytest.approx(q[0, 5, 5] * 0.001)
    assert np.isnan(ds.sm.isel(time=0, lat=0, lon=0))
    # ledger: one marker per shard; a re-run skips them all
    assert len({k for k in store.Ledger(root, "master.zarr", so).keys() if k.startswith("lat-")}) == 12
    again = downscale.downscale(cfg)
    assert again.stats["shards_skipped"] == 12 and again.stats["shards_written"] == 0
    assert again.stats["units_skipped"] == 12 and again.stats["units_written"] == 0


@pytest.mark.slow
def test_model_loaded_once_per_worker(world):
    from distributed import Client, LocalCluster

    cfg, _ = world
    url = cfg.store.url("master.zarr")
    before_sum = store.checksum_tree(url)
    store.remove(url)
    store.Ledger(cfg.store.root, "master.zarr").clear()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        before = client.run(model_loads)
        out = downscale.downscale(cfg, client, max_in_flight=3)
        loads = client.run(model_loads)
    assert out.stats["shards_written"] == 12
    # same bytes as the in-process run, apart from timestamps
    after_sum = store.checksum_tree(url)
    assert {k for k in after_sum if "/c/" in k} == {k for k in before_sum if "/c/" in k}
    assert all(after_sum[k] == before_sum[k] for k in after_sum if "/c/" in k)
    assert set(before.values()) == {0}
    # 12 tasks on 2 worker processes: each process parsed the model at most once
    assert all(v <= 1 for v in loads.values()) and sum(loads.values()) >= 1


def test_predict_shard_batches_agree(world):
    cfg, facts = world
    m = load_model(cfg.model_path)
    f = facts["fused"].isel(lat=slice(0, 2), lon=slice(0, 2))
    p = facts["predictors"]
    preds = {k: p[k].values for k in PREDICTOR_NAMES}
    args = (f.sm.values, f.source_flag.values, preds, f.time.values, FACTOR, m, True)
    one_sm, one_unc = predict_shard(*args)
    few_sm, few_unc = predict_shard(*args, batch_rows=3 * 400)  # 3 days per batch
    np.testing.assert_array_equal(one_sm, few_sm)
    np.testing.assert_array_equal(one_unc, few_unc)
    assert np.isnan(one_sm[:, 10:, 10:]).all() and np.isnan(one_sm[:, :3, :3]).all()
    assert np.isfinite(one_sm[:, :10, 3:]).all() and np.isfinite(one_unc[:, :10, 3:]).all()


def test_truth_metrics_beat_the_baseline(world):
    cfg, facts = world
    m = truth_metrics(cfg)
    d, b = m["downscaled"], m["baseline_25km"]
    assert d["n"] == b["n"] == N_LAND_PX * N_DAYS
    assert d["ubrmse"] < 0.5 * b["ubrmse"] and d["r"] > b["r"]
    assert d["spatial_anomaly_r"] > 0.8
    assert d["spatial_anomaly_rmse"] < b["spatial_anomaly_rmse"]
    # pooled chunk-wise moments equal the metrics on the whole arrays
    prod = store.open_dataset(cfg.store.url("master.zarr")).sm.values
    ref = metrics.metric_dict(prod, facts["truth"])
    for k in ("n", "r", "ubrmse", "bias", "rmse"):
        assert d[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12)
    url = write_truth_metrics(cfg)
    fs, path = store.filesystem(url)
    written = json.loads(fs.cat_file(path))["truth"]
    assert written["downscaled"]["ubrmse"] == pytest.approx(d["ubrmse"])
    assert written["baseline_25km"]["spatial_anomaly_r"] is None  # undefined: the baseline has no anomaly


def test_inputs_that_do_not_fit_the_run(tmp_path):
    from downscale_world import train_model
    from sm1km.storage.store import zarr_target

    cfg, facts = make_world(str(tmp_path / "run"))
    downscale.downscale(cfg)
    # a re-trained model must not silently mix into an existing master
    f, p = facts["fused"], facts["predictors"]
    train_model(cfg, f.sm.values, f.source_flag.values, p, facts["truth"], pd.DatetimeIndex(f.time.values), rounds=5)
    with pytest.raises(StoreError, match="another model"):
        downscale.downscale(cfg)
    # fused store over a shorter period

    facts["fused"].isel(time=slice(0, 20)).to_zarr(zarr_target(cfg.store.url("fused.zarr"), {}), mode="w",
                                                   zarr_format=3, consolidated=True)
    with pytest.raises(InputError, match="does not cover"):
        downscale.downscale(cfg)
    store.remove(cfg.store.url("inputs", "predictors.zarr"))
    with pytest.raises(StoreError):
        downscale.downscale(cfg)
    store.remove(cfg.model_path)
    with pytest.raises(ModelError):
        downscale.downscale(cfg)


def test_cli_runs_the_stage(world, tmp_path, capsys):
    from sm1km.cli import main

    cfg, _ = world
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    assert main(["downscale", "--config", str(path), "--truth-metrics"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["shards_skipped"] == 12 and out["stats"]["shards_written"] == 0
    assert out["metrics"].endswith("report/metrics.json")
    assert main(["downscale", "--config", str(tmp_path / "absent.yaml")]) == 2
