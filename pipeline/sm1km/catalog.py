"""``sm1km catalog``: a STAC Collection + Items (pystac) describing the run's products.

One Item per Zarr product (``fused``, ``master``, ``monthly``) with the datacube extension
(dimensions, variables, units, scale/fill) and a Zarr asset, plus one Item per exported file
(GeoTIFF/HDF5). Hrefs are relative to the catalog by default, so the whole store root can be
served over HTTP (or S3 public read) as is; ``--base-url`` writes absolute links instead.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from . import __version__, store
from .config import RunConfig
from .stage import add_config_argument, load_config

log = logging.getLogger(__name__)

PRODUCTS = {
    "fused": ("fused.zarr", "Gap-free 25 km daily surface soil moisture (CCI + rescaled ERA5)"),
    "master": ("master.zarr", "Gap-free 1 km daily surface soil moisture (downscaled), Zarr master"),
    "monthly": ("monthly.zarr", "1 km monthly mean surface soil moisture"),
}
ZARR_MEDIA_TYPE = "application/vnd+zarr"


def _datacube(ds, attrs_of) -> tuple[dict, dict]:
    """STAC datacube ``cube:dimensions`` and ``cube:variables`` for an (undecoded) xarray Dataset."""
    dims: dict[str, Any] = {}
    for d in ds.dims:
        c = ds[d].values if d in ds.coords else None
        if d == "time" and c is not None:
            t = pd.DatetimeIndex(c)
            dims[d] = {"type": "temporal", "extent": [t.min().isoformat() + "Z", t.max().isoformat() + "Z"],
                       "step": "P1D" if len(t) < 2 or (t[1] - t[0]) == pd.Timedelta("1D") else None}
        elif d in ("lat", "lon") and c is not None:
            step = float(abs(c[1] - c[0])) if len(c) > 1 else None
            dims[d] = {"type": "spatial", "axis": "y" if d == "lat" else "x",
                       "extent": [float(np.min(c)), float(np.max(c))], "step": step,
                       "reference_system": 4326}
        else:
            dims[d] = {"type": "other", "size": int(ds.sizes[d])}
    variables: dict[str, Any] = {}
    for v in ds.data_vars:
        a = attrs_of(v)
        entry = {"type": "data", "dimensions": list(ds[v].dims), "data_type": str(ds[v].dtype)}
        for key in ("units", "long_name", "standard_name"):
            if key in a:
                entry["unit" if key == "units" else key] = a[key]
        if "long_name" in a:
            entry["description"] = a["long_name"]
        for key in ("scale_factor", "add_offset", "_FillValue"):
            if key in a:
                val = a[key]
                entry[key.lstrip("_").lower() if key != "_FillValue" else "nodata"] = \
                    val.item() if hasattr(val, "item") else val
        variables[v] = entry
    return dims, variables


def _bbox_geometry(cfg: RunConfig):
    b = cfg.coarse_region.bbox
    bbox = [b.west, b.south, b.east, b.north]
    geom = {"type": "Polygon", "coordinates": [[[b.west, b.south], [b.east, b.south], [b.east, b.north],
                                                [b.west, b.north], [b.west, b.south]]]}
    return bbox, geom


def build_catalog(cfg: RunConfig, base_url: str | None = None):
    """Build (not write) the pystac Collection for the run; hrefs relative unless ``base_url``."""
    import pystac
    from pystac.extensions.datacube import DatacubeExtension

    so = cfg.store.storage_options()
    bbox, geom = _bbox_geometry(cfg)
    start = dt.datetime.combine(cfg.period.start, dt.time(), tzinfo=dt.timezone.utc)
    end = dt.datetime.combine(cfg.period.end, dt.time(), tzinfo=dt.timezone.utc)
    coll = pystac.Collection(
        id=f"sm1km-{cfg.name}",
        title=f"sm1km soil moisture — {cfg.name}",
        description="Gap-free daily surface soil moisture (0-5 cm, m3 m-3): ESA CCI SM COMBINED fused with "
                    "rescaled ERA5 at 25 km, downscaled to 1/120 deg with XGBoost trained on ISMN stations.",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        license="CC-BY-4.0",
        keywords=["soil moisture", "ESA CCI", "ERA5", "downscaling", "1 km", "Zarr"],
        providers=[pystac.Provider(name="sm1km", roles=["processor"])],
        extra_fields={"sm1km_version": __version__},
    )

    def href(rel: str) -> str:
        return store.join(base_url, rel) if base_url else f"../../{rel}"

    for pid, (rel, title) in PRODUCTS.items():
        url = cfg.store.url(rel)
        if not store.exists(url, so):
            continue
        ds = store.open_dataset(url, so, decode=False)
        group = store.open_group(url, so)

        def attrs_of(v, group=group):
            return dict(group[v].attrs)

        item = pystac.Item(id=pid, geometry=geom, bbox=bbox, datetime=None, start_datetime=start,
                           end_datetime=end, properties={"title": title})
        item.add_asset("zarr", pystac.Asset(href=href(rel), media_type=ZARR_MEDIA_TYPE, roles=["data"],
                                            title=f"{title} (consolidated Zarr v3)",
                                            extra_fields={"xarray:open_kwargs": {"consolidated": True,
                                                                                 "engine": "zarr"}}))
        dc = DatacubeExtension.ext(item, add_if_missing=True)
        dims, variables = _datacube(ds, attrs_of)
        item.properties["cube:dimensions"] = dims
        item.properties["cube:variables"] = variables
        del dc
        coll.add_item(item)

    fs, root_path = store.filesystem(cfg.store.url("exports"), so)
    if fs.exists(root_path):
        for p in sorted(fs.find(root_path)):
            if not p.endswith((".tif", ".h5")):
                continue
            rel = "exports/" + p[len(root_path.rstrip("/")) + 1:]
            name = posixpath.basename(p).rsplit(".", 1)[0]
            kind = "geotiff" if p.endswith(".tif") else "hdf5"
            media = "image/tiff; application=geotiff; profile=cloud-optimized" if kind == "geotiff" else "application/x-hdf5"
            item = pystac.Item(id=f"{kind}-{name}", geometry=geom, bbox=bbox, datetime=None,
                               start_datetime=start, end_datetime=end, properties={"title": name})
            item.add_asset("data", pystac.Asset(href=href(rel), media_type=media, roles=["data"]))
            coll.add_item(item)
    return coll


def catalog(cfg: RunConfig, client=None, base_url: str | None = None) -> dict[str, str]:
    """Write the STAC catalog under ``<root>/catalog/``; returns the collection URL."""
    import pystac

    coll = build_catalog(cfg, base_url)
    so = cfg.store.storage_options()
    out_url = cfg.store.url("catalog")
    with tempfile.TemporaryDirectory() as tmp:
        coll.normalize_hrefs(tmp)
        # keep our relative asset hrefs relative to the store root, not to the temp folder
        coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        fs, path = store.filesystem(out_url, so)
        for dirpath, _, files in os.walk(tmp):
            for f in files:
                local = os.path.join(dirpath, f)
                rel = os.path.relpath(local, tmp).replace(os.sep, "/")
                fs.put_file(local, f"{path}/{rel}")
    log.info("STAC collection with %d items at %s", len(list(coll.get_items())), out_url)
    return {"collection": store.join(out_url, "collection.json")}


def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--base-url", default=None,
                   help="public URL of the store root (absolute links); default: relative links")


def run_cli(args) -> int:
    cfg = load_config(args)
    out = catalog(cfg, base_url=args.base_url)
    print(json.dumps(out))
    return 0
