"""The downscale hot path after its performance changes gives the values of the plain algorithm.

``core.predict.predict_shard`` predicts only the rows the product keeps (not 25 km sea, not 1 km water) and
``read_inputs`` skips the predictors of an all-sea shard; here the result is compared with the
plain algorithm written out: features of every row, model on every row, then the mask.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from downscale_world import FACTOR, make_world
from sm1km.core.features import PREDICTOR_NAMES, build_features, day_of_year
from sm1km.core.predict import FEATURE_BATCH_ROWS, WATER_LAND_COVER, predict_shard
from sm1km.stages import downscale
from sm1km.storage.model import load_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hot") / "store")
    return make_world(root)


def _reference(fused_sm, flag, preds, times, factor, model):
    """Every row predicted, then sea (fused flag 0 / NaN) and water pixels set to NaN."""
    nt, yc, xc = fused_sm.shape
    X = build_features(fused_sm, flag, preds, day_of_year(times), factor)
    shape = (nt, yc * factor, xc * factor)
    sm = model.predict(X).reshape(shape)
    unc = model.predict_uncertainty(X).reshape(shape)
    sea = (flag == 0) | np.isnan(fused_sm)
    mask = np.repeat(np.repeat(sea, factor, axis=1), factor, axis=2) | np.isin(preds["land_cover"],
                                                                               WATER_LAND_COVER)
    sm[mask] = np.nan
    unc[mask] = np.nan
    return sm, unc


@pytest.mark.parametrize("batch_rows", [FEATURE_BATCH_ROWS, 3 * 400, 400])
def test_land_rows_only_equals_predict_everything_then_mask(world, batch_rows):
    cfg, facts = world
    m = load_model(cfg.model_path)
    f = facts["fused"]  # 2x2 cells: one sea cell, a lake in another
    p = facts["predictors"]
    preds = {k: p[k].values for k in PREDICTOR_NAMES}
    times = f.time.values
    sm, unc = predict_shard(f.sm.values, f.source_flag.values, preds, times, FACTOR, m, True,
                            batch_rows=batch_rows)
    ref_sm, ref_unc = _reference(f.sm.values, f.source_flag.values, preds, times, FACTOR, m)
    np.testing.assert_array_equal(sm, ref_sm)
    np.testing.assert_array_equal(unc, ref_unc)
    assert np.isnan(sm).any() and np.isfinite(sm).any()


def test_all_sea_shard_reads_no_predictors_and_writes_fill(world, tmp_path):
    from sm1km.storage import master, store

    cfg, facts = world
    m = load_model(cfg.model_path)
    ctx = downscale.make_context(cfg, m)
    sea_spec = next(s for s in downscale.shard_specs(cfg) if (s.r0, s.c0) == (1, 1))  # the sea cell's tile
    land_spec = next(s for s in downscale.shard_specs(cfg) if (s.r0, s.c0) == (0, 0))
    fused_sm, flag, preds, times = downscale.read_inputs(sea_spec, ctx)
    assert preds == {} and len(times) == sea_spec.t1 - sea_spec.t0
    sm, unc = predict_shard(fused_sm, flag, preds, times, FACTOR, m, True)
    assert np.isnan(sm).all() and np.isnan(unc).all()
    _, _, land_preds, _ = downscale.read_inputs(land_spec, ctx)
    assert set(land_preds) == set(PREDICTOR_NAMES)
    # the whole task on the sea shard: nothing but fill, ledger marked
    tmp = dataclasses.replace(ctx, master_url=str(tmp_path / "master.zarr"), root=str(tmp_path))
    tpl, enc = master.master_template(cfg, model_sha256=m.sha256)
    store.create_template(tmp.master_url, tpl, enc, {})
    out = downscale.downscale_shard(sea_spec, tmp)
    assert out["land_pixel_days"] == 0
    assert store.Ledger(tmp.root, master.MASTER_STORE, {}).keys() == {sea_spec.key}
    y, x = sea_spec.fine
    q = store.open_group(tmp.master_url)["sm"][sea_spec.t0:sea_spec.t1, y, x]
    assert (q == -32768).all()
