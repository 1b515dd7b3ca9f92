"""Static landscape of a synthetic world: terrain, coast, soils, land cover (pure numpy).

All fields are on the fine grid of the region, row 0 = north. Spatial scales are given in degrees and
converted to pixels with the grid's resolution, so a world looks alike at any ``factor``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import sparse
from scipy.sparse.linalg import spsolve_triangular

# IGBP land cover codes (MODIS MCD12Q1 LC_Type1) used by the world.
LC_EVERGREEN_NEEDLELEAF = 1
LC_DECIDUOUS_BROADLEAF = 4
LC_MIXED_FOREST = 5
LC_GRASSLAND = 10
LC_CROPLAND = 12
LC_URBAN = 13
LC_BARREN = 16
LC_WATER = 17
FOREST_CLASSES = (LC_EVERGREEN_NEEDLELEAF, LC_DECIDUOUS_BROADLEAF, LC_MIXED_FOREST)

#: per class: (ndvi_min, ndvi_max, deciduous phenology?, ET factor, CCI LC code, CCI LC text)
LC_TABLE = {
    LC_EVERGREEN_NEEDLELEAF: (0.72, 0.84, False, 1.15, 70, "Tree cover, needleleaved, evergreen, closed to open (>15%)"),
    LC_DECIDUOUS_BROADLEAF: (0.35, 0.86, True, 1.10, 60, "Tree cover, broadleaved, deciduous, closed to open (>15%)"),
    LC_MIXED_FOREST: (0.55, 0.84, True, 1.10, 90, "Tree cover, mixed leaf type (broadleaved and needleleaved)"),
    LC_GRASSLAND: (0.30, 0.72, True, 0.95, 130, "Grassland"),
    LC_CROPLAND: (0.22, 0.80, True, 1.00, 10, "Cropland, rainfed"),
    LC_URBAN: (0.12, 0.30, False, 0.60, 190, "Urban areas"),
    LC_BARREN: (0.05, 0.15, False, 0.50, 200, "Bare areas"),
    LC_WATER: (-0.08, -0.02, False, 0.0, 210, "Water bodies"),
}


@functools.lru_cache(maxsize=64)
def _gauss_spectrum(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (kx**2 + ky**2)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _interp_index(n_out: int, n_in: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation (left index, weight) from a coarse axis of spacing ``step`` pixels."""
    pos = np.arange(n_out) / step
    i0 = np.clip(np.floor(pos).astype(np.intp), 0, n_in - 2)
    return i0, (pos - i0).astype(np.float32)


def _upsample(c: np.ndarray, shape: tuple[int, int], step: int) -> np.ndarray:
    """Bilinear upsampling by index arithmetic (no BLAS: stays fast on a busy machine)."""
    iy, wy = _interp_index(shape[0], c.shape[0], step)
    ix, wx = _interp_index(shape[1], c.shape[1], step)
    rows = c[iy] * (1.0 - wy)[:, None] + c[iy + 1] * wy[:, None]
    return rows[:, ix] * (1.0 - wx)[None, :] + rows[:, ix + 1] * wx[None, :]


def _fft_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    pad = int(np.ceil(3.0 * sigma_px)) + 4
    full = (shape[0] + pad, shape[1] + pad)
    white = rng.standard_normal(full, dtype=np.float32)
    spec = sfft.rfft2(white) * _gauss_spectrum(full, float(sigma_px))
    return sfft.irfft2(spec, s=full)[: shape[0], : shape[1]]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian random field with correlation length ``sigma_px`` pixels, zero mean, unit std (float32).

    Filtered white noise in Fourier space, padded by 3σ so opposite edges are independent. Wide
    fields are made on a grid coarser by ~σ/3 and interpolated linearly (same look, far cheaper).
    """
    sigma_px = max(float(sigma_px), 0.3)
    step = int(sigma_px // 3)
    if step <= 1:
        f = _fft_noise(rng, shape, sigma_px)
    else:
        cshape = (shape[0] // step + 2, shape[1] // step + 2)
        c = _fft_noise(rng, cshape, sigma_px / step)
        f = _upsample(c, shape, step)
    f = f - f.mean()
    sd = f.std()
    return (f / sd if sd > 0 else f).astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Geometry:
    """Fine-grid geometry of a region: coordinates and pixel sizes in metres."""

    lat: np.ndarray  # (ny,) float64, descending
    lon: np.ndarray  # (nx,) float64
    factor: int
    per_deg: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.lat.size, self.lon.size)

    def px(self, degrees: float) -> float:
        """A distance in degrees as a number of fine pixels."""
        return degrees * self.per_deg

    @property
    def dy_m(self) -> float:
        return 110_574.0 / self.per_deg

    @property
    def dx_m(self) -> np.ndarray:
        return (111_320.0 / self.per_deg) * np.cos(np.deg2rad(self.lat))[:, None]


def terrain(rng: np.random.Generator, geo: Geometry, sea_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(elevation_m float32 with 0 over sea, land bool): plains, a mountain range, valleys, a coast in one corner."""
    ny, nx = geo.shape
    yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
    corner = int(rng.integers(4))
    cy = yy if corner in (0, 1) else 1 - yy  # distance from the chosen corner along each axis
    cx = xx if corner in (0, 2) else 1 - xx
    d = (cx + cy) / 2.0
    d_coast = np.sqrt(max(sea_fraction, 1e-6) / 2.0) if sea_fraction > 0 else -1.0
    wiggle = 0.035 * smooth_noise(rng, geo.shape, geo.px(0.08))
    coast_dist = d - (d_coast + wiggle)  # > 0 on land

    big = smooth_noise(rng, geo.shape, geo.px(0.7))
    med = smooth_noise(rng, geo.shape, geo.px(0.10))
    small = smooth_noise(rng, geo.shape, geo.px(0.025))
    tiny = smooth_noise(rng, geo.shape, geo.px(0.006))
    # mountains away from the coast, strongest in the far corner
    mountain_weight = np.clip(coast_dist * 2.5, 0, 1) * np.clip(0.55 + 0.6 * big + 0.5 * (d - 0.5), 0, None) ** 1.6
    ridges = 1.0 - np.abs(med)  # sharp ridges, broad valleys
    elev = (
        20.0
        + 350.0 * np.clip(coast_dist, 0, None)
        + 1500.0 * mountain_weight * (0.35 + 0.65 * ridges)
        + 60.0 * small * (0.3 + mountain_weight)
        + 8.0 * tiny
    )
    land = coast_dist > 0
    elev = np.where(land, np.maximum(elev, 1.0), 0.0).astype(np.float32)
    return elev, land


def slope_deg(elev: np.ndarray, geo: Geometry) -> np.ndarray:
    """Slope in degrees from central differences (edge pixels use one-sided differences)."""
    dzdy, dzdx = np.gradient(elev.astype(np.float64))
    gy = dzdy / geo.dy_m
    gx = dzdx / geo.dx_m
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)


def surface_normal(elev: np.ndarray, geo: Geometry) -> np.ndarray:
    """(3, ny, nx) float32 unit normal (east, north, up) of the terrain (row 0 = north)."""
    dzdr, dzdc = np.gradient(elev.astype(np.float64))
    gx = dzdc / geo.dx_m  # dz/d(east)
    gy = -dzdr / geo.dy_m  # rows run south: dz/d(north) = -dz/d(row)
    norm = np.sqrt(gx**2 + gy**2 + 1.0)
    return np.stack([-gx / norm, -gy / norm, 1.0 / norm]).astype(np.float32)


def gaussian_smooth(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass of a 2-D field (reflecting edges), float64."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(a, np.float64), max(float(sigma_px), 0.3), mode="reflect")


def flow_accumulation(elev: np.ndarray, land: np.ndarray) -> np.ndarray:
    """D8 upstream pixel count (incl. itself), no pit filling: closed depressions are sinks.

    Solved as one sparse triangular system (pixels sorted by elevation, donors before receivers).
    """
    ny, nx = elev.shape
    z = np.where(land, elev.astype(np.float64), -1e9)  # the sea is the ultimate sink
    zp = np.pad(z, 1, constant_values=np.inf)
    drop = np.zeros((ny, nx))
    rec: np.ndarray = np.arange(ny * nx).reshape(ny, nx)  # (ny, nx), then raveled
    rows = np.arange(ny)[:, None]
    cols = np.arange(nx)[None, :]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = zp[1 + dy: 1 + dy + ny, 1 + dx: 1 + dx + nx]
            dd = (z - nb) / np.hypot(dy, dx)
            better = dd > drop
            drop = np.where(better, dd, drop)
            rec = np.where(better, np.clip(rows + dy, 0, ny - 1) * nx + np.clip(cols + dx, 0, nx - 1), rec)
    rec = rec.ravel()
    n = ny * nx
    donors = np.nonzero(rec != np.arange(n))[0]
    order = np.argsort(-z.ravel(), kind="stable")
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    p = sparse.csr_matrix((np.ones(donors.size), (pos[rec[donors]], pos[donors])), shape=(n, n))
    lower = (sparse.identity(n, format="csr") - p).tocsr()
    acc_sorted = spsolve_triangular(lower, np.ones(n), lower=True)
    acc = np.empty(n)
    acc[order] = acc_sorted
    return acc.reshape(ny, nx)


def topographic_wetness(elev: np.ndarray, land: np.ndarray, geo: Geometry) -> np.ndarray:
    """TWI = ln(a / tan β): a = upslope area per unit contour width (m), β = local slope; NaN at sea."""
    acc = flow_accumulation(elev, land)
    width = np.sqrt(geo.dx_m * geo.dy_m)
    a = acc * width  # (acc * pixel area) / contour width
    tanb = np.tan(np.deg2rad(slope_deg(elev, geo).astype(np.float64)))
    twi = np.log(a / np.maximum(tanb, 1e-3))
    return np.where(land, twi, np.nan).astype(np.float32)


def soils(rng: np.random.Generator, geo: Geometry, elev: np.ndarray, twi: np.ndarray,
          land: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clay, sand) mass fractions 0–1: smooth fields, clayey valleys, sandy/stony mountains."""
    twi_n = _standardise(twi, land)
    hi = np.clip(elev / 2000.0, 0, 1)
    clay = (0.22 + 0.075 * smooth_noise(rng, geo.shape, geo.px(0.12)) + 0.035 * smooth_noise(rng, geo.shape, geo.px(0.02))
            + 0.035 * np.clip(twi_n, -2, 3) - 0.06 * hi)
    sand = (0.42 - 0.7 * (clay - 0.22) + 0.09 * smooth_noise(rng, geo.shape, geo.px(0.15))
            + 0.04 * smooth_noise(rng, geo.shape, geo.px(0.02)) + 0.15 * hi)
    clay = np.clip(clay, 0.05, 0.55)
    sand = np.clip(sand, 0.05, 0.85)
    sand = np.minimum(sand, 0.95 - clay)
    return np.where(land, clay, np.nan).astype(np.float32), np.where(land, sand, np.nan).astype(np.float32)


def hydraulic_limits(clay: np.ndarray, sand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(porosity θs, wilting point θw) in m³/m³ from texture (Cosby-type θs, Rawls-type θ1500)."""
    porosity = 0.489 - 0.126 * sand + 0.05 * clay
    wilting = 0.026 + 0.42 * clay
    return porosity.astype(np.float32), wilting.astype(np.float32)


def land_cover(rng: np.random.Generator, geo: Geometry, elev: np.ndarray, twi: np.ndarray, land: np.ndarray,
               factor: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """IGBP codes (uint8) and the coarse cells (row, col within the region) of the dense-forest block.

    The block is a few whole 0.25° cells of closed evergreen forest: CCI flags those cells as dense
    vegetation on nearly every day, so fusion must use its fallback there.
    """
    ny, nx = elev.shape
    forest_noise = smooth_noise(rng, geo.shape, geo.px(0.05))
    crop_noise = smooth_noise(rng, geo.shape, geo.px(0.03))
    urban_noise = smooth_noise(rng, geo.shape, geo.px(0.012))
    twi_n = _standardise(twi, land)
    lc = np.full((ny, nx), LC_CROPLAND, np.uint8)
    lc[crop_noise > 0.55] = LC_GRASSLAND
    lc[(forest_noise > 0.9) & (twi_n < 1.0)] = LC_DECIDUOUS_BROADLEAF
    mid = elev > 600
    lc[mid & (forest_noise > -0.3)] = LC_MIXED_FOREST
    lc[mid & (forest_noise <= -0.3)] = LC_GRASSLAND
    lc[(elev > 1300) & (forest_noise > 0.2)] = LC_EVERGREEN_NEEDLELEAF
    lc[(elev > 1900) & (forest_noise <= 0.2)] = LC_GRASSLAND
    lc[elev > 2300] = LC_BARREN
    lc[(urban_noise > 2.3) & (elev < 500)] = LC_URBAN

    # the dense-forest block: whole land cells, chosen among the higher-standing cells
    nry, ncx = ny // factor, nx // factor
    cell_land = land.reshape(nry, factor, ncx, factor).mean(axis=(1, 3))
    cell_elev = elev.reshape(nry, factor, ncx, factor).mean(axis=(1, 3))
    k = max(1, int(round(0.03 * nry * ncx)))
    bh = max(1, int(round(np.sqrt(k))))
    bw = max(1, int(np.ceil(k / bh)))
    bh, bw = min(bh, nry), min(bw, ncx)
    best, best_score = None, -np.inf
    jitter = rng.uniform(0, 50, size=(nry, ncx))
    for r in range(nry - bh + 1):
        for c in range(ncx - bw + 1):
            if cell_land[r:r + bh, c:c + bw].min() < 1.0:
                continue
            e = cell_elev[r:r + bh, c:c + bw]
            score = -abs(float(e.mean()) - 900.0) + float(jitter[r, c])
            if score > best_score:
                best, best_score = (r, c), score
    block: list[tuple[int, int]] = []
    if best is not None:
        r0, c0 = best
        lc[r0 * factor:(r0 + bh) * factor, c0 * factor:(c0 + bw) * factor] = LC_EVERGREEN_NEEDLELEAF
        block = [(r, c) for r in range(r0, r0 + bh) for c in range(c0, c0 + bw)]
    lc[~land] = LC_WATER
    return lc, block


#: classes a classifier confuses (MODIS MCD12Q1-like confusion between neighbours in spectral space)
LC_CONFUSION = {
    LC_CROPLAND: (LC_GRASSLAND, LC_DECIDUOUS_BROADLEAF),
    LC_GRASSLAND: (LC_CROPLAND, LC_MIXED_FOREST),
    LC_DECIDUOUS_BROADLEAF: (LC_MIXED_FOREST, LC_CROPLAND),
    LC_MIXED_FOREST: (LC_DECIDUOUS_BROADLEAF, LC_EVERGREEN_NEEDLELEAF),
    LC_EVERGREEN_NEEDLELEAF: (LC_MIXED_FOREST, LC_GRASSLAND),
    LC_URBAN: (LC_CROPLAND, LC_GRASSLAND),
    LC_BARREN: (LC_GRASSLAND, LC_URBAN),
}


def misclassify(rng: np.random.Generator, geo: Geometry, lc: np.ndarray, land: np.ndarray, fraction: float) -> np.ndarray:
    """A classified land-cover map: patches (~2–3 km) covering ``fraction`` of land get a confused class."""
    out = lc.copy()
    if fraction <= 0 or not land.any():
        return out
    score = smooth_noise(rng, geo.shape, geo.px(0.012)) + 0.5 * rng.standard_normal(geo.shape)
    thr = np.quantile(score[land], 1.0 - fraction)
    wrong = land & (score > thr)
    pick = rng.random(geo.shape) < 0.7
    for code, (first, second) in LC_CONFUSION.items():
        sel = wrong & (lc == code)
        out[sel & pick] = first
        out[sel & ~pick] = second
    return out


def _standardise(x: np.ndarray, land: np.ndarray) -> np.ndarray:
    v = x[land & np.isfinite(x)]
    if v.size == 0:
        return np.zeros_like(x)
    out = (x - np.median(v)) / max(float(v.std()), 1e-6)
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


def block_mean(a: np.ndarray, factor: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean over ``factor × factor`` blocks of the last two axes, ignoring NaN (NaN where a block is empty).

    ``weights`` (last two axes' shape) weight each pixel, e.g. a land mask.
    """
    *lead, ny, nx = a.shape
    r = a.reshape(*lead, ny // factor, factor, nx // factor, factor)
    valid = np.isfinite(r)
    w = valid.astype(np.float64)
    if weights is not None:
        w = w * weights.reshape(ny // factor, factor, nx // factor, factor)
    num = (np.where(valid, r, 0.0) * w).sum(axis=(-3, -1))
    den = w.sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
