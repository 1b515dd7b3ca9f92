"""``sm1km catalog``: the STAC Collection + Items of a finished run validate against the core STAC
JSON schemas (bundled with pystac, offline) and our structural check of the datacube extension,
describe the stores exactly (dimensions, variables, units, packing), and every asset href resolves
to something that opens over HTTP (Zarr with xarray, GeoTIFF with GDAL, HDF5 with h5py)."""

from __future__ import annotations

import copy
import json
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
    from pystac.validation import validate_dict

    cfg, out, coll_path = run
    coll, items = _docs(coll_path)
    for doc in (coll, *items.values()):
        core = copy.deepcopy(doc)
        core["stac_extensions"] = []  # core schemas are bundled with pystac: validated offline
        validate_dict(core)
    for pid in ("master", "monthly", "fused"):
        check_datacube(items[pid])
    broken = copy.deepcopy(items["master"])
    del broken["properties"]["start_datetime"]
    broken["stac_extensions"] = []
    with pytest.raises(Exception, match="start_datetime|valid"):
        validate_dict(broken)
    assert set(items) == {"fused", "master", "monthly", "geotiff-sm1km_daily_20200101",
                          "geotiff-sm1km_daily_20200102", "hdf5-sm1km_monthly_2020"}


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
    assert len(opened) == 6


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
