"""Predictor rasters (GeoTIFF; MODIS sinusoidal; HDF subdatasets where GDAL can read them).

``read_raster`` resamples a raster onto the nested fine grid of a region (exactly the coordinates
of ``grid.region_coords(region, factor)``, EPSG:4326) with rasterio's warper, reading only the
source window that covers the region. Values are converted to physical float32 first:

* ``nodata`` and NaN → missing; band ``scales``/``offsets`` tags are applied when set;
* integer files without scale tags get ``integer_scale``: ``"auto"`` recognises MODIS products by
  name (MOD13/MYD13 NDVI/EVI ×1e-4, MOD11/MYD11 LST ×0.02 K) — needed because one MODIStsp series
  mixes int16×10000 and already-scaled float32 files (decided per file from its dtype);
* ``valid_range`` (physical units) masks values outside it.

``raster_date`` parses the date of a dynamic predictor from its name: ``…_YYYYMMDD…``,
``…YYYY-MM-DD…``, MODIStsp ``…_YYYY_DOY…``, MODIS native ``….AYYYYDOY.…``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage import input_files
from sm1km.storage.input_files import InputOptions
from sm1km.storage.readers._common import sniff
from sm1km.storage.readers.limits import check_netcdf_header, check_read_window

log = logging.getLogger(__name__)

RESAMPLING = ("average", "nearest", "bilinear", "mode")
_MODIS_SCALES = [
    (re.compile(r"(MOD|MYD|MCD)13.*(NDVI|EVI)|(NDVI|EVI).*(MOD|MYD|MCD)13", re.I), 1e-4),
    (re.compile(r"(MOD|MYD)11.*LST|LST.*(MOD|MYD)11", re.I), 0.02),
]


def raster_date(path: str | os.PathLike[str]) -> dt.date | None:
    """The date in a raster file name, or None (static predictors)."""
    name = Path(os.fspath(path)).name
    for rx, kind in ((r"\.A(\d{4})(\d{3})\.", "doy"), (r"(?<!\d)(\d{4})[_.](\d{3})(?!\d)", "doy"),
                     (r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)", "ymd"), (r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)", "ymd")):
        for m in re.finditer(rx, name):
            try:
                if kind == "doy":
                    y, d = int(m.group(1)), int(m.group(2))
                    if not (1900 <= y <= 2200 and 1 <= d <= 366):
                        continue
                    day = dt.date(y, 1, 1) + dt.timedelta(days=d - 1)
                    if day.year != y:
                        continue
                    return day
                y, mo, d = (int(g) for g in m.groups())
                if 1900 <= y <= 2200:
                    return dt.date(y, mo, d)
            except ValueError:
                continue
    return None


def auto_integer_scale(path: str | os.PathLike[str]) -> float:
    """Scale for integer MODIS products recognised by name (1.0 otherwise)."""
    name = Path(os.fspath(path)).name
    for rx, scale in _MODIS_SCALES:
        if rx.search(name):
            return scale
    return 1.0


def _open(path: str, subdataset: str | None) -> Any:  # a rasterio DatasetReader
    import rasterio

    kind = sniff(path)
    if kind == "hdf4":
        raise InputError(path, "this is an HDF4 (HDF-EOS) file and this GDAL build has no HDF4 driver.",
                         "convert the subdataset to GeoTIFF first (e.g. gdal_translate 'HDF4_EOS:EOS_GRID:"
                         "file.hdf:GRID:FIELD' out.tif, or MODIStsp), then pass the GeoTIFF.")
    if kind in ("empty", "text", "zip"):
        raise InputError(path, f"not a raster file (looks like: {kind}).", "pass a GeoTIFF.")
    if kind in ("netcdf3", "hdf5"):
        check_netcdf_header(path)  # declared dimensions, before GDAL reads any coordinate
    target = subdataset or path
    try:
        with warnings.catch_warnings():  # a missing geotransform is reported as an InputError below
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(target)
    except Exception as exc:
        raise InputError(path, f"cannot open as a raster ({type(exc).__name__}: {exc}); the file may be "
                         "corrupt or truncated.", "re-create or re-download the GeoTIFF.") from None
    if ds.count == 0 and ds.subdatasets:
        subs = ds.subdatasets
        ds.close()
        raise InputError(path, f"the file has {len(subs)} subdatasets and none was chosen "
                         f"(e.g. {subs[0]}).", "pass subdataset='…' (one of the names listed by gdalinfo).")
    return ds


def scale_offset(ds: Any, path: str, integer_scale: float | str | None = "auto", band: int = 1) -> tuple[float, float]:
    """(scale, offset) to physical units: band tags if set, else ``integer_scale`` for integer files."""
    scale = float(ds.scales[band - 1]) if ds.scales and ds.scales[band - 1] not in (None, 0) else 1.0
    offset = float(ds.offsets[band - 1]) if ds.offsets and ds.offsets[band - 1] is not None else 0.0
    if scale == 1.0 and offset == 0.0 and np.dtype(ds.dtypes[band - 1]).kind in "iu":
        if integer_scale == "auto":
            scale = auto_integer_scale(path)
        elif integer_scale is not None:
            scale = float(integer_scale)
    return scale, offset


def _physical(raw: np.ndarray, ds: Any, path: str, integer_scale: float | str | None,
              valid_range: tuple[float, float] | None, band: int = 1) -> tuple[np.ndarray, float]:
    """Masked raw band -> float32 physical values with NaN; returns (values, scale applied)."""
    data = np.ma.getdata(raw).astype(np.float64)
    mask = np.ma.getmaskarray(raw) | ~np.isfinite(data)
    nod = ds.nodata
    if nod is not None and np.isfinite(nod):
        mask |= np.ma.getdata(raw) == nod
    scale, offset = scale_offset(ds, path, integer_scale, band)
    data = data * scale + offset
    if valid_range is not None:
        lo, hi = valid_range
        with np.errstate(invalid="ignore"):
            mask |= (data < lo) | (data > hi)
    data[mask] = np.nan
    return data.astype(np.float32), scale


def read_raster(path: str | os.PathLike[str], region: grid.Region, factor: int, resampling: str = "average",
                *, input_options: InputOptions | None = None, **kwargs: Any) -> xr.DataArray:
    """Resample band ``band`` of a raster onto the fine grid of ``region``; see :func:`_read_raster`.

    Local files are read in a ``rasterio.Env`` with a dummy session: otherwise rasterio builds a
    boto3 session (≈0.1 s) on every call whenever AWS credentials are in the environment. An
    ``s3://``/``https://`` input (``input_options``) is read from a copy in the bounded local
    input cache (MODIS HDF4 and GDAL's checks need a real path), removed afterwards.
    """
    import rasterio
    from rasterio.session import DummySession

    if input_files.is_remote(os.fspath(path)):
        with input_files.local_paths([os.fspath(path)], input_options) as (local,):
            return read_raster(local, region, factor, resampling, **kwargs)
    if "://" in os.fspath(path):
        return _read_raster(path, region, factor, resampling, **kwargs)
    with rasterio.Env(session=DummySession()):
        return _read_raster(path, region, factor, resampling, **kwargs)


def _read_raster(path: str | os.PathLike[str], region: grid.Region, factor: int, resampling: str = "average", *,
                 integer_scale: float | str | None = "auto", valid_range: tuple[float, float] | None = None,
                 subdataset: str | None = None, band: int = 1) -> xr.DataArray:
    """Resample band ``band`` of a raster onto the fine grid of ``region`` (``factor`` px per 0.25°).

    Returns a float32 DataArray (lat, lon) with exactly ``grid.region_coords(region, factor)``,
    NaN where the source has no data or does not reach. Raises InputError for unreadable files,
    rasters without a CRS, and rasters that do not overlap the region.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    path = os.fspath(path)
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
    fine = grid.FineGrid(factor)
    lat, lon = grid.region_coords(region, factor)
    dst_transform = fine.transform(region)
    dst_crs = rasterio.crs.CRS.from_epsg(4326)
    with _open(path, subdataset) as ds:
        if ds.crs is None or ds.transform.is_identity:
            raise InputError(path, "the raster has no coordinate reference system or no geotransform.",
                             "assign them (gdal_edit.py -a_srs EPSG:4326 -a_ullr …) or re-export with georeferencing.")
        if not 1 <= band <= ds.count:
            raise InputError(path, f"band {band} requested, the file has {ds.count}.", "choose an existing band.")
        b = region.bbox
        try:
            sb = transform_bounds(dst_crs, ds.crs, b.west, b.south, b.east, b.north, densify_pts=21)
        except Exception as exc:
            raise InputError(path, f"cannot transform the region into the raster's CRS ({exc}).",
                             "check the raster's CRS.") from None
        try:
            win = from_bounds(*sb, transform=ds.transform)
        except Exception as exc:
            raise InputError(path, f"cannot locate the region in the raster ({exc}).", "check the georeferencing.") from None
        aligned = _aligned_offsets(ds, dst_crs, dst_transform)
        if aligned is not None and not (0 <= aligned[0] and aligned[0] + lon.size <= ds.width
                                        and 0 <= aligned[1] and aligned[1] + lat.size <= ds.height):
            aligned = None  # partly outside the raster: the general path pads with NaN
        if aligned is not None:
            # fast path: the raster is on our fine grid already (same CRS, resolution, pixel edges) —
            # an exact window read, no resampling and no GDAL warper (identical values).
            col_off, row_off = aligned
            window = Window(col_off, row_off, lon.size, lat.size)
            dst, scale = _read_physical(ds, band, window, path, integer_scale, valid_range)
        else:
            pad = 2
            c0 = max(int(np.floor(win.col_off)) - pad, 0)
            r0 = max(int(np.floor(win.row_off)) - pad, 0)
            c1 = min(int(np.ceil(win.col_off + win.width)) + pad, ds.width)
            r1 = min(int(np.ceil(win.row_off + win.height)) + pad, ds.height)
            if c1 <= c0 or r1 <= r0:
                rb = transform_bounds(ds.crs, dst_crs, *ds.bounds)
                raise InputError(path, f"the raster (lon {rb[0]:.3f}…{rb[2]:.3f}, lat {rb[1]:.3f}…{rb[3]:.3f}) does "
                                 f"not overlap the region {b.as_tuple()}.", "pass rasters that cover the run's region.")
            window = Window(c0, r0, c1 - c0, r1 - r0)
            check_read_window(path, c1 - c0, r1 - r0)
            src, scale = _read_physical(ds, band, window, path, integer_scale, valid_range)
            from affine import Affine

            src_transform = ds.transform @ Affine.translation(c0, r0)  # = window_transform, without affine's `*`
            dst = np.full((lat.size, lon.size), np.nan, dtype=np.float32)
            reproject(src, dst, src_transform=src_transform, src_crs=ds.crs, src_nodata=np.nan,
                      dst_transform=dst_transform, dst_crs=dst_crs, dst_nodata=np.nan,
                      resampling=getattr(Resampling, resampling))
        units = (ds.units[band - 1] if ds.units else None) or ""
        desc = (ds.descriptions[band - 1] if ds.descriptions else None) or Path(path).stem
    return _as_dataarray(dst, lat, lon, desc, path, resampling, scale, units, region)


def _read_physical(ds: Any, band: int, window: Any, path: str, integer_scale: float | str | None,
                   valid_range: tuple[float, float] | None) -> tuple[np.ndarray, float]:
    """One window of a band in physical units (:func:`_physical`); InputError if the data cannot be read."""
    try:
        raw = ds.read(band, window=window, masked=True)
    except Exception as exc:
        raise InputError(path, f"cannot read raster data ({type(exc).__name__}: {exc}); the file is probably "
                         "corrupt or truncated.", "re-create or re-download the GeoTIFF.") from None
    return _physical(raw, ds, path, integer_scale, valid_range, band)


def _aligned_offsets(ds: Any, dst_crs: Any, dst_transform: Any, tol: float = 1e-6) -> tuple[int, int] | None:
    """(col, row) offset of our grid's origin in the raster's pixels if both grids coincide, else None."""
    t = ds.transform
    if ds.crs != dst_crs or t.b != 0 or t.d != 0:
        return None
    res = dst_transform.a
    if abs(t.a - res) > 1e-9 * res or abs(t.e + res) > 1e-9 * res:
        return None
    col = (dst_transform.c - t.c) / res
    row = (t.f - dst_transform.f) / res
    if abs(col - round(col)) > tol or abs(row - round(row)) > tol:
        return None
    return int(round(col)), int(round(row))


def _as_dataarray(dst: np.ndarray, lat: np.ndarray, lon: np.ndarray, desc: str, path: str, resampling: str,
                  scale: float, units: str, region: grid.Region) -> xr.DataArray:
    dst = np.asarray(dst, dtype=np.float32)
    day = raster_date(path)
    da = xr.DataArray(dst, dims=("lat", "lon"), coords={"lat": lat, "lon": lon}, name=desc, attrs={
        "source_file": Path(path).name, "resampling": resampling, "scale_applied": scale, "units": units,
        **({"date": day.isoformat()} if day else {})})
    if not np.isfinite(dst).any():
        log.warning("%s: no valid value inside the region %s", path, region.bbox.as_tuple())
    return da


def raster_stats(path: str | os.PathLike[str], *, integer_scale: float | str | None = "auto",
                 subdataset: str | None = None, band: int = 1) -> dict[str, Any]:
    """Native-grid summary (physical units): n_valid, min, max, dtype, crs, size — read block by block."""
    path = os.fspath(path)
    n, lo, hi = 0, np.inf, -np.inf
    with _open(path, subdataset) as ds:
        try:
            for _, win in ds.block_windows(band):
                raw = ds.read(band, window=win, masked=True)
                v, _ = _physical(raw, ds, path, integer_scale, None, band)
                fin = np.isfinite(v)
                if fin.any():
                    n += int(fin.sum())
                    lo = min(lo, float(v[fin].min()))
                    hi = max(hi, float(v[fin].max()))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(path, f"cannot read raster data ({type(exc).__name__}: {exc}); the file is probably "
                             "corrupt or truncated.", "re-create or re-download the GeoTIFF.") from None
        units = (ds.units[band - 1] if ds.units else None) or ""
        desc = (ds.descriptions[band - 1] if ds.descriptions else None) or Path(path).stem
        info = {"variable": desc, "units": units, "dtype": ds.dtypes[band - 1],
                "crs": ds.crs.to_string() if ds.crs else None, "width": ds.width, "height": ds.height,
                "scale_applied": scale_offset(ds, path, integer_scale, band)[0]}
    return {**info, "n_valid": n, "min": lo if n else None, "max": hi if n else None}
