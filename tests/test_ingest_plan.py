"""The ingest chunk planner (pure): memory bound, exact coverage, one writer per chunk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm1km.core.rechunk_plan import (
    blocks_of,
    chunk_slices,
    days_to_recompute,
    hull,
    output_chunks,
    plan_staging,
    trailing_window,
)


@settings(max_examples=80, deadline=None)
@given(n_days=st.integers(1, 400), ny=st.integers(1, 90), nx=st.integers(1, 90), cy=st.integers(1, 40),
       cx=st.integers(1, 40), bpp=st.sampled_from([2, 4, 10, 12]), budget=st.integers(1_000, 2_000_000),
       pref=st.integers(1, 64))
def test_read_plan_covers_exactly_and_respects_chunks(n_days, ny, nx, cy, cx, bpp, budget, pref):
    p = plan_staging(n_days, ny, nx, cy, cx, bpp, budget, pref)
    seen = np.zeros((n_days, ny, nx), dtype=np.int32)
    for t in p.tasks:
        # bands are whole staging chunks: start on a chunk boundary
        assert t.days.start % p.batch_days == 0
        assert t.rows.start % p.chunks[1] == 0 and t.cols.start % p.chunks[2] == 0
        assert (t.days.stop - t.days.start) * (t.rows.stop - t.rows.start) * (t.cols.stop - t.cols.start) * bpp <= p.task_bytes
        seen[t.days, t.rows, t.cols] += 1
    assert (seen == 1).all()
    one_chunk = min(cy, ny) * min(cx, nx) * bpp
    if one_chunk <= budget:  # the budget holds whenever a single one-day chunk fits
        assert p.task_bytes <= budget


def test_task_memory_does_not_grow_with_the_period():
    a = plan_staging(365, 720, 1440, 16, 16, 10, 256 << 20)
    b = plan_staging(4 * 365, 720, 1440, 16, 16, 10, 256 << 20)
    assert a.task_bytes == b.task_bytes and a.chunks == b.chunks
    assert len(b.tasks) == pytest.approx(4 * len(a.tasks), rel=0.05)


def test_global_fine_grid_plan_is_bounded():
    p = plan_staging(64, 21600, 43200, 120, 120, 12, 256 << 20, preferred_batch_days=32)
    assert p.task_bytes <= 256 << 20
    assert p.batch_days >= 1 and p.chunks[1:] == (120, 120)


def test_output_chunks_only_where_days_changed():
    regions = output_chunks([0, 1, 40], 50, 32, 10, 4, 6, 6)
    assert {r[0].start for r in regions} == {0, 32}
    assert len(regions) == 2 * 3 * 1
    assert regions[-1][0] == slice(32, 50)


def test_days_to_recompute_and_their_trailing_windows():
    # a causal rule with a reach of 3 days: day p changes days p, p+1, p+2
    assert days_to_recompute([21], 3, 25) == [21, 22, 23]
    assert days_to_recompute([23, 5], 3, 25) == [5, 6, 7, 23, 24]
    assert days_to_recompute([], 3, 25) == []
    # appended days (at the end) recompute only themselves
    assert days_to_recompute(range(20, 25), 3, 25) == list(range(20, 25))
    # a lead-in day before the axis changes the first days only
    assert days_to_recompute([-2], 3, 25) == [0]
    assert trailing_window(slice(10, 14), 3) == slice(8, 14)
    assert trailing_window(slice(1, 4), 3) == slice(0, 4)
    assert trailing_window(slice(1, 4), 3, first=-5) == slice(-1, 4)
    assert blocks_of([5, 6, 7, 23, 24], 10) == {0: slice(5, 8), 2: slice(23, 25)}
    assert blocks_of([9, 10], 10) == {0: slice(9, 10), 1: slice(10, 11)}
    with pytest.raises(ValueError):
        days_to_recompute([1], 0, 5)
    assert hull([slice(7, 23), slice(17, 25)]) == slice(7, 25)
    assert hull([]) is None
    assert chunk_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 60), max_size=6), st.integers(1, 20), st.integers(1, 60))
def test_recomputed_days_are_exactly_those_whose_window_holds_a_change(changed, reach, n):
    got = set(days_to_recompute(changed, reach, n))
    want = {t for t in range(n) if any(t - reach < p <= t for p in changed)}
    assert got == want
