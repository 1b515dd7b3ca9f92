"""The catalog's daily COG items load with ``odc-stac`` into an xarray equal to the master: decoded
values (raw × ``raster:bands`` scale + offset, nodata → NaN), time (the items' ``datetime``) and
lat/lon (pixel centres from ``proj:transform``, within half a pixel of the master's). odc-stac plans
the load from the items' ``proj:*`` / ``raster:bands`` alone; without them it cannot load at all.
Also over HTTP (the store root served as is, Range requests), as a remote reader would."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from http_server import RangeHTTPServer
from http_world import built_run, run_root
from sm1km.stages import catalog
from stac_schemas import validate

pytestmark = pytest.mark.network
odc_stac = pytest.importorskip("odc.stac")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg, out = built_run(str(run_root(tmp_path_factory)))
    written = catalog.catalog(cfg)
    return cfg, out, Path(written["collection"])


def _daily_items(coll):
    return sorted((i for i in coll.get_items() if i.id.startswith("geotiff-sm1km_daily_")), key=lambda i: i.id)


def _decode(ds: xr.Dataset, item) -> xr.DataArray:
    """Decode the loaded int16 band the way a reader does, from the item's raster:bands."""
    band = item.assets["data"].extra_fields["raster:bands"][0]
    raw = ds["data"]
    return xr.where(raw == band["nodata"], np.nan, raw.astype("float64") * band["scale"] + band["offset"])


def _check_equals_master(ds: xr.Dataset, items, master: xr.Dataset) -> None:
    sm = _decode(ds, items[0]).load()
    times = pd.DatetimeIndex(ds.time.values)
    assert list(times) == [pd.Timestamp(i.datetime).tz_localize(None) for i in items]
    ref = master.sm.sel(time=times)
    assert sm.shape == ref.shape == (2, 20, 20)
    half = 0.5 / 40  # half a pixel (factor 10: 1/40 degree)
    np.testing.assert_allclose(ds.latitude.values, ref.lat.values, rtol=0, atol=half)
    np.testing.assert_allclose(ds.longitude.values, ref.lon.values, rtol=0, atol=half)
    np.testing.assert_array_equal(sm.values, ref.values)  # same floats, NaN where the master has none
    assert np.isnan(ref.values).any() and np.isfinite(ref.values).any()


def test_odc_stac_loads_the_daily_cogs_equal_to_the_master(run):
    import pystac

    cfg, out, coll_path = run
    coll = pystac.Collection.from_file(str(coll_path))
    items = _daily_items(coll)
    assert len(items) == 2
    for it in items:
        validate(it.to_dict(include_self_link=False))
    ds = odc_stac.load(items, bands=["data"], groupby="time", chunks={})
    assert ds["data"].dtype == np.int16 and ds.odc.geobox.crs.epsg == 4326
    master = xr.open_zarr(out["master"])
    _check_equals_master(ds, items, master)


def test_odc_stac_needs_the_projection_fields(run):
    """The fields are what make it work: the same items without ``proj:*`` cannot be loaded."""
    import pystac

    cfg, out, coll_path = run
    items, originals = [], _daily_items(pystac.Collection.from_file(str(coll_path)))
    assert odc_stac.load(originals, bands=["data"], groupby="time", chunks={}).sizes["time"] == 2
    for it in originals:
        d = copy.deepcopy(it.to_dict(include_self_link=False))
        d["assets"]["data"]["href"] = it.assets["data"].get_absolute_href()
        for k in [k for k in d["assets"]["data"] if k.startswith("proj:")]:
            del d["assets"]["data"][k]
        items.append(pystac.Item.from_dict(d, root=None))
    with pytest.raises(ValueError, match="(?i)geobox|crs|projection|resolution"):
        odc_stac.load(items, bands=["data"], groupby="time")


def test_odc_stac_loads_over_http(run):
    import pystac
    import rasterio

    cfg, out, coll_path = run
    with RangeHTTPServer(cfg.store.root) as srv, rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        coll = pystac.Collection.from_file(srv.url("catalog/collection.json"))
        items = _daily_items(coll)
        assert all(i.assets["data"].get_absolute_href().startswith(srv.base_url) for i in items)
        ds = odc_stac.load(items, bands=["data"], groupby="time").load()
    _check_equals_master(ds, items, xr.open_zarr(out["master"]))
    assert json.loads(coll_path.read_text())["id"] == coll.id
