"""gapfill: known answers, the bounded-window property that ingest relies on, NDVI placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm1km.core.gapfill import gapfill_time, pixel_fallback, place_on_days

nan = np.nan


def test_interpolates_between_observations_and_holds_at_the_ends():
    v = np.array([nan, 2.0, nan, nan, 5.0, nan], dtype=np.float32)
    out = gapfill_time(v)
    np.testing.assert_allclose(out, [2, 2, 3, 4, 5, 5])
    assert out.dtype == np.float32


def test_observations_are_kept_bit_for_bit():
    rng = np.random.default_rng(1)
    v = rng.random((30, 3, 4)).astype(np.float32) * 300
    v[rng.random(v.shape) < 0.5] = nan
    out = gapfill_time(v, max_gap_days=5)
    obs = np.isfinite(v)
    assert np.array_equal(out[obs].view(np.uint32), v[obs].view(np.uint32))
    assert np.isfinite(out).all()


def test_pixel_without_observation_gets_the_block_mean():
    v = np.full((4, 1, 2), nan, dtype=np.float32)
    v[:, 0, 0] = [1.0, nan, 3.0, nan]
    out = gapfill_time(v)
    np.testing.assert_allclose(out[:, 0, 0], [1, 2, 3, 3])
    np.testing.assert_allclose(out[:, 0, 1], [2, 2, 2, 2])  # mean of all observations (1, 3)


def test_all_missing_stays_nan():
    assert np.isnan(gapfill_time(np.full((5, 2), nan))).all()


def test_max_gap_limits_reach_and_falls_back_to_pixel_mean():
    v = np.array([1.0] + [nan] * 9 + [3.0], dtype=np.float32)
    out = gapfill_time(v, max_gap_days=3)
    # days 1-3 hold 1 (prev within 3, next 7+ away), days 7-9 hold 3, days 4-6 take the pixel mean 2
    np.testing.assert_allclose(out, [1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    np.testing.assert_allclose(gapfill_time(v, max_gap_days=10), np.linspace(1, 3, 11), rtol=1e-6)


def test_explicit_fallback():
    v = np.full((3, 2), nan)
    np.testing.assert_allclose(gapfill_time(v, fallback=np.array([7.0, 8.0])), [[7, 8]] * 3)


def test_pixel_fallback():
    v = np.array([[1.0, nan], [3.0, nan]])
    np.testing.assert_allclose(pixel_fallback(v), [2.0, 2.0])


def test_negative_gap_is_rejected():
    with pytest.raises(ValueError):
        gapfill_time(np.zeros(3), max_gap_days=-1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 12), st.integers(0, 10), st.integers(0, 2**31 - 1))
def test_blockwise_with_halo_equals_whole_series(nt, block, halo, seed):
    """Filling block by block from a window with a halo of max_gap days gives the same values as
    filling the whole series wherever an observation reaches (the property ingest relies on)."""
    rng = np.random.default_rng(seed)
    v = rng.random((nt, 3)).astype(np.float32)
    v[rng.random(v.shape) < 0.6] = nan
    whole = gapfill_time(v, max_gap_days=halo, fallback=-1.0)
    for b0 in range(0, nt, block):
        b1 = min(b0 + block, nt)
        w0, w1 = max(b0 - halo, 0), min(b1 + halo, nt)
        part = gapfill_time(v[w0:w1], max_gap_days=halo, fallback=-1.0)[b0 - w0:b1 - w0]
        np.testing.assert_array_equal(part, whole[b0:b1])


def test_ndvi_composites_to_daily():
    days = np.arange("2020-01-01", "2020-02-03", dtype="datetime64[D]")
    dates = np.array(["2020-01-01", "2020-01-17", "2020-02-02", "2020-03-01"], dtype="datetime64[D]")
    vals = np.array([0.2, 0.6, 0.2, 0.9], dtype=np.float32)
    placed = place_on_days(dates, vals, days)
    assert np.isfinite(placed).sum() == 3  # the March composite lies outside the axis
    daily = gapfill_time(placed)
    assert daily[0] == pytest.approx(0.2) and daily[16] == pytest.approx(0.6)
    assert daily[8] == pytest.approx(0.4)  # half way between composites
    assert daily[24] == pytest.approx(0.4)


def test_large_arrays_are_filled_in_pixel_groups(monkeypatch):
    """Pixel groups (bounded temporaries) give the same result as one pass."""
    import sm1km.core.gapfill as g

    rng = np.random.default_rng(5)
    v = rng.random((40, 7, 9)).astype(np.float32)
    v[rng.random(v.shape) < 0.7] = nan
    v[:, 3, 4] = nan  # a pixel without observations -> the block mean of the whole array
    whole = gapfill_time(v, max_gap_days=6)
    monkeypatch.setattr(g, "_PASS_ELEMENTS", 40 * 5)  # groups of 5 pixels
    np.testing.assert_array_equal(gapfill_time(v, max_gap_days=6), whole)
