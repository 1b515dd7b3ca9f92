"""The predictor: feature rows + a loaded model → 1 km soil moisture and its uncertainty (numpy only).

:func:`predict_shard` is the pure core of a downscale task: it builds the features of a block
(``features.build_features``, day-batch by day-batch into one preallocated float32 buffer) and
asks the model only for the rows the product keeps — not 25 km sea (fused ``source_flag`` 0 or
NaN), not 1 km open water (``land_cover`` in :data:`WATER_LAND_COVER`). Prediction is ~95 % of a
task's CPU and coastal shards are part sea; each row's prediction is independent, so the values
equal predicting every row and masking afterwards (``tests/test_hot_path.py``).

The model is anything with ``predict(X)`` and ``predict_uncertainty(X)`` on ``(n, N_FEATURES)``
float32 rows (``storage.model.LoadedModel``). What turns a booster's raw output into the product's
values lives here too, so the file handling in ``storage.model`` stays apart from the science:
:func:`sm_from_output` (a ``residual`` booster's ``y − sm_25km`` added back, clipped to
:data:`SM_RANGE`, NaN where ``sm_25km`` is NaN) and :func:`uncertainty_from_quantiles` (half the
16–84 % quantile range, ≈ 1 σ).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sm1km.core.features import N_FEATURES, build_features, column, day_of_year
from sm1km.errors import ModelError

#: rows of one feature batch (pixel-days); 2**19 rows × 23 features × 4 B ≈ 48 MB
FEATURE_BATCH_ROWS = 1 << 19
#: ``land_cover`` codes that are open water at 1 km (IGBP / MODIS MCD12Q1 LC_Type1: 17 = water bodies):
#: fill there, like sea cells at 25 km — soil moisture is undefined over water.
WATER_LAND_COVER = (17,)
#: physical bounds applied to predictions (m3/m3)
SM_RANGE = (0.0, 1.0)
#: what a model card's ``target_kind`` may say: the booster predicts ``y`` or ``y − sm_25km``
TARGET_KINDS = ("sm", "residual")


# --------------------------------------------------------------------------------------------
# a booster's output → product values
# --------------------------------------------------------------------------------------------
class Model(Protocol):
    """What :func:`predict_shard` asks of a model (``storage.model.LoadedModel``): float32 ``(n,)``
    values for feature rows ``(n, N_FEATURES)``."""

    def predict(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

    def predict_uncertainty(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


def check_features(X: npt.ArrayLike, where: str) -> npt.NDArray[np.float32]:
    """``X`` as float32 ``(n, N_FEATURES)``; a ModelError (at ``where``) for any other shape."""
    rows = np.asarray(X, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != N_FEATURES:
        raise ModelError(where, f"feature matrix has shape {rows.shape}; the model needs (n, {N_FEATURES}).",
                         "build it with sm1km.core.features.build_features.")
    return rows


def sm_from_output(y: npt.NDArray[np.float32], X: npt.NDArray[np.float32], target_kind: str
                   ) -> npt.NDArray[np.float32]:
    """Soil moisture from a booster's float32 output ``y`` ``(n,)`` for rows ``X`` (in place on ``y``).

    ``residual``: ``y`` is ``y − sm_25km`` and ``sm_25km`` is added back; then clipped to
    :data:`SM_RANGE`; NaN where ``sm_25km`` is NaN (sea, no data).
    """
    base = X[:, column("sm_25km")]  # a strided column: gathered once, not per use
    if target_kind == "residual":
        base = np.ascontiguousarray(base)
        y += base
    np.clip(y, *SM_RANGE, out=y)
    y[np.isnan(base)] = np.nan
    return y


def uncertainty_from_quantiles(q: npt.NDArray[np.float32], X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Half the range between the first and last quantile columns of ``q`` ``(n, k)`` (≈ 1 σ for the
    16–84 % pair), float32 ``(n,)``; NaN where ``sm_25km`` is NaN."""
    u: npt.NDArray[np.float32] = np.abs(q[:, -1] - q[:, 0]) * np.float32(0.5)
    u[np.isnan(X[:, column("sm_25km")])] = np.nan
    return u


# --------------------------------------------------------------------------------------------
# one block
# --------------------------------------------------------------------------------------------
def predict_shard(fused_sm: np.ndarray, flag: np.ndarray, predictors: Mapping[str, np.ndarray], times: npt.ArrayLike,
                  factor: int, model: Model, with_uncertainty: bool,
                  batch_rows: int = FEATURE_BATCH_ROWS) -> tuple[np.ndarray, np.ndarray | None]:
    """Pure core of a shard: float32 (t, y, x) soil moisture (and uncertainty), NaN over sea
    (fused ``source_flag`` 0 or NaN) and over 1 km water pixels (``land_cover`` in WATER_LAND_COVER).

    Features are built day-batch by day-batch into one preallocated buffer (≤ ``batch_rows`` rows),
    so memory is bounded by the shard, never by the region or period.
    """
    nt, yc, xc = fused_sm.shape
    ny, nx = yc * factor, xc * factor
    sea = (flag == 0) | np.isnan(fused_sm)
    sm = np.full((nt, ny, nx), np.nan, dtype=np.float32)
    unc = np.full((nt, ny, nx), np.nan, dtype=np.float32) if with_uncertainty else None
    if sea.all():
        return sm, unc
    # The model runs on kept rows only: sea and 1 km water stay NaN without being predicted
    # (prediction is ~95 % of a task's CPU; coastal shards are part sea). Same values as
    # predicting every row and masking afterwards: each row's prediction is independent.
    drop = np.repeat(np.repeat(sea, factor, axis=1), factor, axis=2)
    lc = predictors.get("land_cover")
    if lc is not None:
        drop |= np.isin(lc, WATER_LAND_COVER)  # (y, x) or (t, y, x): broadcasts
    keep = ~drop.reshape(-1)
    del drop
    per_day = ny * nx
    days = max(1, min(nt, batch_rows // per_day))
    # column-major feature buffer (each feature one contiguous fill, see build_features); every
    # batch gets an F-contiguous (rows, N_FEATURES) view of the first rows·N_FEATURES floats
    flat = np.empty(days * per_day * N_FEATURES, dtype=np.float32)
    doy = day_of_year(times)
    sm_rows = sm.reshape(-1)  # views: writes land in sm / unc
    unc_rows = unc.reshape(-1) if unc is not None else None
    for d0 in range(0, nt, days):
        d1 = min(d0 + days, nt)
        rows = slice(d0 * per_day, d1 * per_day)
        k = keep[rows]
        n_keep = int(np.count_nonzero(k))
        if n_keep == 0:
            continue
        sub = {name: (v[d0:d1] if v.ndim == 3 else v) for name, v in predictors.items()}
        n_rows = (d1 - d0) * per_day
        X = build_features(fused_sm[d0:d1], flag[d0:d1], sub, doy[d0:d1], factor,
                           out=flat[: n_rows * N_FEATURES].reshape(N_FEATURES, n_rows).T)
        if n_keep < k.size:
            X = X[k]  # compact copy of the kept rows (bounded by the batch)
            sm_rows[rows][k] = model.predict(X)
            if unc_rows is not None:
                unc_rows[rows][k] = model.predict_uncertainty(X)
        else:
            sm_rows[rows] = model.predict(X)
            if unc_rows is not None:
                unc_rows[rows] = model.predict_uncertainty(X)
    return sm, unc


__all__ = ["Model", "predict_shard", "sm_from_output", "uncertainty_from_quantiles", "check_features",
           "FEATURE_BATCH_ROWS", "WATER_LAND_COVER", "SM_RANGE", "TARGET_KINDS"]
