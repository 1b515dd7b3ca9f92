"""MODIS HDF4-EOS granules read natively (pyhdf): grid from StructMetadata.0, per-product scale
conventions, fill/valid_range, QC, tile mosaics with a missing tile, the fine-grid warp, inspect,
ingest through ``.hdf`` globs, and bad/hostile files refused with the file named.

Synthetic granules are written with ``pyhdf`` in the LP DAAC layout (global attribute
``StructMetadata.0`` with the GridStructure text, SDS names and attributes as in MOD11A1 v061,
MOD13A2 v061 and MCD12Q1 v061); the real MOD13A2 granule is the MIT one in tests/data/real/modis/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from pyhdf.SD import SD, SDC

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage.readers.limits import LimitError
from sm1km.storage.readers.modis import (
    TILE_SIZE_M,
    TILE_X0,
    TILE_Y0,
    describe_granule,
    open_granule,
    parse_struct_metadata,
    read_field,
    read_modis,
)

REPO = Path(__file__).resolve().parents[1]
REAL = "modis/MOD13A2.A2016145.h18v04.006.2016166145124.hdf"
R = 6371007.181
RES_1KM = TILE_SIZE_M / 1200  # 926.625433 m
FACTOR = 25  # 0.01°


def real(rel: str) -> Path:
    for p in (REPO / "tests" / "data" / "real" / rel,
              REPO.parent / "shared" / "data" / "real" / "modis" / "fdetsch-MODIS" / "inst" / "external" / Path(rel).name):
        if p.exists():
            return p
    pytest.skip(f"real file {rel} is neither in tests/data/real nor in ../shared/data/real")


# --------------------------------------------------------------------------------------------
# synthetic granules in the LP DAAC layout
# --------------------------------------------------------------------------------------------
_NT = {np.dtype("uint16"): SDC.UINT16, np.dtype("int16"): SDC.INT16, np.dtype("uint8"): SDC.UINT8,
       np.dtype("int8"): SDC.INT8}


def struct_metadata(grid_name: str, xdim: int, ydim: int, ul: tuple, lr: tuple, fields: dict) -> str:
    types = {np.dtype("uint16"): "DFNT_UINT16", np.dtype("int16"): "DFNT_INT16", np.dtype("uint8"): "DFNT_UINT8",
             np.dtype("int8"): "DFNT_INT8"}
    objs = "".join(f'\t\t\tOBJECT=DataField_{i}\n\t\t\t\tDataFieldName="{n}"\n\t\t\t\tDataType={types[a.dtype]}\n'
                   f'\t\t\t\tDimList=("YDim","XDim")\n\t\t\tEND_OBJECT=DataField_{i}\n'
                   for i, (n, (a, _)) in enumerate(fields.items(), 1))
    return ("GROUP=SwathStructure\nEND_GROUP=SwathStructure\nGROUP=GridStructure\n\tGROUP=GRID_1\n"
            f'\t\tGridName="{grid_name}"\n\t\tXDim={xdim}\n\t\tYDim={ydim}\n'
            f"\t\tUpperLeftPointMtrs=({ul[0]:.6f},{ul[1]:.6f})\n\t\tLowerRightMtrs=({lr[0]:.6f},{lr[1]:.6f})\n"
            "\t\tProjection=GCTP_SNSOID\n\t\tProjParams=(6371007.181000,0,0,0,0,0,0,0,0,0,0,0,0)\n"
            "\t\tSphereCode=-1\n\t\tGridOrigin=HDFE_GD_UL\n\t\tGROUP=Dimension\n\t\tEND_GROUP=Dimension\n"
            f"\t\tGROUP=DataField\n{objs}\t\tEND_GROUP=DataField\n\t\tGROUP=MergedFields\n\t\tEND_GROUP=MergedFields\n"
            "\tEND_GROUP=GRID_1\nEND_GROUP=GridStructure\nGROUP=PointStructure\nEND_GROUP=PointStructure\nEND\n")


def write_granule(path: Path, grid_name: str, h: int, v: int, fields: dict, *, n: int = 1200,
                  res: float = RES_1KM, struct: str | None = None, extra_attrs: dict | None = None) -> Path:
    """An HDF4-EOS granule of tile (h, v): ``fields`` = SDS name -> (array, attributes)."""
    ul = (TILE_X0 + h * TILE_SIZE_M, TILE_Y0 - v * TILE_SIZE_M)
    lr = (ul[0] + n * res, ul[1] - n * res)
    sd = SD(str(path), SDC.WRITE | SDC.CREATE | SDC.TRUNC)
    text = struct if struct is not None else struct_metadata(grid_name, n, n, ul, lr, fields)
    sd.attr("HDFEOSVersion").set(SDC.CHAR, "HDFEOS_V2.19")
    sd.attr("StructMetadata.0").set(SDC.CHAR, text)
    for k, val in (extra_attrs or {}).items():
        sd.attr(k).set(SDC.CHAR, val)
    for name, (arr, attrs) in fields.items():
        s = sd.create(name, _NT[arr.dtype], arr.shape)
        s.dim(0).setname(f"YDim:{grid_name}")
        s.dim(1).setname(f"XDim:{grid_name}")
        for ak, av in attrs.items():
            if isinstance(av, str):
                s.attr(ak).set(SDC.CHAR, av)
            elif isinstance(av, float):
                s.attr(ak).set(SDC.FLOAT64, av)
            elif isinstance(av, list):
                s.attr(ak).set(_NT[arr.dtype], av)
            else:
                s.attr(ak).set(_NT[arr.dtype], int(av))
        s[:] = arr
        s.endaccess()
    sd.end()
    return path


def pixel_xy(h: int, v: int, n: int = 1200, res: float = RES_1KM) -> tuple[np.ndarray, np.ndarray]:
    """Sinusoidal x, y of the pixel centres of a tile."""
    x = TILE_X0 + h * TILE_SIZE_M + (np.arange(n) + 0.5) * res
    y = TILE_Y0 - v * TILE_SIZE_M - (np.arange(n) + 0.5) * res
    return np.meshgrid(x, y)


def lst_kelvin(x, y):
    """A smooth LST field on the sinusoidal plane (K), the same across tiles."""
    return 250.0 + x / 1e5 + (y - 4.0e6) / 1e5


def lst_attrs(kind: str) -> dict:
    return {"long_name": f"Daily {kind} 1km grid Land-surface Temperature", "units": "K",
            "valid_range": [7500, 65535], "_FillValue": 0, "scale_factor": 0.02, "add_offset": 0.0}


QC_ATTRS = {"long_name": "Quality control for daytime LST and emissivity", "units": "none",
            "valid_range": [0, 255], "_FillValue": 0}  # MOD11's QC fill 0 is also "good quality"


def write_mod11(path: Path, h: int, v: int, *, qc_day=None, qc_night=None, fill=None, n: int = 1200,
                scale: float = 0.02, night_offset: float = -10.0) -> Path:
    x, y = pixel_xy(h, v, n)
    dn_day = np.round(lst_kelvin(x, y) / 0.02).astype(np.uint16)
    dn_night = np.round((lst_kelvin(x, y) + night_offset) / 0.02).astype(np.uint16)
    if fill is not None:
        dn_day[fill] = 0
    qd = np.zeros((n, n), np.uint8) if qc_day is None else qc_day.astype(np.uint8)
    qn = np.zeros((n, n), np.uint8) if qc_night is None else qc_night.astype(np.uint8)
    return write_granule(path, "MODIS_Grid_Daily_1km_LST", h, v, {
        "LST_Day_1km": (dn_day, {**lst_attrs("daytime"), "scale_factor": scale}),
        "QC_Day": (qd, QC_ATTRS),
        "LST_Night_1km": (dn_night, lst_attrs("nighttime")),
        "QC_Night": (qn, QC_ATTRS)}, n=n)


def write_mod13(path: Path, h: int, v: int, ndvi: np.ndarray, reliability: np.ndarray) -> Path:
    n = ndvi.shape[0]
    return write_granule(path, "MODIS_Grid_16DAY_1km_VI", h, v, {
        "1 km 16 days NDVI": (ndvi.astype(np.int16), {"long_name": "1 km 16 days NDVI", "units": "NDVI",
                                                      "valid_range": [-2000, 10000], "_FillValue": -3000,
                                                      "scale_factor": 10000.0, "add_offset": 0.0}),
        "1 km 16 days pixel reliability": (reliability.astype(np.int8), {
            "long_name": "1 km 16 days pixel reliability", "units": "rank", "valid_range": [0, 4],
            "_FillValue": -1})}, n=n)


def region_xy(region: grid.Region) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """lat, lon of the fine grid and the sinusoidal x, y of each cell centre."""
    lat, lon = grid.region_coords(region, FACTOR)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    y = np.deg2rad(la) * R
    x = np.deg2rad(lo) * R * np.cos(np.deg2rad(la))
    return lat, lon, x, y


# --------------------------------------------------------------------------------------------
# the real granule
# --------------------------------------------------------------------------------------------
def test_real_mod13a2_grid_values_and_time():
    p = real(REAL)
    g = open_granule(p)
    assert (g.product, g.tile, g.collection, g.date, g.time_end) == (
        "MOD13A2", (18, 4), "006", dt.date(2016, 5, 24), dt.date(2016, 6, 8))
    assert (g.grid.xdim, g.grid.ydim) == (219, 185) and g.grid.radius == R
    assert g.grid.res == pytest.approx((RES_1KM, RES_1KM), abs=1e-5)
    vals, counts = read_field(g, "ndvi")
    fin = np.isfinite(vals)
    assert counts["scaling"] == "divide" and counts["scale_factor"] == 10000.0
    assert fin.sum() == 40_109 and counts["n_qc_dropped"] == 406  # reliability 2/3 (snow, cloud) dropped
    assert -0.2 <= vals[fin].min() and vals[fin].max() <= 1.0 and vals[fin].max() > 0.9
    # strict choice: only "good" pixels
    strict, c2 = read_field(g, "ndvi", ndvi_reliability=(0,))
    assert np.isfinite(strict).sum() < fin.sum() and c2["n_qc_dropped"] > 406


def test_real_mod13a2_onto_the_fine_grid():
    p = real(REAL)
    region = grid.snap_bbox((10.0, 49.25, 11.0, 50.0))
    da = read_modis(p, region, FACTOR, "ndvi")
    lat, lon = grid.region_coords(region, FACTOR)
    assert da.dims == ("lat", "lon") and da.dtype == np.float32
    np.testing.assert_array_equal(da["lat"].values, lat)
    np.testing.assert_array_equal(da["lon"].values, lon)
    v = da.values
    fin = np.isfinite(v)
    assert fin.sum() > 0.9 * v.size  # the granule covers lat 48.9..50.4 at these longitudes
    assert -0.2 <= v[fin].min() and v[fin].max() <= 1.0
    assert da.attrs["time_start"] == "2016-05-24" and da.attrs["time_end"] == "2016-06-08"
    assert da.attrs["resampling"] == "average" and da.attrs["tiles"] == "h18v04"
    # the warp keeps the mean: the fine-grid mean is close to the native mean over the same area
    g = open_granule(p)
    native, _ = read_field(g, "ndvi")
    assert abs(np.nanmean(v) - np.nanmean(native)) < 0.05


def test_inspect_real_granule(capsys):
    from sm1km.cli import main

    p = real(REAL)
    rc = main(["inspect", str(p)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    (rec,) = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert rec["kind"] == "raster" and rec["product"] == "MOD13A2" and rec["tile"] == "h18v04"
    assert (rec["h"], rec["v"]) == (18, 4)
    assert rec["variable"] == "ndvi" and rec["units"] == "1"
    assert rec["time_start"] == "2016-05-24" and rec["time_end"] == "2016-06-08" and rec["composite_days"] == 16
    assert rec["n_valid"] == 40_109 and -0.2 <= rec["min"] < rec["max"] <= 1.0
    assert rec["variables"]["ndvi"]["qc"] == "1 km 16 days pixel reliability"
    assert (rec["width"], rec["height"]) == (219, 185) and "+proj=sinu" in rec["crs"]


# --------------------------------------------------------------------------------------------
# synthetic granules: StructMetadata, conventions, QC, mosaics
# --------------------------------------------------------------------------------------------
def test_struct_metadata_parsed():
    text = struct_metadata("G", 1200, 1200, (0.0, 5559752.598333), (1111950.519667, 4447802.078667),
                           {"LST_Day_1km": (np.zeros((1, 1), np.uint16), {})})
    (g,) = parse_struct_metadata(text)
    assert (g.name, g.xdim, g.ydim, g.radius, g.fields) == ("G", 1200, 1200, R, ("LST_Day_1km",))
    assert g.res == pytest.approx((RES_1KM, RES_1KM)) and g.tile() == (18, 4)


def test_lst_multiply_convention_and_qc_bits(tmp_path):
    n = 1200
    qc = np.zeros((n, n), np.uint8)
    qc[100:300, 100:300] = 0b01          # "produced, other quality": dropped
    qc[400:600, 400:600] = 0b10          # not produced, cloud: dropped
    qc[700:900, 700:900] = 0b11111100    # mandatory QA 00 with error bits set: kept
    fill = np.zeros((n, n), bool)
    fill[1000:1100, 0:100] = True
    p = write_mod11(tmp_path / "MOD11A1.A2020092.h18v04.061.2020100000000.hdf", 18, 4, qc_day=qc, fill=fill)
    g = open_granule(p)
    assert (g.product, g.date, g.time_end, g.tile) == ("MOD11A1", dt.date(2020, 4, 1), dt.date(2020, 4, 1), (18, 4))
    day, c = read_field(g, "lst_day")
    x, y = pixel_xy(18, 4)
    assert c["scaling"] == "multiply" and c["scale_factor"] == 0.02
    assert np.isnan(day[100:300, 100:300]).all() and np.isnan(day[400:600, 400:600]).all()
    assert np.isnan(day[1000:1100, 0:100]).all() and c["n_fill"] == 100 * 100
    kept = np.isfinite(day)
    assert kept[700:900, 700:900].all() and c["n_qc_dropped"] == 2 * 200 * 200
    np.testing.assert_allclose(day[kept], lst_kelvin(x, y)[kept], atol=0.011)  # DN × 0.02, not / 0.02
    night, cn = read_field(g, "lst_night")
    assert cn["n_qc_dropped"] == 0 and np.isfinite(night).all()  # QC_Night all 0 although QC _FillValue is 0
    np.testing.assert_allclose(night, lst_kelvin(x, y) - 10.0, atol=0.011)


def test_ndvi_divide_convention_and_reliability(tmp_path):
    n = 1200
    ndvi = np.full((n, n), 5000, np.int16)
    ndvi[:, 600:] = -1500
    ndvi[0:50, 0:50] = -3000  # fill
    rel = np.zeros((n, n), np.int8)
    rel[200:300, :] = 1  # marginal: kept
    rel[400:500, :] = 2  # snow: dropped
    rel[600:700, :] = 3  # cloud: dropped
    p = write_mod13(tmp_path / "MYD13A2.A2020097.h18v04.061.2020115000000.hdf", 18, 4, ndvi, rel)
    g = open_granule(p)
    assert g.product == "MYD13A2" and g.time_end == dt.date(2020, 4, 21)  # 16 days from DOY 97 (2020-04-06)
    v, c = read_field(g, "ndvi")
    assert c["scaling"] == "divide" and c["n_fill"] == 2500
    assert np.nanmax(v) == pytest.approx(0.5) and np.nanmin(v) == pytest.approx(-0.15)  # DN / 10000
    assert np.isfinite(v[200:400]).all() and np.isnan(v[400:500]).all() and np.isnan(v[600:700]).all()
    assert c["n_qc_dropped"] == 2 * 100 * 1200


def test_scale_factor_contradicting_the_product_is_refused(tmp_path):
    p = write_mod11(tmp_path / "MOD11A1.A2020092.h18v04.061.2020100000000.hdf", 18, 4, n=120, scale=50.0)
    with pytest.raises(InputError, match=r"MOD11A1.A2020092.*scale_factor 50.*contradicts"):
        read_field(open_granule(p), "lst_day")


def test_mosaic_of_adjacent_tiles_one_missing(tmp_path):
    """Four tiles meet at (h19, v04)'s upper-left corner; h18v03 is not given: NaN there, and the
    others are continuous across their seams (mosaicked before the warp)."""
    region = grid.snap_bbox((15.0, 49.5, 16.25, 50.5))  # x=1111950 m is lon 15.56 at lat 50
    files = [write_mod11(tmp_path / f"MOD11A1.A2020092.h{h:02d}v{v:02d}.061.2020100000000.hdf", h, v)
             for h, v in ((19, 3), (18, 4), (19, 4))]
    da = read_modis(files, region, FACTOR, "lst_day")
    lat, lon, x, y = region_xy(region)
    assert da.shape == (lat.size, lon.size) and da.attrs["tiles"] == "h19v03,h18v04,h19v04"
    v = da.values
    # which tile each cell centre is in, 2 km away from the seams
    h = (x - TILE_X0) / TILE_SIZE_M
    vv = (TILE_Y0 - y) / TILE_SIZE_M
    inside = (np.abs(h - np.round(h)) * TILE_SIZE_M > 2000) & (np.abs(vv - np.round(vv)) * TILE_SIZE_M > 2000)
    missing = (np.floor(h) == 18) & (np.floor(vv) == 3)
    assert missing[inside].any() and (~missing[inside]).any()
    assert np.isnan(v[missing & inside]).all()
    present = ~missing
    assert np.isfinite(v[present & inside]).all()
    np.testing.assert_allclose(v[present & inside], lst_kelvin(x, y)[present & inside], atol=0.1)
    # cells across the seam between two given tiles (h18v04 | h19v04, below lat 50) are whole
    seam = (np.abs(h - 19) * TILE_SIZE_M < 1000) & (np.floor(vv) == 4)
    assert seam.any() and np.isfinite(v[seam]).all()
    np.testing.assert_allclose(v[seam], lst_kelvin(x, y)[seam], atol=0.1)
    # the same tiles in another order give the same field
    again = read_modis(files[::-1], region, FACTOR, "lst_day")
    np.testing.assert_array_equal(np.isnan(again.values), np.isnan(v))
    np.testing.assert_allclose(again.values, v, equal_nan=True)


def test_mosaic_refuses_mixed_days_products_and_duplicates(tmp_path):
    a = write_mod11(tmp_path / "MOD11A1.A2020092.h18v04.061.2020100000000.hdf", 18, 4, n=120)
    b = write_mod11(tmp_path / "MOD11A1.A2020093.h19v04.061.2020100000000.hdf", 19, 4, n=120)
    region = grid.snap_bbox((10.0, 45.0, 11.0, 46.0))
    with pytest.raises(InputError, match="one product and one day"):
        read_modis([a, b], region, FACTOR, "lst_day")
    c = tmp_path / "MOD11A1.A2020092.h18v04.061.2020200000000.hdf"
    shutil.copy(a, c)
    with pytest.raises(InputError, match="h18v04 is given twice"):
        read_modis([a, c], region, FACTOR, "lst_day")
    d = write_mod11(tmp_path / "MOD11A1.A2020092.h19v04.061.2020100000000.hdf", 19, 4, n=120)
    with pytest.raises(InputError, match="h18v04 is given twice"):
        read_modis([a, d, c], region, FACTOR, "lst_day")


def test_land_cover_mode_and_year(tmp_path):
    n = 2400  # MCD12Q1: 500 m
    lc = np.full((n, n), 5, np.uint8)
    lc[:, 1200:] = 10
    lc[::2, ::2] = 12      # a quarter of the pixels: never the majority
    lc[0:40, 0:40] = 255   # fill
    p = write_granule(tmp_path / "MCD12Q1.A2019001.h18v04.061.2022169000000.hdf", "MCD12Q1", 18, 4, {
        "LC_Type1": (lc, {"long_name": "Land_Cover_Type_1", "valid_range": [1, 17], "_FillValue": 255})},
        n=n, res=TILE_SIZE_M / n)
    g = open_granule(p)
    assert g.date == dt.date(2019, 1, 1) and g.time_end == dt.date(2019, 12, 31)
    region = grid.snap_bbox((10.0, 45.0, 11.0, 46.0))
    da = read_modis(p, region, FACTOR, "land_cover")
    assert da.attrs["resampling"] == "mode"
    vals = set(np.unique(da.values[np.isfinite(da.values)]).tolist())
    assert vals <= {5.0, 10.0} and len(vals) >= 1  # classes, never an average; 12 never wins
    rec = describe_granule(p)
    assert rec["composite_days"] == 365 and rec["variables"]["land_cover"]["n_fill"] == 1600


def test_inspect_synthetic_lst(tmp_path):
    from sm1km.storage.readers.inspect import inspect_path

    qc = np.zeros((120, 120), np.uint8)
    qc[:10] = 1
    p = write_mod11(tmp_path / "MYD11A1.A2020092.h18v04.061.2020100000000.hdf", 18, 4, n=120, qc_day=qc)
    (rec,) = list(inspect_path(str(p)))
    assert rec["kind"] == "raster" and rec["product"] == "MYD11A1" and rec["units"] == "K"
    assert rec["time_start"] == rec["time_end"] == "2020-04-01" and rec["composite_days"] == 1
    assert set(rec["variables"]) == {"lst_day", "lst_night"}
    assert rec["variables"]["lst_day"]["n_valid"] == 110 * 120 and rec["variables"]["lst_night"]["n_valid"] == 120 * 120
    assert 150 < rec["min"] < rec["max"] < 400


# --------------------------------------------------------------------------------------------
# bad and hostile files
# --------------------------------------------------------------------------------------------
CORNER = grid.snap_bbox((0.25, 49.25, 1.0, 50.0))  # inside the first 120 × 120 px of h18v04


def _err(path, key="lst_day") -> str:
    with pytest.raises(InputError) as e:
        read_modis(path, CORNER, FACTOR, key)
    assert Path(path).name in str(e.value) and "Fix:" in str(e.value)
    return str(e.value)


def test_not_hdf4_missing_dataset_and_malformed_metadata(tmp_path):
    txt = tmp_path / "MOD11A1.A2020092.h18v04.061.2020100000000.hdf"
    txt.write_text("<html>401 Unauthorized</html>")
    assert "not an HDF4" in _err(txt)
    trunc = tmp_path / "MOD11A1.A2020093.h18v04.061.hdf"
    full = write_mod11(tmp_path / "full.hdf", 18, 4, n=120)
    trunc.write_bytes(full.read_bytes()[:3000])
    assert "truncated or corrupt" in _err(trunc)
    noqc = write_granule(tmp_path / "MOD11A1.A2020094.h18v04.061.hdf", "MODIS_Grid_Daily_1km_LST", 18, 4, {
        "LST_Day_1km": (np.full((120, 120), 15000, np.uint16), lst_attrs("daytime"))}, n=120)
    assert "no quality dataset 'QC_Day'" in _err(noqc)
    bad = struct_metadata("G", 120, 120, (0, 1), (2, 0), {}).replace("XDim=120", "XDim=abc")
    mal = write_granule(tmp_path / "MOD11A1.A2020095.h18v04.061.hdf", "G", 18, 4, {
        "LST_Day_1km": (np.zeros((120, 120), np.uint16), {})}, n=120, struct=bad)
    assert "malformed" in _err(mal)
    inverted = struct_metadata("G", 120, 120, (1000.0, 0.0), (0.0, 1000.0), {})
    inv = write_granule(tmp_path / "MOD11A1.A2020096.h18v04.061.hdf", "G", 18, 4, {
        "LST_Day_1km": (np.zeros((120, 120), np.uint16), {})}, n=120, struct=inverted)
    assert "do not describe a grid" in _err(inv)
    nometa = tmp_path / "MOD11A1.A2020097.h18v04.061.hdf"
    sd = SD(str(nometa), SDC.WRITE | SDC.CREATE)
    s = sd.create("LST_Day_1km", SDC.UINT16, (10, 10))
    s[:] = np.zeros((10, 10), np.uint16)
    s.endaccess()
    sd.end()
    assert "StructMetadata.0" in _err(nometa)
    ndvi = write_mod13(tmp_path / "MOD13A2.A2020097.h18v04.061.hdf", 18, 4, np.zeros((60, 60)), np.zeros((60, 60)))
    assert "has no lst_day" in _err(ndvi) and "MOD11A1" in _err(ndvi)
    assert "has no elevation" in _err(ndvi, "elevation")
    far = write_mod11(tmp_path / "MOD11A1.A2020098.h30v10.061.hdf", 30, 10, n=60)
    assert "do not overlap" in _err(far)


def test_hostile_declared_dimensions_refused_before_reading(tmp_path):
    """A 3 KB file declaring 300 000 × 300 000 cells, and StructMetadata declaring XDim 10^9."""
    huge = tmp_path / "MOD11A1.A2020092.h18v04.061.hdf"
    big = 300_000
    text = struct_metadata("G", big, big, (0.0, 5559752.6), (big * RES_1KM, 5559752.6 - big * RES_1KM),
                           {"LST_Day_1km": (np.zeros((1, 1), np.uint16), {})})
    sd = SD(str(huge), SDC.WRITE | SDC.CREATE)
    sd.attr("StructMetadata.0").set(SDC.CHAR, text)
    sd.create("LST_Day_1km", SDC.UINT16, (big, big)).endaccess()  # declared, never written
    sd.end()
    assert os.path.getsize(huge) < 10_000
    with pytest.raises(LimitError, match="above the limit"):
        open_granule(huge)
    meta_only = tmp_path / "MOD11A1.A2020093.h18v04.061.hdf"
    text = struct_metadata("G", 10**9, 120, (0.0, 5559752.6), (1e9 * RES_1KM, 5559752.6 - 120 * RES_1KM), {})
    write_granule(meta_only, "G", 18, 4, {"LST_Day_1km": (np.zeros((120, 120), np.uint16), {})}, n=120, struct=text)
    with pytest.raises(LimitError, match="XDim"):
        read_modis(meta_only, grid.snap_bbox((10.0, 45.0, 11.0, 46.0)), FACTOR, "lst_day")


# --------------------------------------------------------------------------------------------
# ingest: inputs.predictors globs of MODIS granules
# --------------------------------------------------------------------------------------------
def test_ingest_reads_modis_granule_globs(tmp_path, monkeypatch):
    """lst_day and lst_night from the same MOD11A1 granules, ndvi from MOD13A2, land_cover from
    MCD12Q1: the predictors store holds what ``read_modis`` gives on the run's grid."""
    from sm1km.config import RunConfig
    from sm1km.stages.ingest import ingest
    from sm1km.storage import store

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    src = tmp_path / "modis"
    src.mkdir()
    n = 1200
    qc = np.zeros((n, n), np.uint8)
    qc[520:540] = 0b01  # a band of "other quality" rows (lat ≈ 45.6), dropped on day 1
    lst1 = write_mod11(src / "MOD11A1.A2020092.h18v04.061.2020100000000.hdf", 18, 4, qc_day=qc)
    lst3 = write_mod11(src / "MOD11A1.A2020094.h18v04.061.2020100000000.hdf", 18, 4, night_offset=-12.0)
    for doy, dn in (("081", 5000), ("097", 6000)):  # 2020-03-21 (before the period: lead-in), 2020-04-06
        write_mod13(src / f"MOD13A2.A2020{doy}.h18v04.061.2020100000000.hdf", 18, 4, np.full((n, n), dn),
                    np.zeros((n, n)))
    lc = np.full((2400, 2400), 4, np.uint8)
    lc[:, 1200:] = 8
    write_granule(src / "MCD12Q1.A2019001.h18v04.061.2022169000000.hdf", "MCD12Q1", 18, 4, {
        "LC_Type1": (lc, {"long_name": "Land_Cover_Type_1", "valid_range": [1, 17], "_FillValue": 255})},
        n=2400, res=TILE_SIZE_M / 2400)
    cfg = RunConfig.from_dict({
        "name": "modis", "region": {"west": 10.0, "south": 45.0, "east": 11.0, "north": 46.0},
        "period": {"start": "2020-04-01", "end": "2020-04-08"}, "grid": {"factor": 10},
        "store": {"root": str(tmp_path / "store")}, "cluster": {"kind": "synchronous"},
        "inputs": {"predictors": {"lst_day": str(src / "MOD11A1.*.hdf"), "lst_night": str(src / "MOD11A1.*.hdf"),
                                  "ndvi": str(src / "MOD13A2.*.hdf"), "land_cover": str(src / "MCD12Q1.*.hdf")}}})
    ingest(cfg)
    ds = store.open_dataset(cfg.store.url("inputs", "predictors.zarr"), cfg.store.storage_options()).load()
    region = cfg.coarse_region
    day1 = read_modis(lst1, region, 10, "lst_day")
    night3 = read_modis(lst3, region, 10, "lst_night")
    assert np.isnan(day1.values).any() and np.isfinite(day1.values).any()  # the QC band crosses the region
    obs = ds["observed_flags"].values
    np.testing.assert_allclose(ds["lst_day_k"].values[0][obs[0] & 1 > 0], day1.values[obs[0] & 1 > 0])
    assert ((obs[0] & 1 > 0) == np.isfinite(day1.values)).all()
    np.testing.assert_allclose(ds["lst_night_k"].values[2], night3.values)
    assert ds["lst_day_k"].attrs["units"] == "K" and 250 < float(ds["lst_day_k"].mean()) < 300
    assert (obs[5] & 4 > 0).all() and not (obs[:5] & 4 > 0).any()  # a composite sits on its first day
    np.testing.assert_allclose(ds["ndvi"].values[:5], 0.5, atol=1e-6)  # carried from the lead-in composite
    np.testing.assert_allclose(ds["ndvi"].values[5:], 0.6, atol=1e-6)
    assert set(np.unique(ds["land_cover"].values).tolist()) <= {4, 8}


def test_ingest_mosaics_the_tiles_of_one_day(tmp_path, monkeypatch):
    """A region across the h18v04 | h19v04 seam: day 1 has both tiles, day 2 only h18v04 (not
    observed east of the seam); adding day 2's h19v04 later changes that day (refused without
    --overwrite, like a changed file); a tile given twice for a day is refused."""
    from sm1km.config import RunConfig
    from sm1km.stages.ingest import ingest
    from sm1km.storage import store

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    src = tmp_path / "modis"
    src.mkdir()
    name = "MOD11A1.A{}.h{:02d}v04.061.2020100000000.hdf"
    d1 = [write_mod11(src / name.format("2020092", h, 4), h, 4) for h in (18, 19)]
    for h in (18, 19):  # a lead-in day (before the period) is a mosaic too
        write_mod11(src / name.format("2020091", h, 4), h, 4)
    write_mod11(src / name.format("2020093", 18, 4), 18, 4)
    data = {"name": "mosaic", "region": {"west": 13.75, "south": 45.0, "east": 14.5, "north": 45.5},
            "period": {"start": "2020-04-01", "end": "2020-04-02"}, "grid": {"factor": 10},
            "store": {"root": str(tmp_path / "store")}, "cluster": {"kind": "synchronous"},
            "inputs": {"predictors": {"lst_day": str(src / "MOD11A1.*.hdf"), "lst_night": str(src / "MOD11A1.*.hdf")}}}
    cfg = RunConfig.from_dict(data)
    ingest(cfg)

    def stored():
        ds = store.open_dataset(cfg.store.url("inputs", "predictors.zarr"), cfg.store.storage_options()).load()
        return ds["lst_day_k"].values, ds["observed_flags"].values & 1 > 0

    lst, obs = stored()
    both = read_modis(d1, cfg.coarse_region, 10, "lst_day").values
    assert np.isfinite(both).all()
    np.testing.assert_allclose(lst[0], both)
    assert obs[0].all()
    night = store.open_dataset(cfg.store.url("inputs", "predictors.zarr"), cfg.store.storage_options())["lst_night_k"]
    np.testing.assert_allclose(night.values[0], read_modis(d1, cfg.coarse_region, 10, "lst_night").values)
    lat, lon = grid.region_coords(cfg.coarse_region, 10)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    east = np.deg2rad(lo) * R * np.cos(np.deg2rad(la)) > TILE_X0 + 19 * TILE_SIZE_M + 1000
    assert east.any() and (~east).any()
    assert not obs[1][east].any() and obs[1][~east & ~(np.abs(np.deg2rad(lo) * R * np.cos(np.deg2rad(la))
                                                             - (TILE_X0 + 19 * TILE_SIZE_M)) < 1000)].all()
    write_mod11(src / name.format("2020093", 19, 4), 19, 4)
    with pytest.raises(InputError, match="differs from what inputs/predictors.zarr holds"):
        ingest(cfg)  # a tile added to a stored day changes it: not replaced silently
    ingest(cfg, overwrite=True)
    lst2, obs2 = stored()
    assert obs2[1].all() and np.isfinite(lst2[1]).all()
    np.testing.assert_array_equal(lst2[0], lst[0])
    shutil.copy(d1[1], src / name.format("2020092", 19, 4).replace("2020100000000", "2020200000000"))
    with pytest.raises(InputError, match="duplicate day 2020-04-01"):
        ingest(cfg)


def test_ingest_land_cover_from_several_mcd12q1_tiles(tmp_path, monkeypatch):
    """A static predictor glob matching the tiles of one MCD12Q1 granule is one mosaicked raster."""
    from sm1km.config import RunConfig
    from sm1km.stages.ingest import ingest
    from sm1km.storage import store

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    src = tmp_path / "modis"
    src.mkdir()
    for h, cls in ((18, 4), (19, 9)):
        write_granule(src / f"MCD12Q1.A2019001.h{h:02d}v04.061.2022169000000.hdf", "MCD12Q1", h, 4, {
            "LC_Type1": (np.full((2400, 2400), cls, np.uint8),
                         {"long_name": "Land_Cover_Type_1", "valid_range": [1, 17], "_FillValue": 255})},
            n=2400, res=TILE_SIZE_M / 2400)
    cfg = RunConfig.from_dict({
        "name": "lc", "region": {"west": 13.75, "south": 45.0, "east": 14.5, "north": 45.5},
        "period": {"start": "2020-04-01", "end": "2020-04-02"}, "grid": {"factor": 10},
        "store": {"root": str(tmp_path / "store")}, "cluster": {"kind": "synchronous"},
        "inputs": {"predictors": {"land_cover": str(src / "MCD12Q1.*.hdf")}}})
    ingest(cfg)
    lc = store.open_dataset(cfg.store.url("inputs", "predictors.zarr"), cfg.store.storage_options())["land_cover"]
    vals = lc.values
    assert set(np.unique(vals).tolist()) == {4, 9}  # both tiles, no gap (-1) at the seam
    assert (vals[:, 0] == 4).all() and (vals[:, -1] == 9).all()
