"""The whole pipeline as one resumable object — the Python API for notebooks and batch jobs.

>>> from sm1km import Pipeline
>>> p = Pipeline.from_yaml("run.yaml")
>>> outputs = p.run(client)            # every stage in order; finished work is skipped
>>> p.fuse(client)                     # or one stage at a time

``sm1km run --config run.yaml`` is the same from the command line (the Kubernetes DaskJob runner
calls it with ``DASK_SCHEDULER_ADDRESS`` set and ``cluster.kind: address``); ``sm1km demo`` is
:func:`demo`: the synthetic world, then every stage on it.

Why a tier of its own, above ``validation``: the pipeline runs ``validate``, which itself builds on
the stages (the withheld experiment of ``fuse``, the truth metrics of ``downscale``), so the table
of stage callables below can only live above both. :data:`STAGES` holds the functions themselves:
a reader (or an IDE) follows ``p.fuse`` straight into :func:`sm1km.stages.fuse.fuse`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sm1km.config import RunConfig
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.stages.aggregate import aggregate
from sm1km.stages.catalog import catalog
from sm1km.stages.downscale import downscale
from sm1km.stages.export import export
from sm1km.stages.fuse import fuse
from sm1km.stages.ingest import ingest
from sm1km.stages.train import train
from sm1km.storage import store
from sm1km.storage.lock import run_lock
from sm1km.validation.validate import validate

log = logging.getLogger(__name__)


def export_deliverables(cfg: RunConfig, client=None) -> StageResult:
    """Daily GeoTIFF (COG) and HDF5 deliverables of the whole run into ``<root>/exports/``.

    Returns ``{"geotiff": [file URLs], "hdf5": [file URLs]}`` (all files of each export, already
    existing ones included); ``stats`` are the two exports' file counters summed. The exports grow
    with the master: new days' files are added, files whose deps changed (the open month's HDF5, a
    revised time block) rewritten (``units_rewritten``), up-to-date ones are ``units_skipped``.
    """
    out = cfg.store.url("exports")
    files: dict[str, Any] = {}
    stats: dict[str, int] = {}
    for fmt in ("geotiff", "hdf5"):
        res = export(cfg, client=client, fmt=fmt, product="daily", out=store.join(out, fmt))
        files[fmt] = res["files"]
        for k, v in res.stats.items():
            stats[k] = stats.get(k, 0) + v
    return StageResult(files, stats)


#: stage name -> the stage function ``stage(cfg, client=None, **options)``. Order is execution order.
STAGES: dict[str, Callable[..., Any]] = {
    "ingest": ingest,
    "fuse": fuse,
    "train": train,
    "downscale": downscale,
    "aggregate": aggregate,
    "export": export_deliverables,
    "validate": validate,
    "catalog": catalog,
}
#: what ``sm1km run`` runs: the deliverables (export) and the catalog last, so the catalog never lists
#: a file that is not there yet
DEFAULT_STAGES = ("ingest", "fuse", "train", "downscale", "aggregate", "validate", "export", "catalog")
DEMO_STAGES = ("ingest", "fuse", "train", "downscale", "aggregate", "export", "validate", "catalog")


def _skipped(result: Any) -> bool:
    """A stage that had nothing left to do: its result says it wrote no unit."""
    return isinstance(result, StageResult) and result.stats.get("units_written") == 0


class Pipeline:
    """All stages of one run config; each method returns what the stage wrote (URLs)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.timings: dict[str, float] = {}

    @classmethod
    def from_yaml(cls, path) -> Pipeline:
        return cls(RunConfig.from_yaml(path))

    def stage(self, name: str, client=None, **options):
        """Run one stage (holding the store's run lock); returns the stage's result."""
        fn = STAGES[name]
        t0 = time.perf_counter()
        log.info("stage %s: start", name)
        with run_lock(self.cfg, name):  # one writer per store root (re-entrant inside run())
            out = fn(self.cfg, client=client, **options)
        self.timings[name] = time.perf_counter() - t0
        log.info("stage %s: done in %.1f s", name, self.timings[name])
        return out

    def run(self, client=None, stages: Iterable[str] = DEFAULT_STAGES) -> StageResult:
        """Run ``stages`` in order on one dask client (made from the config if not given).

        Returns ``{stage: its result}``. Units are stages: ``units_total`` the stages run,
        ``units_skipped`` those that found nothing left to do (their own ``units_written == 0``),
        ``units_written`` the others; ``stats["stages"]`` holds each stage's own counters.
        """
        outputs: dict[str, Any] = {}
        with run_lock(self.cfg, "run"), stage_client(self.cfg, client) as c:
            for name in stages:
                outputs[name] = self.stage(name, client=c)
        skipped = sum(_skipped(r) for r in outputs.values())
        stats = {"units_total": len(outputs), "units_written": len(outputs) - skipped, "units_skipped": skipped,
                 "stages": {n: dict(r.stats) for n, r in outputs.items() if isinstance(r, StageResult)}}
        return StageResult(outputs, stats)

    def __getattr__(self, name):
        if name in STAGES:
            return lambda client=None, **kw: self.stage(name, client=client, **kw)
        raise AttributeError(name)


def demo(workdir, preset: str = "demo", seed: int | None = None, client=None) -> dict:
    """Synthesise the world into ``workdir`` and run the pipeline; returns the stage outputs.

    The result is :meth:`Pipeline.run`'s plus ``_timings_s`` (seconds per stage) and ``_config``
    (the world's ``run.yaml``).
    """
    from sm1km.config import SeedsConfig
    from sm1km.synth import write_world

    workdir = Path(workdir)
    t0 = time.perf_counter()
    world = write_world(workdir, preset, seed=SeedsConfig().synth if seed is None else seed)
    log.info("synthetic world (%s) ready in %.1f s", preset, time.perf_counter() - t0)
    cfg = RunConfig.from_yaml(world.run_yaml)
    pipe = Pipeline(cfg)
    outputs = pipe.run(client=client, stages=DEMO_STAGES)
    outputs["_timings_s"] = {k: round(v, 1) for k, v in pipe.timings.items()}
    outputs["_config"] = str(world.run_yaml)
    return outputs


__all__ = ["Pipeline", "STAGES", "DEFAULT_STAGES", "DEMO_STAGES", "export_deliverables", "demo"]
