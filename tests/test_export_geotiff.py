"""GeoTIFF (COG) export: valid COGs, exact int16 round trip, windowed == whole, local and S3."""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

import export_stores as es
from sm1km.errors import ConfigError, StoreError
from sm1km.stages.export import export
from sm1km.storage import store

FILL = -32768


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _reads(caplog) -> list[int]:
    return [int(m.group(1)) for r in caplog.records if (m := re.search(r": (\d+) windows", r.getMessage()))]


def test_daily_cog_round_trip(store_root, tmp_path, caplog):
    root, so = store_root
    cfg = es.run_config(root, so)
    q = es.make_master(cfg, so)
    out = store.join(root, "exports", "tif")
    with caplog.at_level(logging.DEBUG, logger="sm1km.stages.export"):
        files = export(cfg, fmt="geotiff", out=out, with_uncertainty=True, window_pixels=100)["files"]
    names = [f"sm1km_daily_{d:%Y%m%d}.tif" for d in cfg.dates()]
    assert [posixpath.basename(f) for f in files] == names
    assert es.listing(out, so) == ["_manifest.json", *names]  # nothing half-written or temporary left
    assert max(_reads(caplog)) > 1                            # the windowed path ran
    for k, f in enumerate(files):
        p = es.local_copy(f, so, tmp_path)
        valid, errors, _ = cog_validate(p)
        assert valid and not errors
        with rasterio.open(p) as d:
            assert d.count == 2 and d.dtypes == ("int16", "int16") and d.nodata == FILL
            assert d.crs.to_epsg() == 4326
            assert d.transform == Affine(0.025, 0.0, 10.0, 0.0, -0.025, 45.5)
            assert d.scales == (0.001, 0.001) and d.offsets == (0.0, 0.0)
            assert d.descriptions == ("sm", "sm_uncertainty")
            assert d.block_shapes == [(512, 512)] * 2
            ims = d.tags(ns="IMAGE_STRUCTURE")
            assert ims["COMPRESSION"] == "DEFLATE" and ims["PREDICTOR"] == "2" and ims["LAYOUT"] == "COG"
            tags = d.tags()
            assert tags["time"] == f"{cfg.dates()[k]:%Y-%m-%d}" and tags["sm1km_version"]
            assert "exported by sm1km" in tags["history"] and tags["title"] == "sm1km test store"
            assert d.tags(1)["units"] == "m3 m-3"
            a = d.read()
        np.testing.assert_array_equal(a[0], q["sm"][k])
        np.testing.assert_array_equal(a[1], q["sm_uncertainty"][k])


def test_windowed_write_equals_whole_array_write(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # fixes the timestamp of the history tag
    cfg = es.run_config(str(tmp_path / "store"), {}, bbox=(10.0, 45.0, 10.75, 45.5))
    es.make_master(cfg, {})
    with caplog.at_level(logging.DEBUG, logger="sm1km.stages.export.geotiff"):
        small = export(cfg, fmt="geotiff", out=str(tmp_path / "small"), window_pixels=100)["files"]
        n_small = _reads(caplog)
        caplog.clear()
        whole = export(cfg, fmt="geotiff", out=str(tmp_path / "whole"), window_pixels=10**9)["files"]
        n_whole = _reads(caplog)
    assert min(n_small) >= 6 and n_whole == [1] * len(n_whole)
    assert [_sha(a) for a in small] == [_sha(b) for b in whole]     # byte-identical files


def test_overviews_average_ignores_nodata(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {}, factor=40, end="2020-01-30")
    q = es.random_int16((1, 80, 80), seed=11)
    q[0, 10:12, 10:12] = FILL                                # an all-nodata 2x2 block
    q[0, 20:22, 20:22] = [[FILL, 100], [301, FILL]]          # mean of the valid pixels: 200.5
    es.write_store(cfg.store.url("master.zarr"), {}, cfg, {"sm": q}, cfg.dates())
    q = q[0]
    (f,) = export(cfg, fmt="geotiff", out=str(tmp_path / "o"), blocksize=16, window_pixels=400)["files"]
    assert cog_validate(f)[0]
    with rasterio.open(f) as d:
        assert d.overviews(1)[:2] == [2, 4] and d.block_shapes == [(16, 16)]
        ov = d.read(1, out_shape=(40, 40))
    blocks = q.reshape(40, 2, 40, 2).transpose(0, 2, 1, 3).reshape(40, 40, 4).astype(float)
    blocks[blocks == FILL] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN blocks: nodata in the overview
        mean = np.nanmean(blocks, axis=-1)
    assert np.isnan(mean[5, 5]) and mean[10, 10] == 200.5
    nodata = np.isnan(mean)
    assert ((ov == FILL) == nodata).all() and ov[10, 10] in (200, 201)
    assert np.abs(ov[~nodata] - mean[~nodata]).max() <= 0.5 + 1e-9   # average of the valid pixels, rounded


def test_monthly_cogs(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {})
    q = es.make_monthly(cfg, {})
    files = export(cfg, fmt="geotiff", product="monthly", start="2020-01-20", end="2020-03-01",
                   out=str(tmp_path / "m"), compress="zstd")["files"]
    assert [os.path.basename(f) for f in files] == ["sm1km_monthly_202001.tif", "sm1km_monthly_202002.tif",
                                                    "sm1km_monthly_202003.tif"]
    for k, f in enumerate(files, start=1):
        assert cog_validate(f)[0]
        with rasterio.open(f) as d:
            assert d.tags()["time"] == f"2020-{k:02d}" and d.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
            np.testing.assert_array_equal(d.read(1), q["sm"][k])


def test_bbox_subset_and_rerun_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the export's history line has a timestamp
    cfg = es.run_config(str(tmp_path / "store"), {})
    q = es.make_master(cfg, {})["sm"]
    out = str(tmp_path / "o")
    files = export(cfg, fmt="geotiff", start="2020-02-01", end="2020-02-02", bbox="10.26,45.1,10.5,45.26", out=out)["files"]
    assert [os.path.basename(f) for f in files] == ["sm1km_daily_20200201.tif", "sm1km_daily_20200202.tif"]
    with rasterio.open(files[0]) as d:
        assert d.shape == (7, 10)
        assert d.transform == Affine(0.025, 0.0, 10.25, 0.0, -0.025, 45.275)
        np.testing.assert_array_equal(d.read(1), q[2, 9:16, 10:20])
    before = {f: (os.stat(f).st_mtime_ns, _sha(f)) for f in files}
    os.remove(files[1])
    res = export(cfg, fmt="geotiff", start="2020-02-01", end="2020-02-02", bbox="10.26,45.1,10.5,45.26", out=out)
    again = res["files"]
    assert again == files and res["exports"] == out
    assert {k: res.stats[k] for k in ("units_total", "units_written", "units_skipped")} == \
        {"units_total": 2, "units_written": 1, "units_skipped": 1}
    assert os.stat(files[0]).st_mtime_ns == before[files[0]][0]     # kept, not rewritten
    assert _sha(files[1]) == before[files[1]][1]                     # rewritten identically
    export(cfg, fmt="geotiff", start="2020-02-01", end="2020-02-02", bbox="10.26,45.1,10.5,45.26", out=out,
           overwrite=True)
    assert {f: _sha(f) for f in files} == {f: v[1] for f, v in before.items()}


def test_option_errors(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {})
    with pytest.raises(StoreError, match="no Zarr store"):
        export(cfg, fmt="geotiff", out=str(tmp_path / "o"))
    es.make_master(cfg, {})
    es.make_monthly(cfg, {})
    with pytest.raises(ConfigError, match="daily HDF5 only"):
        export(cfg, fmt="geotiff", layout="modis-sinusoidal", out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="no daily time steps"):
        export(cfg, fmt="geotiff", start="2021-01-01", out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="does not overlap"):
        export(cfg, fmt="geotiff", bbox="20,45,21,46", out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        export(cfg, fmt="geotiff", start="1.2.2020", out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="unknown format"):
        export(cfg, fmt="grib2", out=str(tmp_path / "o"))
    with pytest.raises(StoreError, match="sm_uncertainty"):
        export(cfg, fmt="geotiff", product="monthly", with_uncertainty=True, out=str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o")


def test_cli_export(tmp_path, capsys):
    from sm1km.cli import main

    cfg = es.run_config(str(tmp_path / "store"), {})
    q = es.make_master(cfg, {})["sm"]
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())
    out = tmp_path / "cli"
    rc = main(["export", "--config", str(tmp_path / "run.yaml"), "--format", "geotiff", "--product", "daily",
               "--start", "2020-01-31", "--end", "2020-01-31", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "sm1km_daily_20200131.tif")]
    with rasterio.open(printed[0]) as d:
        np.testing.assert_array_equal(d.read(1), q[1])
    rc = main(["export", "--config", str(tmp_path / "run.yaml"), "--bbox", "1,2,3", "--out", str(out)])
    assert rc == 2 and "W,S,E,N" in capsys.readouterr().err
