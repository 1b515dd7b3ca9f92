"""Fusion science, pure numpy: rescale ERA5 ``swvl1`` to ESA CCI per pixel and fill CCI gaps.

All functions take whole per-pixel time series, time on axis 0 (``(t, y, x)`` blocks or
``(t, n_pixels)``), and are vectorised over pixels. No I/O, no dask: the ``fuse`` stage calls
:func:`fit_params` once per spatial chunk on the *reference period* (plus a halo for the
neighbourhood fallback) and :func:`apply_params` per (chunk × time block): a day's fused value
depends only on that day's inputs and the fitted :class:`FusionParams`, so appending days never
changes a published one. :func:`fuse_block_detailed` = fit on a block, apply to the same block.

Matching uses only the *overlap* days of a pixel (both CCI and ERA5 finite):

* **mean–std matching** (the published method):
  ERA5′ = (ERA5 − μ_ERA5)·σ_CCI/σ_ERA5 + μ_CCI, moments over the overlap days (ddof = 0).
* **CDF matching**: piecewise-linear map through matched order statistics of the overlap days
  (``CDF_NODES`` nodes at equal rank spacing: every order statistic when n ≤ ``CDF_NODES``).
  Outside the overlap range of ERA5 the map continues linearly with the mean–std slope
  σ_CCI/σ_ERA5 (the end segments of an empirical CDF are too noisy to extrapolate).

A land pixel with fewer than ``min_overlap_days`` overlap days uses the pooled overlap days of all
land pixels within ``neighbourhood_cells`` (a (2r+1)² square box, itself included); if the pool
is also too small, the unscaled ERA5. Both fallbacks carry ``source_flag`` 3. A land pixel
without ERA5 on a day (a coastal cell CCI sees but ERA5 treats as sea) takes that day's mean ERA5
of the land pixels within the same radius, rescaled to its own CCI like any other; those days are
flagged 3 too. Everything stays within ``neighbourhood_cells`` of the pixel, so a chunk read with
a halo of that width gives exactly the result of the whole array.

Outputs are clipped to [``SM_MIN``, max(``SM_MAX``, the pixel's largest observed CCI value)]:
0.6 m³/m³ is above the porosity of almost every mineral soil, and the max() term guarantees that
an observed CCI value is never altered by the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SM_MIN = 0.0
SM_MAX = 0.6
CDF_NODES = 101
STD_MIN = 1e-9  # m³/m³: an ERA5 series varying less than this is constant (no rescaling exists)

# source_flag per pixel-day (the fused.zarr contract)
FLAG_NO_DATA = 0
FLAG_CCI = 1
FLAG_ERA5_RESCALED = 2
FLAG_FALLBACK = 3
FLAG_VALUES = (FLAG_NO_DATA, FLAG_CCI, FLAG_ERA5_RESCALED, FLAG_FALLBACK)
FLAG_MEANINGS = "no_data cci_observed era5_rescaled_own_pixel era5_fallback_neighbourhood_or_unscaled"

# how each pixel's ERA5 was matched (per pixel, not per day)
PIXEL_NOT_LAND = 0
PIXEL_OWN = 1
PIXEL_NEIGHBOURHOOD = 2
PIXEL_UNSCALED = 3

METHODS = ("meanstd", "cdf")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_2d(a: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], tuple[int, ...]]:
    """(t, P) float64 view of a (t, ...) array, plus the trailing shape to restore."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        return arr[:, None], ()
    return arr.reshape(arr.shape[0], -1), arr.shape[1:]


def overlap(era5: npt.ArrayLike, cci: npt.ArrayLike) -> np.ndarray:
    """Boolean mask of the days where both series are finite."""
    return np.isfinite(np.asarray(era5, dtype=np.float64)) & np.isfinite(np.asarray(cci, dtype=np.float64))


@dataclass(frozen=True)
class MeanStdParams:
    """Per-pixel matching moments over the overlap days (arrays of the pixel shape)."""

    n: np.ndarray
    mean_era5: np.ndarray
    std_era5: np.ndarray
    mean_cci: np.ndarray
    std_cci: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Where a finite rescaling exists: n ≥ 2 and ERA5 not constant."""
        with np.errstate(invalid="ignore"):
            ok: np.ndarray = (self.n >= 2) & np.isfinite(self.std_era5) & (self.std_era5 > STD_MIN)
            ok = ok & np.isfinite(self.std_cci)
            return ok

    @property
    def slope(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.valid, self.std_cci / np.where(self.std_era5 > 0, self.std_era5, 1.0), np.nan)


def meanstd_params(era5: npt.ArrayLike, cci: npt.ArrayLike) -> MeanStdParams:
    """Overlap-day moments per pixel (two-pass, ddof = 0)."""
    e, shape = _as_2d(era5)
    c, _ = _as_2d(cci)
    ov = np.isfinite(e) & np.isfinite(c)
    n = ov.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        nn = np.where(n > 0, n, 1)
        me = np.where(ov, e, 0.0).sum(0) / nn
        mc = np.where(ov, c, 0.0).sum(0) / nn
        se = np.sqrt(np.where(ov, (e - me) ** 2, 0.0).sum(0) / nn)
        sc = np.sqrt(np.where(ov, (c - mc) ** 2, 0.0).sum(0) / nn)
    nan = n == 0
    me, mc, se, sc = (np.where(nan, np.nan, v) for v in (me, mc, se, sc))
    return MeanStdParams(*(v.reshape(shape) for v in (n, me, se, mc, sc)))


def apply_meanstd(era5: npt.ArrayLike, p: MeanStdParams) -> np.ndarray:
    """ERA5′ = (ERA5 − μ_ERA5)·σ_CCI/σ_ERA5 + μ_CCI; NaN for pixels without valid parameters."""
    e = np.asarray(era5, dtype=np.float64)
    out: np.ndarray = (e - p.mean_era5) * p.slope + p.mean_cci
    return out


def rescale_meanstd(era5: npt.ArrayLike, cci: npt.ArrayLike) -> np.ndarray:
    """ERA5 rescaled to CCI per pixel by mean–std matching over the overlap days (float64)."""
    return apply_meanstd(era5, meanstd_params(era5, cci))


@dataclass(frozen=True)
class CdfParams:
    """Per-pixel CDF-matching nodes: ``x`` (ERA5) and ``y`` (CCI) of shape (K, P), tail slope (P,)."""

    x: np.ndarray
    y: np.ndarray
    slope: np.ndarray
    n: np.ndarray
    shape: tuple[int, ...]

    @property
    def valid(self) -> np.ndarray:
        ok: np.ndarray = (self.n >= 2) & np.isfinite(self.slope)
        with np.errstate(invalid="ignore"):
            ok &= (self.x[-1] - self.x[0]) > 0
        return ok


def cdf_params(era5: npt.ArrayLike, cci: npt.ArrayLike, n_nodes: int = CDF_NODES) -> CdfParams:
    """Matched order statistics of the overlap days, at ``n_nodes`` equally spaced ranks.

    The same rank indices are taken from the sorted ERA5 and the sorted CCI overlap values, so
    every node is an exact pair (e₍ₖ₎, c₍ₖ₎): a monotone relation CCI = f(ERA5) is reproduced
    exactly at the nodes, and with n ≤ ``n_nodes`` at every overlap day.
    """
    e, shape = _as_2d(era5)
    c, _ = _as_2d(cci)
    ov = np.isfinite(e) & np.isfinite(c)
    n = ov.sum(axis=0)
    es = np.sort(np.where(ov, e, np.nan), axis=0)  # NaN sort last
    cs = np.sort(np.where(ov, c, np.nan), axis=0)
    j = np.arange(n_nodes, dtype=np.float64)[:, None]
    idx = np.rint(j * (np.maximum(n, 1) - 1)[None, :] / (n_nodes - 1)).astype(np.int64)
    x = np.take_along_axis(es, idx, axis=0)
    y = np.take_along_axis(cs, idx, axis=0)
    ms = meanstd_params(e, c)
    return CdfParams(x=x, y=y, slope=ms.slope.ravel(), n=n, shape=shape)


def apply_cdf(era5: npt.ArrayLike, p: CdfParams) -> np.ndarray:
    """Piecewise-linear map through the nodes, linear tails with the mean–std slope (float64).

    Pixel by pixel (vectorised): a pixel's result depends only on its own nodes and ERA5 values,
    never on which other pixels share the call (a chunk, a halo, a single pixel give the same bits).
    """
    e, shape = _as_2d(era5)
    t, npx = e.shape
    valid = p.valid
    k = p.x.shape[0]
    # dummy strictly increasing nodes for invalid pixels (their result is NaN anyway)
    dummy = np.linspace(0.0, 1.0, k)[:, None]
    x = np.where(valid[None, :], p.x, dummy)
    y = np.where(valid[None, :], p.y, 0.0)
    lo, hi = x[0], x[-1]
    with np.errstate(invalid="ignore"):
        ec = np.clip(e, lo[None, :], hi[None, :])
        seg = np.zeros((t, npx), dtype=np.intp)          # segment [x_j, x_j+1] holding ec
        for j in range(1, k - 1):
            seg += ec >= x[j][None, :]
    cols = np.arange(npx)[None, :]
    x0, x1, y0, y1 = x[seg, cols], x[seg + 1, cols], y[seg, cols], y[seg + 1, cols]
    w = x1 - x0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(w > 0, (y1 - y0) / np.where(w > 0, w, 1.0) * (ec - x0) + y0, y1)
        below = e < lo[None, :]
        above = e > hi[None, :]
    out = np.where(below, y[0][None, :] + (e - lo[None, :]) * p.slope[None, :], out)
    out = np.where(above, y[-1][None, :] + (e - hi[None, :]) * p.slope[None, :], out)
    out = np.where(np.isfinite(e) & valid[None, :], out, np.nan)
    return out.reshape((t, *shape))


def rescale_cdf(era5: npt.ArrayLike, cci: npt.ArrayLike, n_nodes: int = CDF_NODES) -> np.ndarray:
    """ERA5 rescaled to CCI per pixel by CDF (quantile) matching over the overlap days (float64)."""
    return apply_cdf(era5, cdf_params(era5, cci, n_nodes))


def rescale(era5: npt.ArrayLike, cci: npt.ArrayLike, method: str) -> np.ndarray:
    """Per-pixel rescaling with ``method`` in :data:`METHODS`."""
    if method == "meanstd":
        return rescale_meanstd(era5, cci)
    if method == "cdf":
        return rescale_cdf(era5, cci)
    raise ValueError(f"unknown fusion method {method!r}; expected one of {METHODS}")


# --------------------------------------------------------------------------------------------
# neighbourhood (regional) matching
# --------------------------------------------------------------------------------------------
def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over the (2r+1)² square around every cell of the last two axes (zero outside)."""
    if r == 0:
        return a.copy()
    ny, nx = a.shape[-2:]
    lead = [(0, 0)] * (a.ndim - 2)
    c = np.pad(a, lead + [(r, r), (r, r)]).cumsum(-2).cumsum(-1)
    c = np.pad(c, lead + [(1, 0), (1, 0)])
    w = 2 * r + 1
    out: np.ndarray = c[..., w:w + ny, w:w + nx] - c[..., :ny, w:w + nx] - c[..., w:w + ny, :nx] + c[..., :ny, :nx]
    return out


def borrow_era5(era5: npt.ArrayLike, land: npt.ArrayLike, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill missing ERA5 of land pixels with the same day's mean over land pixels within ``r``.

    For coastal cells that CCI sees but where ERA5 has no land point (all its neighbours are
    sea in the ERA5 mask). Returns (filled era5, borrowed mask (t, y, x)).
    """
    e = np.asarray(era5, dtype=np.float64)
    land = np.asarray(land, dtype=bool)
    missing = land[None] & ~np.isfinite(e)
    if r == 0 or not missing.any():
        return e, np.zeros(e.shape, dtype=bool)
    valid = np.isfinite(e) & land[None]
    s = _box_sum(np.where(valid, e, 0.0), r)
    k = _box_sum(valid.astype(np.float64), r)
    borrowed = missing & (k > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(borrowed, s / np.where(k > 0, k, 1.0), e), borrowed


def neighbourhood_meanstd_params(era5: npt.ArrayLike, cci: npt.ArrayLike, land: npt.ArrayLike,
                                 r: int) -> MeanStdParams:
    """Mean–std moments of the pooled overlap days of all land pixels within radius ``r`` (box)."""
    e = np.asarray(era5, dtype=np.float64)
    c = np.asarray(cci, dtype=np.float64)
    ov = np.isfinite(e) & np.isfinite(c) & np.asarray(land, dtype=bool)[None]
    e0, c0 = np.where(ov, e, 0.0), np.where(ov, c, 0.0)
    n = _box_sum(ov.sum(0).astype(np.float64), r)
    se, sc = _box_sum(e0.sum(0), r), _box_sum(c0.sum(0), r)
    see, scc = _box_sum((e0 * e0).sum(0), r), _box_sum((c0 * c0).sum(0), r)
    with np.errstate(invalid="ignore", divide="ignore"):
        nn = np.where(n > 0, n, np.nan)
        me, mc = se / nn, sc / nn
        sde = np.sqrt(np.maximum(see / nn - me * me, 0.0))
        sdc = np.sqrt(np.maximum(scc / nn - mc * mc, 0.0))
    return MeanStdParams(np.rint(n).astype(np.int64), me, sde, mc, sdc)


def _neighbourhood_samples(e: np.ndarray, c: np.ndarray, ov: np.ndarray, iy: int, ix: int,
                           r: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = slice(max(iy - r, 0), iy + r + 1), slice(max(ix - r, 0), ix + r + 1)
    m = ov[:, ys, xs]
    return e[:, ys, xs][m], c[:, ys, xs][m]


# --------------------------------------------------------------------------------------------
# the block fusion
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionResult:
    """Output of :func:`fuse_block_detailed`: the two contract arrays and per-pixel diagnostics."""

    sm: np.ndarray            # (t, y, x) float32, NaN where no data
    source_flag: np.ndarray   # (t, y, x) uint8, FLAG_*
    pixel_kind: np.ndarray    # (y, x) uint8, PIXEL_*
    n_overlap: np.ndarray     # (y, x) int32 own overlap days
    era5_borrowed_days: np.ndarray | None = None  # (y, x) filled days whose ERA5 came from the neighbours

    def counts(self) -> dict[str, int]:
        """Pixel counts by matching kind (land only) — for logs and store attributes."""
        k = self.pixel_kind
        return {"land_pixels": int((k != PIXEL_NOT_LAND).sum()), "own_pixels": int((k == PIXEL_OWN).sum()),
                "neighbourhood_pixels": int((k == PIXEL_NEIGHBOURHOOD).sum()),
                "unscaled_pixels": int((k == PIXEL_UNSCALED).sum()),
                "era5_borrowed_pixel_days": int(0 if self.era5_borrowed_days is None else self.era5_borrowed_days.sum())}

    def crop(self, ys: slice, xs: slice) -> FusionResult:
        """The result for a spatial window (the chunk inside its halo)."""
        b = None if self.era5_borrowed_days is None else self.era5_borrowed_days[ys, xs]
        return FusionResult(self.sm[:, ys, xs], self.source_flag[:, ys, xs], self.pixel_kind[ys, xs],
                            self.n_overlap[ys, xs], b)


@dataclass(frozen=True)
class FusionParams:
    """The fitted fusion parameters of a block of pixels (everything a day's fusion needs besides
    that day's CCI and ERA5): fitted once by :func:`fit_params` on the reference period, applied
    to any day by :func:`apply_params`.

    Per pixel (y, x): ``land``, ``kind`` (PIXEL_*), ``n_overlap`` (own overlap days), ``upper``
    (clip: max(sm_max, largest CCI observed in the reference period)) and the matching actually
    used (own pixel or neighbourhood pool): ``n_match`` days; mean–std moments ``mean_era5``,
    ``std_era5``, ``mean_cci``, ``std_cci`` (method ``meanstd``) or CDF nodes ``cdf_x``/``cdf_y``
    (K, y, x) and tail slope ``cdf_slope`` (method ``cdf``; the moment arrays are then NaN).
    ``neighbourhood_cells`` is the ERA5-borrowing radius used when applying.
    """

    method: str
    neighbourhood_cells: int
    land: np.ndarray
    kind: np.ndarray
    n_overlap: np.ndarray
    upper: np.ndarray
    n_match: np.ndarray
    mean_era5: np.ndarray
    std_era5: np.ndarray
    mean_cci: np.ndarray
    std_cci: np.ndarray
    cdf_x: np.ndarray | None = None
    cdf_y: np.ndarray | None = None
    cdf_slope: np.ndarray | None = None

    #: names of the (y, x) arrays and of the (K, y, x) arrays, in the order they are stored
    PIXEL_ARRAYS = ("land", "kind", "n_overlap", "upper", "n_match", "mean_era5", "std_era5", "mean_cci",
                    "std_cci", "cdf_slope")
    NODE_ARRAYS = ("cdf_x", "cdf_y")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.land.shape[0]), int(self.land.shape[1]))

    def arrays(self) -> dict[str, np.ndarray]:
        """{name: array} of every array this method uses (what the parameter store holds)."""
        names = self.PIXEL_ARRAYS + self.NODE_ARRAYS if self.method == "cdf" else self.PIXEL_ARRAYS[:-1]
        return {n: getattr(self, n) for n in names}

    @classmethod
    def from_arrays(cls, method: str, neighbourhood_cells: int, arrays: dict[str, np.ndarray]) -> FusionParams:
        """Inverse of :meth:`arrays` (dtypes restored)."""
        def f64(name: str) -> np.ndarray:
            return np.asarray(arrays[name], dtype=np.float64)

        def opt(name: str) -> np.ndarray | None:
            return f64(name) if name in arrays else None
        return cls(method=method, neighbourhood_cells=int(neighbourhood_cells),
                   land=np.asarray(arrays["land"]).astype(bool), kind=np.asarray(arrays["kind"]).astype(np.uint8),
                   n_overlap=np.asarray(arrays["n_overlap"]).astype(np.int32), upper=f64("upper"),
                   n_match=np.asarray(arrays["n_match"]).astype(np.int64), mean_era5=f64("mean_era5"),
                   std_era5=f64("std_era5"), mean_cci=f64("mean_cci"), std_cci=f64("std_cci"),
                   cdf_x=opt("cdf_x"), cdf_y=opt("cdf_y"), cdf_slope=opt("cdf_slope"))

    def crop(self, ys: slice, xs: slice) -> FusionParams:
        """The parameters of a spatial window."""
        def cut(v: np.ndarray) -> np.ndarray:
            return v[..., ys, xs]

        def cut_opt(v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None else v[..., ys, xs]
        return FusionParams(self.method, self.neighbourhood_cells, cut(self.land), cut(self.kind),
                            cut(self.n_overlap), cut(self.upper), cut(self.n_match), cut(self.mean_era5),
                            cut(self.std_era5), cut(self.mean_cci), cut(self.std_cci), cut_opt(self.cdf_x),
                            cut_opt(self.cdf_y), cut_opt(self.cdf_slope))

    def counts(self) -> dict[str, int]:
        """Pixel counts by matching kind (land only)."""
        k = self.kind
        return {"land_pixels": int((k != PIXEL_NOT_LAND).sum()), "own_pixels": int((k == PIXEL_OWN).sum()),
                "neighbourhood_pixels": int((k == PIXEL_NEIGHBOURHOOD).sum()),
                "unscaled_pixels": int((k == PIXEL_UNSCALED).sum())}


def fit_params(cci: npt.ArrayLike, era5: npt.ArrayLike, land: npt.ArrayLike, method: str = "meanstd",
               min_overlap_days: int = 20, neighbourhood_cells: int = 2, sm_max: float = SM_MAX) -> FusionParams:
    """Fit the fusion parameters of a (t, y, x) block (the reference period) — see the module
    docstring for the matching and the fallbacks. ``land`` (y, x) bool selects the pixels to fill.

    Pixels within ``neighbourhood_cells`` of the block's edge see a truncated neighbourhood: fit a
    chunk with a halo of that width and crop (``FusionParams.crop``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {METHODS}")
    cci = np.asarray(cci, dtype=np.float64)
    era5 = np.asarray(era5, dtype=np.float64)
    land = np.asarray(land, dtype=bool)
    if cci.ndim != 3 or cci.shape != era5.shape or land.shape != cci.shape[1:]:
        raise ValueError(f"shapes must be cci (t,y,x) == era5 (t,y,x) and land (y,x); got "
                         f"{cci.shape}, {era5.shape}, {land.shape}")
    _, ny, nx = cci.shape
    r = int(neighbourhood_cells)
    cci = np.where(land[None], cci, np.nan)
    ov = np.isfinite(cci) & np.isfinite(era5)        # overlap with the pixels' own ERA5 (pools use it)
    era5_px, _ = borrow_era5(era5, land, r)          # coast: the neighbours' ERA5 of that day
    n_own = (np.isfinite(cci) & np.isfinite(era5_px)).sum(axis=0)
    nan2 = np.full((ny, nx), np.nan)
    cdf_x = cdf_y = cdf_slope = None
    if method == "meanstd":
        p = meanstd_params(era5_px, cci)
        own_valid = p.valid
        n_match = p.n.astype(np.int64)
        mom = [p.mean_era5, p.std_era5, p.mean_cci, p.std_cci]
    else:
        pc = cdf_params(era5_px, cci)
        own_valid = pc.valid.reshape(ny, nx)
        n_match = pc.n.reshape(ny, nx).astype(np.int64)
        cdf_x = pc.x.reshape(-1, ny, nx).copy()
        cdf_y = pc.y.reshape(-1, ny, nx).copy()
        cdf_slope = pc.slope.reshape(ny, nx).copy()
        mom = [nan2.copy() for _ in range(4)]
    own_ok = land & (n_own >= min_overlap_days) & own_valid

    kind = np.full((ny, nx), PIXEL_NOT_LAND, dtype=np.uint8)
    kind[own_ok] = PIXEL_OWN
    need = land & ~own_ok
    if need.any():
        if method == "meanstd":
            pn = neighbourhood_meanstd_params(era5, cci, land, r)
            nb_ok = need & (pn.n >= min_overlap_days) & pn.valid
            mom = [np.where(nb_ok, b, a) for a, b in zip(mom, (pn.mean_era5, pn.std_era5, pn.mean_cci, pn.std_cci),
                                                           strict=True)]
            n_match = np.where(nb_ok, pn.n, n_match)
        else:
            assert cdf_x is not None and cdf_y is not None and cdf_slope is not None
            nb_ok = np.zeros_like(need)
            for iy, ix in zip(*np.nonzero(need), strict=True):
                se, sc = _neighbourhood_samples(era5, cci, ov, iy, ix, r)
                if se.size < min_overlap_days:
                    continue
                pp = cdf_params(se[:, None], sc[:, None])
                if not pp.valid[0]:
                    continue
                cdf_x[:, iy, ix], cdf_y[:, iy, ix], cdf_slope[iy, ix] = pp.x[:, 0], pp.y[:, 0], pp.slope[0]
                n_match[iy, ix] = int(pp.n[0])
                nb_ok[iy, ix] = True
        kind[nb_ok] = PIXEL_NEIGHBOURHOOD
        kind[need & ~nb_ok] = PIXEL_UNSCALED

    # bounds: never below 0, never above max(sm_max, the pixel's largest observed CCI value)
    with np.errstate(invalid="ignore"):
        obs_max = np.where(np.isfinite(cci).any(0), np.nanmax(np.where(np.isfinite(cci), cci, -np.inf), axis=0),
                           -np.inf)
    upper = np.maximum(sm_max, obs_max)
    matched = (kind == PIXEL_OWN) | (kind == PIXEL_NEIGHBOURHOOD)
    mom = [np.where(matched, m, np.nan) for m in mom]
    if cdf_x is not None and cdf_y is not None and cdf_slope is not None:
        cdf_x, cdf_y = np.where(matched[None], cdf_x, np.nan), np.where(matched[None], cdf_y, np.nan)
        cdf_slope = np.where(matched, cdf_slope, np.nan)
    return FusionParams(method, r, land, kind, n_own.astype(np.int32), upper.astype(np.float64),
                        np.where(matched, n_match, 0).astype(np.int64), mom[0], mom[1], mom[2], mom[3],
                        cdf_x=cdf_x, cdf_y=cdf_y, cdf_slope=cdf_slope)


def apply_params(params: FusionParams, cci: npt.ArrayLike, era5: npt.ArrayLike) -> FusionResult:
    """Fuse (t, y, x) days with fitted ``params`` of the same (y, x) window: CCI where observed,
    else ERA5 rescaled with the pixel's parameters (own / neighbourhood / unscaled).

    Pure and per day: a day's result depends only on that day's CCI and ERA5 (and, for a coastal
    pixel without ERA5, that day's ERA5 of the land pixels within ``neighbourhood_cells``: apply a
    chunk with that halo and crop) — never on the other days of the call. An observed CCI value is
    never altered by the clip (its upper bound is at least the value itself).
    """
    cci = np.asarray(cci, dtype=np.float64)
    era5 = np.asarray(era5, dtype=np.float64)
    land = params.land
    if cci.ndim != 3 or cci.shape != era5.shape or land.shape != cci.shape[1:]:
        raise ValueError(f"shapes must be cci (t,y,x) == era5 (t,y,x) and params (y,x); got "
                         f"{cci.shape}, {era5.shape}, {land.shape}")
    t, ny, nx = cci.shape
    cci = np.where(land[None], cci, np.nan)
    era5_px, borrowed = borrow_era5(era5, land, params.neighbourhood_cells)
    kind = params.kind
    if params.method == "meanstd":
        filled = apply_meanstd(era5_px, MeanStdParams(params.n_match, params.mean_era5, params.std_era5,
                                                      params.mean_cci, params.std_cci))
    elif params.method == "cdf":
        assert params.cdf_x is not None and params.cdf_y is not None and params.cdf_slope is not None
        k = params.cdf_x.shape[0]
        filled = apply_cdf(era5_px, CdfParams(params.cdf_x.reshape(k, -1), params.cdf_y.reshape(k, -1),
                                              params.cdf_slope.ravel(), params.n_match.ravel(), (ny, nx)))
    else:
        raise ValueError(f"unknown fusion method {params.method!r}; expected one of {METHODS}")
    filled = np.where((kind == PIXEL_UNSCALED)[None], era5_px, filled)
    own_ok = kind == PIXEL_OWN

    obs = np.isfinite(cci)
    upper = np.maximum(params.upper[None], np.where(obs, cci, -np.inf))
    gap = land[None] & ~obs & np.isfinite(filled)
    sm = np.where(obs, cci, np.where(gap, filled, np.nan))
    sm = np.clip(sm, SM_MIN, upper)
    flag = np.zeros((t, ny, nx), dtype=np.uint8)
    flag[obs] = FLAG_CCI
    flag[gap & own_ok[None] & ~borrowed] = FLAG_ERA5_RESCALED
    flag[gap & ~(own_ok[None] & ~borrowed)] = FLAG_FALLBACK
    return FusionResult(sm.astype(np.float32), flag, kind.copy(), params.n_overlap.astype(np.int32),
                        (gap & borrowed).sum(axis=0).astype(np.int32))


def fuse_block_detailed(cci: npt.ArrayLike, era5: npt.ArrayLike, land: npt.ArrayLike, method: str = "meanstd",
                        min_overlap_days: int = 20, neighbourhood_cells: int = 2,
                        sm_max: float = SM_MAX) -> FusionResult:
    """Fuse a (t, y, x) block with parameters fitted on the block itself (reference period = the
    block's days): :func:`apply_params` of :func:`fit_params`.

    ``land`` (y, x) bool selects the pixels to fill; everything else gets NaN and flag 0. A land
    pixel-day without CCI, own ERA5 and neighbours' ERA5 also stays NaN with flag 0.
    """
    params = fit_params(cci, era5, land, method, min_overlap_days, neighbourhood_cells, sm_max)
    return apply_params(params, cci, era5)


def fuse_block(cci: npt.ArrayLike, era5: npt.ArrayLike, land: npt.ArrayLike, method: str = "meanstd",
               min_overlap_days: int = 20, neighbourhood_cells: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(sm float32, source_flag uint8), both (t, y, x): see :func:`fuse_block_detailed`."""
    res = fuse_block_detailed(cci, era5, land, method, min_overlap_days, neighbourhood_cells)
    return res.sm, res.source_flag


def fuse_series(cci: npt.ArrayLike, era5: npt.ArrayLike, method: str = "meanstd",
                min_overlap_days: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """One land pixel's time series (t,): (sm, source_flag); no neighbourhood, so fallback = unscaled."""
    c = np.asarray(cci, dtype=np.float64)[:, None, None]
    e = np.asarray(era5, dtype=np.float64)[:, None, None]
    sm, flag = fuse_block(c, e, np.ones((1, 1), bool), method, min_overlap_days, 0)
    return sm[:, 0, 0], flag[:, 0, 0]


# --------------------------------------------------------------------------------------------
# baselines and the withheld-observation mask (used by the experiment)
# --------------------------------------------------------------------------------------------
def doy_climatology(cci: npt.ArrayLike, doy: npt.ArrayLike, half_window: int = 15) -> np.ndarray:
    """Smoothed per-pixel day-of-year climatology of ``cci`` (t, y, x), evaluated on every day.

    Mean of all finite values whose day of year is within ±``half_window`` days (circular, all
    years pooled). With less than a year of data this is a 31-day running mean of the observations;
    where a window holds no value, the pixel's mean over all its values is used (NaN if none).
    """
    c = np.asarray(cci, dtype=np.float64)
    doy = np.asarray(doy, dtype=np.int64) - 1  # 0..365
    nb = 366
    fin = np.isfinite(c)
    s = np.zeros((nb,) + c.shape[1:])
    k = np.zeros((nb,) + c.shape[1:])
    np.add.at(s, doy, np.where(fin, c, 0.0))
    np.add.at(k, doy, fin.astype(np.float64))
    w = int(half_window)
    ss, kk = np.zeros_like(s), np.zeros_like(k)
    for d in range(-w, w + 1):
        ss += np.roll(s, d, axis=0)
        kk += np.roll(k, d, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        clim = ss / kk
        pixel_mean = s.sum(0) / k.sum(0)
    clim = np.where(kk > 0, clim, pixel_mean[None])
    out: np.ndarray = clim[doy]
    return out


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


def hash_uniform(seed: int, day: npt.ArrayLike, row: npt.ArrayLike, col: npt.ArrayLike) -> np.ndarray:
    """Deterministic U[0, 1) per (seed, day, row, col), broadcast over the index arrays.

    A counter-based hash (splitmix64) instead of a sequential RNG, so that every chunk (and its
    halo) draws the same numbers for the same global pixel-day, whatever the chunking.
    """
    with np.errstate(over="ignore"):
        d = np.asarray(day, dtype=np.int64).astype(np.uint64)
        r = np.asarray(row, dtype=np.int64).astype(np.uint64)
        c = np.asarray(col, dtype=np.int64).astype(np.uint64)
        z = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + np.zeros(1, np.uint64))
        z = _splitmix64(z ^ d)
        z = _splitmix64(z ^ (r << np.uint64(32)) ^ c)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def withheld_mask(cci_observed: npt.ArrayLike, fraction: float, seed: int, day: npt.ArrayLike, row: npt.ArrayLike,
                  col: npt.ArrayLike) -> np.ndarray:
    """Observations to hide: each observed pixel-day independently with probability ``fraction``."""
    u = hash_uniform(seed, np.asarray(day)[:, None, None], np.asarray(row)[None, :, None],
                     np.asarray(col)[None, None, :])
    mask: np.ndarray = np.asarray(cci_observed, dtype=bool) & (u < fraction)
    return mask
