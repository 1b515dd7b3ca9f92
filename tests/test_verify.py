"""`sm1km verify`: a finished store passes; an unfinished or non-conforming one is reported (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.cli import main
from sm1km.storage import store


def _write_store(root, finished=True, fill_mismatch=False, n_regions=2):
    url = store.join(root, "cube.zarr")
    time = pd.date_range("2020-01-01", periods=4, freq="D")
    sm = xr.DataArray(np.zeros((4, 4, 2), "float32"), dims=("time", "lat", "lon"),
                      attrs={"units": "m3 m-3", "standard_name": "volume_fraction_of_condensed_water_in_soil"})
    ds = xr.Dataset({"sm": sm.chunk({"time": 4, "lat": 2, "lon": 2})},
                    coords={"time": time, "lat": [10.5, 10.0, 9.5, 9.0], "lon": [1.0, 1.5]},
                    attrs=store.provenance_attrs(title="test"))
    enc = store.cf_int16_encoding(chunks=(4, 2, 2))
    if fill_mismatch:
        enc["fill_value"] = np.int16(0)
    store.create_template(url, ds, {"sm": enc})
    ledger = store.Ledger(root, "cube.zarr")
    for i in range(n_regions if finished else 1):
        reg = {"lat": slice(2 * i, 2 * i + 2)}
        blk = ds.isel(reg).copy(deep=True)
        blk["sm"] = blk.sm.fillna(0.25)
        store.write_region(url, blk[["sm"]], reg)
        ledger.mark(store.region_key(**reg))
    if finished:
        store.finalize(url, attrs=store.coverage_attrs(time))
    return url


def test_finished_store_passes(tmp_path, capsys):
    url = _write_store(str(tmp_path))
    assert main(["verify", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and any("2 regions" in n for n in out["notes"])


def test_unfinished_store_is_reported(tmp_path, capsys):
    url = _write_store(str(tmp_path), finished=False)
    assert main(["verify", url]) == 2
    out = json.loads(capsys.readouterr().out)
    text = " ".join(out["problems"])
    assert "consolidated" in text and "time_coverage_start" in text and "ledger" in text


def test_fill_value_mismatch_is_reported(tmp_path, capsys):
    url = _write_store(str(tmp_path), fill_mismatch=True)
    assert main(["verify", url]) == 2
    assert "fill_value" in capsys.readouterr().out


def test_not_a_store(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2
    assert "not a Zarr v3 store" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- a whole run
import shutil  # noqa: E402

import pytest  # noqa: E402

from sm1km.testing.worlds import run_stage, tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (its GeoTIFF export, plus the HDF5 and netCDF ones) to copy and damage."""
    run = tiny_run(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("verify-run") / "store"
    shutil.copytree(run.cfg.store.root, root)
    cfg = run.config(str(root))
    run_stage("export", cfg, fmt="hdf5")
    run_stage("export", cfg, fmt="netcdf")
    return run, root


def _copy(finished, tmp_path):
    run, src = finished
    root = tmp_path / "store"
    shutil.copytree(src, root)
    cfg = run.config(str(root))
    return root, run.world.write_run_yaml(cfg, tmp_path)


def _verify(capsys, cfg_path):
    rc = main(["verify", "--config", str(cfg_path)])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out), cap.err


def test_finished_run_passes_and_says_what_it_checked(finished, tmp_path, capsys):
    _, cfg_path = _copy(finished, tmp_path)
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 0, err
    assert rep["ok"] and rep["failed"] == 0 and rep["passed"] == rep["checks_run"] == len(rep["checks"])
    by = {(c["check"], c["object"].rsplit("/", 1)[-1]): c for c in rep["checks"]}
    for s in ("fused.zarr", "master.zarr", "monthly.zarr"):
        assert ("store.conventions", s) in by and ("store.deps", s) in by and ("store.shards", s) in by
    assert by[("exports.valid", "geotiff")]["items"] == 12      # every COG validated
    assert by[("exports.valid", "hdf5")]["items"] == 1          # the month's HDF5 opened
    assert by[("exports.valid", "netcdf")]["items"] == by[("exports.deps", "netcdf")]["items"] == 1
    assert by[("catalog.assets", "catalog")]["items"] > 12
    assert by[("store.shards", "master.zarr")]["items"] > 0
    assert "sm1km verify:" not in err


def _problems(rep):
    return [(c["check"], f["object"]) for c in rep["checks"] for f in c["failed"]]


def test_deleted_cog_is_named(finished, tmp_path, capsys):
    root, cfg_path = _copy(finished, tmp_path)
    (root / "exports" / "geotiff" / "sm1km_daily_20200403.tif").unlink()
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 2
    cog = str(root / "exports/geotiff/sm1km_daily_20200403.tif")
    assert _problems(rep) == [("exports.files", cog), ("catalog.assets", cog)]  # the manifest's and the STAC item's
    paras = [p for p in err.splitlines() if p.startswith("sm1km verify:")]
    assert len(paras) == 2 and all(cog in p for p in paras) and "missing" in paras[0]


def test_truncated_shard_is_named(finished, tmp_path, capsys):
    root, cfg_path = _copy(finished, tmp_path)
    shard = root / "master.zarr" / "sm" / "c" / "1" / "0" / "1"
    shard.write_bytes(shard.read_bytes()[:-7])
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 2
    assert _problems(rep) == [("store.shards", str(shard))]
    assert "damaged" in err and "master.zarr/sm/c/1/0/1" in err


def test_marker_without_its_shard_is_named(finished, tmp_path, capsys):
    root, cfg_path = _copy(finished, tmp_path)
    (root / "master.zarr" / "sm" / "c" / "0" / "1" / "1").unlink()
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 2
    marker = str(root / "_ledger/master.zarr/lat-20-40_lon-20-40_time-0-4.json")
    assert ("store.shards", marker) in _problems(rep)
    assert "land pixel-days" in err


def test_manifest_digest_mismatch_is_named(finished, tmp_path, capsys):
    root, cfg_path = _copy(finished, tmp_path)
    man = root / "exports" / "geotiff" / "_manifest.json"
    doc = json.loads(man.read_text())
    doc["files"]["sm1km_daily_20200405.tif"]["deps"] = "0" * 64
    man.write_text(json.dumps(doc))
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 2
    assert _problems(rep) == [("exports.deps", str(root / "exports/geotiff/sm1km_daily_20200405.tif"))]
    assert "sm1km_deps" in err


def test_damaged_netcdf_is_named(finished, tmp_path, capsys):
    """A netCDF file cut short, and one whose time axis is not the manifest's days, are named."""
    import netCDF4

    root, cfg_path = _copy(finished, tmp_path)
    nc = root / "exports" / "netcdf" / "sm1km_daily_202004.nc"
    good = nc.read_bytes()
    nc.write_bytes(good[: len(good) // 2])
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 2 and ("exports.valid", str(nc)) in _problems(rep)
    nc.write_bytes(good)
    with netCDF4.Dataset(nc, "a") as ds:
        ds["time"][0] = ds["time"][0] - 1
    rc, rep, err = _verify(capsys, cfg_path)
    assert rc == 2 and _problems(rep) == [("exports.valid", str(nc))]
    assert "time axis spans 2020-03-31" in err


def test_stale_marker_deps_are_named(finished, tmp_path, capsys):
    root, cfg_path = _copy(finished, tmp_path)
    m = root / "_ledger" / "fused.zarr" / "lat-0-2_lon-0-2_time-4-8.json"
    info = json.loads(m.read_text())
    info["deps"] = "1" * 64
    m.write_text(json.dumps(info))
    rc, rep, _ = _verify(capsys, cfg_path)
    assert rc == 2 and _problems(rep) == [("store.deps", str(m))]


def test_verify_needs_something_to_check(capsys):
    assert main(["verify"]) == 2
    assert "--config" in capsys.readouterr().err
