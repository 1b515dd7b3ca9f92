"""Grid arithmetic: exact nesting, snapping, tiles (property tests with hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm1km.core import grid


def test_cci_grid_matches_the_real_files():
    lat = grid.coarse_lat(np.arange(720))
    lon = grid.coarse_lon(np.arange(1440))
    assert lat[0] == 89.875 and lat[-1] == -89.875 and np.all(np.diff(lat) == -0.25)
    assert lon[0] == -179.875 and lon[-1] == 179.875 and np.all(np.diff(lon) == 0.25)
    # fraye station (README): cell centre (44.375, -0.625), i = 182, j = 717
    assert grid.coarse_row_of_lat(44.4670) == 182 and grid.coarse_col_of_lon(-0.7269) == 717


def test_global_fine_grid_has_no_drift():
    g = grid.FineGrid(30)
    assert (g.nlat, g.nlon) == (21600, 43200)
    lon = g.lon(np.arange(g.nlon))
    lat = g.lat(np.arange(g.nlat))
    # every coordinate is exactly the value computed with rational arithmetic
    from fractions import Fraction
    for c in (0, 1, 21599, 21600, 43199):
        assert lon[c] == float(Fraction(-180) + Fraction(2 * c + 1, 240))
    assert lon[-1] == 180 - 1 / 240 and lat[0] == 90 - 1 / 240 and lat[-1] == -90 + 1 / 240
    # round trip index -> coordinate -> index is the identity over the whole global axis
    np.testing.assert_array_equal(g.col_of_lon(lon), np.arange(g.nlon))
    np.testing.assert_array_equal(g.row_of_lat(lat), np.arange(g.nlat))


@settings(max_examples=200, deadline=None)
@given(factor=st.integers(1, 120), row=st.integers(0, 719), col=st.integers(0, 1439),
       sub_r=st.integers(0, 10**6), sub_c=st.integers(0, 10**6))
def test_nesting_is_exact(factor, row, col, sub_r, sub_c):
    g = grid.FineGrid(factor)
    fr, fc = row * factor + sub_r % factor, col * factor + sub_c % factor
    assert g.coarse_of_fine(fr) == row and g.coarse_of_fine(fc) == col
    # the fine pixel centre lies strictly inside its coarse cell
    clat, clon = grid.coarse_lat(row), grid.coarse_lon(col)
    assert abs(g.lat(fr) - clat) < 0.125 and abs(g.lon(fc) - clon) < 0.125
    assert grid.coarse_row_of_lat(g.lat(fr)) == row and grid.coarse_col_of_lon(g.lon(fc)) == col
    # the mean of the fine centres of one cell is the coarse centre
    rows = np.arange(row * factor, (row + 1) * factor)
    assert np.isclose(g.lat(rows).mean(), clat, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(w=st.floats(-180, 179), s=st.floats(-90, 89), dw=st.floats(0.01, 20), ds=st.floats(0.01, 20))
def test_snap_bbox_covers_and_is_minimal(w, s, dw, ds):
    e, n = min(w + dw, 180.0), min(s + ds, 90.0)
    reg = grid.snap_bbox((w, s, e, n))
    b = reg.bbox
    assert b.west <= w and b.east >= e and b.south <= s and b.north >= n
    # minimal: shrinking by one cell on any side would no longer cover
    from fractions import Fraction as F
    q = F(1, 4)
    assert F(b.west) > F(w) - q and F(b.east) < F(e) + q and F(b.south) > F(s) - q and F(b.north) < F(n) + q
    for edge in (b.west, b.east, b.south, b.north):
        assert (edge * 4) == int(edge * 4)


def test_snap_exact_edges_do_not_grow():
    reg = grid.snap_bbox((10.0, 44.0, 14.0, 48.0))
    assert (reg.n_rows, reg.n_cols) == (16, 16)
    assert reg.bbox.as_tuple() == (10.0, 44.0, 14.0, 48.0)


@settings(max_examples=100, deadline=None)
@given(r0=st.integers(0, 700), c0=st.integers(0, 1400), nr=st.integers(1, 19), nc=st.integers(1, 39),
       tile=st.integers(1, 9), factor=st.sampled_from([1, 4, 10, 30]))
def test_tiles_partition_the_region_and_contain_their_pixels(r0, c0, nr, nc, tile, factor):
    reg = grid.Region(r0, min(r0 + nr, 720), c0, min(c0 + nc, 1440))
    ts = grid.tiles(reg, tile)
    cover = np.zeros((reg.n_rows, reg.n_cols), int)
    flat, flon = grid.region_coords(reg, factor)
    for t in ts:
        rs, cs = t.coarse_slices(reg)
        cover[rs, cs] += 1
        frs, fcs = t.fine_slices(reg, factor)
        assert frs.stop - frs.start == (t.row1 - t.row0) * factor
        # every fine pixel of the tile lies inside the tile's coarse cells
        rows = grid.coarse_row_of_lat(flat[frs])
        cols = grid.coarse_col_of_lon(flon[fcs])
        assert rows.min() >= t.row0 and rows.max() < t.row1
        assert cols.min() >= t.col0 and cols.max() < t.col1
        assert t.row1 - t.row0 <= tile and t.col1 - t.col0 <= tile
    assert np.all(cover == 1)


def test_transform_matches_coordinates():
    reg = grid.snap_bbox((10, 44, 11, 45))
    g = grid.FineGrid(30)
    tr = g.transform(reg)
    lat, lon = grid.region_coords(reg, 30)
    x, y = tr @ (0.5, 0.5)
    assert np.isclose(x, lon[0]) and np.isclose(y, lat[0])


@pytest.mark.parametrize("bad", [(10, 5, 9, 6), (0, 10, 1, 9), (-181, 0, 0, 1)])
def test_bad_bbox_rejected(bad):
    with pytest.raises(ValueError):
        grid.BBox(*bad)
