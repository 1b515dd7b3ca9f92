"""Metrics: pytesmo definitions (checked against pytesmo itself), mergeable moments, metrics.json."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sm1km.config import RunConfig
from sm1km.core import metrics
from sm1km.storage import metrics_json


def _pytesmo():
    import pytesmo.metrics as pm

    return pm


def _pair(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.05, 0.45, n)
    x = 0.8 * y + 0.07 + rng.normal(0, 0.03, n)
    return x, y


def test_against_pytesmo():
    pm = _pytesmo()
    x, y = _pair()
    assert metrics.bias(x, y) == pytest.approx(float(pm.bias(x, y)), abs=1e-14)
    assert metrics.rmse(x, y) == pytest.approx(float(pm.rmsd(x, y)), rel=1e-12)
    assert metrics.ubrmse(x, y) == pytest.approx(float(pm.ubrmsd(x, y)), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        r = pm.pearsonr(x, y)
    r = float(r[0] if isinstance(r, tuple) else getattr(r, "statistic", r))
    assert metrics.pearson_r(x, y) == pytest.approx(r, rel=1e-12)
    # ubRMSE identity with population (ddof=0) definitions
    assert metrics.ubrmse(x, y) ** 2 == pytest.approx(metrics.rmse(x, y) ** 2 - metrics.bias(x, y) ** 2, rel=1e-9)


def test_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.5, 2.0, 2.5, 5.0])
    d = metrics.metric_dict(x, y)
    assert d["n"] == 4
    assert d["bias"] == pytest.approx(-0.25)
    assert d["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 0.25 + 1) / 4))
    assert d["ubrmse"] == pytest.approx(math.sqrt(d["rmse"] ** 2 - 0.0625))
    assert set(d) == {"n", "r", "ubrmse", "bias", "rmse"}


def test_nan_pairs_are_ignored():
    x, y = _pair(50)
    xn, yn = x.copy(), y.copy()
    xn[::7] = np.nan
    yn[3::11] = np.nan
    ok = np.isfinite(xn) & np.isfinite(yn)
    got = metrics.metric_dict(xn, yn)
    ref = metrics.metric_dict(x[ok], y[ok])
    assert got == ref
    assert got["n"] == int(ok.sum()) < 50


def test_degenerate_inputs():
    e = metrics.metric_dict([], [])
    assert e["n"] == 0 and all(math.isnan(e[k]) for k in ("r", "ubrmse", "bias", "rmse"))
    one = metrics.metric_dict([0.2], [0.1])
    assert one["n"] == 1 and math.isnan(one["r"]) and one["bias"] == pytest.approx(0.1)
    const = metrics.metric_dict([0.2, 0.2, 0.2], [0.1, 0.3, 0.2])
    assert math.isnan(const["r"])
    with pytest.raises(ValueError):
        metrics.metric_dict([1.0, 2.0], [1.0])


def test_moments_merge_equals_pooled_metrics():
    x, y = _pair(301, seed=3)
    x[10:20] = np.nan
    parts = [slice(0, 50), slice(50, 51), slice(51, 51), slice(51, 200), slice(200, 301)]
    acc = metrics.Moments()
    for s in parts:
        acc = acc + metrics.Moments.from_arrays(x[s], y[s])
    got, ref = acc.to_dict(), metrics.metric_dict(x, y)
    assert got["n"] == ref["n"]
    for k in ("r", "ubrmse", "bias", "rmse"):
        assert got[k] == pytest.approx(ref[k], rel=1e-10, abs=1e-14)
    assert metrics.Moments().to_dict()["n"] == 0


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 60), elements=st.floats(0, 0.6)),
       st.floats(-0.2, 0.2), st.floats(0.5, 2.0), st.integers(1, 59))
def test_moments_property(y, offset, scale, cut):
    x = y * scale + offset + np.sin(np.arange(y.size))* 0.01
    cut = min(cut, y.size)
    merged = metrics.Moments.from_arrays(x[:cut], y[:cut]) + metrics.Moments.from_arrays(x[cut:], y[cut:])
    ref = metrics.metric_dict(x, y)
    got = merged.to_dict()
    assert got["n"] == ref["n"]
    for k in ("ubrmse", "bias", "rmse"):
        assert got[k] == pytest.approx(ref[k], rel=1e-7, abs=1e-10)


def test_jsonable():
    out = metrics_json.jsonable({"a": np.float32(0.5), "b": np.nan, "c": [np.int64(3), np.inf], 4: np.bool_(True),
                                 "d": np.array([1.5, np.nan]), "e": (1, "x")})
    assert out == {"a": 0.5, "b": None, "c": [3, None], "4": True, "d": [1.5, None], "e": [1, "x"]}
    json.dumps(out, allow_nan=False)
    day = np.datetime64("2020-01-02")
    assert metrics_json.jsonable({"t": [day]}, default=lambda v: str(v)[:4] if isinstance(v, np.datetime64) else v) \
        == {"t": ["2020"]}


def _cfg(root) -> RunConfig:
    return RunConfig.from_dict({"region": {"west": 10, "south": 44, "east": 11, "north": 45},
                                "period": {"start": "2020-01-01", "end": "2020-01-10"},
                                "store": {"root": str(root)}})


def test_update_metrics_json_merges_sections(tmp_path):
    cfg = _cfg(tmp_path / "store")
    assert metrics_json.read_metrics_json(cfg) == {}
    url = metrics_json.update_metrics_json(cfg, "model", {"r": np.float64(0.9), "bad": np.nan})
    metrics_json.update_metrics_json(cfg, "fusion", {"withheld": {"fused": {"n": 3}}})
    metrics_json.update_metrics_json(cfg, "model", {"r": 0.91})
    data = json.loads(open(url).read())
    assert data == {"fusion": {"withheld": {"fused": {"n": 3}}}, "model": {"r": 0.91}}
    assert sorted(p.name for p in (tmp_path / "store" / "report").iterdir()) == ["metrics.json"]  # no temporary left
    assert open(url, "rb").read() == (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()  # the layout of the file


def test_update_metrics_json_on_s3(s3_bucket):
    bucket, so = s3_bucket
    cfg = RunConfig.from_dict({"region": {"west": 10, "south": 44, "east": 11, "north": 45},
                               "period": {"start": "2020-01-01", "end": "2020-01-10"},
                               "store": {"root": f"s3://{bucket}/run", "endpoint_url": so["endpoint_url"]}})
    metrics_json.update_metrics_json(cfg, "truth", {"x": 1})
    metrics_json.update_metrics_json(cfg, "fusion", {"y": 2})
    assert metrics_json.read_metrics_json(cfg) == {"fusion": {"y": 2}, "truth": {"x": 1}}


def test_corrupt_metrics_json_is_a_store_error(tmp_path):
    from sm1km.errors import StoreError

    cfg = _cfg(tmp_path / "store")
    p = tmp_path / "store" / "report"
    p.mkdir(parents=True)
    (p / "metrics.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        metrics_json.update_metrics_json(cfg, "fusion", {})
