"""cv: fold designs, metrics with known answers, and random K-fold's optimism under a station effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sm1km.core import cv


def test_summarize_known_answers():
    obs = np.array([0.1, 0.2, 0.3, 0.4, 0.2, 0.3, 0.4, 0.5])
    st = np.array(["a"] * 4 + ["b"] * 4)
    est = obs + np.array([0.05] * 4 + [-0.05] * 4)  # constant offsets per station
    s = cv.summarize(est, obs, st)
    assert s["n_stations"] == 2 and s["n_samples"] == 8
    assert s["r_median"] == pytest.approx(1.0)
    assert s["ubrmse_median"] == pytest.approx(0.0, abs=1e-12)
    assert s["bias_median"] == pytest.approx(0.0, abs=1e-12)  # median of +0.05 and -0.05
    assert s["rmse_pooled"] == pytest.approx(0.05)
    assert s["ubrmse_pooled"] == pytest.approx(0.05)  # pooled: offsets are not removed per station
    assert s["bias_pooled"] == pytest.approx(0.0, abs=1e-12)
    # NaN pairs are dropped
    est2 = est.copy()
    est2[0] = np.nan
    assert cv.summarize(est2, obs, st)["n_samples"] == 7


def test_group_kfold_keeps_groups_together_and_balances():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 23, 1000)
    folds = cv.group_kfold(groups, 5, seed=3)
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.max() - sizes.min() < 0.2 * sizes.mean()
    np.testing.assert_array_equal(folds, cv.group_kfold(groups, 5, seed=3))  # seeded
    assert len(np.unique(cv.group_kfold(np.array([1, 1, 2, 2]), 5, 0))) == 2  # fewer groups than k


def test_random_kfold():
    f = cv.random_kfold(103, 5, 7)
    assert sorted(np.bincount(f)) == [20, 20, 21, 21, 21]
    np.testing.assert_array_equal(f, cv.random_kfold(103, 5, 7))
    assert not np.array_equal(f, cv.random_kfold(103, 5, 8))


def test_time_blocks_fall_back():
    years = pd.date_range("2019-01-01", "2020-12-31", freq="7D")
    lab, info = cv.time_blocks(years.values, 5)
    assert info["held_out"] == "year" and set(lab) == {2019, 2020}
    lab, info = cv.time_blocks(pd.date_range("2020-04-01", periods=60).values, 5)
    assert info["held_out"] == "month" and len(set(lab)) == 2 and "fewer than 2 years" in info["note"]
    lab, info = cv.time_blocks(pd.date_range("2020-04-01", periods=20).values, 4)
    assert info["held_out"] == "time_block" and len(set(lab)) == 4


def test_spatial_blocks_fall_back():
    lat = np.array([45.1, 45.2, 46.3, 47.6, 44.2, 45.9])
    lon = np.array([10.1, 11.3, 12.5, 10.2, 13.9, 14.8])
    lab, info = cv.spatial_blocks(lat, lon, 5)
    assert info["block_deg"] == 1.0 and info["n_groups"] == 6
    lat = np.array([45.1, 45.2, 45.4, 45.45])
    lon = np.array([10.1, 10.2, 10.4, 10.45])
    lab, info = cv.spatial_blocks(lat, lon, 3)
    assert info["block_deg"] == 0.25 and info["n_groups"] == 2 and "0.25" in info["note"]
    lab, info = cv.spatial_blocks(lat[:2], lon[:2], 3, networks=np.array(["A", "B"]))
    assert info["held_out"] == "network"


def _station_effect_table(n_st=20, n_days=30, effect=0.06, seed=0):
    rng = np.random.default_rng(seed)
    st = np.repeat([f"N/S{i}" for i in range(n_st)], n_days)
    signal = np.tile(np.sin(np.arange(n_days) / 5.0) * 0.05 + 0.25, n_st)
    static = np.repeat(rng.normal(size=n_st), n_days)  # identifies the station, explains nothing
    offset = np.repeat(effect * rng.standard_normal(n_st), n_days)
    y = signal + offset + 0.01 * rng.standard_normal(len(st))
    X = np.column_stack([signal, static]).astype(np.float32)
    table = pd.DataFrame({"station": st, "network": "N", "lat": np.repeat(rng.uniform(40, 50, n_st), n_days),
                          "lon": np.repeat(rng.uniform(0, 10, n_st), n_days),
                          "time": np.tile(pd.date_range("2020-01-01", periods=n_days).values, n_st), "y": y})
    return table, X


def test_random_kfold_is_optimistic_under_a_station_effect():
    import xgboost as xgb

    table, X = _station_effect_table()

    def fit_predict(Xa, ya, _st, Xb):
        b = xgb.train({"max_depth": 6, "eta": 0.5, "nthread": 1, "seed": 0}, xgb.DMatrix(Xa, label=ya), 25)
        return b.inplace_predict(Xb)

    res, preds = cv.cross_validate(table, X, fit_predict, k=5, seed=1, schemes=("random_kfold", "station_grouped"))
    rk, sg = res["random_kfold"], res["station_grouped"]
    assert rk["n_samples"] == sg["n_samples"] == len(table)
    assert np.isfinite(preds["random_kfold"]).all() and np.isfinite(preds["station_grouped"]).all()
    # the model memorises stations through the static feature: random K-fold looks far better
    assert rk["rmse_pooled"] < 0.5 * sg["rmse_pooled"]
    assert rk["r_pooled"] > sg["r_pooled"] + 0.2
    assert sg["held_out"] == "station" and sg["n_folds"] == 5


def test_unknown_scheme():
    table, _ = _station_effect_table(n_st=3, n_days=3)
    with pytest.raises(ValueError, match="unknown CV scheme"):
        cv.assign_folds("loo", table, 3, 0)
