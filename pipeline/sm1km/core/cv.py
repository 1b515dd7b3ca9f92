"""Cross-validation of the downscaling model: fold designs and station metrics (pure numpy/pandas).

Four designs, all reported (see ``docs/model.md``):

* ``random_kfold``   — samples (station-days) shuffled into K folds. What papers usually print;
  optimistic, because the same station is in training and test folds.
* ``station_grouped`` — whole stations held out (the honest default; it picks the algorithm).
* ``spatial_block``  — whole ``block_deg`` × ``block_deg`` blocks held out (1° first; smaller blocks
  when the region has fewer than K blocks; leave-network-out when even 0.25° blocks are too few).
* ``year_out``       — whole years held out; with fewer than 2 years, whole calendar months, and
  with fewer than 2 months, K contiguous time blocks (the output says which: ``held_out``).

Every design predicts every sample exactly once (out-of-fold), so the metrics of all designs —
and of the fused 25 km baseline — are computed over the same stations and samples.
Metrics follow pytesmo: bias = mean(x − y), RMSE, ubRMSE (ddof = 0), Pearson R; x = estimate,
y = station.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sm1km.core.metrics import metric_dict

log = logging.getLogger(__name__)

SCHEMES = ("random_kfold", "station_grouped", "spatial_block", "year_out")
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


def assign_folds(scheme: str, table: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Fold id per row of ``table`` (needs columns station, network, lat, lon, time) for ``scheme``."""
    if scheme == "random_kfold":
        return random_kfold(len(table), k, seed), {"held_out": "sample", "note": ""}
    if scheme == "station_grouped":
        st = table["station"].to_numpy()
        return group_kfold(st, k, seed), {"held_out": "station", "n_groups": int(len(np.unique(st))), "note": ""}
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
