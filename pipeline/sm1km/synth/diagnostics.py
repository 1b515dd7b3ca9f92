"""How much of the sub-25 km truth pattern the 1 km predictors explain (a check of the world's design).

The target is the anomaly of the 1 km truth from its 0.25° cell mean. A linear model on predictor
anomalies (static: elevation, slope, TWI, clay, sand, land cover; dynamic: LST day/night, NDVI),
each also multiplied by the cell-mean soil moisture, is fitted on even days and scored on odd days
(clear-sky pixel-days). A downscaling model that beats the 25 km baseline needs R² well above 0.
"""

from __future__ import annotations

import numpy as np

from . import fields as F
from .observe import predictor_statics
from .world import STREAM_PREDICTORS, World, rng_for


def _anomaly(a: np.ndarray, factor: int) -> np.ndarray:
    c = F.block_mean(a, factor)
    return a - np.repeat(np.repeat(c, factor, -2), factor, -1)


def subgrid_skill(world: World, max_samples: int = 200_000, seed: int = 0) -> dict:
    """R² and RMSEs of a linear sub-grid model: {'r2', 'r2_static', 'rmse_coarse', 'rmse_downscaled', 'n_test'}."""
    st = world.statics
    f = st.factor
    ps = predictor_statics(st, rng_for(st.seed, STREAM_PREDICTORS))
    land = st.land
    theta = world.theta
    coarse = np.repeat(np.repeat(F.block_mean(theta, f), f, -2), f, -1)
    y = theta - coarse
    feats, dynamic = [], []
    for k in ("elevation", "slope", "twi", "clay", "sand"):
        a = np.broadcast_to(_anomaly(np.where(land, ps[k].astype(np.float64), np.nan), f), theta.shape)
        feats += [a, a * coarse]
        dynamic += [False, False]
    for code in (F.LC_EVERGREEN_NEEDLELEAF, F.LC_DECIDUOUS_BROADLEAF, F.LC_MIXED_FOREST, F.LC_GRASSLAND,
                 F.LC_CROPLAND, F.LC_URBAN):
        a = _anomaly(np.where(land, (ps["land_cover"] == code).astype(np.float64), np.nan), f)
        feats.append(np.broadcast_to(a, theta.shape))
        dynamic.append(False)
    for arr in (world.lst_day_k, world.lst_night_k, world.ndvi):
        a = _anomaly(arr.astype(np.float64), f)
        feats += [a, a * coarse]
        dynamic += [True, True]
    x = np.stack([v.reshape(-1) for v in feats], 1)
    yv = y.reshape(-1)
    ok = np.isfinite(x).all(1) & np.isfinite(yv)
    day = np.repeat(np.arange(theta.shape[0]), theta.shape[1] * theta.shape[2])
    rng = np.random.default_rng(seed)
    tr = np.nonzero(ok & (day % 2 == 0))[0]
    te = np.nonzero(ok & (day % 2 == 1))[0]
    tr = rng.choice(tr, min(tr.size, max_samples), replace=False)
    te = rng.choice(te, min(te.size, max_samples), replace=False)

    def fit(cols):
        xa = np.c_[np.ones(tr.size), x[tr][:, cols]]
        beta, *_ = np.linalg.lstsq(xa, yv[tr], rcond=None)
        return np.c_[np.ones(te.size), x[te][:, cols]] @ beta

    pred = fit(np.arange(x.shape[1]))
    pred_static = fit(np.nonzero(~np.array(dynamic))[0])
    var = float(np.var(yv[te]))
    return {
        "r2": 1.0 - float(np.mean((yv[te] - pred) ** 2)) / var,
        "r2_static": 1.0 - float(np.mean((yv[te] - pred_static) ** 2)) / var,
        "rmse_coarse": float(np.sqrt(np.mean(yv[te] ** 2))),
        "rmse_downscaled": float(np.sqrt(np.mean((yv[te] - pred) ** 2))),
        "n_test": int(te.size),
    }
