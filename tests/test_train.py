"""collocate + train: on a tiny world written straight into contract stores (no other stage needed)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from model_world import FACTOR, make_world
from sm1km.core import features as F
from sm1km.errors import ModelError
from sm1km.stages.collocate import collocate, collocate_stores
from sm1km.stages.train import train
from sm1km.storage import model as M
from sm1km.storage import store

FAST = {"rf_trees": 30, "gbt_max_rounds": 60, "n_threads": 1}
CV_KEYS = {"n_stations", "n_samples", "r_pooled", "ubrmse_pooled", "r_median", "ubrmse_median", "bias_median",
           "rmse_pooled"}


@pytest.fixture(autouse=True)
def _fresh_cache():
    M.clear_model_cache()
    yield
    M.clear_model_cache()


def _world_features(w):
    """Features of the whole tiny world (what downscaling computes), shaped (t, y, x, n)."""
    fused, preds = w["fused"], w["predictors"]
    pdict = {n: preds[n].values for n in F.PREDICTOR_NAMES}
    X = F.build_features(fused["sm"].values, fused["source_flag"].values, pdict, fused["time"].values, FACTOR)
    return X.reshape(fused.sizes["time"], preds.sizes["lat"], preds.sizes["lon"], F.N_FEATURES)


def test_collocation_matches_inference_features_and_reports_exclusions(tmp_path):
    cfg, w = make_world(str(tmp_path / "run"))
    table, excluded = collocate_stores(cfg)
    reasons = {e["station"]: e["reason"] for e in excluded}
    assert reasons["NETA/OUTSIDE"] == "outside the region"
    assert "too few days" in reasons["NETB/SPARSE"] and "min_station_days=10" in reasons["NETB/SPARSE"]
    assert table["station"].nunique() == 20
    assert list(table.columns[:7]) == ["station", "network", "lat", "lon", "time", "y", "baseline_25km"]
    assert list(table.columns[7:]) == list(F.FEATURE_NAMES)
    # every row equals the inference features of the station's pixel on that day
    Xw = _world_features(w)
    times = w["fused"]["time"].values
    ids = list(w["stations"]["station"].values)
    for i in (0, 7, 13):
        sid = ids[i]
        sub = table[table["station"] == sid]
        ti = np.searchsorted(times, sub["time"].values)
        r, c = w["station_rows"][i], w["station_cols"][i]
        np.testing.assert_array_equal(sub[list(F.FEATURE_NAMES)].to_numpy(np.float32), Xw[ti, r, c])
        np.testing.assert_array_equal(sub["y"].to_numpy(), w["stations"]["sm"].values[i, ti])
        np.testing.assert_array_equal(sub["baseline_25km"].to_numpy(), sub["sm_25km"].to_numpy())
    # no station-day without a station value or a fused value
    assert table["y"].notna().all() and table["baseline_25km"].notna().all()


def test_collocation_reports_sea_cell(tmp_path):
    cfg, w = make_world(str(tmp_path / "run"))
    fused = w["fused"].copy(deep=True)
    fused["sm"][:] = np.nan  # every cell "sea"
    table, excluded = collocate(w["stations"], fused, w["predictors"], FACTOR, 10)
    assert len(table) == 0
    assert sum("no fused 25 km value" in e["reason"] for e in excluded) == 20


@pytest.mark.slow
def test_train_end_to_end(tmp_path):
    cfg, w = make_world(str(tmp_path / "run"))
    # another stage's section of metrics.json must survive
    fs, path = store.filesystem(cfg.store.url("report", "metrics.json"))
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, json.dumps({"fusion": {"x": 1}}).encode())

    urls = train(cfg, **FAST)
    assert {"model", "card", "uncertainty", "metrics"} <= set(urls)
    # units: the two models fitted and saved (model + uncertainty); training never skips
    assert {k: urls.stats[k] for k in ("units_total", "units_written", "units_skipped")} == \
        {"units_total": 2, "units_written": 2, "units_skipped": 0}
    card = json.loads(open(urls["card"]).read())
    assert card["algorithm"] in ("rf", "gbt") and "station-grouped" in card["algorithm_reason"]
    assert card["target_kind"] in ("sm", "residual") and "station-grouped" in card["target_reason"]
    tc = card["cv"]["targets"]
    assert set(tc) == {"sm", "residual"} and all(set(tc[t]) == {"rf", "gbt"} for t in tc)
    # the card records the rule, every candidate's score and measured prediction cost, the choice
    sel = card["selection"]
    assert sel["chosen"] == f"{card['algorithm']}/{card['target_kind']}" and "noise" in sel["rule"]
    assert set(sel["candidates"]) == {"rf/sm", "rf/residual", "gbt/sm", "gbt/residual"}
    for name, c in sel["candidates"].items():
        assert c["prediction_cost"] > 0 and len(c["ubrmse_per_fold"]) == 5, name
        assert sel["fits"][name] == 15  # 5 outer + 10 shared pair fits (nested CV, K = 5)
    # the rule holds: the choice is within the noise of the best, and every cheaper one is not
    ch = sel["candidates"][sel["chosen"]]
    assert ch["margin_to_best"] <= ch["noise_se"]
    for name, c in sel["candidates"].items():
        if c["prediction_cost"] < ch["prediction_cost"]:
            assert c["margin_to_best"] > c["noise_se"], name
    assert card["training"]["n_stations"] == 20 and card["training"]["n_samples"] > 900
    assert {e["station"] for e in card["training"]["excluded_stations"]} == {"NETA/OUTSIDE", "NETB/SPARSE"}
    assert card["feature_schema"] == json.loads(json.dumps(F.FEATURE_SCHEMA))
    assert card["files"]["model.ubj"]["sha256"] == store.sha256_file(urls["model"])
    assert card["files"]["uncertainty.ubj"]["sha256"] == store.sha256_file(urls["uncertainty"])
    assert sum(card["feature_importance_gain"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "xgboost" in card["packages"]
    cv = card["cv"]
    chosen = card["algorithm"]
    for scheme in ("random_kfold", "station_grouped", "network_out", "cell_grouped", "spatial_block", "year_out"):
        assert CV_KEYS <= set(cv[scheme]), scheme
        assert CV_KEYS <= set(cv[scheme]["baseline_25km"])
        assert CV_KEYS <= set(cv["algorithms"][chosen][scheme])
    for alg in ("rf", "gbt"):
        assert CV_KEYS <= set(cv["algorithms"][alg]["station_grouped"])
    assert cv["year_out"]["held_out"] == "month" and "fewer than 2 years" in cv["year_out"]["note"]
    assert cv["network_out"]["held_out"] == "network" and cv["network_out"]["n_folds"] == 2
    assert cv["cell_grouped"]["held_out"] == "25km_cell"
    assert cv["default_algorithm"] == chosen
    # nested: the outer-fold score of the whole procedure, one choice per outer fold
    nested = cv["nested"]
    assert CV_KEYS <= set(nested) and nested["n_samples"] == cv["station_grouped"]["n_samples"]
    assert [c["fold"] for c in nested["choices"]] == list(range(5))
    assert all(c["choice"] in sel["candidates"] for c in nested["choices"])
    assert 0 < nested["uncertainty"]["coverage"] <= 1
    metrics = json.loads(open(urls["metrics"]).read())
    assert metrics["fusion"] == {"x": 1}
    assert metrics["model"]["default_algorithm"] == chosen
    assert metrics["model"]["station_grouped"]["n_stations"] == 20
    assert metrics["model"]["nested"]["n_stations"] == 20

    # the model downscales: against the 1 km truth it beats the 25 km field it started from
    m = M.load_model(urls["model"])
    Xw = _world_features(w)
    flat = Xw.reshape(-1, F.N_FEATURES)
    pred = m.predict(flat)
    truth = w["truth"].values.reshape(-1)
    base = flat[:, F.column("sm_25km")]
    rmse_model = np.sqrt(np.mean((pred - truth) ** 2))
    rmse_base = np.sqrt(np.mean((base - truth) ** 2))
    assert rmse_model < 0.8 * rmse_base, (rmse_model, rmse_base)
    u = m.predict_uncertainty(flat)
    assert np.isfinite(u).all() and (u > 0).mean() > 0.9 and np.median(u) < 0.05


@pytest.mark.slow
def test_train_is_deterministic_and_works_on_s3(tmp_path, s3_bucket):
    bucket, opts = s3_bucket
    cfg_a, _ = make_world(str(tmp_path / "a"))
    cfg_b, _ = make_world(f"s3://{bucket}/run", storage_options=opts)
    ua = train(cfg_a, algorithms=("rf",), **FAST)
    ub = train(cfg_b, algorithms=("rf",), **FAST)
    so = cfg_b.store.storage_options()
    fs, _ = store.filesystem(ub["model"], so)
    assert open(ua["model"], "rb").read() == fs.cat_file(ub["model"])
    assert open(ua["uncertainty"], "rb").read() == fs.cat_file(ub["uncertainty"])
    m = M.load_model(ub["model"], so)
    assert m.card["algorithm"] == "rf" and m.sha256 == store.sha256_file(ua["model"])
    # a different seed gives a different forest
    cfg_c, _ = make_world(str(tmp_path / "c"))
    cfg_c = cfg_c.model_copy(update={"seeds": cfg_c.seeds.model_copy(update={"train": 7})})
    uc = train(cfg_c, algorithms=("rf",), **FAST)
    assert open(uc["model"], "rb").read() != open(ua["model"], "rb").read()


def test_train_refuses_too_little_data(tmp_path):
    cfg, _ = make_world(str(tmp_path / "run"), min_station_days=1000)
    with pytest.raises(ModelError, match="too little training data"):
        train(cfg, **FAST)


def test_cli_train(tmp_path, capsys):
    from sm1km.cli import main

    cfg, _ = make_world(str(tmp_path / "run"), algorithm="rf")
    yml = tmp_path / "run.yaml"
    yml.write_text(cfg.to_yaml())
    rc = main(["train", "--config", str(yml), "--rf-trees", "10", "--gbt-max-rounds", "30", "--threads", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    card = json.loads(open(out["card"]).read())
    assert card["algorithm"] == "rf" and "config" in card["algorithm_reason"]
    assert set(card["cv"]["algorithms"]) == {"rf", "gbt"}


def test_collocation_in_parallel_batches_equals_serial(tmp_path):
    from distributed import Client

    cfg, _ = make_world(str(tmp_path / "run"))
    serial, ex_serial = collocate_stores(cfg)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        par, ex_par = collocate_stores(cfg, client=client, batch_size=5)
    assert par.equals(serial)
    assert sorted(e["station"] for e in ex_par) == sorted(e["station"] for e in ex_serial)


def test_prediction_cost_counts_node_visits():
    """The measured prediction cost: split nodes a row passes, summed over the trees used."""
    import xgboost as xgb

    from sm1km.stages.train import node_visits_per_row

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, F.N_FEATURES)).astype(np.float32)
    y = rng.normal(size=500)
    d = xgb.DMatrix(X, label=y, feature_names=list(F.FEATURE_NAMES))
    stumps = xgb.train({"max_depth": 1, "nthread": 1}, d, 3)
    assert node_visits_per_row(stumps, X) == 3.0
    deep = xgb.train({"max_depth": 3, "min_child_weight": 0, "nthread": 1}, d, 2)
    assert node_visits_per_row(deep, X) == 6.0 and node_visits_per_row(deep, X, 1) == 3.0
    forest = xgb.train({"max_depth": 3, "min_child_weight": 0, "num_parallel_tree": 4, "nthread": 1}, d, 1)
    assert node_visits_per_row(forest, X) == 12.0
