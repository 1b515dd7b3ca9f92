"""The 1 km master store (``master.zarr``) and its monthly aggregate (``monthly.zarr``): templates,
chunk/shard layout, CF/ACDD metadata, and the one-writer-per-shard write of packed int16 blocks.

Layout (measured, see ``docs/master-store.md`` and ``benchmarks/master_layout.py``):

* shard = ``(time_block_days, tile px, tile px)`` = ``(128, 120, 120)`` at the defaults — one
  object per (1° tile × 128 days), written by exactly one task (concurrent writes into one shard
  lose data). A point time series touches ≈ 3 objects per year;
* inner chunk = ``(inner_days, inner_cells·factor, inner_cells·factor)`` = ``(2, 60, 60)``: a
  one-day regional map reads ≤ 2× the int16 bytes it returns, a point series one ~9 kB chunk per
  2 days (``benchmarks/access_patterns.py``, ``docs/master-store.md``);
* codec inside the shard: blosc/zstd level 5 with bit-shuffle (−25 % bytes against zarr's default
  zstd at this inner chunk; ``results.compression`` of ``sm1km bench``).

Encoding: ``sm`` and ``sm_uncertainty`` are int16, ``scale_factor=0.001``, ``add_offset=0``,
``_FillValue=-32768`` — and the *Zarr* ``fill_value`` is −32768 too (xarray's default for a v3
array is 0, which would make every unwritten chunk read as a valid 0.0 m³/m³). xarray stores the CF
attributes as plain array attributes, where non-xarray readers (zarr, GDAL) find them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.core.encoding import FILL, SCALE, SM_VALID_MAX, SM_VALID_MIN
from sm1km.core.grid import Region, region_coords
from sm1km.storage import store
from sm1km.storage.attrs import cf_int16_encoding, provenance_attrs

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BloscCodec
    from zarr.core.metadata import ArrayV3Metadata

    from sm1km.config import RunConfig

log = logging.getLogger(__name__)

MASTER_STORE = "master.zarr"
MONTHLY_STORE = "monthly.zarr"
#: inner chunk at the default grid (time, lat, lon); in general (inner_days, inner_cells·factor, ·).
#: Chosen by benchmarks/access_patterns.py (docs/master-store.md).
MASTER_INNER_PREFERRED = (2, 60, 60)
#: codec of the packed int16 inner chunks (and of monthly.zarr): chosen by measurement (bench
#: ``results.compression``); a core Zarr v3 codec, read by zarr-python, zarrs, GDAL, netCDF-C.
PACKED_COMPRESSOR: dict[str, Any] = {"cname": "zstd", "clevel": 5, "shuffle": "bitshuffle"}
#: months per monthly-store shard (one shard = tile × 12 months, one inner chunk per month)
MONTHLY_TIME_CHUNK = 12

SM_ATTRS = {
    "standard_name": "volume_fraction_of_condensed_water_in_soil",
    "long_name": "surface soil moisture (volumetric, 0-5 cm), daily, gap-free",
    "units": "m3 m-3",
    "grid_mapping": "crs",
    "coverage_content_type": "modelResult",
    "valid_range": [int(round(SM_VALID_MIN / SCALE)), int(round(SM_VALID_MAX / SCALE))],
    "comment": "int16 packed: value = stored * scale_factor + add_offset; -32768 = no data (sea, no input).",
}
SM_UNCERTAINTY_ATTRS = {
    "standard_name": "volume_fraction_of_condensed_water_in_soil standard_error",
    "long_name": "uncertainty of surface soil moisture (half the 16-84 % quantile range of the model)",
    "units": "m3 m-3",
    "grid_mapping": "crs",
    "coverage_content_type": "qualityInformation",
    "valid_range": [int(round(SM_VALID_MIN / SCALE)), int(round(SM_VALID_MAX / SCALE))],
}


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------
def _largest_divisor_at_most(n: int, limit: int) -> int:
    limit = max(1, min(n, limit))
    for d in range(limit, 0, -1):
        if n % d == 0:
            return d
    return 1


def inner_chunks(shard: tuple[int, ...], preferred: tuple[int, ...] = MASTER_INNER_PREFERRED) -> tuple[int, ...]:
    """Inner chunk shape for a shard: per axis the largest divisor of the shard side ≤ preferred."""
    return tuple(_largest_divisor_at_most(s, p) for s, p in zip(shard, preferred, strict=True))


def master_inner(cfg: RunConfig) -> tuple[int, int, int]:
    """Inner chunk (time, lat, lon) of the master: ``inner_days`` × ``inner_cells`` 0.25° cells,
    shrunk per axis to a divisor of the shard (so every shard holds whole inner chunks)."""
    g = cfg.grid
    px = g.inner_cells * g.factor
    t, y, x = inner_chunks(master_shard(cfg), (g.inner_days, px, px))
    return (t, y, x)


def master_shard(cfg: RunConfig) -> tuple[int, int, int]:
    """Shard shape (time, lat, lon) of the master: one time block × one tile."""
    tile_px = cfg.grid.tile_cells * cfg.grid.factor
    return (cfg.grid.time_block_days, tile_px, tile_px)


def time_blocks(n_days: int, block: int) -> list[slice]:
    """Index slices of consecutive time blocks (the last may be shorter)."""
    return [slice(t, min(t + block, n_days)) for t in range(0, n_days, block)]


def month_starts(dates: Any) -> pd.DatetimeIndex:
    """First day of every month touched by ``dates``."""
    d = pd.DatetimeIndex(dates)
    return pd.date_range(d.min().to_period("M").to_timestamp(), d.max().to_period("M").to_timestamp(), freq="MS")


# --------------------------------------------------------------------------------------------
# metadata pieces
# --------------------------------------------------------------------------------------------
def crs_variable(region: Region | None = None, factor: int | None = None) -> xr.DataArray:
    """Scalar ``crs`` grid-mapping variable (CF ``latitude_longitude``, EPSG:4326) with WKT.

    ``crs_wkt`` is the CF attribute, ``spatial_ref`` the one GDAL/rioxarray read; with a region and
    factor ``GeoTransform`` (GDAL order) is added too.
    """
    from pyproj import CRS

    wkt = CRS.from_epsg(4326).to_wkt()
    attrs: dict[str, Any] = {
        "grid_mapping_name": "latitude_longitude",
        "long_name": "CRS definition (WGS 84, EPSG:4326)",
        "semi_major_axis": 6378137.0,
        "inverse_flattening": 298.257223563,
        "longitude_of_prime_meridian": 0.0,
        "epsg_code": "EPSG:4326",
        "crs_wkt": wkt,
        "spatial_ref": wkt,
    }
    if region is not None and factor is not None:
        b, res = region.bbox, 1.0 / (4 * factor)
        attrs["GeoTransform"] = f"{b.west!r} {res!r} 0.0 {b.north!r} 0.0 {-res!r}"
    return xr.DataArray(np.int32(0), attrs=attrs)


def _coords(cfg: RunConfig, times: pd.DatetimeIndex) -> dict[str, xr.DataArray]:
    lat, lon = region_coords(cfg.coarse_region, cfg.grid.factor)
    return {
        "time": xr.DataArray(times.values.astype("datetime64[ns]"), dims="time",
                             attrs={"standard_name": "time", "long_name": "time", "axis": "T"}),
        "lat": xr.DataArray(lat, dims="lat", attrs={"standard_name": "latitude", "long_name": "latitude",
                                                    "units": "degrees_north", "axis": "Y"}),
        "lon": xr.DataArray(lon, dims="lon", attrs={"standard_name": "longitude", "long_name": "longitude",
                                                    "units": "degrees_east", "axis": "X"}),
    }


def _coord_encoding() -> dict[str, dict[str, Any]]:
    return {"time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int32",
                     "_FillValue": None},
            "lat": {"_FillValue": None}, "lon": {"_FillValue": None}}


def packed_compressor() -> BloscCodec:
    """The Zarr v3 codec of packed int16 chunks (:data:`PACKED_COMPRESSOR`)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(typesize=2, **PACKED_COMPRESSOR)


def packed_encoding(chunks: tuple[int, ...], shards: tuple[int, ...] | None) -> dict[str, Any]:
    """xarray encoding of a packed int16 variable; the Zarr fill_value equals _FillValue."""
    enc = cf_int16_encoding(FILL, SCALE)
    enc["fill_value"] = np.int16(FILL)
    enc["chunks"] = tuple(chunks)
    enc["compressors"] = [packed_compressor()]
    if shards is not None:
        enc["shards"] = tuple(shards)
    return enc


def _lazy(shape: tuple[int, ...], dtype: Any) -> Any:
    """A never-computed dask array of ``shape`` (one chunk, so the template graph is O(1) at any size)."""
    import dask.array as da

    return da.empty(shape, dtype=dtype, chunks=shape)


def _grid_attrs(cfg: RunConfig) -> dict[str, Any]:
    res = 1.0 / (4 * cfg.grid.factor)
    return {"geospatial_lat_resolution": f"{res!r} degree", "geospatial_lon_resolution": f"{res!r} degree",
            "geospatial_lat_units": "degrees_north", "geospatial_lon_units": "degrees_east",
            "cdm_data_type": "Grid", "standard_name_vocabulary": "CF Standard Name Table v85"}


# --------------------------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------------------------
def master_template(cfg: RunConfig, *, model_sha256: str | None = None, model_card: Mapping[str, Any] | None = None,
                    inner: tuple[int, int, int] | None = None) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """(template Dataset, encoding) of ``master.zarr`` for a run: metadata + coordinates only."""
    times = pd.DatetimeIndex(cfg.dates())
    coords = _coords(cfg, times)
    shape = (len(times), coords["lat"].size, coords["lon"].size)
    shard = master_shard(cfg)
    chunks = inner_chunks(shard, inner or master_inner(cfg))
    dims = ("time", "lat", "lon")
    ds = xr.Dataset(
        {"sm": xr.DataArray(_lazy(shape, np.float32), dims=dims, attrs=dict(SM_ATTRS)),
         "sm_uncertainty": xr.DataArray(_lazy(shape, np.float32), dims=dims, attrs=dict(SM_UNCERTAINTY_ATTRS)),
         "crs": crs_variable(cfg.coarse_region, cfg.grid.factor)},
        coords=coords).set_coords("crs")  # a coordinate: rioxarray finds the CRS without decode_coords="all"
    extra = {**_grid_attrs(cfg), "time_coverage_resolution": "P1D", "product_version": "1",
             "sm1km_layout": f"shard={list(shard)} inner_chunk={list(chunks)}"}
    if model_sha256:
        extra["model_sha256"] = model_sha256
    if model_card:
        import json

        extra["model_card"] = json.dumps(dict(model_card), sort_keys=True, default=str)
    ds.attrs = provenance_attrs(
        cfg, title="sm1km gap-free daily surface soil moisture at 1 km", name="master",
        summary="Daily 1 km (1/120 degree at factor 30) surface soil moisture: ESA CCI SM COMBINED gap-filled "
                "with rescaled ERA5 at 25 km, downscaled with an XGBoost model trained on ISMN stations.",
        extra=extra)
    enc = {**_coord_encoding(), "sm": packed_encoding(chunks, shard),
           "sm_uncertainty": packed_encoding(chunks, shard)}
    return ds, enc


def monthly_template(cfg: RunConfig, *,
                     source_attrs: Mapping[str, Any] | None = None) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """(template, encoding) of ``monthly.zarr``: monthly mean ``sm`` (packed like the master),
    ``n_valid_days`` (int16) and ``time_bnds`` [month start, next month start)."""
    months = month_starts(cfg.dates())
    coords = _coords(cfg, months)
    coords["time"].attrs.update(bounds="time_bnds", long_name="first day of the month")
    bnds = np.stack([months.values, (months + pd.offsets.MonthBegin(1)).values], axis=1).astype("datetime64[ns]")
    shape = (len(months), coords["lat"].size, coords["lon"].size)
    tile_px = cfg.grid.tile_cells * cfg.grid.factor
    # one shard = tile × 12 months whatever the run's length (so the store grows into it), one
    # inner chunk per month: a month rewritten leaves the other months' bytes as they are
    shards = (MONTHLY_TIME_CHUNK, tile_px, tile_px)
    chunks = (1, tile_px, tile_px)
    dims = ("time", "lat", "lon")
    sm_attrs = dict(SM_ATTRS, long_name="monthly mean surface soil moisture (volumetric, 0-5 cm)",
                    cell_methods="time: mean (interval: 1 day)",
                    comment="mean of the daily 1 km master over the valid days of the month; -32768 where "
                            "n_valid_days is below the month's minimum (see docs/master-store.md).")
    ds = xr.Dataset(
        {"sm": xr.DataArray(_lazy(shape, np.float32), dims=dims, attrs=sm_attrs),
         "n_valid_days": xr.DataArray(_lazy(shape, np.int16), dims=dims,
                                      attrs={"long_name": "number of valid daily values in the month",
                                             "standard_name": "number_of_observations",
                                             "coverage_content_type": "auxiliaryInformation",
                                             "units": "1", "grid_mapping": "crs"}),
         "time_bnds": xr.DataArray(bnds, dims=("time", "nv")),
         "crs": crs_variable(cfg.coarse_region, cfg.grid.factor)},
        coords=coords).set_coords("crs")
    ds.attrs = provenance_attrs(
        cfg, title="sm1km monthly mean surface soil moisture at 1 km", name="monthly",
        summary="Monthly means of the sm1km daily 1 km master.",
        extra={**_grid_attrs(cfg), "time_coverage_resolution": "P1M",
               "keywords": "soil moisture, downscaling, ESA CCI, ERA5, 1 km, monthly",
               **({"source_master_date_created": source_attrs["date_created"]}
                  if source_attrs and "date_created" in source_attrs else {})})
    enc = {**_coord_encoding(), "sm": packed_encoding(chunks, shards),
           "n_valid_days": {"dtype": "int16", "chunks": chunks, "shards": shards, "_FillValue": None,
                            "compressors": [packed_compressor()]},
           "time_bnds": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int32",
                         "_FillValue": None}}
    return ds, enc


# --------------------------------------------------------------------------------------------
# writing packed blocks
# --------------------------------------------------------------------------------------------
def write_packed(url: str, region: Mapping[str, slice], arrays: Mapping[str, np.ndarray],
                 storage_options: Mapping[str, Any] | None = None, *, group: zarr.Group | None = None,
                 preserve: bool = False) -> int:
    """Write already-packed arrays (int16) into ``region`` of a store made from a template.

    Bypasses xarray's CF encoding on purpose: ``store.write_region`` would re-encode the values
    (float temporaries and a second rounding); here the bytes are exactly :func:`encode_int16`'s.
    One call = one task = whole shard(s): never let two tasks write into one shard. Whole shards
    are encoded in one pass by :mod:`shard_codec` (zarr's per-inner-chunk path cost ~3x as
    much per task); any other region goes through zarr. ``group``: the store already opened
    writable (a worker reuses it across its tasks), else it is opened here.

    ``preserve=True`` (a store that readers may already read: the master grows, or a block is
    recomputed): every shard is replaced by one atomic write (:func:`sm1km.storage.store.put_atomic`)
    of :func:`sm1km.storage.append.preserve_prefix` (old shard, new shard): an inner chunk whose
    bytes did not change keeps its bytes *and offset*, changed chunks are appended, so the old
    index stays valid for a reader holding it. A shard whose bytes would not change is not written.
    Returns the number of objects written (with ``preserve``; else the shards the region touches).
    """
    from sm1km.storage.shard_codec import encode_whole_shards, write_whole_shards

    if group is None:
        group = store.open_group(url, storage_options, mode="r+")
    n = 0
    for name, data in arrays.items():
        store.commit_check(url)  # fencing: refused once this run no longer holds the store's lock
        arr = cast("zarr.Array[Any]", group[name])
        # a template's variables: Zarr v3 arrays with dimension names (xarray writes them)
        dims = cast("tuple[str, ...]", cast("ArrayV3Metadata", arr.metadata).dimension_names)
        sel = tuple(region.get(d, slice(None)) for d in dims)
        if not preserve:
            if not write_whole_shards(arr, sel, data):
                arr[sel] = data
            n += 1
            continue
        encoded = encode_whole_shards(arr, sel, data)
        if encoded is None:  # not whole shards of the packed layout: zarr in memory, then the same rule
            from sm1km.storage.append import write_packed_preserving

            n += sum(write_packed_preserving(url, region, {name: data}, storage_options).values())
            continue
        n += _put_preserving(url, name, encoded, storage_options)
    return n


def _put_preserving(url: str, name: str, encoded: tuple[Any, Any], storage_options: Mapping[str, Any] | None) -> int:
    import posixpath

    from sm1km.storage.append import preserve_prefix
    from sm1km.storage.shard_codec import inner_chunk_count

    layout, shards = encoded
    fs, root = store.filesystem(url, storage_options)
    n_chunks = inner_chunk_count(layout)
    n = 0
    for key, new in shards:
        path = posixpath.join(root, name, key)
        try:
            old: bytes | None = fs.cat_file(path)
        except FileNotFoundError:
            old = None
        if new is None and old is None:
            continue
        payload = preserve_prefix(old, new, n_chunks)
        if payload != old:
            store.put_atomic(store.join(url, name, key), payload, storage_options)
            n += 1
    return n


class DayDigests:
    """``<root>/_ledger/<store_name>/days.json``: the deps digest of every day a store holds
    (``{ISO day: digest}``), for stages below it that need a finer grain than time blocks (a
    month of ``monthly.zarr`` depends on the master's days of that month only). Written by the
    driver in one atomic write after the store's units are done (beside
    :class:`sm1km.storage.deps.BlockDigests`)."""

    NAME = "days.json"

    def __init__(self, root: str, store_name: str, storage_options: Mapping[str, Any] | None = None):
        self.store_name = store_name
        self.url = store.join(root, "_ledger", store_name, self.NAME)
        self.storage_options = dict(storage_options or {})

    def read(self) -> dict[str, str]:
        doc = store.read_json(self.url, self.storage_options)
        return dict(doc.get("days", {})) if doc else {}

    def record(self, days: Mapping[str, str]) -> None:
        """Replace the record with ``days`` (the store's days now; one atomic write)."""
        store.write_json(self.url, {"version": 1, "store": self.store_name, "days": dict(sorted(days.items()))},
                         self.storage_options, separators=(",", ":"))
