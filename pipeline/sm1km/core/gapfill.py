"""Causal temporal gap-filling of the dynamic 1 km predictors (LST day/night, NDVI) — pure numpy.

The rule (``gapfill_rule: "causal-locf"`` in the store attrs), per pixel, for every day ``t`` of a
``(time, ...)`` array (NaN = no observation):

1. an observed value is kept exactly;
2. otherwise the **last observation carried forward**: the value of the latest observation
   ``p < t`` with ``t - p <= max_gap_days``;
3. otherwise the *fallback*: by default the pixel's **trailing mean**, the mean of its
   observations in the ``fallback_days`` days ending on ``t``; a pixel without any there takes the
   array's (the tile's) trailing mean over the same days, all pixels; NaN when that is empty too.

Why causal: the record grows a day at a time and a published day must never change, so the value
of day ``t`` may depend only on day ``t`` and earlier days. (The rule used before, linear
interpolation between the observations around ``t`` and a mean over a centred window, changed
days already published whenever a later observation arrived, and appending differed from one
shot.) With finite ``max_gap_days < fallback_days`` the value of day ``t`` depends only on the
``fallback_days`` days ``[t - fallback_days + 1, t]``: a stage fills any run of days from that
trailing window (:func:`sm1km.core.rechunk_plan.trailing_window`), and a changed day ``p``
changes only days ``[p, p + fallback_days)`` (:func:`sm1km.core.rechunk_plan.days_to_recompute`).

Bit-identical whatever the window: a pixel's trailing sums are exact integer sums on a
fixed-point grid of 2**-32 (cumulative sums, so one pass whatever the window) and the tile's
daily sums are exact (:func:`math.fsum`), so filling a block from its trailing window gives
exactly the bytes of filling the whole series (the test suite checks it). (Float64 running sums
would depend on where the array starts; adding the window day by day in a fixed order is exact
too but cost 7 s per 120 × 120 px tile and 100 days.)

NDVI arrives as 16-day composites: :func:`place_on_days` puts each composite on its date in the
daily axis (NaN elsewhere) and the rule holds a composite until the next one (16 days: exactly the
composite's period when it sits on its first day).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["gapfill_time", "trailing_means", "tile_trailing_means", "place_on_days", "observed_mask",
           "GAPFILL_RULE"]

#: the rule's name, recorded in the store attrs (``gapfill_rule``)
GAPFILL_RULE = "causal-locf"


def observed_mask(values: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True where a value is an observation (finite)."""
    mask: npt.NDArray[np.bool_] = np.isfinite(np.asarray(values))
    return mask


def _window(nt: int, fallback_days: int | None) -> int:
    """Days of the trailing window inside an array of ``nt`` days (None: from the array's start)."""
    return nt if fallback_days is None else max(1, min(int(fallback_days), nt))


#: the pixel trailing sums are exact sums of the values on a fixed-point grid of 2**-32
_FIXED_BITS = 32
#: |values| must stay below this (the sums of a window then fit an int64)
_FIXED_LIMIT = float(2 ** 20)


def trailing_means(values: np.ndarray, fallback_days: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per day and pixel of ``(time, pixels)``: (sum, count) of the observations in the trailing
    window ``[t - fallback_days + 1, t]`` (clipped at the array's start) — float64, int64.

    The sums are exact: every value is put on a fixed-point grid of 2**-32 (far below float32
    resolution for predictors; ``|values| < 2**20``) and summed as integers, so a day's sum does
    not depend on where the array starts as long as it holds the day's whole window (an appended
    day gets exactly the one-shot value), and a running sum costs one pass whatever the window.
    """
    x = np.asarray(values, dtype=np.float64)
    nt = x.shape[0]
    w = _window(nt, fallback_days)
    fin = np.isfinite(x)
    xv = np.where(fin, x, 0.0)
    if xv.size and float(np.abs(xv).max()) >= _FIXED_LIMIT:
        raise ValueError(f"trailing means take values below {_FIXED_LIMIT:g} in magnitude")
    if w > (1 << (62 - _FIXED_BITS - 20)):
        raise ValueError("the trailing window is too long for exact sums")
    q = np.rint(np.ldexp(xv, _FIXED_BITS)).astype(np.int64)
    zero = np.zeros((1, *x.shape[1:]), dtype=np.int64)
    cq = np.concatenate([zero, np.cumsum(q, axis=0)])          # cq[k] = sum of days < k
    cn = np.concatenate([zero, np.cumsum(fin, axis=0, dtype=np.int64)])
    hi = np.arange(1, nt + 1)
    lo = np.maximum(hi - w, 0)
    s = np.ldexp((cq[hi] - cq[lo]).astype(np.float64), -_FIXED_BITS)
    return s, cn[hi] - cn[lo]


def tile_trailing_means(values: np.ndarray, fallback_days: int | None = None) -> np.ndarray:
    """Per day of ``(time, ...)``: the mean of every observation of the array (all pixels) in the
    trailing window of the day; NaN where there is none (float64, exact sums: :func:`math.fsum`)."""
    x = np.asarray(values, dtype=np.float64).reshape(np.shape(values)[0], -1)
    nt = x.shape[0]
    w = _window(nt, fallback_days)
    fin = np.isfinite(x)
    day_sum = [math.fsum(row[ok].tolist()) for row, ok in zip(x, fin)]
    day_n = fin.sum(axis=1)
    out = np.full(nt, np.nan)
    for t in range(nt):
        lo = max(0, t - w + 1)
        n = int(day_n[lo:t + 1].sum())
        if n:
            out[t] = math.fsum(day_sum[lo:t + 1]) / n
    return out


#: elements (time × pixels) handled per pass: bounds the float64/int64 temporaries (~10 arrays)
_PASS_ELEMENTS = 1 << 19


def gapfill_time(values: np.ndarray, max_gap_days: int | None = None,
                 fallback: np.ndarray | float | None = None, fallback_days: int | None = None) -> np.ndarray:
    """Fill NaN along axis 0 (daily steps), causally: keep, carry forward, fall back (module doc).

    ``values``: ``(time, ...)`` float array. ``max_gap_days``: how many days an observation is
    carried forward (None = unlimited). ``fallback``: value per pixel ``(...)`` (or scalar) for the
    days nothing is carried to; default the pixel's, then the tile's trailing mean over
    ``fallback_days`` days (None = since the array's start). Returns float32, same shape. Works on
    groups of pixels so that temporaries stay small whatever the array size.
    """
    v = np.asarray(values)
    if v.ndim < 1:
        raise ValueError("values needs a time axis (axis 0)")
    if max_gap_days is not None and max_gap_days < 0:
        raise ValueError("max_gap_days must be >= 0")
    if fallback_days is not None and fallback_days < 1:
        raise ValueError("fallback_days must be >= 1")
    nt = v.shape[0]
    shape = v.shape
    if nt == 0 or v.size == 0:
        return v.astype(np.float32)
    flat_in = v.reshape(nt, -1)
    npix = flat_in.shape[1]
    fb_all = None
    if fallback is not None:
        fb_all = np.broadcast_to(np.asarray(fallback, dtype=np.float64), shape[1:]).reshape(-1)
    tile: list[np.ndarray] = []  # the tile's trailing means, computed once if some pixel needs them

    def tile_means() -> np.ndarray:
        if not tile:
            tile.append(tile_trailing_means(flat_in, fallback_days))
        return tile[0]

    out = np.empty((nt, npix), dtype=np.float32)
    step = max(1, _PASS_ELEMENTS // nt)
    for j in range(0, npix, step):
        sub = flat_in[:, j:j + step]
        filled, rest = _carry_forward(sub, max_gap_days)
        if rest.any():
            if fb_all is not None:
                filled = np.where(rest, fb_all[j:j + step].reshape(1, -1), filled)
            else:
                cols = np.flatnonzero(rest.any(axis=0))
                s, n = trailing_means(sub[:, cols], fallback_days)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
                r = rest[:, cols]
                no_pixel_mean = r & (n == 0)
                if no_pixel_mean.any():
                    mean = np.where(no_pixel_mean, tile_means()[:, None], mean)
                filled[:, cols] = np.where(r, mean, filled[:, cols])
        out[:, j:j + step] = filled.astype(np.float32)
    return out.reshape(shape)


def _carry_forward(values: np.ndarray, max_gap_days: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2 on ``(time, pixels)``: (float64 values, observations kept and carried forward,
    NaN elsewhere; mask of the days left for the fallback)."""
    flat = values.astype(np.float64)
    nt = flat.shape[0]
    valid = np.isfinite(flat)
    idx = np.arange(nt, dtype=np.int64)[:, None]
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=0)
    has_p = prev >= 0
    if max_gap_days is not None:
        has_p &= (idx - prev) <= max_gap_days
    vp = np.take_along_axis(flat, np.clip(prev, 0, nt - 1), axis=0)
    out = np.where(has_p, vp, np.nan)
    out = np.where(valid, flat, out)  # observations are kept bit for bit
    return out, ~(valid | has_p)


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
