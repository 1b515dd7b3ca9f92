"""Cross-validation of the downscaling model: fold designs, nested selection and station metrics
(pure numpy/pandas).

Six designs, all reported (see ``docs/model.md``):

* ``random_kfold``   — samples (station-days) shuffled into K folds. What papers usually print;
  optimistic, because the same station is in training and test folds.
* ``station_grouped`` — whole stations held out (the honest default; nested selection runs on it).
* ``network_out``    — whole networks held out (leave-network-out: one network per fold when there
  are at most K networks; a network's shared sensor type and calibration never leak across).
* ``cell_grouped``   — whole 0.25° (25 km) cells held out: stations sharing a fused 25 km value are
  never on both sides of a fold.
* ``spatial_block``  — whole ``block_deg`` × ``block_deg`` blocks held out (1° first; smaller blocks
  when the region has fewer than K blocks; leave-network-out when even 0.25° blocks are too few).
* ``year_out``       — whole years held out; with fewer than 2 years, whole calendar months, and
  with fewer than 2 months, K contiguous time blocks (the output says which: ``held_out``).

Every design predicts every sample exactly once (out-of-fold), so the metrics of all designs —
and of the fused 25 km, ERA5 and CCI baselines — are computed over the same stations and samples.

**Nested selection without extra folds** (:func:`nested_fits`, :func:`nested_choice`): the inner
folds of outer fold *f* are the other outer folds *g ≠ f*, and the inner model that holds out
*g* inside outer fold *f* is trained on the folds outside {f, g} — the *same* training set as the
inner model that holds out *f* inside outer fold *g*. One fit per unordered pair serves both, so
nested CV of a candidate costs K outer fits + K(K−1)/2 pair fits (15 for K = 5) instead of
K + K(K−1) = 25 (or K·(K_inner + 1) with fresh inner folds), and the outer fits are the plain
station-grouped CV that is reported anyway. No model that scores a candidate for outer fold *f*
has seen fold *f*, and fold *f* is never scored for its own choice.

**Cost-aware choice** (:func:`cost_aware_choice`): the cheapest candidate (prediction cost) whose
pooled ubRMSE is within the fold noise of the best one — the one-standard-error rule (ESL 7.10)
with cost as the measure of simplicity; noise = standard error of the best's CV estimate over the
folds (std of its per-fold ubRMSE / sqrt(K)).
Metrics follow pytesmo: bias = mean(x − y), RMSE, ubRMSE (ddof = 0), Pearson R; x = estimate,
y = station.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sm1km.core.grid import coarse_col_of_lon, coarse_row_of_lat
from sm1km.core.metrics import metric_dict, ubrmse

log = logging.getLogger(__name__)

SCHEMES = ("random_kfold", "station_grouped", "network_out", "cell_grouped", "spatial_block", "year_out")
BLOCK_SIZES_DEG = (1.0, 0.5, 0.25)


def summarize(est: npt.ArrayLike, obs: npt.ArrayLike, station: npt.ArrayLike,
              min_station_days: int = 1) -> dict[str, Any]:
    """Pooled and per-station-median metrics of ``est`` vs ``obs`` (one entry per sample).

    Per-station metrics use stations with at least ``min_station_days`` valid pairs (and R needs
    variance at the station); the median ignores NaN.
    """
    est = np.asarray(est, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    station = np.asarray(station)
    ok = np.isfinite(est) & np.isfinite(obs)
    pooled = metric_dict(est[ok], obs[ok])
    per = []
    st = pd.Series(station[ok])
    for _, idx in st.groupby(st, sort=True).indices.items():
        if len(idx) >= max(min_station_days, 2):
            per.append(metric_dict(est[ok][idx], obs[ok][idx]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        med = {k: float(np.nanmedian([p[k] for p in per])) if per else np.nan for k in ("r", "ubrmse", "bias", "rmse")}
    return {
        "n_stations": int(len(np.unique(station[ok]))),
        "n_stations_median": len(per),
        "n_samples": int(ok.sum()),
        "r_pooled": pooled["r"],
        "ubrmse_pooled": pooled["ubrmse"],
        "bias_pooled": pooled["bias"],
        "rmse_pooled": pooled["rmse"],
        "r_median": med["r"],
        "ubrmse_median": med["ubrmse"],
        "bias_median": med["bias"],
        "rmse_median": med["rmse"],
    }


# --------------------------------------------------------------------------------------------
# fold designs
# --------------------------------------------------------------------------------------------
def random_kfold(n: int, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) per sample: a seeded permutation cut into k nearly equal parts."""
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) % k
    return folds


def group_kfold(groups: npt.ArrayLike, k: int, seed: int) -> np.ndarray:
    """Fold id per sample such that every group lies in one fold; folds balanced by sample count.

    Groups are shuffled (seeded), then assigned largest-first to the fold with the fewest
    samples so far. With fewer groups than ``k``, there are as many folds as groups.
    """
    groups = np.asarray(groups)
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    k = min(k, len(uniq))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += counts[g]
    return fold_of_group[inverse.reshape(-1)]


def spatial_blocks(lat: npt.ArrayLike, lon: npt.ArrayLike, k: int,
                   networks: npt.ArrayLike | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Group label per sample for spatial-block CV, and what was used (block size or networks)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    best: tuple[np.ndarray, float, int] | None = None
    for d in BLOCK_SIZES_DEG:
        labels = np.floor(lat / d).astype(np.int64) * 100000 + np.floor(lon / d).astype(np.int64)
        n = len(np.unique(labels))
        if best is None or n > best[2]:
            best = (labels, d, n)
        if n >= k:
            break
    assert best is not None  # BLOCK_SIZES_DEG is not empty
    labels, d, n = best
    if n >= 2:
        note = "" if d == BLOCK_SIZES_DEG[0] else f"fewer than {k} blocks of {BLOCK_SIZES_DEG[0]} deg: used {d} deg"
        return labels, {"held_out": "spatial_block", "block_deg": d, "n_groups": int(n), "note": note}
    if networks is not None and len(np.unique(np.asarray(networks))) >= 2:
        nets = np.asarray(networks)
        return nets, {"held_out": "network", "n_groups": int(len(np.unique(nets))),
                      "note": "all stations in one 0.25 deg block: leave-network-out instead"}
    return labels, {"held_out": "spatial_block", "block_deg": d, "n_groups": int(n),
                    "note": "all stations in one block: spatial CV not possible"}


def time_blocks(times: npt.ArrayLike, k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Group label per sample for year-held-out CV, falling back to months / contiguous blocks."""
    t = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    years = np.asarray(t.year)
    if len(np.unique(years)) >= 2:
        return years, {"held_out": "year", "n_groups": int(len(np.unique(years))), "note": ""}
    months = np.asarray(t.year * 100 + t.month)
    if len(np.unique(months)) >= 2:
        return months, {"held_out": "month", "n_groups": int(len(np.unique(months))),
                        "note": "fewer than 2 years of data: whole calendar months held out instead of years"}
    days = np.asarray(t.normalize().asi8)
    uniq = np.unique(days)
    edges = np.array_split(uniq, min(k, len(uniq)))
    labels = np.searchsorted([e[0] for e in edges], days, side="right") - 1
    return labels, {"held_out": "time_block", "n_groups": int(len(edges)),
                    "note": "fewer than 2 months of data: contiguous time blocks held out instead of years"}


def cell_groups(lat: npt.ArrayLike, lon: npt.ArrayLike) -> np.ndarray:
    """Label of the 0.25° (25 km, CCI) cell of each sample: row × 1440 + column of the global grid."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    return coarse_row_of_lat(lat).astype(np.int64) * 1440 + coarse_col_of_lon(lon).astype(np.int64)


def groups_of(scheme: str, table: pd.DataFrame) -> np.ndarray | None:
    """The group label that ``scheme`` keeps on one side of every fold (None for random K-fold)."""
    if scheme == "station_grouped":
        return table["station"].to_numpy()
    if scheme == "network_out":
        return table["network"].to_numpy()
    if scheme == "cell_grouped":
        return cell_groups(table["lat"].to_numpy(), table["lon"].to_numpy())
    return None


def groups_disjoint(groups: npt.ArrayLike, folds: npt.ArrayLike) -> bool:
    """True if no group has samples in two folds (no station / network / cell on both sides)."""
    g = pd.Series(np.asarray(groups))
    return bool((pd.Series(np.asarray(folds)).groupby(g.to_numpy()).nunique() <= 1).all())


def assign_folds(scheme: str, table: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Fold id per row of ``table`` (needs columns station, network, lat, lon, time) for ``scheme``."""
    if scheme == "random_kfold":
        return random_kfold(len(table), k, seed), {"held_out": "sample", "note": ""}
    if scheme == "station_grouped":
        st = table["station"].to_numpy()
        return group_kfold(st, k, seed), {"held_out": "station", "n_groups": int(len(np.unique(st))), "note": ""}
    if scheme == "network_out":
        nets = table["network"].to_numpy()
        n = len(np.unique(nets))
        note = ("" if 2 <= n <= k else "only one network: leave-network-out not possible" if n < 2
                else f"{n} networks in {k} folds: several networks held out together")
        return group_kfold(nets, k, seed), {"held_out": "network", "n_groups": int(n), "note": note}
    if scheme == "cell_grouped":
        cells = cell_groups(table["lat"].to_numpy(), table["lon"].to_numpy())
        n = len(np.unique(cells))
        return group_kfold(cells, k, seed), {"held_out": "25km_cell", "n_groups": int(n),
                                             "note": "" if n >= 2 else "all stations in one 25 km cell"}
    if scheme == "spatial_block":
        labels, info = spatial_blocks(table["lat"].to_numpy(), table["lon"].to_numpy(), k,
                                      table["network"].to_numpy() if "network" in table else None)
        return group_kfold(labels, k, seed), info
    if scheme == "year_out":
        labels, info = time_blocks(table["time"].to_numpy(), k)
        return group_kfold(labels, k, seed), info
    raise ValueError(f"unknown CV scheme {scheme!r}; choose from {SCHEMES}")


FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def out_of_fold(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: np.ndarray,
                fit_predict: FitPredict) -> np.ndarray:
    """Out-of-fold predictions: for each fold f, fit on the other folds and predict fold f.

    ``fit_predict(X_train, y_train, stations_train, X_test) -> predictions``.
    A single-fold design (nothing to hold out against) returns all NaN.
    """
    pred = np.full(len(y), np.nan, dtype=np.float64)
    uniq = np.unique(folds)
    if len(uniq) < 2:
        return pred
    for f in uniq:
        test = folds == f
        pred[test] = fit_predict(X[~test], y[~test], groups[~test], X[test])
    return pred


def cross_validate(table: pd.DataFrame, X: np.ndarray, fit_predict: FitPredict, *, k: int, seed: int,
                   schemes: Iterable[str] = SCHEMES,
                   min_station_days: int = 1) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run every scheme; returns ({scheme: metrics + design info}, {scheme: out-of-fold predictions}).

    ``table`` needs columns y, station, network, lat, lon, time (one row per row of ``X``).
    """
    y = table["y"].to_numpy(np.float64)
    st = table["station"].to_numpy()
    results: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    for scheme in schemes:
        folds, info = assign_folds(scheme, table, k, seed)
        if info.get("note"):
            log.info("CV %s: %s", scheme, info["note"])
        p = out_of_fold(X, y, st, folds, fit_predict)
        res = summarize(p, y, st, min_station_days)
        res.update({k_: v for k_, v in info.items() if v != ""})
        res["n_folds"] = int(len(np.unique(folds)))
        results[scheme] = res
        preds[scheme] = p
    return results, preds


# --------------------------------------------------------------------------------------------
# nested selection (inner folds = the other outer folds, one fit per pair of folds)
# --------------------------------------------------------------------------------------------
def fold_scores(pred: npt.ArrayLike, y: npt.ArrayLike, folds: npt.ArrayLike,
                fold_ids: Iterable[int] | None = None) -> np.ndarray:
    """Pooled ubRMSE of ``pred`` vs ``y`` inside each fold (NaN for a fold without valid pairs)."""
    pred, y, folds = np.asarray(pred, np.float64), np.asarray(y, np.float64), np.asarray(folds)
    ids = np.unique(folds) if fold_ids is None else np.asarray(list(fold_ids))
    return np.array([ubrmse(pred[folds == f], y[folds == f]) for f in ids], dtype=np.float64)


def nested_fits(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: np.ndarray,
                fit_predict: FitPredict) -> tuple[np.ndarray, dict[int, np.ndarray], list[tuple[int, ...]]]:
    """Outer and inner out-of-fold predictions of one candidate, sharing fits.

    Returns ``(outer, inner, calls)``: ``outer`` predicts fold f from a fit on all folds but f (plain
    out-of-fold CV); ``inner[f]`` predicts every sample outside f from fits that saw neither f
    nor the sample's own fold g (one fit on the folds outside {f, g} predicts g for outer fold f
    *and* f for outer fold g), NaN on fold f itself; ``calls`` names the folds each
    ``fit_predict`` call held out, in call order (``(f,)`` outer, ``(f, g)`` pair). K + K(K-1)/2 fits.
    """
    uniq = [int(f) for f in np.unique(folds)]
    inner = {f: np.full(len(y), np.nan, dtype=np.float64) for f in uniq}
    calls: list[tuple[int, ...]] = []
    outer = np.full(len(y), np.nan, dtype=np.float64)
    if len(uniq) < 2:
        return outer, inner, calls
    for f in uniq:
        test = folds == f
        outer[test] = fit_predict(X[~test], y[~test], groups[~test], X[test])
        calls.append((f,))
    for a, f in enumerate(uniq):
        for g in uniq[a + 1:]:
            test = (folds == f) | (folds == g)
            if (~test).sum() == 0:
                continue
            p = fit_predict(X[~test], y[~test], groups[~test], X[test])
            calls.append((f, g))
            tf, tg = folds[test] == f, folds[test] == g
            inner[g][folds == f] = p[tf]  # for outer fold g, f is an inner test fold
            inner[f][folds == g] = p[tg]  # and vice versa
    return outer, inner, calls


#: ``choose(outer_fold, pooled, per_fold) -> (candidate, why)``
Chooser = Callable[[int, Mapping[str, float], Mapping[str, np.ndarray]], tuple[str, dict[str, Any]]]


def cost_aware_choice(pooled: Mapping[str, float], per_fold: Mapping[str, np.ndarray],
                      cost: Mapping[str, float], n_se: float = 1.0) -> tuple[str, dict[str, Any]]:
    """The one-standard-error rule with prediction cost as the measure of simplicity.

    ``best`` = the lowest pooled ubRMSE (ties: cheaper, then name); the noise ``se`` = the
    standard error of ``best``'s CV estimate over the folds, std(per-fold ubRMSE, ddof=1)/sqrt(n)
    (Hastie, Tibshirani & Friedman, ESL 7.10; 0 with fewer than 2 folds). Going from the cheapest
    up, the first candidate with ``pooled_c - pooled_best <= n_se * se`` is chosen (``best``
    itself always qualifies). Also recorded per candidate, as a diagnostic: ``paired_se``, the
    standard error of its per-fold differences to ``best``. Returns (choice, {best, se, chosen,
    candidates: {c: pooled_ubrmse, margin_to_best, noise_se, paired_se, cost}}).
    """
    def val(v: float | None) -> float:
        return float(v) if v is not None and np.isfinite(v) else np.inf

    def se_of(d: np.ndarray) -> float:
        d = d[np.isfinite(d)]
        return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) >= 2 else 0.0

    names = sorted(pooled)
    best = min(names, key=lambda c: (val(pooled[c]), cost.get(c, np.inf), c))
    se = se_of(np.asarray(per_fold[best], np.float64))
    info: dict[str, Any] = {"best": best, "se": se, "candidates": {}}
    order = sorted(names, key=lambda c: (cost.get(c, np.inf), val(pooled[c]), c))
    for c in order:
        paired = se_of(np.asarray(per_fold[c], np.float64) - np.asarray(per_fold[best], np.float64))
        margin = val(pooled[c]) - val(pooled[best]) if c != best else 0.0
        info["candidates"][c] = {"pooled_ubrmse": pooled[c], "margin_to_best": margin, "noise_se": se,
                                 "paired_se": paired, "cost": cost.get(c)}
    chosen = next(c for c in order if c == best or (np.isfinite(info["candidates"][c]["margin_to_best"]) and
                                                    info["candidates"][c]["margin_to_best"] <= n_se * se))
    info["chosen"] = chosen
    return chosen, info


def nested_choice(y: np.ndarray, folds: np.ndarray, outer: Mapping[str, np.ndarray],
                  inner: Mapping[str, Mapping[int, np.ndarray]], choose: Chooser
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Nested CV: for each outer fold f, ``choose`` a candidate on its inner predictions (the
    other folds, scored per inner fold), then take that candidate's outer prediction of f.

    ``choose(f, pooled, per_fold)`` gets each candidate's pooled ubRMSE over the samples outside f
    and its ubRMSE per inner fold; it never sees fold f. Returns (nested out-of-fold predictions,
    one record per outer fold: fold, choice, why).
    """
    pred = np.full(len(y), np.nan, dtype=np.float64)
    record: list[dict[str, Any]] = []
    uniq = [int(f) for f in np.unique(folds)]
    if len(uniq) < 2:
        return pred, record
    for f in uniq:
        rest = folds != f
        inner_ids = [g for g in uniq if g != f]
        pooled = {c: ubrmse(inner[c][f][rest], y[rest]) for c in inner}
        per_fold = {c: fold_scores(inner[c][f], y, folds, inner_ids) for c in inner}
        c, why = choose(f, pooled, per_fold)
        pred[folds == f] = outer[c][folds == f]
        record.append({"fold": f, "choice": c, "inner_pooled_ubrmse": pooled, "why": why})
    return pred, record
