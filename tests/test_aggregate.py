"""Aggregate stage: monthly means and valid-day counts equal a numpy reference on the decoded
master; the thin-month rule; resumable; refuses an incomplete master."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from downscale_world import make_config
from sm1km.core.encoding import FILL, encode_int16
from sm1km.errors import StoreError
from sm1km.stages import aggregate, downscale
from sm1km.storage import master, store


def _fake_master(cfg, so, seed=0):
    """A complete master written shard by shard (no model needed): random values, sea, gaps."""
    rng = np.random.default_rng(seed)
    url = cfg.store.url(master.MASTER_STORE)
    tpl, enc = master.master_template(cfg)
    store.create_template(url, tpl, enc, so)
    nt = cfg.period.n_days
    sm = rng.uniform(0.05, 0.45, (nt, 20, 20)).astype(np.float32)
    sm[:, 10:, 10:] = np.nan                      # sea
    sm[rng.random(sm.shape) < 0.3] = np.nan       # scattered gaps
    sm[:20, 0, 0], sm[20:, 0, 0] = np.nan, 0.2     # a pixel with only 11 valid January days
    ledger = store.Ledger(cfg.store.root, master.MASTER_STORE, so)
    for spec in downscale.shard_specs(cfg):
        y, x = spec.fine
        master.write_packed(url, spec.region, {"sm": encode_int16(sm[spec.t0:spec.t1, y, x])}, so)
        ledger.mark(spec.key)
    store.finalize(url, so, store.coverage_attrs(cfg.dates()))
    return url


def test_monthly_means_pure_known_answer():
    q = np.array([[[100]], [[200]], [[FILL]], [[400]]], np.int16)  # 4 days, 1 px
    mean, n = aggregate.monthly_means(q, np.array([0, 0, 1, 1]), 2, np.array([2, 2]))
    assert mean[:, 0, 0].tolist() == [150, FILL] and n[:, 0, 0].tolist() == [2, 1]
    # half-way means round half to even on the packed integers
    q2 = np.array([[[1]], [[2]]], np.int16)
    assert aggregate.monthly_means(q2, np.array([0, 0]), 1, np.array([1]))[0][0, 0, 0] == 2


def test_aggregate_equals_numpy_reference(store_root):
    root, so = store_root
    cfg = make_config(root, so)
    murl = _fake_master(cfg, so)
    out = aggregate.aggregate(cfg)
    assert out.stats["chunks_total"] == 4 and out.stats["chunks_written"] == 4 and out.stats["months"] == 2
    daily = store.open_dataset(murl, so).sm.values  # decoded by xarray (NaN = fill)
    monthly = store.open_dataset(out["monthly"], so, consolidated=True)
    assert list(pd.DatetimeIndex(monthly.time.values)) == [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-02-01")]
    months = pd.DatetimeIndex(cfg.dates()).month
    for i, (m, ndays) in enumerate(((1, 31), (2, 29))):
        block = daily[months == m]
        n_ref = np.isfinite(block).sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (sea)
            mean_ref = np.nanmean(block, axis=0)
        mean_ref = np.where(n_ref >= np.ceil(0.5 * ndays), mean_ref, np.nan)
        np.testing.assert_array_equal(monthly.n_valid_days.values[i], n_ref)
        got = monthly.sm.values[i]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(mean_ref))
        ok = np.isfinite(got)
        assert np.abs(got[ok] - mean_ref[ok]).max(initial=0.0) <= 0.0005 + 1e-9
    # January: land mostly valid, the 11-day pixel and sea are fill; February (9 of 29 days) is all fill
    assert np.isnan(monthly.sm.values[0, 0, 0]) and monthly.n_valid_days.values[0, 0, 0] == 11
    assert np.isnan(monthly.sm.values[0, 10:, 10:]).all() and (monthly.n_valid_days.values[0, 10:, 10:] == 0).all()
    assert np.isnan(monthly.sm.values[1]).all() and monthly.n_valid_days.values[1].max() <= 9
    assert monthly.sm.attrs["units"] == "m3 m-3" and monthly.sm.encoding["scale_factor"] == 0.001
    # resumable
    again = aggregate.aggregate(cfg)
    assert again.stats["chunks_skipped"] == 4 and again.stats["chunks_written"] == 0


def test_lower_threshold_keeps_thin_months(tmp_path):
    cfg = make_config(str(tmp_path))
    _fake_master(cfg, {})
    out = aggregate.aggregate(cfg, min_valid_fraction=0.0)
    monthly = store.open_dataset(out["monthly"], {})
    feb = monthly.sm.values[1]
    assert np.isfinite(feb[:10]).any() and np.isnan(feb[10:, 10:]).all()


def test_refuses_an_incomplete_master(tmp_path):
    cfg = make_config(str(tmp_path))
    with pytest.raises(StoreError, match="no master"):
        aggregate.aggregate(cfg)
    _fake_master(cfg, {})
    ledger = store.Ledger(cfg.store.root, master.MASTER_STORE)
    ledger.fs.rm(ledger._key_path(sorted(ledger.keys())[0]))
    with pytest.raises(StoreError, match="incomplete"):
        aggregate.aggregate(cfg)
