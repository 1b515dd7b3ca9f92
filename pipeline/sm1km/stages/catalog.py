"""``sm1km catalog``: a STAC Collection + Items (pystac) describing the run's products.

One Item per Zarr product (``fused``, ``master``, ``monthly``) with the datacube extension
(dimensions with extents and steps, variables with unit, packing scale/offset and nodata) and a
Zarr asset (with ``xarray:open_kwargs``), plus one Item per exported file (GeoTIFF/HDF5/netCDF, dated
by the days it holds from the export's manifest, ``<folder>/_manifest.json``, else from its file
name; its ``sm1km:deps`` property is the file's deps digest, so the item changes when the file is
rewritten). The Collection also carries the Zarr assets, so a client can go straight
from the collection to a store, and ``item_assets`` (STAC 1.1 core): what the items' ``zarr`` and
``data`` assets are (roles, title, and the media type when all export items share one).

Export items carry what loaders (odc-stac, stackstac) need to plan a read without opening the
files: per asset ``file:size`` / ``file:checksum`` (sha2-256 multihash); for a COG
``proj:code``/``proj:shape``/``proj:transform``/``proj:bbox`` (projection v2) and ``raster:bands``
(nodata, scale, offset, data type, unit, sampling; raster v1.1), read from its header; for an
HDF5 or netCDF file on the lat/lon grid the same ``proj:*`` (EPSG:4326, the grid of its
``lat``/``lon`` cell centres; the MODIS-sinusoidal tiles, transposed and not georeferenced, get none). A one-day
file's item has a ``datetime`` (odc-stac's time axis), a month's or year's only its interval. The
checksum reads the whole file, so these fields are reused from the item already written while the
file keeps its size, modification time and deps (:func:`_file_metadata`). ``tests/test_stac_load.py``
loads the daily items with odc-stac into an xarray equal to the master.

Links are relative by default, so the folder tree can be served over HTTP (or S3 public read)
as is: the catalog goes to ``<root>/catalog/`` and points at ``../../master.zarr``. ``out_url``
writes it elsewhere (links relative from there, e.g. a stable public prefix — see
:func:`sm1km.storage.publish.promote`), ``base_url`` writes absolute links. Items are written first and
``collection.json`` last, so a reader never finds a collection whose items are not there yet.

The catalog grows with the run: documents whose bytes are already there are not rewritten, so a
re-run after an update writes the items of new export files, the items that changed (the open
month's file, the Zarr items whose time extent grew) and the collection (its temporal extent spans
the products and the exports); in ``sm1km run`` / ``update`` it runs after the exports, so no item
points at a file that is not there yet.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
import re
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from sm1km._version import __version__
from sm1km.config import RunConfig
from sm1km.errors import ConfigError
from sm1km.runtime.result import StageResult
from sm1km.stages.export.manifest import read_manifest
from sm1km.storage import store

log = logging.getLogger(__name__)

PRODUCTS = {
    "fused": ("fused.zarr", "Gap-free 25 km daily surface soil moisture (CCI + rescaled ERA5)"),
    "master": ("master.zarr", "Gap-free 1 km daily surface soil moisture (downscaled), Zarr master"),
    "monthly": ("monthly.zarr", "1 km monthly mean surface soil moisture"),
}
ZARR_MEDIA_TYPE = "application/vnd+zarr"
XARRAY_ASSETS_SCHEMA = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
GEOTIFF_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
HDF5_MEDIA_TYPE = "application/x-hdf5"
NETCDF_MEDIA_TYPE = "application/netcdf"
#: export file suffix -> (item kind, asset media type)
EXPORT_KINDS = {".tif": ("geotiff", GEOTIFF_MEDIA_TYPE), ".h5": ("hdf5", HDF5_MEDIA_TYPE),
                ".nc": ("netcdf", NETCDF_MEDIA_TYPE)}
PROJECTION_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
#: multihash prefix of a sha2-256 digest (code 0x12, length 0x20), as the file extension wants it
SHA256_MULTIHASH = "1220"
_AUXILIARY = ("crs", "time_bnds")


def _iso(t: pd.Timestamp) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_step(t: pd.DatetimeIndex) -> str | None:
    """ISO 8601 step of a time axis: P1D (daily), P1M (month starts), None (irregular)."""
    if len(t) < 2:
        return None
    d = np.diff(t.values).astype("timedelta64[D]").astype(int)
    if (d == 1).all():
        return "P1D"
    if (t.day == 1).all() and ((t.year[1:] * 12 + t.month[1:]) - (t.year[:-1] * 12 + t.month[:-1]) == 1).all():
        return "P1M"
    return None


def _datacube(ds, attrs_of, times=None) -> tuple[dict, dict]:
    """STAC datacube ``cube:dimensions`` and ``cube:variables`` for an undecoded xarray Dataset
    (variables as stored: int16 + packing) and its decoded ``times``."""
    dims: dict[str, Any] = {}
    for d in ds.dims:
        c = ds[d].values if d in ds.coords else None
        if d == "time" and times is not None:
            t = pd.DatetimeIndex(times)
            dims[d] = {"type": "temporal", "extent": [_iso(t.min()), _iso(t.max())], "step": _time_step(t)}
        elif d in ("lat", "lon") and c is not None:
            step = float(c[1] - c[0]) if len(c) > 1 else None
            dims[d] = {"type": "spatial", "axis": "y" if d == "lat" else "x",
                       "extent": [float(np.min(c)), float(np.max(c))], "step": step,
                       "reference_system": 4326,
                       "description": "cell centres; latitude descends with the index" if d == "lat"
                       else "cell centres"}
        else:
            n = int(ds.sizes[d])
            dims[d] = {"type": "index", "extent": [0, n - 1], "step": 1,
                       "description": "bounds (start, end)" if d == "nv" else f"index along {d}"}
    variables: dict[str, Any] = {}
    for v in ds.data_vars:
        a = attrs_of(v)
        entry: dict[str, Any] = {"type": "auxiliary" if v in _AUXILIARY else "data",
                                 "dimensions": list(ds[v].dims), "data_type": str(ds[v].dtype)}
        if "units" in a:
            entry["unit"] = a["units"]
        if "long_name" in a:
            entry["description"] = a["long_name"]
        if "standard_name" in a:
            entry["standard_name"] = a["standard_name"]
        for key, name in (("scale_factor", "scale_factor"), ("add_offset", "add_offset"), ("_FillValue", "nodata")):
            if key in a:
                val = a[key]
                entry[name] = val.item() if hasattr(val, "item") else val
        variables[v] = entry
    return dims, variables


def _box_geometry(west: float, south: float, east: float, north: float) -> tuple[list[float], dict[str, Any]]:
    bbox = [west, south, east, north]
    geom = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                [west, north], [west, south]]]}
    return bbox, geom


def _bbox_geometry(cfg: RunConfig):
    b = cfg.coarse_region.bbox
    return _box_geometry(b.west, b.south, b.east, b.north)


def _utc(d) -> dt.datetime:
    return pd.Timestamp(d).tz_localize(None).to_pydatetime().replace(tzinfo=dt.UTC)


def _store_interval(ds) -> tuple[dt.datetime, dt.datetime]:
    """[first instant, last instant] covered by a store's time axis (a month for monthly stores)."""
    t = pd.DatetimeIndex(ds["time"].values)
    last = t.max()
    step = _time_step(t)
    end = last + (pd.offsets.MonthBegin(1) if step == "P1M" else pd.Timedelta(days=1)) - pd.Timedelta(seconds=1)
    return _utc(t.min()), _utc(end)


def export_interval(name: str) -> tuple[dt.datetime, dt.datetime] | None:
    """Time span of an export file from its name: ``_YYYYMMDD`` (day), ``_YYYYMM`` (month), ``_YYYY`` (year)."""
    m = re.search(r"_(\d{8}|\d{6}|\d{4})(?=[._]|$)", name)
    if not m:
        return None
    s = m.group(1)
    if len(s) == 8:
        start = pd.Timestamp(f"{s[:4]}-{s[4:6]}-{s[6:]}")
        end = start + pd.Timedelta(days=1)
    elif len(s) == 6:
        start = pd.Timestamp(f"{s[:4]}-{s[4:]}-01")
        end = start + pd.offsets.MonthBegin(1)
    else:
        start = pd.Timestamp(f"{s}-01-01")
        end = start + pd.offsets.YearBegin(1)
    return _utc(start), _utc(end - pd.Timedelta(seconds=1))


def _entry_interval(entry: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    """Time span of an export file from its manifest entry (the days it holds: the open month's file
    ends at its last day, not at the month's end)."""
    a, b = entry.get("time_coverage_start"), entry.get("time_coverage_end")
    if not a or not b:
        return None
    return _utc(a), _utc(b) + dt.timedelta(days=1, seconds=-1)


def file_fields(fs, path: str) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (sha2-256 multihash, hex) of one file, streamed."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return {"file:size": size, "file:checksum": SHA256_MULTIHASH + h.hexdigest()}


def geotiff_fields(fs, path: str) -> dict[str, Any]:
    """Projection (``proj:code``, shape, transform, bbox) and ``raster:bands`` of a COG, from its
    header: what odc-stac / stackstac need to load it without opening it first."""
    import rasterio

    with fs.open(path, "rb") as f, rasterio.open(f) as r:
        t = r.transform
        epsg = r.crs.to_epsg() if r.crs else None
        out: dict[str, Any] = {
            "proj:code": f"EPSG:{epsg}" if epsg else None,
            "proj:shape": [int(r.height), int(r.width)],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f, 0.0, 0.0, 1.0],
            "proj:bbox": [r.bounds.left, r.bounds.bottom, r.bounds.right, r.bounds.top],
        }
        if epsg is None:
            del out["proj:code"]
            if r.crs:
                out["proj:wkt2"] = r.crs.to_wkt()
        bands = []
        for b in range(1, r.count + 1):
            tags = r.tags(b)
            nodata = r.nodatavals[b - 1]
            band: dict[str, Any] = {
                "data_type": r.dtypes[b - 1], "sampling": "area",
                "scale": float(r.scales[b - 1]), "offset": float(r.offsets[b - 1]),
            }
            if nodata is not None:
                band["nodata"] = int(nodata) if float(nodata).is_integer() else float(nodata)
            if tags.get("units"):
                band["unit"] = tags["units"]
            bands.append(band)
        out["raster:bands"] = bands
    return out


def grid_fields(fs, path: str) -> dict[str, Any]:
    """``proj:code``/``proj:shape``/``proj:transform``/``proj:bbox`` of an HDF5/netCDF file on the
    lat/lon grid, from its ``lat``/``lon`` cell centres (1-D, regular; the edges snapped to whole
    pixels of the grid, as the exports write them). {} for a file without them (MODIS tiles) or of
    a single row or column (no spacing to read)."""
    import h5py

    with fs.open(path, "rb") as f, h5py.File(f, "r") as h:
        if "lat" not in h or "lon" not in h or h["lat"].ndim != 1 or h["lon"].ndim != 1:
            return {}
        lat, lon = np.asarray(h["lat"][...], dtype="f8"), np.asarray(h["lon"][...], dtype="f8")
    if lat.size < 2 or lon.size < 2:
        return {}
    per_deg = round(1.0 / abs(float(lon[1] - lon[0])))
    col0 = round((float(lon[0]) + 180.0) * per_deg - 0.5)
    row0 = round((90.0 - float(lat[0])) * per_deg - 0.5)
    west, north = (col0 - 180 * per_deg) / per_deg, (90 * per_deg - row0) / per_deg
    east, south = (col0 + lon.size - 180 * per_deg) / per_deg, (90 * per_deg - row0 - lat.size) / per_deg
    res = 1.0 / per_deg
    return {"proj:code": "EPSG:4326", "proj:shape": [int(lat.size), int(lon.size)],
            "proj:transform": [res, 0.0, west, 0.0, -res, north, 0.0, 0.0, 1.0],
            "proj:bbox": [west, south, east, north]}


_CACHED = ("file:", "proj:", "raster:")


def _file_metadata(fs, path: str, kind: str, item_url: str, deps: str | None, so) -> dict[str, Any]:
    """Asset fields of an export file (``file:*``; for a COG ``proj:*`` and ``raster:bands``).

    Reading them means reading the whole file (the checksum), so they are taken from the item the
    catalog already holds when that item describes the same file: same size and same ``sm1km:deps``
    (the digest of everything the file was computed from, embedded in the file; exports are
    deterministic, so equal deps mean equal bytes). A file without deps, or rewritten with other
    deps, is read again. No modification time is recorded: it would change the items' bytes on every
    copy of the files and break byte-identical re-runs (``verify`` checks the files themselves).
    """
    info = fs.info(path)
    try:
        prev = store.read_json(item_url, so)
    except (OSError, ValueError):
        prev = None
    if isinstance(prev, dict) and deps:
        asset = (prev.get("assets") or {}).get("data") or {}
        props = prev.get("properties") or {}
        if (asset.get("file:size") == int(info["size"]) and props.get("sm1km:deps") == deps
                and asset.get("file:checksum") and (kind != "geotiff" or "raster:bands" in asset)
                and (kind == "geotiff" or "proj:shape" in asset or props.get("sm1km:grid") == "none")):
            return {k: v for k, v in asset.items() if k.startswith(_CACHED)}
    fields: dict[str, Any] = dict(file_fields(fs, path))
    fields.update(geotiff_fields(fs, path) if kind == "geotiff" else grid_fields(fs, path))
    return fields


def relative_href(from_dir: str, to_url: str) -> str:
    """Relative link from folder ``from_dir`` to ``to_url`` (both local paths or both on one bucket/host)."""
    def split(u: str) -> tuple[str, str]:
        if "://" in u:
            scheme, rest = u.split("://", 1)
            host, _, path = rest.partition("/")
            return f"{scheme}://{host}", "/" + path
        return "", os.path.abspath(u)

    (a_host, a_path), (b_host, b_path) = split(from_dir), split(to_url)
    if a_host != b_host:
        raise ConfigError("--out", f"cannot link {to_url} relatively from {from_dir} (another host or bucket).",
                          "pass --base-url (the public URL of the store root) for absolute links.")
    return posixpath.relpath(b_path, a_path)


def build_catalog(cfg: RunConfig, base_url: str | None = None, out_url: str | None = None):
    """Build (not write) the pystac Collection for the run.

    Hrefs: absolute under ``base_url`` if given, else relative from an item's folder
    (``<out_url>/<item id>/``, ``out_url`` defaulting to ``<root>/catalog``) to the store root.
    """
    import pystac
    from pystac.extensions.datacube import DatacubeExtension

    so = cfg.store.storage_options()
    out_url = out_url or cfg.store.url("catalog")
    bbox, geom = _bbox_geometry(cfg)
    start, end = _utc(cfg.period.start), _utc(cfg.period.end) + dt.timedelta(days=1, seconds=-1)

    def href(rel: str, depth: int) -> str:
        """Link to ``<root>/<rel>`` from a document ``depth`` folders below ``out_url``."""
        if base_url:
            return store.join(base_url, rel)
        up = "../" * depth
        to_root = relative_href(out_url, cfg.store.root)
        return posixpath.normpath(posixpath.join(up.rstrip("/") or ".", to_root, rel))

    coll = pystac.Collection(
        id=cfg.name if cfg.name.startswith("sm1km") else f"sm1km-{cfg.name}",
        title=f"sm1km soil moisture — {cfg.name}",
        description="Gap-free daily surface soil moisture (0-5 cm, m3 m-3): ESA CCI SM COMBINED fused with "
                    "rescaled ERA5 at 25 km, downscaled to 1/120 deg with XGBoost trained on ISMN stations.",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        license="CC-BY-4.0",
        keywords=["soil moisture", "ESA CCI", "ERA5", "downscaling", "1 km", "Zarr"],
        providers=[pystac.Provider(name="sm1km", roles=[pystac.ProviderRole.PROCESSOR])],  # written as "processor"
        extra_fields={"sm1km_version": __version__},
    )
    coll.stac_extensions.append(XARRAY_ASSETS_SCHEMA)
    intervals = []
    for pid, (rel, title) in PRODUCTS.items():
        url = cfg.store.url(rel)
        if not store.exists(url, so):
            continue
        ds = store.open_dataset(url, so, decode=False)
        ds_time = store.open_dataset(url, so)[["time"]] if "time" in ds.dims else None
        group = store.open_group(url, so)

        def attrs_of(v, group=group):
            return dict(group[v].attrs)

        t0, t1 = _store_interval(ds_time) if ds_time is not None else (start, end)
        intervals.append((t0, t1))
        open_kwargs = {"consolidated": True, "engine": "zarr", "chunks": {}}
        item = pystac.Item(id=pid, geometry=geom, bbox=bbox, datetime=None, start_datetime=t0, end_datetime=t1,
                           properties={"title": title, "sm1km:store": rel})
        item.stac_extensions.append(XARRAY_ASSETS_SCHEMA)
        item.add_asset("zarr", pystac.Asset(href=href(rel, 1), media_type=ZARR_MEDIA_TYPE, roles=["data"],
                                            title=f"{title} (consolidated Zarr v3)",
                                            extra_fields={"xarray:open_kwargs": open_kwargs}))
        DatacubeExtension.ext(item, add_if_missing=True)
        dims, variables = _datacube(ds, attrs_of, ds_time["time"].values if ds_time is not None else None)
        item.properties["cube:dimensions"] = dims
        item.properties["cube:variables"] = variables
        coll.add_item(item)
        coll.add_asset(pid, pystac.Asset(href=href(rel, 0), media_type=ZARR_MEDIA_TYPE, roles=["data"],
                                         title=title, extra_fields={"xarray:open_kwargs": open_kwargs}))

    fs, root_path = store.filesystem(cfg.store.url("exports"), so)
    fs.invalidate_cache()  # the exports may have grown since this process last listed them
    manifests: dict[str, dict[str, Any]] = {}
    media_types: set[str] = set()
    if fs.exists(root_path):
        for p in sorted(fs.find(root_path)):
            if not p.endswith(tuple(EXPORT_KINDS)):
                continue
            rel = "exports/" + p[len(root_path.rstrip("/")) + 1:]
            folder, fname = posixpath.split(p)
            if folder not in manifests:
                sub = posixpath.dirname(rel)[len("exports"):].strip("/")
                exports = cfg.store.url("exports")
                manifests[folder] = read_manifest(store.join(exports, sub) if sub else exports, so)
            entry = manifests[folder].get(fname) or {}
            if entry.get("empty"):
                continue
            name = fname.rsplit(".", 1)[0]
            kind, media_type = EXPORT_KINDS[p[p.rindex("."):]]
            media_types.add(media_type)
            t0, t1 = _entry_interval(entry) or export_interval(name) or (start, end)
            props: dict[str, Any] = {"title": name}
            if entry.get("deps"):
                props["sm1km:deps"] = entry["deps"]  # changes when the file is rewritten: the item with it
            fields = _file_metadata(fs, p, kind, store.join(out_url, f"{kind}-{name}", f"{kind}-{name}.json"),
                                    entry.get("deps"), so)
            extensions = [PROJECTION_SCHEMA, RASTER_SCHEMA, FILE_SCHEMA] if kind == "geotiff" else \
                [PROJECTION_SCHEMA, FILE_SCHEMA] if "proj:shape" in fields else [FILE_SCHEMA]
            if kind != "geotiff" and "proj:shape" not in fields:
                props["sm1km:grid"] = "none"  # not on the lat/lon grid (MODIS tiles): no proj:* to read again
            # a one-day file also has its instant (``datetime``: what loaders put on the time axis, the
            # master's time label of that day); a month or a year has only its interval
            one_day = t1 - t0 < dt.timedelta(days=1)
            ibox, igeom = bbox, geom
            if "proj:bbox" in fields and fields.get("proj:code") == "EPSG:4326":  # a --bbox export: its own box
                ibox, igeom = _box_geometry(*fields["proj:bbox"])
            item = pystac.Item(id=f"{kind}-{name}", geometry=igeom, bbox=ibox, datetime=t0 if one_day else None,
                               start_datetime=t0, end_datetime=t1, properties=props)
            item.stac_extensions.extend(extensions)
            item.add_asset("data", pystac.Asset(href=href(rel, 1), media_type=media_type, roles=["data"],
                                                extra_fields=fields))
            coll.add_item(item)
            if entry:
                intervals.append((t0, t1))
    coll.item_assets = _item_assets(media_types, zarr=any(pid in PRODUCTS for pid in (i.id for i in coll.get_items())))
    if intervals:
        coll.extent.temporal = pystac.TemporalExtent([[min(a for a, _ in intervals), max(b for _, b in intervals)]])
    return coll


def _item_assets(media_types: set[str], zarr: bool):
    """The collection's ``item_assets``: the Zarr items' ``zarr`` asset and the export items' ``data``."""
    import pystac

    out = {}
    if zarr:
        out["zarr"] = pystac.ItemAssetDefinition.create(title="the product's consolidated Zarr v3 store",
                                                        description="open with xarray (xarray:open_kwargs)",
                                                        media_type=ZARR_MEDIA_TYPE, roles=["data"])
    if media_types:
        out["data"] = pystac.ItemAssetDefinition.create(
            title="exported file", description="int16 soil moisture (scale 0.001, m3 m-3, nodata -32768): a COG, "
                                               "HDF5 or CF netCDF-4 file (see the asset's type); docs/exports.md",
            media_type=next(iter(media_types)) if len(media_types) == 1 else None, roles=["data"])
    return out


def _holds(url: str, payload: bytes, storage_options) -> bool:
    """True if the object at ``url`` already holds exactly ``payload`` (then it is not rewritten)."""
    fs, path = store.filesystem(url, storage_options)
    try:
        with store.permanent_errors(url, storage_options):
            return fs.cat_file(path) == payload
    except FileNotFoundError:
        return False


def catalog(cfg: RunConfig, client=None, base_url: str | None = None, out_url: str | None = None) -> StageResult:
    """Write the STAC catalog to ``out_url`` (default ``<root>/catalog/``); returns the collection URL.

    Returns ``{"collection": url}``. Units in ``.stats`` are the STAC documents (one JSON per item
    and the collection): a document whose bytes are already there is skipped, so a re-run over
    unchanged stores writes nothing (``units_written == 0``); ``items`` counts the items.
    """
    import pystac

    so = cfg.store.storage_options()
    out_url = out_url or cfg.store.url("catalog")
    coll = build_catalog(cfg, base_url, out_url)
    written = skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        coll.normalize_hrefs(tmp)
        coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        files = []
        for dirpath, _, names in os.walk(tmp):
            for f in names:
                rel = os.path.relpath(os.path.join(dirpath, f), tmp).replace(os.sep, "/")
                files.append(rel)
        # items first, the collection last: it is what readers start from
        for rel in sorted(files, key=lambda r: (r == "collection.json", r)):
            with open(os.path.join(tmp, rel), "rb") as fh:
                payload = fh.read()
            url = store.join(out_url, rel)
            if _holds(url, payload, so):
                skipped += 1
                continue
            store.put_atomic(url, payload, so)
            written += 1
    n_items = len(list(coll.get_items()))
    log.info("STAC collection with %d items at %s (%d documents written, %d unchanged)", n_items, out_url,
             written, skipped)
    return StageResult({"collection": store.join(out_url, "collection.json")},
                       {"units_total": len(files), "units_written": written, "units_skipped": skipped,
                        "items": n_items})
