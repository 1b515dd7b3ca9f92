"""``sm1km train``: the XGBoost downscaling model, trained on ISMN stations, with honest CV.

1. :func:`sm1km.stages.collocate.collocate_stores` pairs each station-day with its 1 km pixel's features.
2. Candidates = algorithm × target. Algorithms: XGBoost as a **random forest** (``rf``: one round
   of ``num_parallel_tree`` trees, row subsample 0.63, ``colsample_bynode`` 0.33, learning rate 1,
   as in the published product) and **gradient-boosted trees** (``gbt``: hist, depth 6, eta 0.05,
   early stopping on held-out *stations* inside each training fold); targets ``sm`` (the station
   value) and ``residual`` (its departure from the 25 km value). Every candidate gets **nested**
   station-grouped CV with shared fits (:func:`sm1km.core.cv.nested_fits`: 5 outer + 10 pair fits
   for K = 5). ``model.algorithm: auto`` applies the cost-aware rule (:data:`SELECTION_RULE`):
   the cheaper model to predict (node visits per row, :func:`node_visits_per_row`) unless a
   costlier one wins by more than the fold noise. The same rule inside every outer fold gives the
   nested (outer-fold) score — what the card and the report print as the honest estimate. The
   other designs of :mod:`sm1km.core.cv` (random K-fold, leave-network-out, 25 km-cell-grouped,
   spatial blocks, year-out) are run for the chosen candidate, with the fused 25 km, ERA5 and CCI
   baselines at the same station-days.
3. The chosen candidate is refitted on all samples (``model.ubj``); a quantile model
   (``reg:quantileerror``, α = 0.16/0.84) of its out-of-fold (station-grouped) residuals gives
   the per-pixel uncertainty (``uncertainty.ubj``), with its number of rounds chosen by the
   pinball loss on held-out stations (:func:`choose_uncertainty_rounds`), and chosen again inside
   every outer fold for the nested coverage (:func:`nested_uncertainty`); the card
   ``model.json`` records everything.
4. The CV numbers go to ``<root>/report/metrics.json`` under ``model``.

Deterministic: fixed ``seeds.train`` and a fixed XGBoost thread count give byte-identical files.

**Resumable** (like every stage): the card records what the model was computed from
(``training_deps``: :func:`training_deps` — a digest of the collocated training table, the
``model`` settings that shape training, ``seeds.train``, the stage's options, period, region and the
code versions). A re-run whose inputs are unchanged and whose files match the card's sha256 is a
no-op that says so and writes nothing; changed inputs (more station-days, another setting, a new
``TRAIN_VERSION``) retrain, naming what changed — as a revised input day recomputes its block in
``fuse``/``downscale``; ``overwrite=True`` (``sm1km train --overwrite``) retrains regardless.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sm1km._version import __version__
from sm1km.config import RunConfig
from sm1km.core import cv
from sm1km.core.cv import SCHEMES, group_kfold
from sm1km.core.features import FEATURE_NAMES, FEATURE_SCHEMA, column
from sm1km.errors import ModelError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.storage import store
from sm1km.storage.deps import digest_of as deps_digest
from sm1km.storage.metrics_json import jsonable, update_metrics_json
from sm1km.storage.model import QUANTILES, save_model

log = logging.getLogger(__name__)

ALGORITHMS = ("rf", "gbt")
TARGET_KINDS = ("residual", "sm")
DEFAULT_THREADS = 4  # fixed (not os.cpu_count()): XGBoost's sums depend on the thread split

RF_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "tree_method": "hist",
    "num_parallel_tree": 250,
    "subsample": 0.63,
    "colsample_bynode": 0.33,
    "learning_rate": 1.0,
    "max_depth": 12,
    "min_child_weight": 5,
    "reg_lambda": 0.1,  # near-zero L2: leaves are (almost) plain means, as in a random forest
    "max_bin": 256,
}
GBT_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "tree_method": "hist",
    "max_depth": 6,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "reg_lambda": 1.0,
    "max_bin": 256,
}
GBT_MAX_ROUNDS = 600
GBT_EARLY_STOPPING = 30
GBT_VALID_FRACTION = 0.2  # of the training fold's stations, for early stopping
UNCERTAINTY_PARAMS: dict[str, Any] = {
    "objective": "reg:quantileerror",
    "tree_method": "hist",
    "max_depth": 4,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "min_child_weight": 20,
    "max_bin": 256,
}
#: candidate rounds of the quantile model; the one with the lowest station-grouped CV pinball loss
#: is kept (ties: fewer). 200 was the fixed choice before: on the demo world it covered 30 % of
#: held-out stations' residuals with its 16-84 % band, a near-constant band 67 %
#: (benchmarks/uncertainty_rounds.py, docs/model.md).
UNCERTAINTY_ROUND_GRID = (1, 2, 5, 10, 25, 50, 100, 200)
COST_ROWS = 2000  # rows on which each candidate's prediction cost (node visits per row) is measured


@dataclass
class Trainer:
    """Fits one algorithm; ``fit_predict`` is the CV callback. Records GBT early-stopping rounds."""

    algorithm: str
    seed: int
    n_threads: int = DEFAULT_THREADS
    rf_trees: int = RF_PARAMS["num_parallel_tree"]
    gbt_max_rounds: int = GBT_MAX_ROUNDS
    target: str = "residual"  # "residual": learn y - sm_25km (predict adds it back); "sm": learn y
    best_rounds: list[int] = field(default_factory=list)

    def _label(self, X, y):
        return y - X[:, column("sm_25km")] if self.target == "residual" else y

    def params(self) -> dict[str, Any]:
        base = dict(RF_PARAMS, num_parallel_tree=self.rf_trees) if self.algorithm == "rf" else dict(GBT_PARAMS)
        base.update(seed=int(self.seed), nthread=int(self.n_threads))
        return base

    def _dmatrix(self, X, y=None):
        import xgboost as xgb

        return xgb.DMatrix(X, label=y, feature_names=list(FEATURE_NAMES), nthread=int(self.n_threads),
                           missing=np.nan)

    def fit(self, X, y, stations=None, rounds: int | None = None):
        """Booster on (X, y). GBT: early stopping on held-out stations unless ``rounds`` is given."""
        import xgboost as xgb

        y = self._label(X, np.asarray(y, dtype=np.float64))

        if self.algorithm == "rf":
            return xgb.train(self.params(), self._dmatrix(X, y), num_boost_round=1)
        if rounds is not None:
            return xgb.train(self.params(), self._dmatrix(X, y), num_boost_round=int(rounds))
        uniq = np.unique(stations)
        n_valid = int(round(len(uniq) * GBT_VALID_FRACTION))
        if n_valid < 1 or len(uniq) - n_valid < 2:
            return xgb.train(self.params(), self._dmatrix(X, y), num_boost_round=self.gbt_max_rounds // 2)
        rng = np.random.default_rng([self.seed, len(y)])
        valid_st = rng.choice(uniq, n_valid, replace=False)
        v = np.isin(stations, valid_st)
        b = xgb.train(self.params(), self._dmatrix(X[~v], y[~v]), num_boost_round=self.gbt_max_rounds,
                      evals=[(self._dmatrix(X[v], y[v]), "valid")], early_stopping_rounds=GBT_EARLY_STOPPING,
                      verbose_eval=False)
        self.best_rounds.append(int(b.best_iteration) + 1)
        return b

    def predict(self, booster, X) -> np.ndarray:
        """Soil moisture for rows X (adds sm_25km back for the residual target)."""
        best = getattr(booster, "best_iteration", None) if self.algorithm == "gbt" else None
        if best is not None:
            p = booster.inplace_predict(X, iteration_range=(0, int(best) + 1))
        else:
            p = booster.inplace_predict(X)
        p = np.asarray(p, dtype=np.float64)
        return p + X[:, column("sm_25km")] if self.target == "residual" else p

    def fit_predict(self, X_train, y_train, stations_train, X_test) -> np.ndarray:
        return self.predict(self.fit(X_train, y_train, stations_train), X_test)

    def final_rounds(self) -> int | None:
        """GBT rounds for the final fit: median of the early-stopping optima seen so far."""
        if self.algorithm != "gbt":
            return None
        return int(np.median(self.best_rounds)) if self.best_rounds else self.gbt_max_rounds // 2


def pinball_loss(resid: np.ndarray, q: np.ndarray, alphas=QUANTILES) -> float:
    """Mean pinball (quantile) loss of predicted quantiles ``q`` (n, len(alphas)); lower is better."""
    d = np.asarray(resid, dtype=np.float64)[:, None] - np.asarray(q, dtype=np.float64)
    a = np.asarray(alphas, dtype=np.float64)[None, :]
    return float(np.mean(np.maximum(a * d, (a - 1.0) * d)))


def band_coverage(resid: np.ndarray, q: np.ndarray) -> float:
    """Share of ``resid`` inside [first, last] predicted quantile (0.68 expected for 16-84 %)."""
    return float(np.mean((resid >= q[:, 0]) & (resid <= q[:, -1]))) if len(resid) else float("nan")


def choose_uncertainty_rounds(X: np.ndarray, resid: np.ndarray, stations: np.ndarray, *, k: int, seed: int,
                              n_threads: int, grid=UNCERTAINTY_ROUND_GRID,
                              folds: np.ndarray | None = None) -> tuple[int, dict[str, Any]]:
    """Rounds of the quantile model by station-grouped CV: per fold one booster of ``max(grid)``
    rounds, scored on the held-out stations at every prefix in ``grid``; the lowest mean pinball
    loss wins (ties: fewer rounds). Returns (rounds, {rounds: {pinball, coverage}}).
    ``folds`` (optional) gives the fold of every row instead of grouping ``stations`` anew.

    Why: the quantile model learns station-specific error patterns that do not carry over to new
    stations; with too many rounds its band is far too narrow where there is no station.
    """
    import xgboost as xgb

    folds = group_kfold(stations, k, seed) if folds is None else np.asarray(folds)
    grid = tuple(sorted(set(int(r) for r in grid)))
    if len(np.unique(folds)) < 2:
        return grid[-1], {"note": "fewer than 2 station folds: no held-out choice, the most rounds kept"}
    params = dict(UNCERTAINTY_PARAMS, quantile_alpha=np.array(QUANTILES), seed=int(seed), nthread=int(n_threads))
    q = {r: np.full((len(resid), len(QUANTILES)), np.nan) for r in grid}
    for f in np.unique(folds):
        te = folds == f
        d = xgb.DMatrix(X[~te], label=resid[~te], feature_names=list(FEATURE_NAMES), nthread=int(n_threads))
        b = xgb.train(params, d, num_boost_round=grid[-1])
        for r in grid:
            q[r][te] = b.inplace_predict(X[te], iteration_range=(0, r)).reshape(int(te.sum()), -1)
    scores = {r: {"pinball": round(pinball_loss(resid, q[r]), 6), "coverage": round(band_coverage(resid, q[r]), 4)}
              for r in grid}
    best = min(grid, key=lambda r: (scores[r]["pinball"], r))
    return best, {str(r): v for r, v in scores.items()}


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(table[list(FEATURE_NAMES)].to_numpy(np.float32))


def node_visits_per_row(booster, X: np.ndarray, n_rounds: int | None = None) -> float:
    """Measured prediction cost of ``booster`` on rows ``X``: the mean number of split nodes a
    row passes through, summed over the trees used (``n_rounds``: GBT's best iteration).

    Deterministic (a count, not a clock), so the choice that uses it and the card that records it
    are reproducible. It ranks like the clock but understates deep trees (docs/model.md: the
    forest 7.7x the visits of a GBT, 22x its prediction time), so it favours the costlier model
    if anything.
    """
    import json

    import xgboost as xgb

    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    # depth of every node of every tree at once: one flat parent array, relaxed max-depth times
    sizes = np.array([len(t["parents"]) for t in trees], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    parent = np.concatenate([np.asarray(t["parents"], dtype=np.int64) for t in trees])
    root = np.zeros(len(parent), dtype=bool)
    root[offset] = True
    parent = np.where(root, 0, parent + np.repeat(offset, sizes))
    depth = np.zeros(len(parent), dtype=np.int64)
    for _ in range(64):
        new = np.where(root, 0, depth[parent] + 1)
        if np.array_equal(new, depth):
            break
        depth = new
    kw = {"iteration_range": (0, int(n_rounds))} if n_rounds else {}
    leaves = booster.predict(xgb.DMatrix(X, feature_names=list(FEATURE_NAMES), missing=np.nan),
                             pred_leaf=True, **kw).astype(np.int64).reshape(len(X), -1)
    return float(depth[offset[None, :leaves.shape[1]] + leaves].sum(axis=1).mean())


@dataclass
class _Candidate:
    """One (algorithm, target) pair under nested station-grouped CV (fits shared, see core.cv)."""

    alg: str
    target: str
    trainer: Trainer
    outer: np.ndarray = field(default_factory=lambda: np.empty(0))
    inner: dict[int, np.ndarray] = field(default_factory=dict)
    calls: list[tuple[int, ...]] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)  # node visits per row of every fit, call order
    rounds: list[int | None] = field(default_factory=list)  # GBT early-stopping rounds per fit

    @property
    def name(self) -> str:
        return f"{self.alg}/{self.target}"

    def cost_for(self, fold: int | None = None) -> float:
        """Mean cost of the outer fits (``fold`` None), or of the outer fit that held ``fold`` out
        (trained without it: what the nested choice for that fold may know)."""
        sel = [c for c, k in zip(self.costs, self.calls) if len(k) == 1 and (fold is None or k == (fold,))]
        return float(np.mean(sel)) if sel else float("nan")


def _nested_candidate(cand: _Candidate, X, y, st, folds, cost_rows: np.ndarray) -> None:
    tr = cand.trainer

    n_folds = len(np.unique(folds))

    def fit_predict(X_tr, y_tr, s_tr, X_te):
        n0 = len(tr.best_rounds)
        b = tr.fit(X_tr, y_tr, s_tr)
        r = tr.best_rounds[-1] if len(tr.best_rounds) > n0 else None
        cand.rounds.append(r)
        # the cost is measured on the outer fits (the first K calls); pair fits are not timed
        cand.costs.append(node_visits_per_row(b, cost_rows, r) if len(cand.costs) < n_folds else float("nan"))
        return tr.predict(b, X_te)

    cand.outer, cand.inner, cand.calls = cv.nested_fits(X, y, st, folds, fit_predict)


SELECTION_RULE = ("cost-aware one-standard-error rule (ESL 7.10) on station-grouped CV: among the candidates "
                  "(algorithm x target), best = lowest pooled ubRMSE; noise = standard error of best's CV "
                  "estimate over the folds (std of its per-fold ubRMSE, ddof=1, / sqrt(folds)); going from the "
                  "cheapest prediction cost (node visits per row) up, the first candidate whose pooled ubRMSE "
                  "exceeds best's by no more than that noise is kept. Nested: the same rule on the inner folds "
                  "picks the candidate of every outer fold.")


def _reason(choice: str, info: Mapping[str, Any], forced: str | None) -> str:
    cands = info["candidates"]
    txt = ", ".join(f"{c} {cands[c]['pooled_ubrmse']:.4f} (cost {cands[c]['cost']:.0f})" for c in sorted(cands))
    if forced:
        head = f"model.algorithm = {forced} in the config"
    elif choice == info["best"]:
        others = [c for c in cands if c != choice and (cands[c]["cost"] or 0) < (cands[choice]["cost"] or 0)]
        wins = ", ".join(f"{c}: +{cands[c]['margin_to_best']:.4f} > se {cands[c]['noise_se']:.4f}" for c in others)
        head = "lowest pooled ubRMSE under station-grouped CV" + (
            f", ahead of every cheaper candidate by more than the fold noise ({wins})" if others else
            " and the cheapest to predict")
    else:
        b, c = info["best"], cands[choice]
        head = (f"cheapest candidate within the fold noise of the best ({b}): pooled ubRMSE +{c['margin_to_best']:.4f} "
                f"<= se {c['noise_se']:.4f}, prediction cost {c['cost']:.0f} vs {cands[b]['cost']:.0f} node visits/row")
    return f"{head} (station-grouped pooled ubRMSE, m3/m3: {txt})"


def fit_all(table: pd.DataFrame, *, algorithm: str = "auto", k: int = 5, seed: int = 42,
            n_threads: int = DEFAULT_THREADS, rf_trees: int = RF_PARAMS["num_parallel_tree"],
            gbt_max_rounds: int = GBT_MAX_ROUNDS, min_station_days: int = 1,
            algorithms=ALGORITHMS, schemes=SCHEMES, target: str = "auto") -> dict[str, Any]:
    """The science of ``train`` without I/O: nested CV of each candidate, cost-aware choice, the
    other CV designs for the choice, final and quantile fits.

    Candidates are algorithm × target (``target``: ``sm`` learns ``y`` itself, as published;
    ``residual`` learns ``y - sm_25km`` and adds ``sm_25km`` back; ``auto`` tries both). Every
    candidate gets nested station-grouped CV (:func:`sm1km.core.cv.nested_fits`: K outer + K(K-1)/2
    shared pair fits); the choice follows :data:`SELECTION_RULE` on the outer folds, and inside each
    outer fold on its inner folds — those per-fold choices give the **nested** (outer-fold) score,
    the honest estimate of the whole procedure. The other designs are run for the chosen
    candidate only. Optional table columns ``baseline_era5`` / ``baseline_cci`` are scored as
    baselines at the same station-days, next to ``baseline_25km``.
    Returns ``{"booster", "uncertainty_booster", "algorithm", "reason", "cv", "hyperparameters",
    "importance", "uncertainty", "target_kind", "target_reason", "selection"}``; ``cv`` is the
    ``model`` section of metrics.json.
    """
    import xgboost as xgb

    if target not in (*TARGET_KINDS, "auto"):
        raise ModelError("train", f"unknown target {target!r}.", f"use auto or one of {', '.join(TARGET_KINDS)}.")
    if table["station"].nunique() < 2 or len(table) < 20:
        raise ModelError("train", f"too little training data: {table['station'].nunique()} station(s), "
                         f"{len(table)} station-days inside the region and period.",
                         "widen the region or period, add ISMN stations, or lower model.min_station_days.")
    if algorithm != "auto" and algorithm not in algorithms:
        algorithms = (*algorithms, algorithm)
    schemes = tuple(dict.fromkeys(("station_grouped", *schemes)))  # it always runs: it decides
    X = feature_matrix(table)
    y = table["y"].to_numpy(np.float64)
    st = table["station"].to_numpy()
    folds, sg_info = cv.assign_folds("station_grouped", table, k, seed)
    cost_rows = X[np.random.default_rng(seed).permutation(len(X))[:COST_ROWS]]

    # 1. nested station-grouped CV of every algorithm x target (outer fits = the plain CV)
    targets = TARGET_KINDS if target == "auto" else (target,)
    cands: dict[str, _Candidate] = {}
    for tgt in targets:
        for alg in algorithms:
            c = _Candidate(alg, tgt, Trainer(alg, seed, n_threads, rf_trees, gbt_max_rounds, tgt))
            _nested_candidate(c, X, y, st, folds, cost_rows)
            cands[c.name] = c
    eligible = [n for n, c in cands.items() if algorithm == "auto" or c.alg == algorithm]
    sg = {n: dict(cv.summarize(c.outer, y, st, min_station_days), **{k_: v for k_, v in sg_info.items() if v != ""},
                  n_folds=int(len(np.unique(folds)))) for n, c in cands.items()}
    per_fold = {n: cv.fold_scores(cands[n].outer, y, folds) for n in cands}
    chosen_name, sel_info = cv.cost_aware_choice({n: sg[n]["ubrmse_pooled"] for n in eligible},
                                                 {n: per_fold[n] for n in eligible},
                                                 {n: cands[n].cost_for() for n in eligible})
    chosen = cands[chosen_name]
    reason = _reason(chosen_name, sel_info, algorithm if algorithm != "auto" else None)
    target_reason = (f"target = {target} (given)" if target != "auto" else
                     f"chosen with the algorithm as one candidate: {reason}")

    # 2. nested: the same rule inside every outer fold, on its inner folds (never on fold f)
    def choose(f, pooled, pf):
        return cv.cost_aware_choice({n: pooled[n] for n in eligible}, {n: pf[n] for n in eligible},
                                    {n: cands[n].cost_for(f) for n in eligible})

    nested_pred, record = cv.nested_choice(y, folds, {n: c.outer for n, c in cands.items()},
                                           {n: c.inner for n, c in cands.items()}, choose)

    # baselines at the same station-days
    baselines = {name: cv.summarize(table[col].to_numpy(np.float64), y, st, min_station_days)
                 for name, col in (("fused_25km", "baseline_25km"), ("era5", "baseline_era5"),
                                   ("cci", "baseline_cci")) if col in table}
    base_keys = {"baseline_25km": baselines["fused_25km"],
                 **{f"baseline_{n}": v for n, v in baselines.items() if n != "fused_25km"}}

    # 3. the other designs for the chosen candidate
    tr = chosen.trainer
    per_scheme: dict[str, Any] = {"station_grouped": sg[chosen_name]}
    other = tuple(s_ for s_ in schemes if s_ != "station_grouped")
    if other:
        res, _ = cv.cross_validate(table, X, tr.fit_predict, k=k, seed=seed, schemes=other,
                                   min_station_days=min_station_days)
        per_scheme.update(res)
    log.info("CV %s, ubRMSE pooled/median: %s", chosen_name,
             {s_: (round(v["ubrmse_pooled"], 4), round(v["ubrmse_median"], 4)) for s_, v in per_scheme.items()})

    # 4. final fit: GBT rounds = median of the outer station-grouped fits' early-stopping optima
    outer_rounds = [r for r, kk in zip(chosen.rounds, chosen.calls) if len(kk) == 1 and r is not None]
    tr.best_rounds = outer_rounds
    rounds = tr.final_rounds()
    booster = tr.fit(X, y, st, rounds=rounds if chosen.alg == "gbt" else None)

    # uncertainty: quantiles of the honest (station-grouped out-of-fold) residuals
    resid = y - chosen.outer
    ok = np.isfinite(resid)
    u_rounds, u_cv = choose_uncertainty_rounds(X[ok], resid[ok], st[ok], k=k, seed=seed, n_threads=n_threads)
    log.info("uncertainty model: %d rounds (station-grouped CV pinball loss: %s)", u_rounds, u_cv)
    uparams = dict(UNCERTAINTY_PARAMS, quantile_alpha=np.array(QUANTILES), seed=int(seed), nthread=int(n_threads))
    dq = xgb.DMatrix(X[ok], label=resid[ok], feature_names=list(FEATURE_NAMES), nthread=int(n_threads))
    ubooster = xgb.train(uparams, dq, num_boost_round=u_rounds)
    q = ubooster.inplace_predict(X[ok]).reshape(int(ok.sum()), -1)
    coverage = band_coverage(resid[ok], q) if ok.any() else float("nan")
    u_nested = nested_uncertainty(X, y, folds, {n: (c.outer, c.inner) for n, c in cands.items()},
                                  {r["fold"]: r["choice"] for r in record}, seed=seed, n_threads=n_threads)

    nested = dict(cv.summarize(nested_pred, y, st, min_station_days), **base_keys,
                  held_out="station", n_folds=int(len(np.unique(folds))),
                  inner_folds="the other outer folds; one fit per pair of folds serves both outer folds",
                  choices=[{"fold": r["fold"], "choice": r["choice"], "best": r["why"]["best"],
                            "n_test_samples": int((folds == r["fold"]).sum()),
                            "inner_pooled_ubrmse": {n: round(float(v), 6) for n, v in r["inner_pooled_ubrmse"].items()}}
                           for r in record],
                  uncertainty=u_nested)
    selection = {"rule": SELECTION_RULE, "chosen": chosen_name, "best": sel_info["best"], "reason": reason,
                 "cost_unit": f"node visits per row (measured on up to {COST_ROWS} training rows; ranks like "
                              "prediction time, understates deep trees)",
                 "candidates": {n: {"algorithm": c.alg, "target": c.target,
                                    "ubrmse_pooled": sg[n]["ubrmse_pooled"], "ubrmse_median": sg[n]["ubrmse_median"],
                                    "r_pooled": sg[n]["r_pooled"], "r_median": sg[n]["r_median"],
                                    "ubrmse_per_fold": [round(float(v), 6) for v in per_fold[n]],
                                    "prediction_cost": round(c.cost_for(), 1),
                                    "relative_prediction_cost": None,
                                    "eligible": n in eligible,
                                    **{k_: v for k_, v in sel_info["candidates"].get(n, {}).items()
                                       if k_ in ("margin_to_best", "noise_se", "paired_se")}}
                                for n, c in cands.items()},
                 "fits": {n: len(c.calls) for n, c in cands.items()}}
    cheapest = min(v["prediction_cost"] for v in selection["candidates"].values())
    for v in selection["candidates"].values():
        v["relative_prediction_cost"] = round(v["prediction_cost"] / cheapest, 3) if cheapest else None

    cv_section: dict[str, Any] = {s_: dict(per_scheme[s_], **base_keys) for s_ in schemes}
    target_comparison = {tgt: {alg: sg[f"{alg}/{tgt}"] for alg in algorithms} for tgt in targets}
    per_alg = {alg: {"station_grouped": sg[f"{alg}/{chosen.target}"]} for alg in algorithms}
    per_alg[chosen.alg] = {s_: per_scheme[s_] for s_ in schemes}
    cv_section.update(default_algorithm=chosen.alg, reason=reason, baseline_25km=baselines["fused_25km"],
                      baselines=baselines, target_kind=chosen.target, target_reason=target_reason,
                      targets=target_comparison, algorithms=per_alg, nested=nested, selection=selection,
                      folds=k, seed=seed, min_station_days=min_station_days,
                      metric_definitions="pytesmo: bias=mean(x-y), ubrmse ddof=0, x=estimate, y=station; "
                                         "*_median = median over stations, *_pooled = all station-days")
    gain = booster.get_score(importance_type="gain")
    total = sum(gain.values()) or 1.0
    importance = {n: round(float(gain.get(n, 0.0)) / total, 6) for n in FEATURE_NAMES}
    hyper: dict[str, Any] = {a: Trainer(a, seed, n_threads, rf_trees, gbt_max_rounds).params() for a in algorithms}
    if "gbt" in hyper:
        gbt_rounds = rounds if chosen.alg == "gbt" else None
        hyper["gbt"].update(num_boost_round=gbt_rounds, early_stopping_rounds=GBT_EARLY_STOPPING,
                            early_stopping_valid_fraction=GBT_VALID_FRACTION, max_rounds=gbt_max_rounds)
    if "rf" in hyper:
        hyper["rf"]["num_boost_round"] = 1
    hyper["uncertainty"] = dict(UNCERTAINTY_PARAMS, quantile_alpha=list(QUANTILES), num_boost_round=u_rounds,
                                round_grid=list(UNCERTAINTY_ROUND_GRID), seed=int(seed), nthread=int(n_threads))
    return {"booster": booster, "uncertainty_booster": ubooster, "algorithm": chosen.alg, "reason": reason,
            "target_kind": chosen.target, "target_reason": target_reason, "selection": selection,
            "cv": cv_section, "hyperparameters": hyper, "importance": importance,
            "uncertainty": {"quantiles": list(QUANTILES), "target": "station-grouped out-of-fold residual y - y_hat",
                            "value": "half the 16-84 % range (about 1 sigma), m3/m3",
                            "coverage_in_sample": coverage,
                            "rounds": u_rounds,
                            "rounds_chosen_by": "lowest pinball loss on held-out stations (station-grouped CV, "
                                                f"{k} folds) among {list(UNCERTAINTY_ROUND_GRID)}",
                            "cv_by_rounds": u_cv,
                            "coverage_station_grouped": (u_cv.get(str(u_rounds), {}).get("coverage")
                                                         if isinstance(u_cv.get(str(u_rounds)), dict) else None),
                            "coverage_nested": u_nested.get("coverage"),
                            "median_half_range": float(np.median(np.abs(q[:, -1] - q[:, 0]) / 2)) if ok.any() else None}}


def nested_uncertainty(X: np.ndarray, y: np.ndarray, folds: np.ndarray,
                       preds: Mapping[str, tuple[np.ndarray, Mapping[int, np.ndarray]]], choice: Mapping[int, str],
                       *, seed: int, n_threads: int, grid=UNCERTAINTY_ROUND_GRID) -> dict[str, Any]:
    """The uncertainty model's rounds chosen inside every outer fold, scored on it.

    For outer fold f (candidate ``choice[f]``): the residuals outside f come from the inner
    predictions (fits that never saw f); the rounds are chosen on the inner folds by pinball
    loss, a quantile booster fitted on all of them predicts fold f, and fold f's own residuals
    (outer prediction) give the pinball loss and the 16-84 % coverage at stations no part of the
    procedure saw. Per fold: K-1 quantile fits for the choice + 1.
    """
    import xgboost as xgb

    uniq = [int(f) for f in np.unique(folds)]
    if len(uniq) < 3:
        return {"note": "fewer than 3 folds: no nested uncertainty choice"}
    params = dict(UNCERTAINTY_PARAMS, quantile_alpha=np.array(QUANTILES), seed=int(seed), nthread=int(n_threads))
    grid = tuple(sorted(set(int(r) for r in grid)))
    q_out = np.full((len(y), len(QUANTILES)), np.nan)
    r_out = np.full(len(y), np.nan)
    rounds_of: dict[int, int] = {}
    for f in uniq:
        outer, inner = preds[choice[f]]
        te = folds == f
        r_in = y - inner[f]
        ok = ~te & np.isfinite(r_in)
        r_rounds, _ = choose_uncertainty_rounds(X[ok], r_in[ok], np.zeros(int(ok.sum())), k=len(uniq) - 1, seed=seed,
                                                n_threads=n_threads, grid=grid, folds=folds[ok])
        d = xgb.DMatrix(X[ok], label=r_in[ok], feature_names=list(FEATURE_NAMES), nthread=int(n_threads))
        b = xgb.train(params, d, num_boost_round=r_rounds)
        q_out[te] = b.inplace_predict(X[te]).reshape(int(te.sum()), -1)  # r_rounds <= 200: a small fit
        r_out[te] = y[te] - outer[te]
        rounds_of[f] = r_rounds
    ok = np.isfinite(r_out) & np.isfinite(q_out).all(axis=1)
    return {"coverage": round(band_coverage(r_out[ok], q_out[ok]), 4),
            "pinball": round(pinball_loss(r_out[ok], q_out[ok]), 6),
            "rounds_per_fold": {str(f): r for f, r in rounds_of.items()},
            "what": "16-84 % band of the uncertainty model chosen and fitted inside each outer fold, "
                    "against the residuals of that fold's held-out stations"}


def _packages() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "sm1km": __version__}
    for name in ("xgboost", "numpy", "pandas", "xarray", "zarr"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# resumable: skip a model that is up to date with its inputs (the card's ``training_deps``)
# --------------------------------------------------------------------------------------------
#: bump when what ``train`` computes from the same inputs changes (CV design, choice, final fits):
#: a model trained under another version is retrained by the next run
TRAIN_VERSION = 2
DEPS_KEY = "training_deps"  # the card's record of what the model was computed from


def table_digest(table: pd.DataFrame) -> str:
    """sha256 of the collocated training table: column names, dtypes and every row's values."""
    import hashlib

    h = hashlib.sha256(json.dumps([[str(c), str(table[c].dtype)] for c in table.columns]).encode())
    h.update(np.ascontiguousarray(pd.util.hash_pandas_object(table, index=False).to_numpy(np.uint64)).tobytes())
    return h.hexdigest()


def training_deps(cfg: RunConfig, table: pd.DataFrame, excluded: list, fit_options: Mapping[str, Any]) -> dict:
    """What a trained model (and its card) is computed from; equal deps give the same files."""
    b = cfg.coarse_region.bbox
    m = cfg.model
    return {"version": TRAIN_VERSION, "sm1km": __version__, "xgboost": _packages().get("xgboost", ""),
            "table": table_digest(table), "excluded": deps_digest(jsonable(excluded)),
            "model": {"algorithm": m.algorithm, "cv_folds": m.cv_folds, "min_station_days": m.min_station_days},
            "seed": cfg.seeds.train, "options": jsonable(dict(fit_options)),
            "period": [str(cfg.period.start), str(cfg.period.end)],
            "region": [b.west, b.south, b.east, b.north], "grid_factor": cfg.grid.factor}


def up_to_date_model(cfg: RunConfig, deps: Mapping[str, Any]) -> tuple[dict | None, str]:
    """(the stored card, "") when the model at ``cfg.model_path`` was trained from ``deps`` and its
    files have the card's sha256; else (None, why it is (re)trained)."""
    from sm1km.storage.model import card_url

    so = cfg.store.storage_options()
    try:
        card = store.read_json(card_url(cfg.model_path), so)
    except (OSError, ValueError) as exc:
        return None, f"its card cannot be read ({type(exc).__name__})"
    if not isinstance(card, dict):
        return None, "no trained model yet"
    old = card.get(DEPS_KEY)
    if not isinstance(old, dict):
        return None, "the stored model records no training inputs (trained by an older sm1km)"
    changed = [k for k in sorted(set(old) | set(deps)) if old.get(k) != jsonable(deps.get(k))]
    if changed:
        return None, "its inputs changed: " + ", ".join(
            k if k in ("table", "excluded") else f"{k} {old.get(k)} -> {deps.get(k)}" for k in changed)
    head = cfg.model_path.rstrip("/").rpartition("/")[0]
    for name, info in (card.get("files") or {}).items():
        try:
            sha = store.sha256_file(f"{head}/{name}" if head else name, so)
        except OSError:
            return None, f"{name} is missing"
        if sha != (info or {}).get("sha256"):
            return None, f"{name} does not match the sha256 in its card"
    return card, ""


def _skipped_result(cfg: RunConfig, card: Mapping[str, Any]) -> StageResult:
    """The result of a run that found the model up to date (metrics.json's section restored if lost)."""
    from sm1km.storage.metrics_json import metrics_json_url, read_metrics_json
    from sm1km.storage.model import UNCERTAINTY_NAME, card_url

    head = cfg.model_path.rstrip("/").rpartition("/")[0]
    urls = {"model": cfg.model_path, "card": card_url(cfg.model_path)}
    if UNCERTAINTY_NAME in (card.get("files") or {}):
        urls["uncertainty"] = f"{head}/{UNCERTAINTY_NAME}" if head else UNCERTAINTY_NAME
    urls["metrics"] = (metrics_json_url(cfg) if read_metrics_json(cfg).get("model") == card.get("cv")
                       else update_metrics_json(cfg, "model", card.get("cv") or {}))
    n = len(card.get("files") or {})
    training = card.get("training") or {}
    log.info("train: %s is up to date (trained on %s stations / %s samples, sha256 %s…): nothing to do; "
             "sm1km train --overwrite retrains", cfg.model_path, training.get("n_stations"),
             training.get("n_samples"), str(card["files"][card["model_file"]]["sha256"])[:12])
    return StageResult(urls, {"units_total": n, "units_written": 0, "units_skipped": n, "up_to_date": True,
                              "algorithm": card.get("algorithm"), "target_kind": card.get("target_kind"),
                              "n_stations": training.get("n_stations"), "n_samples": training.get("n_samples")})


def train(cfg: RunConfig, client=None, *, overwrite: bool = False, **options) -> StageResult:
    """Train, cross-validate and save the downscaling model; returns URLs of what it wrote.

    Options: ``n_threads`` (XGBoost training threads, default 4), ``rf_trees``, ``gbt_max_rounds``,
    ``algorithms`` (which to cross-validate; default both), ``target`` (``auto``, ``sm``, ``residual``).
    ``overwrite``: retrain even when the stored model is up to date with its inputs.

    Returns ``{"model", "uncertainty", "card", "metrics"}`` URLs. Units in ``.stats`` are the models
    fitted and saved: the chosen model and its quantile (uncertainty) model, 2 (the cross-validation
    fits are not outputs and not counted). A model up to date with its inputs (:func:`up_to_date_model`)
    is kept: nothing is written, ``units_skipped == units_total`` and ``up_to_date`` is True; otherwise
    both are refitted (byte-identical for the same inputs). Also in ``.stats``: ``algorithm``,
    ``target_kind``, ``n_stations``, ``n_samples``.
    """
    from sm1km.stages.collocate import add_raw_baselines, collocate_stores

    so = cfg.store.storage_options()
    with stage_client(cfg, client) as c:
        table, excluded = collocate_stores(cfg, client=c)
    table = add_raw_baselines(cfg, table)
    n_threads = int(options.get("n_threads") or DEFAULT_THREADS)
    fit_options: dict[str, Any] = {
                   "n_threads": n_threads, "rf_trees": int(options.get("rf_trees") or RF_PARAMS["num_parallel_tree"]),
                   "gbt_max_rounds": int(options.get("gbt_max_rounds") or GBT_MAX_ROUNDS),
                   "algorithms": tuple(options.get("algorithms") or ALGORITHMS),
                   "target": str(options.get("target") or "auto")}
    deps = training_deps(cfg, table, excluded, fit_options)
    stored, why = (None, "--overwrite") if overwrite else up_to_date_model(cfg, deps)
    if stored is not None:
        return _skipped_result(cfg, stored)
    log.info("train: training %s (%s)", cfg.model_path, why)
    result = fit_all(table, algorithm=cfg.model.algorithm, k=cfg.model.cv_folds, seed=cfg.seeds.train,
                     min_station_days=cfg.model.min_station_days, **fit_options)
    b = cfg.coarse_region.bbox
    nets = table.groupby("network")["station"].nunique()
    card = {
        "title": "sm1km 1 km soil moisture downscaling model",
        "sm1km_version": __version__,
        "created": store.now_iso(),
        "algorithm": result["algorithm"],
        "algorithm_reason": result["reason"],
        "target_kind": result["target_kind"],
        "target_reason": result["target_reason"],
        "target": "ISMN in-situ surface soil moisture (flag G, shallowest layer <= 0.05 m), daily mean, m3/m3",
        "training": {
            "period": {"start": str(cfg.period.start), "end": str(cfg.period.end)},
            "samples_time_range": [str(pd.Timestamp(table["time"].min()).date()),
                                   str(pd.Timestamp(table["time"].max()).date())],
            "region": {"west": b.west, "south": b.south, "east": b.east, "north": b.north},
            "grid_factor": cfg.grid.factor,
            "n_stations": int(table["station"].nunique()),
            "n_samples": int(len(table)),
            "networks": {str(k): int(v) for k, v in nets.items()},
            "excluded_stations": excluded,
        },
        "selection": result["selection"],
        "cv": result["cv"],
        "hyperparameters": result["hyperparameters"],
        "seed": cfg.seeds.train,
        "n_threads": n_threads,
        "feature_importance_gain": result["importance"],
        "uncertainty": result["uncertainty"],
        "packages": _packages(),
        "inputs": {"stations": cfg.store.url("inputs", "stations.zarr"),
                   "predictors": cfg.store.url("inputs", "predictors.zarr"),
                   "fused": cfg.store.url("fused.zarr")},
        DEPS_KEY: deps,
    }
    urls = save_model(cfg.model_path, result["booster"], jsonable(card),
                      uncertainty_booster=result["uncertainty_booster"], schema=FEATURE_SCHEMA, storage_options=so)
    urls["metrics"] = update_metrics_json(cfg, "model", jsonable(result["cv"]))
    sg = result["cv"]["station_grouped"]
    base = result["cv"]["baseline_25km"]
    log.info("model %s (%s) trained on %d stations / %d samples; station-grouped CV: ubRMSE pooled %.4f "
             "(25 km baseline %.4f), median %.4f (%.4f); R median %.3f (%.3f)", result["algorithm"], result["reason"],
             card["training"]["n_stations"], card["training"]["n_samples"], sg["ubrmse_pooled"],
             base["ubrmse_pooled"], sg["ubrmse_median"], base["ubrmse_median"], sg["r_median"], base["r_median"])
    n_models = sum(b is not None for b in (result["booster"], result["uncertainty_booster"]))
    return StageResult(urls, {"units_total": n_models, "units_written": n_models, "units_skipped": 0, "up_to_date": False,
                              "algorithm": result["algorithm"], "target_kind": result["target_kind"],
                              "n_stations": card["training"]["n_stations"],
                              "n_samples": card["training"]["n_samples"]})
