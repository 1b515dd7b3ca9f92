"""features.build_features: known answers on tiny blocks, block invariance, NaN, out=."""

from __future__ import annotations

import numpy as np
import pytest

from sm1km.core import features as F
from sm1km.errors import ModelError


def _block(nt=2, yc=1, xc=1, factor=2, seed=0):
    rng = np.random.default_rng(seed)
    ny, nx = yc * factor, xc * factor
    fused = rng.uniform(0.1, 0.4, (nt, yc, xc)).astype(np.float32)
    flag = rng.integers(1, 4, (nt, yc, xc)).astype(np.uint8)
    preds = {
        "lst_day_k": rng.uniform(280, 320, (nt, ny, nx)).astype(np.float32),
        "lst_night_k": rng.uniform(270, 290, (nt, ny, nx)).astype(np.float32),
        "ndvi": rng.uniform(0, 0.9, (nt, ny, nx)).astype(np.float32),
        "elevation_m": rng.uniform(0, 2000, (ny, nx)).astype(np.float32),
        "slope_deg": rng.uniform(0, 30, (ny, nx)).astype(np.float32),
        "twi": rng.uniform(2, 15, (ny, nx)).astype(np.float32),
        "clay_frac": rng.uniform(0, 0.5, (ny, nx)).astype(np.float32),
        "sand_frac": rng.uniform(0, 0.5, (ny, nx)).astype(np.float32),
        "land_cover": rng.integers(1, 17, (ny, nx)).astype(np.int16),
    }
    doy = np.arange(100, 100 + nt)
    return fused, flag, preds, doy


def test_schema_is_consistent():
    s = F.FEATURE_SCHEMA
    assert s["names"] == list(F.FEATURE_NAMES)
    assert len(s["names"]) == len(s["units"]) == F.N_FEATURES == len(set(s["names"]))
    assert not any(n in ("lat", "lon", "latitude", "longitude") for n in s["names"])
    assert F.FEATURE_UNITS[F.column("elevation_m_anom")] == "m"
    assert F.FEATURE_UNITS[F.column("sm_25km")] == "m3 m-3"


def test_known_answers_one_cell():
    fused, flag, preds, doy = _block(nt=2, factor=2)
    preds["elevation_m"] = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)  # cell mean 3
    preds["lst_day_k"] = np.full((2, 2, 2), 300.0, np.float32)
    preds["lst_night_k"] = np.array([[[280, 282], [284, 286]], [[290, 290], [290, 290]]], np.float32)
    X = F.build_features(fused, flag, preds, doy, factor=2)
    assert X.dtype == np.float32 and X.shape == (2 * 2 * 2, F.N_FEATURES)
    c = F.column
    # rows C order over (t, y, x): row = t*4 + y*2 + x
    np.testing.assert_allclose(X[:4, c("sm_25km")], fused[0, 0, 0])
    np.testing.assert_allclose(X[4:, c("sm_25km")], fused[1, 0, 0])
    np.testing.assert_allclose(X[:, c("source_flag")], np.repeat(flag[:, 0, 0], 4))
    np.testing.assert_allclose(X[:, c("elevation_m")], np.tile([1, 2, 3, 6], 2))
    np.testing.assert_allclose(X[:, c("elevation_m_anom")], np.tile([-2, -1, 0, 3], 2))
    np.testing.assert_allclose(X[:4, c("lst_diff_k")], [20, 18, 16, 14])
    np.testing.assert_allclose(X[:4, c("lst_diff_k_anom")], [3, 1, -1, -3])
    np.testing.assert_allclose(X[:4, c("lst_night_k_anom")], [-3, -1, 1, 3])
    np.testing.assert_allclose(X[4:, c("lst_night_k_anom")], 0)
    ang = 2 * np.pi * 100 / 365.25
    np.testing.assert_allclose(X[:4, c("doy_sin")], np.sin(ang), rtol=1e-6)
    np.testing.assert_allclose(X[:4, c("doy_cos")], np.cos(ang), rtol=1e-6)
    np.testing.assert_array_equal(X[:4, c("land_cover")], preds["land_cover"].ravel())


def test_block_invariance_training_equals_inference():
    """A pixel's features are the same in a 2x3-cell block (inference) and in its 1x1-cell block (training)."""
    factor = 3
    fused, flag, preds, doy = _block(nt=4, yc=2, xc=3, factor=factor, seed=1)
    X = F.build_features(fused, flag, preds, doy, factor).reshape(4, 6, 9, F.N_FEATURES)
    for i in range(2):
        for j in range(3):
            ys, xs = slice(i * factor, (i + 1) * factor), slice(j * factor, (j + 1) * factor)
            sub = {k: (v[..., ys, xs]) for k, v in preds.items()}
            Xc = F.build_features(fused[:, i:i + 1, j:j + 1], flag[:, i:i + 1, j:j + 1], sub, doy, factor)
            np.testing.assert_array_equal(Xc.reshape(4, factor, factor, -1), X[:, ys, xs])
    # and a sub-period gives the same rows as the whole period (no cross-day features)
    Xt = F.build_features(fused[2:], flag[2:], {k: (v[2:] if v.ndim == 3 else v) for k, v in preds.items()},
                          doy[2:], factor).reshape(2, 6, 9, -1)
    np.testing.assert_array_equal(Xt, X[2:])


def test_nan_is_kept_and_ignored_in_cell_mean():
    fused, flag, preds, doy = _block(nt=1, factor=2)
    preds["ndvi"] = np.array([[[0.2, np.nan], [0.4, 0.6]]], np.float32)
    fused[0, 0, 0] = np.nan
    X = F.build_features(fused, flag, preds, doy, 2)
    a = X[:, F.column("ndvi_anom")]
    np.testing.assert_allclose(a[[0, 2, 3]], [-0.2, 0.0, 0.2], atol=1e-6)
    assert np.isnan(a[1]) and np.isnan(X[1, F.column("ndvi")])
    assert np.isnan(X[:, F.column("sm_25km")]).all()
    # all-NaN cell: anomaly NaN, no warning escapes
    preds["twi"] = np.full((2, 2), np.nan, np.float32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = F.build_features(fused, flag, preds, doy, 2)
    assert np.isnan(X[:, F.column("twi_anom")]).all()


def test_out_is_filled_in_place_and_datetimes_accepted():
    fused, flag, preds, doy = _block(nt=3, yc=1, xc=2, factor=2)
    out = F.empty_features(3 * 2 * 4)
    out[:] = -999
    res = F.build_features(fused, flag, preds, doy, 2, out=out)
    assert res is out and not (out == -999).any()
    dates = np.datetime64("2021-01-01") + (doy - 1).astype("timedelta64[D]")
    np.testing.assert_array_equal(F.build_features(fused, flag, preds, dates, 2), out)
    np.testing.assert_array_equal(F.day_of_year(np.array(["2020-12-31", "2021-03-01"], "datetime64[ns]")), [366, 60])


def test_bad_inputs_raise_model_error():
    fused, flag, preds, doy = _block()
    with pytest.raises(ModelError, match="twi"):
        F.build_features(fused, flag, {k: v for k, v in preds.items() if k != "twi"}, doy, 2)
    with pytest.raises(ModelError, match="shape"):
        F.build_features(fused, flag, preds, doy, 3)
    with pytest.raises(ModelError, match="out"):
        F.build_features(fused, flag, preds, doy, 2, out=np.empty((8, F.N_FEATURES), np.float64))


def test_column_major_buffer_gives_the_same_features():
    """The hot path fills a column-major buffer (contiguous per feature); values equal the default."""
    fused, flag, preds, doy = _block(nt=3, yc=2, xc=3, factor=4, seed=5)
    ref = F.build_features(fused, flag, preds, doy, 4)
    buf = F.empty_features(ref.shape[0])
    assert buf.flags.f_contiguous and not buf.flags.c_contiguous
    got = F.build_features(fused, flag, preds, doy, 4, out=buf)
    assert got is buf
    np.testing.assert_array_equal(got, ref)
    # a row slice of a column-major buffer is neither C- nor F-contiguous: refused, not copied into
    with pytest.raises(ModelError, match="contiguous"):
        F.build_features(fused[:1], flag[:1], {k: (v[:1] if v.ndim == 3 else v) for k, v in preds.items()},
                         doy[:1], 4, out=F.empty_features(ref.shape[0])[: ref.shape[0] // 3])


def test_all_nan_cells_warn_in_no_thread():
    """Dask workers run tasks in threads: the cell mean of an all-NaN (sea) cell must not emit
    "Mean of empty slice" from any of them (``warnings.catch_warnings`` is not thread-safe, so a
    per-call suppression leaked the warning from 2-thread workers)."""
    import sys
    import threading
    import warnings

    a = np.full((8, 240, 240), np.nan, dtype=np.float32)
    a[:, 30:, 30:] = 0.25
    go = threading.Barrier(4)

    def work():
        go.wait()
        for _ in range(40):
            F._cell_mean(a, 30)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as busy workers do
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
    finally:
        sys.setswitchinterval(switch)
    assert not any(t.is_alive() for t in threads)
    assert [str(w.message) for w in caught] == []
    m = F._cell_mean(a, 30)
    assert np.isnan(m[:, :30]).all() and np.isnan(m[:, 30:, :30]).all() and (m[:, 30:, 30:] == 0.25).all()
