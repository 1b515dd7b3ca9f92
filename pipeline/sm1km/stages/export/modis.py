"""The published product's layout: MODIS sinusoidal 1 km tiles, one HDF5 per tile and year.

File ``SM.1km.Daily.<YYYY><NNNN>.hXXvYY.v001.h5`` where ``<NNNN>`` is the **number of days in the
year** (``0365``/``0366``): the authors' MATLAB reader builds the name as
``['SM.1km.Daily.' num2str(year,'%04d') num2str(lenyy,'%04d') '.' hv '.v001.h5']`` with
``lenyy = 365`` "number of days in the year", and reads day ``idoy`` with
``h5read(fn, '/SM', [1 1 idoy], [1200 1200 1])`` into ``data_global(rows, cols)``.

Hence the dataset ``/SM``: int16, fill −1, scale 0.001, HDF5 (C-order) shape ``(n_days, 1200, 1200)``
indexed ``[day_of_year − 1, column, row]`` — the order in which MATLAB's ``h5read`` returns
``[row, column, day]`` as that reader expects. From h5py/NumPy take ``f["SM"][doy - 1].T`` for a
(row, column) image. Days of the year outside the export (or the master) are fill.

Grid: sphere R = 6371007.181 m, tiles of 1111950.5197665 m (h 0–35, v 0–17) of 1200 × 1200 pixels
(926.625433 m), upper-left corner of h00v00 at (−20015109.354, 10007554.677) m. Each sinusoidal pixel
centre is projected to lon/lat with pyproj and takes the value of the master pixel that contains it
(**nearest neighbour**; no interpolation, so values are the master's int16 values unchanged). The
position error is at most half a master pixel's diagonal (≤ 0.66 km for 1/120°). Pixel centres outside
the sinusoidal world (|lon| > 180°) or outside the exported region are fill. Only tiles whose area
intersects the exported region are written.
"""

from __future__ import annotations

import calendar
import logging
import math
import threading
from dataclasses import dataclass

import numpy as np

from sm1km.stages.export.common import (
    Source,
    encode_fill_to,
    open_arrays,
    provenance,
    read_block,
    staged_output,
    time_groups,
)
from sm1km.stages.export.hdf5 import set_attr
from sm1km.stages.export.manifest import DEPS_ATTR

log = logging.getLogger(__name__)

R_SPHERE = 6371007.181
TILE_M = 1111950.5197665
TILE_PX = 1200
PIXEL_M = TILE_M / TILE_PX          # 926.625433...
ULX = -20015109.354                 # upper-left corner of h00v00 (m)
ULY = 10007554.677
N_H, N_V = 36, 18
MODIS_FILL = -1
SINUSOIDAL_PROJ4 = f"+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R={R_SPHERE} +units=m +no_defs"
DIMENSION_ORDER = ("SM[day_of_year - 1, column, row] in HDF5/C order (h5py: f['SM'][doy - 1].T is the "
                   "row x column image); MATLAB h5read returns [row, column, day]")


def file_name(year: int, h: int, v: int) -> str:
    """``SM.1km.Daily.<YYYY><days in year, 4 digits>.hXXvYY.v001.h5``."""
    n = 366 if calendar.isleap(year) else 365
    return f"SM.1km.Daily.{year:04d}{n:04d}.h{h:02d}v{v:02d}.v001.h5"


def tile_origin(h: int, v: int) -> tuple[float, float]:
    """Upper-left corner (x, y) in metres of tile hXXvYY."""
    return ULX + h * TILE_M, ULY - v * TILE_M


_LOCAL = threading.local()


def _transformers():
    """(inverse, forward) pyproj transformers, one pair per thread (they are not thread-safe)."""
    pair = getattr(_LOCAL, "pair", None)
    if pair is None:
        from pyproj import CRS, Transformer

        sinu = CRS.from_proj4(SINUSOIDAL_PROJ4)
        geo = CRS.from_proj4(f"+proj=longlat +R={R_SPHERE} +no_defs")
        pair = _LOCAL.pair = (Transformer.from_crs(sinu, geo, always_xy=True),
                              Transformer.from_crs(geo, sinu, always_xy=True))
    return pair


def row_lat(h: int, v: int) -> np.ndarray:
    """Latitude (degrees) of the pixel-centre rows of tile hXXvYY (it depends on the row only)."""
    inv, _ = _transformers()
    _, y0 = tile_origin(h, v)
    y = y0 - (np.arange(TILE_PX) + 0.5) * PIXEL_M
    return np.asarray(inv.transform(np.zeros_like(y), y)[1])


def pixel_lonlat(h: int, v: int, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, valid) of the pixel centres of tile rows ``rows`` (shape (n_rows, 1200)).

    ``valid`` is False where the centre lies outside the sinusoidal world, |x| > x(180°, φ): PROJ
    would wrap such longitudes into ±180°.
    """
    inv, fwd = _transformers()
    x0, y0 = tile_origin(h, v)
    x = x0 + (np.arange(TILE_PX) + 0.5) * PIXEL_M
    y = y0 - (np.arange(rows.start, rows.stop) + 0.5) * PIXEL_M
    xx, yy = np.meshgrid(x, y)
    lon, lat = (np.asarray(a) for a in inv.transform(xx, yy))
    x_edge = np.asarray(fwd.transform(np.full(y.shape, 180.0), lat[:, 0])[0])
    valid = np.isfinite(lon) & np.isfinite(lat) & (np.abs(xx) <= x_edge[:, None] * (1 + 1e-12))
    return lon, lat, valid


def tiles_intersecting(west: float, south: float, east: float, north: float) -> list[tuple[int, int]]:
    """Tiles (h, v) whose area intersects the lon/lat box (exact on the sphere, edges excluded).

    A tile spans x ∈ [x0, x1] and latitudes [φa, φb]; at latitude φ it covers longitudes
    [x0, x1] / (R cos φ). Over φ these intervals form one interval whose ends are reached at the
    extreme |φ| of the overlap with the box, so the test is a comparison of four numbers.
    """
    out = []
    for v in range(N_V):
        top = math.degrees((ULY - v * TILE_M) / R_SPHERE)
        bottom = math.degrees((ULY - (v + 1) * TILE_M) / R_SPHERE)
        a, b = max(bottom, south), min(top, north)
        if a >= b:
            continue
        cmax = 1.0 if a <= 0.0 <= b else math.cos(math.radians(min(abs(a), abs(b))))
        cmin = math.cos(math.radians(max(abs(a), abs(b))))
        for h in range(N_H):
            x0, _ = tile_origin(h, v)
            x1 = x0 + TILE_M
            ends = []
            for x in (x0, x1):
                for c in (cmin, cmax):
                    ends.append(math.copysign(math.inf, x) if c <= 1e-12 else math.degrees(x / (R_SPHERE * c)))
            lo, hi = max(min(ends), -180.0), min(max(ends), 180.0)
            if lo < east and hi > west and lo < hi:
                out.append((h, v))
    return out


def master_index(lon: np.ndarray, lat: np.ndarray, valid: np.ndarray, source: Source, rows: slice,
                 cols: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Store (row, col) of the master pixel containing each lon/lat, and whether it is in rows×cols."""
    p = source.per_deg
    with np.errstate(invalid="ignore"):
        r = np.floor((90.0 - np.where(valid, lat, 0.0)) * p).astype(np.int64) - source.row0
        c = np.floor((np.where(valid, lon, 0.0) + 180.0) * p).astype(np.int64)
    c = np.minimum(c, 360 * p - 1) - source.col0
    ok = valid & (r >= rows.start) & (r < rows.stop) & (c >= cols.start) & (c < cols.stop)
    return r, c, ok


@dataclass(frozen=True)
class ModisJob:
    """One tile-year file: the store time indices of that year to export, the region subset."""

    url: str
    storage_options: dict
    source: Source
    h: int
    v: int
    year: int
    t_indices: tuple[int, ...]
    rows: slice
    cols: slice
    window_pixels: int
    strip_rows: int = 120             # tile rows per processing strip (divides 1200); also the HDF5 chunk
    gzip_level: int = 4
    deps: str = ""                    # deps digest written into the file (stages/export/manifest.py)

    @property
    def key(self) -> str:
        """The task's name on the dashboard: its file."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _align(lo: int, hi: int, unit: int, bound: slice) -> slice:
    """[lo, hi) widened to multiples of ``unit`` and clipped to ``bound``."""
    return slice(max(bound.start, (lo // unit) * unit), min(bound.stop, -(-hi // unit) * unit))


def write_modis(job: ModisJob) -> int | None:
    """Write one sinusoidal tile-year HDF5 file (atomically). Returns the number of blocks read, or
    None (and writes nothing) when no pixel centre of the tile lies in the exported region."""
    import h5py

    src = job.source
    n_days = 366 if calendar.isleap(job.year) else 365
    jan1 = np.datetime64(f"{job.year:04d}-01-01", "D")
    doy0 = {t: int((np.datetime64(src.times[t], "D") - jan1).astype(int)) for t in job.t_indices}
    arr = open_arrays(src, ("sm",))["sm"]
    strip = int(job.strip_rows)
    if TILE_PX % strip:
        raise ValueError(f"strip_rows must divide {TILE_PX}, got {strip}")
    # mapping of every tile pixel to the master, strip by strip (skip strips outside the rows by latitude)
    lat_rows = row_lat(job.h, job.v)
    master_rows = np.floor((90.0 - lat_rows) * src.per_deg).astype(np.int64) - src.row0
    plan = []
    for r0 in range(0, TILE_PX, strip):
        mr = master_rows[r0:r0 + strip]
        if mr.max() < job.rows.start or mr.min() >= job.rows.stop:
            continue
        lon, lat, valid = pixel_lonlat(job.h, job.v, slice(r0, r0 + strip))
        r, c, ok = master_index(lon, lat, valid, src, job.rows, job.cols)
        if ok.any():
            rr, cc = r[ok], c[ok]
            plan.append((r0, ok, rr, cc, _align(int(rr.min()), int(rr.max()) + 1, src.unit[0], job.rows),
                         _align(int(cc.min()), int(cc.max()) + 1, src.unit[1], job.cols)))
    if not plan:
        log.debug("%s: no pixel centre of the tile lies in the region: not written", job.url)
        return None
    n_reads = 0
    with staged_output(job.url, job.storage_options) as local:
        with h5py.File(local, "w", track_order=True) as f:
            attrs = provenance(src, f"MODIS sinusoidal tile h{job.h:02d}v{job.v:02d} {job.year}")
            x0, y0 = tile_origin(job.h, job.v)
            attrs.update(product="daily", layout="modis-sinusoidal", year=job.year, n_days=n_days,
                         HorizontalTileNumber=job.h, VerticalTileNumber=job.v, projection="sinusoidal",
                         proj4=SINUSOIDAL_PROJ4, sphere_radius_m=R_SPHERE, upper_left_x_m=x0,
                         upper_left_y_m=y0, pixel_size_m=PIXEL_M, tile_size_px=TILE_PX,
                         dimension_order=DIMENSION_ORDER,
                         resampling="nearest neighbour: the master (EPSG:4326) pixel containing each "
                                    "sinusoidal pixel centre")
            if job.deps:
                attrs[DEPS_ATTR] = job.deps
            for k, val in attrs.items():
                set_attr(f, k, val)
            sm = f.create_dataset("SM", shape=(n_days, TILE_PX, TILE_PX), dtype="int16",
                                  chunks=(1, TILE_PX, strip), compression="gzip",
                                  compression_opts=int(job.gzip_level), shuffle=True, fillvalue=np.int16(MODIS_FILL),
                                  track_times=False)
            sm.attrs["_FillValue"] = np.int16(MODIS_FILL)
            sm.attrs["scale_factor"] = np.float64(src.var_encoding.get("sm", {}).get("scale_factor", 0.001))
            sm.attrs["add_offset"] = np.float64(0.0)
            for k, val in src.var_attrs.get("sm", {}).items():
                if k not in ("grid_mapping", "comment", "valid_range"):  # lat/lon-grid and -32768 specific
                    set_attr(sm, k, val)
            sm.attrs["dimension_order"] = DIMENSION_ORDER
            for r0, ok, rr, cc, rows, cols in plan:
                per_day = (rows.stop - rows.start) * (cols.stop - cols.start)
                groups = time_groups(job.t_indices, src.time_unit, max(1, job.window_pixels // per_day))
                for g in groups:
                    block = read_block(arr, g, rows, cols)
                    n_reads += 1
                    vals = np.full((g.stop - g.start, strip, TILE_PX), MODIS_FILL, dtype=np.int16)
                    vals[:, ok] = encode_fill_to(block[:, rr - rows.start, cc - cols.start], MODIS_FILL)
                    days = np.array([doy0[t] for t in range(g.start, g.stop)])
                    out = np.ascontiguousarray(vals.transpose(0, 2, 1))
                    if np.all(np.diff(days) == 1):
                        sm[days[0]:days[-1] + 1, :, r0:r0 + strip] = out
                    else:  # pragma: no cover - the master's time axis is daily and contiguous
                        for i, d in enumerate(days):
                            sm[d, :, r0:r0 + strip] = out[i]
    log.debug("%s: %d blocks read", job.url, n_reads)
    return n_reads


__all__ = ["file_name", "tiles_intersecting", "pixel_lonlat", "master_index", "tile_origin", "ModisJob",
           "write_modis", "row_lat", "R_SPHERE", "TILE_M", "TILE_PX", "PIXEL_M", "MODIS_FILL"]
