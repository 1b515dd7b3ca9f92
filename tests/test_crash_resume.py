"""Crash and resume: ``sm1km`` killed with SIGKILL at seeded random points, then run again, ends with
stores byte-identical to an uninterrupted run, and the re-run does not redo finished work.

The crashed runs use **the same run.yaml and store.root** as the uninterrupted reference run
(the reference is moved aside meanwhile), so nothing is normalised: every object of every store
(chunks, shards, ``zarr.json`` with its attributes and consolidated metadata, ledger markers and
ingest indexes) must be identical byte for byte. Not compared: ``_staging/`` (scratch of a killed
ingest) and ``_locks/`` (the run lock), which are not stores.

The kill point is a seeded number of objects that must exist under the store root before the
SIGKILL (a point in the store's progress rather than in wall time, so it does not depend on the
machine's speed); the downscale test kills after a seeded number of finished shards (ledger markers).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

import faults_world as FW
import proc_helpers as P

pytestmark = pytest.mark.slow

SEED = 20240612
RUN_TIMEOUT_S = 300


@contextlib.contextmanager
def reference_root_free(root: Path):
    """Move the reference stores aside so a crashed run can use the very same store.root; restore after."""
    aside = root.with_name(root.name + ".aside")
    os.rename(root, aside)
    try:
        yield aside
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.rename(aside, root)


def run_and_kill_at(name: str, args: list[str], log_dir: Path, progress, kill_at: int) -> tuple[int, int]:
    """Start ``sm1km ARGS``; SIGKILL its process group once ``progress() >= kill_at``.

    Returns (exit code, progress at the kill). AssertionError if the run finished first.
    """
    proc = P.sm1km(name, args, log_dir)
    try:
        P.poll_until(lambda: progress() >= kill_at, RUN_TIMEOUT_S, 0.005, alive=proc,
                     what=f"progress {kill_at} (the kill point)")
        proc.kill()
        rc = proc.wait(30)
        return rc, progress()
    finally:
        proc.kill()


def stage_log(text: str) -> dict[str, tuple[int, int]]:
    """(total, skipped) per resumable stage, from the stages' own log lines."""
    out = {}
    m = re.search(r"fuse: (\d+) units \(.*?\), (\d+) to do", text)
    if m:
        out["fuse"] = (int(m[1]), int(m[1]) - int(m[2]))
    m = re.search(r"downscale: (\d+) shards, (\d+) already done \(skipped\)", text)
    if m:
        out["downscale"] = (int(m[1]), int(m[2]))
    m = re.search(r"aggregate: (\d+) monthly chunks, (\d+) already done", text)
    if m:
        out["aggregate"] = (int(m[1]), int(m[2]))
    return out


def markers(root: Path, store_name: str) -> set[str]:
    d = root / "_ledger" / store_name
    # region markers only (the folder also holds storage.deps' blocks.json / days.json)
    return {f[:-5] for f in os.listdir(d) if f.endswith(".json") and f.startswith("lat-")} if d.is_dir() else set()


def finished_ingest_stores(root: Path) -> set[str]:
    """Input stores whose ingest completed (index written and consolidated metadata in zarr.json)."""
    done = set()
    for name in ("cci.zarr", "era5.zarr", "predictors.zarr", "stations.zarr"):
        meta, index = root / "inputs" / name / "zarr.json", root / "_ledger" / "inputs" / name / "ingest-index.json"
        if meta.exists() and index.exists() and json.loads(meta.read_text()).get("consolidated_metadata"):
            done.add(name)
    return done


def test_run_killed_twice_then_resumed_is_byte_identical(base, world, reference, tmp_path):
    ref_root, ref_tree = reference
    run_yaml = ref_root.parent / "run.yaml"     # the reference's own config: same root, same attrs
    args = ["-v", "run", "--config", str(run_yaml), "--stages", ",".join(FW.RUN_STAGES)]
    total = FW.n_objects(ref_root)
    n_ingest = sum(1 for k in ref_tree if k.startswith(("inputs/", "_ledger/inputs/")))
    rng = random.Random(SEED)
    with reference_root_free(ref_root):
        # crash 1 at a seeded point of the ingest, crash 2 at a seeded point of fuse/downscale/aggregate;
        # each run resumes what the one before left
        first = rng.randint(1, n_ingest - 1)
        rc, at = run_and_kill_at("run-1", args, tmp_path, lambda: FW.n_objects(ref_root), first)
        assert rc == -9
        second = rng.randint(max(at, n_ingest) + 1, total - 25)   # a margin: kill before the end
        rc, at2 = run_and_kill_at("run-2", args, tmp_path, lambda: FW.n_objects(ref_root), second)
        assert rc == -9 and at2 < total

        before = {s: markers(ref_root, s) for s in ("fused.zarr", "master.zarr", "monthly.zarr")}
        ingested = finished_ingest_stores(ref_root)
        final = P.sm1km("run-3", args, tmp_path)
        assert final.wait(RUN_TIMEOUT_S) == 0, final.tail()
        log = final.tail(10**6)
        got = FW.tree(str(ref_root))
    FW.assert_same_tree(ref_tree, got, what=f"stores after kills at {first} and {second} of {total} objects")

    # finished work was not redone: each stage skipped exactly what its ledger held before the re-run
    counts = stage_log(log)
    for stage, store_name in (("fuse", "fused.zarr"), ("downscale", "master.zarr"), ("aggregate", "monthly.zarr")):
        assert stage in counts, f"no log line of {stage}:\n{log[-3000:]}"
        assert counts[stage][1] == len(before[store_name]), (stage, counts[stage], len(before[store_name]))
    for name in ingested:   # completed input stores are left as they are
        assert re.search(rf"inputs/{re.escape(name)}: up to date", log), f"{name} re-ingested:\n{log[-3000:]}"


