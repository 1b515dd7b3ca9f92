"""How much of the sub-25 km truth pattern the 1 km predictors explain (a check of the world's design).

The target is the anomaly of the 1 km truth from its 0.25° cell mean. A linear model on predictor
anomalies (static: elevation, slope, TWI, clay, sand, land cover; dynamic: LST day/night, NDVI),
each also multiplied by the cell-mean soil moisture, is fitted on even days and scored on odd days
(clear-sky pixel-days). A downscaling model that beats the 25 km baseline needs R² well above 0.
"""

from __future__ import annotations

import numpy as np

from sm1km.synth import fields as F
from sm1km.synth.observe import predictor_statics
from sm1km.synth.world import STREAM_PREDICTORS, World, rng_for


def _anomaly(a: np.ndarray, factor: int) -> np.ndarray:
    c = F.block_mean(a, factor)
    return a - np.repeat(np.repeat(c, factor, -2), factor, -1)


def subgrid_skill(world: World, max_samples: int = 200_000, seed: int = 0) -> dict:
    """R² and RMSEs of a linear sub-grid model: {'r2', 'r2_static', 'rmse_coarse', 'rmse_downscaled', 'n_test'}.

    Features are gathered only at sampled pixel-days, so memory stays ~ one (time, y, x) array.
    """
    st = world.statics
    f = st.factor
    ps = predictor_statics(st, rng_for(st.seed, STREAM_PREDICTORS))
    land = st.land
    theta = world.theta
    nt, ny, nx = theta.shape
    coarse = np.repeat(np.repeat(F.block_mean(theta, f), f, -2), f, -1).reshape(-1)
    y = theta.reshape(-1) - coarse
    ok = (land[None] & np.isfinite(world.lst_day_k) & np.isfinite(world.lst_night_k)
          & np.isfinite(world.ndvi) & np.isfinite(theta)).reshape(-1)
    day = np.repeat(np.arange(nt), ny * nx)
    rng = np.random.default_rng(seed)
    tr = np.nonzero(ok & (day % 2 == 0))[0]
    te = np.nonzero(ok & (day % 2 == 1))[0]
    tr = np.sort(rng.choice(tr, min(tr.size, max_samples), replace=False))
    te = np.sort(rng.choice(te, min(te.size, max_samples), replace=False))
    idx = np.concatenate([tr, te])
    pix = idx % (ny * nx)
    cols, dynamic = [], []
    for k in ("elevation", "slope", "twi", "clay", "sand"):
        a = _anomaly(np.where(land, ps[k].astype(np.float64), np.nan), f).reshape(-1)[pix]
        cols += [a, a * coarse[idx]]
        dynamic += [False, False]
    for code in (F.LC_EVERGREEN_NEEDLELEAF, F.LC_DECIDUOUS_BROADLEAF, F.LC_MIXED_FOREST, F.LC_GRASSLAND,
                 F.LC_CROPLAND, F.LC_URBAN):
        cols.append(_anomaly(np.where(land, (ps["land_cover"] == code).astype(np.float64), np.nan), f).reshape(-1)[pix])
        dynamic.append(False)
    for arr in (world.lst_day_k, world.lst_night_k, world.ndvi):
        a = _anomaly(arr, f).reshape(-1)[idx].astype(np.float64)
        cols += [a, a * coarse[idx]]
        dynamic += [True, True]
    x = np.stack(cols, 1)
    good = np.isfinite(x).all(1)
    x_tr, y_tr = x[: tr.size][good[: tr.size]], y[tr][good[: tr.size]]
    x_te, y_te = x[tr.size:][good[tr.size:]], y[te][good[tr.size:]]

    def fit(sel):
        beta, *_ = np.linalg.lstsq(np.c_[np.ones(len(y_tr)), x_tr[:, sel]], y_tr, rcond=None)
        return np.c_[np.ones(len(y_te)), x_te[:, sel]] @ beta

    pred = fit(np.arange(x.shape[1]))
    pred_static = fit(np.nonzero(~np.array(dynamic))[0])
    var = float(np.var(y_te))
    return {
        "r2": 1.0 - float(np.mean((y_te - pred) ** 2)) / var,
        "r2_static": 1.0 - float(np.mean((y_te - pred_static) ** 2)) / var,
        "rmse_coarse": float(np.sqrt(np.mean(y_te**2))),
        "rmse_downscaled": float(np.sqrt(np.mean((y_te - pred) ** 2))),
        "n_test": int(len(y_te)),
    }
