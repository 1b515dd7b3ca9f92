"""``sm1km ingest``: raw inputs → Zarr v3 cubes (``inputs/*.zarr``) — validated, idempotent, appendable.

Stores (docs/architecture.md): ``inputs/cci.zarr`` and ``inputs/era5.zarr`` on the 0.25° cells of
the snapped region, chunked ``(4096 days, space_chunk, space_chunk)`` — a whole series per pixel in
one chunk; ``inputs/predictors.zarr`` on the 1 km grid, chunked like the master shards
``(time_block_days, tile px, tile px)``, static predictors plus the daily LST day/night and NDVI
**gap-filled in time, causally** (:mod:`sm1km.core.gapfill`, rule ``causal-locf``: a day depends only
on itself and earlier days; ``observed_flags`` says which values were observed);
``inputs/stations.zarr`` (station, time), one chunk, with ``in_region``.

One job per store behind one protocol (:mod:`.job`): :mod:`.coarse` (CCI, ERA5),
:mod:`.predictors`, :mod:`.stations`; shared pieces: :mod:`.inputs` (finding and hashing files),
:mod:`.index` (the per-store ingest index), :mod:`.cube` (store layout). How it works
(docs/ingest.md has the long version):

1. **plan** (no writes): list the files, sha256 every file (one dask task per file), compare
   with the per-store *ingest index* ``_ledger/<store>/ingest-index.json`` (day → file, sha256 and
   a content digest). Days whose file is unchanged are skipped without decoding; new or changed
   days are *to do*. Duplicate days, days without a file (CCI/ERA5), a period starting before the
   store are errors.
2. **stage** (writes only under ``<root>/_staging/``): one task per *batch of days × spatial band*
   (:mod:`sm1km.core.rechunk_plan`) reads and validates every file to do and writes it into a staging
   array chunked like the output in space. A day whose content differs from what the store holds
   is an :class:`InputError` unless ``overwrite``. Any problem → the staging area is removed and
   one InputError names the file(s): **the stores are untouched**.
3. **write**: create the template (or grow the time axis: :func:`sm1km.storage.append.extend_time`),
   then one task per output chunk reads its piece of the staging array and writes that chunk
   (coarse cubes: existing chunk + staged days; predictors: the days to recompute, gap-filled from
   their trailing window). Then the index is updated (with ``stored_days`` / ``stored_static``,
   the digests of what the store holds, read by :mod:`sm1km.storage.deps`) and
   :func:`store.finalize` writes attributes and consolidated metadata last.

Re-running with the same files changes nothing (byte-identical stores); a longer period appends
days and never changes a published one (equal to a one-shot ingest, time coordinate included);
memory per task does not depend on the length of the period.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from typing import Any

from sm1km.config import RunConfig
from sm1km.errors import ConfigError, Sm1kmError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.storage import store

from .coarse import COARSE_BATCH_DAYS, CoarseJob
from .cube import COARSE_TIME_CHUNK
from .job import IngestContext, IngestJob, raise_problems
from .predictors import GAP_HALO_DAYS, PredictorJob
from .predictors import configured as predictors_configured
from .stations import StationJob

log = logging.getLogger(__name__)


def _memory_budget(cfg: RunConfig) -> int:
    """Bytes one task may hold: a quarter of a worker thread's share of the memory limit."""
    from dask.utils import parse_bytes

    try:
        limit = parse_bytes(cfg.cluster.memory_limit)
    except (ValueError, TypeError):
        limit = 4 << 30
    return max(1 << 20, limit // max(cfg.cluster.threads_per_worker, 1) // 4)


def _remove_staging(staging_root: str, so) -> None:
    try:
        store.remove(staging_root, so)
        if not store.is_remote(staging_root):
            parent = os.path.dirname(staging_root.rstrip("/"))
            if os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
    except OSError as exc:  # leave it; the next run uses another token
        log.warning("could not remove the staging area %s (%s)", staging_root, exc)


def jobs_for(ctx: IngestContext) -> list[IngestJob]:
    """The jobs of the configured inputs, in the order they run."""
    cfg = ctx.cfg
    jobs: list[IngestJob] = []
    if cfg.inputs.cci:
        jobs.append(CoarseJob(ctx, "cci"))
    if cfg.inputs.era5:
        jobs.append(CoarseJob(ctx, "era5"))
    if predictors_configured(cfg):
        jobs.append(PredictorJob(ctx))
    if cfg.inputs.ismn:
        jobs.append(StationJob(ctx))
    return jobs


def ingest(cfg: RunConfig, client=None, overwrite: bool = False, *,
           task_memory_bytes: int | None = None) -> StageResult:
    """Ingest the configured raw inputs into ``inputs/*.zarr``; returns {store name: URL}.

    Validates every input to read before writing anything (an InputError leaves the stores
    exactly as they were); re-running with the same files changes nothing; a longer period
    appends days; a day whose content differs from the stored one is an InputError unless
    ``overwrite``. ``task_memory_bytes`` overrides the memory one read task may hold (default: a
    quarter of a worker thread's share of ``cluster.memory_limit``).

    ``period.end: latest`` is resolved first (:mod:`.latest`): the last day for which every daily
    input exists; the log names the input that holds it back.

    ``.stats``: ``units_total`` / ``units_written`` / ``units_skipped`` over all stores (units:
    days of the 0.25° cubes, time blocks and static rasters of the predictors, the station
    table) and the same per store under ``stores``.
    """
    if cfg.period.is_latest:  # period.end: latest -> the last day every daily input has (logged)
        from .latest import apply_latest

        cfg = apply_latest(cfg)
    today = dt.datetime.now(dt.UTC).date()
    if cfg.period.last_day > today:
        raise ConfigError("period.end", f"{cfg.period.end} is in the future (today is {today}, UTC): no input "
                                        "exists for it yet.",
                          "end the period today or earlier; to follow the inputs as they appear, run "
                          "`sm1km update` (with period.end: latest) every day instead.")
    so = cfg.store.storage_options()
    token = uuid.uuid4().hex[:12]
    ctx = IngestContext(cfg=cfg, so=so, region=cfg.coarse_region, factor=cfg.grid.factor, overwrite=overwrite,
                        staging_root=store.join(cfg.store.root, "_staging", f"ingest-{token}"),
                        budget=task_memory_bytes or _memory_budget(cfg))
    jobs = jobs_for(ctx)
    if not jobs:
        raise ConfigError("inputs", "no inputs are configured.", "set inputs.cci / era5 / predictors / ismn.")
    with stage_client(cfg, client) as c:
        ctx.client = c
        try:
            problems: list[Sm1kmError] = []
            for j in jobs:  # 1. what is to do (reads only)
                try:
                    j.plan()
                except Sm1kmError as exc:
                    j.problems.append(exc)
                problems += j.problems
            raise_problems(problems)
            for j in jobs:  # 2. read + validate everything to do into the staging area
                j.stage()
                problems += j.problems
            raise_problems(problems)
            for j in jobs:  # 3. write the stores (templates, chunks, index, consolidated metadata)
                j.write()
        finally:
            _remove_staging(ctx.staging_root, so)
    per_store = {}
    for j in jobs:
        n = j.counts()
        per_store[j.store_name] = {"units_total": n.total, "units_written": n.written, "units_skipped": n.skipped}
    stats: dict[str, Any] = {k: sum(s[k] for s in per_store.values()) for k in ("units_total", "units_written", "units_skipped")}
    stats["stores"] = per_store
    log.info("ingest done: %s", {k: v for k, v in stats.items() if k != "stores"})
    return StageResult({j.store_name: j.url for j in jobs}, stats)


__all__ = ["ingest", "jobs_for", "IngestJob", "IngestContext", "COARSE_TIME_CHUNK", "COARSE_BATCH_DAYS",
           "GAP_HALO_DAYS"]
