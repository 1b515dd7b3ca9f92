"""``sm1km train``: the XGBoost downscaling model, trained on ISMN stations, with honest CV.

1. :func:`sm1km.stages.collocate.collocate_stores` pairs each station-day with its 1 km pixel's features.
2. Both algorithms — XGBoost as a **random forest** (``rf``: one round of ``num_parallel_tree``
   trees, row subsample 0.63, ``colsample_bynode`` 0.33, learning rate 1, as in the published
   product) and **gradient-boosted trees** (``gbt``: hist, depth 6, eta 0.05, early stopping on
   held-out *stations* inside each training fold) — are cross-validated under the four designs
   of :mod:`sm1km.core.cv`. ``model.algorithm: auto`` keeps the one with the lower pooled ubRMSE under
   **station-grouped** CV (see :func:`_choose` for why pooled).
3. The chosen algorithm is refitted on all samples (``model.ubj``); a quantile model
   (``reg:quantileerror``, α = 0.16/0.84) of its out-of-fold (station-grouped) residuals gives
   the per-pixel uncertainty (``uncertainty.ubj``), with its number of rounds chosen by the
   pinball loss on held-out stations (:func:`choose_uncertainty_rounds`); the card
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
from sm1km.core.cv import SCHEMES, cross_validate, group_kfold, summarize
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
                              n_threads: int, grid=UNCERTAINTY_ROUND_GRID) -> tuple[int, dict[str, Any]]:
    """Rounds of the quantile model by station-grouped CV: per fold one booster of ``max(grid)``
    rounds, scored on the held-out stations at every prefix in ``grid``; the lowest mean pinball
    loss wins (ties: fewer rounds). Returns (rounds, {rounds: {pinball, coverage}}).

    Why: the quantile model learns station-specific error patterns that do not carry over to new
    stations; with too many rounds its band is far too narrow where there is no station.
    """
    import xgboost as xgb

    folds = group_kfold(stations, k, seed)
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


def _score(m: Mapping[str, Any]) -> tuple[float, float]:
    """Sort key of a CV result: pooled ubRMSE, then per-station median ubRMSE (NaN last)."""
    pooled, median = (float(v) if v is not None and np.isfinite(v) else np.inf
                      for v in (m.get("ubrmse_pooled"), m.get("ubrmse_median")))
    return pooled, median


def _choose(results: Mapping[str, Mapping[str, Any]], requested: str) -> tuple[str, str]:
    """(algorithm, why): the requested one, or the lower **pooled** ubRMSE under station-grouped CV.

    Pooled over all held-out station-days, ubRMSE removes only the overall bias, so it rewards
    getting the differences *between* stations right — the sub-cell pattern downscaling exists
    for. The per-station median ubRMSE removes each station's own mean and is blind to that
    pattern (a model returning the 25 km value scores as well as the baseline); it breaks ties.
    """
    def score(a):
        return _score(results[a]["station_grouped"])

    txt = ", ".join(f"{a} {results[a]['station_grouped'].get('ubrmse_pooled', float('nan')):.4f}" for a in results)
    if requested != "auto":
        return requested, f"model.algorithm = {requested} in the config (station-grouped pooled ubRMSE: {txt})"
    best = min(results, key=score)
    return best, f"lowest pooled ubRMSE under station-grouped CV ({txt} m3/m3)"


def fit_all(table: pd.DataFrame, *, algorithm: str = "auto", k: int = 5, seed: int = 42,
            n_threads: int = DEFAULT_THREADS, rf_trees: int = RF_PARAMS["num_parallel_tree"],
            gbt_max_rounds: int = GBT_MAX_ROUNDS, min_station_days: int = 1,
            algorithms=ALGORITHMS, schemes=SCHEMES, target: str = "auto") -> dict[str, Any]:
    """The science of ``train`` without I/O: CV of each algorithm, choice, final and quantile fits.

    ``target``: ``sm`` learns ``y`` itself (as published); ``residual`` learns ``y - sm_25km`` and
    adds ``sm_25km`` back when predicting (the trees then model only the departure from the 25 km
    value instead of approximating it by steps); ``auto`` (default) cross-validates both
    (station-grouped) and keeps the better.
    Returns ``{"booster", "uncertainty_booster", "algorithm", "reason", "cv", "hyperparameters",
    "importance", "uncertainty", "target_kind"}``; ``cv`` is the ``model`` section of metrics.json.
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

    def run(tr: Trainer, scheme: str):
        tr.best_rounds = []
        r, p = cross_validate(table, X, tr.fit_predict, k=k, seed=seed, schemes=(scheme,),
                              min_station_days=min_station_days)
        return r[scheme], p[scheme], list(tr.best_rounds)

    # 1. station-grouped CV of every algorithm x target; it picks the target (and the algorithm)
    targets = TARGET_KINDS if target == "auto" else (target,)
    sg: dict[tuple[str, str], tuple] = {}
    for tgt in targets:
        for alg in algorithms:
            sg[(alg, tgt)] = run(Trainer(alg, seed, n_threads, rf_trees, gbt_max_rounds, tgt), "station_grouped")
    eligible = [key for key in sg if algorithm == "auto" or key[0] == algorithm]
    chosen_target = min(eligible, key=lambda key: _score(sg[key][0]))[1]
    target_comparison = {tgt: {alg: sg[(alg, tgt)][0] for alg in algorithms} for tgt in targets}
    target_reason = (f"target = {target} (given)" if target != "auto" else
                     "lower pooled ubRMSE under station-grouped CV: " + ", ".join(
                         f"{alg}/{tgt} {sg[(alg, tgt)][0]['ubrmse_pooled']:.4f}" for (alg, tgt) in eligible))

    # 2. the other designs for every algorithm, with the chosen target
    per_alg: dict[str, dict[str, Any]] = {}
    oof: dict[str, dict[str, np.ndarray]] = {}
    trainers: dict[str, Trainer] = {}
    for alg in algorithms:
        tr = Trainer(alg, seed, n_threads, rf_trees, gbt_max_rounds, chosen_target)
        res, preds = {}, {}
        for scheme in schemes:
            if scheme == "station_grouped":
                res[scheme], preds[scheme], sg_rounds = sg[(alg, chosen_target)]
            else:
                res[scheme], preds[scheme], _ = run(tr, scheme)
        tr.best_rounds = sg_rounds
        per_alg[alg], oof[alg], trainers[alg] = res, preds, tr
        log.info("CV %s (target %s), ubRMSE pooled/median: %s", alg, chosen_target,
                 {s: (round(res[s]["ubrmse_pooled"], 4), round(res[s]["ubrmse_median"], 4)) for s in res})
    chosen, reason = _choose(per_alg, algorithm)
    baseline = summarize(table["baseline_25km"].to_numpy(), y, st, min_station_days)

    tr = trainers[chosen]
    rounds = tr.final_rounds()
    booster = tr.fit(X, y, st, rounds=rounds if chosen == "gbt" else None)

    # uncertainty: quantiles of the honest (station-grouped out-of-fold) residuals
    resid = y - oof[chosen].get("station_grouped", np.full(len(y), np.nan))
    ok = np.isfinite(resid)
    u_rounds, u_cv = choose_uncertainty_rounds(X[ok], resid[ok], st[ok], k=k, seed=seed, n_threads=n_threads)
    log.info("uncertainty model: %d rounds (station-grouped CV pinball loss: %s)", u_rounds, u_cv)
    uparams = dict(UNCERTAINTY_PARAMS, quantile_alpha=np.array(QUANTILES), seed=int(seed), nthread=int(n_threads))
    dq = xgb.DMatrix(X[ok], label=resid[ok], feature_names=list(FEATURE_NAMES), nthread=int(n_threads))
    ubooster = xgb.train(uparams, dq, num_boost_round=u_rounds)
    q = ubooster.inplace_predict(X[ok]).reshape(int(ok.sum()), -1)
    coverage = band_coverage(resid[ok], q) if ok.any() else float("nan")

    cv_section: dict[str, Any] = {s: dict(per_alg[chosen][s], baseline_25km=baseline) for s in schemes}
    cv_section.update(default_algorithm=chosen, reason=reason, baseline_25km=baseline, target_kind=chosen_target,
                      target_reason=target_reason, targets=target_comparison,
                      algorithms={a: per_alg[a] for a in per_alg}, folds=k, seed=seed,
                      min_station_days=min_station_days,
                      metric_definitions="pytesmo: bias=mean(x-y), ubrmse ddof=0, x=estimate, y=station; "
                                         "*_median = median over stations, *_pooled = all station-days")
    gain = booster.get_score(importance_type="gain")
    total = sum(gain.values()) or 1.0
    importance = {n: round(float(gain.get(n, 0.0)) / total, 6) for n in FEATURE_NAMES}
    hyper = {a: trainers[a].params() for a in per_alg}
    if "gbt" in hyper:
        hyper["gbt"].update(num_boost_round=trainers["gbt"].final_rounds(), early_stopping_rounds=GBT_EARLY_STOPPING,
                            early_stopping_valid_fraction=GBT_VALID_FRACTION, max_rounds=gbt_max_rounds)
    if "rf" in hyper:
        hyper["rf"]["num_boost_round"] = 1
    hyper["uncertainty"] = dict(UNCERTAINTY_PARAMS, quantile_alpha=list(QUANTILES), num_boost_round=u_rounds,
                                round_grid=list(UNCERTAINTY_ROUND_GRID), seed=int(seed), nthread=int(n_threads))
    return {"booster": booster, "uncertainty_booster": ubooster, "algorithm": chosen, "reason": reason,
            "target_kind": chosen_target, "target_reason": target_reason,
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
                            "median_half_range": float(np.median(np.abs(q[:, -1] - q[:, 0]) / 2)) if ok.any() else None}}


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
TRAIN_VERSION = 1
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
    from sm1km.stages.collocate import collocate_stores

    so = cfg.store.storage_options()
    with stage_client(cfg, client) as c:
        table, excluded = collocate_stores(cfg, client=c)
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
