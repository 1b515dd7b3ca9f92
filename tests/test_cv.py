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


# ------------------------------------------------------------------------------ new schemes
def _network_table(seed=0):
    """30 stations in 4 networks; stations sit in shared 25 km cells (2-3 per cell)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(30):
        cell = i // 3 if i < 24 else 8 + i  # 8 cells with 3 stations, then single-station cells
        lat = 45.0 + 0.25 * (cell % 4) + rng.uniform(0.01, 0.24)
        lon = 10.0 + 0.25 * (cell // 4) + rng.uniform(0.01, 0.24)
        for d in range(10):
            rows.append({"station": f"N{i % 4}/S{i}", "network": f"N{i % 4}", "lat": lat, "lon": lon,
                         "time": pd.Timestamp("2020-01-01") + pd.Timedelta(days=d), "y": rng.uniform()})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("scheme", ["station_grouped", "network_out", "cell_grouped"])
def test_grouped_schemes_never_split_a_group(scheme):
    table = _network_table()
    folds, info = cv.assign_folds(scheme, table, 5, seed=3)
    groups = cv.groups_of(scheme, table)
    assert cv.groups_disjoint(groups, folds)
    # and none of the finer groups is split either (a cell or network holds whole stations)
    assert cv.groups_disjoint(table["station"].to_numpy(), folds)
    assert len(np.unique(folds)) == min(5, len(np.unique(groups)))
    # the check itself can fail: random K-fold splits stations, cells and networks
    rk = cv.random_kfold(len(table), 5, 3)
    assert not cv.groups_disjoint(groups, rk)


def test_network_out_and_cell_groups():
    table = _network_table()
    folds, info = cv.assign_folds("network_out", table, 5, seed=0)
    assert info["held_out"] == "network" and info["n_groups"] == 4 and info["note"] == ""
    assert len(np.unique(folds)) == 4  # one network per fold: leave-one-network-out
    folds, info = cv.assign_folds("cell_grouped", table, 5, seed=0)
    assert info["held_out"] == "25km_cell" and info["n_groups"] == 14
    # the cell label is the CCI 0.25 deg cell: two points of one cell share it, neighbours do not
    lab = cv.cell_groups([45.01, 45.24, 45.26], [10.01, 10.24, 10.01])
    assert lab[0] == lab[1] != lab[2]
    one = table.assign(network="N0")
    folds, info = cv.assign_folds("network_out", one, 5, seed=0)
    assert len(np.unique(folds)) == 1 and "only one network" in info["note"]
    assert set(cv.SCHEMES) >= {"random_kfold", "station_grouped", "network_out", "cell_grouped",
                               "spatial_block", "year_out"}


# ------------------------------------------------------------------------------ nested CV
def test_nested_fits_never_train_on_the_folds_they_score():
    """Instrumented: every fit records the sample ids it trained on; its predictions carry its
    call index, so each inner prediction can be traced back to the fit that made it."""
    n = 200
    ids = np.arange(n)
    X = ids[:, None].astype(np.float64)
    folds = cv.random_kfold(n, 5, 1)
    trained: list[set[int]] = []

    def fit_predict(Xa, ya, _g, Xb):
        trained.append(set(Xa[:, 0].astype(int).tolist()))
        assert not trained[-1] & set(Xb[:, 0].astype(int).tolist())
        return np.full(len(Xb), float(len(trained) - 1))

    outer, inner, calls = cv.nested_fits(X, np.zeros(n), ids, folds, fit_predict)
    assert len(calls) == 5 + 10 and len(trained) == 15  # K outer + K(K-1)/2 shared pair fits
    for f in range(5):
        test = folds == f
        assert np.isnan(inner[f][test]).all() and np.isfinite(inner[f][~test]).all()
        assert not trained[int(outer[test][0])] & set(ids[test].tolist())
        for i in np.flatnonzero(~test):  # the fit behind inner[f][i] saw neither fold f nor i's fold
            fit = int(inner[f][i])
            assert set(calls[fit]) == {f, int(folds[i])}
            assert not trained[fit] & set(ids[(folds == f) | (folds == folds[i])].tolist())


def _oracle_world(n=1000, seed=0):
    """Candidate ``ok`` errs by 0.10 everywhere; ``oracle<f>`` is exact on fold f and errs by 0.11
    elsewhere. Choosing on all folds (peeking) would pick oracle<f> for fold f (mean square error
    0.8 x 0.11^2 < 0.10^2) and score ~0; honest nesting never sees fold f, so oracle<f> looks bad
    there and the outer score stays >= 0.10."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    folds = cv.random_kfold(n, 5, seed)
    e = rng.standard_normal(n)
    e = (e - e.mean()) / e.std()
    preds = {"ok": y + 0.10 * e}
    for f in range(5):
        p = y + 0.11 * e
        p[folds == f] = y[folds == f]
        preds[f"oracle{f}"] = p
    return y, folds, preds


def test_nested_selection_does_not_peek():
    y, folds, preds = _oracle_world()
    X = np.arange(len(y))[:, None].astype(np.float64)

    def fixed(name):  # a "model" whose predictions do not depend on its training data
        return lambda Xa, ya, g, Xb: preds[name][Xb[:, 0].astype(int)]

    fits = {c: cv.nested_fits(X, y, np.arange(len(y)), folds, fixed(c)) for c in preds}

    def lowest(f, pooled, per_fold):
        return min(pooled, key=pooled.get), {"best": min(pooled, key=pooled.get)}

    nested, record = cv.nested_choice(y, folds, {c: v[0] for c, v in fits.items()},
                                      {c: v[1] for c, v in fits.items()}, lowest)
    # each outer fold f chose a candidate on the other folds only: never oracle<f>
    assert all(r["choice"] != f"oracle{r['fold']}" for r in record)
    assert cv.summarize(nested, y, np.zeros(len(y)))["ubrmse_pooled"] >= 0.099
    # what peeking would have reported (choice on all folds including f) is the trap itself
    peek = np.empty(len(y))
    for f in range(5):
        best = min(preds, key=lambda c: np.mean((preds[c] - y) ** 2))
        assert best != "ok"
        c = min(preds, key=lambda c: np.mean((preds[c] - y) ** 2) if c in ("ok", f"oracle{f}") else np.inf)
        peek[folds == f] = preds[c][folds == f]
    assert cv.summarize(peek, y, np.zeros(len(y)))["ubrmse_pooled"] < 0.01


# ------------------------------------------------------------------------------ cost-aware rule
def test_cost_aware_choice_takes_the_cheaper_within_noise():
    pooled = {"cheap": 0.0533, "dear": 0.0520}
    # the best's per-fold scores scatter: standard error 0.0018 > the 0.0013 margin
    per_fold = {"dear": np.array([0.050, 0.055, 0.048, 0.057, 0.050]),
                "cheap": np.array([0.055, 0.052, 0.054, 0.055, 0.051])}
    c, info = cv.cost_aware_choice(pooled, per_fold, {"cheap": 300.0, "dear": 2900.0})
    assert c == "cheap" and info["best"] == "dear"
    assert info["candidates"]["cheap"]["margin_to_best"] <= info["candidates"]["cheap"]["noise_se"]
    # the same numbers with the costs swapped: the best is also the cheapest
    c, _ = cv.cost_aware_choice(pooled, per_fold, {"cheap": 3000.0, "dear": 290.0})
    assert c == "dear"


def test_cost_aware_choice_takes_the_better_when_clearly_better():
    pooled = {"cheap": 0.0600, "dear": 0.0520}
    per_fold = {"dear": np.array([0.050, 0.055, 0.048, 0.057, 0.050]),
                "cheap": np.array([0.058, 0.063, 0.056, 0.065, 0.058])}  # worse in every fold, by 0.008
    c, info = cv.cost_aware_choice(pooled, per_fold, {"cheap": 300.0, "dear": 2900.0})
    assert c == "dear" and info["candidates"]["cheap"]["margin_to_best"] > info["candidates"]["cheap"]["noise_se"]
    # with one fold there is no noise estimate: the best wins
    c, _ = cv.cost_aware_choice({"a": 0.05, "b": 0.051}, {"a": np.array([0.05]), "b": np.array([0.051])},
                                {"a": 10.0, "b": 1.0})
    assert c == "a"
