"""``sm1km catalog``: the STAC Collection + Items of a finished run validate offline against the core
STAC JSON schemas (bundled with pystac), the extension schemas bundled in ``tests/data/stac-schemas``
(projection, raster, file, xarray-assets; jsonschema) and our structural check of the datacube
extension, describe the stores and the files exactly (dimensions, variables, units, packing; the
COGs' grid, bands, size and checksum), and every asset href resolves to something that opens over
HTTP (Zarr with xarray, GeoTIFF with GDAL, HDF5 with h5py). No exported file or STAC document names
a local absolute path."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from http_server import RangeHTTPServer
from http_world import built_run, run_root
from sm1km import cli
from sm1km.stages import catalog
from sm1km.storage import publish
from stac_schemas import validate

pytestmark = pytest.mark.network

DATACUBE = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg, out = built_run(str(run_root(tmp_path_factory)))
    written = catalog.catalog(cfg)
    return cfg, out, Path(written["collection"])


def _docs(coll_path: Path) -> tuple[dict, dict[str, dict]]:
    coll = json.loads(coll_path.read_text())
    items = {}
    for link in coll["links"]:
        if link["rel"] == "item":
            d = json.loads((coll_path.parent / link["href"]).read_text())
            items[d["id"]] = d
    return coll, items


def check_datacube(item: dict) -> None:
    """Structure of the datacube extension v2.2 (its schema cannot be fetched offline)."""
    assert DATACUBE in item["stac_extensions"]
    dims, variables = item["properties"]["cube:dimensions"], item["properties"]["cube:variables"]
    assert dims and variables
    for name, d in dims.items():
        assert isinstance(d.get("type"), str), name
        if d["type"] == "spatial":
            assert d["axis"] in ("x", "y") and len(d["extent"]) == 2 and d["extent"][0] <= d["extent"][1]
            assert d["reference_system"] == 4326
        elif d["type"] == "temporal":
            assert len(d["extent"]) == 2
            pd.Timestamp(d["extent"][0]), pd.Timestamp(d["extent"][1])
        else:
            assert "extent" in d or "values" in d, name
    for name, v in variables.items():
        assert v["type"] in ("data", "auxiliary"), name
        assert isinstance(v["dimensions"], list) and set(v["dimensions"]) <= set(dims), name
        assert isinstance(v.get("unit", ""), str) and isinstance(v.get("description", ""), str)


def test_collection_and_items_validate(run):
    import jsonschema
    from pystac.validation import validate_dict

    cfg, out, coll_path = run
    coll, items = _docs(coll_path)
    checked = set()
    for doc in (coll, *items.values()):
        checked.update(validate(doc))  # core (pystac's bundled schemas) + bundled extension schemas
    assert checked == {catalog.PROJECTION_SCHEMA, catalog.RASTER_SCHEMA, catalog.FILE_SCHEMA,
                       catalog.XARRAY_ASSETS_SCHEMA}
    for pid in ("master", "monthly", "fused"):
        check_datacube(items[pid])
    broken = copy.deepcopy(items["master"])
    del broken["properties"]["start_datetime"]
    broken["stac_extensions"] = []
    with pytest.raises(Exception, match="start_datetime|valid"):
        validate_dict(broken)
    # the bundled extension schemas can fail: each broken field is caught
    cog = items["geotiff-sm1km_daily_20200101"]
    for path, value in ((("proj:shape",), [20, 20, 1]), (("proj:transform",), [1, 2, 3]),
                        (("raster:bands", 0, "data_type"), "short"), (("raster:bands", 0, "sampling"), "centre"),
                        (("file:checksum",), "sha256:XYZ"), (("file:size",), -1), (("proj:kode",), "EPSG:4326")):
        bad = copy.deepcopy(cog)
        node = bad["assets"]["data"]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)
    undeclared = copy.deepcopy(cog)
    undeclared["stac_extensions"].remove(catalog.PROJECTION_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # the schema wants its URI in stac_extensions
        jsonschema.Draft7Validator(_schema(catalog.PROJECTION_SCHEMA)).validate(undeclared)
    assert set(items) == {"fused", "master", "monthly", "geotiff-sm1km_daily_20200101",
                          "geotiff-sm1km_daily_20200102", "hdf5-sm1km_monthly_2020", "netcdf-sm1km_daily_202001"}
    # item_assets (STAC 1.1 core): what the items' assets are; the export kinds differ in type
    assert coll["item_assets"] == {
        "zarr": {"title": "the product's consolidated Zarr v3 store", "type": catalog.ZARR_MEDIA_TYPE,
                 "description": "open with xarray (xarray:open_kwargs)", "roles": ["data"]},
        "data": {"title": "exported file", "roles": ["data"], "description": coll["item_assets"]["data"]["description"]}}
    assert all(set(it["assets"]) <= set(coll["item_assets"]) for it in items.values())
    bad = copy.deepcopy(coll)
    bad["item_assets"]["data"] = {"href": "x.tif", "roles": ["data"]}  # a definition has no href
    with pytest.raises(Exception, match="valid|href"):
        validate(bad)


def _schema(uri: str) -> dict:
    from stac_schemas import bundled

    return bundled()[uri]


def test_cog_items_carry_what_loaders_need(run):
    """proj (code, shape, transform, bbox), raster:bands (nodata, scale, offset, data type, unit,
    sampling), file:size/checksum per asset; a daily item has its datetime, a yearly one an interval."""
    import rasterio

    cfg, out, coll_path = run
    _, items = _docs(coll_path)
    root = Path(cfg.store.root)
    for day in ("20200101", "20200102"):
        item = items[f"geotiff-sm1km_daily_{day}"]
        assert set(item["stac_extensions"]) == {catalog.PROJECTION_SCHEMA, catalog.RASTER_SCHEMA, catalog.FILE_SCHEMA}
        asset = item["assets"]["data"]
        path = root / "exports" / "geotiff" / f"sm1km_daily_{day}.tif"
        with rasterio.open(path) as r:
            assert asset["proj:code"] == "EPSG:4326"
            assert asset["proj:shape"] == [r.height, r.width] == [20, 20]
            assert asset["proj:transform"] == [*r.transform[:6], 0.0, 0.0, 1.0]
            assert asset["proj:bbox"] == list(r.bounds) == item["bbox"]
        assert asset["raster:bands"] == [{"data_type": "int16", "nodata": -32768, "scale": 0.001, "offset": 0.0,
                                          "unit": "m3 m-3", "sampling": "area"}]
        data = path.read_bytes()
        assert asset["file:size"] == len(data)
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
        p = item["properties"]
        assert p["datetime"] == f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z" == p["start_datetime"]
    h5 = items["hdf5-sm1km_monthly_2020"]
    assert h5["properties"]["datetime"] is None
    assert h5["stac_extensions"] == [catalog.PROJECTION_SCHEMA, catalog.FILE_SCHEMA]
    data = (root / "exports" / "hdf5" / "sm1km_monthly_2020.h5").read_bytes()
    assert h5["assets"]["data"]["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
    # HDF5 and netCDF on the lat/lon grid: the COGs' grid, to the bit (same region)
    cog = items["geotiff-sm1km_daily_20200101"]["assets"]["data"]
    nc = items["netcdf-sm1km_daily_202001"]
    assert nc["stac_extensions"] == [catalog.PROJECTION_SCHEMA, catalog.FILE_SCHEMA]
    assert nc["assets"]["data"]["type"] == "application/netcdf"
    for asset in (h5["assets"]["data"], nc["assets"]["data"]):
        for k in ("proj:code", "proj:shape", "proj:transform", "proj:bbox"):
            assert asset[k] == cog[k], k
    assert nc["bbox"] == cog["proj:bbox"]
    p = nc["properties"]
    assert (p["start_datetime"], p["end_datetime"]) == ("2020-01-01T00:00:00Z", "2020-01-02T23:59:59Z")


#: an absolute local path in a value: ``/x/y`` at the start or after a space, quote, ``=``, ``(``, ``[`` or ``,``;
#: or ``file://``; a Windows drive
ABS_PATH = re.compile(r"(?:^|[\s\"'=(\[,])/[^\s/\"']+/|file://|\b[A-Za-z]:\\")


def _strings(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(obj, (str, bytes)):
        text = obj.decode("utf-8", "replace") if isinstance(obj, bytes) else obj
        yield where, text
        if text[:1] in "{[":
            try:
                yield from _strings(json.loads(text), where)
            except ValueError:
                pass


def test_no_local_absolute_path_in_files_or_catalog(run):
    """Exported files and STAC documents travel: no machine path in COG tags, HDF5 attrs, items."""
    import h5py
    import rasterio

    cfg, out, coll_path = run
    root = str(Path(cfg.store.root).resolve())
    seen: dict[str, str] = {}
    for f in out["exports"]:
        if f.endswith(".tif"):
            with rasterio.open(f) as r:
                seen.update({f"{f}:{k}": v for k, v in r.tags().items()})
                for b in range(1, r.count + 1):
                    seen.update({f"{f}:band{b}:{k}": v for k, v in r.tags(b).items()})
        else:
            with h5py.File(f) as h:
                h.visititems(lambda n, o, f=f: seen.update({f"{f}:{n}:{k}": v for k, v in o.attrs.items()}))
                seen.update({f"{f}:{k}": v for k, v in h.attrs.items()})
    for p in coll_path.parent.rglob("*.json"):
        seen[str(p)] = p.read_text()
    assert any(k.endswith(":sm1km_config") for k in seen)
    bad = [(k + w, t[:120]) for k, v in seen.items() for w, t in _strings(v)
           if root in t or ABS_PATH.search(t)]
    assert not bad, bad
    tif = next(f for f in out["exports"] if f.endswith(".tif"))
    with rasterio.open(tif) as r:
        tags = r.tags()
    assert tags["source_store"] == "master.zarr"
    conf = json.loads(tags["sm1km_config"])
    assert conf["store"]["root"] == "." and conf["grid"]["factor"] == cfg.grid.factor
    # the check itself can fail
    assert ABS_PATH.search('{"root": "/tmp/pytest-of-x/run"}') and not ABS_PATH.search("1/120 deg, m3/m3")


def test_portable_paths():
    """Pure: how export provenance rewrites paths (relative to the root, else a basename; URLs kept, redacted)."""
    from sm1km.stages.export.common import portable_path, portable_text

    root = "/tmp/pytest-of-x/run"
    assert portable_path(root, root) == "."
    assert portable_path(f"{root}/master.zarr", root) == portable_path(f"file://{root}/master.zarr", root) == "master.zarr"
    assert portable_path("/data/in/truth.zarr", root) == "truth.zarr"
    assert portable_path("/data/cci/*.nc", root) == "cci/*.nc"
    assert portable_path("s3://b/k.nc?X-Amz-Signature=abc", root) == "s3://b/k.nc?X-Amz-Signature=***"
    assert portable_path("s3://b/run/master.zarr", "s3://b/run") == "s3://b/run/master.zarr"
    assert portable_path("ghcr.io/sm1km/sm1km:0.1.0", root) == "ghcr.io/sm1km/sm1km:0.1.0"
    doc = json.loads(portable_text(json.dumps({"store": {"root": root}, "inputs": {"cci": "/in/cci/*.nc",
                                                                                   "era5": "https://u:p@h/e.grib"},
                                               "n": 3}), root))
    assert doc == {"store": {"root": "."}, "inputs": {"cci": "cci/*.nc", "era5": "https://***@h/e.grib"}, "n": 3}
    assert portable_text(f"read {root}/fused.zarr at 1/120 deg (m3/m3)", root) == "read fused.zarr at 1/120 deg (m3/m3)"


def test_datacube_describes_the_stores(run):
    cfg, out, coll_path = run
    _, items = _docs(coll_path)
    for pid in ("master", "monthly"):
        ds = xr.open_zarr(out[pid])
        props = items[pid]["properties"]
        dims, var = props["cube:dimensions"], props["cube:variables"]
        t = pd.DatetimeIndex(ds.time.values)
        assert [pd.Timestamp(x).tz_localize(None) for x in dims["time"]["extent"]] == [t[0], t[-1]]
        assert dims["time"]["step"] == ("P1D" if pid == "master" else "P1M")
        assert dims["lat"]["extent"] == [float(ds.lat.min()), float(ds.lat.max())]
        assert dims["lon"]["step"] == pytest.approx(1 / 40) and dims["lat"]["step"] == pytest.approx(-1 / 40)
        sm = var["sm"]
        assert sm == {**sm, "type": "data", "dimensions": ["time", "lat", "lon"], "data_type": "int16",
                      "unit": "m3 m-3", "scale_factor": 0.001, "add_offset": 0.0, "nodata": -32768}
        assert var["crs"]["type"] == "auxiliary"
        asset = items[pid]["assets"]["zarr"]
        assert asset["type"] == "application/vnd+zarr" and asset["href"] == f"../../{pid}.zarr"
        assert asset["xarray:open_kwargs"]["consolidated"] is True
    assert items["monthly"]["properties"]["end_datetime"] == "2020-02-29T23:59:59Z"
    assert items["master"]["properties"]["end_datetime"] == "2020-02-09T23:59:59Z"
    day = items["geotiff-sm1km_daily_20200102"]["properties"]
    assert (day["start_datetime"], day["end_datetime"]) == ("2020-01-02T00:00:00Z", "2020-01-02T23:59:59Z")


def test_every_asset_opens_over_http(run):
    """Serve the store root as it is; follow the catalog over HTTP to every asset and open it."""
    import fsspec
    import h5py
    import pystac
    import rasterio

    cfg, out, coll_path = run
    with RangeHTTPServer(cfg.store.root) as srv:
        coll = pystac.Collection.from_file(srv.url("catalog/collection.json"))
        opened = set()
        for item in coll.get_items():
            for asset in item.assets.values():
                href = asset.get_absolute_href()
                assert href.startswith(srv.base_url), href
                rel = href[len(srv.base_url) + 1:]
                if asset.media_type == catalog.ZARR_MEDIA_TYPE:
                    remote = xr.open_zarr(href, **{k: v for k, v in asset.extra_fields["xarray:open_kwargs"].items()
                                                    if k != "engine"})
                    xr.testing.assert_identical(remote.load(), xr.open_zarr(str(Path(cfg.store.root) / rel)).load())
                elif asset.media_type == catalog.GEOTIFF_MEDIA_TYPE:
                    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
                        with rasterio.open(f"/vsicurl/{href}") as r, rasterio.open(Path(cfg.store.root) / rel) as local:
                            np.testing.assert_array_equal(r.read(), local.read())
                            assert r.crs.to_epsg() == 4326
                else:
                    with fsspec.open(href, "rb") as f, h5py.File(f, "r") as h:
                        assert len(h.keys()) > 0
                opened.add(item.id)
        for asset in coll.assets.values():  # collection-level Zarr assets
            assert xr.open_zarr(asset.get_absolute_href()).sizes["time"] > 0
    assert len(opened) == 7


def test_cli_writes_catalog_and_publishes(run, tmp_path, capsys):
    cfg, out, _ = run
    pub = tmp_path / "pub"
    root = pub / "runs" / "r1"
    for name in ("master.zarr", "monthly.zarr"):
        shutil.copytree(Path(cfg.store.root) / name, root / name)
    cfg1 = cfg.model_copy(update={"store": cfg.store.model_copy(update={"root": str(root)}), "name": "r1"})
    yml = tmp_path / "run.yaml"
    yml.write_text(cfg1.to_yaml())
    assert cli.main(["catalog", "--config", str(yml), "--out", str(tmp_path / "cat")]) == 0
    assert json.loads(capsys.readouterr().out)["collection"].endswith("cat/collection.json")
    _, items = _docs(tmp_path / "cat" / "collection.json")
    assert items["master"]["assets"]["zarr"]["href"] == "../../pub/runs/r1/master.zarr"
    assert cli.main(["catalog", "--config", str(yml), "--publish-to", str(pub)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["products"]["master"]["href"] == "runs/r1/master.zarr" and "fused" not in doc["products"]
    with RangeHTTPServer(pub) as srv:
        url = publish.resolve(srv.base_url, "monthly")
        assert xr.open_zarr(url).sizes["time"] == 2
    assert cli.main(["catalog", "--config", str(yml), "--publish-to", str(tmp_path / "other")]) == 2


def test_rerun_writes_no_document_and_changes_no_byte(run, tmp_path):
    """Units of ``catalog`` are the STAC documents: a re-run over unchanged stores writes none."""
    cfg, _, coll_path = run
    out = tmp_path / "cat"
    first = catalog.catalog(cfg, out_url=str(out))
    st = first.stats
    assert st["units_total"] == st["units_written"] == st["items"] + 1 and st["units_skipped"] == 0
    before = {p: p.read_bytes() for p in out.rglob("*.json")}
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    again = catalog.catalog(cfg, out_url=str(out))
    assert dict(again) == dict(first)
    assert again.stats["units_written"] == 0 and again.stats["units_skipped"] == st["units_total"]
    assert {p: p.read_bytes() for p in out.rglob("*.json")} == before
    assert {p: p.stat().st_mtime_ns for p in before} == mtimes  # not even rewritten
    # a changed document is written again, the others are not
    victim = next(p for p in before if p.name != "collection.json")
    victim.write_text("{}")
    third = catalog.catalog(cfg, out_url=str(out))
    assert third.stats["units_written"] == 1 and victim.read_bytes() == before[victim]


def test_file_fields_are_read_once_per_file_version(run, tmp_path):
    """The checksum costs a read of the whole file: a re-run takes ``file:*``/``proj:*``/``raster:*``
    from the item already written when it describes the same file (size and ``sm1km:deps``), and
    reads the file again once the item no longer matches it."""
    cfg, out, _ = run
    cat = tmp_path / "cat"
    catalog.catalog(cfg, out_url=str(cat))
    doc_path = cat / "geotiff-sm1km_daily_20200101" / "geotiff-sm1km_daily_20200101.json"
    doc = json.loads(doc_path.read_text())
    tif = Path(cfg.store.root) / "exports" / "geotiff" / "sm1km_daily_20200101.tif"
    true_sum = "1220" + hashlib.sha256(tif.read_bytes()).hexdigest()
    assert doc["assets"]["data"]["file:checksum"] == true_sum and "updated" not in doc["assets"]["data"]
    doc["assets"]["data"]["file:checksum"] = "1220" + "0" * 64  # a marker: kept only if the file is not read
    doc_path.write_text(json.dumps(doc, indent=2))
    catalog.catalog(cfg, out_url=str(cat))
    assert json.loads(doc_path.read_text())["assets"]["data"]["file:checksum"] == "1220" + "0" * 64
    doc["assets"]["data"]["file:size"] += 1  # the item describes another version of the file: read again
    doc_path.write_text(json.dumps(doc, indent=2))
    again = catalog.catalog(cfg, out_url=str(cat))
    assert again.stats["units_written"] == 1
    assert json.loads(doc_path.read_text())["assets"]["data"]["file:checksum"] == true_sum
