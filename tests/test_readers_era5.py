"""ERA5 reader: both CDS netCDF layouts (built here with netCDF4), the real GRIB and land mask,
land-weighted regridding onto CCI centres with known answers, GRIB + rasterio in one process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage.readers.era5 import bracket, read_era5, read_lsm

REPO = Path(__file__).resolve().parents[1]
GRIB = "era5/cfgrib/tests/sample-data/soil-surface-level-mix.grib"
LANDMASK = "era5/ecmwf_models/src/ecmwf_models/era5/land_definition_files/landmask_0.25_0.25.nc"


def real(rel: str) -> Path:
    for base in (REPO / "tests" / "data" / "real", REPO.parent / "shared" / "data" / "real"):
        if (base / rel).exists():
            return base / rel
    pytest.skip(f"real file {rel} is neither in tests/data/real nor in ../shared/data/real")


# ---------------------------------------------------------------------------------------------
# a small synthetic ERA5 world: 9 latitudes (45 -> 43), all 1440 longitudes (0..359.75), 48 h
# ---------------------------------------------------------------------------------------------

LAT = np.arange(45.0, 42.99, -0.25)
LON = np.arange(0.0, 360.0, 0.25)
HOURS = np.arange(48)
T0 = np.datetime64("2020-04-01T00:00", "ns")


def world():
    rng = np.random.default_rng(7)
    base = rng.uniform(0.1, 0.4, (LAT.size, LON.size))
    lsm = np.zeros((LAT.size, LON.size))
    land_lon = (LON < 10) | (LON >= 350) | ((LON >= 175) & (LON < 185))
    lsm[:, land_lon] = 1.0
    lsm[0, :] = np.where(land_lon, 0.6, 0.3)  # a "coast" row: fractional values
    lsm[4, 5] = 0.0  # an inland lake point
    land = lsm >= 0.5
    base[~land] = -2.7e-6  # sea: tiny negative, not missing
    base[6, 2] = -0.0008  # a land point slightly negative -> must be clipped to 0
    hourly = base[None] + 0.001 * (HOURS % 24)[:, None, None] * land[None]
    return hourly, lsm


def expected(hourly, lsm, day):
    """Daily mean of the land points around each CCI centre, computed point by point."""
    daily = hourly[day * 24:(day + 1) * 24].mean(axis=0)
    land = lsm >= 0.5
    daily = np.where(land & (daily < 0), 0.0, daily)
    rows = np.arange(grid.coarse_row_of_lat(44.9), grid.coarse_row_of_lat(43.1) + 1)
    clat, clon = grid.coarse_lat(rows), grid.coarse_lon(np.arange(1440))
    out = np.full((clat.size, clon.size), np.nan)
    lf = np.zeros((clat.size, clon.size))
    for i, la in enumerate(clat):
        yi = [int(round((45.0 - (la + 0.125)) / 0.25)), int(round((45.0 - (la - 0.125)) / 0.25))]
        for j, lo in enumerate(clon):
            xi = [int(round(((lo - 0.125) % 360) / 0.25)) % 1440, int(round(((lo + 0.125) % 360) / 0.25)) % 1440]
            pts = [(y, x) for y in yi for x in xi]
            vals = [daily[y, x] for y, x in pts if land[y, x]]
            out[i, j] = np.mean(vals) if vals else np.nan
            lf[i, j] = np.mean([lsm[y, x] for y, x in pts])
    return out, lf


def write_old_cds(path, hourly, lsm, lat=LAT, lon=LON, times=None, units="m**3 m**-3", expver_dim=False):
    """CDS netCDF before 2024: time (hours since 1900), latitude/longitude, packed int16."""
    times = T0 + HOURS.astype("timedelta64[h]") if times is None else times
    hours1900 = ((times - np.datetime64("1900-01-01T00:00", "ns")) // np.timedelta64(1, "h")).astype("i4")
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.createDimension("longitude", lon.size)
        nc.createDimension("latitude", lat.size)
        nc.createDimension("time", None)
        dims = ("time", "latitude", "longitude")
        if expver_dim:
            nc.createDimension("expver", 2)
            e = nc.createVariable("expver", "i4", ("expver",))
            e[:] = [1, 5]
            dims = ("time", "expver", "latitude", "longitude")
        v = nc.createVariable("longitude", "f4", ("longitude",))
        v.units = "degrees_east"
        v[:] = lon
        v = nc.createVariable("latitude", "f4", ("latitude",))
        v.units = "degrees_north"
        v[:] = lat
        t = nc.createVariable("time", "i4", ("time",))
        t.units = "hours since 1900-01-01 00:00:00.0"
        t.calendar = "gregorian"
        t[:] = hours1900
        for name, data, u in (("swvl1", hourly, units), ("lsm", np.broadcast_to(lsm, hourly.shape), "(0 - 1)")):
            lo, hi = float(np.nanmin(data)), float(np.nanmax(data))  # as the CDS packs: per variable
            scale = (hi - lo) / (2**16 - 3)
            offset = (hi + lo) / 2
            var = nc.createVariable(name, "i2", dims, fill_value=np.int16(-32767))
            var.set_auto_maskandscale(False)
            var.scale_factor = scale
            var.add_offset = offset
            var.missing_value = np.int16(-32767)
            var.units = u
            packed = np.round((np.nan_to_num(data, nan=0.0) - offset) / scale).astype("i2")
            packed = np.where(np.isnan(data), -32767, packed).astype("i2")
            if expver_dim:
                first = packed.shape[0] // 2
                both = np.full((packed.shape[0], 2) + packed.shape[1:], -32767, dtype="i2")
                both[:first, 0] = packed[:first]  # ERA5 final
                both[first:, 1] = packed[first:]  # ERA5T
                packed = both
            var[:] = packed
    return path


def write_new_cds(path, hourly, lsm, lat=LAT, lon=LON, times=None, members=1):
    """CDS netCDF since 2024: valid_time (seconds since 1970), number, expver, float32."""
    times = T0 + HOURS.astype("timedelta64[h]") if times is None else times
    secs = ((times - np.datetime64("1970-01-01", "ns")) // np.timedelta64(1, "s")).astype("i8")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("valid_time", secs.size)
        nc.createDimension("latitude", lat.size)
        nc.createDimension("longitude", lon.size)
        dims = ("valid_time", "latitude", "longitude")
        if members > 1:
            nc.createDimension("number", members)
            dims = ("number",) + dims
            nc.createVariable("number", "i8", ("number",))[:] = np.arange(members)
        else:
            nc.createVariable("number", "i8", ())[...] = 0
        t = nc.createVariable("valid_time", "i8", ("valid_time",))
        t.units = "seconds since 1970-01-01"
        t.calendar = "proleptic_gregorian"
        t[:] = secs
        nc.createVariable("latitude", "f8", ("latitude",))[:] = lat
        nc.createVariable("longitude", "f8", ("longitude",))[:] = lon
        ev = nc.createVariable("expver", str, ("valid_time",))
        for i in range(secs.size):
            ev[i] = "0001" if i < secs.size - 6 else "0005"
        v = nc.createVariable("swvl1", "f4", dims, fill_value=np.float32(np.nan))
        v.units = "m**3 m**-3"
        v.long_name = "Volumetric soil water layer 1"
        v[:] = np.broadcast_to(hourly, (members,) + hourly.shape) if members > 1 else hourly
        m = nc.createVariable("lsm", "f4", ("valid_time", "latitude", "longitude"), fill_value=np.float32(np.nan))
        m.units = "(0 - 1)"
        m[:] = np.broadcast_to(lsm, hourly.shape)
    return path


# ---------------------------------------------------------------------------------------------
# netCDF layouts
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def era5_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("era5")
    hourly, lsm = world()
    old = write_old_cds(d / "era5_old.nc", hourly, lsm)
    new = write_new_cds(d / "era5_new.nc", hourly, lsm)
    exp = [expected(hourly, lsm, day) for day in (0, 1)]
    return {"dir": d, "hourly": hourly, "lsm": lsm, "old": old, "new": new, "expected": exp}


@pytest.mark.parametrize("layout", ["old", "new"])
def test_netcdf_layouts_known_answer(era5_world, layout):
    ds = read_era5(era5_world[layout])
    assert ds["swvl1"].dims == ("time", "lat", "lon") and ds["swvl1"].dtype == np.float32
    assert ds["land_fraction"].dims == ("lat", "lon")
    np.testing.assert_array_equal(ds["time"].values, np.array(["2020-04-01", "2020-04-02"], dtype="datetime64[ns]"))
    # all 1440 CCI columns (longitudes wrap across 180°) for the 8 CCI rows inside 45..43
    assert ds.sizes["lon"] == 1440 and ds.sizes["lat"] == 8
    np.testing.assert_array_equal(ds["lon"].values, grid.coarse_lon(np.arange(1440)))
    tol = 2e-5 if layout == "old" else 1e-6  # int16 packing
    for day, (exp, lf) in enumerate(era5_world["expected"]):
        got = ds["swvl1"].values[day]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(exp))
        np.testing.assert_allclose(got, exp, atol=tol, equal_nan=True)
        np.testing.assert_allclose(ds["land_fraction"].values, lf, atol=tol)
    assert float(np.nanmin(ds["swvl1"])) >= 0.0  # coastal negatives clipped
    assert ds.attrs["lsm_source"] == "lsm in the ERA5 file"


def test_layouts_agree_and_region_subset(era5_world):
    region = grid.Region(180, 188, 1430, 1440)  # the cells next to the antimeridian
    a = read_era5(era5_world["old"], region)
    b = read_era5(era5_world["new"], region)
    np.testing.assert_allclose(a["swvl1"].values, b["swvl1"].values, atol=2e-5)
    full = read_era5(era5_world["new"])
    np.testing.assert_allclose(b["swvl1"].values, full["swvl1"].values[:, :, 1430:1440], atol=1e-7)
    assert np.isfinite(b["swvl1"].values[:, :, -1]).all()  # 179.875 uses 179.75 and 180 (= 0 + 360)


def test_days_split_across_files_and_expver_dimension(era5_world, tmp_path):
    h, lsm = era5_world["hourly"], era5_world["lsm"]
    times = T0 + HOURS.astype("timedelta64[h]")
    p1 = write_old_cds(tmp_path / "a.nc", h[:12], lsm, times=times[:12])
    p2 = write_old_cds(tmp_path / "b.nc", h[12:], lsm, times=times[12:])
    split = read_era5([p2, p1])  # order does not matter
    whole = read_era5(era5_world["old"])
    tol = 2e-5  # each file is packed with its own scale/offset
    np.testing.assert_allclose(split["swvl1"].values, whole["swvl1"].values, atol=tol)
    ev = read_era5(write_old_cds(tmp_path / "expver.nc", h, lsm, expver_dim=True))
    np.testing.assert_allclose(ev["swvl1"].values, whole["swvl1"].values, atol=tol)
    globbed = read_era5(str(tmp_path / "[ab].nc"))
    np.testing.assert_allclose(globbed["swvl1"].values, split["swvl1"].values, atol=1e-7)


def test_regional_file_crossing_greenwich_with_mask_file(era5_world, tmp_path):
    """A CDS area request across 0°: longitudes 358.5..359.75, 0..1.5 (not monotonic)."""
    h, lsm = era5_world["hourly"], era5_world["lsm"]
    cols = np.r_[1434:1440, 0:7]
    p = write_new_cds(tmp_path / "greenwich.nc", h[:, :, cols], lsm[:, cols], lon=LON[cols])
    region = grid.Region(180, 188, 715, 725)  # lon -1.25 .. 1.25
    with netCDF4.Dataset(p, "a") as nc:  # drop lsm from the file: the mask comes from a separate file
        nc.renameVariable("lsm", "not_a_mask")
    mask = tmp_path / "mask.nc"
    with netCDF4.Dataset(mask, "w") as nc:
        nc.createDimension("latitude", LAT.size)
        nc.createDimension("longitude", LON.size)
        nc.createVariable("latitude", "f4", ("latitude",))[:] = LAT
        nc.createVariable("longitude", "f4", ("longitude",))[:] = LON
        nc.createVariable("land", "f4", ("latitude", "longitude"))[:] = lsm
    ds = read_era5(p, region, lsm_path=mask)
    ref = read_era5(era5_world["new"], region)
    np.testing.assert_allclose(ds["swvl1"].values, ref["swvl1"].values, atol=1e-6)
    np.testing.assert_allclose(ds["land_fraction"].values, ref["land_fraction"].values, atol=1e-6)
    assert ds.attrs["lsm_source"] == "file mask.nc"


def test_no_mask_is_inferred_with_a_warning(era5_world, tmp_path, caplog):
    h, lsm = era5_world["hourly"], era5_world["lsm"]
    p = write_new_cds(tmp_path / "nomask.nc", h, lsm)
    with netCDF4.Dataset(p, "a") as nc:
        nc.renameVariable("lsm", "other")
    with caplog.at_level(logging.WARNING, logger="sm1km.storage.readers.era5"):
        ds = read_era5(p)
    assert "no land-sea mask" in caplog.text
    assert ds.attrs["lsm_source"].startswith("inferred")
    ref = read_era5(era5_world["new"])
    # the inferred mask is binary: identical values wherever the real mask is binary too
    inner = slice(1, None)  # row 0 touches the fractional "coast" row
    np.testing.assert_allclose(ds["swvl1"].values[:, inner], ref["swvl1"].values[:, inner], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# real GRIB and land mask
# ---------------------------------------------------------------------------------------------

def test_real_grib_with_real_landmask():
    ds = read_era5(real(GRIB), lsm_path=real(LANDMASK))
    assert str(ds["time"].values[0])[:10] == "2022-01-01" and ds.sizes["time"] == 1
    # CCI centres inside the 2° grid 40..50 N, 0..10 E
    assert ds["lat"].values[0] == 49.875 and ds["lat"].values[-1] == 40.125
    assert ds["lon"].values[0] == 0.125 and ds["lon"].values[-1] == 9.875
    v = ds["swvl1"].values
    assert np.nanmin(v) >= 0.0 and np.nanmax(v) <= 0.41
    assert np.isnan(v).any() and np.isfinite(v).sum() > 1000
    # known answer at (43.125, 3.125): bilinear between the 2° points 44/42 N x 2/4 E, all land
    import xarray as xr
    raw = xr.open_dataset(real(GRIB), engine="cfgrib", backend_kwargs={
        "filter_by_keys": {"shortName": "swvl1"}, "indexpath": ""})["swvl1"]
    wy, wx = (44.0 - 43.125) / 2.0, (3.125 - 2.0) / 2.0  # weight of the southern / eastern point
    pts = {(la, lo): float(raw.sel(latitude=la, longitude=lo)) for la in (44.0, 42.0) for lo in (2.0, 4.0)}
    mask = read_lsm(real(LANDMASK))
    land = {k: float(mask.sel(lat=k[0], lon=k[1])) for k in pts}
    w = {(44.0, 2.0): (1 - wy) * (1 - wx), (44.0, 4.0): (1 - wy) * wx, (42.0, 2.0): wy * (1 - wx), (42.0, 4.0): wy * wx}
    num = sum(w[k] * pts[k] for k in pts if land[k] >= 0.5)
    den = sum(w[k] for k in pts if land[k] >= 0.5)
    assert ds["swvl1"].isel(time=0).sel(lat=43.125, lon=3.125).item() == pytest.approx(num / den, rel=1e-5)
    assert float(ds["land_fraction"].sel(lat=43.125, lon=3.125)) == pytest.approx(sum(w[k] * land[k] for k in pts))


def test_grib_reader_writes_nothing_next_to_the_input(tmp_path):
    """cfgrib writes a .idx file next to the GRIB by default; inputs may be read-only."""
    p = tmp_path / "in" / "swvl.grib"
    p.parent.mkdir()
    p.write_bytes(real(GRIB).read_bytes())
    p.parent.chmod(0o555)
    try:
        ds = read_era5(p)
    finally:
        p.parent.chmod(0o755)
    assert sorted(x.name for x in p.parent.iterdir()) == ["swvl.grib"]
    assert ds.attrs["lsm_source"].startswith("inferred")


def test_real_landmask_quirks():
    m = read_lsm(real(LANDMASK))
    assert m.shape == (721, 1440)
    assert m["lon"].min() == -180.0 and m["lon"].max() == 179.75  # 0..359.75 -> -180..179.75
    assert np.isnan(m.sel(lat=-60.25).values).all() and np.isnan(m.values).sum() == 120 * 1440
    assert float(m.sel(lat=44.5, lon=-0.75)) == 1.0  # fraye (359.25 E in the file)


def test_mask_nan_south_of_60_means_unknown(tmp_path):
    """The real land mask is NaN south of -60°: land_fraction NaN there, no value, no error."""
    lat = np.arange(-59.0, -61.01, -0.25)
    lon = np.arange(0.0, 360.0, 0.25)
    hourly = np.full((24, lat.size, lon.size), 0.2)
    p = write_new_cds(tmp_path / "south.nc", hourly, np.ones((lat.size, lon.size)), lat=lat, lon=lon,
                      times=T0 + HOURS[:24].astype("timedelta64[h]"))
    ds = read_era5(p, grid.Region(596, 604, 0, 8), lsm_path=real(LANDMASK))  # -59.125 .. -60.875
    lf = ds["land_fraction"].values
    south = ds["lat"].values < -60.2  # all four mask points NaN (-60.0 itself is known)
    assert np.isnan(lf[south]).all() and np.isnan(ds["swvl1"].values[0][south]).all()
    assert np.isfinite(lf[~south]).all()


def test_grib_read_in_subprocess_with_rasterio_loaded():
    """eccodes>=2.43 + rasterio aborted at interpreter exit (134/139): keep the exit clean."""
    code = textwrap.dedent(f"""
        import rasterio, rioxarray  # loaded first, as in the pipeline
        import numpy as np
        from sm1km.storage.readers.era5 import read_era5
        ds = read_era5({str(real(GRIB))!r})
        print("n_valid", int(np.isfinite(ds["swvl1"].values).sum()))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO / "pipeline")})
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "n_valid" in r.stdout


# ---------------------------------------------------------------------------------------------
# pure pieces and errors
# ---------------------------------------------------------------------------------------------

def test_bracket_wraps_longitude_and_marks_outside():
    src = np.array([0.0, 90.0, 180.0, 270.0])
    b = bracket(((src + 180) % 360) - 180, np.array([-179.0, 135.0, 181.0 - 360]), period=360.0)
    assert b.ok.all()
    b2 = bracket(np.array([40.0, 42.0, 44.0]), np.array([39.0, 41.0, 44.0, 45.0]))
    assert b2.ok.tolist() == [False, True, True, False]
    assert b2.w_hi[1] == pytest.approx(0.5)


def test_wrong_units(era5_world, tmp_path):
    p = write_old_cds(tmp_path / "k.nc", era5_world["hourly"][:24], era5_world["lsm"],
                      times=T0 + HOURS[:24].astype("timedelta64[h]"), units="K")
    with pytest.raises(InputError, match="units 'K'"):
        read_era5(p)


def test_no_swvl1(tmp_path):
    p = tmp_path / "t2m.nc"
    with netCDF4.Dataset(p, "w") as nc:
        nc.createDimension("latitude", 2)
        nc.createDimension("longitude", 2)
        nc.createVariable("t2m", "f4", ("latitude", "longitude"))[:] = 280.0
    with pytest.raises(InputError, match="no variable 'swvl1'.*t2m"):
        read_era5(p)


def test_truncated_and_text_files(era5_world, tmp_path):
    src = Path(era5_world["new"])
    p = tmp_path / "trunc.nc"
    p.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(InputError, match="truncated|corrupt"):
        read_era5(p)
    t = tmp_path / "text.nc"
    t.write_text("hello")
    with pytest.raises(InputError, match="not a netCDF, GRIB or zip"):
        read_era5(t)
    g = tmp_path / "trunc.grib"
    g.write_bytes(real(GRIB).read_bytes()[:700])
    with pytest.raises(InputError):
        read_era5(g)


def test_irregular_grid_region_outside_and_mixed_grids(era5_world, tmp_path):
    h, lsm = era5_world["hourly"][:24], era5_world["lsm"]
    t = T0 + HOURS[:24].astype("timedelta64[h]")
    irregular = LAT.copy()
    irregular[3] += 0.1
    with pytest.raises(InputError, match="not a regular grid"):
        read_era5(write_new_cds(tmp_path / "irr.nc", h, lsm, lat=irregular, times=t))
    with pytest.raises(InputError, match="does not cover the region"):
        read_era5(era5_world["new"], grid.Region(0, 4, 0, 4))
    half = write_new_cds(tmp_path / "half.nc", h[:, :5], lsm[:5], lat=LAT[:5], times=t)
    with pytest.raises(InputError, match="grid differs"):
        read_era5([era5_world["new"], half])
    with pytest.raises(InputError, match="ensemble members"):
        read_era5(write_new_cds(tmp_path / "ens.nc", h, lsm, times=t, members=2))
    with pytest.raises(InputError, match="no ERA5 files match"):
        read_era5(str(tmp_path / "nothing*.nc"))


def test_expver_final_era5_preferred_over_era5t_whatever_the_order():
    """Old CDS files with an expver dimension: where both ERA5 (1) and ERA5T (5) have a value, the
    final one wins, also when the file lists ERA5T first."""
    import xarray as xr

    from sm1km.storage.readers.era5 import _standardise

    t = np.arange(4).astype("timedelta64[D]") + np.datetime64("2020-01-01", "ns")
    v = np.full((4, 2, 2, 3), np.nan, np.float32)
    v[:, 0] = 0.3          # ERA5T (listed first) on every day
    v[:2, 1] = 0.2         # final ERA5 on the first two days only
    da = xr.DataArray(v, dims=("time", "expver", "latitude", "longitude"),
                      coords={"time": t, "expver": ["0005", "0001"], "latitude": [1.0, 0.75],
                              "longitude": [0.0, 0.25, 0.5]}, attrs={"units": "m**3 m**-3"})
    out = _standardise(da, "x.nc", "swvl1")
    np.testing.assert_array_equal(out.values[:, 0, 0], np.float32([0.2, 0.2, 0.3, 0.3]))
    assert "expver 1" in out.attrs["expver_preference"]


# ---------------------------------------------------------------------------------------------
# CDS zip downloads ([15]): a request spanning several files comes back as a zip of netCDF files
# ---------------------------------------------------------------------------------------------
def _strip(src, dst, keep):
    """A copy of a netCDF file with only the ``keep`` data variables (as the CDS splits by stepType)."""
    import xarray as xr

    with xr.open_dataset(src, decode_times=False) as ds:
        ds[[*keep]].load().to_netcdf(dst, engine="netcdf4")
    return dst


def test_cds_zip_of_netcdf_members_reads_like_the_netcdf(era5_world, tmp_path):
    import zipfile

    import xarray as xr

    inst = _strip(era5_world["new"], tmp_path / "data_stream-oper_stepType-instant.nc", ["swvl1"])
    # the land-sea mask in another member, and an accumulated field that is not used
    lsm = _strip(era5_world["new"], tmp_path / "data_stream-oper_stepType-avgid.nc", ["lsm"])
    with xr.open_dataset(era5_world["new"], decode_times=False) as ds:
        ds[["swvl1"]].rename(swvl1="tp").load().to_netcdf(tmp_path / "data_stream-oper_stepType-accum.nc")
    z = tmp_path / "era5_cds_download.nc"  # the CDS names it .nc or .zip; the reader sniffs the bytes
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:  # (this test data would inflate past the ratio limit)
        for p in (inst, lsm, tmp_path / "data_stream-oper_stepType-accum.nc"):
            zf.write(p, p.name)
    got = read_era5(z)
    want = read_era5(era5_world["new"])
    np.testing.assert_array_equal(got["time"].values, want["time"].values)
    np.testing.assert_array_equal(got["swvl1"].values, want["swvl1"].values)
    np.testing.assert_array_equal(got["land_fraction"].values, want["land_fraction"].values)
    assert got.attrs["lsm_source"] == "lsm in the ERA5 file"
    from sm1km.storage.readers.inspect import inspect_path

    (rec,) = list(inspect_path(str(z)))
    assert isinstance(rec, dict) and rec["kind"] == "era5", rec


def test_cds_zip_without_swvl1_or_netcdf_and_hostile_members(era5_world, tmp_path):
    import zipfile

    import netCDF4

    from sm1km.storage.readers.limits import LimitError

    empty = tmp_path / "readme_only.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("README.txt", "nothing here")
    with pytest.raises(InputError, match="holds no netCDF file"):
        read_era5(empty)
    other = tmp_path / "no_swvl1.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.write(_strip(era5_world["new"], tmp_path / "lsm_only.nc", ["lsm"]), "lsm_only.nc")
    with pytest.raises(InputError, match="no member of the archive has 'swvl1'"):
        read_era5(other)
    bomb = tmp_path / "declares_a_huge_lat.nc"
    with netCDF4.Dataset(bomb, "w", format="NETCDF4") as nc:  # 8 KB on disk, 100 M latitudes declared
        nc.createDimension("latitude", 100_000_000)
        nc.createVariable("latitude", "f4", ("latitude",))
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(bomb, bomb.name)
    with pytest.raises(LimitError, match="declares_a_huge_lat.nc"):
        read_era5(hostile)


def test_cds_daily_statistics_product_one_step_per_day(era5_world, tmp_path):
    """The CDS 'derived daily statistics' product: one daily-mean step per day (valid_time at 00 UTC);
    read as those daily values, no partial day."""
    hourly = era5_world["hourly"]
    daily = np.stack([hourly[d * 24:(d + 1) * 24].mean(axis=0) for d in (0, 1)]).astype(np.float32)
    times = np.array(["2020-04-01T00:00", "2020-04-02T00:00"], dtype="datetime64[ns]")
    p = write_new_cds(tmp_path / "era5_daily_mean.nc", daily, era5_world["lsm"], times=times)
    got = read_era5(p)
    assert got.attrs["steps_per_day_max"] == 1 and got.attrs["partial_days"] == {}
    np.testing.assert_array_equal(got["time"].values, times)
    for day, (exp, _) in enumerate(era5_world["expected"]):
        np.testing.assert_allclose(got["swvl1"].values[day], exp, atol=1e-6, equal_nan=True)
