"""Object-store faults on the wire: the pipeline against S3 (moto server) through a fault-injecting
proxy (tests/faultproxy.py).

* transient faults (500 InternalError, 503 SlowDown, dropped connections before and after the
  backend applied the request, delays ≤ 0.5 s) on a seeded fraction of all requests of
  ingest → fuse → downscale: the run completes with retries and every store is identical to the
  fault-free reference run (local store) — chunk bytes, ledger, ingest index, metadata (only the
  config-derived attributes are normalised, see ``faults_world.normalize_config_attrs``);
* permanent faults: a bucket that does not exist (NoSuchBucket) and access denied on every request
  (403 AccessDenied), at the start of a run and in the middle of ``downscale``: the command stops
  with exit code 2 and a one-paragraph StoreError (no traceback), no consolidated metadata claims
  completeness, the ledger marks only shards that are completely written, and once the fault is
  gone a re-run resumes (skipping exactly the marked shards) to the identical master;
* an object damaged at rest (one fused chunk whose every GET has a flipped bit): botocore's CRC32
  check fails on every retry, downscale stops with exit code 2 and a StoreError saying so, no shard
  that needs the chunk is marked, nothing claims completeness, and the re-run resumes to the
  identical master once the object reads whole (single damaged or truncated reads are retried and
  heal: tests/test_crash_chain_s3.py).
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
import uuid

import numpy as np
import pytest

import faults_world as FW
from faultproxy import TRANSIENT_KINDS, FaultPlan, FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.network]

#: stage -> (fraction of reads, fraction of writes) that get a transient fault (ingest makes ~2800
#: requests, fuse ~170, downscale ~570: its workers reuse the stores they opened): enough that every kind strikes reads and writes of ingest
#: and downscale, few enough that backoff sleeps stay short
FAULT_FRACTIONS = {"ingest": (0.004, 0.03), "fuse": (0.02, 0.1), "downscale": (0.03, 0.2)}
SEED = 20240611


@pytest.fixture(scope="module")
def proxy(moto_server):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    p = FaultProxy(moto_server).start()
    yield p
    p.stop()


def _direct_fs(moto_server):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)


@pytest.fixture(scope="module")
def faulty_run(moto_server, proxy, world, base):
    """ingest → fuse → downscale into s3://<bucket>/run through the proxy with transient faults."""
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    _direct_fs(moto_server).mkdir(bucket)
    run_yaml = FW.write_run_yaml(world, base / "s3-faulty", root=f"s3://{bucket}/run", endpoint_url=proxy.url)
    from sm1km import Pipeline

    pipe = Pipeline.from_yaml(run_yaml)   # stage by stage, as in a notebook, to set each stage's faults
    stats = {}
    try:
        with FW.fixed_timestamps():
            for i, (stage, (reads, writes)) in enumerate(FAULT_FRACTIONS.items()):
                proxy.reset_stats()
                proxy.configure(FaultPlan(fraction=reads, write_fraction=writes, seed=SEED + i, max_delay_s=0.5,
                                          max_consecutive=2))
                pipe.stage(stage)
                stats[stage] = proxy.stats()
                logging.getLogger(__name__).info("faults in %s: %d requests, %s", stage, stats[stage]["requests"],
                                                 stats[stage]["faults"])
    finally:
        proxy.configure(FaultPlan())
    return {"bucket": bucket, "run_yaml": run_yaml, "stats": stats, "root": f"s3://{bucket}/run"}


def _run_cli(args, timeout=180):
    """``sm1km ARGS`` in a subprocess (bounded); returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "sm1km.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=FW.child_env())


def test_transient_faults_are_retried_and_the_result_is_identical(faulty_run, reference, moto_server):
    # the faults really happened: in every stage; in ingest and downscale every kind on reads and on
    # writes (a PUT that the backend applied but whose response was lost included)
    for stage, st in faulty_run["stats"].items():
        assert sum(st["faults"].values()) >= 2, (stage, st["faults"])
    for stage in ("ingest", "downscale"):
        log = faulty_run["stats"][stage]["log"]
        for k in TRANSIENT_KINDS:
            assert any(kind == k and m == "PUT" for kind, m, _ in log), f"{stage}: no {k} on a write"
            assert any(kind == k and m in ("GET", "HEAD") for kind, m, _ in log), f"{stage}: no {k} on a read"
    assert any("/master.zarr/sm" in p and m == "PUT" for _, m, p in faulty_run["stats"]["downscale"]["log"])

    ref_root, ref_tree = reference
    prefixes = ("inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr", "inputs/stations.zarr",
                "fused.zarr", "master.zarr", "_ledger/inputs", "_ledger/fused.zarr", "_ledger/master.zarr")
    so = {"endpoint_url": moto_server}
    got = FW.tree(faulty_run["root"], so, prefixes=prefixes)
    want = {k: v for k, v in ref_tree.items() if k.startswith(prefixes)}
    assert len(got) == len(want) > 100
    FW.assert_same_tree(want, got, FW.normalize_config_attrs, "s3 run with transient faults vs local reference")
    # and decoded, as users read it
    a = FW.decoded_master(f"{faulty_run['root']}/master.zarr", so)
    b = FW.decoded_master(str(ref_root / "master.zarr"))
    for v in a:
        np.testing.assert_array_equal(a[v], b[v])
    # nothing left behind by the ingest's staging area
    fs = _direct_fs(moto_server)
    assert not fs.exists(f"{faulty_run['bucket']}/run/_staging") or not fs.find(f"{faulty_run['bucket']}/run/_staging")


def test_missing_bucket_stops_with_store_error(world, base, moto_server):
    bucket = f"gone-{uuid.uuid4().hex[:10]}"   # never created
    run_yaml = FW.write_run_yaml(world, base / "s3-gone", root=f"s3://{bucket}/run", endpoint_url=moto_server)
    res = _run_cli(["run", "--config", str(run_yaml), "--stages", "ingest,fuse,downscale"])
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "error:" in res.stderr and bucket in res.stderr
    assert "bucket" in res.stderr.lower()
    assert not _direct_fs(moto_server).exists(bucket)   # nothing was created on the way


def test_access_denied_from_the_start_stops_with_store_error(world, base, moto_server, proxy):
    bucket = f"denied-{uuid.uuid4().hex[:10]}"
    fs = _direct_fs(moto_server)
    fs.mkdir(bucket)
    run_yaml = FW.write_run_yaml(world, base / "s3-denied", root=f"s3://{bucket}/run", endpoint_url=proxy.url)
    proxy.configure(FaultPlan(permanent="access_denied"))
    try:
        res = _run_cli(["run", "--config", str(run_yaml), "--stages", "ingest,fuse,downscale"])
    finally:
        proxy.configure(FaultPlan())
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "error:" in res.stderr and "denied" in res.stderr.lower()
    assert fs.find(bucket) == []   # nothing written


def _consolidated(fs, url_path: str) -> bool:
    doc = json.loads(fs.cat_file(f"{url_path}/zarr.json"))
    return bool(doc.get("consolidated_metadata"))


WRITES = ("PUT", "POST", "DELETE")


@pytest.mark.parametrize("kind,trigger,after_range", [
    ("access_denied", WRITES, (22, 40)),      # credentials revoked in the middle of a write
    ("no_such_bucket", None, (250, 450)),     # the bucket vanishes (between any two requests)
], ids=["access-denied", "no-such-bucket"])
def test_permanent_fault_mid_downscale_leaves_no_false_completeness(kind, trigger, after_range, faulty_run,
                                                                     reference, moto_server, proxy):
    """From a seeded point in downscale on (a subprocess, as a job runs) every request fails that way."""
    fs = _direct_fs(moto_server)
    bucket = faulty_run["bucket"]
    master_path = f"{bucket}/run/master.zarr"
    ledger_path = f"{bucket}/run/_ledger/master.zarr"
    for p in (master_path, ledger_path):      # start downscale from scratch on the faulty run's inputs
        if fs.exists(p):
            fs.rm(p, recursive=True)
    after = random.Random(f"{SEED}-{kind}").randint(*after_range)
    proxy.reset_stats()
    proxy.configure(FaultPlan(permanent=kind, permanent_after=after, trigger_methods=trigger))
    try:
        res = _run_cli(["-v", "downscale", "--config", str(faulty_run["run_yaml"])])
    finally:
        proxy.configure(FaultPlan())
    assert proxy.stats()["faults"].get(kind, 0) >= 1
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sm1km downscale: error: s3://"), res.stderr[-2000:]
    assert ("denied" if kind == "access_denied" else "bucket") in last.lower(), last

    fs.invalidate_cache()
    # the fault struck mid-stage: the template exists, some shards are marked, not all
    assert fs.exists(f"{master_path}/zarr.json")
    marked = sorted(k for k in (p.rsplit("/", 1)[1][:-5] for p in fs.find(ledger_path) if p.endswith(".json"))
                    if re.fullmatch(r"(lat|lon|time)-\d+-\d+(_(lat|lon|time)-\d+-\d+)*", k))  # region markers only
    assert 0 < len(marked) < FW.N_MASTER_SHARDS, marked
    # no consolidated metadata and no coverage attributes claim a complete store
    assert not _consolidated(fs, master_path)
    attrs = json.loads(fs.cat_file(f"{master_path}/zarr.json"))["attributes"]
    assert "time_coverage_end" not in attrs and "last_updated" not in attrs
    # every marked shard is completely written: its shard objects equal the reference's
    from sm1km.config import RunConfig
    from sm1km.stages import downscale as D

    cfg = RunConfig.from_yaml(faulty_run["run_yaml"])
    _, ref_tree = reference
    shard_chunk = {s.key: (s.t0 // FW.TIME_BLOCK_DAYS, s.r0 // FW.TILE_CELLS, s.c0 // FW.TILE_CELLS)
                   for s in D.shard_specs(cfg)}
    for key in marked:
        t, y, x = shard_chunk[key]
        for var in ("sm", "sm_uncertainty"):
            obj = f"master.zarr/{var}/c/{t}/{y}/{x}"
            if obj in ref_tree:
                assert fs.cat_file(f"{bucket}/run/{obj}") == ref_tree[obj], f"marked shard {key} is incomplete"
            else:  # an all-fill shard is not stored at all
                assert not fs.exists(f"{bucket}/run/{obj}")

    if kind != "access_denied":
        return  # the resume after the fault is the same for both kinds: checked once
    # the fault is gone: the re-run skips exactly the marked shards and ends identical to the reference
    stats = FW.run_in_process(faulty_run["run_yaml"], stages=("downscale",))["downscale"].stats
    assert stats["shards_skipped"] == len(marked)
    assert stats["shards_written"] == FW.N_MASTER_SHARDS - len(marked)
    got = FW.tree(faulty_run["root"], {"endpoint_url": moto_server}, prefixes=("master.zarr", "_ledger/master.zarr"))
    want = {k: v for k, v in ref_tree.items() if k.startswith(("master.zarr", "_ledger/master.zarr"))}
    FW.assert_same_tree(want, got, FW.normalize_config_attrs, "master after the resumed downscale")


def test_an_object_damaged_at_rest_stops_downscale_with_a_store_error(faulty_run, reference, moto_server, proxy):
    """One chunk of the fused cube reads back with a flipped bit on every GET (damaged at rest, or on
    every path to it): botocore's CRC32 check fails on each of s3fs's retries (a single damaged read
    is retried and heals: tests/test_crash_chain_s3.py), downscale stops with exit code 2 and a
    StoreError that says so (no traceback), no shard that needs the chunk is marked, nothing claims
    completeness; once the object reads whole again, a re-run resumes to the reference master."""
    fs = _direct_fs(moto_server)
    bucket = faulty_run["bucket"]
    master_path, ledger_path = f"{bucket}/run/master.zarr", f"{bucket}/run/_ledger/master.zarr"
    for p in (master_path, ledger_path):
        if fs.exists(p):
            fs.rm(p, recursive=True)
    victim = "fused.zarr/sm/c/1/0"   # time block 1 (days 5..8) of the fused cube
    assert fs.exists(f"{bucket}/run/{victim}")
    proxy.reset_stats()
    proxy.configure(FaultPlan(fraction=1.0, kinds=("corrupt",), methods=("GET",), paths=(f"/{bucket}/run/{victim}",),
                              max_consecutive=10**6, seed=SEED))
    try:
        res = _run_cli(["-v", "downscale", "--config", str(faulty_run["run_yaml"])])
    finally:
        proxy.configure(FaultPlan())
    damaged_reads = proxy.stats()["faults"].get("corrupt", 0)
    assert damaged_reads >= 5, proxy.stats()   # s3fs retried the damaged GET before giving up
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sm1km downscale: error: s3://") and "failed its checksum on every retry" in last, last

    fs.invalidate_cache()
    assert not _consolidated(fs, master_path)
    attrs = json.loads(fs.cat_file(f"{master_path}/zarr.json"))["attributes"]
    assert "time_coverage_end" not in attrs and "last_updated" not in attrs
    marked = {p.rsplit("/", 1)[1][:-5] for p in fs.find(ledger_path) if re.search(r"/(lat|lon|time)-[^/]*\.json$", p)}
    assert not any("time-4-8" in k for k in marked), marked   # no shard of the damaged block
    assert len(marked) < FW.N_MASTER_SHARDS

    stats = FW.run_in_process(faulty_run["run_yaml"], stages=("downscale",))["downscale"].stats
    assert stats["shards_skipped"] == len(marked)
    _, ref_tree = reference
    got = FW.tree(faulty_run["root"], {"endpoint_url": moto_server}, prefixes=("master.zarr", "_ledger/master.zarr"))
    want = {k: v for k, v in ref_tree.items() if k.startswith(("master.zarr", "_ledger/master.zarr"))}
    FW.assert_same_tree(want, got, FW.normalize_config_attrs, "master after the damaged chunk read whole again")
