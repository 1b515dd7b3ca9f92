"""int16 packing of soil moisture: known answers, bounds, NaN, in-place output, round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sm1km.core.encoding import FILL, SCALE, decode_int16, encode_int16


def test_constants():
    assert FILL == -32768 and SCALE == 0.001


def test_known_values():
    x = np.array([0.0, 0.25, 0.2345, 0.0004, 0.0006, 0.999, 1.0, np.nan], np.float32)
    q = encode_int16(x)
    assert q.dtype == np.int16
    np.testing.assert_array_equal(q, [0, 250, 235, 0, 1, 999, 1000, FILL])


def test_clipped_to_physical_bounds_and_inf():
    x = np.array([-0.3, -np.inf, 1.7, np.inf, 40.0], np.float64)
    np.testing.assert_array_equal(encode_int16(x), [0, 0, 1000, 1000, 1000])
    # a wider range is allowed but never wraps around int16
    np.testing.assert_array_equal(encode_int16(np.array([1e9, -1e9]), valid_min=-30.0, valid_max=30.0),
                                  [30000, -30000])
    with pytest.raises(ValueError):
        encode_int16(np.zeros(2), valid_min=-40.0)


def test_decode_fill_is_nan_and_dtype():
    q = np.array([FILL, 0, 1, 1000, 32767], np.int16)
    v = decode_int16(q)
    assert v.dtype == np.float32
    assert np.isnan(v[0])
    np.testing.assert_allclose(v[1:], [0.0, 0.001, 1.0, 32.767], rtol=1e-7)
    assert decode_int16(q, dtype=np.float64).dtype == np.float64


def test_out_is_filled_in_place_across_blocks():
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.1, 1.1, (3, 300, 500)).astype(np.float32)  # > one scratch block
    x[0, 0, :7] = np.nan
    out = np.zeros(x.shape, np.int16)
    res = encode_int16(x, out=out)
    assert res is out
    ref = np.where(np.isnan(x), FILL, np.rint(np.clip(x.astype(np.float64), 0, 1) * 1000)).astype(np.int16)
    np.testing.assert_array_equal(out, ref)


def test_bad_out_raises():
    x = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError):
        encode_int16(x, out=np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError):
        encode_int16(x, out=np.zeros((8, 8), np.int16)[::2, ::2])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 200), elements=st.one_of(st.floats(-2, 3, width=32), st.just(np.nan))))
def test_round_trip_within_half_a_step(x):
    back = decode_int16(encode_int16(x))
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(back), nan)
    err = np.abs(back[~nan].astype(np.float64) - np.clip(x[~nan].astype(np.float64), 0, 1))
    assert (err <= SCALE / 2 + 1e-6).all()
    # packing is idempotent on decoded values
    np.testing.assert_array_equal(encode_int16(back), encode_int16(x))
