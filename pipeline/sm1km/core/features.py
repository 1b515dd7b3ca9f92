"""The one feature builder of the downscaling model (training *and* inference use it).

``build_features`` turns one block — the fused 25 km soil moisture of ``t`` days over ``yc × xc``
coarse cells and the 1 km predictors of the same ``t × (yc·factor) × (xc·factor)`` pixels — into a
float32 matrix with one row per pixel-day (C order over ``(t, y, x)``) and one column per feature
of :data:`FEATURE_SCHEMA`. It is pure numpy: no I/O, no dask, no global state.

Why these features (see ``docs/model.md``):

* the fused 25 km value of the day (and its source flag) carries the temporal signal;
* the raw 1 km predictors carry the land surface (LST day/night and their difference, NDVI,
  terrain, soil texture, land cover);
* each continuous predictor's **anomaly relative to its 25 km cell mean** carries the sub-cell
  pattern — the thing downscaling must add to the 25 km value; the cell mean is computed over the
  ``factor × factor`` pixels of that cell only, so it is the same in any block made of whole cells
  (inference tiles) as in a 1-cell block around a station (training);
* day of year as sin/cos (seasonality without a discontinuity at New Year).

No latitude/longitude (they overfit and leave artefacts) and no features that span days (a value
must not depend on where a time block starts). NaN stays NaN (XGBoost routes missing values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from sm1km.errors import ModelError

#: Predictors read from ``inputs/predictors.zarr`` (names per the store contract).
DAILY_PREDICTORS = ("lst_day_k", "lst_night_k", "ndvi")
STATIC_PREDICTORS = ("elevation_m", "slope_deg", "twi", "clay_frac", "sand_frac", "land_cover")
PREDICTOR_NAMES = DAILY_PREDICTORS + STATIC_PREDICTORS

#: Continuous predictors whose anomaly w.r.t. the 25 km cell mean is a feature.
ANOMALY_OF = ("lst_day_k", "lst_night_k", "lst_diff_k", "ndvi", "elevation_m", "slope_deg", "twi",
              "clay_frac", "sand_frac")

_UNITS = {
    "sm_25km": "m3 m-3",
    "source_flag": "1",
    "doy_sin": "1",
    "doy_cos": "1",
    "lst_day_k": "K",
    "lst_night_k": "K",
    "lst_diff_k": "K",
    "ndvi": "1",
    "elevation_m": "m",
    "slope_deg": "degree",
    "twi": "1",
    "clay_frac": "1",
    "sand_frac": "1",
    "land_cover": "code",
}

FEATURE_NAMES: tuple[str, ...] = (
    "sm_25km", "source_flag", "doy_sin", "doy_cos",
    "lst_day_k", "lst_night_k", "lst_diff_k", "ndvi",
    "elevation_m", "slope_deg", "twi", "clay_frac", "sand_frac", "land_cover",
    *(f"{n}_anom" for n in ANOMALY_OF),
)
FEATURE_UNITS: tuple[str, ...] = tuple(_UNITS[n.removesuffix("_anom")] for n in FEATURE_NAMES)
N_FEATURES = len(FEATURE_NAMES)

#: Stored in every model card; ``model.load_model`` refuses a model whose schema differs.
#: Bump ``version`` whenever a feature's meaning changes (not only its name).
FEATURE_SCHEMA: dict[str, Any] = {
    "version": "1",
    "names": list(FEATURE_NAMES),
    "units": list(FEATURE_UNITS),
    "dtype": "float32",
    "rows": "C order over (time, lat, lon) of the block; lat descending, lon ascending",
    "notes": "<x>_anom = x minus the mean of x over the pixels of its 0.25 deg cell (NaN ignored); "
             "lst_diff_k = lst_day_k - lst_night_k; doy_* = sin/cos(2 pi doy / 365.25)",
}

_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def column(name: str) -> int:
    """Index of feature ``name`` in the matrix."""
    return _COL[name]


def day_of_year(times: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Day of year (1..366) of datetime-like ``times`` as int array."""
    t = np.asarray(times).astype("datetime64[D]")
    year_start = t.astype("datetime64[Y]").astype("datetime64[D]")
    doy: npt.NDArray[np.int64] = ((t - year_start).astype(np.int64) + 1).astype(np.int64)
    return doy


def _cell_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over each ``factor × factor`` cell of the last two axes (NaN ignored), broadcast back."""
    *lead, ny, nx = a.shape
    yc, xc = ny // factor, nx // factor
    r = a.reshape(*lead, yc, factor, xc, factor)
    # sum / count instead of np.nanmean under warnings.catch_warnings: that context manager is not
    # thread-safe (a dask worker with 2 threads leaked "Mean of empty slice"); errstate is.
    valid = np.isfinite(r)
    total = np.where(valid, r, 0).sum(axis=(-3, -1), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (total / valid.sum(axis=(-3, -1))).astype(np.float32)  # all-NaN cell -> 0/0 = NaN
    return np.repeat(np.repeat(m, factor, axis=-2), factor, axis=-1)


def _upsample(a: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(a, factor, axis=-2), factor, axis=-1)


def build_features(fused_sm: npt.ArrayLike, source_flag: npt.ArrayLike, predictors: Mapping[str, npt.ArrayLike],
                   doy: npt.ArrayLike, factor: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Feature matrix of one block: float32 ``(t*y*x, N_FEATURES)``, rows C-ordered over (t, y, x).

    ``fused_sm``/``source_flag``: ``(t, yc, xc)`` coarse cells; ``predictors``: every name of
    :data:`PREDICTOR_NAMES`, each ``(t, y, x)`` or ``(y, x)`` (static) with ``y = yc·factor``,
    ``x = xc·factor``; ``doy``: ``(t,)`` day of year (1..366) or datetimes. ``out``: a preallocated
    float32 array of the result's shape to fill (the hot path; it is returned), C- or
    F-contiguous: column-major (:func:`empty_features`) makes every feature column one contiguous
    run, ~9× faster to fill than the 92-byte stride of a row-major buffer; XGBoost predicts from
    either at the same speed. The values are the same in both layouts.
    """
    fused_sm = np.asarray(fused_sm, dtype=np.float32)
    source_flag = np.asarray(source_flag)
    if fused_sm.ndim != 3:
        raise ModelError("features.build_features", f"fused_sm must be (t, yc, xc), got shape {fused_sm.shape}.",
                         "pass one block of the fused 25 km cube.")
    if source_flag.shape != fused_sm.shape:
        raise ModelError("features.build_features",
                         f"source_flag shape {source_flag.shape} differs from fused_sm {fused_sm.shape}.",
                         "pass the same block of both variables.")
    nt, yc, xc = fused_sm.shape
    ny, nx = yc * factor, xc * factor
    missing = [n for n in PREDICTOR_NAMES if n not in predictors]
    if missing:
        raise ModelError("features.build_features", f"predictors missing: {', '.join(missing)}.",
                         "inputs/predictors.zarr must hold every predictor of the store contract.")
    doy = np.asarray(doy)
    if np.issubdtype(doy.dtype, np.datetime64):
        doy = day_of_year(doy)
    if doy.shape != (nt,):
        raise ModelError("features.build_features", f"doy must have shape ({nt},), got {doy.shape}.",
                         "pass one day of year per time step of the block.")

    def pred(name: str) -> np.ndarray:
        a = np.asarray(predictors[name], dtype=np.float32)
        if a.shape not in ((ny, nx), (nt, ny, nx)):
            raise ModelError("features.build_features",
                             f"predictor {name} has shape {a.shape}; expected ({ny}, {nx}) or ({nt}, {ny}, {nx}).",
                             f"pass the fine pixels of the same cells (factor {factor}).")
        return a

    shape = (nt * ny * nx, N_FEATURES)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif (out.shape != shape or out.dtype != np.float32
          or not (out.flags.c_contiguous or out.flags.f_contiguous)):
        raise ModelError("features.build_features", f"out must be a contiguous float32 {shape}, got "
                         f"{out.dtype} {out.shape}.", "allocate it with features.empty_features(rows).")
    cube = out.reshape(nt, ny, nx, N_FEATURES)  # a view in both layouts: writes land in ``out``
    if not np.shares_memory(cube, out):  # pragma: no cover - numpy guarantees a view here
        raise AssertionError("feature buffer reshape copied")

    def put(name: str, value: npt.ArrayLike) -> None:
        v = np.asarray(value, dtype=np.float32)
        if v.ndim == 1:  # per day
            v = v[:, None, None]
        cube[..., _COL[name]] = v  # broadcasts (y, x) statics and (t,) series

    put("sm_25km", _upsample(fused_sm, factor))
    put("source_flag", _upsample(source_flag.astype(np.float32), factor))
    ang = 2.0 * np.pi * doy.astype(np.float64) / 365.25
    put("doy_sin", np.sin(ang))
    put("doy_cos", np.cos(ang))

    values = {n: pred(n) for n in PREDICTOR_NAMES}
    values["lst_diff_k"] = values["lst_day_k"] - values["lst_night_k"]
    for name in ("lst_day_k", "lst_night_k", "lst_diff_k", "ndvi", "elevation_m", "slope_deg", "twi",
                 "clay_frac", "sand_frac", "land_cover"):
        put(name, values[name])
    for name in ANOMALY_OF:
        v = values[name]
        put(f"{name}_anom", v - _cell_mean(v, factor))
    return out


def empty_features(n_rows: int) -> np.ndarray:
    """A preallocated output for :func:`build_features` (``n_rows = t*y*x``), column-major
    (``(n_rows, N_FEATURES)``, F-contiguous): the fast layout to fill."""
    return np.empty((N_FEATURES, n_rows), dtype=np.float32).T
