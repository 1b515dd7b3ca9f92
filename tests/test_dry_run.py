"""``sm1km run/update --dry-run`` (``sm1km.stages.dryrun``): templates in a scratch root, nothing
else written; the plan streamed (memory flat in the number of units); ledgers scanned page by page.

The update contract with a dry run before every update (byte-identical, lock taken) is
``TestUpdateDryRun`` in ``test_stage_contract.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sm1km.cli import main
from sm1km.core.grid import BBox, snap_bbox
from sm1km.runtime.units import UnitGrid, plan_units, scan_ledger
from sm1km.stages.dryrun import RequestCounter, dry_run
from sm1km.storage import store
from sm1km.storage.master import time_blocks
from sm1km.testing import trees
from sm1km.testing.worlds import run_stage, tiny_run

ALL = ("ingest", "fuse", "train", "downscale", "aggregate", "export", "validate", "catalog")


# --------------------------------------------------------------------------------------------
# the plan as arithmetic
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tile,n_time,block,factor", [(4, 100, 32, 30), (3, None, 1, 1), (16, 7671, 128, 1)])
def test_unit_grid_is_plan_units_and_inverts_keys(tile, n_time, block, factor):
    region = snap_bbox(BBox(-10.3, 35.1, 3.7, 44.2))  # 37 x 56 cells: partial last tiles
    grid = UnitGrid.of(region, tile, n_time, block, factor)
    blocks = time_blocks(n_time, block) if n_time is not None else None
    units = list(grid.units())
    assert units == list(plan_units(region, tile, blocks, factor))
    assert len(grid) == len(units)
    assert [grid.ordinal(u.key) for u in units] == list(range(len(units)))
    u = units[-1]
    foreign = ["blocks", "template", u.key + "_x-0-1", u.key.replace("lat-", "lat-1"),
               f"lat-0-{tile * factor + 1}_lon-0-{tile * factor}" + ("_time-0-1" if n_time else "")]
    if n_time:
        foreign.append(units[0].key.replace(f"time-0-{min(block, n_time)}", f"time-0-{block + 1}"))
    assert all(grid.ordinal(k) is None for k in foreign)


# --------------------------------------------------------------------------------------------
# the dry run on the tiny world
# --------------------------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory.getbasetemp())


def _root(tiny, tree, url, endpoint=None):
    cfg = tiny.config(url, endpoint_url=endpoint)
    trees.sync(url, tree, cfg.store.storage_options())
    return cfg


def test_dry_run_of_a_finished_run_finds_every_unit_done_and_writes_only_templates(tiny, tmp_path):
    cfg = _root(tiny, tiny.final, str(tmp_path / "root"))
    so = cfg.store.storage_options()
    before = trees.listing(cfg.store.root, so, exclude=trees.LOCK_STATE).materialize()
    scratch = str(tmp_path / "scratch")
    res = dry_run(cfg, ALL, scratch=scratch, keep_templates=True)
    trees.assert_same(before, trees.listing(cfg.store.root, so, exclude=trees.LOCK_STATE),
                      what="the root before and after a dry run")
    for stage in ("fuse", "downscale", "aggregate", "train", "catalog"):
        assert res[stage]["units_done"] == res[stage]["units_total"] > 0, (stage, res[stage])
    assert res.stats["units_written"] == 0
    # the templates: metadata and coordinates of every store, no data chunk, no marker
    made = trees.listing(scratch)
    names = {t["store"] for t in res.stats["templates"]}
    assert names == {"inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr", "fused.zarr", "master.zarr",
                     "monthly.zarr"}
    assert all(any(k.startswith(n + "/") for k in made) for n in names)
    data = [k for k in made if "/c/" in k and k.split("/c/")[0].rsplit("/", 1)[-1] not in ("lat", "lon", "time",
                                                                                          "time_bnds", "crs")]
    assert not data, f"a dry run wrote data chunks: {data[:10]}"
    assert not any("_ledger" in k for k in made)
    real_master = store.open_dataset(cfg.store.url("master.zarr"), so, decode=False)
    dry_master = store.open_dataset(store.join(scratch, "master.zarr"), None, decode=False)
    assert dict(dry_master.sizes) == dict(real_master.sizes)
    assert dry_master["sm"].encoding["shards"] == real_master["sm"].encoding["shards"]
    # requests were counted: local file operations under the two roots
    assert res.stats["requests"]["total"] > 0 and res.stats["requests"]["open_write"] > 0
    assert res.stats["peak_rss_mb"] > 0


def test_dry_run_then_real_run_equals_real_run_alone(tiny, tmp_path):
    """downscale after a dry run leaves the same bytes as downscale without one (same root)."""
    url = str(tmp_path / "root")
    cfg = _root(tiny, tiny.before["downscale"], url)
    so = cfg.store.storage_options()
    run_stage("downscale", cfg)
    reference = trees.listing(url, so, exclude=trees.LOCK_STATE).materialize()
    trees.sync(url, tiny.before["downscale"], so)
    res = dry_run(cfg, ALL)
    assert res["downscale"]["units_done"] == 0 and res["downscale"]["units_todo"] == res["downscale"]["units_total"]
    assert res["fuse"]["units_done"] == res["fuse"]["units_total"]
    trees.assert_same(tiny.before["downscale"], trees.listing(url, so, exclude=trees.LOCK_STATE),
                      what="the root before and after a dry run")
    run_stage("downscale", cfg)
    trees.assert_same(reference, trees.listing(url, so, exclude=trees.LOCK_STATE),
                      what="downscale after a dry run vs downscale alone")


def test_cli_run_dry_run_prints_the_plan(tiny, tmp_path, capsys):
    cfg = _root(tiny, tiny.before["downscale"], str(tmp_path / "root"))
    yml = tiny.world.write_run_yaml(cfg, tmp_path)
    capsys.readouterr()
    assert main(["run", "--config", str(yml), "--dry-run", "--stages", "downscale,aggregate"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["dry_run"] is True
    assert out["stats"]["units_by_stage"]["downscale"] == out["downscale"]["units_total"] > 0
    assert not (tmp_path / "root" / "_dryrun").exists()  # the scratch root is removed
    assert not (tmp_path / "root" / "master.zarr").exists()


@pytest.mark.network
def test_dry_run_on_s3_counts_requests_and_leaves_the_root(tiny, moto_server, s3_bucket):
    bucket, _ = s3_bucket
    cfg = _root(tiny, tiny.final, f"s3://{bucket}/run", endpoint=moto_server)
    so = cfg.store.storage_options()
    before = trees.listing(cfg.store.root, so, exclude=trees.LOCK_STATE).materialize()
    res = dry_run(cfg, ("fuse", "downscale", "aggregate", "export"))
    trees.assert_same(before, trees.listing(cfg.store.root, so, exclude=trees.LOCK_STATE),
                      what="the S3 root before and after a dry run")
    req = res.stats["requests"]
    assert req.get("s3.list_objects_v2", 0) >= 3  # one page per ledger (fused, master, monthly) at least
    assert req.get("s3.put_object", 0) > 0        # the templates, under the scratch root (removed again)
    assert res["downscale"]["units_done"] == res["downscale"]["units_total"] > 0
    fs, path = store.filesystem(store.join(cfg.store.root, "_dryrun"), so)
    fs.invalidate_cache()
    assert not fs.exists(path)


@pytest.mark.network
def test_ledger_scan_on_s3_is_paged(moto_server, s3_bucket):
    """1200 markers, pages of 500: three LIST requests, every marker seen, none held as a listing."""
    bucket, so = s3_bucket
    region = snap_bbox(BBox(0, 0, 10, 7.5))  # 30 x 40 cells
    grid = UnitGrid.of(region, 1)
    ledger = store.Ledger(f"s3://{bucket}/run", "fused.zarr", so)
    fs, path = store.filesystem(ledger.url, so)
    keys = [u.key for u in grid.units()]
    fs.pipe({f"{path}/{k}.json": b"{}" for k in keys} | {f"{path}/blocks.json": b"{}"})
    with RequestCounter() as req:
        got = list(ledger.iter_keys(page=500))
    assert sorted(got) == sorted([*keys, "blocks"])
    assert req.counts["s3.list_objects_v2"] == 3
    scan = scan_ledger(ledger, grid)
    assert scan.n_done == len(grid) == 1200 and scan.others == ["blocks"]


@pytest.mark.network
def test_ledger_scan_on_s3_by_rows_finds_every_marker(moto_server, s3_bucket):
    """A big plan's ledger listed one tile row at a time, concurrently (threshold lowered): the same
    bitmap and the same other markers (before and after the ``lat-`` keys, superseded keys) as one
    sequential listing; one LIST per row (+ the two outside the rows)."""
    bucket, so = s3_bucket
    region = snap_bbox(BBox(0, 0, 5, 5))  # 20 x 20 cells
    grid = UnitGrid.of(region, 4, 20, 8, 30)  # 5 x 5 tiles x 3 blocks
    ledger = store.Ledger(f"s3://{bucket}/run", "master.zarr", so)
    fs, path = store.filesystem(ledger.url, so)
    units = list(grid.units())
    marked = units[::2]
    others = ["blocks", "days", "template", units[1].key.replace("time-8-16", "time-8-12")]
    fs.pipe({f"{path}/{k}.json": b"{}" for k in [*(u.key for u in marked), *others]})
    sequential = scan_ledger(ledger, grid)
    with RequestCounter() as req:
        rows = scan_ledger(ledger, grid, parallel_from=0, workers=4)
    assert rows.marked.tolist() == sequential.marked.tolist() and rows.n_done == len(marked)
    assert sorted(rows.others) == sorted(sequential.others) == sorted(others)
    assert req.counts["s3.list_objects_v2"] == grid.tile_rows + 2


# --------------------------------------------------------------------------------------------
# memory: flat in the number of units
# --------------------------------------------------------------------------------------------
_MEASURE = textwrap.dedent("""
    import json, sys, tracemalloc
    from sm1km.config import RunConfig
    from sm1km.stages.dryrun import dry_run
    days, root = int(sys.argv[1]), sys.argv[2]
    cfg = RunConfig.from_dict({"region": {"west": 0, "south": 0, "east": 10, "north": 10},
                               "period": {"start": "2000-01-01", "end": str(__import__("datetime").date(2000, 1, 1)
                                          + __import__("datetime").timedelta(days=days - 1))},
                               "grid": {"tile_cells": 1, "time_block_days": 8}, "store": {"root": root}})
    dry_run(cfg, ["aggregate"])  # imports and caches warmed: not what is measured
    tracemalloc.start()
    res = dry_run(cfg, ["downscale"])
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"units": res.stats["units_total"], "peak": peak, "rss_mb": res.stats["peak_rss_mb"]}))
""")


def _peak(days: int, root) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(days), str(root)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_driver_memory_does_not_grow_with_the_number_of_units(tmp_path):
    """Planning 10x the units (1600 tiles x 31 vs 310 time blocks) takes far less than 10x the
    memory: the plan is streamed, the ledger held as one byte per unit."""
    small, big = _peak(248, tmp_path / "a"), _peak(2480, tmp_path / "b")
    assert big["units"] == 10 * small["units"] == 496_000
    assert big["peak"] < 1.5 * small["peak"] + 2 * big["units"], (small, big)
