"""The tiny worlds the tests run on, built on :mod:`sm1km.synth` (inputs in their real file formats).

* :func:`tiny_world` — the synth ``tiny`` preset (1°×1° = 4×4 cells, factor 10 → 40×40 px, 8
  stations), by default 12 days with shards of 2×2 cells × 4 days (12 master shards). Written once
  per folder (a ready marker makes a second call with the same parameters free), with a
  :class:`TinyWorld` whose :meth:`TinyWorld.config` is a run config ready for every stage on any
  store root (a folder or ``s3://bucket/prefix``): absolute input paths, ``cluster.kind:
  synchronous``, the truth under the root.
* :func:`tiny_run` — every stage run once on a tiny world (with :data:`TINY_OPTIONS`, fixed
  timestamps), cached per folder for the session: the object tree of the root **before** and
  **after** each stage, so a test starts any stage from a finished upstream in milliseconds
  (``sm1km.testing.trees.put``) instead of re-running the chain.
* :func:`fixed_timestamps` / :func:`child_env` — ``SOURCE_DATE_EPOCH`` (the reproducible-builds
  convention that ``store.now_iso`` honours), so that two runs write the same bytes.

The stages and the options they run with on the tiny world live in :data:`STAGES` and
:data:`TINY_OPTIONS` (training is cut to one algorithm, few trees and rounds, one thread: the
contract is about the stores, not the model's skill).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sm1km.config import RunConfig
from sm1km.storage import store
from sm1km.testing import trees

#: fixed timestamps in every store written by the tests (``store.now_iso`` honours it)
SOURCE_DATE_EPOCH = "1700000000"
#: the tiny world's defaults: 12 days, shards of 2×2 cells × 4 days (4 tiles × 3 time blocks)
TINY_DAYS, TINY_TILE_CELLS, TINY_TIME_BLOCK_DAYS, TINY_SEED = 12, 2, 4, 1


def _stages() -> dict[str, Callable[..., Any]]:
    from sm1km.stages.aggregate import aggregate
    from sm1km.stages.catalog import catalog
    from sm1km.stages.downscale import downscale
    from sm1km.stages.export import export
    from sm1km.stages.fuse import fuse
    from sm1km.stages.ingest import ingest
    from sm1km.stages.train import train
    from sm1km.validation.validate import validate

    return {"ingest": ingest, "fuse": fuse, "train": train, "downscale": downscale, "aggregate": aggregate,
            "export": export, "validate": validate, "catalog": catalog}


#: every stage that writes, in pipeline order
STAGE_ORDER = ("ingest", "fuse", "train", "downscale", "aggregate", "export", "validate", "catalog")
#: options each stage runs with on the tiny world (train: fast and single-threaded, deterministic)
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "train": {"n_threads": 1, "rf_trees": 10, "gbt_max_rounds": 30, "algorithms": ("gbt",), "target": "sm"},
    "export": {"fmt": "geotiff"},
    "validate": {"run_withheld": False},
}


def stage_function(name: str) -> Callable[..., Any]:
    """The real callable of a stage (``ingest`` … ``catalog``)."""
    return _stages()[name]


def run_stage(name: str, cfg: RunConfig, **options: Any) -> Any:
    """Run stage ``name`` on ``cfg`` with :data:`TINY_OPTIONS` (``options`` override), timestamps fixed."""
    with fixed_timestamps():
        return stage_function(name)(cfg, **{**TINY_OPTIONS.get(name, {}), **options})


@contextlib.contextmanager
def fixed_timestamps(epoch: str = SOURCE_DATE_EPOCH) -> Iterator[None]:
    """``SOURCE_DATE_EPOCH`` set for the block (this process), restored afterwards."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = epoch
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def child_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: dummy moto credentials, fixed timestamps, quiet dask, 1 thread."""
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "testing"),
                "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "testing"),
                "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
                "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
                "DASK_LOGGING__DISTRIBUTED": "warning",
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# the tiny synthetic world
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyWorld:
    """A synthetic world on disk: ``folder/inputs/`` (raw files), ``folder/store/`` (its truth
    stores), ``folder/run.yaml`` (as synth wrote it); :attr:`cfg` is the config on its own store."""

    folder: Path
    run_yaml: Path
    params: dict[str, Any] = field(default_factory=dict)
    root: str | None = None  # the store root of :attr:`cfg` (None: the world's own ``store/``)

    @property
    def store_root(self) -> str:
        return self.root or str(self.folder / "store")

    def with_root(self, root: str | None) -> "TinyWorld":
        return dataclasses.replace(self, root=root)

    @property
    def cfg(self) -> RunConfig:
        return self.config()

    def config(self, root: str | None = None, *, endpoint_url: str | None = None,
               cluster: Mapping[str, Any] | None = None, name: str = "sm1km-tiny",
               **sections: Mapping[str, Any]) -> RunConfig:
        """A run config of this world with its stores under ``root`` (default: the world's store).

        Inputs stay the world's local files (absolute paths); ``inputs.truth`` is ``<root>/truth.zarr``
        (the truth stores travel with the root's tree); ``cluster`` defaults to synchronous;
        ``sections`` update top-level sections (``fusion={"space_chunk": 2}``).
        """
        data = RunConfig.from_yaml(self.run_yaml).model_dump(mode="json")
        root = root or self.store_root
        data["name"] = name
        data["store"] = {"root": root, "endpoint_url": endpoint_url, "anon": False, "region_name": None,
                         "client_kwargs": {}}
        data["inputs"]["truth"] = store.join(root, "truth.zarr")
        data["model"]["path"] = None
        data["cluster"] = {"kind": "synchronous", **dict(cluster or {})}
        data["fusion"]["space_chunk"] = 2  # 2×2 fusion chunks: more than one unit of work
        for k, v in sections.items():
            data[k] = {**(data.get(k) or {}), **dict(v)} if isinstance(data.get(k), dict) else v
        return RunConfig.from_dict(data)

    def write_run_yaml(self, cfg: RunConfig, dest: str | os.PathLike) -> Path:
        """``cfg`` as ``dest/run.yaml`` (what a CLI run or a subprocess reads)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / "run.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return path


def tiny_world(tmp: str | os.PathLike, *, root: str | None = None, days: int = TINY_DAYS, stations: int = 8,
               bbox: tuple[float, float, float, float] | None = None, seed: int = TINY_SEED,
               tile_cells: int = TINY_TILE_CELLS, time_block_days: int = TINY_TIME_BLOCK_DAYS) -> TinyWorld:
    """The synth ``tiny`` world with these parameters, in ``tmp/tiny-<hash>/`` (written once);
    ``root``: where :attr:`TinyWorld.cfg` puts the stores (default: the world's ``store/``)."""
    from sm1km.synth import preset, write_world

    overrides: dict[str, Any] = {"n_days": days, "n_stations": stations, "tile_cells": tile_cells,
                                 "time_block_days": time_block_days}
    if bbox is not None:
        overrides["bbox"] = tuple(bbox)
    params = {**overrides, "seed": seed}
    tag = hashlib.sha256(json.dumps(params, sort_keys=True, default=list).encode()).hexdigest()[:10]
    folder = Path(tmp) / f"tiny-{tag}"
    ready = folder / "tiny-world-ready.json"
    if not ready.exists():
        paths = write_world(folder, preset("tiny", **overrides), seed=seed, overwrite=True)
        ready.write_text(json.dumps({"run_yaml": str(paths.run_yaml), "params": params}, default=list))
    info = json.loads(ready.read_text())
    return TinyWorld(folder, Path(info["run_yaml"]), params, root)


# --------------------------------------------------------------------------------------------
# a finished run of every stage
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyRun:
    """Every stage run once on ``world`` at ``world.store_root``: the object tree of the root
    before and after each stage (``before["fuse"]`` = what fuse starts from)."""

    world: TinyWorld
    cfg: RunConfig
    before: dict[str, trees.Tree]
    after: dict[str, trees.Tree]

    @property
    def final(self) -> trees.Tree:
        return self.after[STAGE_ORDER[-1]]


@functools.lru_cache(maxsize=None)
def _tiny_run(folder: str) -> TinyRun:
    world = tiny_world(folder)
    cfg = world.cfg
    root = world.store_root
    truth = trees.snapshot(root)  # what synth wrote: the truth stores
    trees.put(root, truth)         # a previous session's outputs are not kept
    before, after = {}, {}
    for name in STAGE_ORDER:
        before[name] = trees.snapshot(root)
        run_stage(name, cfg)
        after[name] = trees.snapshot(root)
    return TinyRun(world, cfg, before, after)


def tiny_run(tmp: str | os.PathLike) -> TinyRun:
    """Every stage run once on the default :func:`tiny_world` in ``tmp`` (cached per process)."""
    return _tiny_run(str(Path(tmp)))


__all__ = ["SOURCE_DATE_EPOCH", "STAGE_ORDER", "TINY_OPTIONS", "TinyWorld", "TinyRun", "tiny_world", "tiny_run",
           "stage_function", "run_stage", "fixed_timestamps", "child_env"]
