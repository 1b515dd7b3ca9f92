"""The 0.25° ESA-CCI grid and the nested fine (≈1 km) grid, with exact integer arithmetic.

All positions are integer indices; coordinates are computed from integers in one step
(``edge ± (index + 0.5) / cells_per_degree``) so there is no accumulated float drift even at
43,200 columns. A fine pixel ``(r, c)`` lies in coarse cell ``(r // factor, c // factor)``.

Row 0 is the northernmost row (latitude descends), column 0 the westernmost (longitude from -180).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from affine import Affine

COARSE_RES = Fraction(1, 4)  # degrees
COARSE_PER_DEG = 4
COARSE_NLAT = 720
COARSE_NLON = 1440
DEFAULT_FACTOR = 30  # 0.25° / 30 = 1/120° ≈ 0.93 km at the equator


def coarse_lat(rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Latitude of coarse cell centres for integer row indices (0 → 89.875)."""
    r = np.asarray(rows, dtype=np.int64)
    return (180 * COARSE_PER_DEG - 2 * r - 1) / (2.0 * COARSE_PER_DEG)


def coarse_lon(cols: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Longitude of coarse cell centres for integer column indices (0 → -179.875)."""
    c = np.asarray(cols, dtype=np.int64)
    return (2 * c + 1 - 360 * COARSE_PER_DEG) / (2.0 * COARSE_PER_DEG)


def coarse_row_of_lat(lat: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Coarse row containing latitude ``lat`` (cell edges belong to the southern/eastern cell)."""
    la = np.asarray(lat, dtype=np.float64)
    return np.clip(np.floor((90.0 - la) * COARSE_PER_DEG).astype(np.int64), 0, COARSE_NLAT - 1)


def coarse_col_of_lon(lon: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Coarse column containing longitude ``lon`` (in -180..180)."""
    lo = np.asarray(lon, dtype=np.float64)
    return np.clip(np.floor((lo + 180.0) * COARSE_PER_DEG).astype(np.int64), 0, COARSE_NLON - 1)


@dataclass(frozen=True)
class BBox:
    """Geographic box in degrees (west, south, east, north), -180..180 / -90..90."""

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        if not (-180.0 <= self.west < self.east <= 180.0):
            raise ValueError(f"bbox needs -180 <= west < east <= 180, got west={self.west}, east={self.east}")
        if not (-90.0 <= self.south < self.north <= 90.0):
            raise ValueError(f"bbox needs -90 <= south < north <= 90, got south={self.south}, north={self.north}")

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)


@dataclass(frozen=True)
class Region:
    """A rectangle of whole coarse cells: rows [row0, row1), cols [col0, col1) of the global CCI grid."""

    row0: int
    row1: int
    col0: int
    col1: int

    def __post_init__(self) -> None:
        if not (0 <= self.row0 < self.row1 <= COARSE_NLAT and 0 <= self.col0 < self.col1 <= COARSE_NLON):
            raise ValueError(f"invalid coarse region {self}")

    @property
    def n_rows(self) -> int:
        return self.row1 - self.row0

    @property
    def n_cols(self) -> int:
        return self.col1 - self.col0

    @property
    def bbox(self) -> BBox:
        """The exact outer edges of the region (multiples of 0.25°)."""
        return BBox(
            west=-180.0 + self.col0 / COARSE_PER_DEG,
            south=90.0 - self.row1 / COARSE_PER_DEG,
            east=-180.0 + self.col1 / COARSE_PER_DEG,
            north=90.0 - self.row0 / COARSE_PER_DEG,
        )


GLOBAL_REGION = Region(0, COARSE_NLAT, 0, COARSE_NLON)


def snap_bbox(bbox: BBox | tuple[float, float, float, float]) -> Region:
    """Smallest region of whole 0.25° cells that covers ``bbox`` (edges snapped outward)."""
    if not isinstance(bbox, BBox):
        bbox = BBox(*bbox)
    # Exact rational arithmetic: 10.25 snaps to itself, 10.2500000001 snaps outward.
    w, s, e, n = (Fraction(v) for v in bbox.as_tuple())  # floats are exact rationals
    col0 = math.floor((w + 180) * COARSE_PER_DEG)
    col1 = math.ceil((e + 180) * COARSE_PER_DEG)
    row0 = math.floor((90 - n) * COARSE_PER_DEG)
    row1 = math.ceil((90 - s) * COARSE_PER_DEG)
    return Region(max(row0, 0), min(row1, COARSE_NLAT), max(col0, 0), min(col1, COARSE_NLON))


@dataclass(frozen=True)
class FineGrid:
    """The nested fine grid: each coarse cell split into ``factor × factor`` pixels."""

    factor: int = DEFAULT_FACTOR

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, int) and 1 <= self.factor <= 240):
            raise ValueError(f"grid factor must be an integer in 1..240, got {self.factor!r}")

    @property
    def per_deg(self) -> int:
        return COARSE_PER_DEG * self.factor

    @property
    def nlat(self) -> int:
        return COARSE_NLAT * self.factor

    @property
    def nlon(self) -> int:
        return COARSE_NLON * self.factor

    @property
    def res_deg(self) -> float:
        return 1.0 / self.per_deg

    def lat(self, rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r = np.asarray(rows, dtype=np.int64)
        # one integer numerator, one division: correctly rounded, no cancellation or drift
        return (180 * self.per_deg - 2 * r - 1) / (2.0 * self.per_deg)

    def lon(self, cols: npt.ArrayLike) -> npt.NDArray[np.float64]:
        c = np.asarray(cols, dtype=np.int64)
        return (2 * c + 1 - 360 * self.per_deg) / (2.0 * self.per_deg)

    def row_of_lat(self, lat: npt.ArrayLike) -> npt.NDArray[np.int64]:
        la = np.asarray(lat, dtype=np.float64)
        return np.clip(np.floor((90.0 - la) * self.per_deg).astype(np.int64), 0, self.nlat - 1)

    def col_of_lon(self, lon: npt.ArrayLike) -> npt.NDArray[np.int64]:
        lo = np.asarray(lon, dtype=np.float64)
        return np.clip(np.floor((lo + 180.0) * self.per_deg).astype(np.int64), 0, self.nlon - 1)

    def fine_rows(self, region: Region) -> npt.NDArray[np.int64]:
        return np.arange(region.row0 * self.factor, region.row1 * self.factor, dtype=np.int64)

    def fine_cols(self, region: Region) -> npt.NDArray[np.int64]:
        return np.arange(region.col0 * self.factor, region.col1 * self.factor, dtype=np.int64)

    def coarse_of_fine(self, fine_index: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Coarse row (or column) index containing a fine row (or column) index."""
        return np.asarray(fine_index, dtype=np.int64) // self.factor

    def transform(self, region: Region) -> Affine:
        """Affine transform (rasterio/GDAL order) of the fine pixels of ``region``."""
        from affine import Affine

        b = region.bbox
        return Affine(self.res_deg, 0.0, b.west, 0.0, -self.res_deg, b.north)


def region_coords(region: Region, factor: int | None = None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(lat, lon) centre coordinates of a region: coarse if ``factor`` is None, else fine."""
    if factor is None:
        return coarse_lat(np.arange(region.row0, region.row1)), coarse_lon(np.arange(region.col0, region.col1))
    g = FineGrid(factor)
    return g.lat(g.fine_rows(region)), g.lon(g.fine_cols(region))


@dataclass(frozen=True)
class Tile:
    """A block of whole coarse cells inside a region; its fine pixels form one master shard (spatially).

    ``i``/``j`` index the tile within the region's tiling; row/col bounds are global coarse indices.
    """

    i: int
    j: int
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def region(self) -> Region:
        return Region(self.row0, self.row1, self.col0, self.col1)

    def coarse_slices(self, region: Region) -> tuple[slice, slice]:
        """Positions of this tile inside arrays that cover ``region`` at coarse resolution."""
        return (slice(self.row0 - region.row0, self.row1 - region.row0),
                slice(self.col0 - region.col0, self.col1 - region.col0))

    def fine_slices(self, region: Region, factor: int) -> tuple[slice, slice]:
        """Positions of this tile inside arrays that cover ``region`` at fine resolution."""
        r, c = self.coarse_slices(region)
        return (slice(r.start * factor, r.stop * factor), slice(c.start * factor, c.stop * factor))


def tiles(region: Region, tile_cells: int) -> list[Tile]:
    """Split ``region`` into tiles of ``tile_cells × tile_cells`` coarse cells, row-major.

    Tiles start at the region's north-west corner, so tile ``(i, j)`` is exactly spatial shard
    ``(i, j)`` of a store that covers the region; the last row/column of tiles may be smaller.
    """
    if tile_cells < 1:
        raise ValueError("tile_cells must be >= 1")
    out: list[Tile] = []
    for i, r in enumerate(range(region.row0, region.row1, tile_cells)):
        for j, c in enumerate(range(region.col0, region.col1, tile_cells)):
            out.append(Tile(i, j, r, min(r + tile_cells, region.row1), c, min(c + tile_cells, region.col1)))
    return out
