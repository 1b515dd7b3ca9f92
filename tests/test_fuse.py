"""The fuse stage: contract store, chunk-wise on dask, resumable + byte-identical, the withheld
experiment, the CLI, S3, and the real CCI files end to end."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import DATA_REAL, SHARED_REAL
from fusion_testworld import make_cfg, make_world, write_inputs, write_truth_25km
from sm1km.cli import main
from sm1km.core import fusion as fc
from sm1km.errors import InputError, StoreError
from sm1km.stages.fuse import fuse, land_mask
from sm1km.storage import store
from sm1km.validation.withheld import withheld_experiment


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", protocol="tcp://",
                      host="127.0.0.1") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def world():
    return make_world()


def _setup(tmp_path, world, **fusion):
    cfg = make_cfg(tmp_path / "store", world, **fusion)
    write_inputs(cfg, world)
    return cfg


def _expected(world, method="meanstd", r=1):
    land = land_mask(world.cci.astype(np.float64), world.land_fraction)
    return fc.fuse_block(world.cci, world.era5, land, method, 20, r), land


def test_fuse_writes_the_contract_store(tmp_path, world, client, caplog):
    cfg = _setup(tmp_path, world)
    with caplog.at_level(logging.WARNING, logger="sm1km.stages.fuse"):
        out = fuse(cfg, client=client)
    assert out == {"fused": cfg.store.url("fused.zarr")}
    ds = store.open_dataset(out["fused"], consolidated=True)
    assert list(ds.sm.dims) == ["time", "lat", "lon"] and ds.sm.shape == (60, 8, 8)
    assert ds.sm.dtype == np.float32 and ds.source_flag.dtype == np.uint8
    assert ds.lat.values[0] > ds.lat.values[-1] and np.all(np.diff(ds.lon.values) > 0)
    assert ds.time.dtype == "datetime64[ns]" and str(ds.time.values[0])[:10] == "2020-03-01"
    # chunks: one time block (grid.time_block_days) × fusion.space_chunk in space
    assert ds.sm.encoding["chunks"] == (cfg.grid.time_block_days, 3, 3)
    # CF attributes and provenance
    assert ds.sm.attrs["units"] == "m3 m-3" and ds.sm.attrs["standard_name"]
    assert list(ds.source_flag.attrs["flag_values"]) == [0, 1, 2, 3]
    assert len(ds.source_flag.attrs["flag_meanings"].split()) == 4
    assert "_FillValue" not in ds.source_flag.encoding
    assert ds.attrs["fusion_method"] == "meanstd" and ds.attrs["sm1km_version"]
    assert json.loads(ds.attrs["sm1km_config"])["fusion"]["space_chunk"] == 3
    assert {i["name"] for i in json.loads(ds.attrs["input_files"])} == {"inputs/cci.zarr", "inputs/era5.zarr"}
    assert ds.attrs["time_coverage_end"] == "2020-04-29"
    # values: chunk-wise with halo == the pure core on the whole array
    (sm, flag), land = _expected(world)
    np.testing.assert_array_equal(ds.sm.values, sm)
    np.testing.assert_array_equal(ds.source_flag.values, flag)
    # gap-free over land, sea NaN / flag 0; the coast cell CCI sees is land
    assert np.isfinite(ds.sm.values[:, land]).all() and np.isnan(ds.sm.values[:, ~land]).all()
    assert (ds.source_flag.values[:, ~land] == 0).all() and land[-1, -4] and not land[-2, -4]
    # the never-observed and the dense-forest pixels fall back, and the stage says so
    assert (ds.source_flag.values[:, 5, 1] == 3).all()
    coast = np.isnan(world.cci[:, -1, -4])
    assert (ds.source_flag.values[coast, -1, -4] == 3).all() and (ds.source_flag.values[~coast, -1, -4] == 1).all()
    assert ds.attrs["fusion_era5_borrowed_pixel_days"] == int(coast.sum()) > 0
    assert ds.attrs["fusion_land_pixel_days_without_data"] == 0
    assert ds.attrs["fusion_neighbourhood_pixels"] >= 2 and ds.attrs["fusion_land_pixels"] == int(land.sum())
    assert any("fewer than 20 days" in r.getMessage() for r in caplog.records)


def test_cdf_method_and_mismatch(tmp_path, world):
    cfg = _setup(tmp_path, world)
    fuse(cfg, method="cdf")
    ds = store.open_dataset(cfg.store.url("fused.zarr"))
    (sm, _), _ = _expected(world, "cdf")
    np.testing.assert_array_equal(ds.sm.values, sm)
    with pytest.raises(StoreError, match="method 'cdf'"):
        fuse(cfg)  # the config says meanstd
    fuse(cfg, overwrite=True)
    ds = store.open_dataset(cfg.store.url("fused.zarr"))
    assert ds.attrs["fusion_method"] == "meanstd"
    np.testing.assert_array_equal(ds.sm.values, _expected(world)[0][0])


def test_inputs_are_checked(tmp_path, world):
    cfg = make_cfg(tmp_path / "store", world)
    with pytest.raises(StoreError, match="no Zarr store"):
        fuse(cfg)
    write_inputs(cfg, world)
    longer = cfg.model_copy(update={"period": cfg.period.model_copy(update={"end": world.times[-1].date().replace(
        month=5, day=10)})})
    with pytest.raises(InputError, match="lacks 11 day"):
        fuse(longer)
    shifted = cfg.model_copy(update={"region": cfg.region.model_copy(update={"west": 9.0})})
    with pytest.raises(InputError, match="grid does not match"):
        fuse(shifted)


@pytest.mark.slow
def test_fuse_on_s3(s3_bucket, world):
    bucket, so = s3_bucket
    cfg = make_cfg(f"s3://{bucket}/run", world, space_chunk=4)
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"endpoint_url": so["endpoint_url"]})})
    write_inputs(cfg, world)
    out = fuse(cfg)
    ds = store.open_dataset(out["fused"], cfg.store.storage_options(), consolidated=True)
    np.testing.assert_array_equal(ds.sm.values, _expected(world)[0][0])
    keys = store.Ledger(cfg.store.root, "fused.zarr", cfg.store.storage_options()).keys()
    assert len([k for k in keys if k.startswith("lat-")]) == 4 and "blocks" in keys  # 4 chunks × 1 time block


# ---------------------------------------------------------------------------------- experiment
def test_withheld_experiment(tmp_path, world, client):
    cfg = _setup(tmp_path, world)
    truth = write_truth_25km(cfg, world, tmp_path)
    cfg = cfg.model_copy(update={"inputs": cfg.inputs.model_copy(update={"truth": truth})})
    metrics_url = cfg.store.url("report", "metrics.json")
    os.makedirs(os.path.dirname(metrics_url))
    Path(metrics_url).write_text(json.dumps({"model": {"keep": 1}}))
    res = withheld_experiment(cfg, 0.2, client=client)
    w = res["withheld"]
    assert set(w) == {"fused", "fused_meanstd", "fused_cdf", "era5", "climatology"}
    assert w["fused"] == w["fused_meanstd"] and res["default_method"] == "meanstd"
    assert 0.1 < res["n_withheld"] / res["n_observed"] < 0.3
    assert w["fused"]["n"] == res["n_withheld"] == w["climatology"]["n"]
    assert w["era5"]["n"] < w["fused"]["n"]   # the coastal cell has no ERA5 of its own
    # the fused product beats both baselines at the hidden observations and against the truth
    for ref in ("withheld", "vs_truth", "vs_truth_gaps"):
        m = res[ref]
        assert m["fused"]["ubrmse"] < m["era5"]["ubrmse"], ref
        assert m["fused"]["ubrmse"] < m["climatology"]["ubrmse"], ref
    assert res["default_beats_baselines"] is True
    assert "cci" in res["vs_truth"]
    # fusion.zarr untouched, metrics.json merged
    assert not store.exists(cfg.store.url("fused.zarr"))
    data = json.loads(Path(metrics_url).read_text())
    assert data["model"] == {"keep": 1} and data["fusion"]["withheld"]["fused"]["n"] == w["fused"]["n"]
    assert data["fusion"]["default_method"] == "meanstd"
    # the same numbers in-process, with another chunking (the mask hashes global indices)
    cfg2 = cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update={"space_chunk": 8})})
    res2 = withheld_experiment(cfg2, 0.2, write=False)
    for k in w:
        assert res2["withheld"][k]["n"] == w[k]["n"]
        assert res2["withheld"][k]["ubrmse"] == pytest.approx(w[k]["ubrmse"], rel=1e-9)
    other = withheld_experiment(cfg.model_copy(update={"seeds": cfg.seeds.model_copy(update={"withhold": 8})}),
                                0.2, write=False)
    assert other["withheld"]["fused"]["ubrmse"] != w["fused"]["ubrmse"]


def test_cli_fuse_and_withhold(tmp_path, world, capsys):
    cfg = _setup(tmp_path, world)
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    assert main(["fuse", "--config", str(path), "--method", "cdf"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"fused": cfg.store.url("fused.zarr")}
    assert store.open_dataset(cfg.store.url("fused.zarr")).attrs["fusion_method"] == "cdf"
    assert main(["fuse", "--config", str(path), "--withhold", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "fused_meanstd" in out and "climatology" in out
    m = json.loads(Path(cfg.store.url("report", "metrics.json")).read_text())
    assert set(m["fusion"]) >= {"withheld", "default_method"} and "vs_truth" not in m["fusion"]
    assert main(["fuse", "--config", str(path), "--withhold", "1.5"]) == 2
    assert "withheld fraction" in capsys.readouterr().err
    # a cdf store exists: the default (meanstd) run refuses with a clean message
    assert main(["fuse", "--config", str(path)]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- real CCI files
def _real_cci_files() -> list[Path]:
    """The v05.2 COMBINED days of tests/data/real, plus any other day only ../shared holds."""
    pattern = "esa_cci_sm/**/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-*-fv05.2.nc"
    files: dict[str, Path] = {}
    for base in (SHARED_REAL, DATA_REAL):
        files.update({f.name: f for f in base.glob(pattern)})
    return [files[k] for k in sorted(files)]


def _real_landmask() -> Path | None:
    rel = "era5/ecmwf_models/src/ecmwf_models/era5/land_definition_files/landmask_0.25_0.25.nc"
    for base in (DATA_REAL, SHARED_REAL):
        if (base / rel).exists():
            return base / rel
    return None


@pytest.mark.skipif(not _real_cci_files(), reason="no real ESA CCI COMBINED files in tests/data/real or ../shared")
def test_real_cci_files_end_to_end(tmp_path, caplog):
    """Real CCI days (south-west France) + a tiny ERA5 cube built here (no real swvl1 netCDF exists);
    land_fraction from the real ERA5 land mask when present. Too few days for per-pixel matching:
    the stage must fall back (flag 3), say so in a warning, and still fill every land cell."""
    import pandas as pd

    from sm1km.config import RunConfig
    from sm1km.storage.readers.cci import read_cci_day

    files = _real_cci_files()
    cfg = RunConfig.from_dict({
        "region": {"west": -2.0, "south": 43.0, "east": 0.0, "north": 45.0},
        "period": {"start": "2016-06-07", "end": str((pd.Timestamp("2016-06-07") + pd.Timedelta(days=len(files) - 1)).date())},
        "store": {"root": str(tmp_path / "store")}, "cluster": {"kind": "synchronous"},
        "fusion": {"min_overlap_days": 20, "neighbourhood_cells": 2, "space_chunk": 4}})
    region = cfg.coarse_region
    days = [read_cci_day(f, region) for f in files]
    cci = xr.concat([d[["sm"]] for d in days], dim="time").astype("float32")
    assert cci.sm.shape == (len(files), 8, 8) and np.isfinite(cci.sm.values).sum() > 20
    lm = _real_landmask()
    if lm is not None:  # the ERA5 mask is on 0.25° points: mean of the 4 points around each centre
        mask = xr.open_dataset(lm)["land"]
        lat, lon = cci.lat.values, cci.lon.values % 360
        pts = [mask.sel(latitude=lat + dy, longitude=(lon + dx) % 360, method="nearest").values
               for dy in (-0.125, 0.125) for dx in (-0.125, 0.125)]
        land_fraction = np.nanmean(pts, axis=0).astype("float32")
    else:
        land_fraction = np.isfinite(cci.sm.values).any(0).astype("float32")
    # tiny ERA5 cube: wetter and smoother than CCI, 0 over sea (as ERA5 writes it)
    seen = np.isfinite(cci.sm.values)
    base = np.where(seen.any(0), np.where(seen, cci.sm.values, 0).sum(0) / np.maximum(seen.sum(0), 1), 0.25)
    swvl1 = np.stack([0.08 + 0.9 * base + 0.01 * k for k in range(len(files))]).astype("float32")
    swvl1[:, land_fraction < 0.5] = 0.0
    from fusion_testworld import _write  # the same contract writer as the synthetic fixtures

    coords = {"time": cci.time.values.astype("datetime64[ns]"), "lat": cci.lat.values, "lon": cci.lon.values}
    chunks = {"time": len(files), "lat": 4, "lon": 4}
    _write(cfg.store.url("inputs", "cci.zarr"), xr.Dataset({"sm": (("time", "lat", "lon"), cci.sm.values)},
                                                           coords=coords), chunks, {})
    _write(cfg.store.url("inputs", "era5.zarr"),
           xr.Dataset({"swvl1": (("time", "lat", "lon"), swvl1),
                       "land_fraction": (("lat", "lon"), land_fraction)}, coords=coords), chunks, {})
    with caplog.at_level(logging.WARNING, logger="sm1km.stages.fuse"):
        out = fuse(cfg)
    assert any("fewer than 20 days" in r.getMessage() and "unscaled ERA5" in r.getMessage()
               for r in caplog.records)
    ds = store.open_dataset(out["fused"])
    land = land_mask(cci.sm.values.astype(np.float64), land_fraction)
    sm, flag = ds.sm.values, ds.source_flag.values
    assert land.sum() > 30 and (~land).sum() > 0       # Atlantic in the west of the box
    assert np.isfinite(sm[:, land]).all() and np.isnan(sm[:, ~land]).all()
    obs = np.isfinite(cci.sm.values) & land[None]
    np.testing.assert_array_equal(sm[obs], cci.sm.values[obs])
    assert set(np.unique(flag[:, land][~obs[:, land]])) == {3}
    assert ds.attrs["fusion_own_pixels"] == 0
    assert ds.attrs["fusion_unscaled_pixels"] + ds.attrs["fusion_neighbourhood_pixels"] == int(land.sum())
    assert np.nanmin(sm) >= 0 and np.nanmax(sm) <= 0.6
    # the withheld experiment on two days: nothing to match, but it runs and reports
    res = withheld_experiment(cfg, 0.3, write=False)
    assert res["withheld"]["fused"]["n"] == res["n_withheld"]
    shutil.rmtree(tmp_path / "store")
