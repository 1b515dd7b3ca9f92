"""The tiny world shared by the fault, crash, worker-loss and topology tests, and store comparisons.

One synthetic world per test session (tiny preset: 1°×1°, factor 10, 12 days, 8 stations; shards
of 2×2 cells × 4 days → 12 master shards) with a model trained once on it. Every run of these
tests uses that model through ``model.path`` and runs ``ingest,fuse,downscale,aggregate``
(:data:`RUN_STAGES`): training is a separate, non-resumable stage whose cost (tens of seconds)
would dominate, and the store contract under test (template → region writes + ledger →
consolidated metadata last) is the same in every resumable stage.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sm1km.testing import trees
from sm1km.testing.worlds import (
    SOURCE_DATE_EPOCH,
    TINY_DAYS,
    TINY_SEED,
    TINY_TILE_CELLS,
    TINY_TIME_BLOCK_DAYS,
    child_env,
    fixed_timestamps,
    tiny_world,
)

__all__ = ["SOURCE_DATE_EPOCH", "child_env", "fixed_timestamps"]  # re-exported for the tests that use them

RUN_STAGES = ("ingest", "fuse", "downscale", "aggregate")
#: the stores a run writes (relative to store.root), compared between runs
OUTPUT_STORES = ("inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr", "inputs/stations.zarr",
                 "fused.zarr", "master.zarr", "monthly.zarr")
N_DAYS, TILE_CELLS, TIME_BLOCK_DAYS = TINY_DAYS, TINY_TILE_CELLS, TINY_TIME_BLOCK_DAYS
N_MASTER_SHARDS = 4 * 3  # (4×4 cells / 2×2) tiles × ceil(12 / 4) time blocks
WORLD_SEED = TINY_SEED


@dataclass(frozen=True)
class World:
    root: Path            # the world folder (inputs/, store/ with truth and the trained model)
    run_yaml: Path        # the world's own run.yaml (as written by synth)
    model_path: Path      # the model trained once on this world


def build_world(base: Path) -> World:
    """The tiny world (``sm1km.testing.worlds.tiny_world`` in ``base``'s parent folder, shared with
    the other users of that folder) with inputs ingested, fused and the model trained once in its
    own store (cached: reused if present)."""
    from sm1km.config import RunConfig

    base = Path(base)
    done = base / "world-ready.json"
    if done.exists():
        info = json.loads(done.read_text())
        return World(Path(info["root"]), Path(info["run_yaml"]), Path(info["model_path"]))
    tiny = tiny_world(base.parent, days=N_DAYS, tile_cells=TILE_CELLS, time_block_days=TIME_BLOCK_DAYS,
                      seed=WORLD_SEED)
    cfg = RunConfig.from_yaml(tiny.run_yaml)
    cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"kind": "synchronous"})})
    from sm1km.stages.fuse import fuse
    from sm1km.stages.ingest import ingest
    from sm1km.stages.train import train

    with fixed_timestamps():
        ingest(cfg)
        fuse(cfg)
        urls = train(cfg, n_threads=1, rf_trees=20, gbt_max_rounds=60, algorithms=("gbt",), target="sm")
    world = World(Path(tiny.folder), Path(tiny.run_yaml), Path(urls["model"]))
    base.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"root": str(world.root), "run_yaml": str(world.run_yaml),
                                "model_path": str(world.model_path)}))
    return world


def write_run_yaml(world: World, dest: Path, *, root: str, endpoint_url: str | None = None,
                   cluster: Mapping[str, Any] | None = None) -> Path:
    """A run.yaml for ``world`` with its stores under ``root`` (a folder or ``s3://bucket/prefix``).

    Inputs stay local files of the world (workers run on this machine); the model is the world's.
    """
    from sm1km.config import RunConfig

    data = RunConfig.from_yaml(world.run_yaml).model_dump(mode="json")
    data["store"] = {"root": root, "endpoint_url": endpoint_url, "anon": False,
                     "region_name": None, "client_kwargs": {}}
    data["model"]["path"] = str(world.model_path)
    data["cluster"] = {"kind": "synchronous", **dict(cluster or {})}
    data["name"] = "faults-test"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_in_process(run_yaml: Path, stages=RUN_STAGES) -> dict:
    """The same as ``sm1km run --config run.yaml --stages ...`` in this process (synchronous dask)."""
    from sm1km import Pipeline

    with fixed_timestamps():
        return Pipeline.from_yaml(run_yaml).run(stages=stages)


# --------------------------------------------------------------------------------------------
# comparing stores
# --------------------------------------------------------------------------------------------
def tree(url: str, storage_options: Mapping[str, Any] | None = None, *,
         prefixes: tuple[str, ...] = OUTPUT_STORES + ("_ledger",)) -> dict[str, bytes]:
    """Every object under ``url/<prefix>`` for the given prefixes: relative key -> bytes."""
    return trees.subtree(trees.snapshot(url, storage_options), *prefixes)


def diff_trees(a: Mapping[str, bytes], b: Mapping[str, bytes],
               normalize: Callable[[str, bytes], bytes] | None = None) -> list[str]:
    """Human-readable differences between two object trees (empty list = identical)."""
    return trees.diff(a, b, normalize)


def assert_same_tree(a, b, normalize=None, what="stores") -> None:
    trees.assert_same(a, b, what=what, normalize=normalize)


def decoded_master(url: str, storage_options=None) -> dict[str, np.ndarray]:
    """Decoded (float) arrays of master.zarr, through xarray, as a user reads them."""
    from sm1km.storage import store

    ds = store.open_dataset(url, storage_options)
    return {v: np.asarray(ds[v].values) for v in ("sm", "sm_uncertainty")}


def n_objects(root: Path) -> int:
    """Objects under a local store root, not counting scratch (_staging) and the run lock (_locks)."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in ("_staging", "_locks")]
        n += sum(1 for f in filenames if not f.endswith((".tmp", ".partial")) and not f.startswith("."))
    return n


def remove_outputs(root: Path) -> None:
    """Remove everything a run wrote under a local store.root (the stores, ledger, staging, report)."""
    for name in ("inputs", "fused.zarr", "master.zarr", "monthly.zarr", "_ledger", "_staging", "report"):
        p = Path(root) / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def reference_root(base: Path, world: World) -> Path:
    """store.root of the reference run: local store, one process (cluster.kind synchronous). Cached."""
    base = Path(base)
    root = base / "reference" / "store"
    ready = base / "reference-ready"
    if not ready.exists():
        remove_outputs(root)
        run_in_process(write_run_yaml(world, base / "reference", root=str(root)))
        ready.write_text("ok")
    return root


#: zarr.json attributes that legitimately differ between two runs of the same world whose configs
#: differ only in where the stores live and how dask runs (store.root, store.endpoint_url,
#: cluster.*): the config itself (``sm1km_config``) and the sha256 of *upstream stores' metadata*
#: in ``input_files`` (that metadata holds the upstream store's ``sm1km_config``).
CONFIG_KEYS_THAT_MAY_DIFFER = ("store", "cluster")


def normalize_config_attrs(key: str, data: bytes) -> bytes:
    """For comparisons across store locations / cluster kinds: in every ``zarr.json``, drop the
    ``store`` and ``cluster`` sections of ``sm1km_config`` and the sha256 of upstream ``zarr.json``
    metadata in ``input_files`` (also inside consolidated metadata). Everything else — every other
    config key, every other attribute, every chunk/shard, ledger marker and ingest index — must
    stay byte-identical."""
    if not key.endswith("zarr.json"):
        return data
    doc = json.loads(data)

    def fix_attrs(attrs: dict) -> None:
        if "sm1km_config" in attrs:
            cfg = json.loads(attrs["sm1km_config"])
            for k in CONFIG_KEYS_THAT_MAY_DIFFER:
                cfg.pop(k, None)
            attrs["sm1km_config"] = json.dumps(cfg, sort_keys=True)
        if "input_files" in attrs:
            files = json.loads(attrs["input_files"])
            for f in files:
                if "zarr.json" in str(f.get("sha256_of", "")):
                    f.pop("sha256", None)
            attrs["input_files"] = json.dumps(files, sort_keys=True)

    fix_attrs(doc.get("attributes") or {})
    for meta in ((doc.get("consolidated_metadata") or {}).get("metadata") or {}).values():
        fix_attrs(meta.get("attributes") or {})
    return json.dumps(doc, sort_keys=True).encode()
