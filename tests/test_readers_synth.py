"""The readers read the synthetic world's files (real formats) and find values close to its truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from sm1km.cli import main
from sm1km.core import grid
from sm1km.storage.readers import read_cci_day, read_era5, read_ismn, read_raster

synth = pytest.importorskip("sm1km.synth", reason="the synthetic world module (sm1km.synth) is not in this checkout")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    params = synth.preset("tiny", n_days=4, n_stations=6)
    paths = synth.write_world(tmp_path_factory.mktemp("synth"), params, seed=11)
    truth = xr.open_zarr(paths.truth_25km).load()
    return params, paths, truth


@pytest.mark.slow
def test_cci_files_on_the_region_grid_close_to_truth(tiny_world):
    params, paths, truth = tiny_world
    region = params.region
    lat, lon = grid.region_coords(region)
    files = sorted(paths.cci_files())
    assert len(files) == params.n_days
    diffs = []
    for k, f in enumerate(files):
        ds = read_cci_day(f, region)
        np.testing.assert_array_equal(ds["lat"].values, lat)
        np.testing.assert_array_equal(ds["lon"].values, lon)
        assert str(ds["time"].values[0])[:10] == (params.start.fromordinal(params.start.toordinal() + k)).isoformat()
        sm = ds["sm"].values[0]
        assert np.nanmin(sm) >= 0.0 and np.nanmax(sm) <= 1.0
        t = truth["sm"].sel(time=ds["time"].values[0]).values
        ok = np.isfinite(sm) & np.isfinite(t)
        diffs.append(np.abs(sm[ok] - (0.045 + 0.85 * t[ok])))
    d = np.concatenate(diffs)
    assert d.size > 0 and d.mean() < 0.08


@pytest.mark.slow
def test_era5_ismn_and_predictors(tiny_world, capsys):
    params, paths, truth = tiny_world
    region = params.region
    e = read_era5(paths.era5_files(), region, lsm_path=paths.era5_lsm)
    assert e["swvl1"].shape == (params.n_days, region.n_rows, region.n_cols)
    lf = e["land_fraction"].values
    assert np.nanmin(lf) >= 0.0 and np.nanmax(lf) <= 1.0
    land = lf > 0.5
    assert np.isfinite(e["swvl1"].values[:, land]).all()
    t = truth["sm"].sel(time=e["time"].values).values
    ok = np.isfinite(t) & np.isfinite(e["swvl1"].values)
    assert np.abs(e["swvl1"].values[ok] - t[ok]).mean() < 0.12

    st = read_ismn(paths.ismn_dir)
    assert 1 <= st.sizes["station"] <= params.n_stations
    assert (st["depth_to"].values <= 0.05).all()
    assert np.isfinite(st["sm"].values).any()
    for reason in (s["reason"] for s in json.loads(st.attrs["skipped"])):
        assert "not within" in reason or "G" in reason or "good hours" in reason

    for name in ("lst_day", "lst_night", "ndvi", "elevation", "clay", "sand", "land_cover"):
        files = sorted(paths.predictors_dir.glob(f"{name}*.tif"))
        assert files, name
        da = read_raster(files[0], region, params.factor, "nearest" if name == "land_cover" else "average")
        assert da.shape == (region.n_rows * params.factor, region.n_cols * params.factor)
        v = da.values[np.isfinite(da.values)]
        assert v.size > 0.5 * da.size, name
        if name.startswith("lst"):
            assert 200 < v.min() and v.max() < 350
        if name == "ndvi":
            assert -0.2 <= v.min() and v.max() <= 1.0
        if name in ("clay", "sand"):  # units are passed through: the synthetic world writes percent
            assert da.attrs["units"] == "percent" and 0.0 <= v.min() and v.max() <= 100.0

    rc = main(["inspect", str(paths.inputs)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert {"cci", "era5", "ismn", "raster"} <= kinds
