"""CF netCDF-4 on the lat/lon grid, written with the netCDF-C library (``netCDF4``), as users of the
ESA-CCI / C3S soil-moisture products expect.

Files: one per month (default) or per year (``export.netcdf.period`` in the config, ``--file-period``):
daily ``sm1km_daily_YYYYMM.nc`` / ``sm1km_daily_YYYY.nc``, monthly ``sm1km_monthly_YYYY.nc`` (default
for the monthly product) / ``sm1km_monthly_YYYYMM.nc``. A file holds only the exported days of its
period (the open month's file grows with the master and is rewritten atomically).

Contents: dimensions ``time``, ``lat``, ``lon``, ``nv`` (2). ``sm`` (and ``sm_uncertainty`` /
``n_valid_days`` when exported) are int16 ``(time, lat, lon)`` with the master's packing
(``scale_factor`` 0.001, ``add_offset`` 0, ``_FillValue`` −32768, values unchanged), ``valid_range``
in int16, ``grid_mapping = "crs"`` (a scalar CF grid-mapping variable, EPSG:4326 WKT; also in
``coordinates``, as on the stores, so xarray attaches it and rioxarray finds the CRS without options);
``time`` int32 days since 1970-01-01 with ``time_bnds`` (daily: [day, day + 1); monthly: [month
start, next month start)); ``lat``/``lon`` cell centres with ``lat_bnds``/``lon_bnds`` cell edges.
Chunks ``(1, ≥256, ≥256)`` along the master's shards (one day's map is one chunk read per
256² px block, as the CCI daily files; a pixel's month is 28-31 chunks), zlib level 4 + shuffle.
Global attributes: the store's CF-1.8/ACDD-1.3 provenance (paths made portable, as the other
exports), this file's own ``id`` (``sm1km.daily.netcdf.YYYYMM``), ``time_coverage_*`` (the days it
holds), ``geospatial_*`` at cell edges and its deps digest ``sm1km_deps``; text attributes are NC_CHAR
(what netCDF-3-era readers expect). ``xarray.open_dataset(path)`` decodes ``sm`` to m³/m³ with NaN
at fill, equal to the master for the same days (tests/test_export_netcdf.py).

Streaming: time runs within one master time shard × spatial windows aligned to the shards (as the
HDF5 writer). The netCDF-C library is not thread-safe: every call into it in this process holds
:data:`NC_LOCK` (a dask worker's threads write their files in turn; the reads run outside it).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sm1km.stages.export.common import (
    FILL,
    Source,
    open_arrays,
    plan_windows,
    provenance,
    read_block,
    staged_output,
    time_groups,
)
from sm1km.stages.export.hdf5 import ACDD_DEFAULTS, DEFAULT_CHUNK_PX, EPOCH, chunk_shape, crs_attrs
from sm1km.stages.export.manifest import DEPS_ATTR
from sm1km.storage import attrs as acdd

log = logging.getLogger(__name__)

PERIODS = ("month", "year")
#: netCDF-C (and its HDF5) is not thread-safe: one lock for every call into it in this process
NC_LOCK = threading.RLock()


@dataclass(frozen=True)
class NetcdfJob:
    """One netCDF file: store time indices, store rows/cols, variables, target URL."""

    url: str
    storage_options: dict
    source: Source
    t_indices: tuple[int, ...]
    rows: slice
    cols: slice
    variables: tuple[str, ...]
    label: str                       # YYYY-MM or YYYY (the file's period)
    window_pixels: int
    chunk_px: int = DEFAULT_CHUNK_PX  # chunk side target (rounded up to whole master shards)
    complevel: int = 4
    deps: str = ""                   # deps digest written into the file (stages/export/manifest.py)

    @property
    def key(self) -> str:
        """The task's name on the dashboard: its file."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def default_period(product: str) -> str:
    """The file period when the config names none: a month of daily data, a year of monthly data."""
    return "month" if product == "daily" else "year"


def file_label(day: str, period: str) -> str:
    """The label of the file holding ``day`` (ISO date): ``YYYY-MM`` (month) or ``YYYY`` (year)."""
    return day[:7] if period == "month" else day[:4]


def file_name(product: str, label: str) -> str:
    """``sm1km_daily_YYYYMM.nc`` / ``sm1km_daily_YYYY.nc`` / ``sm1km_monthly_YYYY.nc`` ..."""
    return f"sm1km_{product}_{label.replace('-', '')}.nc"


def nc_value(value: Any) -> Any:
    """An attribute value netCDF stores: str (NC_CHAR), int64, float64, numeric arrays, JSON for the rest."""
    if isinstance(value, bool):
        return np.int8(value)
    if isinstance(value, int):
        return np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        return arr if arr.dtype.kind in "iuf" else json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (str, np.generic, np.ndarray)):
        return value
    return str(value)


def set_attrs(obj, attrs: dict[str, Any], dtype: Any = None) -> None:
    """Set attributes on a netCDF4 Dataset/Variable (``acdd.TYPED_ATTRS`` in the variable's ``dtype``)."""
    for k, v in attrs.items():
        if v is None or k in ("_FillValue",):
            continue
        if dtype is not None and k in acdd.TYPED_ATTRS:
            v = acdd.typed_var_attrs({k: v}, dtype)[k]
        obj.setncattr(k, nc_value(v))


def file_attrs(src: Source, job: NetcdfJob, times: np.ndarray) -> dict[str, Any]:
    """Per-file ACDD attributes: its own id, time coverage and geospatial bounds (cell edges, exact:
    one integer numerator and one division, as the grid computes them)."""
    out: dict[str, Any] = {"id": acdd.product_id(f"{src.product}.netcdf.{job.label.replace('-', '')}"),
                           "time_coverage_start": str(times.min()), "time_coverage_end": str(times.max())}
    if job.rows.stop > job.rows.start and job.cols.stop > job.cols.start:
        west, south, east, north = src.edges(job.rows, job.cols)
        out.update(acdd.bbox_attrs(south, north, west, east))
    return out


def cell_bounds(src: Source, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """``lat_bnds`` (north, south edge per row) and ``lon_bnds`` (west, east per column), exact."""
    p = src.per_deg
    r = np.arange(src.row0 + rows.start, src.row0 + rows.stop + 1)
    c = np.arange(src.col0 + cols.start, src.col0 + cols.stop + 1)
    lat_e = (90 * p - r) / p
    lon_e = (c - 180 * p) / p
    return np.stack([lat_e[:-1], lat_e[1:]], axis=1), np.stack([lon_e[:-1], lon_e[1:]], axis=1)


def time_bounds(times: np.ndarray, product: str) -> np.ndarray:
    """(n, 2) int32 days since 1970-01-01: [day, day + 1) (daily), [month start, next month start) (monthly)."""
    start = (times - EPOCH).astype("int64")
    if product == "daily":
        end = start + 1
    else:
        nxt = pd.DatetimeIndex(times.astype("datetime64[ns]")) + pd.offsets.MonthBegin(1)
        end = (nxt.values.astype("datetime64[D]") - EPOCH).astype("int64")
    return np.stack([start, end], axis=1).astype("int32")


def global_attrs(src: Source, job: NetcdfJob, times: np.ndarray) -> dict[str, Any]:
    attrs = provenance(src, f"{src.product} netCDF {job.label}")
    for k, v in ACDD_DEFAULTS.items():
        attrs.setdefault(k, v)
    attrs.update(file_attrs(src, job, times))
    attrs["product"] = src.product
    if job.deps:
        attrs[DEPS_ATTR] = job.deps
    return {k: v for k, v in attrs.items() if v is not None}


def write_netcdf(job: NetcdfJob) -> int:
    """Write one netCDF-4 file to ``job.url`` (atomically). Returns the number of windows read."""
    import netCDF4

    src = job.source
    ny, nx = job.rows.stop - job.rows.start, job.cols.stop - job.cols.start
    nt = len(job.t_indices)
    times = np.array([np.datetime64(src.times[i], "D") for i in job.t_indices])
    out_pos = {t: k for k, t in enumerate(job.t_indices)}
    cy, cx = chunk_shape(src.unit, (ny, nx), job.chunk_px)
    groups = time_groups(job.t_indices, src.time_unit, src.time_unit)
    depth = max(g.stop - g.start for g in groups)
    windows = plan_windows(job.rows, job.cols, (cy, cx), job.window_pixels, depth=depth)
    arrays = open_arrays(src, job.variables)
    lat, lon = src.lat(job.rows), src.lon(job.cols)
    with staged_output(job.url, job.storage_options) as local:
        with NC_LOCK:
            nc = netCDF4.Dataset(local, "w", format="NETCDF4")
        try:
            with NC_LOCK:
                _define(nc, src, job, times, lat, lon, (nt, ny, nx), (cy, cx))
            for g in groups:
                o0 = out_pos[g.start]
                o1 = o0 + (g.stop - g.start)
                for rows, cols in windows:
                    ry = slice(rows.start - job.rows.start, rows.stop - job.rows.start)
                    cxs = slice(cols.start - job.cols.start, cols.stop - job.cols.start)
                    for v in job.variables:
                        block = read_block(arrays[v], g, rows, cols)
                        with NC_LOCK:
                            nc.variables[v][o0:o1, ry, cxs] = block
        finally:
            with NC_LOCK:
                nc.close()
    log.debug("%s: %d windows x %d time runs", job.url, len(windows), len(groups))
    return len(windows) * len(groups)


def _define(nc, src: Source, job: NetcdfJob, times: np.ndarray, lat: np.ndarray, lon: np.ndarray,
            shape: tuple[int, int, int], chunks: tuple[int, int]) -> None:
    """Dimensions, coordinates, the grid mapping, global attributes and the (empty) data variables."""
    nt, ny, nx = shape
    set_attrs(nc, global_attrs(src, job, times))
    for name, n in (("time", nt), ("lat", ny), ("lon", nx), ("nv", 2)):
        nc.createDimension(name, n)
    t = nc.createVariable("time", "i4", ("time",))
    set_attrs(t, {"units": "days since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian",
                  "standard_name": "time", "long_name": "time" if src.product == "daily" else "first day of the month",
                  "axis": "T", "bounds": "time_bnds"})
    t[:] = (times - EPOCH).astype("int32")
    tb = nc.createVariable("time_bnds", "i4", ("time", "nv"))
    tb[:] = time_bounds(times, src.product)
    lat_b, lon_b = cell_bounds(src, job.rows, job.cols)
    for name, vals, bnds, units, std, axis in (("lat", lat, lat_b, "degrees_north", "latitude", "Y"),
                                               ("lon", lon, lon_b, "degrees_east", "longitude", "X")):
        c = nc.createVariable(name, "f8", (name,))
        set_attrs(c, {"units": units, "standard_name": std, "long_name": std, "axis": axis,
                      "bounds": f"{name}_bnds"})
        c[:] = vals
        b = nc.createVariable(f"{name}_bnds", "f8", (name, "nv"))
        b[:] = bnds
    crs = nc.createVariable("crs", "i4", ())
    set_attrs(crs, crs_attrs(src))
    crs.assignValue(0)
    for v in job.variables:
        enc = src.var_encoding.get(v, {})
        fill = np.int16(enc.get("_FillValue", FILL))
        d = nc.createVariable(v, "i2", ("time", "lat", "lon"), zlib=True, complevel=int(job.complevel), shuffle=True,
                              chunksizes=(1, *chunks), fill_value=fill)
        d.set_auto_maskandscale(False)
        d.set_var_chunk_cache(size=64 << 20, nelems=100003, preemption=1.0)
        if "scale_factor" in enc:
            d.setncattr("scale_factor", np.float64(enc["scale_factor"]))
            d.setncattr("add_offset", np.float64(enc.get("add_offset", 0.0)))
        set_attrs(d, {k: val for k, val in src.var_attrs.get(v, {}).items() if k not in ("grid_mapping",)},
                  dtype=np.int16)
        d.setncattr("grid_mapping", "crs")
        d.setncattr("coordinates", "crs")  # as on the stores: xarray attaches crs, rioxarray finds the CRS by default


__all__ = ["NetcdfJob", "write_netcdf", "file_name", "file_label", "default_period", "PERIODS", "NC_LOCK"]
