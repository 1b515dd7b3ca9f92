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

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sm1km.config import RunConfig
from sm1km.errors import ConfigError, ModelError
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
    """The daily deliverables of the whole run into ``<root>/exports/<format>/``: the config's
    ``export.formats`` (default GeoTIFF (COG) and HDF5; ``netcdf`` adds CF netCDF-4 files).

    Returns ``{"geotiff": [file URLs], "hdf5": [file URLs], ...}`` (all files of each export, already
    existing ones included); ``stats`` are the exports' file counters summed. The exports grow
    with the master: new days' files are added, files whose deps changed (the open month's HDF5, a
    revised time block) rewritten (``units_rewritten``), up-to-date ones are ``units_skipped``.
    """
    out = cfg.store.url("exports")
    files: dict[str, Any] = {}
    stats: dict[str, int] = {}
    for fmt in cfg.export.formats:
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
#: what ``sm1km run`` runs: the deliverables (export) before ``validate``, so the report lists the same
#: files whether the run was resumed after a kill in export or not (found by the crash chain), and the
#: catalog last, so it never lists a file that is not there yet
DEFAULT_STAGES = ("ingest", "fuse", "train", "downscale", "aggregate", "export", "validate", "catalog")
DEMO_STAGES = DEFAULT_STAGES
#: what ``sm1km update`` runs: every product stage, never ``train`` (the model is pinned)
UPDATE_STAGES = ("ingest", "fuse", "downscale", "aggregate", "export", "catalog")


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

    def run(self, client=None, stages: Iterable[str] = DEFAULT_STAGES, *, dry_run: bool = False,
            dry_run_root: str | None = None, keep_templates: bool = False) -> StageResult:
        """Run ``stages`` in order on one dask client (made from the config if not given).

        Returns ``{stage: its result}``. Units are stages: ``units_total`` the stages run,
        ``units_skipped`` those that found nothing left to do (their own ``units_written == 0``),
        ``units_written`` the others; ``stats["stages"]`` holds each stage's own counters.

        ``dry_run=True`` computes nothing and starts no cluster: every store's template is created
        at full size under a scratch root (``dry_run_root``, default ``<store.root>/_dryrun``, removed
        afterwards unless ``keep_templates``), every unit planned and every ledger scanned
        (:func:`sm1km.stages.dryrun.dry_run`: ``{stage: its plan}``, ``stats`` with units, requests,
        wall time and peak memory). The run's own stores are not touched.
        """
        if self.cfg.period.is_latest:  # period.end: latest -> one day for every stage of the run
            return Pipeline(update_config(self.cfg)).run(client, stages, dry_run=dry_run, dry_run_root=dry_run_root,
                                                         keep_templates=keep_templates)
        if dry_run:
            from sm1km.stages.dryrun import dry_run as plan_run

            with run_lock(self.cfg, "run"):
                return plan_run(self.cfg, stages, scratch=dry_run_root, keep_templates=keep_templates)
        outputs: dict[str, Any] = {}
        with run_lock(self.cfg, "run"), stage_client(self.cfg, client) as c:
            for name in stages:
                outputs[name] = self.stage(name, client=c)
        skipped = sum(_skipped(r) for r in outputs.values())
        stats = {"units_total": len(outputs), "units_written": len(outputs) - skipped, "units_skipped": skipped,
                 "stages": {n: dict(r.stats) for n, r in outputs.items() if isinstance(r, StageResult)}}
        return StageResult(outputs, stats)

    def update(self, client=None, until: dt.date | None = None, *, dry_run: bool = False,
               dry_run_root: str | None = None, keep_templates: bool = False) -> StageResult:
        """Bring every product up to date for the days not yet in the master (``sm1km update``).

        The target day is ``until`` (default: ``period.end``; with ``period.end: latest``, the last
        day every daily input has). Runs :data:`UPDATE_STAGES` on the config with ``period.end`` set
        to it: each stage adds only what is missing or stale (a revised upstream day recomputes its
        dependants). The model is **pinned**: it must exist, it is never retrained, and when
        ``model.sha256`` is set the stored model must have that digest.

        Returns :meth:`run`'s result; ``stats`` add ``target``, ``master_end_before`` /
        ``master_end_after`` and ``up_to_date`` (no stage wrote anything).

        ``dry_run=True``: :meth:`run`'s dry run of :data:`UPDATE_STAGES` on the updated config (nothing
        computed, the model not required); ``stats`` add ``target`` and ``master_end_before``.
        """
        cfg = update_config(self.cfg, until)
        if dry_run:
            result = Pipeline(cfg).run(client, stages=UPDATE_STAGES, dry_run=True, dry_run_root=dry_run_root,
                                       keep_templates=keep_templates)
            return StageResult(dict(result), {**result.stats, "target": str(cfg.period.end),
                                              "master_end_before": master_end(cfg)})
        pinned = check_pinned_model(cfg)
        before = master_end(cfg)
        log.info("update: target %s, master holds up to %s, model %s", cfg.period.end,
                 before or "(nothing yet)", pinned[:12])
        inner = Pipeline(cfg)
        result = inner.run(client, stages=UPDATE_STAGES)
        after = master_end(cfg)
        up_to_date = result.stats["units_written"] == 0
        if up_to_date:
            log.info("update: already up to date through %s: nothing to do", after)
        else:
            log.info("update: master now holds up to %s (was %s); stages that wrote: %s", after,
                     before or "(nothing)", ", ".join(n for n, r in result.items() if not _skipped(r)))
        stats = {**result.stats, "target": str(cfg.period.end), "master_end_before": before,
                 "master_end_after": after, "up_to_date": up_to_date, "model_sha256": pinned}
        self.timings.update(inner.timings)
        return StageResult(dict(result), stats)

    def __getattr__(self, name):
        if name in STAGES:
            return lambda client=None, **kw: self.stage(name, client=client, **kw)
        raise AttributeError(name)


def update_config(cfg: RunConfig, until: dt.date | None = None) -> RunConfig:
    """``cfg`` with ``period.end`` set to the day ``update`` brings the products to (``latest``:
    the last day every daily input has, :func:`sm1km.stages.ingest.latest.apply_latest`)."""
    if until is None and cfg.period.is_latest:
        from sm1km.stages.ingest.latest import apply_latest

        return apply_latest(cfg)
    end = until or cfg.period.last_day
    if end < cfg.period.start:
        raise ConfigError("--until", f"{end} is before period.start ({cfg.period.start}).",
                          "give a day on or after period.start.")
    if end == cfg.period.end:
        return cfg
    return cfg.model_copy(update={"period": cfg.period.model_copy(update={"end": end})})


def check_pinned_model(cfg: RunConfig) -> str:
    """The sha256 of the stored model ``update`` will use; refuses a missing or unexpected model."""
    from sm1km.storage.model import card_url

    url = cfg.model_path
    card = store.read_json(card_url(url), cfg.store.storage_options())
    if not card:
        raise ModelError(url, "there is no trained model (its card is missing); `sm1km update` never trains.",
                         "train once with `sm1km train --config run.yaml` (or `sm1km run`), then update.")
    try:
        sha = str(card["files"][card["model_file"]]["sha256"])
    except (KeyError, TypeError) as exc:
        raise ModelError(card_url(url), f"the model card names no sha256 ({exc}).", "re-run `sm1km train`.") from exc
    want = cfg.model.sha256
    if want and want.lower() != sha:
        raise ModelError(url, f"the stored model has sha256 {sha[:16]}…, the config pins model.sha256 "
                              f"{want[:16]}…; update never switches models.",
                         "restore the pinned model, or reprocess into a new store.root with the new model "
                         "and set model.sha256 to it.")
    return sha


def master_end(cfg: RunConfig) -> str | None:
    """Last day of the published master (``time_coverage_end``), None when there is none yet."""
    url = cfg.store.url("master.zarr")
    so = cfg.store.storage_options()
    if not store.exists(url, so):
        return None
    end = store.open_group(url, so).attrs.get("time_coverage_end")
    return str(end) if end else None


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


__all__ = ["Pipeline", "STAGES", "DEFAULT_STAGES", "DEMO_STAGES", "UPDATE_STAGES", "export_deliverables", "demo",
           "update_config", "check_pinned_model", "master_end"]
