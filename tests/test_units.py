"""The one work-unit type (sm1km.runtime.units): ledger keys byte-for-byte as the stages wrote them
before it existed (a resumed run skips what it finished), plans that cover a region once, halos."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sm1km.core.grid import Region
from sm1km.runtime.units import WorkUnit, count_units, plan_units


def test_keys_are_the_ledger_keys_of_before():
    # downscale (ShardSpec): time block of days, fine rows/cols (factor 10)
    assert WorkUnit(0, 1, 1, 2, 16, 32, 10).key == "lat-0-10_lon-10-20_time-16-32"
    # aggregate (MonthlySpec): time block of months, fine rows/cols
    assert WorkUnit(2, 4, 0, 3, 0, 12, 40).key == "lat-80-160_lon-0-120_time-0-12"
    # fuse (_Block): coarse rows/cols, no time
    assert WorkUnit(0, 8, 8, 16).key == "lat-0-8_lon-8-16"


def test_regions_and_slices():
    u = WorkUnit(1, 3, 2, 5, 4, 9, factor=4)
    assert u.coarse == (slice(1, 3), slice(2, 5))
    assert u.fine == (slice(4, 12), slice(8, 20))
    assert u.time == slice(4, 9)
    assert u.region == {"lat": slice(4, 12), "lon": slice(8, 20), "time": slice(4, 9)}
    assert WorkUnit(0, 1, 0, 1).time is None and "time" not in WorkUnit(0, 1, 0, 1).region
    assert len(pickle.dumps(u)) < 300 and pickle.loads(pickle.dumps(u)) == u


@pytest.mark.parametrize("tile,blocks", [(3, None), (4, [slice(0, 5), slice(5, 7)]), (10, [slice(0, 7)])])
def test_plan_covers_the_region_once_tile_major(tile, blocks):
    region = Region(100, 107, 200, 210)  # 7 x 10 coarse cells
    units = list(plan_units(region, tile, blocks, factor=2))
    n_blocks = len(blocks) if blocks else 1
    assert len(units) == count_units(region, tile, n_blocks) == len({u.key for u in units})
    cover = np.zeros((7, 14, 20), int)
    for u in units:
        y, x = u.fine
        cover[u.time or slice(None), y, x] += 1
    assert (cover == 1).all()
    # a tile's time blocks follow each other (the downscale plan's order)
    if blocks:
        assert [(u.t0, u.t1) for u in units[:n_blocks]] == [(b.start, b.stop) for b in blocks]
        assert len({(u.r0, u.c0) for u in units[:n_blocks]}) == 1


def test_halo_window_and_the_inner_block():
    u = WorkUnit(4, 8, 0, 4)
    w = u.grown(2, n_rows=9, n_cols=20)
    assert (w.r0, w.r1, w.c0, w.c1) == (2, 9, 0, 6)  # clipped at the region's edges
    rows, cols = u.within(w)
    a = np.arange(9 * 20).reshape(9, 20)
    np.testing.assert_array_equal(a[w.coarse][rows, cols], a[u.coarse])
