"""Export planning, pure: windows, time runs, bbox subsets, time selection, names, MODIS tiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sm1km.errors import ConfigError
from sm1km.stages.export import plan_jobs, select_times
from sm1km.stages.export.common import Source, bbox_slices, parse_bbox, plan_windows, time_groups
from sm1km.stages.export.geotiff import GeoTiffJob, temp_block
from sm1km.stages.export.geotiff import file_name as tif_name
from sm1km.stages.export.hdf5 import chunk_shape
from sm1km.stages.export.hdf5 import file_name as h5_name
from sm1km.stages.export.modis import (
    R_SPHERE,
    TILE_M,
    TILE_PX,
    ULX,
    ULY,
    file_name,
    pixel_lonlat,
    row_lat,
    tiles_intersecting,
)


def _cover(windows, rows, cols):
    hit = np.zeros((rows.stop, cols.stop), dtype=int)
    for r, c in windows:
        hit[r, c] += 1
    return hit[rows, cols]


@pytest.mark.parametrize("rows,cols,unit,budget,depth", [
    (slice(0, 95), slice(0, 203), (10, 20), 400, 1),
    (slice(7, 95), slice(13, 203), (10, 20), 1000, 2),
    (slice(0, 40), slice(0, 40), (10, 10), 10**9, 1),
    (slice(3, 4), slice(5, 6), (30, 30), 1, 1),
])
def test_plan_windows_tiles_exactly_on_unit_edges(rows, cols, unit, budget, depth):
    w = plan_windows(rows, cols, unit, budget, depth)
    assert (_cover(w, rows, cols) == 1).all()                 # every pixel exactly once
    for r, c in w:
        assert r.start == rows.start or r.start % unit[0] == 0  # inner edges on the store's chunk grid
        assert c.start == cols.start or c.start % unit[1] == 0
        assert (r.stop - r.start) * (c.stop - c.start) * depth <= max(budget, unit[0] * unit[1] * depth)
    if budget >= 10**9:
        assert len(w) == 1
    assert w == sorted(w, key=lambda rc: (rc[0].start, rc[1].start))  # row-major


def test_plan_windows_align_grows_unit_when_affordable():
    w = plan_windows(slice(0, 480), slice(0, 480), (120, 120), 240 * 240, align=16)
    assert {(r.stop - r.start, c.stop - c.start) for r, c in w} == {(240, 240)}
    small = plan_windows(slice(0, 480), slice(0, 480), (120, 120), 120 * 120, align=16)
    assert {(r.stop - r.start) for r, _ in small} == {120}


def test_temp_block_divides_window():
    assert temp_block(240) == 240 and temp_block(43200) == 3600 and 43200 % temp_block(43200) == 0
    assert temp_block(20) == 32 and temp_block(5000) == 512


def test_time_groups_stay_inside_one_time_chunk():
    assert time_groups([0, 1, 2, 3, 4, 5], 4, 4) == [slice(0, 4), slice(4, 6)]
    assert time_groups([2, 3, 4, 5], 4, 4) == [slice(2, 4), slice(4, 6)]
    assert time_groups([0, 1, 2, 5, 6], 32, 2) == [slice(0, 2), slice(2, 3), slice(5, 7)]
    assert time_groups([], 4, 4) == []


def _source(**kw):
    base = dict(url="x", storage_options={}, product="daily", shape=(6, 20, 40), row0=1780, col0=7600,
                per_deg=40, unit=(10, 10), time_unit=4,
                times=("2020-01-30", "2020-01-31", "2020-02-01", "2020-02-02", "2020-02-03", "2020-02-04"))
    base.update(kw)
    return Source(**base)


def test_bbox_slices_snap_outward_and_clip():
    s = _source()  # rows 1780.. = lat 45.5 - ..; cols 7600.. = lon 10.0 ..
    assert s.edges(slice(0, 20), slice(0, 40)) == (10.0, 45.0, 11.0, 45.5)
    assert bbox_slices(s, None) == (slice(0, 20), slice(0, 40))
    rows, cols = bbox_slices(s, parse_bbox("10.26,45.1,10.5,45.26"))
    assert (rows, cols) == (slice(9, 16), slice(10, 20))
    assert bbox_slices(s, parse_bbox([5, 40, 10.1, 50])) == (slice(0, 20), slice(0, 4))
    with pytest.raises(ConfigError, match="does not overlap"):
        bbox_slices(s, parse_bbox("20,45,21,46"))
    with pytest.raises(ConfigError, match="W,S,E,N"):
        parse_bbox("1,2,3")
    with pytest.raises(ConfigError):
        parse_bbox("12,45,11,46")


def test_select_times_daily_and_monthly():
    days = ["2020-01-30", "2020-01-31", "2020-02-01", "2020-02-02"]
    import datetime as dt

    assert select_times(days, "daily", None, None) == [0, 1, 2, 3]
    assert select_times(days, "daily", dt.date(2020, 1, 31), dt.date(2020, 2, 1)) == [1, 2]
    months = ["2019-12-01", "2020-01-01", "2020-02-01"]
    assert select_times(months, "monthly", dt.date(2020, 1, 15), dt.date(2020, 2, 10)) == [1, 2]


def test_file_names():
    assert tif_name("daily", "2020-02-01") == "sm1km_daily_20200201.tif"
    assert tif_name("monthly", "2020-02-01") == "sm1km_monthly_202002.tif"
    assert h5_name("daily", "2020-02") == "sm1km_daily_202002.h5"
    assert h5_name("monthly", "2020") == "sm1km_monthly_2020.h5"
    assert file_name(2002, 27, 5) == "SM.1km.Daily.20020365.h27v05.v001.h5"   # as in the authors' reader
    assert file_name(2020, 3, 11) == "SM.1km.Daily.20200366.h03v11.v001.h5"


def test_hdf5_chunk_shape_is_whole_units():
    assert chunk_shape((120, 120), (21600, 43200), 256) == (360, 360)
    assert chunk_shape((10, 10), (20, 40), 256) == (20, 40)
    assert chunk_shape((10, 10), (20, 40), 1) == (10, 10)


def test_geotiff_jobs_group_days_by_time_chunk():
    s = _source()
    jobs = plan_jobs(s, fmt="geotiff", layout="latlon", t_indices=range(6), rows=slice(0, 20), cols=slice(0, 40),
                     variables=["sm"], out="/o", out_storage_options={}, window_pixels=100)
    assert [[it.t for it in j.items] for j in jobs] == [[0, 1], [2, 3, 4, 5]] or \
        [[it.t for it in j.items] for j in jobs] == [[0, 1, 2, 3], [4, 5]]
    assert all(isinstance(j, GeoTiffJob) for j in jobs)
    one = plan_jobs(s, fmt="geotiff", layout="latlon", t_indices=range(6), rows=slice(0, 20), cols=slice(0, 40),
                    variables=["sm"], out="/o", out_storage_options={}, window_pixels=100, files_per_task=1)
    assert [len(j.items) for j in one] == [1] * 6
    h5 = plan_jobs(s, fmt="hdf5", layout="latlon", t_indices=range(6), rows=slice(0, 20), cols=slice(0, 40),
                   variables=["sm"], out="/o", out_storage_options={}, window_pixels=100)
    assert [(j.url, j.t_indices) for j in h5] == [("/o/sm1km_daily_202001.h5", (0, 1)),
                                                  ("/o/sm1km_daily_202002.h5", (2, 3, 4, 5))]


# ------------------------------------------------------------------------------------------ MODIS grid
def _tile_of(lon, lat):
    """Independent forward sinusoidal projection → tile (h, v)."""
    x = R_SPHERE * math.radians(lon) * math.cos(math.radians(lat))
    y = R_SPHERE * math.radians(lat)
    return int((x - ULX) // TILE_M), int((ULY - y) // TILE_M)


def test_tiles_intersecting_known_tiles():
    assert tiles_intersecting(10, 45, 10.5, 45.5) == [(18, 4)]
    assert sorted(tiles_intersecting(-0.5, 39.5, 0.5, 40.5)) == [(17, 4), (17, 5), (18, 4), (18, 5)]
    world = tiles_intersecting(-180, -90, 180, 90)
    # 460 MODIS tiles hold valid pixels; h08v02 and h27v02 touch the sinusoidal world only between
    # pixel centres (the exporter then writes no file for them)
    assert len(world) == 462 and (8, 2) in world and (27, 2) in world
    assert (0, 0) not in world and (17, 8) in world


def test_tiles_intersecting_contains_every_sampled_point():
    rng = np.random.default_rng(3)
    for _ in range(20):
        w = rng.uniform(-180, 170)
        s = rng.uniform(-85, 80)
        e, n = w + rng.uniform(0.1, 10), s + rng.uniform(0.1, 5)
        got = set(tiles_intersecting(w, s, e, n))
        pts = {_tile_of(lo, la) for lo in np.linspace(w, e, 15)[1:-1] for la in np.linspace(s, n, 15)[1:-1]}
        assert pts <= got


def test_pixel_lonlat_validity_and_inverse():
    lat = row_lat(18, 4)
    assert lat[0] == pytest.approx(math.degrees((ULY - 4 * TILE_M - 0.5 * 926.625433) / R_SPHERE), abs=1e-9)
    assert lat[-1] == pytest.approx(math.degrees((ULY - 5 * TILE_M + 0.5 * 926.625433) / R_SPHERE), abs=1e-9)
    lon, la, valid = pixel_lonlat(18, 4, slice(0, 2))
    assert valid.all() and la.shape == (2, TILE_PX)
    x = ULX + 18 * TILE_M + (np.arange(TILE_PX) + 0.5) * TILE_M / TILE_PX
    expect = np.degrees(x / (R_SPHERE * np.cos(np.radians(la[0]))))
    np.testing.assert_allclose(lon[0], expect, atol=1e-9)
    lon0, lat0, v0 = pixel_lonlat(0, 8, slice(0, 1200))  # west edge: lat 10..0, the left part is outside
    x = ULX + (np.arange(TILE_PX) + 0.5) * TILE_M / TILE_PX
    inside = np.abs(x)[None, :] <= R_SPHERE * np.pi * np.cos(np.radians(lat0[:, :1]))
    assert (v0 == inside).all()
    assert not v0[0, :300].any() and v0[:, -1].all() and v0[-1, 0]
    assert (np.abs(lon0[v0]) <= 180).all()


def test_global_geotiff_tasks_fit_the_scratch_budget():
    from sm1km.stages.export import SCRATCH_BYTES

    s = _source(shape=(64, 21600, 43200), row0=0, col0=0, per_deg=120, unit=(120, 120), time_unit=32,
                times=tuple(f"2020-01-{d:02d}" for d in range(1, 32)) + tuple(f"2020-02-{d:02d}" for d in range(1, 30))
                + ("2020-03-01", "2020-03-02", "2020-03-03", "2020-03-04"))
    jobs = plan_jobs(s, fmt="geotiff", layout="latlon", t_indices=range(64), rows=slice(0, 21600),
                     cols=slice(0, 43200), variables=["sm"], out="/o", out_storage_options={}, window_pixels=1 << 24)
    sizes = [len(j.items) for j in jobs]
    assert sum(sizes) == 64 and max(sizes) * 2 * 21600 * 43200 <= SCRATCH_BYTES and max(sizes) == 9
    assert all(j.items[0].t // 32 == j.items[-1].t // 32 for j in jobs)     # never across a time chunk
    w = plan_windows(slice(0, 21600), slice(0, 43200), (120, 120), 1 << 24, depth=9, align=16)
    assert max((r.stop - r.start) * (c.stop - c.start) for r, c in w) * 9 <= 1 << 24
    bh = temp_block(max(r.stop - r.start for r, _ in w))
    bw = temp_block(max(c.stop - c.start for _, c in w))
    # every window starts on a temporary-GTiff block edge: each block is written once, whole
    assert all(r.start % bh == 0 and c.start % bw == 0 for r, c in w) and (bh, bw) == (240, 3840)
