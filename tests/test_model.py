"""model.save_model / load_model: round trip (local + S3), hash and schema checks, cache, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from sm1km.core import features as F
from sm1km.errors import ModelError
from sm1km.storage import model as M
from sm1km.storage import store


@pytest.fixture(autouse=True)
def _fresh_cache():
    M.clear_model_cache()
    yield
    M.clear_model_cache()


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F.N_FEATURES)).astype(np.float32)
    X[:, F.column("sm_25km")] = rng.uniform(0.05, 0.45, n)
    y = 0.8 * X[:, F.column("sm_25km")] + 0.02 * X[:, F.column("twi_anom")] + rng.normal(0, 0.005, n)
    return X, y.astype(np.float32)


def _boosters(X, y):
    d = xgb.DMatrix(X, label=y, feature_names=list(F.FEATURE_NAMES))
    b = xgb.train({"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 1}, d, num_boost_round=20)
    q = xgb.train({"objective": "reg:quantileerror", "quantile_alpha": np.array(M.QUANTILES), "max_depth": 3,
                   "nthread": 1, "seed": 1}, d, num_boost_round=20)
    return b, q


def test_round_trip_local_and_s3(store_root):
    root, opts = store_root
    X, y = _data()
    b, q = _boosters(X, y)
    url = store.join(root, "model", "model.ubj")
    urls = M.save_model(url, b, {"algorithm": "gbt"}, uncertainty_booster=q, storage_options=opts)
    assert set(urls) == {"model", "card", "uncertainty"}
    m = M.load_model(url, opts)
    p = m.predict(X)
    assert p.dtype == np.float32 and p.shape == (len(X),)
    np.testing.assert_allclose(p, np.clip(b.inplace_predict(X), 0, 1), rtol=1e-6)
    u = m.predict_uncertainty(X)
    assert u.dtype == np.float32 and (u >= 0).all() and u.mean() > 0
    card = json.loads(store.filesystem(urls["card"], opts)[0].cat_file(store.filesystem(urls["card"], opts)[1]))
    assert card["feature_schema"]["names"] == list(F.FEATURE_NAMES)
    assert card["files"]["model.ubj"]["sha256"] == store.sha256_file(url, opts) == m.sha256
    assert card["algorithm"] == "gbt"
    # cached: the same object for the same file
    assert M.load_model(url, opts) is m


def test_nan_sm_predicts_nan_and_shape_checked(tmp_path):
    X, y = _data()
    b, q = _boosters(X, y)
    url = str(tmp_path / "model.ubj")
    M.save_model(url, b, uncertainty_booster=q)
    m = M.load_model(url)
    X2 = X[:5].copy()
    X2[1, F.column("sm_25km")] = np.nan
    X2[2, F.column("ndvi")] = np.nan  # other NaN: still predicted
    p, u = m.predict(X2), m.predict_uncertainty(X2)
    assert np.isnan(p[1]) and np.isnan(u[1]) and np.isfinite(p[[0, 2, 3, 4]]).all()
    with pytest.raises(ModelError, match="shape"):
        m.predict(X[:, :5])
    assert m.predict(np.empty((0, F.N_FEATURES), np.float32)).shape == (0,)


def test_tampered_model_is_refused(tmp_path):
    X, y = _data()
    b, q = _boosters(X, y)
    url = str(tmp_path / "m" / "model.ubj")
    M.save_model(url, b, uncertainty_booster=q)
    raw = bytearray((tmp_path / "m" / "model.ubj").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "m" / "model.ubj").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        M.load_model(url)


def test_tampered_uncertainty_is_refused(tmp_path):
    X, y = _data()
    b, q = _boosters(X, y)
    url = str(tmp_path / "model.ubj")
    M.save_model(url, b, uncertainty_booster=q)
    with open(tmp_path / "uncertainty.ubj", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match="uncertainty"):
        M.load_model(url)


def test_cached_model_is_reverified_after_rewrite(tmp_path):
    X, y = _data()
    b, _ = _boosters(X, y)
    url = str(tmp_path / "model.ubj")
    M.save_model(url, b)
    M.load_model(url)
    raw = (tmp_path / "model.ubj").read_bytes()
    (tmp_path / "model.ubj").write_bytes(raw + b"\0")  # size changes -> new cache key
    with pytest.raises(ModelError, match="sha256"):
        M.load_model(url)


@pytest.mark.parametrize("change", ["version", "names", "order", "units"])
def test_schema_mismatch_is_refused(tmp_path, change):
    X, y = _data()
    b, _ = _boosters(X, y)
    url = str(tmp_path / "model.ubj")
    schema = json.loads(json.dumps(F.FEATURE_SCHEMA))
    if change == "version":
        schema["version"] = "0"
    elif change == "names":
        schema["names"][3] = "latitude"
    elif change == "order":
        schema["names"][0], schema["names"][1] = schema["names"][1], schema["names"][0]
    else:
        schema["units"][0] = "%"
    M.save_model(url, b, schema=schema)
    with pytest.raises(ModelError, match="schema"):
        M.load_model(url)


def test_missing_model_and_card(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        M.load_model(str(tmp_path / "nope" / "model.ubj"))
    X, y = _data()
    b, _ = _boosters(X, y)
    url = str(tmp_path / "model.ubj")
    M.save_model(url, b)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        M.load_model(url)
    m_url = str(tmp_path / "x" / "model.ubj")
    M.save_model(m_url, b)
    with pytest.raises(ModelError, match="no uncertainty"):
        M.load_model(m_url).predict_uncertainty(X)


def test_residual_target_adds_sm_25km_back(tmp_path):
    X, y = _data()
    c = F.column("sm_25km")
    d = xgb.DMatrix(X, label=y - X[:, c], feature_names=list(F.FEATURE_NAMES))
    b = xgb.train({"max_depth": 3, "nthread": 1, "seed": 1}, d, num_boost_round=10)
    url = str(tmp_path / "model.ubj")
    M.save_model(url, b, {"target_kind": "residual"})
    m = M.load_model(url)
    assert m.target_kind == "residual"
    np.testing.assert_allclose(m.predict(X), np.clip(b.inplace_predict(X) + X[:, c], 0, 1), rtol=1e-5)
    M.save_model(str(tmp_path / "bad" / "model.ubj"), b, {"target_kind": "log"})
    with pytest.raises(ModelError, match="target_kind"):
        M.load_model(str(tmp_path / "bad" / "model.ubj"))
