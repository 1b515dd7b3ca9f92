"""fusion_core: known answers for both matchings, fallbacks, flags, bounds, NaN handling, halo logic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm1km.core import fusion as fc


def _series(t=60, shape=(3, 4), seed=0, gap=0.4):
    rng = np.random.default_rng(seed)
    era5 = rng.uniform(0.05, 0.45, (t, *shape))
    keep = rng.random(era5.shape) >= gap
    return era5, keep


# ------------------------------------------------------------------------------------ matching
def test_meanstd_recovers_a_linear_transform_exactly():
    era5, keep = _series()
    a = np.linspace(0.5, 1.5, 12).reshape(3, 4)
    b = np.linspace(-0.05, 0.1, 12).reshape(3, 4)
    cci_full = a * era5 + b
    cci = np.where(keep, cci_full, np.nan)
    out = fc.rescale_meanstd(era5, cci)
    np.testing.assert_allclose(out, cci_full, atol=1e-12)  # gap days included


def test_meanstd_formula_by_hand():
    e = np.array([0.1, 0.2, 0.3, 0.4, 0.25])
    c = np.array([0.2, np.nan, 0.3, 0.5, np.nan])
    ov = np.isfinite(c)
    want = (e - e[ov].mean()) * c[ov].std() / e[ov].std() + c[ov].mean()
    np.testing.assert_allclose(fc.rescale_meanstd(e, c), want, rtol=1e-12)


def test_cdf_recovers_a_monotone_transform():
    era5, keep = _series(t=80, seed=1)
    cci_full = 0.55 * np.sqrt(era5) - 0.05          # monotone, nonlinear
    cci = np.where(keep, cci_full, np.nan)
    out = fc.rescale_cdf(era5, cci)
    # exact at every overlap day (n <= CDF_NODES: every order statistic is a node)
    np.testing.assert_allclose(out[keep], cci_full[keep], atol=1e-12)
    # gap days inside the overlap range lie between nodes: linear interpolation of a smooth map
    lo = np.where(keep, era5, np.inf).min(0)
    hi = np.where(keep, era5, -np.inf).max(0)
    inside = ~keep & (era5 >= lo) & (era5 <= hi)
    tails = ~keep & ~inside
    assert inside.sum() > 100 and tails.sum() > 0
    assert np.max(np.abs(out[inside] - cci_full[inside])) < 2e-3
    # beyond the range: linear continuation with the mean-std slope, still close for a smooth map
    assert np.max(np.abs(out[tails] - cci_full[tails])) < 0.02
    inside = ~keep
    # mean-std matching cannot follow the curvature: CDF matching is clearly better here
    ms = fc.rescale_meanstd(era5, cci)
    assert np.abs(out - cci_full)[inside].mean() < 0.5 * np.abs(ms - cci_full)[inside].mean()


def test_cdf_recovers_linear_transform_including_tails():
    era5, keep = _series(t=50, seed=2)
    cci_full = 0.8 * era5 + 0.03
    keep[era5 > 0.4] = False   # the largest ERA5 values are only on gap days -> upper tail
    keep[era5 < 0.08] = False  # and the smallest -> lower tail
    cci = np.where(keep, cci_full, np.nan)
    out = fc.rescale_cdf(era5, cci)
    np.testing.assert_allclose(out, cci_full, atol=1e-12)


def test_cdf_many_samples_uses_quantile_nodes():
    rng = np.random.default_rng(5)
    era5 = rng.uniform(0.05, 0.45, (1000, 2))
    cci_full = era5 ** 1.5
    out = fc.rescale_cdf(era5, cci_full)
    assert np.max(np.abs(out - cci_full)) < 2e-3
    p = fc.cdf_params(era5, cci_full)
    assert p.x.shape == (fc.CDF_NODES, 2)
    assert np.all(np.diff(p.x, axis=0) >= 0) and np.all(np.diff(p.y, axis=0) >= 0)


def test_invalid_pixels_give_nan():
    e = np.tile(np.linspace(0.1, 0.3, 10)[:, None], (1, 3))
    c = e.copy()
    c[:, 0] = np.nan            # no overlap
    e[:, 1] = 0.2               # constant ERA5
    c[1:, 2] = np.nan           # one overlap day
    for f in (fc.rescale_meanstd, fc.rescale_cdf):
        out = f(e, c)
        assert np.isnan(out).all(), f.__name__


def test_nan_in_era5_stays_nan():
    era5, keep = _series(t=40, shape=(2,))
    era5[5, 0] = np.nan
    cci = np.where(keep, era5 * 0.9, np.nan)
    for f in (fc.rescale_meanstd, fc.rescale_cdf):
        out = f(era5, cci)
        assert np.isnan(out[5, 0]) and np.isfinite(out[6:, 0]).all()


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown fusion method"):
        fc.rescale(np.ones(3), np.ones(3), "linear")
    with pytest.raises(ValueError, match="unknown fusion method"):
        fc.fuse_block(np.ones((3, 1, 1)), np.ones((3, 1, 1)), np.ones((1, 1), bool), "x")
    with pytest.raises(ValueError, match="shapes"):
        fc.fuse_block(np.ones((3, 1, 2)), np.ones((3, 1, 1)), np.ones((1, 1), bool))


# ------------------------------------------------------------------------------------ fuse_block
def _block(t=60, ny=5, nx=5, seed=3):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.45, (t, ny, nx))
    era5 = 0.05 + 0.8 * truth
    cci = np.where(rng.random(truth.shape) < 0.5, np.nan, truth)
    land = np.ones((ny, nx), bool)
    return truth, era5, cci, land


@pytest.mark.parametrize("method", fc.METHODS)
def test_flags_values_and_bounds(method):
    truth, era5, cci, land = _block()
    land[0, 0] = False                    # sea
    cci[:, 0, 0] = np.nan
    cci[:, 2, 2] = np.nan                 # land pixel never observed -> neighbourhood fallback
    cci[:10, 2, 2] = truth[:10, 2, 2]     # ... with 10 observations
    res = fc.fuse_block_detailed(cci, era5, land, method, min_overlap_days=20, neighbourhood_cells=1)
    obs = np.isfinite(cci) & land[None]
    assert res.sm.dtype == np.float32 and res.source_flag.dtype == np.uint8
    # flag 1 exactly where CCI observed, with CCI's value
    assert (res.source_flag[obs] == fc.FLAG_CCI).all()
    np.testing.assert_array_equal(res.sm[obs], cci[obs].astype(np.float32))
    # sea: NaN, flag 0
    assert np.isnan(res.sm[:, 0, 0]).all() and (res.source_flag[:, 0, 0] == 0).all()
    # gap-free over land
    assert np.isfinite(res.sm[:, land]).all()
    # own-pixel gaps flag 2, the few-observation pixel flag 3
    gaps = ~obs & land[None]
    own = gaps.copy()
    own[:, 2, 2] = False
    assert (res.source_flag[own] == fc.FLAG_ERA5_RESCALED).all()
    assert (res.source_flag[gaps[:, 2, 2], 2, 2] == fc.FLAG_FALLBACK).all()
    assert res.pixel_kind[2, 2] == fc.PIXEL_NEIGHBOURHOOD and res.pixel_kind[0, 0] == fc.PIXEL_NOT_LAND
    assert res.counts() == {"land_pixels": 24, "own_pixels": 23, "neighbourhood_pixels": 1, "unscaled_pixels": 0,
                            "era5_borrowed_pixel_days": 0}
    # the relation is linear and the same everywhere: gaps recovered (neighbourhood pooled too)
    np.testing.assert_allclose(res.sm[gaps], truth[gaps], atol=1e-6)
    assert np.nanmin(res.sm) >= 0 and np.nanmax(res.sm) <= fc.SM_MAX


def test_unscaled_fallback_when_neighbourhood_is_too_small():
    truth, era5, cci, land = _block()
    cci[:] = np.nan
    cci[:3] = truth[:3]                   # 3 days everywhere: neighbourhood pool 3·9 = 27 days
    res = fc.fuse_block_detailed(cci, era5, land, "meanstd", min_overlap_days=20, neighbourhood_cells=0)
    assert (res.pixel_kind == fc.PIXEL_UNSCALED).all()
    np.testing.assert_allclose(res.sm[3:], era5[3:].astype(np.float32), atol=1e-7)
    assert (res.source_flag[3:] == fc.FLAG_FALLBACK).all() and (res.source_flag[:3] == fc.FLAG_CCI).all()
    res1 = fc.fuse_block_detailed(cci, era5, land, "meanstd", min_overlap_days=20, neighbourhood_cells=1)
    # radius 1: inner pixels pool 9·3 = 27 days (enough), edges 6·3 = 18 and corners 4·3 = 12 (not)
    want = np.full((5, 5), fc.PIXEL_UNSCALED)
    want[1:-1, 1:-1] = fc.PIXEL_NEIGHBOURHOOD
    np.testing.assert_array_equal(res1.pixel_kind, want)
    np.testing.assert_allclose(res1.sm[:, 1:-1, 1:-1], truth[:, 1:-1, 1:-1], atol=1e-6)


def test_neighbourhood_pool_counts_only_land():
    truth, era5, cci, land = _block(ny=3, nx=3)
    cci[:] = np.nan
    cci[:8] = truth[:8]
    land[:, 0] = False                    # 6 land pixels · 8 days = 48 in the centre's pool
    p = fc.neighbourhood_meanstd_params(era5, np.where(land[None], cci, np.nan), land, 1)
    assert p.n[1, 1] == 48 and p.n[0, 2] == 32
    res = fc.fuse_block_detailed(cci, era5, land, "cdf", min_overlap_days=40, neighbourhood_cells=1)
    assert res.pixel_kind[1, 1] == fc.PIXEL_NEIGHBOURHOOD and res.pixel_kind[1, 2] == fc.PIXEL_NEIGHBOURHOOD
    assert res.pixel_kind[0, 2] == fc.PIXEL_UNSCALED and res.pixel_kind[0, 0] == fc.PIXEL_NOT_LAND


def test_clip_to_bounds_keeps_observations():
    t = 40
    era5 = np.linspace(0.0, 1.0, t)[:, None, None]   # rescaled values run below 0 and past 0.6
    full = 2.0 * era5 - 0.4
    cci = np.where((np.arange(t)[:, None, None] % 2 == 1) & (full > 0.05) & (full < 0.5), full, np.nan)
    cci[-1, 0, 0] = 0.65                                  # one observation above SM_MAX ...
    res = fc.fuse_block_detailed(cci, era5, np.ones((1, 1), bool), "meanstd", 5, 0)
    assert res.sm[-1, 0, 0] == np.float32(0.65)         # ... is not clipped
    assert res.sm.min() == 0.0 and res.sm[0, 0, 0] == 0.0
    assert np.isclose(res.sm.max(), 0.65)               # filled values above are clipped to it
    assert (res.sm[-6:-1, 0, 0] == np.float32(0.65)).all()


def test_chunks_with_halo_equal_whole_block():
    """What the stage does: fuse haloed windows, keep the inner part — same as the whole block."""
    truth, era5, cci, land = _block(ny=9, nx=7, seed=11)
    era5[:, 4, 6] = np.nan                                # a coastal cell without ERA5, at a chunk edge
    era5[::3, 2, 3] = np.nan
    cci[:, 3:6, 2:5] = np.nan
    cci[:5, 3:6, 2:5] = truth[:5, 3:6, 2:5]              # a patch needing the neighbourhood
    land[0, :3] = False
    r = 2
    for method in fc.METHODS:
        whole = fc.fuse_block_detailed(cci, era5, land, method, 20, r)
        for y0 in range(0, 9, 4):
            for x0 in range(0, 7, 3):
                y1, x1 = min(y0 + 4, 9), min(x0 + 3, 7)
                hy0, hx0 = max(y0 - r, 0), max(x0 - r, 0)
                hy1, hx1 = min(y1 + r, 9), min(x1 + r, 7)
                part = fc.fuse_block_detailed(cci[:, hy0:hy1, hx0:hx1], era5[:, hy0:hy1, hx0:hx1],
                                              land[hy0:hy1, hx0:hx1], method, 20, r)
                inner = (slice(None), slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0))
                np.testing.assert_array_equal(part.sm[inner], whole.sm[:, y0:y1, x0:x1])
                np.testing.assert_array_equal(part.source_flag[inner], whole.source_flag[:, y0:y1, x0:x1])


def test_land_pixel_without_era5_borrows_from_neighbours():
    truth, era5, cci, land = _block(ny=3, nx=3)
    era5[:, 1, 1] = np.nan                       # coast: ERA5 has no land point here
    land[0, 0] = False
    era5[:, 0, 0] = 0.0                          # ERA5 sea value: must not be borrowed
    # radius 0: nothing to borrow -> the gaps stay NaN / flag 0
    sm, flag = fc.fuse_block(cci, era5, land, "meanstd", 20, 0)
    gaps = np.isnan(cci[:, 1, 1])
    assert np.isnan(sm[gaps, 1, 1]).all() and (flag[gaps, 1, 1] == 0).all()
    assert (flag[~gaps, 1, 1] == 1).all()
    # radius 1: the mean ERA5 of the 7 land neighbours, rescaled to this pixel's CCI, flag 3
    res = fc.fuse_block_detailed(cci, era5, land, "meanstd", 20, 1)
    assert np.isfinite(res.sm[:, 1, 1]).all() and (res.source_flag[gaps, 1, 1] == fc.FLAG_FALLBACK).all()
    assert res.counts()["era5_borrowed_pixel_days"] == int(gaps.sum())
    e_nb = np.mean([era5[:, y, x] for y in range(3) for x in range(3) if land[y, x] and (y, x) != (1, 1)], axis=0)
    want = fc.rescale_meanstd(e_nb, cci[:, 1, 1])
    np.testing.assert_allclose(res.sm[gaps, 1, 1], np.clip(want[gaps], 0, 0.6), atol=1e-6)
    # the other pixels are unaffected
    np.testing.assert_array_equal(res.sm[:, 2, 2], fc.fuse_block(cci, era5, land, "meanstd", 20, 0)[0][:, 2, 2])


def test_fuse_series():
    e = np.linspace(0.1, 0.4, 30)
    c = np.where(np.arange(30) % 3 == 0, np.nan, 0.5 * e + 0.1)
    sm, flag = fc.fuse_series(c, e, "cdf", min_overlap_days=10)
    np.testing.assert_allclose(sm, 0.5 * e + 0.1, atol=1e-6)
    assert set(np.unique(flag)) == {1, 2}
    sm, flag = fc.fuse_series(c, e, "meanstd", min_overlap_days=25)
    assert (flag[np.isnan(c)] == fc.FLAG_FALLBACK).all()
    np.testing.assert_allclose(sm[np.isnan(c)], e[np.isnan(c)], atol=1e-6)  # unscaled


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(fc.METHODS), st.floats(0.0, 0.95), st.integers(0, 2),
       st.integers(2, 30))
def test_fuse_block_properties(seed, method, gap, r, min_overlap):
    rng = np.random.default_rng(seed)
    t, ny, nx = 25, 3, 4
    era5 = rng.uniform(-0.01, 0.7, (t, ny, nx))
    era5[rng.random(era5.shape) < 0.05] = np.nan
    cci = rng.uniform(0.0, 0.7, (t, ny, nx))
    cci[rng.random(cci.shape) < gap] = np.nan
    land = rng.random((ny, nx)) < 0.8
    res = fc.fuse_block_detailed(cci, era5, land, method, min_overlap, r)
    sm, flag = res.sm, res.source_flag
    upper = np.maximum(fc.SM_MAX, np.max(np.where(land[None] & np.isfinite(cci), cci, -1), axis=0))
    ok = np.isfinite(sm)
    assert (sm[ok] >= 0).all() and (sm <= upper[None] + 1e-6)[ok].all()
    assert np.isnan(sm[:, ~land]).all() and (flag[:, ~land] == 0).all()
    obs = np.isfinite(cci) & land[None]
    assert (flag[obs] == 1).all()
    np.testing.assert_array_equal(sm[obs], np.clip(cci, 0, None)[obs].astype(np.float32))
    # finite exactly where the flag says there is data; every land day with ERA5 is filled
    assert np.array_equal(ok, flag > 0)
    assert (ok | ~(land[None] & np.isfinite(era5))).all()
    assert set(np.unique(flag)) <= {0, 1, 2, 3}
    assert ((flag == 2) <= (res.pixel_kind == fc.PIXEL_OWN)[None]).all()


# ------------------------------------------------------------------------------------ experiment helpers
def test_hash_uniform_is_deterministic_and_uniform():
    d, r, c = np.arange(200)[:, None, None], np.arange(30)[None, :, None], np.arange(40)[None, None, :]
    u = fc.hash_uniform(7, d, r, c)
    assert u.shape == (200, 30, 40) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs((u < 0.2).mean() - 0.2) < 0.01
    # a sub-window draws the same numbers (chunk independence)
    np.testing.assert_array_equal(fc.hash_uniform(7, d[50:60], r[:, 5:9], c[:, :, 3:7]), u[50:60, 5:9, 3:7])
    assert not np.array_equal(fc.hash_uniform(8, d, r, c), u)


def test_withheld_mask_only_hides_observations():
    obs = np.random.default_rng(0).random((100, 10, 10)) < 0.5
    m = fc.withheld_mask(obs, 0.2, 7, np.arange(100), np.arange(10), np.arange(10))
    assert not (m & ~obs).any()
    assert abs(m.sum() / obs.sum() - 0.2) < 0.03


def test_doy_climatology():
    t = 730
    doy = (np.arange(t) % 365) + 1
    x = (0.2 + 0.1 * np.sin(2 * np.pi * doy / 365))[:, None, None] * np.ones((1, 2, 2))
    x[::2, 0, 0] = np.nan
    x[:, 1, 1] = np.nan
    x[3, 1, 1] = 0.3
    clim = fc.doy_climatology(x, doy, half_window=3)
    assert clim.shape == x.shape
    # smooth cycle: window mean ≈ value (away from the year end, where day 366 is empty)
    np.testing.assert_allclose(clim[10:355, 0, 1], x[10:355, 0, 1], atol=2e-4)
    assert np.allclose(clim[:6, 1, 1], 0.3) and np.allclose(clim[40:, 1, 1], 0.3)  # empty windows: pixel mean
    assert np.isfinite(clim[:, 0, 0]).all()
    empty = fc.doy_climatology(np.full((5, 1, 1), np.nan), np.arange(1, 6))
    assert np.isnan(empty).all()


# ------------------------------------------------------------------------------------ fixed parameters
def _gappy_block(seed=3, t=80, shape=(6, 7)):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.1, 0.4, (t, *shape))
    era5 = 0.05 + 0.8 * truth + rng.normal(0, 0.01, truth.shape)
    cci = np.where(rng.random(truth.shape) < 0.5, truth + rng.normal(0, 0.02, truth.shape), np.nan)
    cci[:, 1, 1] = np.nan
    cci[::9, 1, 1] = truth[::9, 1, 1]          # too few days: neighbourhood
    era5[:, -1, -1] = np.nan                    # coast: borrows its neighbours' ERA5
    land = np.ones(shape, bool)
    land[0, -1] = False
    return cci, era5, land


@pytest.mark.parametrize("method", fc.METHODS)
def test_apply_is_per_day(method):
    """A day's fused value depends only on that day's inputs and the parameters."""
    cci, era5, land = _gappy_block()
    p = fc.fit_params(cci[:50], era5[:50], land, method, 20, 1)
    whole = fc.apply_params(p, cci, era5)
    for sl in (slice(0, 1), slice(17, 18), slice(50, 80), slice(3, 61)):
        part = fc.apply_params(p, cci[sl], era5[sl])
        np.testing.assert_array_equal(part.sm, whole.sm[sl])
        np.testing.assert_array_equal(part.source_flag, whole.source_flag[sl])
    assert set(np.unique(p.kind[land])) >= {fc.PIXEL_OWN, fc.PIXEL_NEIGHBOURHOOD}
    # fitting on the block itself is the one-shot fusion
    np.testing.assert_array_equal(fc.apply_params(fc.fit_params(cci, era5, land, method, 20, 1), cci, era5).sm,
                                  fc.fuse_block_detailed(cci, era5, land, method, 20, 1).sm)


@pytest.mark.parametrize("method", fc.METHODS)
def test_params_round_trip_and_crop(method):
    cci, era5, land = _gappy_block()
    p = fc.fit_params(cci, era5, land, method, 20, 1)
    arrays = p.arrays()
    assert ("cdf_x" in arrays) == (method == "cdf") and "mean_era5" in arrays
    q = fc.FusionParams.from_arrays(method, 1, {k: v.astype(np.float64) for k, v in arrays.items()})
    np.testing.assert_array_equal(fc.apply_params(q, cci, era5).sm, fc.apply_params(p, cci, era5).sm)
    ys, xs = slice(1, 4), slice(2, 7)
    c = p.crop(ys, xs)
    assert c.shape == (3, 5) and c.counts()["land_pixels"] == int(land[ys, xs].sum())


def test_cdf_apply_does_not_depend_on_the_other_pixels():
    era5, keep = _series(t=90, shape=(5, 6), seed=2)
    cci = np.where(keep, np.sqrt(era5) * 0.5, np.nan)
    p = fc.cdf_params(era5, cci)
    whole = fc.apply_cdf(era5, p)
    k = p.x.shape[0]
    for j in (0, 7, 29):
        one = fc.CdfParams(p.x[:, j:j + 1], p.y[:, j:j + 1], p.slope[j:j + 1], p.n[j:j + 1], (1,))
        np.testing.assert_array_equal(fc.apply_cdf(era5.reshape(90, -1)[:, j:j + 1], one)[:, 0],
                                      whole.reshape(90, -1)[:, j])
    assert k == fc.CDF_NODES


def test_an_observation_above_the_reference_maximum_is_kept():
    cci, era5, land = _gappy_block()
    p = fc.fit_params(cci[:40], era5[:40], land, "meanstd", 20, 1)
    c = cci[40:41].copy()
    c[0, 2, 2] = 0.95          # wetter than anything in the reference period (and than SM_MAX)
    res = fc.apply_params(p, c, era5[40:41])
    assert res.sm[0, 2, 2] == np.float32(0.95) and res.source_flag[0, 2, 2] == fc.FLAG_CCI
    gaps = ~np.isfinite(c[0]) & land
    assert (res.sm[0][gaps] <= p.upper[gaps] + 1e-6).all()
