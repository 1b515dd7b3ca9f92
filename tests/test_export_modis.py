"""MODIS-sinusoidal compatibility layout: names, tiles, day-of-year axis, fill −1, and every pixel equal
to the master pixel that contains its centre (computed here independently with the closed-form
sinusoidal inverse), local and S3."""

from __future__ import annotations

import math
import os
import posixpath

import h5py
import numpy as np
import pytest

import export_stores as es
from sm1km.errors import ConfigError
from sm1km.stages.export import export
from sm1km.storage import store

R = 6371007.181
T = 1111950.5197665
ULX, ULY = -20015109.354, 10007554.677


def expected_tile(q_day: np.ndarray, h: int, v: int, west: float, north: float, per_deg: int) -> np.ndarray:
    """(row, col) image of tile hv from one master day, by the textbook sinusoidal inverse."""
    px = T / 1200
    x = ULX + h * T + (np.arange(1200) + 0.5) * px
    y = ULY - v * T - (np.arange(1200) + 0.5) * px
    lat = np.degrees(y / R)[:, None]
    lon = np.degrees(x[None, :] / (R * np.cos(np.radians(lat))))
    r = np.broadcast_to(np.floor((north - lat) * per_deg).astype(int), lon.shape)
    c = np.floor((lon - west) * per_deg).astype(int)
    ny, nx = q_day.shape
    ok = (np.abs(lon) <= 180) & (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
    out = np.full((1200, 1200), -1, dtype=np.int16)
    vals = q_day[r[ok], c[ok]]
    out[ok] = np.where(vals == -32768, -1, np.maximum(vals, 0))   # documented: negatives clip to 0
    return out


def test_modis_tiles_round_trip(store_root, tmp_path):
    root, so = store_root
    cfg = es.run_config(root, so, bbox=(-0.5, 39.5, 0.5, 40.5), start="2019-12-30", end="2020-01-02")
    q = es.make_master(cfg, so)["sm"]
    q[0, 0, 0] = -5            # a (non-physical) negative value must not read as the fill value -1
    es.write_store(cfg.store.url("master.zarr"), so, cfg, {"sm": q}, cfg.dates())
    out = store.join(root, "exports", "modis")
    files = export(cfg, fmt="hdf5", layout="modis-sinusoidal", out=out)["files"]
    names = [posixpath.basename(f) for f in files]
    assert names == sorted(f"SM.1km.Daily.{y}.h{h:02d}v{v:02d}.v001.h5" for y in ("20190365", "20200366")
                           for h, v in ((17, 4), (18, 4), (17, 5), (18, 5)))
    assert es.listing(out, so) == sorted(["_manifest.json", *names])
    for f in files:
        year = int(posixpath.basename(f)[13:17])
        h, v = int(f[-13:-11]), int(f[-10:-8])
        with h5py.File(es.local_copy(f, so, tmp_path)) as hf:
            sm = hf["SM"]
            assert sm.shape == (366 if year == 2020 else 365, 1200, 1200) and sm.dtype == np.int16
            assert sm.attrs["_FillValue"] == -1 and sm.attrs["scale_factor"] == 0.001
            assert hf.attrs["HorizontalTileNumber"] == h and hf.attrs["VerticalTileNumber"] == v
            assert "exported by sm1km" in hf.attrs["history"]
            days = [0, 1] if year == 2020 else [363, 364]
            t0 = 2 if year == 2020 else 0
            n_valid = 0
            for k, doy0 in enumerate(days):
                got = sm[doy0].T                                   # [doy-1, column, row] -> (row, column)
                want = expected_tile(q[t0 + k], h, v, -0.5, 40.5, cfg.fine_grid.per_deg)
                np.testing.assert_array_equal(got, want)
                n_valid += int((got != -1).sum())
            assert n_valid > 1000
            assert (sm[100] == -1).all()                           # a day outside the export is fill
            if year == 2019 and (h, v) == (17, 4):
                where = expected_tile(np.where(q[0] == -5, 7777, 0), h, v, -0.5, 40.5, 40) == 7777
                assert where.sum() == 9 and (sm[363].T[where] == 0).all()


def test_tiles_touching_the_region_only_between_pixel_centres_are_not_written(tmp_path):
    cfg = es.run_config(str(tmp_path / "store"), {}, bbox=(-180.0, 59.75, -179.75, 60.25), end="2020-01-30")
    q = es.make_master(cfg, {})["sm"]
    res = export(cfg, fmt="hdf5", layout="modis-sinusoidal", out=str(tmp_path / "m"))
    files = res["files"]
    assert res.stats["units_empty"] == res.stats["units_total"] - len(files) > 0  # planned, nothing to write
    # h08v02 meets the sinusoidal world only at its corner (lat 60, lon -180)
    assert [os.path.basename(f)[-14:] for f in files] == ["h08v03.v001.h5", "h09v02.v001.h5", "h09v03.v001.h5"]
    assert sorted(os.listdir(tmp_path / "m")) == sorted(["_manifest.json", *(os.path.basename(f) for f in files)])
    again = export(cfg, fmt="hdf5", layout="modis-sinusoidal", out=str(tmp_path / "m"))
    assert again["files"] == files and again.stats["tasks"] == 0  # empty tiles are recorded: not re-planned
    assert again.stats["units_empty"] == res.stats["units_empty"] and again.stats["units_written"] == 0
    for f in files:
        h, v = int(f[-13:-11]), int(f[-10:-8])
        with h5py.File(f) as hf:
            np.testing.assert_array_equal(hf["SM"][29].T, expected_tile(q[0], h, v, -180.0, 60.25, 40))


def test_modis_layout_options():
    cfg = es.run_config("/nonexistent", {})
    with pytest.raises(ConfigError, match="daily HDF5 only"):
        export(cfg, fmt="hdf5", product="monthly", layout="modis-sinusoidal", out="/x")
    with pytest.raises(ConfigError, match="/SM only"):
        export(cfg, fmt="hdf5", layout="modis-sinusoidal", with_uncertainty=True, out="/x")


def test_tile_size_constants_match_the_published_grid():
    from sm1km.stages.export import modis

    assert modis.PIXEL_M == pytest.approx(926.625433, abs=1e-6)
    assert modis.TILE_M * 36 == pytest.approx(2 * -ULX, abs=0.01)
    assert math.degrees(ULY / R) == pytest.approx(90.0, abs=1e-6)
