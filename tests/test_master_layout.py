"""Master store layout: shards/inner chunks, CF/ACDD attributes readable by plain zarr, exact
coordinates, fill semantics of unwritten chunks, and the layout benchmark's counting."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from downscale_world import make_config
from sm1km.core.encoding import FILL, decode_int16, encode_int16
from sm1km.core.grid import region_coords
from sm1km.storage import master, store

REPO = Path(__file__).resolve().parents[1]


def test_inner_chunks_divide_the_shard():
    assert master.inner_chunks((32, 120, 120), (32, 30, 30)) == (32, 30, 30)
    assert master.inner_chunks((32, 40, 40), (32, 30, 30)) == (32, 20, 20)
    assert master.inner_chunks((10, 7, 7), (8, 60, 60)) == (5, 7, 7)


def test_default_grid_layout_is_the_measured_one():
    from sm1km.config import GridConfig

    g = GridConfig()
    cfg = make_config("/tmp/unused", factor=30, tile_cells=g.tile_cells, time_block_days=g.time_block_days,
                      inner_days=g.inner_days, inner_cells=g.inner_cells)
    assert master.master_shard(cfg) == (128, 120, 120)
    assert master.master_inner(cfg) == master.MASTER_INNER_PREFERRED == (2, 60, 60)
    # other grids: the inner chunk shrinks to a divisor of the shard
    small = make_config("/tmp/unused", factor=10, tile_cells=1, time_block_days=9)
    assert master.master_shard(small) == (9, 10, 10) and master.master_inner(small) == (1, 10, 10)


def test_template_attrs_readable_by_plain_zarr(store_root):
    root, so = store_root
    cfg = make_config(root, so, tile_cells=2, time_block_days=8)
    url = cfg.store.url(master.MASTER_STORE)
    tpl, enc = master.master_template(cfg, model_sha256="f" * 64)
    assert store.create_template(url, tpl, enc, so)
    g = store.open_group(url, so)
    for name in ("sm", "sm_uncertainty"):
        a = g[name]
        assert a.dtype == np.int16
        assert a.fill_value == FILL  # the Zarr fill value, not only the CF attribute
        assert a.shards == (8, 20, 20) and a.chunks == (2, 20, 20)  # inner: 2 days x 2 cells (= the tile)
        assert [type(c).__name__ for c in a.compressors] == ["BloscCodec"]
        assert a.compressors[0].shuffle.value == "bitshuffle" and a.compressors[0].cname.value == "zstd"
        assert list(a.metadata.dimension_names) == ["time", "lat", "lon"]
        attrs = dict(a.attrs)
        assert attrs["scale_factor"] == 0.001 and attrs["add_offset"] == 0.0 and attrs["_FillValue"] == FILL
        assert attrs["units"] == "m3 m-3" and attrs["grid_mapping"] == "crs"
    assert g["sm"].attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
    crs = dict(g["crs"].attrs)
    assert crs["grid_mapping_name"] == "latitude_longitude"
    assert 'ID["EPSG",4326]' in crs["crs_wkt"] and crs["spatial_ref"] == crs["crs_wkt"]
    ga = dict(g.attrs)
    assert ga["Conventions"] == "CF-1.8, ACDD-1.3" and ga["model_sha256"] == "f" * 64
    assert json.loads(ga["sm1km_config"])["grid"]["factor"] == 10
    # exact coordinates from the grid, descending latitude, float64
    lat, lon = region_coords(cfg.coarse_region, cfg.grid.factor)
    assert g["lat"].dtype == np.float64
    np.testing.assert_array_equal(g["lat"][:], lat)
    np.testing.assert_array_equal(g["lon"][:], lon)
    # no data objects before any region write
    fs, path = store.filesystem(url, so)
    assert not [p for p in fs.find(path) if "/sm/c" in p]


def test_packed_write_decodes_and_unwritten_is_nan(store_root):
    root, so = store_root
    cfg = make_config(root, so, tile_cells=1, time_block_days=16)
    url = cfg.store.url(master.MASTER_STORE)
    tpl, enc = master.master_template(cfg)
    store.create_template(url, tpl, enc, so)
    rng = np.random.default_rng(0)
    vals = rng.uniform(0, 0.5, (16, 10, 10)).astype(np.float32)
    vals[0, 0, 0] = np.nan
    master.write_packed(url, {"time": slice(0, 16), "lat": slice(0, 10), "lon": slice(10, 20)},
                        {"sm": encode_int16(vals)}, so)
    store.finalize(url, so, store.coverage_attrs(cfg.dates()))
    ds = store.open_dataset(url, so, consolidated=True)
    got = ds.sm.isel(time=slice(0, 16), lat=slice(0, 10), lon=slice(10, 20)).values
    np.testing.assert_allclose(got, decode_int16(encode_int16(vals)), atol=1e-7, equal_nan=True)
    assert np.isnan(ds.sm.isel(time=20).values).all()  # never written -> fill -> NaN, not 0.0
    raw = store.open_group(url, so)["sm"]
    assert raw[20, 0, 0] == FILL and raw[0, 0, 10] == FILL
    assert ds.attrs["time_coverage_start"] == "2020-01-01" and ds.attrs["time_coverage_end"] == "2020-02-09"


def test_monthly_template_time_and_bounds(tmp_path):
    cfg = make_config(str(tmp_path))
    tpl, enc = master.monthly_template(cfg)
    url = cfg.store.url(master.MONTHLY_STORE)
    store.create_template(url, tpl, enc)
    ds = xr.open_zarr(url, zarr_format=3, consolidated=False)
    assert list(pd.DatetimeIndex(ds.time.values)) == [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-02-01")]
    np.testing.assert_array_equal(ds.time_bnds.values[:, 1].astype("datetime64[D]"),
                                  np.array(["2020-02-01", "2020-03-01"], "datetime64[D]"))
    g = zarr.open_group(url, mode="r")
    assert g["sm"].fill_value == FILL and g["n_valid_days"].dtype == np.int16


def test_layout_benchmark_counts_requests_and_bytes(tmp_path):
    out = tmp_path / "layout.json"
    spec = importlib.util.spec_from_file_location("master_layout", REPO / "benchmarks" / "master_layout.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--out", str(out), "--series-days", "48", "--tiles", "2", "--tile-px", "60",
                       "--time-block", "16", "--cell", "30", "--points", "2", "--repeats", "1",
                       "--latency-ms", "0", "--candidates", "1,60,60;16,30,30"]) == 0
    res = {tuple(r["inner_chunk"]): r["patterns"] for r in json.loads(out.read_text())["results"]}
    day_maps, series = res[(1, 60, 60)], res[(16, 30, 30)]
    # a day map reads one time slice with (1, y, x) chunks but whole shards with (T, 30, 30) ...
    assert day_maps["map_tile_day"]["bytes"] < series["map_tile_day"]["bytes"] / 4
    # ... and a point series the reverse
    assert series["series_point"]["bytes"] < day_maps["series_point"]["bytes"] / 2
    assert all(p["requests"] >= 1 for r in res.values() for p in r.values())
