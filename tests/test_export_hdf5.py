"""HDF5 export on the lat/lon grid: CF decoding by xarray (h5netcdf, netCDF4), exact int16 round
trip, windowed == whole, monthly files, a master made by sm1km.storage.master, local and S3."""

from __future__ import annotations

import dataclasses
import os
import posixpath

import h5py
import numpy as np
import pandas as pd
import xarray as xr

import export_stores as es
from sm1km.stages.export import export, plan_jobs
from sm1km.stages.export.common import open_source, portable_text
from sm1km.stages.export.hdf5 import write_hdf5
from sm1km.storage import store

FILL = -32768


def test_daily_hdf5_round_trip(store_root, tmp_path):
    root, so = store_root
    cfg = es.run_config(root, so)
    q = es.make_master(cfg, so)
    out = store.join(root, "exports", "h5")
    files = export(cfg, fmt="hdf5", out=out, with_uncertainty=True, window_pixels=200)["files"]
    assert [posixpath.basename(f) for f in files] == ["sm1km_daily_202001.h5", "sm1km_daily_202002.h5"]
    assert es.listing(out, so) == ["_manifest.json", "sm1km_daily_202001.h5", "sm1km_daily_202002.h5"]
    master = store.open_dataset(cfg.store.url("master.zarr"), so).load()
    t0 = 0
    for f in files:
        p = es.local_copy(f, so, tmp_path)
        for engine in ("h5netcdf", "netcdf4"):
            with xr.open_dataset(p, engine=engine) as ds:
                nt = ds.sizes["time"]
                sel = master.isel(time=slice(t0, t0 + nt))
                assert ds.sm.dtype == np.float64 and ds.sm.attrs["units"] == "m3 m-3"
                np.testing.assert_array_equal(ds.time.values, sel.time.values)
                np.testing.assert_array_equal(ds.lat.values, sel.lat.values)
                np.testing.assert_array_equal(ds.lon.values, sel.lon.values)
                np.testing.assert_array_equal(ds.sm.values, sel.sm.values)     # NaN at fill, same floats
                np.testing.assert_array_equal(ds.sm_uncertainty.values, sel.sm_uncertainty.values)
                assert ds.sm.attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
                assert ds.sm.attrs["grid_mapping"] == "crs" and ds.crs.attrs["grid_mapping_name"] == "latitude_longitude"
                assert ds.attrs["sm1km_version"] and "exported by sm1km" in ds.attrs["history"]
                # the master's config, with its paths relative to the store root (no machine path)
                assert ds.attrs["sm1km_config"] == portable_text(master.attrs["sm1km_config"], root)
                assert ds.attrs["source_store"] == ("master.zarr" if "://" not in root else cfg.store.url("master.zarr"))
        with xr.open_dataset(p, engine="h5netcdf", mask_and_scale=False) as raw:
            assert raw.sm.dtype == np.int16
            np.testing.assert_array_equal(raw.sm.values, q["sm"][t0:t0 + raw.sizes["time"]])
        with h5py.File(p) as h:
            d = h["sm"]
            assert d.dtype == np.int16 and d.compression == "gzip" and d.shuffle and d.chunks[0] == 1
            assert d.attrs["_FillValue"] == FILL and d.attrs["scale_factor"] == 0.001 and d.attrs["add_offset"] == 0
            assert [dim.label or d.dims[i][0].name for i, dim in enumerate(d.dims)] == ["/time", "/lat", "/lon"]
        t0 += nt
    assert t0 == len(cfg.dates())


def test_windowed_hdf5_equals_whole(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {}, bbox=(10.0, 45.0, 10.75, 45.5))
    q = es.make_master(cfg, {})["sm"]
    src = open_source(cfg.store.url("master.zarr"), {}, "daily", cfg.fine_grid.per_deg, ["sm"])
    (job,) = plan_jobs(src, fmt="hdf5", layout="latlon", t_indices=[2, 3, 4, 5], rows=slice(3, 20),
                       cols=slice(1, 30), variables=["sm"], out=str(tmp_path / "o"), out_storage_options={},
                       window_pixels=10**9)
    small = dataclasses.replace(job, url=str(tmp_path / "small.h5"), window_pixels=200, chunk_px=1)
    whole = dataclasses.replace(job, url=str(tmp_path / "whole.h5"), window_pixels=10**9, chunk_px=1000)
    n_small, n_whole = write_hdf5(small), write_hdf5(whole)
    assert n_small > 2 * n_whole and n_whole == 2        # 2 time runs (time chunk 4): [2, 3], [4, 5]
    with h5py.File(small.url) as a, h5py.File(whole.url) as b:
        assert a["sm"].chunks == (1, 10, 10) and b["sm"].chunks == (1, 17, 29)
        np.testing.assert_array_equal(a["sm"][...], b["sm"][...])
        np.testing.assert_array_equal(a["sm"][...], q[2:6, 3:20, 1:30])
        np.testing.assert_array_equal(a["lat"][...], src.lat(slice(3, 20)))


def test_monthly_hdf5_one_file_per_year(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {})
    q = es.make_monthly(cfg, {})          # 14 months: 2019-12 .. 2021-01
    files = export(cfg, fmt="hdf5", product="monthly", out=str(tmp_path / "m"))["files"]
    assert [os.path.basename(f) for f in files] == ["sm1km_monthly_2019.h5", "sm1km_monthly_2020.h5",
                                                    "sm1km_monthly_2021.h5"]
    with xr.open_dataset(files[1], engine="h5netcdf") as ds:
        assert list(pd.DatetimeIndex(ds.time.values).strftime("%Y-%m")) == [f"2020-{m:02d}" for m in range(1, 13)]
        np.testing.assert_array_equal(ds.n_valid_days.values, q["n_valid_days"][1:13])
        sm = q["sm"][1:13]
        np.testing.assert_array_equal(ds.sm.values, np.where(sm == FILL, np.nan, sm * 0.001))
        assert ds.attrs["product"] == "monthly"
        assert ds.attrs["time_coverage_start"] == "2020-01-01" and ds.attrs["time_coverage_end"] == "2020-12-01"


def test_export_of_a_store_made_by_master_module(tmp_path):
    """The real master template (sharded, inner chunks of a whole time block) exports exactly."""
    from sm1km.core.encoding import encode_int16
    from sm1km.storage import master

    cfg = es.run_config(str(tmp_path / "store"), {}, bbox=(10.0, 45.0, 10.5, 45.5), end="2020-02-05")
    cfg = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"tile_cells": 1, "time_block_days": 4})})
    url = cfg.store.url("master.zarr")
    tpl, enc = master.master_template(cfg)
    store.create_template(url, tpl, enc)
    rng = np.random.default_rng(2)
    sm = rng.uniform(0, 0.6, tpl.sm.shape)
    sm[:, :3, :] = np.nan
    q = encode_int16(sm)
    # write one block of shards, leave the last time block unwritten (reads as fill)
    master.write_packed(url, {"time": slice(0, 4)}, {"sm": q[:4], "sm_uncertainty": q[:4]})
    src = open_source(url, {}, "daily", cfg.fine_grid.per_deg, ["sm"])
    assert src.unit == (10, 10) and src.time_unit == 4
    (f,) = [x for x in export(cfg, fmt="hdf5", out=str(tmp_path / "o"), window_pixels=100)["files"] if x.endswith("202002.h5")]
    with xr.open_dataset(f, engine="h5netcdf", mask_and_scale=False) as ds:
        np.testing.assert_array_equal(ds.sm.values[:2], q[2:4])
        assert (ds.sm.values[2:] == FILL).all()                 # unwritten shards are fill, not 0
    import rasterio

    tifs = export(cfg, fmt="geotiff", out=str(tmp_path / "t"), window_pixels=100)["files"]
    with rasterio.open(tifs[1]) as d:
        np.testing.assert_array_equal(d.read(1), q[1])
        assert d.tags(1)["standard_name"] == "volume_fraction_of_condensed_water_in_soil"


def test_export_of_a_monthly_store_made_by_master_module(tmp_path):
    from sm1km.storage import master

    cfg = es.run_config(str(tmp_path / "store"), {}, start="2020-01-15", end="2020-03-10")
    url = cfg.store.url("monthly.zarr")
    tpl, enc = master.monthly_template(cfg)
    store.create_template(url, tpl, enc)
    q = es.random_int16(tpl.sm.shape, seed=4)
    nvd = np.where(q == FILL, 0, 20).astype(np.int16)
    master.write_packed(url, {"time": slice(0, 3)}, {"sm": q, "n_valid_days": nvd})
    (f,) = export(cfg, fmt="hdf5", product="monthly", out=str(tmp_path / "m"))["files"]
    with xr.open_dataset(f, engine="h5netcdf", mask_and_scale=False) as ds:
        assert list(pd.DatetimeIndex(ds.time.values).strftime("%Y-%m-%d")) == ["2020-01-01", "2020-02-01", "2020-03-01"]
        np.testing.assert_array_equal(ds.sm.values, q)
        np.testing.assert_array_equal(ds.n_valid_days.values, nvd)
        assert ds.sm.attrs["cell_methods"].startswith("time: mean")
    import rasterio

    tifs = export(cfg, fmt="geotiff", product="monthly", out=str(tmp_path / "t"))["files"]
    assert [os.path.basename(t) for t in tifs] == ["sm1km_monthly_202001.tif", "sm1km_monthly_202002.tif",
                                                   "sm1km_monthly_202003.tif"]
    with rasterio.open(tifs[2]) as d:
        np.testing.assert_array_equal(d.read(1), q[2])
