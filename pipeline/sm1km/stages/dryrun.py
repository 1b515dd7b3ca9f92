"""A dry run of a whole configuration (``sm1km run --dry-run``, ``sm1km update --dry-run``): every
store's template at full size, every unit planned, every ledger scanned — nothing computed.

What it is for: pricing the global 2000-2020 run (1440 × 720 cells at 0.25°, 43200 × 21600
pixels at 1 km, 7671 days: 3.9 million master shards) before a cluster is paid for, and proving
that the driver can plan it — memory that does not grow with the number of units, a ledger scan of
millions of markers in minutes — on the store it will really use (a local root or S3).

**What it writes, and where.** Only metadata: each store's template (``zarr.json`` objects and the
coordinate arrays, no data chunk) goes into a **scratch root**, by default ``<store.root>/_dryrun``,
which is removed at the end (``keep_templates=True`` / ``--keep-templates`` leaves it for
inspection). Never into the run's own stores: a template there would change a later real run
(downscale treats an existing master as published and rewrites shards prefix-preserving, fuse
refuses or rebuilds a store without its template mark), so a real run after a dry run is
byte-identical to one without it. No data chunk, no ledger marker, no ``blocks.json`` is written,
under the root or the scratch root. Like a real run it holds the root's run lock while it scans
(so the ledgers it reads do not change under it); the lock's own objects are all it leaves there,
as a real run does.

**What it reads.** Each stage's ledger, streamed page by page (:func:`sm1km.storage.store.iter_names`:
one LIST request per 1000 markers on S3) into one byte per planned unit
(:func:`sm1km.runtime.units.scan_ledger`); the ingest indexes (one GET each); the model card. It
does not digest inputs, so a unit whose marker exists counts as done even where a revised input
would make a real run recompute it (the real run decides that from the deps digests).

Returns a :class:`~sm1km.runtime.result.StageResult` ``{stage: its plan}`` whose ``stats`` hold the
totals: ``units_total`` / ``units_done`` / ``units_todo``, ``templates`` (store, arrays, objects
written), ``requests`` (object-store requests by kind, S3 methods or local file operations),
``wall_s``, ``peak_rss_mb`` (the driver process's peak resident memory) and
``plan_units_per_s``. Measured numbers for the global configuration: ``docs/performance.md``
("The globe, simulated"); ``benchmarks/dry_run.py`` reproduces them.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sm1km.config import RunConfig
from sm1km.runtime.result import StageResult
from sm1km.runtime.units import UnitGrid, scan_ledger
from sm1km.storage import master, store

log = logging.getLogger(__name__)

#: the scratch root's name under ``store.root`` (default of ``scratch=``)
SCRATCH = "_dryrun"


# --------------------------------------------------------------------------------------------
# measuring: requests and memory
# --------------------------------------------------------------------------------------------
class RequestCounter:
    """Object-store requests made inside the ``with`` block: S3 API calls by method (s3fs's
    ``_call_s3``), local file operations under ``local_roots`` by kind (``open_read``,
    ``open_write``, ``listdir``, ``rename``, ``remove``, ``mkdir``)."""

    _active: list[RequestCounter] = []
    _hooked = False

    def __init__(self, local_roots: Iterable[str] = ()):
        import os

        self.counts: Counter[str] = Counter()
        self.roots = tuple(os.path.abspath(r.removeprefix("file://")) for r in local_roots if not store.is_remote(r))
        self._restore: Callable[[], None] | None = None

    # local: one audit hook per process (it cannot be removed), counting while a counter is active
    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if not cls._active or event not in _LOCAL_EVENTS:
            return
        import os

        counter = cls._active[-1]
        path = args[0] if event != "os.rename" else args[1]
        if isinstance(path, int) or path is None:
            return
        try:
            p = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not any(p.startswith(r) for r in counter.roots):
            return
        kind = _LOCAL_EVENTS[event]
        if event == "open":
            mode, flags = args[1], args[2]
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            kind = "open_write" if writing else "open_read"
        counter.counts[kind] += 1

    def __enter__(self) -> RequestCounter:
        if not RequestCounter._hooked:
            sys.addaudithook(RequestCounter._hook)
            RequestCounter._hooked = True
        RequestCounter._active.append(self)
        try:
            import s3fs.core  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - s3fs is a dependency
            return self
        original = s3fs.core.S3FileSystem._call_s3
        counts = self.counts

        async def _call_s3(fs, method, *args, **kwargs):
            counts[f"s3.{method}"] += 1
            return await original(fs, method, *args, **kwargs)

        s3fs.core.S3FileSystem._call_s3 = _call_s3

        def restore() -> None:
            s3fs.core.S3FileSystem._call_s3 = original

        self._restore = restore
        return self

    def __exit__(self, *exc: object) -> None:
        RequestCounter._active.remove(self)
        if self._restore is not None:
            self._restore()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        return {"total": self.total, **dict(sorted(self.counts.items()))}


_LOCAL_EVENTS = {"open": "open", "os.listdir": "listdir", "os.scandir": "listdir", "os.rename": "rename",
                 "os.remove": "remove", "os.rmdir": "remove", "os.mkdir": "mkdir"}
_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


# --------------------------------------------------------------------------------------------
# one stage's plan
# --------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What one stage would do: units planned, done (in its ledger), templates it needs."""

    stage: str
    units_total: int = 0
    units_done: int = 0
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def units_todo(self) -> int:
        return self.units_total - self.units_done

    def as_dict(self) -> dict[str, Any]:
        return {"units_total": self.units_total, "units_done": self.units_done, "units_todo": self.units_todo,
                "stores": self.stores, "templates": self.templates, "notes": self.notes,
                "wall_s": round(self.wall_s, 3)}


@dataclass
class DryRunContext:
    cfg: RunConfig
    scratch: str
    so: dict[str, Any]
    made: dict[str, str] = field(default_factory=dict)  # store name -> scratch URL of its template

    def scratch_url(self, name: str) -> str:
        return store.join(self.scratch, name)


def _template(ctx: DryRunContext, plan: Plan, name: str, build: Callable[[], tuple[Any, dict]]) -> str:
    """Create store ``name``'s template under the scratch root (once per dry run); record what it wrote."""
    url = ctx.scratch_url(name)
    if name in ctx.made:
        return url
    t0 = time.perf_counter()
    tpl, enc = build()
    store.create_template(url, tpl, enc, ctx.so, overwrite=True)
    ctx.made[name] = url
    arrays = {v: [int(n) for n in tpl[v].shape] for v in tpl.variables}
    plan.templates.append({"store": name, "url": url, "arrays": arrays, "objects": _count_objects(url, ctx.so),
                           "bytes_if_full": _bytes_full(tpl, enc), "wall_s": round(time.perf_counter() - t0, 3)})
    return url


def _count_objects(url: str, so: dict) -> int:
    fs, path = store.filesystem(url, so)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    return len(fs.find(path))


def _bytes_full(tpl: Any, enc: dict) -> int:
    """Uncompressed bytes of the template's data variables once written (an upper bound of the store)."""
    total = 0
    for v in tpl.data_vars:
        dtype = np.dtype((enc.get(v) or {}).get("dtype") or tpl[v].dtype)
        total += int(np.prod([int(n) for n in tpl[v].shape], dtype=np.float64)) * dtype.itemsize
    return total


def _scan(ctx: DryRunContext, plan: Plan, store_name: str, grid: UnitGrid) -> None:
    """Plan every unit of ``grid`` (streamed) and check it against ``store_name``'s ledger."""
    t0 = time.perf_counter()
    scan = scan_ledger(store.Ledger(ctx.cfg.store.root, store_name, ctx.so), grid)
    t_scan = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = done = 0
    for i, _unit in enumerate(grid.units()):  # the plan itself, streamed: one unit at a time
        n += 1
        done += bool(scan.marked[i])
    t_plan = time.perf_counter() - t1
    stale = sum(1 for k in scan.others if "_" in k)  # region-like keys that are no unit of the plan
    plan.units_total += n
    plan.units_done += done
    plan.stores[store_name] = {"units": n, "done": done, "markers": scan.markers, "other_markers": len(scan.others),
                               "superseded_markers": stale, "scan_s": round(t_scan, 3), "plan_s": round(t_plan, 3)}


def _one_unit(ctx: DryRunContext, plan: Plan, what: str, url: str) -> None:
    fs, path = store.filesystem(url, ctx.so)
    done = bool(fs.exists(path))
    plan.units_total += 1
    plan.units_done += done
    plan.stores[what] = {"units": 1, "done": int(done), "marker": url}


def _count_files(url: str, so: dict, suffixes: tuple[str, ...]) -> int:
    return sum(1 for n in store.iter_names(url, so) if n.endswith(suffixes))


# --------------------------------------------------------------------------------------------
# the stages
# --------------------------------------------------------------------------------------------
def _input_templates(ctx: DryRunContext, plan: Plan) -> None:
    from sm1km.stages.ingest.coarse import CCI_VARS, ERA5_STATIC, ERA5_VARS
    from sm1km.stages.ingest.cube import COARSE_TIME_CHUNK, coord_arrays, template

    cfg = ctx.cfg
    lat, lon = coord_arrays(cfg.coarse_region, None)
    days = np.asarray(cfg.dates().values.astype("datetime64[D]"))
    sc = cfg.fusion.space_chunk
    cy, cx = min(sc, lat.size), min(sc, lon.size)
    _template(ctx, plan, "inputs/cci.zarr",
              lambda: template(days, lat, lon, CCI_VARS, (), (COARSE_TIME_CHUNK, cy, cx), (cy, cx), {}))
    _template(ctx, plan, "inputs/era5.zarr",
              lambda: template(days, lat, lon, ERA5_VARS, ERA5_STATIC, (COARSE_TIME_CHUNK, cy, cx), (cy, cx), {}))


def _predictors_template(ctx: DryRunContext) -> tuple[Any, dict]:
    """``inputs/predictors.zarr`` with every predictor kind (daily: float32 at 1 km + flags; static)."""
    from sm1km.stages.ingest.cube import Var, coord_arrays, template
    from sm1km.stages.ingest.predictor_tasks import DYNAMIC, LEAD_IN_DAYS, OBSERVED_FLAGS, STATIC

    cfg = ctx.cfg
    lat, lon = coord_arrays(cfg.coarse_region, cfg.grid.factor)
    first = np.datetime64(cfg.period.start, "D") - np.timedelta64(LEAD_IN_DAYS, "D")
    days = np.arange(first, np.datetime64(cfg.period.last_day, "D") + 1)
    tile = cfg.grid.tile_cells * cfg.grid.factor
    chunks = (cfg.grid.time_block_days, min(tile, lat.size), min(tile, lon.size))
    tv = [Var(d.var, "float32", {**d.attrs, "ancillary_variables": OBSERVED_FLAGS}) for d in DYNAMIC]
    tv.append(Var(OBSERVED_FLAGS, "uint8", {"flag_masks": [d.bit for d in DYNAMIC]}, 0))
    sv = [Var(s.var, s.dtype, dict(s.attrs), -1 if s.dtype == "int16" else np.nan) for s in STATIC]
    return template(days, lat, lon, tv, sv, chunks, chunks[1:], {})


def plan_ingest(ctx: DryRunContext) -> Plan:
    """Inputs: one unit per day of each daily store (done: the day is in the store's ingest index)."""
    from sm1km.stages.ingest.index import IngestIndex

    plan = Plan("ingest")
    _input_templates(ctx, plan)
    _template(ctx, plan, "inputs/predictors.zarr", lambda: _predictors_template(ctx))
    period = {str(d.date()) for d in ctx.cfg.dates()}
    for name in ("inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr"):
        index = IngestIndex(ctx.cfg.store.root, name, ctx.so).read() or {}
        done = len(period & set(index.get("days", {})))
        plan.units_total += len(period)
        plan.units_done += done
        plan.stores[name] = {"units": len(period), "done": done, "unit": "day"}
    plan.notes.append("ingest counts days per input store; a real run also hashes every input file")
    return plan


def plan_fuse(ctx: DryRunContext) -> Plan:
    from sm1km.stages import fuse as fz

    cfg = ctx.cfg
    plan = Plan("fuse")
    _input_templates(ctx, plan)  # the fused store's provenance names its inputs' metadata
    region = cfg.coarse_region
    f = cfg.fusion
    ref = f.reference_period
    start, end = (ref.start, ref.end) if ref is not None else (cfg.period.start, cfg.period.last_day)
    settings = fz.FitSettings(f.method, f.min_overlap_days, f.neighbourhood_cells, str(start), str(end))
    inp = fz.FusionInputs(ctx.scratch_url("inputs/cci.zarr"), ctx.scratch_url("inputs/era5.zarr"), ctx.so, [], [],
                          region.n_rows, region.n_cols, region.row0, region.col0)
    _template(ctx, plan, fz.STORE_NAME, lambda: fz._template(cfg, inp, settings, "dry-run"))
    _scan(ctx, plan, fz.STORE_NAME, UnitGrid.of(region, f.space_chunk, cfg.period.n_days, cfg.grid.time_block_days))
    return plan


def plan_train(ctx: DryRunContext) -> Plan:
    from sm1km.storage.model import card_url

    plan = Plan("train")
    _one_unit(ctx, plan, "model", card_url(ctx.cfg.model_path))
    return plan


def _model_sha(ctx: DryRunContext) -> str | None:
    from sm1km.storage.model import card_url

    card = store.read_json(card_url(ctx.cfg.model_path), ctx.so) or {}
    try:
        return str(card["files"][card["model_file"]]["sha256"])
    except (KeyError, TypeError):
        return None


def plan_downscale(ctx: DryRunContext) -> Plan:
    from sm1km.stages.downscale import shard_grid

    plan = Plan("downscale")
    sha = _model_sha(ctx)
    if sha is None:
        plan.notes.append("no trained model yet: the master template carries no model_sha256")
    _template(ctx, plan, master.MASTER_STORE, lambda: master.master_template(ctx.cfg, model_sha256=sha))
    _scan(ctx, plan, master.MASTER_STORE, shard_grid(ctx.cfg))
    return plan


def plan_aggregate(ctx: DryRunContext) -> Plan:
    from sm1km.stages.aggregate import monthly_grid

    plan = Plan("aggregate")
    _template(ctx, plan, master.MONTHLY_STORE, lambda: master.monthly_template(ctx.cfg))
    _scan(ctx, plan, master.MONTHLY_STORE, monthly_grid(ctx.cfg))
    return plan


def plan_export(ctx: DryRunContext) -> Plan:
    """Daily COGs (one file per day) and daily HDF5 (one file per month); done: the files present."""
    plan = Plan("export")
    cfg = ctx.cfg
    n_days = cfg.period.n_days
    n_months = len(master.month_starts(cfg.dates()))
    for fmt, n, suffixes in (("geotiff", n_days, (".tif",)), ("hdf5", n_months, (".h5", ".hdf5"))):
        done = min(_count_files(cfg.store.url("exports", fmt), ctx.so, suffixes), n)
        plan.units_total += n
        plan.units_done += done
        plan.stores[f"exports/{fmt}"] = {"units": n, "done": done, "unit": "file"}
    return plan


def plan_validate(ctx: DryRunContext) -> Plan:
    plan = Plan("validate")
    _one_unit(ctx, plan, "report", ctx.cfg.store.url("report", "index.html"))
    return plan


def plan_catalog(ctx: DryRunContext) -> Plan:
    plan = Plan("catalog")
    _one_unit(ctx, plan, "catalog", ctx.cfg.store.url("catalog", "collection.json"))
    return plan


#: stage name -> its planner (the stages of ``sm1km.pipeline.STAGES``)
PLANNERS: dict[str, Callable[[DryRunContext], Plan]] = {
    "ingest": plan_ingest, "fuse": plan_fuse, "train": plan_train, "downscale": plan_downscale,
    "aggregate": plan_aggregate, "export": plan_export, "validate": plan_validate, "catalog": plan_catalog,
}


# --------------------------------------------------------------------------------------------
# the dry run
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _scratch_root(ctx: DryRunContext, keep: bool) -> Iterator[None]:
    store.remove(ctx.scratch, ctx.so)  # what an interrupted dry run left
    try:
        yield
    finally:
        if not keep:
            store.remove(ctx.scratch, ctx.so)


def dry_run(cfg: RunConfig, stages: Iterable[str], *, scratch: str | None = None,
            keep_templates: bool = False) -> StageResult:
    """Plan ``stages`` of ``cfg`` without computing (see the module docstring); the caller holds the lock."""
    stages = list(stages)
    unknown = [s for s in stages if s not in PLANNERS]
    so = cfg.store.storage_options()
    ctx = DryRunContext(cfg, scratch or store.join(cfg.store.root, SCRATCH), so)
    if ctx.scratch.rstrip("/") == cfg.store.root.rstrip("/"):
        from sm1km.errors import ConfigError

        raise ConfigError("--dry-run-root", "the scratch root of a dry run cannot be store.root itself.",
                          f"leave it out (default: {store.join(cfg.store.root, SCRATCH)}) or name another folder.")
    t0 = time.perf_counter()
    plans: dict[str, Any] = {}
    with RequestCounter([cfg.store.root, ctx.scratch]) as req, _scratch_root(ctx, keep_templates):
        for name in stages:
            if name in unknown:
                plans[name] = {"planned": False, "notes": ["no dry-run planner for this stage"]}
                continue
            t1 = time.perf_counter()
            plan = PLANNERS[name](ctx)
            plan.wall_s = time.perf_counter() - t1
            plans[name] = plan.as_dict()
            log.info("dry run %s: %d units, %d done, %d to do (%.2f s)", name, plan.units_total, plan.units_done,
                     plan.units_todo, plan.wall_s)
    wall = time.perf_counter() - t0
    total = sum(int(p.get("units_total", 0)) for p in plans.values())
    done = sum(int(p.get("units_done", 0)) for p in plans.values())
    plan_s = sum(float(s.get("plan_s", 0)) + float(s.get("scan_s", 0))
                 for p in plans.values() for s in (p.get("stores") or {}).values() if isinstance(s, dict))
    templates = [t for p in plans.values() for t in p.get("templates", [])]
    stats = {"dry_run": True, "period": [str(cfg.period.start), str(cfg.period.end)],
             "region_cells": [cfg.coarse_region.n_rows, cfg.coarse_region.n_cols],
             "units_total": total, "units_done": done, "units_todo": total - done,
             "units_written": 0, "units_skipped": done,
             "units_by_stage": {n: int(p.get("units_total", 0)) for n, p in plans.items()},
             "templates": [{k: t[k] for k in ("store", "objects", "bytes_if_full", "wall_s")} for t in templates],
             "scratch_root": ctx.scratch, "templates_kept": keep_templates,
             "requests": req.snapshot(), "wall_s": round(wall, 3), "peak_rss_mb": peak_rss_mb(),
             "plan_units_per_s": round(total / plan_s) if plan_s > 0 else None}
    log.info("dry run: %d units (%d done, %d to do), %d templates, %d requests, %.1f s, peak RSS %.0f MB", total,
             done, total - done, len(templates), req.total, wall, stats["peak_rss_mb"])
    return StageResult(plans, stats)


__all__ = ["dry_run", "Plan", "PLANNERS", "RequestCounter", "peak_rss_mb", "SCRATCH"]
