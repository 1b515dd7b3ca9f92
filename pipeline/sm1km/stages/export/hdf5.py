"""HDF5 on the lat/lon grid (netCDF-4 compatible), written with h5py.

Daily: one file per month (``sm1km_daily_YYYYMM.h5``); monthly: one file per year
(``sm1km_monthly_YYYY.h5``). Datasets ``sm`` (and ``sm_uncertainty`` / ``n_valid_days`` when
exported) are int16 ``(time, lat, lon)``, chunked ``(1, y, x)`` along the master's shards,
gzip + shuffle, with the master's packing attributes (``scale_factor`` 0.001, ``add_offset`` 0,
``_FillValue`` −32768) and CF attributes; ``time``, ``lat``, ``lon`` are HDF5 dimension scales, so
netCDF-4/xarray (h5netcdf or netCDF4 engine) decode the file to m³/m³ with NaN at fill.

Global attributes are the store's (CF-1.8/ACDD-1.3, :mod:`sm1km.storage.attrs`) with this file's
own ACDD ``id``, ``time_coverage_*`` and ``geospatial_*`` (cell edges of the file's window);
``valid_range`` and the other typed attributes (``storage.attrs.TYPED_ATTRS``) are written in the variable's
dtype, as CF 2.5.1 asks (``compliance-checker --test cf:1.8`` is clean; tests/test_cf_compliance.py).
``storage.attrs.ACDD_RECOMMENDED`` lists the attributes every file carries (a master written before
they existed gets the project's constants).

Streaming: time runs within one master time shard × spatial windows aligned to the shards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from sm1km.stages.export.manifest import DEPS_ATTR
from sm1km.storage import attrs as acdd

log = logging.getLogger(__name__)

EPOCH = np.datetime64("1970-01-01", "D")
DEFAULT_CHUNK_PX = 256


@dataclass(frozen=True)
class Hdf5Job:
    """One HDF5 file: store time indices, store rows/cols, variables, target URL."""

    url: str
    storage_options: dict
    source: Source
    t_indices: tuple[int, ...]
    rows: slice
    cols: slice
    variables: tuple[str, ...]
    label: str                       # YYYY-MM (daily) or YYYY (monthly)
    window_pixels: int
    chunk_px: int = DEFAULT_CHUNK_PX  # HDF5 chunk side target (rounded up to whole master shards)
    gzip_level: int = 4
    deps: str = ""                   # deps digest written into the file (stages/export/manifest.py)

    @property
    def key(self) -> str:
        """The task's name on the dashboard: its file."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def file_name(product: str, label: str) -> str:
    """``sm1km_daily_YYYYMM.h5`` / ``sm1km_monthly_YYYY.h5``."""
    return f"sm1km_{product}_{label.replace('-', '')}.h5"


def set_attr(obj, key: str, value: Any) -> None:
    """Store an attribute with a netCDF-friendly type (str, int64, float64, or arrays of them)."""
    if value is None:
        return
    if isinstance(value, bool):
        value = np.int8(value)
    elif isinstance(value, int):
        value = np.int64(value)
    elif isinstance(value, float):
        value = np.float64(value)
    elif isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        value = arr if arr.dtype.kind in "iuf" else json.dumps(list(value))
    elif isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    elif not isinstance(value, (str, np.generic, np.ndarray)):
        value = str(value)
    obj.attrs[key] = value


def set_var_attr(dset, key: str, value: Any) -> None:
    """:func:`set_attr` for a dataset; ``attrs.TYPED_ATTRS`` (valid_range, ...) get ``dset.dtype``."""
    if key in acdd.TYPED_ATTRS:
        value = acdd.typed_var_attrs({key: value}, dset.dtype)[key]
        if isinstance(value, np.ndarray):
            dset.attrs[key] = value
            return
    set_attr(dset, key, value)


def file_attrs(src: Source, job: Hdf5Job, times: np.ndarray) -> dict[str, Any]:
    """Per-file ACDD attributes: its own id, time coverage and geospatial bounds (cell edges)."""
    lat, lon = src.lat(job.rows), src.lon(job.cols)
    out: dict[str, Any] = {"id": acdd.product_id(f"{src.product}.hdf5.{job.label.replace('-', '')}"),
                           "time_coverage_start": str(times.min()), "time_coverage_end": str(times.max())}
    if lat.size and lon.size:
        out.update(acdd.edges_bbox(lat, lon))
    return out


#: ACDD attributes a master written before sm1km wrote them gets from the project's constants
ACDD_DEFAULTS = {"keywords": acdd.KEYWORDS, "license": acdd.DATA_LICENSE, "creator_name": acdd.CREATOR_NAME,
                 "creator_url": acdd.CREATOR_URL, "creator_type": acdd.CREATOR_TYPE,
                 "naming_authority": acdd.NAMING_AUTHORITY, "Conventions": acdd.CONVENTIONS}


def chunk_shape(unit: tuple[int, int], shape: tuple[int, int], chunk_px: int) -> tuple[int, int]:
    """HDF5 chunk (rows, cols): whole master units, at least ``chunk_px`` per side where possible."""
    out = []
    for u, n in zip(unit, shape):
        k = max(1, -(-int(chunk_px) // int(u)))
        out.append(max(1, min(n, u * k)))
    rows, cols = out
    return rows, cols


def write_packing_attrs(dset, encoding: dict, default_fill: int | None) -> None:
    fill = encoding.get("_FillValue", default_fill)
    if fill is not None:
        dset.attrs["_FillValue"] = np.asarray(fill, dtype=dset.dtype)
    if "scale_factor" in encoding:
        dset.attrs["scale_factor"] = np.float64(encoding["scale_factor"])
        dset.attrs["add_offset"] = np.float64(encoding.get("add_offset", 0.0))


def crs_attrs(source: Source) -> dict[str, Any]:
    """The grid mapping of EPSG:4326 (the store's ``crs`` attributes win where present)."""
    from pyproj import CRS

    base = {"grid_mapping_name": "latitude_longitude", "semi_major_axis": 6378137.0,
            "inverse_flattening": 298.257223563, "longitude_of_prime_meridian": 0.0,
            "crs_wkt": CRS.from_epsg(4326).to_wkt(), "spatial_ref": CRS.from_epsg(4326).to_wkt(),
            "epsg_code": "EPSG:4326"}
    base.update(source.crs_attrs)
    return base


def write_hdf5(job: Hdf5Job) -> int:
    """Write one HDF5 file to ``job.url`` (atomically). Returns the number of windows read."""
    import h5py

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
    with staged_output(job.url, job.storage_options) as local:
        with h5py.File(local, "w", track_order=True, rdcc_nbytes=64 << 20, rdcc_nslots=100003, rdcc_w0=1.0) as f:
            attrs = provenance(src, f"{src.product} HDF5 {job.label}")
            for k, v in ACDD_DEFAULTS.items():
                attrs.setdefault(k, v)
            attrs.update(file_attrs(src, job, times))
            attrs["product"] = src.product
            if job.deps:
                attrs[DEPS_ATTR] = job.deps
            for k, v in attrs.items():
                set_attr(f, k, v)
            coords = {
                "time": ((times - EPOCH).astype("int32"),
                         {"units": "days since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian",
                          "standard_name": "time", "long_name": "time", "axis": "T"}),
                "lat": (src.lat(job.rows), {"units": "degrees_north", "standard_name": "latitude",
                                            "long_name": "latitude", "axis": "Y"}),
                "lon": (src.lon(job.cols), {"units": "degrees_east", "standard_name": "longitude",
                                            "long_name": "longitude", "axis": "X"}),
            }
            for name, (vals, a) in coords.items():
                d = f.create_dataset(name, data=vals, track_times=False)
                d.make_scale(name)
                for k, v in a.items():
                    set_attr(d, k, v)
            crs = f.create_dataset("crs", data=np.int32(0), track_times=False)
            for k, v in crs_attrs(src).items():
                set_attr(crs, k, v)
            dsets = {}
            for v in job.variables:
                d = f.create_dataset(v, shape=(nt, ny, nx), dtype="int16", chunks=(1, cy, cx),
                                     compression="gzip", compression_opts=int(job.gzip_level), shuffle=True, track_times=False,
                                     fillvalue=np.int16(src.var_encoding.get(v, {}).get("_FillValue", FILL)))
                write_packing_attrs(d, src.var_encoding.get(v, {}), None)
                for k, val in src.var_attrs.get(v, {}).items():
                    if k not in ("grid_mapping",):
                        set_var_attr(d, k, val)
                d.attrs["grid_mapping"] = "crs"
                for i, dim in enumerate(("time", "lat", "lon")):
                    d.dims[i].attach_scale(f[dim])
                dsets[v] = d
            for g in groups:
                o0 = out_pos[g.start]
                o1 = o0 + (g.stop - g.start)
                for rows, cols in windows:
                    ry = slice(rows.start - job.rows.start, rows.stop - job.rows.start)
                    cxs = slice(cols.start - job.cols.start, cols.stop - job.cols.start)
                    for v in job.variables:
                        dsets[v][o0:o1, ry, cxs] = read_block(arrays[v], g, rows, cols)
    log.debug("%s: %d windows x %d time runs", job.url, len(windows), len(groups))
    return len(windows) * len(groups)
