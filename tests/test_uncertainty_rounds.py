"""The quantile (uncertainty) model's rounds are chosen on held-out stations: few where the error
is station-specific (nothing to learn that carries over), more where the spread really depends on
a feature. Pure functions on synthetic residuals with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from sm1km.core.features import FEATURE_NAMES
from sm1km.stages.train import band_coverage, choose_uncertainty_rounds, pinball_loss

N_ST, DAYS = 40, 60


def _features(rng):
    """Station-constant statics (elevation etc. identify a station) plus daily noise columns."""
    X = rng.normal(size=(N_ST * DAYS, len(FEATURE_NAMES))).astype(np.float32)
    stations = np.repeat(np.arange(N_ST), DAYS)
    statics = rng.normal(size=(N_ST, 6)).astype(np.float32)
    X[:, :6] = statics[stations]
    return X, stations


def test_station_specific_errors_get_few_rounds_and_honest_coverage():
    rng = np.random.default_rng(0)
    X, st = _features(rng)
    # each station has its own bias and spread, unrelated to anything a new station shows
    bias, spread = rng.normal(0, 0.03, N_ST), rng.uniform(0.005, 0.03, N_ST)
    resid = bias[st] + rng.normal(size=len(st)) * spread[st]
    rounds, cv = choose_uncertainty_rounds(X, resid, st, k=5, seed=1, n_threads=1)
    assert rounds <= 10, cv
    assert cv[str(rounds)]["pinball"] < cv["200"]["pinball"]
    # the chosen band covers held-out stations about as a 16-84 % band should; 200 rounds does not
    assert 0.55 <= cv[str(rounds)]["coverage"] <= 0.8, cv
    assert cv["200"]["coverage"] < cv[str(rounds)]["coverage"] - 0.1, cv


def test_feature_driven_spread_gets_more_rounds():
    rng = np.random.default_rng(1)
    X, st = _features(rng)
    # the spread is set by a daily feature (column 10), the same rule at every station
    sigma = 0.005 + 0.04 * (X[:, 10] > 0)
    resid = rng.normal(size=len(st)) * sigma
    rounds, cv = choose_uncertainty_rounds(X, resid, st, k=5, seed=1, n_threads=1)
    assert rounds >= 25, cv
    assert cv[str(rounds)]["pinball"] < cv["1"]["pinball"] * 0.9, cv


def test_pinball_and_coverage_definitions():
    resid = np.array([-1.0, 0.0, 2.0])
    q = np.tile([[-0.5, 0.5]], (3, 1))
    # alpha 0.16 at q=-0.5: d = -0.5, 0.5, 2.5 -> 0.84*0.5, 0.16*0.5, 0.16*2.5
    # alpha 0.84 at q=+0.5: d = -1.5, -0.5, 1.5 -> 0.16*1.5, 0.16*0.5, 0.84*1.5
    expected = np.mean([0.84 * 0.5, 0.16 * 0.5, 0.16 * 2.5, 0.16 * 1.5, 0.16 * 0.5, 0.84 * 1.5])
    assert pinball_loss(resid, q) == pytest.approx(expected)
    assert band_coverage(resid, q) == pytest.approx(1 / 3)


def test_one_station_fold_keeps_the_most_rounds():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, len(FEATURE_NAMES))).astype(np.float32)
    rounds, info = choose_uncertainty_rounds(X, rng.normal(size=50), np.zeros(50), k=5, seed=1, n_threads=1)
    assert rounds == 200 and "note" in info


def test_benchmark_runs_on_a_run_and_records_no_paths(tmp_path):
    """benchmarks/uncertainty_rounds.py on the stores of a tiny run: every setting is scored on
    held-out stations; the JSON names the world, not machine paths."""
    import importlib.util
    import json

    from conftest import REPO
    from model_world import make_world

    cfg, _ = make_world(str(tmp_path / "run"), n_stations=12)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(cfg.to_yaml())
    spec = importlib.util.spec_from_file_location("uncertainty_rounds", REPO / "benchmarks" / "uncertainty_rounds.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out_file = tmp_path / "u.json"
    assert bench.main(["--config", str(cfg_file), "--out", str(out_file), "--settings", "1x0.05,20x0.05"]) == 0
    out = json.loads(out_file.read_text())
    assert set(out["settings"]) == {"1x0.05", "20x0.05"} and out["stations"] == 12
    for s in out["settings"].values():
        assert 0 <= s["coverage_heldout"] <= 1 and s["pinball_heldout"] > 0 and s["predict_rows_per_s_1_thread"] > 0
    assert out["settings"]["1x0.05"]["trees"] == 2 and out["settings"]["20x0.05"]["trees"] == 40
    assert str(tmp_path) not in out_file.read_text()
