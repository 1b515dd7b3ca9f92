"""Agreement metrics (pytesmo definitions): pure formulas, and mergeable moments for chunk-wise tasks.

Definitions (``docs/fusion.md``, SCIENCE.md "Validation"), for paired samples x (estimate) and
y (reference), NaN pairs dropped:

* ``bias``   = mean(x − y)
* ``rmse``   = sqrt(mean((x − y)²))                                  (pytesmo ``rmsd``)
* ``ubrmse`` = sqrt(mean(((x − x̄) − (y − ȳ))²)), population (ddof = 0) = sqrt(rmse² − bias²)
  (pytesmo ``ubrmsd``)
* ``r``      = Pearson correlation

:class:`Moments` holds mergeable sufficient statistics of the same metrics (Chan et al.'s pairwise
update of means and co-moments), so chunk-wise tasks return a few numbers and the driver merges
them without ever holding all samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

METRIC_KEYS = ("n", "r", "ubrmse", "bias", "rmse")


def _pairs(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same number of values ({x.size} != {y.size})")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def bias(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """mean(x − y) over pairs where both are finite (NaN if none)."""
    x, y = _pairs(x, y)
    return float(np.mean(x - y)) if x.size else math.nan


def rmse(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """sqrt(mean((x − y)²)) over finite pairs."""
    x, y = _pairs(x, y)
    return float(np.sqrt(np.mean((x - y) ** 2))) if x.size else math.nan


def ubrmse(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Unbiased RMSE, population form (ddof = 0): sqrt(mean(((x − x̄) − (y − ȳ))²))."""
    x, y = _pairs(x, y)
    if not x.size:
        return math.nan
    d = (x - x.mean()) - (y - y.mean())
    return float(np.sqrt(np.mean(d * d)))


def _constant(m2: float, n: int, mean: float) -> bool:
    """True when a sample's variance is only rounding noise (a constant series)."""
    return m2 / max(n, 1) <= (1e-12 * max(1.0, abs(mean))) ** 2


def pearson_r(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation over finite pairs; NaN with < 2 pairs or a constant series."""
    x, y = _pairs(x, y)
    if x.size < 2:
        return math.nan
    mx, my = x.mean(), y.mean()
    xa, ya = x - mx, y - my
    sxx, syy = float(np.dot(xa, xa)), float(np.dot(ya, ya))
    if _constant(sxx, x.size, mx) or _constant(syy, y.size, my):
        return math.nan
    return float(np.dot(xa, ya) / math.sqrt(sxx * syy))


def metric_dict(x: npt.ArrayLike, y: npt.ArrayLike) -> dict[str, float | int]:
    """``{n, r, ubrmse, bias, rmse}`` of estimate ``x`` against reference ``y`` (NaN pairs ignored)."""
    xv, yv = _pairs(x, y)
    return {"n": int(xv.size), "r": pearson_r(xv, yv), "ubrmse": ubrmse(xv, yv),
            "bias": bias(xv, yv), "rmse": rmse(xv, yv)}


@dataclass(frozen=True)
class Moments:
    """Mergeable sufficient statistics of paired samples: n, means, centred (co-)moments."""

    n: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    m2_x: float = 0.0   # sum of (x - mean_x)²
    m2_y: float = 0.0
    c_xy: float = 0.0   # sum of (x - mean_x)(y - mean_y)

    @classmethod
    def from_arrays(cls, x: npt.ArrayLike, y: npt.ArrayLike) -> Moments:
        """Two-pass moments of the finite pairs of x and y."""
        x, y = _pairs(x, y)
        if not x.size:
            return cls()
        mx, my = float(x.mean()), float(y.mean())
        xa, ya = x - mx, y - my
        return cls(int(x.size), mx, my, float(np.dot(xa, xa)), float(np.dot(ya, ya)), float(np.dot(xa, ya)))

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of both samples (Chan, Golub & LeVeque pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        dx, dy = other.mean_x - self.mean_x, other.mean_y - self.mean_y
        w = self.n * other.n / n
        return Moments(n, self.mean_x + dx * other.n / n, self.mean_y + dy * other.n / n,
                       self.m2_x + other.m2_x + dx * dx * w, self.m2_y + other.m2_y + dy * dy * w,
                       self.c_xy + other.c_xy + dx * dy * w)

    def __add__(self, other: Moments) -> Moments:
        return self.merge(other)

    def to_dict(self) -> dict[str, float | int]:
        """The same ``{n, r, ubrmse, bias, rmse}`` as :func:`metric_dict` on the pooled samples."""
        if self.n == 0:
            return {"n": 0, "r": math.nan, "ubrmse": math.nan, "bias": math.nan, "rmse": math.nan}
        b = self.mean_x - self.mean_y
        var_d = max((self.m2_x + self.m2_y - 2.0 * self.c_xy) / self.n, 0.0)
        flat = _constant(self.m2_x, self.n, self.mean_x) or _constant(self.m2_y, self.n, self.mean_y)
        r = self.c_xy / math.sqrt(self.m2_x * self.m2_y) if (self.n >= 2 and not flat) else math.nan
        return {"n": self.n, "r": r, "ubrmse": math.sqrt(var_d), "bias": b, "rmse": math.sqrt(var_d + b * b)}

    def as_tuple(self) -> tuple[int, float, float, float, float, float]:
        return (self.n, self.mean_x, self.mean_y, self.m2_x, self.m2_y, self.c_xy)


# --------------------------------------------------------------------------------------------
# a 1 km block against the 1 km truth (synthetic world)
# --------------------------------------------------------------------------------------------
def cell_anomaly(a: np.ndarray, factor: int) -> np.ndarray:
    """``a`` (t, y, x) minus the mean of its 25 km cell (``factor²`` pixels; per day, NaN ignored)."""
    nt, ny, nx = a.shape
    r = a.reshape(nt, ny // factor, factor, nx // factor, factor)
    cnt = np.isfinite(r).sum(axis=(2, 4), keepdims=True)
    s = np.nansum(r, axis=(2, 4), keepdims=True, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / cnt
    anomaly: np.ndarray = (r - mean).reshape(nt, ny, nx)
    return anomaly


def truth_shard_moments(product: np.ndarray, truth: np.ndarray, baseline: np.ndarray, factor: int
                        ) -> dict[str, tuple[int, float, float, float, float, float]]:
    """Mergeable moments of one block (t, y, x) for product/baseline vs truth and the spatial
    anomalies (value minus its 25 km cell mean) of product vs truth. Pixels where any of the three
    is missing are left out of all statistics."""
    ok = np.isfinite(product) & np.isfinite(truth) & np.isfinite(baseline)
    p = np.where(ok, product, np.nan)
    t = np.where(ok, truth, np.nan)
    b = np.where(ok, baseline, np.nan)
    pa, ta = cell_anomaly(p, factor), cell_anomaly(t, factor)
    zero = np.where(ok, 0.0, np.nan)
    return {"downscaled": Moments.from_arrays(p, t).as_tuple(),
            "baseline_25km": Moments.from_arrays(b, t).as_tuple(),
            "anomaly_downscaled": Moments.from_arrays(pa, ta).as_tuple(),
            "anomaly_baseline_25km": Moments.from_arrays(zero, ta).as_tuple()}
