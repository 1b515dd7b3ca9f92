"""Temporal gap-filling of the dynamic 1 km predictors (LST day/night, NDVI) — pure numpy.

The rule, per pixel, for every day ``t`` of a ``(time, ...)`` array (NaN = no observation):

1. an observed value is kept exactly;
2. between two observations ``p < t < n``: linear interpolation in time
   ``v[p] + (t - p) / (n - p) · (v[n] - v[p])``;
3. before the first / after the last observation: the nearest observation (held constant);
4. a pixel without any observation: the *fallback* — by default its climatology, i.e. the mean
   of its own observations, which is empty here, so the mean of all observations of the block
   (all pixels, all days); NaN when the block has no observation at all.

``max_gap_days`` bounds how far an observation reaches: with it, steps 2/3 only use
observations at most ``max_gap_days`` away (both for interpolation; one for "nearest"), and
days beyond reach take the pixel's mean over the array (step 4 generalised: the pixel's
climatology over the window), then the block mean. The bound makes the result for day ``t``
depend only on observations in ``[t - max_gap_days, t + max_gap_days]`` plus the window mean, so
a stage can fill one time block at a time from a window with a halo of ``max_gap_days`` days
and memory that does not grow with the period (``ingest`` does exactly that).

NDVI arrives as 16-day composites: :func:`place_on_days` puts each composite on its date in the
daily axis (NaN elsewhere) and :func:`gapfill_time` interpolates between composite dates.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["gapfill_time", "pixel_fallback", "place_on_days", "observed_mask"]


def observed_mask(values: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True where a value is an observation (finite)."""
    mask: npt.NDArray[np.bool_] = np.isfinite(np.asarray(values))
    return mask


def pixel_fallback(values: np.ndarray) -> np.ndarray:
    """Per-pixel fallback ``(...)``: the pixel's mean over time; where it has no observation, the
    mean of every observation in the array; NaN if there is none at all (float64)."""
    v = np.asarray(values, dtype=np.float64)
    fin = np.isfinite(v)
    n = fin.sum(axis=0)
    s = np.where(fin, v, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    total = int(n.sum())
    block_mean = float(s.sum() / total) if total else np.nan
    return np.where(n > 0, mean, block_mean)


#: elements (time × pixels) handled per pass: bounds the float64/int64 temporaries (~10 arrays)
_PASS_ELEMENTS = 1 << 19


def gapfill_time(values: np.ndarray, max_gap_days: int | None = None,
                 fallback: np.ndarray | float | None = None) -> np.ndarray:
    """Fill NaN along axis 0 (daily steps) — interpolate, hold at the ends, fall back (module doc).

    ``values``: ``(time, ...)`` float array. ``max_gap_days``: reach of an observation in days
    (None = unlimited). ``fallback``: value per pixel ``(...)`` (or scalar) for days no
    observation reaches; default :func:`pixel_fallback` of ``values``. Returns float32, same shape.
    Works on groups of pixels so that temporaries stay small whatever the array size.
    """
    v = np.asarray(values)
    if v.ndim < 1:
        raise ValueError("values needs a time axis (axis 0)")
    if max_gap_days is not None and max_gap_days < 0:
        raise ValueError("max_gap_days must be >= 0")
    nt = v.shape[0]
    shape = v.shape
    if nt == 0 or v.size == 0:
        return v.astype(np.float32)
    flat_in = v.reshape(nt, -1)
    npix = flat_in.shape[1]
    if fallback is None:
        fb_all = pixel_fallback(flat_in)
    else:
        fb_all = np.broadcast_to(np.asarray(fallback, dtype=np.float64), shape[1:]).reshape(-1)
    out = np.empty((nt, npix), dtype=np.float32)
    step = max(1, _PASS_ELEMENTS // nt)
    for j in range(0, npix, step):
        out[:, j:j + step] = _fill_pixels(flat_in[:, j:j + step], max_gap_days, fb_all[j:j + step])
    return out.reshape(shape)


def _fill_pixels(values: np.ndarray, max_gap_days: int | None, fb: np.ndarray) -> np.ndarray:
    """gapfill_time on a ``(time, pixels)`` block with a per-pixel fallback ``fb``."""
    flat = values.astype(np.float64)
    nt = flat.shape[0]
    valid = np.isfinite(flat)
    idx = np.arange(nt, dtype=np.int64)[:, None]
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(valid, idx, nt)[::-1], axis=0)[::-1]
    has_p = prev >= 0
    has_n = nxt < nt
    if max_gap_days is not None:
        has_p &= (idx - prev) <= max_gap_days
        has_n &= (nxt - idx) <= max_gap_days
    vp = np.take_along_axis(flat, np.clip(prev, 0, nt - 1), axis=0)
    vn = np.take_along_axis(flat, np.clip(nxt, 0, nt - 1), axis=0)
    out = np.full(flat.shape, np.nan)
    both = has_p & has_n
    span = np.where(both, nxt - prev, 1)
    w = np.where(both & (span > 0), (idx - prev) / np.where(span > 0, span, 1), 0.0)
    out = np.where(both, vp + w * (vn - vp), out)
    out = np.where(has_p & ~has_n, vp, out)
    out = np.where(~has_p & has_n, vn, out)
    out = np.where(valid, flat, out)  # observations are kept bit for bit
    rest = ~(valid | has_p | has_n)
    if rest.any():
        out = np.where(rest, np.asarray(fb, dtype=np.float64).reshape(1, -1), out)
    return out.astype(np.float32)


def place_on_days(dates: npt.ArrayLike, values: npt.ArrayLike, days: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Put composites ``values`` ``(n, ...)`` observed on ``dates`` onto the daily axis ``days``.

    Days without a composite are NaN; composites outside ``days`` are dropped. Dates compare as
    calendar days (datetime64[D]). Returns float32 ``(len(days), ...)``.
    """
    vals = np.asarray(values, dtype=np.float32)
    d = np.asarray(dates, dtype="datetime64[D]")
    axis = np.asarray(days, dtype="datetime64[D]")
    if d.shape[0] != vals.shape[0]:
        raise ValueError("dates and values differ in length")
    out = np.full((axis.size, *vals.shape[1:]), np.nan, dtype=np.float32)
    pos = np.searchsorted(axis, d)
    ok = (pos < axis.size) & (axis[np.clip(pos, 0, max(axis.size - 1, 0))] == d) if axis.size else np.zeros(d.size, bool)
    out[pos[ok]] = vals[ok]
    return out
