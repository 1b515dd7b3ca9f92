"""gapfill (causal-locf): known answers, causality, the trailing-window property appends rely on, NDVI."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm1km.core.gapfill import gapfill_time, place_on_days, tile_trailing_means, trailing_means

nan = np.nan


def test_carries_the_last_observation_forward():
    v = np.array([nan, 2.0, nan, nan, 5.0, nan], dtype=np.float32)
    out = gapfill_time(v)
    # day 0: nothing before it, the pixel alone: its trailing mean is empty, so is the tile's -> NaN
    np.testing.assert_array_equal(out, [nan, 2, 2, 2, 5, 5])
    assert out.dtype == np.float32


def test_observations_are_kept_bit_for_bit():
    rng = np.random.default_rng(1)
    v = rng.random((30, 3, 4)).astype(np.float32) * 300
    v[rng.random(v.shape) < 0.5] = nan
    v[0] = 1.0  # every pixel starts observed: everything can be filled
    out = gapfill_time(v, max_gap_days=5, fallback_days=12)
    obs = np.isfinite(v)
    assert np.array_equal(out[obs].view(np.uint32), v[obs].view(np.uint32))
    assert np.isfinite(out).all()


def test_a_day_never_depends_on_later_days():
    """Changing (or adding) day k changes no day before k — the rule is causal."""
    rng = np.random.default_rng(3)
    v = rng.random((40, 6)).astype(np.float32)
    v[rng.random(v.shape) < 0.7] = nan
    base = gapfill_time(v, max_gap_days=4, fallback_days=9)
    for k in (5, 17, 39):
        w = v.copy()
        w[k:] = rng.random(w[k:].shape).astype(np.float32)
        np.testing.assert_array_equal(gapfill_time(w, max_gap_days=4, fallback_days=9)[:k], base[:k])
        np.testing.assert_array_equal(gapfill_time(v[:k], max_gap_days=4, fallback_days=9), base[:k])


def test_pixel_without_recent_observation_gets_its_trailing_mean_then_the_tiles():
    v = np.full((8, 1, 2), nan, dtype=np.float32)
    v[:, 0, 0] = [1.0, 3.0, nan, nan, nan, nan, nan, nan]
    out = gapfill_time(v, max_gap_days=1, fallback_days=4)
    # pixel 0: carried 1 day (day 2 = 3), then the mean of its observations in the last 4 days
    # (day 3: days 0-3 hold 1 and 3; day 4: days 1-4 hold 3), then the tile's: none left -> NaN
    np.testing.assert_allclose(out[:, 0, 0], [1, 3, 3, 2, 3, nan, nan, nan])
    # pixel 1 never observed: the tile's trailing mean (both pixels): day 0: 1, day 1+: (1+3)/2 ...
    np.testing.assert_allclose(out[:, 0, 1], [1, 2, 2, 2, 3, nan, nan, nan])


def test_trailing_means_window():
    v = np.array([[1.0], [nan], [3.0], [5.0]])
    s, n = trailing_means(v, 2)
    np.testing.assert_array_equal(s[:, 0], [1, 1, 3, 8])
    np.testing.assert_array_equal(n[:, 0], [1, 1, 1, 2])
    np.testing.assert_allclose(tile_trailing_means(v, 2), [1, 1, 3, 4])
    np.testing.assert_allclose(tile_trailing_means(v), [1, 1, 2, 3])


def test_all_missing_stays_nan():
    assert np.isnan(gapfill_time(np.full((5, 2), nan))).all()


def test_max_gap_limits_reach_and_falls_back_to_the_trailing_mean():
    v = np.array([1.0, nan, nan, nan, nan, nan, 3.0, nan, nan], dtype=np.float32)
    out = gapfill_time(v, max_gap_days=3, fallback_days=6)
    # days 1-3 carry 1; days 4-5: the mean of the last 6 days (1 only); day 6: 3; days 7-8 carry 3
    np.testing.assert_allclose(out, [1, 1, 1, 1, 1, 1, 3, 3, 3])
    out = gapfill_time(v, max_gap_days=1, fallback_days=4)
    np.testing.assert_allclose(out, [1, 1, 1, 1, nan, nan, 3, 3, 3])


def test_explicit_fallback():
    v = np.full((3, 2), nan)
    np.testing.assert_allclose(gapfill_time(v, fallback=np.array([7.0, 8.0])), [[7, 8]] * 3)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        gapfill_time(np.zeros(3), max_gap_days=-1)
    with pytest.raises(ValueError):
        gapfill_time(np.zeros(3), fallback_days=0)
    with pytest.raises(ValueError, match="magnitude"):  # exact fixed-point sums need |v| < 2**20
        gapfill_time(np.array([3e6, nan, nan]), max_gap_days=0, fallback_days=2)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 70), st.integers(1, 12), st.integers(0, 8), st.integers(1, 14), st.integers(0, 2**31 - 1))
def test_any_run_of_days_from_its_trailing_window_equals_the_whole_series(nt, block, gap, extra, seed):
    """Filling days [b0, b1) from their trailing window [b0 - fallback_days + 1, b1) gives exactly
    the bytes of filling the whole series (the property appends rely on), with tile fallbacks."""
    rng = np.random.default_rng(seed)
    fb_days = gap + extra
    v = (rng.random((nt, 2, 3)) * 300).astype(np.float32)
    v[rng.random(v.shape) < 0.75] = nan
    v[:, 1, 2] = nan  # a pixel never observed: the tile's trailing mean
    whole = gapfill_time(v, max_gap_days=gap, fallback_days=fb_days)
    for b0 in range(0, nt, block):
        b1 = min(b0 + block, nt)
        w0 = max(b0 - fb_days + 1, 0)
        part = gapfill_time(v[w0:b1], max_gap_days=gap, fallback_days=fb_days)[b0 - w0:]
        assert np.array_equal(part.view(np.uint32), whole[b0:b1].view(np.uint32))


def test_ndvi_composites_to_daily():
    days = np.arange("2020-01-01", "2020-02-03", dtype="datetime64[D]")
    dates = np.array(["2020-01-01", "2020-01-17", "2020-02-02", "2020-03-01"], dtype="datetime64[D]")
    vals = np.array([0.2, 0.6, 0.2, 0.9], dtype=np.float32)
    placed = place_on_days(dates, vals, days)
    assert np.isfinite(placed).sum() == 3  # the March composite lies outside the axis
    daily = gapfill_time(placed, max_gap_days=48)
    assert daily[0] == pytest.approx(0.2) and daily[16] == pytest.approx(0.6)
    assert daily[8] == pytest.approx(0.2)  # a composite holds until the next one
    assert daily[24] == pytest.approx(0.6) and daily[32] == pytest.approx(0.2)


def test_large_arrays_are_filled_in_pixel_groups(monkeypatch):
    """Pixel groups (bounded temporaries) give the same result as one pass."""
    import sm1km.core.gapfill as g

    rng = np.random.default_rng(5)
    v = rng.random((40, 7, 9)).astype(np.float32)
    v[rng.random(v.shape) < 0.7] = nan
    v[:, 3, 4] = nan  # a pixel without observations -> the tile's trailing mean (all pixels)
    whole = gapfill_time(v, max_gap_days=3, fallback_days=8)
    monkeypatch.setattr(g, "_PASS_ELEMENTS", 40 * 5)  # groups of 5 pixels
    np.testing.assert_array_equal(gapfill_time(v, max_gap_days=3, fallback_days=8), whole)
