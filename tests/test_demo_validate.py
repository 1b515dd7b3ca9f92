"""End to end: `sm1km demo` on the tiny synthetic world, then the report contract (metrics.json + HTML)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("demo")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    import os

    r = subprocess.run([sys.executable, "-m", "sm1km.cli", "demo", "--workdir", str(wd), "--preset", "tiny"],
                       capture_output=True, text=True, timeout=900, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-4000:]
    return wd, r


def test_demo_prints_outputs_and_headline(demo_run):
    wd, r = demo_run
    assert "sm1km demo finished" in r.stdout
    assert "master.zarr" in r.stdout and "report/index.html" in r.stdout
    assert "station-grouped CV" in r.stdout and "vs 1 km truth" in r.stdout
    assert "nested station-grouped CV (outer folds)" in r.stdout and "leave-network-out" in r.stdout
    assert "not available" not in r.stdout  # every stage ran


def test_metrics_json_contract(demo_run):
    wd, _ = demo_run
    m = json.loads((wd / "store" / "report" / "metrics.json").read_text())
    for key in ("fusion", "model", "stations", "truth", "published", "outputs"):
        assert key in m, key
    w = m["fusion"]["withheld"]
    for est in ("fused", "fused_meanstd", "fused_cdf", "era5", "climatology"):
        assert set(w[est]) >= {"n", "r", "ubrmse", "bias", "rmse"}, est
        assert w[est]["n"] > 0
    assert set(m["fusion"]["vs_truth"]) >= {"fused", "era5", "climatology"}
    model = m["model"]
    assert model["default_algorithm"] in ("rf", "gbt")
    for scheme in ("random_kfold", "station_grouped", "spatial_block", "year_out"):
        assert set(model[scheme]) >= {"n_stations", "n_samples", "r_pooled", "ubrmse_pooled", "r_median",
                                      "ubrmse_median"}, scheme
    assert "baseline_25km" in model
    # [16]: leave-network-out, 25 km-cell-grouped and the nested outer-fold score, with the fused,
    # ERA5 and CCI baselines at the same station-days, and the cost-aware choice with its reason
    for scheme in ("network_out", "cell_grouped", "nested"):
        assert set(model[scheme]) >= {"n_stations", "r_pooled", "ubrmse_pooled", "r_median", "ubrmse_median",
                                      "baseline_25km", "baseline_era5", "baseline_cci"}, scheme
    assert set(model["baselines"]) == {"fused_25km", "era5", "cci"}
    assert len(model["nested"]["choices"]) == model["nested"]["n_folds"]
    sel = model["selection"]
    assert sel["chosen"] == f"{model['default_algorithm']}/{model['target_kind']}" and sel["reason"]
    assert all(c["prediction_cost"] > 0 for c in sel["candidates"].values())
    st = m["stations"]
    assert set(st) >= {"n_stations", "r_median", "ubrmse_median", "r_pooled", "ubrmse_pooled", "bias_median",
                       "networks"}
    assert st["n_stations"] >= 1 and st["networks"]
    for name in ("downscaled", "baseline_25km"):
        assert set(m["truth"][name]) >= {"r", "ubrmse", "bias", "spatial_anomaly_r"}
    assert m["published"]["r"] == 0.89 and m["published"]["ubrmse"] == 0.045
    out = m["outputs"]
    for key in ("fused", "master", "monthly", "truth", "model", "model_card"):
        assert out[key], key
    assert out["geotiff"] and out["hdf5"]
    for f in out["geotiff"] + out["hdf5"]:
        assert Path(f).exists(), f


def test_station_metrics_recomputed_independently(demo_run):
    """The report's pooled station metrics equal a recomputation from the stores with pytesmo."""
    import xarray as xr
    from pytesmo.metrics import ubrmsd
    from scipy.stats import pearsonr

    from sm1km.config import RunConfig
    from sm1km.core.grid import FineGrid

    wd, _ = demo_run
    cfg = RunConfig.from_yaml(wd / "run.yaml")
    m = json.loads((wd / "store" / "report" / "metrics.json").read_text())["stations"]
    st = xr.open_zarr(wd / "store" / "inputs" / "stations.zarr").load()
    master = xr.open_zarr(wd / "store" / "master.zarr")
    b = cfg.coarse_region.bbox
    keep = (st.lat > b.south) & (st.lat < b.north) & (st.lon > b.west) & (st.lon < b.east)
    st = st.isel(station=np.flatnonzero(keep.values))
    g, reg = FineGrid(cfg.grid.factor), cfg.coarse_region
    rows = g.row_of_lat(st.lat.values) - reg.row0 * g.factor
    cols = g.col_of_lon(st.lon.values) - reg.col0 * g.factor
    obs, est = [], []
    for k in range(st.sizes["station"]):
        s = st.sm.isel(station=k).to_series()
        p = master.sm.isel(lat=int(rows[k]), lon=int(cols[k])).to_series().reindex(s.index)
        ok = s.notna() & p.notna()
        obs.append(s[ok].values)
        est.append(p[ok].values)
    x, y = np.concatenate(est).astype("float64"), np.concatenate(obs).astype("float64")
    assert m["n_samples"] == x.size
    assert np.isclose(m["ubrmse_pooled"], ubrmsd(x, y), rtol=1e-6)
    assert np.isclose(m["r_pooled"], pearsonr(x, y)[0], rtol=1e-6)


def test_report_html_references_existing_figures(demo_run):
    wd, _ = demo_run
    rep = wd / "store" / "report"
    html = (rep / "index.html").read_text()
    imgs = re.findall(r"<img src='([^']+)'", html)
    assert {"scatter.png", "timeseries.png", "day_map.png", "station_hist.png", "station_map.png",
            "importance.png"} <= set(imgs)
    for name in imgs:
        assert (rep / name).stat().st_size > 5000, name
    assert "published product" in html and "station_grouped" in html


def test_demo_rerun_skips_finished_work_and_keeps_master(demo_run):
    """A second demo in the same folder resumes: the master store is byte-identical."""
    import os

    from sm1km.storage import store

    wd, _ = demo_run
    before = store.checksum_tree(str(wd / "store" / "master.zarr"))
    r = subprocess.run([sys.executable, "-m", "sm1km.cli", "demo", "--workdir", str(wd), "--preset", "tiny"],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert store.checksum_tree(str(wd / "store" / "master.zarr")) == before
