"""``sm1km predictors``: terrain known answers (own D8), and DEM/SoilGrids/WorldCover -> the run's GeoTIFFs."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from sm1km.cli import main
from sm1km.config import RunConfig
from sm1km.core import grid, terrain
from sm1km.errors import InputError
from sm1km.stages.predictors import predictors
from sm1km.storage.readers.rasters import read_raster

RES = 1 / 1200  # 3 arc-seconds, as GLO-90 / SRTM-3


# --------------------------------------------------------------------------------------------
# known answers
# --------------------------------------------------------------------------------------------
def _lat(n, north=45.0, res=RES):
    return north - res * (np.arange(n) + 0.5)


def test_slope_of_a_tilted_plane_is_its_angle():
    ny, nx = 40, 50
    lat = _lat(ny)
    m_lat, _ = terrain.metres_per_degree(lat)
    dy = m_lat * RES
    # rises 0.05 m per metre towards the north: z(row) = 0.05 * distance north
    north_m = np.cumsum(dy[::-1])[::-1]
    z = np.repeat((0.05 * north_m)[:, None], nx, axis=1)
    s = terrain.slope_deg(z, lat, RES, RES)
    np.testing.assert_allclose(s[1:-1, 1:-1], np.rad2deg(np.arctan(0.05)), rtol=2e-3)


def test_metres_per_degree_known_values():
    m_lat, m_lon = terrain.metres_per_degree([0.0, 45.0, 60.0])
    np.testing.assert_allclose(m_lat, [110574.3, 111131.8, 111412.2], atol=2)
    np.testing.assert_allclose(m_lon, [111319.5, 78846.8, 55800.0], rtol=1e-3)


def test_tilted_plane_accumulation_grows_downslope():
    ny, nx = 30, 20
    z = np.repeat(np.linspace(300.0, 10.0, ny)[:, None], nx, axis=1)  # falls to the south
    acc = terrain.flow_accumulation(terrain.d8_receivers(z, _lat(ny), RES, RES))
    # each column drains straight south: the row k (from the north) collects k + 1 cells
    np.testing.assert_array_equal(acc, np.repeat(np.arange(1, ny + 1, dtype=float)[:, None], nx, axis=1))
    t = terrain.twi(z, _lat(ny), RES, RES)
    assert np.all(np.diff(t[:, 5]) > 0)


def test_v_valley_channel_collects_everything():
    ny, nx = 25, 21
    cols = np.abs(np.arange(nx) - nx // 2)            # V across, channel in the middle column
    rows = np.arange(ny)[::-1]                         # channel falls to the south
    z = 100.0 + 10.0 * cols[None, :] + 1.0 * rows[:, None]
    acc = terrain.flow_accumulation(terrain.d8_receivers(z, _lat(ny), RES, RES))
    assert acc[-1, nx // 2] == ny * nx                # the channel's outlet drains the whole valley
    assert np.all(np.diff(acc[:, nx // 2]) > 0)
    assert acc[:, 0].max() == 1                        # ridge cells receive nothing
    t = terrain.twi(z, _lat(ny), RES, RES)
    assert np.nanargmax(t[-1]) == nx // 2


def test_flat_area_gets_finite_twi_and_cycles_are_refused():
    z = np.full((10, 10), 50.0)
    recv = terrain.d8_receivers(z, _lat(10), RES, RES)
    assert (recv == -1).all()                          # no lower neighbour: every cell an outlet
    t = terrain.twi(z, _lat(10), RES, RES, fill=False)
    assert np.isfinite(t).all()
    cell = np.sqrt(np.prod([m[0] * RES for m in terrain.metres_per_degree(_lat(10)[:1])]))
    np.testing.assert_allclose(t, np.log(cell / terrain.MIN_TAN_SLOPE), rtol=2e-3)
    # filled: the flat drains to its edges (every cell once), TWI finite and larger where flow gathers
    zf = terrain.fill_depressions(z)
    assert (zf >= z).all() and (zf - z).max() < 10 * terrain.FILL_EPSILON_M
    acc = terrain.flow_accumulation(terrain.d8_receivers(zf, _lat(10), RES, RES))
    outlets = terrain.d8_receivers(zf, _lat(10), RES, RES) == -1
    assert acc[outlets].sum() == z.size and not outlets[1:-1, 1:-1].any()
    assert np.isfinite(terrain.twi(z, _lat(10), RES, RES)).all()
    with pytest.raises(ValueError, match="cycle"):
        terrain.flow_accumulation(np.array([[1, 0]]))


def test_a_pit_is_filled_and_the_flow_passes_through_it():
    ny, nx = 15, 9
    z = np.repeat(np.linspace(100.0, 10.0, ny)[:, None], nx, axis=1)
    z[7, 4] = 0.0                                      # a pit in the middle of the slope
    acc_raw = terrain.flow_accumulation(terrain.d8_receivers(z, _lat(ny), RES, RES))
    zf = terrain.fill_depressions(z)
    assert zf[7, 4] > z[8, 4] and np.array_equal(np.delete(zf.ravel(), 7 * nx + 4), np.delete(z.ravel(), 7 * nx + 4))
    acc = terrain.flow_accumulation(terrain.d8_receivers(zf, _lat(ny), RES, RES))
    assert acc_raw[-1].sum() < ny * nx                 # unfilled: the pit swallows its catchment
    assert acc[-1].sum() == ny * nx                    # filled: everything reaches the southern edge


def test_nan_cells_are_not_receivers():
    z = np.repeat(np.linspace(300.0, 10.0, 8)[:, None], 3, axis=1)
    z[4, :] = np.nan
    recv = terrain.d8_receivers(z, _lat(8), RES, RES)
    assert (recv[3] == -1).all() and (recv[4] == -1).all()
    assert np.isnan(terrain.twi(z, _lat(8), RES, RES)[4]).all()


def test_land_cover_mapping():
    wc = np.array([[10, 20, 30, 40], [50, 60, 80, 0]])
    np.testing.assert_array_equal(terrain.map_land_cover(wc, "worldcover"), [[5, 7, 10, 12], [13, 16, 17, 255]])
    igbp = np.array([1, 12, 17, 255, 0])
    np.testing.assert_array_equal(terrain.map_land_cover(igbp, "mcd12q1"), [1, 12, 17, 255, 255])
    assert terrain.unknown_classes(np.array([1.0, 12.0, np.nan]), "worldcover") == [1, 12]
    assert terrain.unknown_classes(np.array([10.0, 80.0, 0.0]), "worldcover") == []


# --------------------------------------------------------------------------------------------
# the stage on a synthetic download set
# --------------------------------------------------------------------------------------------
BBOX = (10.0, 45.0, 10.5, 45.5)      # 2 x 2 coarse cells, 60 x 60 px at factor 30


def _geotiff(path: Path, data: np.ndarray, west: float, north: float, res: float, nodata, units: str | None = None,
             crs: str = "EPSG:4326") -> None:
    import rasterio
    from affine import Affine

    prof = dict(driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype=data.dtype.name,
                crs=crs, transform=Affine(res, 0, west, 0, -res, north), nodata=nodata)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data, 1)
        if units:
            ds.set_band_unit(1, units)


def _dem(lon, lat):
    return 200.0 + 800.0 * np.exp(-((lon - 10.25) ** 2 + (lat - 45.25) ** 2) / 0.02) + 300.0 * (lat - 45.0)


def _downloads(d: Path, *, dem_west=9.9, soil_scale=1.0) -> dict:
    """Two DEM tiles (west, east halves), SoilGrids clay/sand (g/kg int16), WorldCover (uint8)."""
    d.mkdir(parents=True, exist_ok=True)
    north, n = 45.6, int(round(0.7 / RES))
    lat = north - RES * (np.arange(n) + 0.5)
    for i, w in enumerate((dem_west, dem_west + 0.35)):
        nx = int(round(0.35 / RES))
        lon = w + RES * (np.arange(nx) + 0.5)
        _geotiff(d / f"Copernicus_DSM_{i}.tif", _dem(lon[None, :], lat[:, None]).astype(np.float32), w, north, RES,
                 -32767.0)
    sres = 1 / 400  # 250 m
    ns = int(round(0.8 / sres))
    slat = 45.7 - sres * (np.arange(ns) + 0.5)
    slon = 9.9 + sres * (np.arange(ns) + 0.5)
    clay = (200 + 200 * (slon[None, :] - 9.9) + 0 * slat[:, None]) * soil_scale
    sand = (400 + 100 * (slat[:, None] - 45.0) + 0 * slon[None, :]) * soil_scale
    _geotiff(d / "clay_0-5cm_mean.tif", clay.astype(np.int16), 9.9, 45.7, sres, -32768)
    _geotiff(d / "sand_0-5cm_mean.tif", sand.astype(np.int16), 9.9, 45.7, sres, -32768)
    lres = 1 / 1200
    nl = int(round(0.8 / lres))
    llon = 9.9 + lres * (np.arange(nl) + 0.5)
    llat = 45.7 - lres * (np.arange(nl) + 0.5)
    lc = np.where(llon[None, :] < 10.25, 40, 10) * np.ones((nl, 1))
    lc[llat > 45.4] = 80
    _geotiff(d / "ESA_WorldCover_10m_2021_v200_N45E009_Map.tif", lc.astype(np.uint8), 9.9, 45.7, lres, 0)
    # a tile of the same download far from the region (the glob takes it): left out
    _geotiff(d / "ESA_WorldCover_10m_2021_v200_S03E030_Map.tif", np.full((30, 30), 60, np.uint8), 30.0, -2.0, lres, 0)
    return {"dem": str(d / "Copernicus_DSM_*.tif"), "clay": str(d / "clay_0-5cm_mean.tif"),
            "sand": str(d / "sand_0-5cm_mean.tif"), "land_cover": str(d / "ESA_WorldCover_*.tif"),
            "land_cover_scheme": "worldcover"}


KEYS = ("elevation", "slope", "twi", "clay", "sand", "land_cover")


def _config(tmp: Path, sources: dict, bbox=BBOX) -> Path:
    cfg = {"region": dict(zip(("west", "south", "east", "north"), bbox)),
           "period": {"start": "2020-04-01", "end": "2020-04-10"},
           "store": {"root": "store"},
           "inputs": {"predictors": {k: f"predictors/{k}.tif" for k in KEYS}, "predictor_sources": sources}}
    p = tmp / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_predictors_from_downloads_read_back_on_the_run_grid(tmp_path, capsys):
    run_yaml = _config(tmp_path, _downloads(tmp_path / "dl"))
    assert main(["predictors", "--config", str(run_yaml)]) == 0
    cfg = RunConfig.from_yaml(run_yaml)
    region = cfg.coarse_region
    lat, lon = grid.region_coords(region, 30)
    out = {}
    for k in KEYS:
        path = getattr(cfg.inputs.predictors, k)
        da = read_raster(path, region, 30, "mode" if k == "land_cover" else "average")
        np.testing.assert_array_equal(da.lat, lat)
        np.testing.assert_array_equal(da.lon, lon)
        out[k] = da.values
        assert np.isfinite(da.values).all(), k
    assert not glob.glob(str(tmp_path / "predictors" / "*.part"))
    expect = _dem(lon[None, :], lat[:, None])
    np.testing.assert_allclose(out["elevation"], expect, atol=3.0)  # a 1 km mean of a smooth surface
    assert out["slope"].min() >= 0 and out["slope"].max() < 20
    peak = np.unravel_index(np.argmax(out["elevation"]), out["elevation"].shape)
    assert out["slope"][peak] < np.percentile(out["slope"], 50)  # flat top of the hill
    assert out["twi"][peak] < np.median(out["twi"])          # a summit is dry
    np.testing.assert_allclose(out["clay"], ((200 + 200 * (lon - 9.9)) / 1000)[None, :].repeat(60, 0), atol=2e-3)
    np.testing.assert_allclose(out["sand"], ((400 + 100 * (lat - 45.0)) / 1000)[:, None].repeat(60, 1), atol=2e-3)
    lc = out["land_cover"]
    assert set(np.unique(lc)) == {5.0, 12.0, 17.0}
    assert lc[-1, 0] == 12 and lc[-1, -1] == 5 and lc[0, 0] == 17


def _bad_run(tmp_path, sources, capsys, bbox=BBOX):
    run_yaml = _config(tmp_path, sources, bbox)
    capsys.readouterr()
    rc = main(["predictors", "--config", str(run_yaml)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert not (tmp_path / "predictors").exists() or not os.listdir(tmp_path / "predictors")
    with pytest.raises(InputError):
        predictors(RunConfig.from_yaml(run_yaml))
    return err


def test_dem_not_covering_the_region_is_refused_and_nothing_written(tmp_path, capsys):
    err = _bad_run(tmp_path, _downloads(tmp_path / "dl", dem_west=10.1), capsys)
    assert "not the whole region" in err


def test_soilgrids_in_percent_is_refused_and_nothing_written(tmp_path, capsys):
    err = _bad_run(tmp_path, _downloads(tmp_path / "dl", soil_scale=0.1), capsys)
    assert "percent" in err


def test_land_cover_of_the_other_scheme_is_refused(tmp_path, capsys):
    src = _downloads(tmp_path / "dl")
    err = _bad_run(tmp_path, {**src, "land_cover_scheme": "mcd12q1"}, capsys)
    assert "not mcd12q1 classes" in err


def test_land_cover_from_mcd12q1_hdf_granules(tmp_path):
    """MCD12Q1 granules as LP DAAC serves them (HDF4-EOS, written with pyhdf in the real layout)."""
    from test_readers_modis import TILE_SIZE_M, write_granule

    src = _downloads(tmp_path / "dl")
    n = 2400
    lc = np.full((n, n), 12, np.uint8)
    lc[:, 1200:] = 4
    write_granule(tmp_path / "dl" / "MCD12Q1.A2019001.h18v04.061.2022169000000.hdf", "MCD12Q1", 18, 4, {
        "LC_Type1": (lc, {"long_name": "Land_Cover_Type_1", "valid_range": [1, 17], "_FillValue": 255})},
        n=n, res=TILE_SIZE_M / n)
    run_yaml = _config(tmp_path, {**src, "land_cover": str(tmp_path / "dl" / "MCD12Q1.*.hdf"),
                                  "land_cover_scheme": "mcd12q1"})
    cfg = RunConfig.from_yaml(run_yaml)
    predictors(cfg)
    da = read_raster(cfg.inputs.predictors.land_cover, cfg.coarse_region, 30, "mode")
    assert set(np.unique(da.values[np.isfinite(da.values)]).tolist()) <= {4.0, 12.0}
    assert np.isfinite(da.values).all()
    with pytest.raises(InputError, match="mcd12q1"):
        predictors(cfg.model_copy(update={"inputs": cfg.inputs.model_copy(update={
            "predictor_sources": cfg.inputs.predictor_sources.model_copy(update={"land_cover_scheme": "worldcover"})})}))


def test_existing_configs_stay_valid():
    from sm1km.config import EXAMPLE_CONFIG

    cfg = RunConfig.from_dict(yaml.safe_load(EXAMPLE_CONFIG))
    assert cfg.inputs.predictor_sources is None


REAL_DEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "dem"


@pytest.mark.skipif(not REAL_DEM.is_dir(), reason="../shared/data/real/dem not present")
def test_real_dem_terrain_and_coverage(tmp_path, capsys):
    """The real DEM (GPL-3: read in place, never copied): plausible slope/TWI on its native grid, the
    D8 accumulation drains a large basin; it covers no whole 0.25-degree cell, so a run over it is
    refused with the coverage message and nothing is written."""
    import rasterio

    tifs = sorted(glob.glob(str(REAL_DEM / "**" / "*.tif"), recursive=True))
    if not tifs:
        pytest.skip("no GeoTIFF in ../shared/data/real/dem")
    with rasterio.open(tifs[0]) as ds:
        if ds.crs is None or not ds.crs.is_geographic:
            pytest.skip("the real DEM is not geographic")
        z = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        t, b = ds.transform, ds.bounds
    lat = t.f + t.e * (np.arange(z.shape[0]) + 0.5)
    slope = terrain.slope_deg(z, lat, t.e, t.a)
    assert np.nanmin(slope) >= 0 and np.nanmax(slope) < 70 and np.nanmedian(slope) > 0.1
    raw = terrain.flow_accumulation(terrain.d8_receivers(z, lat, t.e, t.a))
    acc = terrain.flow_accumulation(terrain.d8_receivers(terrain.fill_depressions(z), lat, t.e, t.a))
    assert raw.max() < 0.01 * np.isfinite(z).sum()      # int16 metres: flats and pits stop unfilled flow
    assert acc.max() > 0.05 * np.isfinite(z).sum()      # filled, the main channel drains a large share
    twi = terrain.twi(z, lat, t.e, t.a)
    assert 0 < np.nanmedian(twi) < 30 and np.nanmax(twi) > np.nanmedian(twi) + 5
    err = _bad_run(tmp_path, {"dem": tifs[0]}, capsys, bbox=(b.left, b.bottom, b.right, b.top))
    assert "not the whole region" in err


def test_docs_data_config_block_is_a_valid_run_config(tmp_path):
    """The run config of docs/data.md, section 6, validates, and its sources are what the stage reads."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    block = next(b for b in blocks if "predictor_sources" in b)
    p = tmp_path / "run.yaml"
    p.write_text(block)
    cfg = RunConfig.from_yaml(p)
    src = cfg.inputs.predictor_sources
    assert src is not None and src.land_cover_scheme == "worldcover"
    assert src.dem.endswith("Copernicus_DSM_COG_30_*_DEM.tif")
    from sm1km.stages.predictors import _targets

    assert set(_targets(cfg)) == set(KEYS)
    with pytest.raises(InputError, match="no file matches"):   # nothing downloaded here
        predictors(cfg)
