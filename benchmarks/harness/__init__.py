"""``sm1km bench``: throughput, memory, scaling and cost projection of the pipeline, as JSON.

>>> from harness import run_bench
>>> result = run_bench("small", out="bench.json")      # doctest: +SKIP

Runs the real stage functions on a synthetic world (``sm1km.synth``): the world is the **4×**
region, its north-west quarter the **1×** region (see :mod:`.world`). Sections (see
:mod:`.sections`): ``ingest``, ``fusion``, ``downscale`` (end to end vs raw ``inplace_predict`` on
the same feature matrices vs features alone), ``profile`` (cProfile of one task), ``model_cost``
(trees × depth), ``compression``, ``memory`` (peak RSS of a worker process at 1× and 4×),
``scaling`` (LocalCluster workers/threads, scheduler overhead), ``export``, ``projection`` (the
global 2000–2020 downscale), ``units`` (full-size units of each stage next to their floors, measured
in the same run: :mod:`.units`), ``whole_run`` (every stage and store of the global run and of one
NRT day: :mod:`.whole_run`) and ``gpu``. Every figure is the median of ``reps`` repetitions. See
``docs/performance.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.machine import gpu_info, loadavg, machine_info, package_versions
from harness.schema import BENCH_SCHEMA, SCHEMA_VERSION
from harness.world import PRESETS, BenchPreset, get_preset, prepare_world, region_summary

log = logging.getLogger(__name__)

SECTIONS = ("ingest", "fusion", "downscale", "profile", "model_cost", "compression", "memory", "scaling",
            "export", "projection", "units", "whole_run", "gpu")

__all__ = ["run_bench", "summary_lines", "SECTIONS", "PRESETS", "BenchPreset", "BENCH_SCHEMA", "SCHEMA_VERSION",
           "gpu_info", "machine_info", "package_versions"]


def _guard(results: dict, name: str, fn: Callable[[], Any], timings: dict) -> Any:
    """Run one section; a failure is recorded as ``{"error": ...}`` and the run goes on."""
    t0 = time.perf_counter()
    log.info("bench: %s ...", name)
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark section must not abort the others
        log.error("bench: %s failed: %s", name, exc)
        value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
    timings[name] = round(time.perf_counter() - t0, 2)
    results[name] = value
    log.info("bench: %s done in %.1f s", name, timings[name])
    return value


def _ok(v) -> bool:
    return isinstance(v, dict) and "error" not in v


def run_bench(preset: str | BenchPreset = "small", out: str | Path | None = None, *, workdir: str | Path | None = None,
              reps: int = 3, keep: bool = False, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Run the benchmark; returns the result dict and writes it as JSON to ``out`` (if given).

    ``workdir``: where the world and stores go (default: a temporary folder, removed afterwards
    unless ``keep``; a given folder is kept, and an identical world in it is reused). ``skip``:
    section names to leave out (recorded as skipped).
    """
    from harness.sections import (
        bench_compression,
        bench_downscale,
        bench_export,
        bench_fusion,
        bench_gpu,
        bench_ingest,
        bench_memory_downscale,
        bench_model_cost,
        bench_scaling,
        master_bytes,
        memory_section,
        profile_task,
        projection,
        train_model,
    )
    from sm1km.stages.fuse import fuse

    p = get_preset(preset) if isinstance(preset, str) else preset
    skip = set(skip)
    unknown = skip - set(SECTIONS)
    if unknown:
        from sm1km.errors import ConfigError

        raise ConfigError("--skip", f"unknown section(s) {sorted(unknown)}.", f"choose from {', '.join(SECTIONS)}.")
    reps = max(1, int(reps))
    t_start = time.perf_counter()
    tmp = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="sm1km-bench-")) if tmp else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    res: dict[str, Any] = {
        "benchmark": "sm1km", "schema_version": SCHEMA_VERSION, "preset": p.name, "reps": reps,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(), "packages": package_versions(),
    }
    r: dict[str, Any] = {}
    try:
        world = prepare_world(p, wd)
        res["world"] = {"synth_preset": p.world, "overrides": dict(p.overrides), "seed": p.seed,
                        "region_1x": region_summary(world.cfg1), "region_4x": region_summary(world.cfg4),
                        "grid": {"tile_cells": world.cfg4.grid.tile_cells,
                                 "time_block_days": world.cfg4.grid.time_block_days},
                        "setup_s": world.setup_s}
        setup = res["world"]["setup_s"]
        cfg1, cfg4 = world.cfg1, world.cfg4

        ing4 = _guard(r, "_ingest_4x", lambda: bench_ingest(world, cfg4, "4x", reps), timings)
        if "fusion" in skip:
            t0 = time.perf_counter()
            fuse(cfg4, None, overwrite=True)
            setup["fuse_4x_s"] = round(time.perf_counter() - t0, 2)
        else:
            _guard(r, "fusion", lambda: bench_fusion(cfg4, reps), timings)
        model_card = Path(cfg4.model_path).with_name("model.json")
        if world.setup_s.get("world_reused") and model_card.exists():
            setup["train"] = "reused"
        else:
            setup["train"] = train_model(world, dict(p.train_options))
        ing1 = _guard(r, "_ingest_1x", lambda: bench_ingest(world, cfg1, "1x", reps), timings)
        t0 = time.perf_counter()
        fuse(cfg1, None, overwrite=True)
        setup["fuse_1x_s"] = round(time.perf_counter() - t0, 2)
        r["ingest"] = {"1x": r.pop("_ingest_1x"), "4x": r.pop("_ingest_4x")}
        if "ingest" in skip:
            r["ingest"]["note"] = "ingest always runs (it builds the stores); the figures are kept"

        ds = _guard(r, "downscale", lambda: bench_downscale(world, reps), timings)
        ctx = ds.pop("_ctx", None) if _ok(ds) else None
        mb = master_bytes(ctx, ds["land_pixel_days"], ds["pixel_days"]) if ctx else None
        if ctx is not None:
            if "profile" not in skip:
                _guard(r, "profile", lambda: profile_task(world, ctx), timings)
            if "model_cost" not in skip:
                _guard(r, "model_cost", lambda: bench_model_cost(world, ctx, reps, p.rf_compare), timings)
            if "compression" not in skip:
                comp = _guard(r, "compression", lambda: bench_compression(world, ctx, reps), timings)
                if _ok(comp):
                    comp["master_as_written"] = mb
        if "memory" not in skip:
            def memory():
                ds1 = bench_memory_downscale(world, cfg1, "1x", reps)
                ds4 = bench_memory_downscale(world, cfg4, "4x", reps)
                # ingest under a per-task budget both regions exceed: does memory stay with the budget?
                b = p.ingest_task_memory_bytes
                m1 = bench_ingest(world, cfg1, "1x_budget", reps, task_memory_bytes=b)
                m4 = bench_ingest(world, cfg4, "4x_budget", reps, task_memory_bytes=b)
                return memory_section(m1, m4, ds1, ds4, ing1 if _ok(ing1) else None, ing4 if _ok(ing4) else None)
            _guard(r, "memory", memory, timings)
        sc = None
        if "scaling" not in skip:
            sc = _guard(r, "scaling", lambda: bench_scaling(world, p.scaling, reps, region=p.scaling_region), timings)
        if "export" not in skip:
            def export_section():
                if not (Path(cfg1.store.root) / "master.zarr" / "zarr.json").exists():
                    from sm1km.stages.downscale import downscale
                    downscale(cfg1, None)
                return bench_export(world, p.export_formats, reps)
            _guard(r, "export", export_section, timings)
        if "projection" not in skip and _ok(ds) and mb:
            sched = sc.get("scheduler") if _ok(sc) else None
            _guard(r, "projection", lambda: projection(ds, sc if _ok(sc) else None, mb, cfg4, sched), timings)
        if "units" not in skip:
            from harness.units import bench_units

            _guard(r, "units", lambda: bench_units(wd, p.units, reps), timings)
        if "whole_run" not in skip:
            def whole():
                from harness.whole_run import measure_aggregate, store_bytes, whole_run

                agg = measure_aggregate(cfg1) if (Path(cfg1.store.root) / "master.zarr" / "zarr.json").exists() \
                    else None
                return whole_run(r, setup, agg, store_bytes(cfg4, cfg1))
            _guard(r, "whole_run", whole, timings)
        if "gpu" not in skip:
            _guard(r, "gpu", lambda: bench_gpu(world, ctx, reps) if ctx else gpu_info(), timings)
    finally:
        if tmp and not keep:
            shutil.rmtree(wd, ignore_errors=True)
    for name in SECTIONS:
        if name not in r:
            r[name] = {"skipped": True}
    res["results"] = r
    res["machine"]["loadavg_end"] = loadavg()
    res["section_wall_s"] = timings
    res["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    res["workdir"] = "temporary (removed)" if tmp and not keep else "kept"  # no machine paths in results
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    return res


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def errors(res: dict) -> dict[str, str]:
    """Sections that failed: {name: error}."""
    out = {}
    for k, v in res.get("results", {}).items():
        if isinstance(v, dict) and "error" in v:
            out[k] = v["error"]
        elif isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, dict) and "error" in vv:
                    out[f"{k}.{kk}"] = vv["error"]
    return out


def summary_lines(res: dict) -> list[str]:
    """A short human summary of a result (the CLI prints it)."""
    m, r = res["machine"], res["results"]
    lines = [f"sm1km bench ({res['preset']}, median of {res['reps']}) on {m['cores']} cores, {m['cpu_model']}, "
             f"{m['memory_gib']} GiB; load {m.get('loadavg')} -> {m.get('loadavg_end')}; {res['total_wall_s']} s"]

    def g(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    ds = r.get("downscale", {})
    if _ok(ds) and not ds.get("skipped"):
        lines.append(f"downscale end to end: {g(ds, 'end_to_end', 'pixel_days_per_s_per_core', 'median'):,.0f} "
                     f"pixel-days/s/core, {g(ds, 'end_to_end', 'land_pixel_days_per_s_per_core', 'median'):,.0f} land "
                     f"(per CPU-second: {g(ds, 'end_to_end', 'cpu_pixel_days_per_s_per_core', 'median'):,.0f}); "
                     f"land fraction {ds['land_fraction']}")
        lines.append(f"raw inplace_predict (same matrices): all rows "
                     f"{g(ds, 'raw_predict', 'pixel_days_per_s_per_core', 'median'):,.0f}, land rows "
                     f"{g(ds, 'raw_predict', 'land_rows_pixel_days_per_s_per_core', 'median'):,.0f}; ratio "
                     f"{ds['ratio_to_raw_predict']} (CPU {ds['ratio_to_raw_predict_cpu']}, all rows "
                     f"{ds['ratio_to_raw_predict_all_rows']}; target >= 0.7); features alone "
                     f"{g(ds, 'features', 'pixel_days_per_s_per_core', 'median'):,.0f}")
    fu = r.get("fusion", {})
    if _ok(fu) and not fu.get("skipped"):
        lines.append(f"fusion: {g(fu, 'pixel_days_per_s_per_core', 'median'):,.0f} 25 km pixel-days/s/core")
    ing = r.get("ingest", {})
    for k in ("1x", "4x"):
        v = ing.get(k)
        if _ok(v):
            lines.append(f"ingest {k}: read {g(v, 'read_mb_per_s', 'median')} MB/s, written "
                         f"{g(v, 'written_mb_per_s', 'median')} MB/s, peak RSS {g(v, 'peak_rss_mb', 'median')} MiB")
    mem = r.get("memory", {})
    if _ok(mem) and not mem.get("skipped"):
        lines.append(f"memory 4x/1x: ingest {g(mem, 'ingest', 'ratio_4x_to_1x')}, downscale "
                     f"{g(mem, 'downscale', 'ratio_4x_to_1x')} (target <= 1.2)")
    sc = r.get("scaling", {})
    if _ok(sc) and not sc.get("skipped"):
        parts = [f"{k} {v['pixel_days_per_s']['median']:,.0f}/s eff {v.get('parallel_efficiency')} (CPU eff "
                 f"{v.get('cpu_efficiency')}, cores got {v['cores_obtained']['median']})" for k, v in sc["runs"].items()]
        lines.append("scaling: " + "; ".join(parts))
        if sc.get("scheduler"):
            lines.append(f"scheduler: {sc['scheduler']['run_bounded_ms_per_task']['median']} ms/task")
    ex = r.get("export", {})
    if _ok(ex) and not ex.get("skipped"):
        lines.append("export: " + "; ".join(f"{k} {v['written_mb_per_s']['median']} MB/s written"
                                            for k, v in ex.items() if _ok(v)))
    pr = r.get("projection", {})
    if _ok(pr) and not pr.get("skipped"):
        lines.append(f"global 2000-2020: {pr['core_hours']:,} core-hours ({pr['core_hours_from_cpu_time']:,} from CPU "
                     f"time); {pr['wall_hours_on_workers']} h on N workers; {pr['bytes']['stored_total'] / 1e12:.1f} TB "
                     f"stored; {pr['tasks']['total_shards']:,} shards")
    u = r.get("units", {})
    if _ok(u) and not u.get("skipped"):
        parts = []
        for k, key in (("ingest_cci_day", "ratio_to_decode"), ("ingest_cci_day", "ratio_to_naive"),
                       ("ingest_era5_day", "ratio_to_decode"), ("ingest_era5_day", "ratio_to_naive"),
                       ("modis_tile", "ratio_to_decode"), ("export_cog_strip", "ratio_to_floor")):
            if _ok(u.get(k)):
                parts.append(f"{k} {key.removeprefix('ratio_to_')} {u[k][key]}")
        lines.append(f"units ({u['size']}), floor / stage: " + "; ".join(parts))
    wr = r.get("whole_run", {})
    if _ok(wr) and not wr.get("skipped"):
        lines.append(f"whole run 2000-2020: {wr['core_hours_total']:,} core-hours, "
                     f"{wr['bytes_stored_total'] / 1e12:.1f} TB stored; one NRT day {wr['nrt_day_core_hours_total']} "
                     "core-hours")
    gpu = r.get("gpu", {})
    lines.append(f"gpu: {'available' if gpu.get('available') else 'not available'}"
                 + (f" ({gpu.get('reason')})" if gpu.get("reason") else ""))
    for k, v in errors(res).items():
        lines.append(f"ERROR in {k}: {v}")
    return lines
