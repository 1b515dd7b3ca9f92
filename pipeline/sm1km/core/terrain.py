"""Terrain and land-cover predictors from public rasters: slope, TWI (own D8), class mapping.

Pure numpy, on a DEM on a **geographic** grid (EPSG:4326, e.g. Copernicus GLO-90 or SRTM tiles):
cell sizes in metres come from the latitude of each row (:func:`metres_per_degree`), so slope and
catchment areas are right at any latitude. Everything is computed on the DEM's native resolution;
the stage (:mod:`sm1km.stages.predictors`) then averages onto the 1 km grid.

- :func:`slope_deg`: central differences (``np.gradient``) of the elevation over the row's metric
  spacing, ``atan(|∇z|)`` in degrees.
- :func:`d8_receivers` / :func:`flow_accumulation`: D8 (O'Callaghan & Mark 1984): every cell drains
  to the one of its 8 neighbours with the steepest downward drop per metre; cells without a lower
  neighbour (pits, flats, the DEM's edge towards the outside) are outlets. The accumulation (cells
  draining through a cell, itself included) is computed by a topological sweep (Kahn's algorithm,
  vectorised per front: each pass moves every cell whose donors are all done), O(cells) work plus one
  numpy pass per cell of the longest flow path. Pits and flats (integer-metre DEMs are full of
  them) are resolved first by :func:`fill_depressions` (Priority-Flood + ε), so flow crosses them
  towards their spill point instead of stopping: on the pysheds example DEM (359 x 367 cells of
  int16 metres) the largest catchment is 284 cells without the fill and 67 229 (51 %) with it;
  the fill took 0.4 s there, the D8 accumulation 0.09 s. One 1° x 1° GLO-90-sized tile (1200 x 1200
  cells, a fractal DEM rounded to whole metres): slope 0.08 s, fill 7.4 s (pure Python heap, ~5 µs
  per cell), D8 receivers 0.7 s, accumulation 2.1 s (measured on 2 shared cores): a 4° x 4° region
  takes ~2-3 min, the fill dominating.
  Written here because the maintained packages that do this (pysheds, richdem) are GPL-3 and this
  project is MIT.
- :func:`twi`: ``ln(a / tan β)`` (Beven & Kirkby 1979) with ``a`` the specific catchment area
  (accumulated area / contour width, the width being the cell's mean side) in metres and β the local
  slope, floored at :data:`MIN_TAN_SLOPE` so flats give a large finite value, not infinity.
- :func:`map_land_cover`: ESA WorldCover (10..100) or MCD12Q1 LC_Type1 IGBP (1..17) to the IGBP
  codes the model and the synthetic world use (:mod:`sm1km.synth.fields`: 17 = water).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: floor of tan(slope) in the TWI: flats (and the sea) get ln(a / 0.001) instead of infinity
MIN_TAN_SLOPE = 1e-3
#: rise per cell (m) that Priority-Flood+ε gives filled pits and flats, so that they drain
FILL_EPSILON_M = 1e-4

#: ESA WorldCover v100/v200 class -> IGBP (MCD12Q1 LC_Type1). Tree cover has no leaf type in
#: WorldCover: mixed forest (5). Mangroves: evergreen broadleaf (2). Moss/lichen: grassland (10).
WORLDCOVER_TO_IGBP: dict[int, int] = {
    10: 5,    # tree cover -> mixed forests
    20: 7,    # shrubland -> open shrublands
    30: 10,   # grassland -> grasslands
    40: 12,   # cropland -> croplands
    50: 13,   # built-up -> urban and built-up
    60: 16,   # bare / sparse vegetation -> barren
    70: 15,   # snow and ice -> permanent snow and ice
    80: 17,   # permanent water bodies -> water
    90: 11,   # herbaceous wetland -> permanent wetlands
    95: 2,    # mangroves -> evergreen broadleaf forests
    100: 10,  # moss and lichen -> grasslands
}
#: MCD12Q1 LC_Type1 is IGBP already: 1..17 kept, everything else (255 fill) no data
IGBP_CODES = tuple(range(1, 18))
SCHEMES = ("worldcover", "mcd12q1")
#: no data in a mapped land-cover array
LC_NODATA = 255


def metres_per_degree(lat: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(metres per degree of latitude, metres per degree of longitude) at ``lat`` (WGS 84 series)."""
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))
    m_lat = 111132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi) - 0.0023 * np.cos(6 * phi)
    m_lon = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    return m_lat, np.maximum(m_lon, 1e-6)


def _spacing(lat: npt.ArrayLike, res_lat: float, res_lon: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) in metres per row: cell height and width of a geographic grid at latitude ``lat``."""
    m_lat, m_lon = metres_per_degree(lat)
    return m_lat * abs(res_lat), m_lon * abs(res_lon)


def slope_deg(dem: np.ndarray, lat: npt.ArrayLike, res_lat: float, res_lon: float) -> np.ndarray:
    """Slope in degrees of ``dem`` (rows north->south, latitudes ``lat`` per row, cell sizes in degrees).

    Central differences inside, one-sided at the edges; NaN where the DEM is NaN (and next to it,
    where a difference touches a NaN).
    """
    z = np.asarray(dem, dtype=np.float64)
    dy, dx = _spacing(lat, res_lat, res_lon)
    if z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError("slope needs a DEM of at least 2 x 2 cells")
    gy = np.gradient(z, axis=0) / dy[:, None]
    gx = np.gradient(z, axis=1) / dx[:, None]
    out: np.ndarray = np.rad2deg(np.arctan(np.hypot(gx, gy)))
    return out


_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def d8_receivers(dem: np.ndarray, lat: npt.ArrayLike, res_lat: float, res_lon: float) -> np.ndarray:
    """Flat index of the D8 receiver of every cell, -1 for outlets (no strictly lower neighbour).

    The drop per metre to each of the 8 neighbours (diagonals: the cell diagonal at the mean of the
    two rows' widths); ties go to the first in :data:`_OFFSETS` order; NaN cells and cells outside
    the array are never receivers, NaN cells have none.
    """
    z = np.asarray(dem, dtype=np.float64)
    ny, nx = z.shape
    dy, dx = _spacing(lat, res_lat, res_lon)
    pad = np.pad(z, 1, constant_values=np.nan)
    dxp = np.pad(dx, 1, mode="edge")
    best = np.zeros((ny, nx))
    recv = np.full((ny, nx), -1, dtype=np.int64)
    rows, cols = np.indices((ny, nx))
    for dr, dc in _OFFSETS:
        zn = pad[1 + dr:1 + dr + ny, 1 + dc:1 + dc + nx]
        if dc == 0:
            dist = np.broadcast_to(dy[:, None], (ny, nx))
        elif dr == 0:
            dist = np.broadcast_to(dx[:, None], (ny, nx))
        else:
            w = (dx + dxp[1 + dr:1 + dr + ny]) / 2
            dist = np.broadcast_to(np.hypot(w, dy)[:, None], (ny, nx))
        with np.errstate(invalid="ignore"):
            drop = (z - zn) / dist
            better = drop > best  # NaN compares False: NaN cells and neighbours never win
        best = np.where(better, drop, best)
        recv = np.where(better, (rows + dr) * nx + (cols + dc), recv)
    return recv


def fill_depressions(dem: np.ndarray, epsilon: float = FILL_EPSILON_M) -> np.ndarray:
    """The DEM with every pit and flat raised so that each cell drains to the edge (or to a NaN).

    Priority-Flood + ε (Barnes, Lehman & Mulla 2014, Algorithm 3): cells are taken from the edges
    (and from next to NaN cells) inwards in order of elevation; a neighbour not higher than the cell
    it is reached from is raised to that cell plus ``epsilon``, so flats and filled pits slope
    (by ε per cell) towards their spill point and D8 has a strictly lower neighbour everywhere.
    Cost: one heap operation per cell in Python (3-5 µs each measured: ~2 min per 23 M cells).
    """
    import heapq
    from collections import deque

    z = np.asarray(dem, dtype=np.float64)
    ny, nx = z.shape
    w = nx + 2
    pad = np.pad(z, 1, constant_values=np.nan).reshape(-1)
    out = pad.copy()
    closed = np.isnan(pad)
    offs = [dr * w + dc for dr, dc in _OFFSETS]
    # seeds: valid cells with a NaN (or outside) neighbour
    nanp = np.isnan(pad).reshape(ny + 2, w)
    edge = np.zeros((ny + 2, w), dtype=bool)
    for dr, dc in _OFFSETS:
        edge[1:-1, 1:-1] |= nanp[1 + dr:ny + 1 + dr, 1 + dc:nx + 1 + dc]
    edge &= ~nanp
    seeds = np.flatnonzero(edge.reshape(-1))
    heap = [(float(out[i]), int(i)) for i in seeds]
    heapq.heapify(heap)
    closed[seeds] = True
    pit: deque[int] = deque()
    outl = out.tolist()          # python floats: much faster element access than numpy scalars
    cl = closed.tolist()
    while heap or pit:
        if pit:
            c = pit.popleft()
        else:
            _, c = heapq.heappop(heap)
        zc = outl[c]
        for o in offs:
            n = c + o
            if cl[n]:
                continue
            cl[n] = True
            zn = outl[n]
            if zn <= zc:
                outl[n] = np.nextafter(zc, np.inf) if epsilon == 0 else zc + epsilon
                pit.append(n)
            else:
                heapq.heappush(heap, (zn, n))
    return np.asarray(outl).reshape(ny + 2, w)[1:-1, 1:-1]


def flow_accumulation(receivers: np.ndarray) -> np.ndarray:
    """Number of cells draining through each cell (itself included) for a receiver array.

    Kahn's topological sweep: a cell is passed on once all its donors are counted. A receiver
    array with a cycle (impossible from :func:`d8_receivers`: the drop is strictly positive) raises.
    """
    shape = receivers.shape
    recv = receivers.reshape(-1)
    n = recv.size
    acc = np.ones(n, dtype=np.float64)
    has = recv >= 0
    indeg = np.bincount(recv[has], minlength=n)
    front = np.flatnonzero(indeg == 0)
    done = 0
    while front.size:
        done += front.size
        r = recv[front]
        keep = r >= 0
        src, dst = front[keep], r[keep]
        np.add.at(acc, dst, acc[src])
        np.subtract.at(indeg, dst, 1)
        cand = np.unique(dst)
        front = cand[indeg[cand] == 0]
    if done != n:
        raise ValueError("the receiver array has a cycle")
    return acc.reshape(shape)


def twi(dem: np.ndarray, lat: npt.ArrayLike, res_lat: float, res_lon: float,
        min_tan_slope: float = MIN_TAN_SLOPE, fill: bool = True) -> np.ndarray:
    """Topographic wetness index ``ln(a / tan β)`` of ``dem`` (D8 accumulation, see the module doc).

    The flow is routed on the depression-filled DEM (:func:`fill_depressions`, unless ``fill`` is
    False), the slope β is the original DEM's.

    ``a`` = accumulated area (m²) / contour width (the cell's mean side, m); β from
    :func:`slope_deg`, ``tan β`` floored at ``min_tan_slope``. NaN where the DEM is NaN.
    """
    z = np.asarray(dem, dtype=np.float64)
    dy, dx = _spacing(lat, res_lat, res_lon)
    zf = fill_depressions(z) if fill else z
    acc = flow_accumulation(d8_receivers(zf, lat, res_lat, res_lon))
    area = (dy * dx)[:, None]
    width = ((dy + dx) / 2)[:, None]
    a = acc * area / width
    tanb = np.tan(np.deg2rad(slope_deg(z, lat, res_lat, res_lon)))
    tanb = np.where(np.isnan(tanb), min_tan_slope, np.maximum(tanb, min_tan_slope))
    out = np.log(a / tanb)
    return np.where(np.isnan(z), np.nan, out)


def map_land_cover(classes: np.ndarray, scheme: str) -> np.ndarray:
    """Land-cover classes of ``scheme`` (``worldcover`` | ``mcd12q1``) as IGBP codes (uint8,
    :data:`LC_NODATA` where the class is not one of the scheme's, e.g. fill values)."""
    if scheme not in SCHEMES:
        raise ValueError(f"land-cover scheme must be one of {SCHEMES}, got {scheme!r}")
    table = np.full(256, LC_NODATA, dtype=np.uint8)
    if scheme == "worldcover":
        for k, v in WORLDCOVER_TO_IGBP.items():
            table[k] = v
    else:
        table[list(IGBP_CODES)] = IGBP_CODES
    c = np.asarray(classes)
    valid = np.isfinite(c) & (c >= 0) & (c <= 255) if c.dtype.kind == "f" else (c >= 0) & (c <= 255)
    idx = np.where(valid, c, 0).astype(np.int64)
    return np.where(valid, table[idx], LC_NODATA).astype(np.uint8)


def unknown_classes(classes: np.ndarray, scheme: str, nodata: float | None = None) -> list[int]:
    """Class values present in ``classes`` that ``scheme`` does not define (nodata and, for WorldCover,
    0 excepted): a file of the other scheme, or not a land-cover raster at all."""
    c = np.asarray(classes)
    c = c[np.isfinite(c)] if c.dtype.kind == "f" else c.reshape(-1)
    vals = {int(v) for v in np.unique(c)}
    known = set(WORLDCOVER_TO_IGBP) | {0} if scheme == "worldcover" else set(IGBP_CODES) | {255}
    if nodata is not None and np.isfinite(nodata):
        known.add(int(nodata))
    return sorted(vals - known)
