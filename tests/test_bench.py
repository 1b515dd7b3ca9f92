"""``sm1km bench``: a tiny run through the CLI writes a result that follows the JSON schema.

Never asserts times (the machine is shared); asserts what the benchmark must *compute*: the same
shards measured end to end and raw, memory at 1x and 4x, the model loaded once per worker, the
projection's arithmetic.
"""

from __future__ import annotations

import json

import pytest

from harness import BENCH_SCHEMA, errors, summary_lines
from harness.sections import _model_summary, projection
from harness.timing import figure, rate_figure
from harness.world import get_preset, quarter_config
from sm1km.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    from sm1km.cli import main

    wd = tmp_path_factory.mktemp("bench")
    out = wd / "bench.json"
    rc = main(["-q", "bench", "--preset", "tiny", "--reps", "1", "--workdir", str(wd / "work"), "--out", str(out)])
    return rc, json.loads(out.read_text()), wd


@pytest.mark.slow
def test_tiny_bench_writes_schema_valid_json(tiny_result):
    import jsonschema

    rc, res, _ = tiny_result
    assert errors(res) == {}
    assert rc == 0
    jsonschema.validate(res, BENCH_SCHEMA)
    assert res["preset"] == "tiny" and res["reps"] == 1
    assert res["machine"]["cores"] >= 1 and res["packages"]["xgboost"]
    assert res["world"]["region_4x"]["pixel_days"] == 4 * res["world"]["region_1x"]["pixel_days"]
    assert summary_lines(res)[0].startswith("sm1km bench (tiny")


@pytest.mark.slow
def test_tiny_bench_measures_the_same_work(tiny_result):
    _, res, _ = tiny_result
    r = res["results"]
    ds = r["downscale"]
    # every shard of the 1x region, end to end and raw on the same matrices
    assert ds["pixel_days"] == res["world"]["region_1x"]["pixel_days"]
    assert 0 < ds["land_pixel_days"] <= ds["pixel_days"]
    e2e = ds["end_to_end"]["pixel_days_per_s_per_core"]
    raw_all = ds["raw_predict"]["pixel_days_per_s_per_core"]
    raw_land = ds["raw_predict"]["land_rows_pixel_days_per_s_per_core"]
    assert ds["ratio_to_raw_predict"] == pytest.approx(e2e["reps"][0] / raw_land["reps"][0], rel=2e-3)
    assert ds["ratio_to_raw_predict_all_rows"] == pytest.approx(e2e["reps"][0] / raw_all["reps"][0], rel=2e-3)
    assert ds["raw_predict"]["boosters"] == ["model", "uncertainty"]
    # memory at 1x and 4x, each from its own process
    mem = r["memory"]
    for stage in ("ingest", "downscale"):
        m = mem[stage]
        assert m["1x_peak_rss_mb"]["median"] > 50 and m["4x_peak_rss_mb"]["median"] > 50
        assert m["ratio_4x_to_1x"] == pytest.approx(m["4x_peak_rss_mb"]["median"] / m["1x_peak_rss_mb"]["median"],
                                                    rel=1e-2)
    assert mem["ingest"]["task_memory_bytes"] == 16 << 20  # the memory runs fix the ingest's task budget
    assert "1x_peak_rss_mb" in mem["ingest"]["default_budget"]
    assert r["ingest"]["4x"]["written_bytes"] > r["ingest"]["1x"]["written_bytes"] > 0
    # the model is parsed once per worker process, however many tasks it ran
    for run in r["scaling"]["runs"].values():
        assert run["model_loads_per_worker"] == [1] * run["workers"]
    assert r["scaling"]["runs"]["w1t1"]["parallel_efficiency"] == 1.0
    assert r["scaling"]["scheduler"]["tasks"] == 1000
    assert r["fusion"]["core"]["block"][0] == 365
    # exports wrote files in every format of the preset
    assert set(r["export"]) == {"geotiff", "hdf5"} and all(v["bytes"] > 0 for v in r["export"].values())
    # the model cost is reported as trees x depth
    mc = r["model_cost"]["model"]
    assert mc["trees_x_max_depth"] == mc["trees"] * mc["max_depth"] > 0
    # full-size units (quick sizes here) next to their floors, timed in the same run
    u = r["units"]
    assert u["size"] == "quick"
    for k in ("ingest_cci_day", "ingest_era5_day"):
        x = u[k]
        assert x["written_bytes"] > 0 and x["decoded_bytes"] > 0 and x["stats"]["units_written"] == 1
        assert x["ratio_to_decode"] == pytest.approx(x["decode_wall_s"]["median"] / x["stage_wall_s"]["median"],
                                                     rel=2e-3)
        assert x["ratio_to_naive"] == pytest.approx(x["naive_wall_s"]["median"] / x["stage_wall_s"]["median"],
                                                    rel=2e-3)
    cog = u["export_cog_strip"]
    assert cog["bytes"] > 0 and cog["floor_bytes"] > 0
    assert cog["ratio_to_floor"] == pytest.approx(cog["floor_wall_s"]["median"] / cog["stage_wall_s"]["median"],
                                                  rel=2e-3)
    assert u["modis_tile"]["grid_px"][0] > 0 and u["export_modis_days"]["files"] == 1
    # the whole run: every priced stage, shares adding up to 1
    wr = r["whole_run"]
    stages = {row["stage"] for row in wr["rows"]}
    assert {"ingest CCI", "ingest ERA5", "fuse", "train", "downscale", "aggregate (monthly)"} <= stages
    assert sum(row["share"] for row in wr["rows"]) == pytest.approx(1.0, abs=1e-3)
    assert wr["core_hours_total"] == pytest.approx(sum(row["core_hours"] or 0 for row in wr["rows"]), abs=0.1)
    assert 0 < r["fusion"]["ratio_to_formula"]
    assert r["gpu"]["available"] in (True, False)
    if not r["gpu"]["available"]:
        assert r["gpu"]["reason"]


def test_projection_arithmetic():
    """The global projection from given rates: land pixel-days / rate = core-hours; shards of the grid."""
    from sm1km.config import RunConfig

    cfg = RunConfig.model_validate({"region": {"west": 10, "south": 44, "east": 12, "north": 46},
                                    "period": {"start": "2020-01-01", "end": "2020-01-31"},
                                    "store": {"root": "/nonexistent"}})
    ds = {"land_fraction": 0.5,
          "end_to_end": {"land_pixel_days_per_s_per_core": figure([1e6], "x"),
                         "cpu_land_pixel_days_per_s_per_core": figure([2e6], "x")}}
    mb = {"per_land_pixel_day": {"sm": 1.0, "sm_uncertainty": 0.5}, "ratio": 3.0}
    sched = {"client_map_ms_per_task": figure([2.0], "ms"), "run_bounded_ms_per_task": figure([5.0], "ms")}
    p = projection(ds, None, mb, cfg, sched, workers=(1000,))
    land = 7671 * 21600 * 43200 * 0.30
    assert p["land_pixel_days"] == pytest.approx(land)
    assert p["core_hours"] == round(land / 1e6 / 3600)
    assert p["core_hours_from_cpu_time"] == round(land / 2e6 / 3600)
    assert p["wall_hours_on_workers"]["1000"] == pytest.approx(land / 1e6 / 3600 / 1000, rel=1e-3)
    assert cfg.grid.time_block_days == 128 and cfg.grid.tile_cells == 4
    assert p["tasks"]["total_shards"] == 180 * 360 * 60  # 1 deg tiles x 128-day blocks (7671 days -> 60)
    assert p["bytes"]["stored_total"] == pytest.approx(1.5 * land, rel=1e-6)
    task_cpu = 128 * 120 * 120 * 0.5 / 2e6
    assert p["scheduler"]["overhead_fraction_of_task"] == pytest.approx(0.002 / task_cpu, rel=1e-3)
    assert p["scheduler"]["max_workers_before_scheduler_bound"] == int(task_cpu / 0.002)
    assert p["bytes"]["uncompressed_int16_land_per_variable"] == round(2 * land)


def test_figures_are_medians():
    f = figure([3.0, 1.0, 2.0], "s")
    assert f["median"] == 2.0 and f["n"] == 3 and f["reps"] == [3.0, 1.0, 2.0]
    r = rate_figure(100.0, [1.0, 2.0, 4.0], "x/s", per=2)
    assert r["reps"] == [50.0, 25.0, 12.5] and r["median"] == 25.0


def test_model_summary_counts_trees_and_depth():
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    b = xgb.train({"max_depth": 3, "nthread": 1, "seed": 0}, xgb.DMatrix(X, label=X[:, 0] * 2 + X[:, 1] ** 2),
                  num_boost_round=7)
    s = _model_summary(b)
    assert s["trees"] == 7 and s["max_depth"] == 3 and s["trees_x_max_depth"] == 21
    assert 7 < s["leaves"] <= 7 * 8


def test_quarter_region_and_presets(tmp_path):
    from sm1km.config import RunConfig

    cfg = RunConfig.model_validate({"region": {"west": 10, "south": 44, "east": 14, "north": 48},
                                    "period": {"start": "2020-01-01", "end": "2020-01-31"},
                                    "store": {"root": str(tmp_path / "a")}})
    q = quarter_config(cfg, str(tmp_path / "b"))
    assert (q.coarse_region.n_rows, q.coarse_region.n_cols) == (8, 8)
    assert q.coarse_region.bbox.north == 48 and q.coarse_region.bbox.west == 10
    assert q.model_path == cfg.model_path and q.store.root.endswith("b")
    odd = cfg.model_copy(update={"region": cfg.region.model_copy(update={"east": 10.75})})
    with pytest.raises(ConfigError):
        quarter_config(odd, str(tmp_path / "c"))
    with pytest.raises(ConfigError):
        get_preset("huge")


def test_peak_rss_of_a_child_is_its_own():
    """ru_maxrss of a child on Linux starts at the parent's RSS (kept across fork+exec); the
    benchmark's peak_rss_bytes must not, or every worker would report the benchmark's own size."""
    import subprocess
    import sys

    import numpy as np

    from harness.timing import peak_rss_bytes

    big = np.ones(300 * 2**20 // 8)  # 300 MiB held by this process while the child starts
    code = "from harness.timing import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert peak_rss_bytes() > big.nbytes
    assert child < 200 * 2**20


def test_performance_doc_matches_the_committed_bench_json():
    """docs/performance.md's generated block is what benchmarks/perf_doc.py makes of the committed
    JSON (no hand-copied numbers): regenerate with ``python benchmarks/perf_doc.py``."""
    import perf_doc

    res = json.loads(perf_doc.RESULT.read_text())
    doc = perf_doc.DOC.read_text()
    assert perf_doc.rewrite(doc, perf_doc.render(res)) == doc
    if "whole_run" in res["results"] and "rows" in res["results"]["whole_run"]:
        for row in res["results"]["whole_run"]["rows"]:
            assert row["stage"] in doc


def test_perf_doc_block_is_rewritten_between_markers():
    import perf_doc

    text = f"a\n{perf_doc.BEGIN}\nold\n{perf_doc.END}\nb\n"
    assert perf_doc.rewrite(text, "new\n") == f"a\n{perf_doc.BEGIN}\nnew\n{perf_doc.END}\nb\n"
    with pytest.raises(SystemExit):
        perf_doc.rewrite("no markers", "x")
