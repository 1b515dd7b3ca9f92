"""Raster reader: exact fine-grid output, resampling known answers, nodata/scales, MODIS mixed
encodings and the DEM (real files from ../shared, skipped when absent), file-name dates, bad files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage.readers.rasters import auto_integer_scale, raster_date, raster_stats, read_raster

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "real"
NDVI = SHARED / "modis/MODIStsp/inst/testdata/VI_16Days_500m_v6/NDVI"
DEM = SHARED / "dem/pysheds/data/dem.tif"

REGION = grid.Region(180, 182, 720, 723)  # 44.5..45.0 N, 0.0..0.75 E: 2 x 3 cells
FACTOR = 8


def shared(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"{p.name}: MODIS/DEM test files are GPL-3 and not copied into the repo; "
                    "they are read from ../shared/data/real, which is absent here")
    return p


def write_tif(path, data, *, res, west, north, crs="EPSG:4326", nodata=None, scale=None, offset=None, **kw):
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                       dtype=data.dtype, crs=crs, transform=Affine(res, 0.0, west, 0.0, -res, north), nodata=nodata,
                       **kw) as ds:
        ds.write(data, 1)
        if scale is not None:
            ds.scales = (scale,)
        if offset is not None:
            ds.offsets = (offset,)
    return path


def fine_pixels(region=REGION, factor=FACTOR):
    lat, lon = grid.region_coords(region, factor)
    return lat, lon


def test_same_grid_is_exact_for_every_resampling(tmp_path):
    lat, lon = fine_pixels()
    data = (np.arange(lat.size * lon.size, dtype=np.float32).reshape(lat.size, lon.size)) / 7.0
    b = REGION.bbox
    p = write_tif(tmp_path / "static.tif", data, res=0.25 / FACTOR, west=b.west, north=b.north)
    for rs in ("nearest", "average", "bilinear"):
        da = read_raster(p, REGION, FACTOR, rs)
        assert da.dims == ("lat", "lon") and da.dtype == np.float32
        np.testing.assert_array_equal(da["lat"].values, lat)
        np.testing.assert_array_equal(da["lon"].values, lon)
        np.testing.assert_allclose(da.values, data, rtol=1e-6, err_msg=rs)


def test_average_of_finer_source_is_the_block_mean(tmp_path):
    lat, lon = fine_pixels()
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (lat.size * 3, lon.size * 3)).astype(np.float32)
    src[0, 0] = -9999.0  # nodata: ignored by the average
    b = REGION.bbox
    p = write_tif(tmp_path / "fine.tif", src, res=0.25 / FACTOR / 3, west=b.west, north=b.north, nodata=-9999.0)
    da = read_raster(p, REGION, FACTOR, "average")
    blocks = np.where(src == -9999.0, np.nan, src).reshape(lat.size, 3, lon.size, 3)
    expect = np.nanmean(blocks, axis=(1, 3))
    np.testing.assert_allclose(da.values, expect, rtol=1e-5)
    near = read_raster(p, REGION, FACTOR, "nearest")
    assert np.isin(near.values[np.isfinite(near.values)], src).all()


def test_integer_scale_tags_nodata_and_valid_range(tmp_path):
    lat, lon = fine_pixels()
    raw = np.full((lat.size, lon.size), 5000, dtype=np.int16)
    raw[0, :4] = 32767  # nodata
    raw[1, 0] = -3000  # below the valid range once scaled
    b = REGION.bbox
    tagged = write_tif(tmp_path / "tagged.tif", raw, res=0.25 / FACTOR, west=b.west, north=b.north,
                       nodata=32767, scale=1e-4, offset=0.0)
    da = read_raster(tagged, REGION, FACTOR, "nearest", valid_range=(-0.2, 1.0))
    assert np.isnan(da.values[0, :4]).all() and np.isnan(da.values[1, 0])
    assert np.nanmax(da.values) == pytest.approx(0.5) and da.attrs["scale_applied"] == pytest.approx(1e-4)
    plain = write_tif(tmp_path / "plain.tif", raw, res=0.25 / FACTOR, west=b.west, north=b.north, nodata=32767)
    assert np.nanmax(read_raster(plain, REGION, FACTOR, "nearest").values) == 5000.0  # no tag, no MODIS name
    assert np.nanmax(read_raster(plain, REGION, FACTOR, "nearest", integer_scale=0.02).values) == pytest.approx(100.0)
    lst = write_tif(tmp_path / "MOD11A1_LST_Day_1km_2020_100.tif", raw, res=0.25 / FACTOR, west=b.west,
                    north=b.north, nodata=32767)
    assert np.nanmax(read_raster(lst, REGION, FACTOR, "nearest").values) == pytest.approx(100.0)  # ×0.02 K


def test_partial_overlap_is_nan_outside(tmp_path):
    lat, lon = fine_pixels()
    b = REGION.bbox
    half = np.ones((lat.size, lon.size // 2), np.float32)
    p = write_tif(tmp_path / "half.tif", half, res=0.25 / FACTOR, west=b.west, north=b.north)
    da = read_raster(p, REGION, FACTOR, "average")
    assert np.isfinite(da.values[:, : lon.size // 2]).all() and np.isnan(da.values[:, lon.size // 2:]).all()


def test_modis_sinusoidal_mixed_int16_and_float32():
    region = grid.snap_bbox((9.25, 45.75, 9.5, 46.0))
    out = {}
    for doy in ("001", "097", "161", "193", "337", "353"):
        p = shared(NDVI / f"MOD13A1_NDVI_2016_{doy}.tif")
        with rasterio.open(p) as s:
            dtype = s.dtypes[0]
        da = read_raster(p, region, 30, "average")
        out[doy] = (dtype, da)
        assert da.shape == (30, 30)
        v = da.values[np.isfinite(da.values)]
        assert v.size > 800 and v.min() >= -0.2 and v.max() <= 1.0, doy  # NDVI, whatever the encoding
        assert da.attrs["date"] == (dt.date(2016, 1, 1) + dt.timedelta(days=int(doy) - 1)).isoformat()
    assert out["001"][0] == "int16" and out["337"][0] == "float32"
    assert out["001"][1].attrs["scale_applied"] == pytest.approx(1e-4)
    assert out["337"][1].attrs["scale_applied"] == 1.0
    st = raster_stats(NDVI / "MOD13A1_NDVI_2016_001.tif")
    assert st["n_valid"] == 7736 and st["min"] == pytest.approx(-0.2) and st["max"] == pytest.approx(0.9823)


def test_real_dem_geographic():
    p = shared(DEM)
    region = grid.snap_bbox((-97.45, 32.55, -97.2, 32.8))
    near = read_raster(p, region, 30, "nearest")
    avg = read_raster(p, region, 30, "average")
    for da in (near, avg):
        v = da.values[np.isfinite(da.values)]
        assert 147.0 <= v.min() and v.max() <= 298.0
    # the DEM covers -97.485..-97.179, 32.52..32.82: the region's eastern half is outside it
    assert np.isnan(near.sel(lon=-97.05, method="nearest").values).all()
    assert np.isfinite(near.sel(lon=-97.3, lat=32.7, method="nearest").values)
    with rasterio.open(p) as s:
        values = np.unique(s.read(1))
    assert np.isin(near.values[np.isfinite(near.values)], values).all()


@pytest.mark.parametrize("name,expected", [
    ("lst_day_20200401.tif", dt.date(2020, 4, 1)),
    ("ndvi_2020-04-09.tif", dt.date(2020, 4, 9)),
    ("MOD13A1_NDVI_2016_097.tif", dt.date(2016, 4, 6)),
    ("MOD11A1.A2016366.h18v04.061.2021.hdf", dt.date(2016, 12, 31)),
    ("elevation.tif", None),
    ("slope_30m.tif", None),
])
def test_raster_date(name, expected):
    assert raster_date(name) == expected


def test_auto_integer_scale_names():
    assert auto_integer_scale("MOD13A1_NDVI_2016_001.tif") == 1e-4
    assert auto_integer_scale("MYD13A2.A2016001.h18v04.061_EVI.tif") == 1e-4
    assert auto_integer_scale("MOD11A1_LST_Night_1km_2016_001.tif") == 0.02
    assert auto_integer_scale("dem.tif") == 1.0


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # writing the no-CRS file
def test_bad_rasters(tmp_path):
    lat, lon = fine_pixels()
    b = REGION.bbox
    good = write_tif(tmp_path / "good.tif", np.ones((lat.size, lon.size), np.float32), res=0.25 / FACTOR,
                     west=b.west, north=b.north)
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # header intact, data cut
    with pytest.raises(InputError, match="corrupt|truncated"):
        read_raster(trunc, REGION, FACTOR)
    text = tmp_path / "text.tif"
    text.write_text("not a tiff")
    with pytest.raises(InputError, match="not a raster"):
        read_raster(text, REGION, FACTOR)
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", height=4, width=4, count=1, dtype="float32") as ds:
        ds.write(np.ones((4, 4), np.float32), 1)
    with pytest.raises(InputError, match="no coordinate reference system or no geotransform"):
        read_raster(nocrs, REGION, FACTOR)
    with pytest.raises(InputError, match="does not overlap"):
        read_raster(good, grid.Region(0, 2, 0, 2), FACTOR)
    hdf4 = tmp_path / "MOD13A2.A2016001.h18v04.061.hdf"
    hdf4.write_bytes(b"\x0e\x03\x13\x01" + b"\x00" * 100)
    with pytest.raises(InputError, match="HDF4"):
        read_raster(hdf4, REGION, FACTOR)
    with pytest.raises(ValueError):
        read_raster(good, REGION, FACTOR, "cubic_spline_magic")


def test_aligned_raster_fast_path_equals_the_warped_path(tmp_path, monkeypatch):
    """A GeoTIFF already on our fine grid is read by an exact window read; values equal the warper's."""
    import numpy as np
    import rasterio

    from sm1km.core import grid as G
    from sm1km.storage.readers import rasters

    region = G.snap_bbox((10, 45, 11, 46))
    big = G.Region(region.row0 - 1, region.row1 + 1, region.col0 - 2, region.col1 + 1)
    lat, lon = G.region_coords(big, 10)
    data = np.random.default_rng(3).normal(300, 5, (lat.size, lon.size)).astype("float32")
    data[5:9, 30:40] = -9999
    p = tmp_path / "lst_day_20200101.tif"
    with rasterio.open(p, "w", driver="GTiff", width=lon.size, height=lat.size, count=1, dtype="float32",
                       crs="EPSG:4326", transform=G.FineGrid(10).transform(big), nodata=-9999) as ds:
        ds.write(data, 1)
    fast = rasters.read_raster(p, region, 10)
    calls = []
    monkeypatch.setattr(rasters, "_aligned_offsets", lambda *a, **k: calls.append(1))
    slow = rasters.read_raster(p, region, 10)
    assert calls  # the general path really ran
    np.testing.assert_array_equal(fast.values, slow.values)
    np.testing.assert_array_equal(fast.values[~np.isnan(fast.values)].size > 0, True)
    assert np.isnan(fast.values).sum() == np.isnan(slow.values).sum()
