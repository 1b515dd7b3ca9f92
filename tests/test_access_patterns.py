"""benchmarks/access_patterns.py runs end to end at a tiny size and counts what it should
(no timing asserted): requests, objects and bytes follow from the layouts."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO

pytestmark = pytest.mark.network


def _bench():
    spec = importlib.util.spec_from_file_location("access_patterns", REPO / "benchmarks" / "access_patterns.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def expected_series_requests(layout: dict, days: int) -> int:
    """zarr-python's reads for one pixel's full series: per shard, one GET of the whole shard if
    every inner chunk is needed, else a suffix-range GET of the index + one range GET per chunk;
    unsharded: one GET per chunk."""
    inner, shard = layout["inner_chunk"], layout["shard"]
    if shard is None:
        return -(-days // inner[0])
    n = 0
    for t0 in range(0, days, shard[0]):
        needed = -(-min(shard[0], days - t0) // inner[0])
        per_shard = (shard[0] // inner[0]) * (shard[1] // inner[1]) * (shard[2] // inner[2])
        n += 1 if needed == per_shard else 1 + needed
    return n


def test_benchmark_small_run_counts_requests_and_bytes(tmp_path, capsys):
    bench = _bench()
    out_path = tmp_path / "bench.json"
    assert bench.main(["--small", "--out", str(out_path), "--workdir", str(tmp_path / "w")]) == 0
    out = json.loads(out_path.read_text())
    assert "chosen" in capsys.readouterr().out
    assert not (tmp_path / "w").exists()  # built stores are removed unless --keep
    res, lay = out["results"], out["layouts"]
    assert set(res) == set(bench.LAYOUTS) and set(out["targets"]) == set(bench.LAYOUTS)
    n_blocks = {name: -(-out["params"]["days"] // bench.LAYOUTS[name]["time_block"]) for name in res}
    for name, modes in res.items():
        for mode, pats in modes.items():
            for pat, m in pats.items():
                if pat != "open":
                    assert m["errors"] == 0 and m["bytes"] > 0 and m["values"] > 0, (name, mode, pat)
        series = modes["lazy"]["point_series"]
        assert series["objects"] == n_blocks[name]  # one object per shard (or chunk) in time
        assert series["requests"] == expected_series_requests(lay[name], out["params"]["days"]), name
    # the monthly store answers a month mean with far fewer bytes than the master
    for name in res:
        lazy = res[name]["lazy"]
        assert lazy["month_mean_from_monthly"]["bytes"] < lazy["month_mean_from_master"]["bytes"]
    # a daily map from day-sized inner chunks reads less than from (32-day) chunks
    assert res["daily_inner"]["lazy"]["day_map"]["bytes"] < res["previous"]["lazy"]["day_map"]["bytes"]
    # the chosen layout: a day map reads less than the previous layout, a point series touches fewer objects
    chosen, previous = res["chosen"]["lazy"], res["previous"]["lazy"]
    assert chosen["day_map"]["bytes"] < previous["day_map"]["bytes"] / 2
    assert chosen["point_series"]["objects"] < previous["point_series"]["objects"]
    assert lay["chosen"]["shard"][0] == 128 and lay["chosen"]["inner_chunk"][0] == 2
    # the whole-record section: every reader returns the whole series; coalescing never adds requests
    rec = out["record"]
    assert rec["days"] == 300 and set(rec["readers"]) == set(bench.RECORD_READERS)
    for name, r in rec["readers"].items():
        assert r["point_series"]["values"] == 300 and r["point_series"]["errors"] == 0, name
    n_shards = -(-300 // rec["layout"]["shard"][0])
    assert rec["readers"]["coalesced"]["point_series"]["requests"] <= rec["readers"]["zarr"]["point_series"]["requests"]
    assert rec["readers"]["coalesced"]["point_series"]["objects"] == n_shards
