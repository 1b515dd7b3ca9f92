"""The synthetic world: real file formats, plausibility, determinism, usefulness for downscaling."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core import grid
from sm1km.errors import ConfigError
from sm1km.synth import fields as F
from sm1km.synth import make_statics, make_world, preset, write_world
from sm1km.synth.diagnostics import subgrid_skill

REPO = Path(__file__).resolve().parents[1]
CCI_REAL_REL = ("esa_cci_sm/esa_cci_sm_dailyImages/v05.2/combined/2016/"
                "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc")
SEED = 11
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # from the ismn package under pandas 3
TINY = preset("tiny", n_days=12, n_stations=10)


def _real(rel: str) -> Path:
    for base in (REPO / "tests" / "data" / "real", REPO.parent / "shared" / "data" / "real"):
        if (base / rel).exists():
            return base / rel
    pytest.skip(f"real file {rel} not available (tests/data/real or ../shared/data/real)")


def _real_cci() -> Path:
    return _real(CCI_REAL_REL)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = write_world(tmp_path_factory.mktemp("synth") / "world", TINY, seed=SEED)
    return paths


@pytest.fixture(scope="module")
def statics():
    return make_statics(TINY, SEED)


def _sha(paths) -> dict[str, str]:
    return {str(f.relative_to(paths.workdir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in paths.all_files()}


# ------------------------------------------------------------------------------------------ CCI
def test_cci_files_mirror_the_real_layout(world):
    real = netCDF4.Dataset(_real_cci())
    files = world.cci_files()
    assert [f.name for f in files] == [
        f"ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-{TINY.start + dt.timedelta(days=k):%Y%m%d}000000-fv08.1.nc"
        for k in range(TINY.n_days)]
    region = TINY.region
    with netCDF4.Dataset(files[3]) as syn:
        assert syn.data_model == "NETCDF4_CLASSIC"
        assert list(syn.variables) == list(real.variables)
        assert set(syn.ncattrs()) == set(real.ncattrs())
        assert syn.dimensions["time"].size == 1 and syn.dimensions["lat"].size == region.n_rows
        assert syn.dimensions["lon"].size == region.n_cols
        for name, rv in real.variables.items():
            sv = syn.variables[name]
            assert sv.dtype == rv.dtype, name
            assert sv.dimensions == rv.dimensions, name
            assert sv.ncattrs() == rv.ncattrs(), name
            for a in rv.ncattrs():
                if (name, a) == ("t0", "valid_range"):
                    continue
                rva, sva = rv.getncattr(a), sv.getncattr(a)
                assert np.asarray(sva).dtype == np.asarray(rva).dtype, (name, a)
                assert np.array_equal(np.asarray(sva), np.asarray(rva)), (name, a)
            f_real, f_syn = rv.filters(), sv.filters()
            assert (f_syn["zlib"], f_syn["shuffle"], f_syn["complevel"]) == (f_real["zlib"], f_real["shuffle"], f_real["complevel"])
        day = float((TINY.start + dt.timedelta(days=3) - dt.date(1970, 1, 1)).days)
        assert syn["time"][:].tolist() == [day]
        assert list(syn["t0"].valid_range) == [day - 0.5, day + 0.5]
        # coordinates: exactly the rows/cols of the real global grid (float32, lat descending)
        r_lat = real["lat"][region.row0:region.row1]
        r_lon = real["lon"][region.col0:region.col1]
        assert np.array_equal(syn["lat"][:], r_lat) and np.array_equal(syn["lon"][:], r_lon)
        assert np.all(np.diff(syn["lat"][:]) < 0)
    real.close()


def test_cci_values_gaps_flags(world, statics):
    ds = xr.open_mfdataset(world.cci_files(), combine="by_coords", mask_and_scale=False, decode_times=False).load()
    sm, flag = ds.sm.values, ds.flag.values
    cell_land = statics.cell_land_fraction >= 0.5
    sea = ~cell_land
    assert sea.any() and cell_land.any()
    assert np.all(flag[:, sea] == 127) and np.all(sm[:, sea] == -9999.0)
    valid = sm != -9999.0
    assert np.all(flag[valid] == 0)
    assert np.all((sm[valid] >= 0) & (sm[valid] <= 1))
    missing = 1 - valid[:, cell_land].mean(axis=1)
    assert np.all((missing >= 0.30) & (missing <= 0.70)), missing
    # a permanently sparse (dense forest) cell exists: flagged 2 on most days
    dense_days = ((flag & 2) > 0) & (flag != 127)
    assert (dense_days.mean(axis=0)[cell_land] >= 0.75).any()
    # real quirks kept: t0 sentinel in some missing cells, t0 inside valid_range where observed
    t0 = ds.t0.values
    assert (t0 == -3440586.5).any()
    days = ds.time.values[:, None, None]
    assert np.all(np.abs(t0[valid] - np.broadcast_to(days, t0.shape)[valid]) <= 0.5)
    # CCI tracks the coarse truth (noisy, biased)
    truth = xr.open_zarr(world.truth_25km).sm.values
    ok = valid & np.isfinite(truth)
    ds_sm = np.where(ok, sm, np.nan)
    assert np.corrcoef(ds_sm[ok], truth[ok])[0, 1] > 0.6


# ----------------------------------------------------------------------------------------- ERA5
def test_era5_old_cds_layout(world, statics):
    files = world.era5_files()
    assert [f.name for f in files] == ["era5_swvl1_202004.nc"]
    region = TINY.region
    b = region.bbox
    with netCDF4.Dataset(files[0]) as e:
        assert e.data_model == "NETCDF3_64BIT_OFFSET"
        assert set(e.variables) == {"longitude", "latitude", "time", "swvl1", "lsm"}
        sw = e["swvl1"]
        assert sw.dtype == np.int16 and sw.dimensions == ("time", "latitude", "longitude")
        for a in ("scale_factor", "add_offset", "_FillValue", "missing_value", "units", "long_name"):
            assert a in sw.ncattrs()
        assert sw.units == "m**3 m**-3" and sw.long_name == "Volumetric soil water layer 1"
        assert e["lsm"].dtype == np.int16 and e["lsm"].units == "(0 - 1)"
        assert e["time"].units == "hours since 1900-01-01 00:00:00.0" and e["time"].dtype == np.int32
        assert np.all(np.diff(e["time"][:]) == TINY.era5_step_hours)
        lat, lon = e["latitude"][:], e["longitude"][:]
    assert np.all(np.diff(lat) < 0) and np.all(np.diff(lon) > 0)
    assert np.allclose(np.mod(lat * 4, 1), 0) and np.allclose(np.mod(lon * 4, 1), 0)
    assert lat[0] == b.north + 0.25 and lat[-1] == b.south - 0.25
    assert lon[0] == (b.west - 0.25) % 360 and lon[-1] == (b.east + 0.25) % 360 and lon.min() >= 0
    ds = xr.open_dataset(files[0])
    sea = ds.lsm.isel(time=0) < 0.5
    assert bool(sea.any()), "the world has sea: some ERA5 points must be sea"
    sea_vals = ds.swvl1.where(sea).values
    assert np.nanmax(sea_vals) <= 0.0 and np.nanmin(sea_vals) > -1e-5  # ~0 / tiny negative, not missing
    land_vals = ds.swvl1.where(~sea).values
    assert np.nanmin(land_vals) > 0.01 and np.nanmax(land_vals) < 0.66
    # smoother and wetter than the truth it comes from
    truth = xr.open_zarr(world.truth_25km).sm
    daily = ds.swvl1.resample(time="1D").mean()
    centre = daily.isel(latitude=slice(1, -1), longitude=slice(1, -1))
    assert float(centre.where(~sea.isel(latitude=slice(1, -1), longitude=slice(1, -1))).mean()) > float(truth.mean())
    lsm_file = xr.open_dataset(world.era5_lsm)
    assert np.array_equal(lsm_file.lsm.isel(time=0).values, ds.lsm.isel(time=0).values)


def test_era5_matches_real_era5_names_and_grid(world):
    """swvl1 names/units as cfgrib reads them from a real ERA5 GRIB; points on the real 0.25° ERA5 grid."""
    import json
    import subprocess
    import sys

    grib = _real("era5/cfgrib/tests/sample-data/soil-surface-level-mix.grib")
    code = ("import json, cfgrib, warnings; warnings.simplefilter('ignore'); "
            f"ds = cfgrib.open_datasets({str(grib)!r}, backend_kwargs={{'indexpath': ''}}); "
            "a = [d['swvl1'].attrs for d in ds if 'swvl1' in d][0]; "
            "print(json.dumps({'units': a['units'], 'long_name': a['long_name']}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # also: GRIB reading exits cleanly
    real = json.loads(out.stdout.strip().splitlines()[-1])
    with netCDF4.Dataset(world.era5_files()[0]) as e:
        assert e["swvl1"].units == real["units"] and e["swvl1"].long_name == real["long_name"]
        lat, lon = e["latitude"][:], e["longitude"][:]
    with netCDF4.Dataset(_real("era5/ecmwf_models/src/ecmwf_models/era5/land_definition_files/landmask_0.25_0.25.nc")) as m:
        rlat, rlon = m["latitude"][:], m["longitude"][:]
    assert lat.dtype == rlat.dtype and lon.dtype == rlon.dtype
    assert np.isin(lat, rlat).all() and np.isin(lon, rlon).all()


# ------------------------------------------------------------------------------------ predictors
def test_predictor_geotiffs_on_the_fine_grid(world, statics):
    import rasterio

    region = TINY.region
    fg = grid.FineGrid(TINY.factor)
    pdir = world.predictors_dir
    expected = {"elevation": ("int16", -32768), "slope": ("float32", -9999), "twi": ("float32", -9999),
                "clay": ("uint8", 255), "sand": ("uint8", 255), "land_cover": ("uint8", 255)}
    for name, (dtype, nodata) in expected.items():
        with rasterio.open(pdir / f"{name}.tif") as r:
            assert r.crs.to_epsg() == 4326 and r.transform == fg.transform(region)
            assert (r.height, r.width) == statics.shape and r.dtypes[0] == dtype and r.nodata == nodata
            a = r.read(1)
            units = r.units[0]
        if name in ("clay", "sand"):
            assert units == "percent"
            v = a[statics.land]
            assert v.min() >= 1 and v.max() <= 99 and np.all(a[~statics.land] == 255)
        if name == "land_cover":
            assert np.all(a[~statics.land] == 17) and not np.any(a[statics.land] == 17)
    days = [TINY.start + dt.timedelta(days=k) for k in range(TINY.n_days)]
    for kind in ("lst_day", "lst_night"):
        names = sorted(p.name for p in pdir.glob(f"{kind}_*.tif"))
        assert names == [f"{kind}_{d:%Y%m%d}.tif" for d in days]
        gaps = []
        for d in days:
            with rasterio.open(pdir / f"{kind}_{d:%Y%m%d}.tif") as r:
                a = r.read(1)
                assert r.dtypes[0] == "float32" and r.nodata == -9999.0 and r.units[0] == "K"
            assert np.all(a[~statics.land] == -9999.0)
            v = a[statics.land & (a != -9999.0)]
            assert v.size and 230 < v.min() and v.max() < 340
            gaps.append(np.mean(a[statics.land] == -9999.0))
        assert 0.05 < np.mean(gaps) < 0.9
    ndvi = sorted(pdir.glob("ndvi_*.tif"))
    starts = [dt.datetime.strptime(re.search(r"(\d{8})", p.name).group(1), "%Y%m%d").date() for p in ndvi]
    assert starts[0] <= TINY.start and starts[-1] + dt.timedelta(days=15) >= TINY.end
    assert all(s.timetuple().tm_yday % 16 == 1 for s in starts)  # MODIS composite start days
    with rasterio.open(ndvi[0]) as r:
        assert r.dtypes[0] == "int16" and r.nodata == 32767 and r.scales[0] == pytest.approx(1e-4)
        a = r.read(1)
    v = a[statics.land & (a != 32767)] * 1e-4
    assert -0.2 <= v.min() and v.max() <= 1.0


# ----------------------------------------------------------------------------------------- ISMN
def test_ismn_package_reads_the_stations(world, tmp_path):
    from ismn.interface import ISMN_Interface

    isi = ISMN_Interface(str(world.ismn_dir), meta_path=str(tmp_path / "meta"), parallel=False)
    nets = list(isi.collection.iter_networks())
    assert len(nets) == TINY.n_networks
    stations = [s for n in nets for s in n.iter_stations()]
    assert len(stations) == TINY.n_stations
    b = TINY.region.bbox
    n_gappy, flags_all = 0, []
    for s in stations:
        assert b.south < s.lat < b.north and b.west < s.lon < b.east
        sensors = list(s.iter_sensors())
        surface = [x for x in sensors if x.depth.start == 0.0 and x.depth.end == 0.05]
        assert len(surface) == 1
        d = surface[0].data
        assert set(d.columns) == {"soil_moisture", "soil_moisture_flag", "soil_moisture_orig_flag"}
        assert set(d["soil_moisture_orig_flag"]) == {"M"}
        flags_all += list(d["soil_moisture_flag"])
        days = d.index.normalize().unique()
        n_gappy += len(days) < TINY.n_days
    flags = np.array(flags_all)
    assert np.mean(flags == "G") > 0.85
    assert any(f.startswith("C01") for f in flags)  # negative spikes flagged
    assert n_gappy >= 1
    meta = isi.metadata
    assert "clay_fraction" in meta.columns.get_level_values(0)


def test_ismn_header_values_layout(world):
    f = sorted(world.ismn_dir.rglob("*_sm_0.000000_0.050000_*.stm"))[0]
    m = re.fullmatch(r"([A-Z]+)_\1_([A-Z]{2}\d{2})_sm_0\.000000_0\.050000_([A-Za-z0-9-]+)_(\d{8})_(\d{8})\.stm", f.name)
    assert m and m.group(4) == f"{TINY.start:%Y%m%d}" and m.group(5) == f"{TINY.end:%Y%m%d}"
    lines = f.read_bytes().split(b"\r\n")
    head = lines[0].decode().split()
    assert head[0] == head[1] == m.group(1) and head[2] == m.group(2) and head[-1] == m.group(3)
    assert [float(x) for x in head[6:8]] == [0.0, 0.05]
    row = lines[1].decode()
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2} \d{2}:\d{2} +-?\d\.\d{4} [A-Z0-9,]+ M", row), row
    csv = sorted(f.parent.glob("*_static_variables.csv"))
    assert len(csv) == 1 and csv[0].read_text().splitlines()[0].endswith("quantity_source_url;")


def test_stations_track_their_pixel_truth(world):
    import tempfile

    from ismn.interface import ISMN_Interface

    truth = xr.open_zarr(world.truth).sm.load()
    with tempfile.TemporaryDirectory() as meta:
        isi = ISMN_Interface(str(world.ismn_dir), meta_path=meta, parallel=False)
        corr, bias, rmsd = [], [], []
        for net in isi.collection.iter_networks():
            for s in net.iter_stations():
                sen = [x for x in s.iter_sensors() if x.depth.end == 0.05][0]
                d = sen.data
                good = d[d["soil_moisture_flag"] == "G"]["soil_moisture"]
                daily = good.groupby(good.index.normalize()).mean()
                t = truth.sel(lat=s.lat, lon=s.lon, method="nearest").to_series()
                both = daily.index.intersection(t.index)
                x, y = daily.loc[both].to_numpy(), t.loc[both].to_numpy()
                corr.append(np.corrcoef(x, y)[0, 1])
                bias.append(np.mean(x - y))
                rmsd.append(np.sqrt(np.mean((x - y) ** 2)))
    assert np.median(corr) > 0.7
    assert abs(np.median(bias)) < 0.04
    assert np.median(rmsd) > 0.003  # stations are points, not the pixel truth


# ---------------------------------------------------------------------------------------- truth
def test_truth_stores_follow_the_contract(world, statics):
    t = xr.open_zarr(world.truth)
    lat, lon = grid.region_coords(TINY.region, TINY.factor)
    assert t.sm.dims == ("time", "lat", "lon") and t.sm.dtype == np.float32
    assert np.array_equal(t.lat.values, lat) and np.array_equal(t.lon.values, lon)
    assert t.lat.dtype == np.float64 and np.all(np.diff(t.lat.values) < 0)
    assert t.time.dtype == np.dtype("datetime64[ns]")
    assert list(t.time.dt.date.values) == [TINY.start + dt.timedelta(days=k) for k in range(TINY.n_days)]
    assert t.sm.encoding["chunks"] == (TINY.time_block_days if TINY.n_days >= TINY.time_block_days else TINY.n_days,
                                       min(TINY.tile_cells * TINY.factor, lat.size), min(TINY.tile_cells * TINY.factor, lon.size))
    sm = t.sm.values
    land = statics.land
    assert np.all(np.isnan(sm[:, ~land])) and np.all(np.isfinite(sm[:, land]))
    eps = 1e-6
    assert np.all(sm[:, land] >= statics.wilting[land] - eps) and np.all(sm[:, land] <= statics.porosity[land] + eps)
    c = xr.open_zarr(world.truth_25km)
    clat, clon = grid.region_coords(TINY.region)
    assert np.array_equal(c.lat.values, clat) and np.array_equal(c.lon.values, clon)
    assert np.allclose(c.sm.values, F.block_mean(sm, TINY.factor), equal_nan=True, atol=1e-6)
    # the in-memory world is the same world
    w = make_world(TINY, SEED)
    assert np.array_equal(w.theta, sm, equal_nan=True)


def test_run_yaml_is_a_valid_config(world):
    cfg = RunConfig.from_yaml(world.run_yaml)
    assert cfg.coarse_region == TINY.region
    assert (cfg.period.start, cfg.period.end) == (TINY.start, TINY.end)
    assert cfg.grid.factor == TINY.factor and cfg.seeds.synth == SEED
    assert Path(cfg.store.root) == world.store
    assert Path(cfg.inputs.truth) == world.truth and world.truth.exists()
    assert len(list(Path(cfg.inputs.cci).parent.glob(Path(cfg.inputs.cci).name))) == TINY.n_days
    assert Path(cfg.inputs.era5_lsm).exists() and Path(cfg.inputs.ismn).is_dir()
    for key, pattern in cfg.inputs.predictors.model_dump().items():
        assert list(Path(pattern).parent.glob(Path(pattern).name)), key


# ------------------------------------------------------------------------------ determinism etc.
def test_same_seed_same_bytes(world, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = write_world(tmp_path / "again", TINY, seed=SEED)
        other = write_world(tmp_path / "other", TINY, seed=SEED + 1)
    a, b, c = _sha(world), _sha(again), _sha(other)
    assert len(a) > 50 and a == b
    assert sum(a[k] != c.get(k) for k in a) > len(a) // 2


def test_workdir_holds_one_world(world, tmp_path):
    with pytest.raises(ConfigError):
        write_world(world.workdir, TINY, seed=SEED + 5)
    target = tmp_path / "w"
    small = preset("tiny", n_days=3, n_stations=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_world(target, small, seed=1)
        p = write_world(target, small.replace(n_days=4), seed=1, overwrite=True)
    assert len(p.cci_files()) == 4


def test_params_are_validated():
    with pytest.raises(ConfigError):
        preset("tiny", n_days=0)
    with pytest.raises(ConfigError):
        preset("nope")
    with pytest.raises(ConfigError):
        preset("tiny", bbox=(10.0, 45.0, 10.2, 45.2))  # less than 2×2 cells


def test_predictors_explain_the_subgrid_pattern():
    """The 1 km predictors carry real information: a linear sub-grid model beats the 25 km baseline."""
    w = make_world(preset("tiny", n_days=14), seed=3)
    s = subgrid_skill(w)
    assert s["r2"] > 0.4, s
    assert s["r2_static"] > 0.2, s
    assert s["rmse_downscaled"] < 0.8 * s["rmse_coarse"], s
    assert s["r2"] < 0.95, s  # realistic noise: not perfectly explainable


def test_cli_writes_a_world(tmp_path, capsys):
    from sm1km.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["synth", "--workdir", str(tmp_path / "cli"), "--preset", "tiny", "--seed", "4", "--days", "3",
                   "--stations", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and str(tmp_path / "cli" / "run.yaml") in out
    assert len(list((tmp_path / "cli" / "inputs" / "cci").glob("*.nc"))) == 3


@pytest.mark.slow
def test_demo_preset(tmp_path):
    from ismn.interface import ISMN_Interface

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = write_world(tmp_path / "demo", "demo", seed=20240601)
    cfg = RunConfig.from_yaml(p.run_yaml)
    assert cfg.coarse_region == grid.snap_bbox((10.0, 44.0, 14.0, 48.0)) and cfg.period.n_days == 90
    assert len(p.cci_files()) == 90
    t = xr.open_zarr(p.truth)
    assert t.sm.shape == (90, 480, 480)
    isi = ISMN_Interface(str(p.ismn_dir), meta_path=str(tmp_path / "meta"), parallel=False)
    assert sum(1 for n in isi.collection.iter_networks() for _ in n.iter_stations()) == 40
    import json

    stats = json.loads(p.world_json.read_text())["stats"]
    assert 0.3 <= stats["cci_missing_fraction"]["min"] and stats["cci_missing_fraction"]["max"] <= 0.7
    assert 1 <= len(stats["cci_cells_with_fewer_than_20_valid_days"]) <= 0.15 * stats["cci_land_cells"]
