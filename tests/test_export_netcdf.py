"""netCDF export (CF netCDF-4 on the lat/lon grid): decoded by xarray (both engines) equal to the
master for the same days, raw int16 unchanged, time/lat/lon bounds, chunking and compression, one
file per month or per year (config or option), monthly files, options refused where they do not
apply, CF-1.8 + ACDD-1.3 clean by compliance-checker, the pipeline's export step with netcdf named
in the config, local and S3."""

from __future__ import annotations

import dataclasses
import posixpath

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import export_stores as es
from sm1km.config import RunConfig
from sm1km.errors import ConfigError
from sm1km.stages.export import export, plan_jobs
from sm1km.stages.export.common import open_source, portable_text
from sm1km.stages.export.manifest import DEPS_ATTR, embedded_deps, read_manifest
from sm1km.stages.export.netcdf import write_netcdf
from sm1km.storage import master, store

FILL = -32768


def test_daily_netcdf_round_trip(store_root, tmp_path):
    import netCDF4

    pytest.importorskip("rioxarray")  # registers the .rio accessor

    root, so = store_root
    cfg = es.run_config(root, so)
    q = es.make_master(cfg, so)
    out = store.join(root, "exports", "nc")
    res = export(cfg, fmt="netcdf", out=out, with_uncertainty=True, window_pixels=200)
    files = res["files"]
    assert [posixpath.basename(f) for f in files] == ["sm1km_daily_202001.nc", "sm1km_daily_202002.nc"]
    assert es.listing(out, so) == ["_manifest.json", "sm1km_daily_202001.nc", "sm1km_daily_202002.nc"]
    assert res.stats["units_written"] == 2
    master = store.open_dataset(cfg.store.url("master.zarr"), so).load()
    t0 = 0
    for f in files:
        p = es.local_copy(f, so, tmp_path)
        for engine in ("netcdf4", "h5netcdf"):
            with xr.open_dataset(p, engine=engine) as ds:
                nt = ds.sizes["time"]
                sel = master.isel(time=slice(t0, t0 + nt))
                assert ds.sm.dims == ("time", "lat", "lon") and ds.sm.attrs["units"] == "m3 m-3"
                np.testing.assert_array_equal(ds.time.values, sel.time.values)
                np.testing.assert_array_equal(ds.lat.values, sel.lat.values)
                np.testing.assert_array_equal(ds.lon.values, sel.lon.values)
                np.testing.assert_array_equal(ds.sm.values, sel.sm.values)     # NaN at fill, same floats
                np.testing.assert_array_equal(ds.sm_uncertainty.values, sel.sm_uncertainty.values)
                assert ds.sm.attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
                assert ds.sm.attrs.get("grid_mapping", ds.sm.encoding.get("grid_mapping")) == "crs"
                assert ds.crs.attrs["grid_mapping_name"] == "latitude_longitude"
                assert ds.sm.rio.crs.to_epsg() == 4326 and "crs" in ds.sm.coords   # rioxarray, no options
                w, s, e, n = ds.sm.rio.bounds()
                assert (w, s, e, n) == (ds.attrs["geospatial_lon_min"], ds.attrs["geospatial_lat_min"],
                                        ds.attrs["geospatial_lon_max"], ds.attrs["geospatial_lat_max"])
                # bounds: a day is [day, day + 1); cells [centre - res/2, centre + res/2]
                tb = ds.time_bnds.values
                np.testing.assert_array_equal(tb[:, 0], sel.time.values)
                np.testing.assert_array_equal(tb[:, 1] - tb[:, 0], np.full(nt, np.timedelta64(1, "D")))
                np.testing.assert_allclose(ds.lat_bnds.values.mean(axis=1), ds.lat.values, rtol=0, atol=1e-12)
                np.testing.assert_allclose(ds.lon_bnds.values[:, 1] - ds.lon_bnds.values[:, 0], 0.025, atol=1e-12)
                assert ds.attrs["sm1km_version"] and "exported by sm1km" in ds.attrs["history"]
                assert ds.attrs["sm1km_config"] == portable_text(master.attrs["sm1km_config"], root)
                days = pd.DatetimeIndex(sel.time.values).strftime("%Y-%m-%d")
                assert (ds.attrs["time_coverage_start"], ds.attrs["time_coverage_end"]) == (days[0], days[-1])
                assert ds.attrs["id"] == f"sm1km.daily.netcdf.{days[0][:7].replace('-', '')}"
                assert ds.attrs["license"] == "CC-BY-4.0" and ds.attrs["Conventions"] == "CF-1.8, ACDD-1.3"
        with xr.open_dataset(p, mask_and_scale=False) as raw:
            assert raw.sm.dtype == np.int16
            np.testing.assert_array_equal(raw.sm.values, q["sm"][t0:t0 + raw.sizes["time"]])
        with netCDF4.Dataset(p) as nc:
            assert nc.data_model == "NETCDF4" and nc.file_format == "NETCDF4"
            v = nc["sm"]
            assert v.dtype == np.int16 and v.chunking() == [1, 20, 20]
            assert v.filters()["zlib"] and v.filters()["shuffle"] and v.filters()["complevel"] == 4
            assert v._FillValue == FILL and v.scale_factor == 0.001 and v.add_offset == 0
            assert v.valid_range.dtype == np.int16 if "valid_range" in v.ncattrs() else True
            assert isinstance(nc.getncattr("title"), str)  # text as NC_CHAR
            assert nc.getncattr(DEPS_ATTR) == read_manifest(out, so)[posixpath.basename(f)]["deps"]
        assert embedded_deps(f, so) == read_manifest(out, so)[posixpath.basename(f)]["deps"]
        t0 += nt
    assert t0 == len(cfg.dates())
    # a second export is a no-op
    again = export(cfg, fmt="netcdf", out=out, with_uncertainty=True, window_pixels=200)
    assert again.stats["units_written"] == 0 and again.stats["units_skipped"] == 2


def test_windowed_netcdf_equals_whole(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {}, bbox=(10.0, 45.0, 10.75, 45.5))
    q = es.make_master(cfg, {})["sm"]
    src = open_source(cfg.store.url("master.zarr"), {}, "daily", cfg.fine_grid.per_deg, ["sm"])
    (job,) = plan_jobs(src, fmt="netcdf", layout="latlon", t_indices=[2, 3, 4, 5], rows=slice(3, 20),
                       cols=slice(1, 30), variables=["sm"], out=str(tmp_path / "o"), out_storage_options={},
                       window_pixels=10**9)
    small = dataclasses.replace(job, url=str(tmp_path / "small.nc"), window_pixels=200, chunk_px=1)
    whole = dataclasses.replace(job, url=str(tmp_path / "whole.nc"), window_pixels=10**9, chunk_px=1000)
    n_small, n_whole = write_netcdf(small), write_netcdf(whole)
    assert n_small > 2 * n_whole and n_whole == 2
    with xr.open_dataset(small.url, mask_and_scale=False) as a, xr.open_dataset(whole.url, mask_and_scale=False) as b:
        assert a.sm.encoding["chunksizes"] == (1, 10, 10) and b.sm.encoding["chunksizes"] == (1, 17, 29)
        np.testing.assert_array_equal(a.sm.values, b.sm.values)
        np.testing.assert_array_equal(a.sm.values, q[2:6, 3:20, 1:30])
        np.testing.assert_array_equal(a.lat.values, src.lat(slice(3, 20)))
        assert (a.attrs["geospatial_lat_max"], a.attrs["geospatial_lon_min"]) == src.edges(slice(3, 20), slice(1, 30))[3::-3]


def test_one_file_per_year_from_the_config_or_the_option(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {}, start="2019-12-30", end="2020-01-03")
    es.make_master(cfg, {})
    data = cfg.model_dump(mode="json")
    data["export"] = {"netcdf": {"period": "year"}}
    ycfg = RunConfig.from_dict(data)
    files = export(ycfg, fmt="netcdf", out=str(tmp_path / "y"))["files"]
    assert [posixpath.basename(f) for f in files] == ["sm1km_daily_2019.nc", "sm1km_daily_2020.nc"]
    with xr.open_dataset(files[1]) as ds:
        assert ds.sizes["time"] == 3 and ds.attrs["id"] == "sm1km.daily.netcdf.2020"
        assert ds.attrs["time_coverage_end"] == "2020-01-03"
    # the option wins over the config
    files = export(ycfg, fmt="netcdf", out=str(tmp_path / "m"), file_period="month")["files"]
    assert [posixpath.basename(f) for f in files] == ["sm1km_daily_201912.nc", "sm1km_daily_202001.nc"]
    # the period is part of each file's digest
    assert read_manifest(str(tmp_path / "y"), {})["sm1km_daily_2020.nc"]["deps"] != \
        read_manifest(str(tmp_path / "m"), {})["sm1km_daily_202001.nc"]["deps"]
    with pytest.raises(ConfigError, match="file period"):
        export(cfg, fmt="hdf5", out=str(tmp_path / "h"), file_period="year")
    with pytest.raises(ConfigError, match="unknown file period"):
        export(cfg, fmt="netcdf", out=str(tmp_path / "h"), file_period="week")
    with pytest.raises(ConfigError, match="modis-sinusoidal"):
        export(cfg, fmt="netcdf", layout="modis-sinusoidal", out=str(tmp_path / "h"))
    with pytest.raises(ConfigError, match="export.formats"):
        RunConfig.from_dict({**data, "export": {"formats": ["netcdf", "zarr"]}})


def test_monthly_netcdf(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {})
    q = es.make_monthly(cfg, {})
    files = export(cfg, fmt="netcdf", product="monthly", out=str(tmp_path / "m"))["files"]
    assert [posixpath.basename(f) for f in files] == ["sm1km_monthly_2019.nc", "sm1km_monthly_2020.nc",
                                                      "sm1km_monthly_2021.nc"]
    monthly = store.open_dataset(cfg.store.url("monthly.zarr")).load()
    with xr.open_dataset(files[1]) as ds:
        assert ds.sizes["time"] == 12
        sel = monthly.isel(time=slice(1, 13))
        np.testing.assert_array_equal(ds.sm.values, sel.sm.values)
        np.testing.assert_array_equal(ds.n_valid_days.values, q["n_valid_days"][1:13])
        b = pd.DatetimeIndex(ds.time_bnds.values[:, 1])
        assert (b == pd.DatetimeIndex(ds.time.values) + pd.offsets.MonthBegin(1)).all()
        assert ds.attrs["id"] == "sm1km.monthly.netcdf.2020"
    files = export(cfg, fmt="netcdf", product="monthly", out=str(tmp_path / "mm"), file_period="month")["files"]
    assert len(files) == 14 and posixpath.basename(files[0]) == "sm1km_monthly_201912.nc"


def test_netcdf_is_cf_and_acdd_clean(tmp_path):
    pytest.importorskip("compliance_checker")
    from test_cf_compliance import _master, assert_clean, assert_typed, check

    cfg, _ = _master(tmp_path)
    files = export(cfg, fmt="netcdf", out=str(tmp_path / "o"), with_uncertainty=True, window_pixels=100)["files"]
    assert len(files) == 2
    for f in files:
        assert_typed(f)
        assert check(f)["cf"] == []   # no error at all, the file name included (.nc)
        assert_clean(f)
    with xr.open_dataset(files[1]) as ds:
        assert ds.attrs["time_coverage_start"] == "2020-02-01" and ds.attrs["time_coverage_end"] == "2020-02-05"
        assert (ds.attrs["geospatial_lat_min"], ds.attrs["geospatial_lat_max"]) == (45.0, 45.5)
        assert (ds.attrs["geospatial_lon_min"], ds.attrs["geospatial_lon_max"]) == (10.0, 10.5)
    # the monthly store as aggregate writes it (sm1km.storage.master.monthly_template)
    cfgm = es.run_config(str(tmp_path / "mstore"), {}, start="2020-01-15", end="2020-03-10")
    url = cfgm.store.url("monthly.zarr")
    tpl, enc = master.monthly_template(cfgm)
    store.create_template(url, tpl, enc)
    q = es.random_int16(tpl.sm.shape, seed=4)
    master.write_packed(url, {"time": slice(0, 3)}, {"sm": q, "n_valid_days": np.where(q == FILL, 0, 20).astype(np.int16)})
    (f,) = export(cfgm, fmt="netcdf", product="monthly", out=str(tmp_path / "m"))["files"]
    assert_typed(f)
    assert check(f)["cf"] == []
    assert_clean(f)


def test_pipeline_exports_netcdf_when_the_config_names_it(tmp_path):
    from sm1km.pipeline import export_deliverables

    cfg = es.run_config(str(tmp_path / "store"), {})
    es.make_master(cfg, {})
    assert cfg.export.formats == ("geotiff", "hdf5")          # the default is unchanged
    data = cfg.model_dump(mode="json")
    data["export"] = {"formats": ["hdf5", "netcdf"]}
    res = export_deliverables(RunConfig.from_dict(data))
    assert sorted(res) == ["hdf5", "netcdf"]
    assert [posixpath.basename(f) for f in res["netcdf"]] == ["sm1km_daily_202001.nc", "sm1km_daily_202002.nc"]
    assert res["netcdf"][0].startswith(cfg.store.url("exports", "netcdf"))


def test_netcdf_export_grows_with_the_master(store_root, tmp_path):
    """Grown (to day N, then N + k) equals one shot, decoded; the closed month's file is left as it was
    (same bytes, not rewritten), the open month's rewritten atomically; files of a killed run (no
    manifest) are adopted by their embedded digest; a second export is a no-op."""
    from sm1km.stages.export.manifest import MANIFEST
    from sm1km.testing.worlds import fixed_timestamps
    from test_export_grow import N0, _objects, _stamps, _world, _write_master

    root, so = store_root
    cfg, q = _world(root, so)
    one_out, out = store.join(root, "exports", "one"), store.join(root, "exports", "netcdf")
    with fixed_timestamps():
        one = export(cfg, fmt="netcdf", out=one_out)
        _write_master(cfg, so, q, N0)
        first = export(cfg, fmt="netcdf", out=out)
        assert first.stats["units_written"] == 2
        before, stamps = _objects(out, so), _stamps(out, so)
        _write_master(cfg, so, q, len(q["sm"]))
        grown = export(cfg, fmt="netcdf", out=out)
    assert [posixpath.basename(f) for f in grown["files"]] == [posixpath.basename(f) for f in one["files"]]
    assert grown.stats["units_written"] == grown.stats["units_rewritten"] == 1 and grown.stats["units_skipped"] == 1
    after = _objects(out, so)
    assert after["sm1km_daily_201912.nc"] == before["sm1km_daily_201912.nc"]
    assert _stamps(out, so)["sm1km_daily_201912.nc"] == stamps["sm1km_daily_201912.nc"]
    assert after["sm1km_daily_202001.nc"] != before["sm1km_daily_202001.nc"]
    master_ds = store.open_dataset(cfg.store.url("master.zarr"), so).load()
    for name, payload in after.items():
        if name == MANIFEST:
            continue
        p = tmp_path / name
        p.write_bytes(payload)
        with xr.open_dataset(p) as ds, xr.open_dataset(es.local_copy(store.join(one_out, name), so, tmp_path)) as o:
            xr.testing.assert_identical(ds.drop_attrs(), o.drop_attrs())
            np.testing.assert_array_equal(ds.sm.values, master_ds.sm.sel(time=ds.time).values)
    man = read_manifest(out, so)
    assert man["sm1km_daily_202001.nc"]["time_coverage_end"] == "2020-01-12" and man["sm1km_daily_202001.nc"]["n_days"] == 12
    stamps2 = _stamps(out, so)
    again = export(cfg, fmt="netcdf", out=out)
    assert again.stats["units_written"] == 0 and again.stats["tasks"] == 0 and _stamps(out, so) == stamps2
    # a killed run: files there, no manifest -> adopted; a foreign file under a name -> rewritten
    fs, path = store.filesystem(out, so)
    fs.rm(posixpath.join(path, MANIFEST))
    fs.pipe_file(posixpath.join(path, "sm1km_daily_201912.nc"), b"CDF\x01 not a netCDF-4 file")
    with fixed_timestamps():
        res = export(cfg, fmt="netcdf", out=out)
    assert res.stats["units_adopted"] == 1 and res.stats["units_rewritten"] == 1
    assert _objects(out, so)["sm1km_daily_201912.nc"] == before["sm1km_daily_201912.nc"]  # deterministic bytes


@pytest.mark.network
def test_netcdf_export_on_a_dask_cluster_s3_to_s3(s3_bucket, tmp_path):
    from distributed import Client, LocalCluster

    bucket, so = s3_bucket
    root = f"s3://{bucket}/run"
    cfg = es.run_config(root, so, start="2020-01-01", end="2020-03-05")
    q = es.make_master(cfg, so)
    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        res = export(cfg, c, fmt="netcdf", out=store.join(root, "nc"), window_pixels=200)
    assert res.stats["tasks"] == 3
    t0 = 0
    for f in res["files"]:   # three files written by concurrent threads of one worker (netCDF-C's lock)
        with xr.open_dataset(es.local_copy(f, so, tmp_path), mask_and_scale=False) as ds:
            np.testing.assert_array_equal(ds.sm.values, q["sm"][t0:t0 + ds.sizes["time"]])
            t0 += ds.sizes["time"]
    assert t0 == len(cfg.dates())


def test_cli_exports_netcdf(tmp_path, capsys):
    from sm1km.cli import main

    cfg = es.run_config(str(tmp_path / "store"), {})
    es.make_master(cfg, {})
    yml = tmp_path / "run.yaml"
    yml.write_text(cfg.to_yaml())
    assert main(["export", "--config", str(yml), "--format", "netcdf", "--file-period", "year"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [cfg.store.url("exports", "netcdf", "sm1km_daily_2020.nc")]
    assert main(["export", "--config", str(yml), "--format", "hdf5", "--file-period", "year"]) == 2
    err = capsys.readouterr().err
    assert "--file-period" in err and "netcdf" in err
