"""ESA CCI SM reader: real files (valid counts, station cell, ACTIVE percent, t0 sentinels),
hand-built files in the layouts of other product versions, and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage.readers.cci import T0_SENTINEL, parse_cci_filename, read_cci_day

REPO = Path(__file__).resolve().parents[1]
CCI = "esa_cci_sm/esa_cci_sm_dailyImages"
V52_0607 = f"{CCI}/v05.2/combined/2016/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc"
V52_0608 = f"{CCI}/v05.2/combined/2016/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160608000000-fv05.2.nc"
V42_0607 = f"{CCI}/v04.2/combined/2016/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv04.2.nc"
V42_0608 = f"{CCI}/v04.2/combined/2016/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160608000000-fv04.2.nc"
ACTIVE = f"{CCI}/v05.2/active/2016/ESACCI-SOILMOISTURE-L3S-SSMS-ACTIVE-20160607000000-fv05.2.nc"
PASSIVE = f"{CCI}/v05.2/passive/2016/ESACCI-SOILMOISTURE-L3S-SSMV-PASSIVE-20160607000000-fv05.2.nc"
FRAYE_ROW, FRAYE_COL = 182, 717  # CCI cell of the ISMN station fraye (44.375 N, -0.625 E)


def real(rel: str) -> Path:
    """A real test file: tests/data/real first, else ../shared/data/real, else skip (with reason)."""
    for base in (REPO / "tests" / "data" / "real", REPO.parent / "shared" / "data" / "real"):
        if (base / rel).exists():
            return base / rel
    pytest.skip(f"real file {rel} is neither in tests/data/real nor in ../shared/data/real")


# ---------------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------------

def test_v052_combined_valid_count_and_layout():
    ds = read_cci_day(real(V52_0607))
    assert ds["sm"].dims == ("time", "lat", "lon")
    assert ds["sm"].shape == (1, 720, 1440)
    assert ds["sm"].dtype == np.float32 and ds["flag"].dtype == np.int16
    assert ds["sm_uncertainty"].dtype == np.float32
    assert int(np.isfinite(ds["sm"].values).sum()) == 170_984  # README count
    assert float(np.nanmax(ds["sm"])) == pytest.approx(0.47165, abs=1e-4)
    assert float(np.nanmin(ds["sm"])) == 0.0
    assert str(ds["time"].values[0])[:10] == "2016-06-07"
    np.testing.assert_array_equal(ds["lat"].values, grid.coarse_lat(np.arange(720)))
    np.testing.assert_array_equal(ds["lon"].values, grid.coarse_lon(np.arange(1440)))
    assert ds.attrs["product"] == "COMBINED" and ds.attrs["product_version"] == "05.2"
    assert ds["sm"].attrs["units"] == "m3 m-3"
    # flag: -1 exactly where the file has its fill value 127, otherwise the CCI bit code
    with netCDF4.Dataset(real(V52_0607)) as nc:
        nc.set_auto_maskandscale(False)
        raw_flag = nc["flag"][0]
    np.testing.assert_array_equal(ds["flag"].values[0] == -1, raw_flag == 127)
    assert set(np.unique(ds["flag"].values)) <= set(range(-1, 32))


def test_v052_station_cell_and_t0():
    region = grid.Region(FRAYE_ROW - 2, FRAYE_ROW + 3, FRAYE_COL - 2, FRAYE_COL + 3)
    ds = read_cci_day(real(V52_0607), region, with_t0=True)
    assert ds["sm"].shape == (1, 5, 5)
    cell = ds.sel(lat=44.375, lon=-0.625)
    assert float(cell["sm"].item()) == pytest.approx(0.2011, abs=1e-4)
    assert int(cell["flag"].item()) == 0
    t0 = cell["t0"].values.ravel()[0]
    assert str(t0)[:16] == "2016-06-07T03:26"
    # the region read equals the same window of the global read
    full = read_cci_day(real(V52_0607))
    np.testing.assert_array_equal(
        ds["sm"].values, full["sm"].values[:, region.row0:region.row1, region.col0:region.col1])


def test_v052_second_day():
    ds = read_cci_day(real(V52_0608))
    assert int(np.isfinite(ds["sm"].values).sum()) == 171_048
    assert str(ds["time"].values[0])[:10] == "2016-06-08"
    assert float(ds["sm"].values[0, FRAYE_ROW, FRAYE_COL]) == pytest.approx(0.1910, abs=1e-4)


def test_active_is_percent_unless_porosity_given():
    ds = read_cci_day(real(ACTIVE), with_t0=True)
    assert "sm" not in ds and ds["sm_percent"].attrs["units"] == "percent"
    assert int(np.isfinite(ds["sm_percent"].values).sum()) == 175_117
    assert float(np.nanmax(ds["sm_percent"])) == 100.0
    # fraye's cell: sm missing, flag fill, t0 holds the -3440586.5 sentinel -> NaT (no overflow)
    assert np.isnan(ds["sm_percent"].values[0, FRAYE_ROW, FRAYE_COL])
    assert ds["flag"].values[0, FRAYE_ROW, FRAYE_COL] == -1
    assert np.isnat(ds["t0"].values[0, FRAYE_ROW, FRAYE_COL])
    with netCDF4.Dataset(real(ACTIVE)) as nc:
        nc.set_auto_maskandscale(False)
        raw_t0 = nc["t0"][0]
    assert nc is not None and (raw_t0 == T0_SENTINEL).sum() > 30_000
    assert np.isnat(ds["t0"].values[0][raw_t0 == T0_SENTINEL]).all()
    conv = read_cci_day(real(ACTIVE), porosity=0.45)
    assert conv["sm"].attrs["units"] == "m3 m-3"
    np.testing.assert_allclose(conv["sm"].values, ds["sm_percent"].values / 100 * 0.45, rtol=1e-6)
    assert float(np.nanmax(conv["sm"])) == pytest.approx(0.45)
    with pytest.raises(InputError, match="porosity"):
        read_cci_day(real(ACTIVE), porosity=45.0)


@pytest.mark.parametrize("rel,count,fraye", [(V42_0607, 170_549, 0.1643), (V42_0608, 169_634, 0.1489),
                                             (PASSIVE, 125_851, 0.3431)])
def test_other_versions_and_products(rel, count, fraye):
    ds = read_cci_day(real(rel))
    assert int(np.isfinite(ds["sm"].values).sum()) == count
    assert float(ds["sm"].values[0, FRAYE_ROW, FRAYE_COL]) == pytest.approx(fraye, abs=1e-4)
    assert float(np.nanmax(ds["sm"])) <= 1.0


def test_t0_on_upper_valid_bound_is_kept():
    # v04.2 2016-06-07 has pixels with t0 exactly on valid_range's upper bound (16959.5)
    ds = read_cci_day(real(V42_0607), with_t0=True)
    t0 = ds["t0"].values[0]
    assert (t0 == np.datetime64("2016-06-07T12:00", "ns")).sum() > 0


def test_parse_cci_filename():
    info = parse_cci_filename(ACTIVE)
    assert info["product"] == "ACTIVE" and info["version"] == "05.2" and info["tag"] == "SSMS"
    assert str(info["date"])[:10] == "2016-06-07"
    assert parse_cci_filename("foo.nc") == {}


# ---------------------------------------------------------------------------------------------
# hand-built files: other versions' layouts (packed sm, freqband, float time, subset, ascending lat)
# ---------------------------------------------------------------------------------------------

def write_cci(path, *, rows=(180, 186), cols=(716, 724), sm=None, packed=None, time_value=16959.0,
              units="m3 m-3", ascending_lat=False, lat=None, lon=None, freqband_name="freqbandID",
              with_time=True, flag=None, fill=-9999.0):
    """A small CCI-like file covering global rows/cols [r0, r1) x [c0, c1)."""
    r0, r1 = rows
    c0, c1 = cols
    la = grid.coarse_lat(np.arange(r0, r1)) if lat is None else np.asarray(lat)
    lo = grid.coarse_lon(np.arange(c0, c1)) if lon is None else np.asarray(lon)
    if ascending_lat:
        la = la[::-1]
    ny, nx = la.size, lo.size
    if sm is None:
        sm = np.linspace(0.05, 0.45, ny * nx).reshape(ny, nx)
    with netCDF4.Dataset(path, "w", format="NETCDF4_CLASSIC") as nc:
        nc.createDimension("time", 1)
        nc.createDimension("lat", ny)
        nc.createDimension("lon", nx)
        if with_time:
            t = nc.createVariable("time", "f8", ("time",))
            t.units = "days since 1970-01-01 00:00:00 UTC"
            t[:] = time_value
        nc.createVariable("lat", "f4", ("lat",))[:] = la
        nc.createVariable("lon", "f4", ("lon",))[:] = lo
        if packed == "physical_range":  # older CCI: int16 * 1e-4, valid_range in physical units
            v = nc.createVariable("sm", "i2", ("time", "lat", "lon"), fill_value=-32768)
            v.set_auto_maskandscale(False)
            v.scale_factor = np.float32(1e-4)
            v.add_offset = np.float32(0.0)
            v.valid_range = np.array([0.0, 1.0], dtype="f4")
            raw = np.where(np.isnan(sm), -32768, np.round(np.nan_to_num(sm) / 1e-4)).astype("i2")
            v[0] = raw
        elif packed == "packed_range":  # CF-correct: valid_range in packed units
            v = nc.createVariable("sm", "i2", ("time", "lat", "lon"), fill_value=-32768)
            v.set_auto_maskandscale(False)
            v.scale_factor = 1e-4
            v.add_offset = 0.0
            v.valid_range = np.array([0, 10000], dtype="i2")
            v[0] = np.where(np.isnan(sm), -32768, np.round(np.nan_to_num(sm) / 1e-4)).astype("i2")
        else:
            v = nc.createVariable("sm", "f4", ("time", "lat", "lon"), fill_value=np.float32(fill))
            v.set_auto_maskandscale(False)
            v.valid_range = np.array([0.0, 100.0 if units == "percent" else 1.0], dtype="f4")
            v[0] = np.where(np.isnan(sm), fill, sm).astype("f4")
        if units is not None:
            v.units = units
        f = nc.createVariable("flag", "i1", ("time", "lat", "lon"), fill_value=np.int8(127))
        f.set_auto_maskandscale(False)
        f[0] = (np.zeros((ny, nx), "i1") if flag is None else flag)
        nc.createVariable(freqband_name, "i2", ("time", "lat", "lon"), fill_value=np.int16(0))[0] = 1
    return path


def test_packed_sm_with_physical_valid_range_freqband_and_float_time(tmp_path):
    sm = np.linspace(0.0, 0.5, 6 * 8).reshape(6, 8)
    sm[2, 3] = np.nan
    p = write_cci(tmp_path / "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv02.2.nc", sm=sm,
                  packed="physical_range", time_value=16958.99999999, freqband_name="freqband",
                  ascending_lat=True)
    ds = read_cci_day(p)
    assert str(ds["time"].values[0]) == "2016-06-07T00:00:00.000000000"  # rounded to the day
    assert ds.attrs["freqband_variable"] == "freqband"
    # the file has ascending latitudes; output is descending and values follow their coordinates
    np.testing.assert_allclose(ds["sm"].values[0], sm[::-1], atol=6e-5)
    assert int(np.isfinite(ds["sm"].values).sum()) == sm.size - 1
    # netCDF4's auto-masking reads [0, 1] as packed units and masks nearly everything
    with netCDF4.Dataset(p) as nc:
        naive = nc["sm"][:]
    assert int(np.ma.count(naive)) < 5


def test_packed_sm_with_packed_valid_range(tmp_path):
    sm = np.linspace(0.01, 0.6, 48).reshape(6, 8)
    p = write_cci(tmp_path / "cci_packed.nc", sm=sm, packed="packed_range")
    ds = read_cci_day(p)
    np.testing.assert_allclose(ds["sm"].values[0], sm, atol=6e-5)


def test_subset_file_is_placed_by_coordinates(tmp_path):
    sm = np.full((6, 8), 0.3)
    p = write_cci(tmp_path / "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20200102000000-fv08.1.nc",
                  rows=(180, 186), cols=(716, 724), sm=sm, time_value=18263.0)
    own = read_cci_day(p)  # region None -> the file's own extent
    assert own["sm"].shape == (1, 6, 8)
    assert own["lat"].values[0] == grid.coarse_lat(180) and own["lon"].values[0] == grid.coarse_lon(716)
    big = grid.Region(178, 190, 714, 730)
    ds = read_cci_day(p, big)
    assert ds["sm"].shape == (1, 12, 16)
    inside = np.zeros((12, 16), bool)
    inside[2:8, 2:10] = True
    assert np.isfinite(ds["sm"].values[0][inside]).all()
    assert np.isnan(ds["sm"].values[0][~inside]).all()
    assert (ds["flag"].values[0][~inside] == -1).all() and (ds["flag"].values[0][inside] == 0).all()
    assert str(ds["time"].values[0])[:10] == "2020-01-02"


def test_date_from_file_name_when_no_time_variable(tmp_path):
    p = write_cci(tmp_path / "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20190315000000-fv06.1.nc", with_time=False)
    assert str(read_cci_day(p)["time"].values[0])[:10] == "2019-03-15"


# ---------------------------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------------------------

def test_truncated_file(tmp_path):
    src = real(V52_0607)
    p = tmp_path / src.name
    p.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(InputError, match="truncated|corrupt") as ei:
        read_cci_day(p)
    assert str(p) in str(ei.value)


def test_text_file_named_nc(tmp_path):
    p = tmp_path / "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc"
    p.write_text("this is not a netCDF file\n")
    with pytest.raises(InputError, match="text file"):
        read_cci_day(p)


def test_empty_file(tmp_path):
    p = tmp_path / "x.nc"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_cci_day(p)


def test_wrong_variable_name(tmp_path):
    p = tmp_path / "wrong.nc"
    with netCDF4.Dataset(p, "w") as nc:
        nc.createDimension("lat", 2)
        nc.createDimension("lon", 2)
        nc.createVariable("soil_moisture", "f4", ("lat", "lon"))[:] = 0.2
    with pytest.raises(InputError, match="no variable 'sm'.*soil_moisture"):
        read_cci_day(p)


def test_wrong_units(tmp_path):
    p = write_cci(tmp_path / "k.nc", units="K")
    with pytest.raises(InputError, match="units 'K'"):
        read_cci_day(p)


def test_missing_units_falls_back_on_product_name(tmp_path):
    p = write_cci(tmp_path / "ESACCI-SOILMOISTURE-L3S-SSMS-ACTIVE-20160607000000-fv05.2.nc", units=None,
                  sm=np.full((6, 8), 0.5))
    assert "sm_percent" in read_cci_day(p)
    p2 = write_cci(tmp_path / "no_units.nc", units=None)
    with pytest.raises(InputError, match="units None"):
        read_cci_day(p2)


def test_wrong_grid(tmp_path):
    p = write_cci(tmp_path / "tenth.nc", lat=np.arange(45.05, 44.4, -0.1)[:6], lon=np.arange(-1.05, -0.2, 0.1)[:8])
    with pytest.raises(InputError, match="not on the 0.25° CCI cell centres"):
        read_cci_day(p)
    # a 0.5° grid whose centres happen to coincide with CCI centres
    half = write_cci(tmp_path / "half.nc", lat=grid.coarse_lat(np.arange(180, 192, 2)),
                     lon=grid.coarse_lon(np.arange(716, 732, 2)))
    with pytest.raises(InputError, match="spacing is 0.5°"):
        read_cci_day(half)


def test_all_missing_day(tmp_path):
    p = write_cci(tmp_path / "empty_day.nc", sm=np.full((6, 8), np.nan))
    with pytest.raises(InputError, match="all-missing"):
        read_cci_day(p)
    # a region with no valid cell in an otherwise valid file is not an error
    ds = read_cci_day(real(V52_0607), grid.Region(360, 362, 600, 602))  # mid-Atlantic
    assert np.isnan(ds["sm"].values).all()


def test_region_outside_subset_file(tmp_path):
    p = write_cci(tmp_path / "sub.nc")
    with pytest.raises(InputError, match="does not overlap"):
        read_cci_day(p, grid.Region(0, 4, 0, 4))


def test_several_days_in_one_file(tmp_path):
    with netCDF4.Dataset(tmp_path / "two2.nc", "w") as nc:
        nc.createDimension("time", 2)
        nc.createDimension("lat", 1)
        nc.createDimension("lon", 1)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 1970-01-01"
        t[:] = [1, 2]
        nc.createVariable("lat", "f4", ("lat",))[:] = 44.375
        nc.createVariable("lon", "f4", ("lon",))[:] = -0.625
        v = nc.createVariable("sm", "f4", ("time", "lat", "lon"))
        v.units = "m3 m-3"
        v[:] = 0.2
    with pytest.raises(InputError, match="one day per file"):
        read_cci_day(tmp_path / "two2.nc")


# ---------------------------------------------------------------------------------------------
# C3S SM (the Copernicus service's CCI SM): daily read like CCI, dekadal/monthly described, refused
# ---------------------------------------------------------------------------------------------
C3S_DAILY = "C3S-SOILMOISTURE-L3S-SSMV-COMBINED-DAILY-20160607000000-TCDR-v202212.0.0.nc"
C3S_DEKADAL = "C3S-SOILMOISTURE-L3S-SSMV-COMBINED-DEKADAL-20160611000000-ICDR-v202212.0.0.nc"
C3S_MONTHLY = "C3S-SOILMOISTURE-L3S-SSMV-COMBINED-MONTHLY-20160601000000-TCDR-v202212.0.0.nc"


def test_parse_c3s_filenames():
    d = parse_cci_filename(C3S_DAILY)
    assert (d["service"], d["frequency"], d["record"], d["version"], d["product"]) == (
        "C3S", "DAILY", "TCDR", "202212.0.0", "COMBINED")
    assert parse_cci_filename(C3S_DEKADAL)["record"] == "ICDR"
    assert parse_cci_filename(V52_0607)["service"] == "ESA CCI"
    from sm1km.storage.readers.cci import composite_period

    assert [str(x)[:10] for x in composite_period(parse_cci_filename(C3S_DEKADAL))] == ["2016-06-11", "2016-06-20"]
    assert [str(x)[:10] for x in composite_period(parse_cci_filename(C3S_MONTHLY))] == ["2016-06-01", "2016-06-30"]
    assert [str(x)[:10] for x in composite_period(parse_cci_filename(
        C3S_DEKADAL.replace("20160611", "20160221")))] == ["2016-02-21", "2016-02-29"]


def test_c3s_daily_reads_like_cci_and_composites_are_refused(tmp_path):
    import json
    import shutil

    from sm1km.storage.readers.inspect import inspect_path

    src = real(V52_0607)
    for name in (C3S_DAILY, C3S_DEKADAL, C3S_MONTHLY):
        shutil.copy(src, tmp_path / name)
    a, b = read_cci_day(src), read_cci_day(tmp_path / C3S_DAILY)
    np.testing.assert_array_equal(a["sm"].values, b["sm"].values)
    assert b.attrs["service"] == "C3S" and b.attrs["frequency"] == "DAILY"
    for name in (C3S_DEKADAL, C3S_MONTHLY):
        with pytest.raises(InputError, match="needs daily values") as e:
            read_cci_day(tmp_path / name)
        assert name in str(e.value) and "DAILY" in str(e.value)
    desc = json.loads(json.dumps(next(iter(inspect_path(str(tmp_path / C3S_DEKADAL)))), default=str))
    assert desc["kind"] == "cci" and desc["frequency"] == "DEKADAL"
    assert str(desc["time_start"])[:10] == "2016-06-11" and str(desc["time_end"])[:10] == "2016-06-20"
