"""``sm1km downscale``: apply the model shard by shard to write the 1 km master (``master.zarr``).

Plan: one task per master shard = a :class:`~sm1km.runtime.units.WorkUnit` (tile of
``grid.tile_cells``² coarse cells × time block of ``grid.time_block_days`` days). A task reads the
fused 25 km block and the 1 km predictor block, predicts (:func:`sm1km.core.predict.predict_shard`:
features into one preallocated float32 buffer, XGBoost in-place prediction of the kept rows,
clipped to the physical range; sea — fused ``source_flag`` 0 or NaN — and 1 km water pixels by
land cover stay fill), packs to int16 (``encoding``) and writes its shard — the only writer of
that shard — then marks the shard in the ledger.

* **Resumable:** shards in the ledger (``<root>/_ledger/master.zarr/``) are skipped; a killed run
  re-run gives a byte-identical store (``SOURCE_DATE_EPOCH`` fixes the timestamps). Consolidated
  metadata is written last, once every shard is done.
* **Grows in time:** a master holding a prefix of the period is extended
  (:func:`sm1km.storage.append.grow_store`), every shard is replaced prefix-preserving
  (``master.write_packed(preserve=True)``: published inner chunks keep their bytes and offsets),
  consolidated metadata last. Each day/time block has a deps digest (:func:`master_deps`: fused
  data of the day, its predictors, the model's sha256) in ``_ledger/master.zarr/days.json`` /
  ``blocks.json`` (``storage.deps``); a block whose digest changed is recomputed — exactly its
  shards — and a run with nothing to do writes nothing. The model is pinned (never retrained).
* **Bounded memory:** tasks are O(shard): the driver only holds work units (a few integers each),
  generated lazily, and keeps at most ``max_in_flight`` tasks submitted (``runtime.runner``).
* **Model once per worker:** a task carries only the model URL and its sha256; the booster lives in
  a per-process cache (:func:`sm1km.runtime.caches.worker_model`) keyed by (url, sha256, threads,
  device), so each worker process parses it once (``caches.model_loads`` tells how many times).

Returns a :class:`~sm1km.runtime.result.StageResult` ``{"master", "ledger"}`` with ``stats``
``units_total/written/skipped`` (= ``shards_total/written/skipped``, kept for the CLI's output)
``land_pixel_days_written``, ``days_published`` / ``days_added`` and ``blocks_redone``. The scores against the synthetic truth are
``sm1km.validation.truth``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from sm1km.core.encoding import FILL, encode_int16
from sm1km.core.grid import FineGrid, coarse_lat
from sm1km.core.predict import predict_shard
from sm1km.errors import InputError, StoreError
from sm1km.runtime import caches
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.runtime.runner import run_tasks
from sm1km.runtime.units import UnitGrid, WorkUnit, count_units, plan_units
from sm1km.storage import master, store

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------------
def shard_specs(cfg) -> Iterator[WorkUnit]:
    """All master shards of a run, lazily, tile-major (a tile's time blocks follow each other)."""
    blocks = master.time_blocks(cfg.period.n_days, cfg.grid.time_block_days)
    return plan_units(cfg.coarse_region, cfg.grid.tile_cells, blocks, cfg.grid.factor)


def shard_grid(cfg) -> UnitGrid:
    """The plan of :func:`shard_specs` as arithmetic (its size, a ledger key's position in it)."""
    g = cfg.grid
    return UnitGrid.of(cfg.coarse_region, g.tile_cells, cfg.period.n_days, g.time_block_days, g.factor)


def n_shards(cfg) -> int:
    g = cfg.grid
    return count_units(cfg.coarse_region, g.tile_cells, -(-cfg.period.n_days // g.time_block_days))


def block_key(t0: int, t1: int) -> str:
    """Key of the master time block [t0, t1) (days of the run) in ``_ledger/master.zarr/blocks.json``."""
    return f"time-{t0}-{t1}"


# --------------------------------------------------------------------------------------------
# dependencies (storage.deps): what each day / time block of the master is computed from
# --------------------------------------------------------------------------------------------
_BLOCK_KEY = re.compile(r"^time-(\d+)-(\d+)$")
_UNIT_KEY = re.compile(r"^lat-\d+-\d+_lon-\d+-\d+_time-\d+-\d+$")
#: days of fused.zarr read at once when its content is digested (no fused blocks.json)
CONTENT_DIGEST_DAYS = 32


def _fused_content_digests(url: str, so: dict, t0: int, days: list[int]) -> dict[int, str]:
    """{run day: sha256 of the stored bytes of fused ``sm`` and ``source_flag`` that day} for
    ``days`` (``t0``: the run's first day in fused.zarr). Reads those days of the whole region:
    used only where the fuse stage recorded no block digests."""
    import hashlib

    g = store.open_group(url, so)
    sm, flag = store.array(g, "sm"), store.array(g, "source_flag")
    out: dict[int, str] = {}
    lo, hi = min(days), max(days) + 1
    want = set(days)
    for a in range(lo, hi, CONTENT_DIGEST_DAYS):
        b = min(a + CONTENT_DIGEST_DAYS, hi)
        q, f = np.asarray(sm[t0 + a:t0 + b]), np.asarray(flag[t0 + a:t0 + b])
        for i in range(b - a):
            if a + i in want:
                h = hashlib.sha256(np.ascontiguousarray(q[i]).tobytes())
                h.update(np.ascontiguousarray(f[i]).tobytes())
                out[a + i] = h.hexdigest()
    return out


#: ``_ledger/master.zarr/fused-days.json``: per-day content digests of fused.zarr, with the fuse
#: block digests they were computed under (re-read only for blocks whose digest changed)
FUSED_DAYS = "fused-days.json"


def fused_day_deps(cfg, ctx: DownscaleContext, n_days: int) -> dict[int, str]:
    """{run day: sha256 of fused.zarr's stored ``sm``/``source_flag`` bytes of that day}.

    Per day, so that a month (aggregate) depends on its own days only. The digests are kept in
    ``_ledger/master.zarr/fused-days.json`` together with the fuse stage's block digests
    (``_ledger/fused.zarr/blocks.json``, keys ``time-<t0>-<t0 + block days>``) they were read under:
    a day is read again only when the fused block holding it has another digest than then (new
    days, a revised day) or fuse recorded none — typically one time block per daily update.
    """
    from sm1km.storage.deps import BlockDigests

    so = ctx.storage_options
    recorded = BlockDigests(cfg.store.root, "fused.zarr", so).read()
    spans = [(int(m[1]), int(m[2]), k, v) for k, v in recorded.items() if (m := _BLOCK_KEY.match(k))]
    cache_url = store.join(cfg.store.root, "_ledger", master.MASTER_STORE, FUSED_DAYS)
    cache = store.read_json(cache_url, so) or {}
    cblocks, cdays = dict(cache.get("blocks", {})), dict(cache.get("days", {}))
    iso = [str(d.date()) for d in pd.date_range(ctx.start, periods=n_days, freq="D")]
    out: dict[int, str] = {}
    under: dict[str, str] = {}
    for d in range(n_days):
        cover = [sp for sp in spans if sp[0] <= d < sp[1]]
        if not cover:
            continue
        _, _, k, v = max(cover, key=lambda sp: (sp[0], sp[1]))
        under[k] = v
        if cblocks.get(k) == v and iso[d] in cdays:
            out[d] = cdays[iso[d]]
    missing = [d for d in range(n_days) if d not in out]
    if missing:
        log.info("downscale: digesting fused.zarr for %d day(s) (%s .. %s)", len(missing), iso[missing[0]],
                 iso[missing[-1]])
        out.update(_fused_content_digests(ctx.fused_url, so, ctx.fused_t0, missing))
    doc = {"version": 1, "blocks": dict(sorted(under.items())), "days": {iso[d]: out[d] for d in range(n_days)}}
    if doc != cache:
        store.write_json(cache_url, doc, so, separators=(",", ":"))
    return out


def master_deps(cfg, ctx: DownscaleContext) -> tuple[dict[str, str], dict[str, str]]:
    """({ISO day: deps digest}, {time block key: deps digest}) of the run's master.

    A day's digest: its fused data (:func:`fused_day_deps`), its predictors (the ingest index's
    per-day and static digests of ``inputs/predictors.zarr``, "" where there is none), the model's
    sha256 and whether the uncertainty is written. A block's: the list of its days' digests.
    Features never span days (``core.features``), so a day's values depend on these alone.
    """
    from sm1km.storage.deps import digest_of, input_day_digests, input_static_digest

    so, root = ctx.storage_options, cfg.store.root
    dates = pd.DatetimeIndex(cfg.dates())
    fused = fused_day_deps(cfg, ctx, len(dates))
    pred_days = input_day_digests(root, "inputs/predictors.zarr", so)
    pred_static = input_static_digest(root, "inputs/predictors.zarr", so)
    iso = [str(d.date()) for d in dates]
    days = {iso[d]: digest_of({"fused": fused[d], "predictors": pred_days.get(iso[d], ""), "static": pred_static,
                               "model": ctx.model_sha256, "uncertainty": ctx.with_uncertainty})
            for d in range(len(dates))}
    blocks = {block_key(b.start, b.stop): digest_of([days[iso[d]] for d in range(b.start, b.stop)])
              for b in master.time_blocks(len(dates), cfg.grid.time_block_days)}
    return days, blocks


# --------------------------------------------------------------------------------------------
# one shard
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DownscaleContext:
    """What every task needs besides its shard: URLs, offsets and the model's identity (small)."""

    root: str
    master_url: str
    fused_url: str
    predictors_url: str
    storage_options: dict
    model_url: str
    model_sha256: str
    n_threads: int
    device: str
    with_uncertainty: bool
    fused_t0: int        # index of the run's first day in fused.zarr
    predictors_t0: int   # ... in inputs/predictors.zarr
    start: str           # first day of the run (ISO)
    run_token: str = ""  # one per make_context: the stores a worker opened are reused for it ("" = never)
    block_deps: dict = dataclasses.field(default_factory=dict)  # {time block key: deps digest} (ledger markers)
    preserve: bool = False  # rewrite shards prefix-preserving (a store that existed before the run: readers)


def read_inputs(spec: WorkUnit, ctx: DownscaleContext):
    """(fused_sm, source_flag, predictors dict, times) of one shard, as numpy arrays.

    An all-sea shard returns no predictors (``{}``): it is never predicted, so they are not read.
    """
    from sm1km.core.features import DAILY_PREDICTORS, PREDICTOR_NAMES

    fused = caches.opened_dataset(ctx.fused_url, ctx.storage_options, ctx.run_token)
    t0, t1 = spec.time_bounds
    ft = slice(ctx.fused_t0 + t0, ctx.fused_t0 + t1)
    cs = {"time": ft, "lat": slice(spec.r0, spec.r1), "lon": slice(spec.c0, spec.c1)}
    fused_sm = np.asarray(fused["sm"].isel(cs).values, dtype=np.float32)
    flag = fused["source_flag"].isel(cs).values
    flag = np.where(np.isnan(flag), 0, flag).astype(np.uint8) if flag.dtype.kind == "f" else flag.astype(np.uint8)
    times = pd.date_range(ctx.start, periods=t1, freq="D")[t0:]
    if ((flag == 0) | np.isnan(fused_sm)).all():
        return fused_sm, flag, {}, times.values  # all sea: nothing to predict, no predictor to read
    pred_ds = caches.opened_dataset(ctx.predictors_url, ctx.storage_options, ctx.run_token)
    y, x = spec.fine
    pt = slice(ctx.predictors_t0 + t0, ctx.predictors_t0 + t1)
    predictors = {}
    for name in PREDICTOR_NAMES:
        if name not in pred_ds:
            raise InputError(ctx.predictors_url, f"predictor '{name}' is missing.",
                             "re-run `sm1km ingest` (inputs/predictors.zarr must hold every predictor).")
        da = pred_ds[name]
        sel = {"lat": y, "lon": x}
        if "time" in da.dims:
            sel["time"] = pt
        elif name in DAILY_PREDICTORS:
            log.debug("predictor %s is static in the store", name)
        predictors[name] = np.asarray(da.isel(sel).values, dtype=np.float32)
    return fused_sm, flag, predictors, times.values


def downscale_shard(spec: WorkUnit, ctx: DownscaleContext) -> dict[str, Any]:
    """The task: read → features → predict → clip → pack int16 → write the shard → ledger mark."""
    fused_sm, flag, predictors, times = read_inputs(spec, ctx)
    model = caches.worker_model(ctx.model_url, ctx.model_sha256, ctx.storage_options, ctx.n_threads, ctx.device)
    sm, unc = predict_shard(fused_sm, flag, predictors, times, spec.factor, model, ctx.with_uncertainty)
    del predictors
    arrays = {"sm": encode_int16(sm)}
    if unc is not None:
        arrays["sm_uncertainty"] = encode_int16(unc)
    n_land = int(np.count_nonzero(arrays["sm"] != FILL))
    # the arrays' own metadata, not the consolidated copy: a growing master is longer than what is published
    group = (store.open_group(ctx.master_url, ctx.storage_options, mode="r+", use_consolidated=False) if ctx.preserve
             else caches.opened_group(ctx.master_url, ctx.storage_options, ctx.run_token))
    objects = master.write_packed(ctx.master_url, spec.region, arrays, ctx.storage_options, group=group,
                                  preserve=ctx.preserve)
    info: dict[str, Any] = {"land_pixel_days": n_land, "model_sha256": ctx.model_sha256}
    deps = ctx.block_deps.get(block_key(*spec.time_bounds))
    if deps:
        info["deps"] = deps
    store.Ledger(ctx.root, master.MASTER_STORE, ctx.storage_options).mark(spec.key, info)
    return {"key": spec.key, "land_pixel_days": n_land, "objects": objects}


# --------------------------------------------------------------------------------------------
# checks done once by the driver
# --------------------------------------------------------------------------------------------
def time_offset(url: str, ds, dates: pd.DatetimeIndex) -> int:
    """Index of ``dates[0]`` in the store's time axis; an InputError unless it holds ``dates`` day by day."""
    t = pd.DatetimeIndex(ds["time"].values)
    i = int(t.searchsorted(dates[0]))
    if i + len(dates) > len(t) or not t[i:i + len(dates)].equals(dates):
        raise InputError(url, f"the store's time axis ({t[0].date() if len(t) else '-'} .. "
                              f"{t[-1].date() if len(t) else '-'}, {len(t)} days) does not cover the run's "
                              f"period {dates[0].date()} .. {dates[-1].date()} day by day.",
                         "re-run the stage that writes it with this config (or fix period in the config).")
    return i


def check_space(url: str, ds, lat0: float, n_lat: int, n_lon: int) -> None:
    """An InputError unless the store's grid is ``n_lat × n_lon`` starting at latitude ``lat0``."""
    if ds.sizes.get("lat") != n_lat or ds.sizes.get("lon") != n_lon or \
            not np.isclose(float(ds["lat"].values[0]), lat0, atol=1e-9):
        raise InputError(url, f"the store's grid ({ds.sizes.get('lat')}×{ds.sizes.get('lon')}, first lat "
                              f"{float(ds['lat'].values[0]) if 'lat' in ds else '-'}) is not the run's region "
                              f"({n_lat}×{n_lon}, first lat {lat0}).",
                         "re-run the stage that writes it with this config (region and grid.factor must match).")


def make_context(cfg, model) -> DownscaleContext:
    """Open the inputs once, check that they fit the run, and build the task context."""
    so = cfg.store.storage_options()
    region, factor = cfg.coarse_region, cfg.grid.factor
    dates = pd.DatetimeIndex(cfg.dates())
    fused_url, pred_url = cfg.store.url("fused.zarr"), cfg.store.url("inputs", "predictors.zarr")
    fused = store.open_dataset(fused_url, so)
    for v in ("sm", "source_flag"):
        if v not in fused:
            raise InputError(fused_url, f"variable '{v}' is missing.", "re-run `sm1km fuse`.")
    check_space(fused_url, fused, float(coarse_lat(region.row0)), region.n_rows, region.n_cols)
    preds = store.open_dataset(pred_url, so)
    g = FineGrid(factor)
    check_space(pred_url, preds, float(g.lat(region.row0 * factor)), region.n_rows * factor, region.n_cols * factor)
    pred_t0 = time_offset(pred_url, preds, dates) if "time" in preds.dims else 0
    return DownscaleContext(
        root=cfg.store.root, master_url=cfg.store.url(master.MASTER_STORE), fused_url=fused_url,
        predictors_url=pred_url, storage_options=so, model_url=cfg.model_path, model_sha256=model.sha256,
        n_threads=cfg.model.n_threads, device=cfg.model.predict_device,
        with_uncertainty=model.has_uncertainty, fused_t0=time_offset(fused_url, fused, dates),
        predictors_t0=pred_t0, start=str(dates[0].date()), run_token=uuid.uuid4().hex)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _shard_key(spec: WorkUnit, shard: tuple[int, int, int]) -> str:
    """The ``sm`` shard object (``c/t/y/x``) that holds unit ``spec``."""
    t0, _ = spec.time_bounds
    y, x = spec.fine
    return f"c/{t0 // shard[0]}/{y.start // shard[1]}/{x.start // shard[2]}"


def _shard_objects(url: str, so: Mapping[str, Any]) -> set[str]:
    """Keys (``c/t/y/x``) of the ``sm`` shards present in the master (one listing)."""
    fs, path = store.filesystem(store.join(url, "sm"), so)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    base = path.rstrip("/") + "/"
    try:
        return {p[len(base):] for p in fs.find(base + "c")}
    except FileNotFoundError:
        return set()


def downscale(cfg, client=None, *, max_in_flight: int | None = None, **options) -> StageResult:
    """Write ``master.zarr`` (template, shards, coverage + consolidated metadata); resumable; grows.

    A master holding a prefix of the period grows: the missing days are added
    (``append.grow_store``), the partly filled last shard of every tile is rewritten
    prefix-preserving, consolidated metadata last. Every time block's deps digest
    (:func:`master_deps`) is recorded in ``_ledger/master.zarr/blocks.json`` (per day in
    ``days.json``); a block whose digest changed (a revised fused day, new days) is recomputed —
    exactly its shards — and a run with nothing to do writes nothing. The model is the stored one
    (``model_path``), never retrained; a master written by another model is refused.

    Returns ``{"master": url, "ledger": url}`` with ``.stats`` = units (shards) total/written/skipped,
    land pixel-days written, ``days_published`` (before this run), ``days_added`` and
    ``blocks_redone`` (time blocks recomputed).
    """
    from sm1km.storage.append import grow_store
    from sm1km.storage.deps import BLOCKS_VERSION, BlockDigests, unit_fresh
    from sm1km.storage.model import load_model

    so = cfg.store.storage_options()
    url = cfg.store.url(master.MASTER_STORE)
    model = load_model(cfg.model_path, so, n_threads=cfg.model.n_threads, device=cfg.model.predict_device)
    if not model.has_uncertainty:
        log.warning("model %s has no uncertainty model: sm_uncertainty stays empty (fill)", cfg.model_path)
    ctx = make_context(cfg, model)
    card: dict[str, Any] = {k: model.card.get(k) for k in ("algorithm", "created", "sm1km_version") if k in model.card}
    tpl, enc = master.master_template(cfg, model_sha256=model.sha256, model_card=card)
    existed = store.exists(url, so)
    if existed:
        existing = cast("str | None", store.open_group(url, so).attrs.get("model_sha256"))  # what create wrote
        if existing and existing != model.sha256:
            raise StoreError(url, f"the existing master was written with another model (sha256 {existing[:12]}…; "
                                  f"now {model.sha256[:12]}…).",
                             "write into a new store.root, or remove master.zarr and its ledger "
                             "(_ledger/master.zarr) to recompute everything.")
    n_pub, n_days = grow_store(url, tpl, enc, so)
    day_deps, block_deps = master_deps(cfg, ctx)
    # a store created by this run has no readers yet: shards are written directly (the fast path)
    ctx = dataclasses.replace(ctx, block_deps=block_deps, preserve=existed)
    blocks = BlockDigests(cfg.store.root, master.MASTER_STORE, so)
    recorded = blocks.read()
    stale = [k for k, d in block_deps.items() if recorded.get(k) != d]
    legacy = existed and not recorded  # a master written before deps were recorded: its markers hold
    ledger = store.Ledger(cfg.store.root, master.MASTER_STORE, so)
    present = ledger.keys()
    infos: dict[str, dict[str, Any] | None] = {}
    shards_on_disk = _shard_objects(url, so) if existed else set()
    shard_shape = master.master_shard(cfg)

    def needed(spec: WorkUnit) -> bool:
        deps = block_deps[block_key(*spec.time_bounds)]
        if spec.key not in present:  # never written, or its marker was removed: (re)do it
            return True
        if existed and _shard_key(spec, shard_shape) not in shards_on_disk:
            # a marker without its data (a partial copy of the store, a deleted object): a shard with
            # land pixels must exist, so it is recomputed rather than read back as fill
            if spec.key not in infos:
                infos[spec.key] = ledger.info(spec.key)
            if int((infos[spec.key] or {}).get("land_pixel_days", 0)) > 0:
                log.warning("downscale: %s is marked done but its shard %s is missing: recomputed", spec.key,
                            _shard_key(spec, shard_shape))
                return True
        if recorded.get(block_key(*spec.time_bounds)) == deps:
            return False
        if spec.key not in infos:
            infos[spec.key] = ledger.info(spec.key)
        info = infos[spec.key]
        if unit_fresh(info, deps):
            return False
        # legacy marker (no "deps"): trusted once, for the model it names
        return not (legacy and info is not None and "deps" not in info
                    and info.get("model_sha256") in (None, model.sha256))

    total = n_shards(cfg)
    todo = (sp for sp in shard_specs(cfg) if needed(sp))
    skipped = sum(1 for sp in shard_specs(cfg) if not needed(sp))
    if stale:
        log.info("downscale: %d of %d time blocks to compute (new days or changed inputs): %s", len(stale),
                 len(block_deps), ", ".join(stale))
    log.info("downscale: %d shards, %d already done (skipped), %d to write -> %s (%d days published, %d added)",
             total, skipped, total - skipped, url, n_pub, n_days - n_pub)
    written, land = 0, 0
    task = functools.partial(downscale_shard, ctx=ctx)
    with stage_client(cfg, client) as c:
        for res in run_tasks(c, task, todo, window=max_in_flight, name="downscale_shard", total=total - skipped):
            written += 1
            land += res["land_pixel_days"]
    plan = shard_grid(cfg)  # no set of every planned key: the plan stays streamed (3.9 M shards globally)
    superseded = [k for k in present if _UNIT_KEY.match(k) and plan.ordinal(k) is None]  # a grown block's old key
    for k in superseded:
        ledger.fs.rm(ledger._key_path(k))
    if stale or set(recorded) != set(block_deps):
        # replace the record (keys of grown partial blocks are gone), one atomic write
        store.write_json(blocks.url, {"version": BLOCKS_VERSION, "store": master.MASTER_STORE,
                                      "blocks": dict(sorted(block_deps.items()))}, so, separators=(",", ":"))
    days = master.DayDigests(cfg.store.root, master.MASTER_STORE, so)
    if days.read() != day_deps:
        days.record(day_deps)
    if written or n_pub != n_days or not _published(url, so):
        store.finalize(url, so, store.coverage_attrs(cfg.dates()))
    else:
        log.info("downscale: the master is up to date (%d days): nothing written", n_days)
    stats = {"units_total": total, "units_written": written, "units_skipped": skipped,
             "shards_total": total, "shards_written": written, "shards_skipped": skipped,
             "land_pixel_days_written": land, "days_published": n_pub, "days_added": n_days - n_pub,
             "blocks_redone": len(stale)}
    log.info("downscale done: %s", stats)
    return StageResult({"master": url, "ledger": ledger.url}, stats)


def _published(url: str, so: dict) -> bool:
    """Does the root ``zarr.json`` carry consolidated metadata (finalize ran)?"""
    from sm1km.storage.publish import read_root_metadata

    return bool((read_root_metadata(url, so).get("consolidated_metadata") or {}).get("metadata"))


__all__ = ["downscale", "shard_specs", "shard_grid", "n_shards", "make_context", "read_inputs", "downscale_shard",
           "DownscaleContext", "time_offset", "check_space", "block_key", "master_deps", "fused_day_deps"]
