"""The benchmark sections: each measures one thing with the real stage functions and returns a dict.

Conventions: a *figure* is ``{"median", "unit", "n", "reps"}`` (:func:`timing.figure`);
``*_per_s_per_core`` rates of work done in one single-threaded process use its wall time (one
process = one core) and, beside them, ``cpu_*`` rates use its CPU time — on a shared machine the
CPU-time rate is what the code costs, the wall-time rate what this machine delivered.
"""

from __future__ import annotations

import cProfile
import dataclasses
import io
import json
import logging
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.machine import loadavg
from harness.timing import _round, figure, median, peak_rss_bytes, rate_figure, timed
from harness.world import BenchWorld, input_files, region_summary, tree_bytes, tree_files

log = logging.getLogger(__name__)

#: The global 2000-2020 run (SCIENCE.md): 7,671 days x 43200 x 21600 px at factor 30, ~30 % land.
GLOBAL_DAYS = 7671
GLOBAL_PX = (21600, 43200)
GLOBAL_LAND_FRACTION = 0.30
#: share of master tiles that hold any land cell, by tile_cells, counted on the ERA5 0.25 deg land mask
#: (tests/data/real/.../landmask_0.25_0.25.nc, land > 0.5; 23.6 % land cells, no ice sheets):
#: 1 deg tiles 26.5 % (89 % of their cells land), 2 deg tiles 29.5 % (80 %)
GLOBAL_LAND_TILE_FRACTIONS = {4: 0.265, 8: 0.295}
GLOBAL_LAND_TILE_FRACTION = GLOBAL_LAND_TILE_FRACTIONS[4]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _rm(*paths) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def _pythonpath() -> str:
    """PYTHONPATH for a worker process: the folder that holds this harness first (it is not installed)."""
    here = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + rest if rest else "")


def _run_worker(job: dict, workdir: Path) -> dict:
    """Run one stage in a fresh Python process (``harness.worker``); its JSON result."""
    fd, path = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
        json.dump(job, f)
    try:
        r = subprocess.run([sys.executable, "-m", "harness.worker", path], capture_output=True,
                           text=True, env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": _pythonpath()})
    finally:
        os.unlink(path)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark worker ({job['stage']}) failed with exit code {r.returncode}: "
                           f"{r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _model_summary(booster) -> dict[str, Any]:
    """Trees, their depth and leaves: prediction cost grows with trees x depth (one root-to-leaf walk
    per tree and row)."""
    dumps = booster.get_dump(dump_format="json")

    def walk(node, d, acc):
        kids = node.get("children")
        if not kids:
            acc.append(d)
            return
        for k in kids:
            walk(k, d + 1, acc)

    depths, leaves = [], 0
    for text in dumps:
        acc: list[int] = []
        walk(json.loads(text), 0, acc)
        depths.append(max(acc))
        leaves += len(acc)
    n = len(dumps)
    return {"trees": n, "max_depth": int(max(depths) if depths else 0),
            "mean_tree_depth": round(float(np.mean(depths)) if depths else 0.0, 2), "leaves": int(leaves),
            "trees_x_max_depth": int(n * (max(depths) if depths else 0)),
            "sum_tree_depths": int(sum(depths))}


def _read_predictors(spec, ctx) -> dict[str, np.ndarray]:
    """All predictors of a shard (as ``downscale.read_inputs`` reads them for a shard with land)."""
    from sm1km.core.features import PREDICTOR_NAMES
    from sm1km.storage import store

    ds = store.open_dataset(ctx.predictors_url, ctx.storage_options)
    y, x = spec.fine
    pt = slice(ctx.predictors_t0 + spec.t0, ctx.predictors_t0 + spec.t1)
    out = {}
    for name in PREDICTOR_NAMES:
        sel = {"lat": y, "lon": x, **({"time": pt} if "time" in ds[name].dims else {})}
        out[name] = np.asarray(ds[name].isel(sel).values, dtype=np.float32)
    return out


def _most_land_spec(cfg, ctx):
    """The shard of ``cfg`` with the most land (not sea) 25 km cell-days."""
    from sm1km.stages.downscale import shard_specs
    from sm1km.storage import store

    sm = store.open_dataset(ctx.fused_url, ctx.storage_options)["sm"]
    best, best_n = None, -1
    for spec in shard_specs(cfg):
        block = sm.isel(time=slice(ctx.fused_t0 + spec.t0, ctx.fused_t0 + spec.t1), lat=slice(spec.r0, spec.r1),
                        lon=slice(spec.c0, spec.c1)).values
        n = int(np.isfinite(block).sum())
        if n > best_n:
            best, best_n = spec, n
    return best


def _land_rows(fused_sm, flag, predictors, factor: int) -> np.ndarray:
    """Rows (C order over t, y, x) the product keeps: not 25 km sea, not 1 km water."""
    from sm1km.stages import downscale

    sea = (flag == 0) | np.isnan(fused_sm)
    mask = np.repeat(np.repeat(sea, factor, axis=1), factor, axis=2)
    water = getattr(downscale, "WATER_LAND_COVER", None)
    lc = predictors.get("land_cover")
    if water is not None and lc is not None:
        mask = mask | np.isin(lc, water)
    return ~mask.reshape(-1)


# --------------------------------------------------------------------------------------------
# ingest (+ memory at 1x/4x), fusion, training (setup)
# --------------------------------------------------------------------------------------------
def bench_ingest(world: BenchWorld, cfg, name: str, reps: int, task_memory_bytes: int | None = None) -> dict[str, Any]:
    """Ingest of ``cfg`` in a fresh process per repetition: MB/s read and written, peak RSS.

    ``task_memory_bytes``: the ingest's per-task memory budget (default: the stage's, a quarter of a
    worker thread's memory limit — 1 GiB, which a small region never reaches, so its read tasks grow
    with the region up to it)."""
    root = Path(cfg.store.root)
    files = input_files(cfg)
    in_bytes = sum(os.path.getsize(f) for f in files)
    cfg_file = world.config_file(cfg, f"ingest_{name}")
    runs = []
    for _ in range(max(1, reps)):
        job = {"stage": "ingest", "config": cfg_file,
               "clean": [str(root / "inputs"), str(root / "_ledger" / "inputs")],
               "options": {"task_memory_bytes": int(task_memory_bytes)} if task_memory_bytes else {}}
        runs.append(_run_worker(job, world.workdir))
    out_bytes = tree_bytes(root / "inputs")
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    return {
        "region": region_summary(cfg),
        "input_files": len(files), "input_bytes": in_bytes, "written_bytes": out_bytes,
        "written_objects": tree_files(root / "inputs"),
        "read_mb_per_s": rate_figure(in_bytes / 1e6, walls, "MB/s (input files / wall)"),
        "written_mb_per_s": rate_figure(out_bytes / 1e6, walls, "MB/s (stores written / wall)"),
        "cpu_read_mb_per_s": rate_figure(in_bytes / 1e6, cpus, "MB/s per CPU-second"),
        "wall_s": figure(walls, "s"), "cpu_s": figure(cpus, "s"),
        "task_memory_bytes": task_memory_bytes or "stage default",
        "peak_rss_mb": figure([r["peak_rss_bytes"] / 2**20 for r in runs], "MiB"),
        "rss_before_stage_mb": figure([r["peak_rss_before_stage_bytes"] / 2**20 for r in runs], "MiB"),
        "note": "one fresh process per repetition, stage run synchronously (that process is the worker); "
                "read = whole input files (CCI/ERA5 netCDF, GeoTIFF predictors, ISMN) matched by the config",
    }


def bench_fusion(cfg, reps: int, core_days: int = 365) -> dict[str, Any]:
    """``fuse`` (overwrite) in this process, synchronous: coarse pixel-days per second per core.

    The stage on a small world is dominated by fixed costs (opening stores, template, ledger), so
    ``core`` also times the science alone (``fusion_core.fuse_block``) on the world's ingested
    CCI/ERA5 tiled to ``core_days`` days and 2x2 times the region - a block of the size a fusion
    task of a large run handles.
    """
    from sm1km.core.fusion import fuse_block
    from sm1km.stages.fuse import fuse, land_mask
    from sm1km.storage import store

    samples = [timed(lambda: fuse(cfg, None, overwrite=True)) for _ in range(max(1, reps))]
    reg = region_summary(cfg)
    walls = [s.wall_s for s in samples]
    cci = store.open_dataset(cfg.store.url("inputs", "cci.zarr"))["sm"].values.astype(np.float64)
    e5 = store.open_dataset(cfg.store.url("inputs", "era5.zarr"))
    era5 = e5["swvl1"].values.astype(np.float64)
    nt = cci.shape[0]
    k = max(1, -(-core_days // nt))
    cci_t, era5_t = np.tile(cci, (k, 2, 2))[:core_days], np.tile(era5, (k, 2, 2))[:core_days]
    land = np.tile(land_mask(cci, e5["land_fraction"].values.astype(np.float64)), (2, 2))
    fz = cfg.fusion
    core = [timed(lambda: fuse_block(cci_t, era5_t, land, fz.method, fz.min_overlap_days, fz.neighbourhood_cells))
            for _ in range(max(1, reps))]
    n_core = int(cci_t.size)
    stage_rate = median([reg["cell_days"] / s.cpu_s for s in samples if s.cpu_s > 0] or [0.0])
    core_rate = median([n_core / s.cpu_s for s in core if s.cpu_s > 0] or [float("inf")])
    return {"region": reg, "pixel_days": reg["cell_days"],
            "ratio_to_formula": _round(stage_rate / core_rate, 4),
            "ratio_to_formula_note": "the stage's CPU rate (fuse of the bench world: fixed costs of opening "
                                     "stores, fitting, templates, ledger over few cell-days) / the formula's "
                                     "(fuse_block on the 365-day block)",
            "pixel_days_per_s_per_core": rate_figure(reg["cell_days"], walls, "25 km pixel-days/s/core"),
            "cpu_pixel_days_per_s_per_core": rate_figure(reg["cell_days"], [s.cpu_s for s in samples],
                                                         "25 km pixel-days per CPU-second"),
            "wall_s": figure(walls, "s"),
            "core": {"block": list(cci_t.shape), "method": fz.method,
                     "pixel_days_per_s_per_core": rate_figure(n_core, [s.wall_s for s in core], "25 km pixel-days/s/core"),
                     "cpu_pixel_days_per_s_per_core": rate_figure(n_core, [s.cpu_s for s in core],
                                                                  "25 km pixel-days per CPU-second")}}


def train_model(world: BenchWorld, options: dict) -> dict[str, Any]:
    """The real ``train`` stage on the 4x stores (setup: timed once, not a figure)."""
    from sm1km.stages.train import train

    s = timed(lambda: train(world.cfg4, None, **options))
    return {"wall_s": round(s.wall_s, 2), "cpu_s": round(s.cpu_s, 2), "options": {k: list(v) if isinstance(v, tuple)
                                                                                   else v for k, v in options.items()}}


# --------------------------------------------------------------------------------------------
# downscale: end to end vs raw predict vs features, on the same shards
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Task:
    spec: Any
    pixel_days: int


def _downscale_setup(world: BenchWorld, tag: str):
    from sm1km.stages import downscale
    from sm1km.storage import master, store
    from sm1km.storage.model import clear_model_cache, load_model

    cfg = world.cfg1
    clear_model_cache()  # time a cold load: what each worker process pays once
    s_load = timed(lambda: load_model(cfg.model_path, cfg.store.storage_options(), n_threads=cfg.model.n_threads,
                                      device=cfg.model.predict_device))
    model = s_load.result
    scratch = world.scratch / tag
    _rm(scratch)
    ctx = dataclasses.replace(downscale.make_context(cfg, model), master_url=str(scratch / "master.zarr"),
                              root=str(scratch))
    tpl, enc = master.master_template(cfg, model_sha256=model.sha256)
    store.create_template(ctx.master_url, tpl, enc, {})
    tasks = []
    for spec in downscale.shard_specs(cfg):
        f = spec.factor
        tasks.append(_Task(spec, (spec.t1 - spec.t0) * (spec.r1 - spec.r0) * f * (spec.c1 - spec.c0) * f))
    return cfg, model, ctx, tasks, s_load.wall_s


def bench_downscale(world: BenchWorld, reps: int) -> dict[str, Any]:
    """Per core, on the 1x region, shard by shard in this process (xgboost threads from the config):

    * ``end_to_end``: the real task ``downscale.downscale_shard`` (read fused + predictors, build
      features, predict sm and uncertainty, mask, encode int16, compressed write, ledger mark);
    * ``raw_predict``: ``xgboost.Booster.inplace_predict`` of the model (and of the uncertainty
      model, which the task also runs) on the *same* feature matrix — all rows, and land rows only;
    * ``features``: ``features.build_features`` alone.

    Each shard's three measurements follow each other, so load changes hit them alike.
    """
    from sm1km.core.features import build_features, day_of_year, empty_features
    from sm1km.runtime import caches
    from sm1km.stages import downscale

    cfg, model, ctx, tasks, load_s = _downscale_setup(world, "downscale")
    pixel_days = sum(t.pixel_days for t in tasks)
    # a worker's first task loads the model (load_s); the measured tasks find it in the worker cache
    caches.worker_model(ctx.model_url, ctx.model_sha256, ctx.storage_options, ctx.n_threads, ctx.device)
    boosters = [model.booster] + ([model.uncertainty_booster] if model.has_uncertainty else [])
    per_rep: list[dict[str, float]] = []
    land_pd = 0
    for _ in range(max(1, reps)):
        acc = dict.fromkeys(("e2e_wall", "e2e_cpu", "raw_wall", "raw_cpu", "raw_main_wall", "raw_land_wall",
                             "raw_land_cpu", "feat_wall", "feat_cpu"), 0.0)
        land_pd = 0
        for t in tasks:
            s = timed(lambda: downscale.downscale_shard(t.spec, ctx))
            acc["e2e_wall"] += s.wall_s
            acc["e2e_cpu"] += s.cpu_s
            land_pd += s.result["land_pixel_days"]
            fused_sm, flag, preds, times = downscale.read_inputs(t.spec, ctx)
            if not preds:  # all-sea shard: the task predicts nothing; raw "all rows" still predicts it
                preds = _read_predictors(t.spec, ctx)
            buf = empty_features(t.pixel_days)
            f = timed(lambda: build_features(fused_sm, flag, preds, day_of_year(times), t.spec.factor,
                                             out=buf))  # noqa: F821 (defined above; the `del` below confuses pyflakes)
            acc["feat_wall"] += f.wall_s
            acc["feat_cpu"] += f.cpu_s
            X = f.result
            for i, b in enumerate(boosters):
                r = timed(lambda: b.inplace_predict(X))  # noqa: F821 (as above)
                acc["raw_wall"] += r.wall_s
                acc["raw_cpu"] += r.cpu_s
                if i == 0:
                    acc["raw_main_wall"] += r.wall_s
            keep = _land_rows(fused_sm, flag, preds, t.spec.factor)
            if keep.any():
                XL = X[keep]
                for b in boosters:
                    r = timed(lambda: b.inplace_predict(XL))
                    acc["raw_land_wall"] += r.wall_s
                    acc["raw_land_cpu"] += r.cpu_s
                del XL
            del X, buf
        per_rep.append(acc)

    def col(k):
        return [r[k] for r in per_rep]

    unit = "pixel-days/s/core"
    # strict: the raw model work the product needs (its kept rows) vs the whole task doing it
    ratio = [r["raw_land_wall"] / r["e2e_wall"] for r in per_rep]
    ratio_cpu = [r["raw_land_cpu"] / r["e2e_cpu"] for r in per_rep]
    ratio_all = [r["raw_wall"] / r["e2e_wall"] for r in per_rep]
    return {
        "region": region_summary(cfg),
        "tasks": len(tasks), "pixel_days_per_task": tasks[0].pixel_days if tasks else 0,
        "pixel_days": pixel_days, "land_pixel_days": land_pd,
        "land_fraction": round(land_pd / pixel_days, 4) if pixel_days else None,
        "xgboost_threads": cfg.model.n_threads, "with_uncertainty": model.has_uncertainty,
        "model_load_s": round(load_s, 3),
        "end_to_end": {
            "pixel_days_per_s_per_core": rate_figure(pixel_days, col("e2e_wall"), unit),
            "land_pixel_days_per_s_per_core": rate_figure(land_pd, col("e2e_wall"), "land " + unit),
            "cpu_pixel_days_per_s_per_core": rate_figure(pixel_days, col("e2e_cpu"), "pixel-days per CPU-second"),
            "cpu_land_pixel_days_per_s_per_core": rate_figure(land_pd, col("e2e_cpu"), "land pixel-days per CPU-second"),
            "wall_s": figure(col("e2e_wall"), "s"),
        },
        "raw_predict": {
            "pixel_days_per_s_per_core": rate_figure(pixel_days, col("raw_wall"), unit),
            "cpu_pixel_days_per_s_per_core": rate_figure(pixel_days, col("raw_cpu"), "pixel-days per CPU-second"),
            "model_only_pixel_days_per_s_per_core": rate_figure(pixel_days, col("raw_main_wall"), unit),
            "land_rows_pixel_days_per_s_per_core": rate_figure(pixel_days, col("raw_land_wall"), unit,
                                                               note="inplace_predict on the kept (land) rows only; "
                                                                    "rate per pixel-day of the whole shard"),
            "boosters": ["model"] + (["uncertainty"] if model.has_uncertainty else []),
            "note": "Booster.inplace_predict on the same float32 feature matrices the tasks build",
        },
        "features": {"pixel_days_per_s_per_core": rate_figure(pixel_days, col("feat_wall"), unit),
                     "cpu_pixel_days_per_s_per_core": rate_figure(pixel_days, col("feat_cpu"),
                                                                  "pixel-days per CPU-second")},
        "ratio_to_raw_predict": _round(median(ratio), 4),
        "ratio_to_raw_predict_reps": [_round(v, 4) for v in ratio],
        "ratio_to_raw_predict_cpu": _round(median(ratio_cpu), 4),
        "ratio_to_raw_predict_all_rows": _round(median(ratio_all), 4),
        "ratio_target": 0.7,
        "meets_target": bool(median(ratio) >= 0.7),
        "ratio_definition": "end-to-end rate / raw Booster.inplace_predict rate (model + uncertainty model) on the "
                            "same feature matrices, restricted to the rows the product keeps (land: the task "
                            "predicts only those) = raw predict time / task time; _all_rows: raw predict of every "
                            "row of the matrices (sea included); _cpu: the same with CPU time",
        "_ctx": ctx,  # removed before writing (used by the profile and compression sections)
    }


def profile_task(world: BenchWorld, ctx) -> dict[str, Any]:
    """cProfile of one downscale task (the shard with the most land), after a warm-up run."""
    from sm1km.stages import downscale

    spec = _most_land_spec(world.cfg1, ctx)
    downscale.downscale_shard(spec, ctx)  # warm (model cache, imports)
    pr = cProfile.Profile()
    s = timed(lambda: (pr.enable(), downscale.downscale_shard(spec, ctx), pr.disable()))
    st = pstats.Stats(pr)
    total = sum(v[2] for v in st.stats.values()) or 1.0
    groups = {
        "read_inputs": ("downscale.py", "read_inputs"),
        "build_features": ("features.py", "build_features"),
        "predict (model)": ("model.py", "predict"),
        "predict_uncertainty": ("model.py", "predict_uncertainty"),
        "encode_int16": ("encoding.py", "encode_int16"),
        "write_packed (whole-shard encode + put)": ("master.py", "write_packed"),
        "ledger mark": ("store.py", "mark"),
    }
    cum = {}
    for name, (fname, func) in groups.items():
        cum[name] = round(sum(v[3] for k, v in st.stats.items() if k[0].endswith(fname) and k[2] == func), 4)
    inplace = sum(v[3] for k, v in st.stats.items() if k[2] == "inplace_predict")
    top = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(12)
    return {
        "shard": dataclasses.asdict(spec), "wall_s": round(s.wall_s, 4), "cpu_s": round(s.cpu_s, 4),
        "cumulative_s": cum, "xgboost_inplace_predict_s": round(inplace, 4),
        "xgboost_share": round(inplace / max(s.wall_s, 1e-9), 4),
        "top_tottime": [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "ncalls": v[1], "tottime_s": round(v[2], 4),
                         "cumtime_s": round(v[3], 4)} for k, v in top],
        "profiled_total_s": round(total, 4),
    }


# --------------------------------------------------------------------------------------------
# model cost: trees x depth, and the random forest of the published method
# --------------------------------------------------------------------------------------------
def bench_model_cost(world: BenchWorld, ctx, reps: int, rf_compare: bool) -> dict[str, Any]:
    """Predict cost of the trained model(s), and of a random forest with train.RF_PARAMS."""
    from sm1km.core.features import build_features, day_of_year
    from sm1km.stages import downscale
    from sm1km.storage.model import load_model

    cfg = world.cfg1
    model = load_model(cfg.model_path, n_threads=cfg.model.n_threads)
    spec = _most_land_spec(cfg, ctx)
    fused_sm, flag, _, times = downscale.read_inputs(spec, ctx)
    X = build_features(fused_sm, flag, _read_predictors(spec, ctx), day_of_year(times), spec.factor)
    n = X.shape[0]
    out: dict[str, Any] = {"rows": n, "algorithm": model.card.get("algorithm"),
                           "target_kind": model.card.get("target_kind")}

    def cost(b) -> dict[str, Any]:
        b.set_param({"nthread": int(cfg.model.n_threads)})
        walls = [timed(lambda: b.inplace_predict(X)).wall_s for _ in range(max(1, reps))]
        d = _model_summary(b)
        d["rows_per_s_per_core"] = rate_figure(n, walls, "rows/s/core")
        d["ns_per_row_per_tree"] = round(median(walls) / n / max(d["trees"], 1) * 1e9, 2)
        d["ns_per_row_per_tree_level"] = round(median(walls) / n / max(d["sum_tree_depths"], 1) * 1e9, 2)
        return d

    out["model"] = cost(model.booster)
    if model.has_uncertainty:
        out["uncertainty_model"] = cost(model.uncertainty_booster)
    if rf_compare:
        from sm1km.stages.collocate import collocate_stores
        from sm1km.stages.train import RF_PARAMS, Trainer, feature_matrix

        table, _ = collocate_stores(world.cfg4)
        Xt, y = feature_matrix(table), table["y"].to_numpy(np.float64)
        if len(y):
            rf = Trainer("rf", seed=world.cfg4.seeds.train, n_threads=4, target="residual").fit(Xt, y)
            d = cost(rf)
            d["params"] = {k: RF_PARAMS[k] for k in ("num_parallel_tree", "max_depth", "min_child_weight")}
            d["trained_on_samples"] = int(len(y))
            out["random_forest_default"] = d
    return out


# --------------------------------------------------------------------------------------------
# compression of the master's int16 blocks
# --------------------------------------------------------------------------------------------
def bench_compression(world: BenchWorld, ctx, reps: int) -> dict[str, Any]:
    """Stored ratio and speed of candidate codecs on the master's real int16 inner chunks (the shard
    with the most land, cut into the master's inner chunks, each compressed on its own as zarr does)."""
    import numcodecs
    import zarr

    spec = _most_land_spec(world.cfg1, ctx)
    g = zarr.open_group(ctx.master_url, mode="r")
    arr = g["sm"]
    y, x = spec.fine
    block = np.ascontiguousarray(arr[spec.t0:spec.t1, y, x])
    inner = arr.chunks
    chunks = [np.ascontiguousarray(block[t:t + inner[0], i:i + inner[1], j:j + inner[2]])
              for t in range(0, block.shape[0], inner[0]) for i in range(0, block.shape[1], inner[1])
              for j in range(0, block.shape[2], inner[2])]
    raw = sum(c.nbytes for c in chunks)
    codecs = {
        "zstd-1": numcodecs.Zstd(level=1),
        "zstd-3 (zarr's default)": numcodecs.Zstd(level=3),
        "zstd-5": numcodecs.Zstd(level=5),
        "zstd-9": numcodecs.Zstd(level=9),
        "blosc-zstd-5-shuffle": numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE),
        "blosc-lz4-5-shuffle": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
        "blosc-zstd-3-bitshuffle": numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE),
        "blosc-zstd-5-bitshuffle (the master's)": numcodecs.Blosc("zstd", 5, numcodecs.Blosc.BITSHUFFLE),
    }
    out: dict[str, Any] = {"inner_chunk": list(inner), "chunks": len(chunks), "raw_bytes": raw,
                           "master_codecs": [c.to_dict() if hasattr(c, "to_dict") else str(c)
                                             for c in getattr(arr.metadata, "codecs", [])][:4]
                           if hasattr(arr, "metadata") else None, "codecs": {}}
    for name, codec in codecs.items():
        enc_w, dec_w, size = [], [], 0
        for _ in range(max(1, reps)):
            s = timed(lambda: [codec.encode(c) for c in chunks])
            enc_w.append(s.wall_s)
            size = sum(len(b) for b in s.result)
            d = timed(lambda: [codec.decode(b) for b in s.result])
            dec_w.append(d.wall_s)
        out["codecs"][name] = {"ratio": round(raw / size, 3), "bytes": size,
                               "compress_mb_per_s": rate_figure(raw / 1e6, enc_w, "MB/s (raw int16)"),
                               "decompress_mb_per_s": rate_figure(raw / 1e6, dec_w, "MB/s (raw int16)")}
    return out


# --------------------------------------------------------------------------------------------
# memory: peak RSS of a worker at 1x and 4x
# --------------------------------------------------------------------------------------------
def bench_memory_downscale(world: BenchWorld, cfg, name: str, reps: int) -> dict[str, Any]:
    """The downscale stage of ``cfg`` in a fresh process (synchronous): peak RSS, wall, CPU."""
    root = Path(cfg.store.root)
    cfg_file = world.config_file(cfg, f"downscale_{name}")
    runs = []
    for _ in range(max(1, reps)):
        job = {"stage": "downscale", "config": cfg_file,
               "clean": [str(root / "master.zarr"), str(root / "_ledger" / "master.zarr")]}
        runs.append(_run_worker(job, world.workdir))
    return {"region": region_summary(cfg), "peak_rss_mb": figure([r["peak_rss_bytes"] / 2**20 for r in runs], "MiB"),
            "rss_before_stage_mb": figure([r["peak_rss_before_stage_bytes"] / 2**20 for r in runs], "MiB",
                                          note="the process after importing the stage module, before any work"),
            "wall_s": figure([r["wall_s"] for r in runs], "s"), "cpu_s": figure([r["cpu_s"] for r in runs], "s"),
            "stats": runs[-1]["stats"]}


def memory_section(ingest1, ingest4, ds1, ds4, ingest1_default=None, ingest4_default=None) -> dict[str, Any]:
    def ratio(a, b):
        return round(b["peak_rss_mb"]["median"] / a["peak_rss_mb"]["median"], 3)

    r_ing, r_ds = ratio(ingest1, ingest4), ratio(ds1, ds4)
    default = {}
    if ingest1_default and ingest4_default:
        default = {"default_budget": {"1x_peak_rss_mb": ingest1_default["peak_rss_mb"],
                                      "4x_peak_rss_mb": ingest4_default["peak_rss_mb"],
                                      "ratio_4x_to_1x": ratio(ingest1_default, ingest4_default),
                                      "note": "the stage's default budget (1 GiB per task at 4 GiB worker memory) "
                                              "is above what these regions need: its read tasks grow with the "
                                              "region up to the budget, then stay"}}
    return {
        "ingest": {"1x_peak_rss_mb": ingest1["peak_rss_mb"], "4x_peak_rss_mb": ingest4["peak_rss_mb"],
                   "rss_before_stage_mb": ingest1["rss_before_stage_mb"],
                   "task_memory_bytes": ingest1.get("task_memory_bytes"),
                   "ratio_4x_to_1x": r_ing, "meets_target": r_ing <= 1.2, **default},
        "downscale": {"1x_peak_rss_mb": ds1["peak_rss_mb"], "4x_peak_rss_mb": ds4["peak_rss_mb"],
                      "rss_before_stage_mb": ds1["rss_before_stage_mb"],
                      "ratio_4x_to_1x": r_ds, "meets_target": r_ds <= 1.2,
                      "1x_wall_s": ds1["wall_s"], "4x_wall_s": ds4["wall_s"]},
        "ratio_target": 1.2,
        "method": "each stage run synchronously in a fresh Python process (driver = worker); peak RSS = VmHWM "
                  "of /proc/self/status at its end (not ru_maxrss, which Linux carries over from the parent "
                  "across fork+exec); 4x = twice the rows and columns of 0.25 deg cells",
    }


# --------------------------------------------------------------------------------------------
# scaling on a dask LocalCluster, and the scheduler's per-task overhead
# --------------------------------------------------------------------------------------------
def _ident(x):
    return x


def _warm_imports() -> None:
    """Import what a downscale task needs (a real worker pays this once, on its first task)."""
    import xgboost  # noqa: F401

    from sm1km.core import features  # noqa: F401
    from sm1km.stages import downscale  # noqa: F401  (imported for the import cost, not for a name)
    from sm1km.storage import (
        master,  # noqa: F401
        model,  # noqa: F401
    )


def bench_scheduler(client, n: int = 1000) -> dict[str, Any]:
    """Per-task overhead of the dask scheduler: ``n`` trivial tasks via client.map and via our bounded
    submission (``runtime.runner.run_tasks``, which the stages use; the figure keeps its name
    ``run_bounded_ms_per_task`` from the runner's first home, for comparison with committed results)."""
    from sm1km.runtime.runner import run_tasks

    def via_map():
        futs = client.map(_ident, range(n), pure=False)
        client.gather(futs)
        del futs

    walls_map = [timed(via_map).wall_s for _ in range(3)]
    walls_rb = [timed(lambda: sum(1 for _ in run_tasks(client, _ident, range(n), name="noop"))).wall_s
                for _ in range(3)]
    workers = len(client.scheduler_info()["workers"])
    return {"tasks": n, "workers": workers,
            "client_map_ms_per_task": figure([w / n * 1e3 for w in walls_map], "ms"),
            "run_bounded_ms_per_task": figure([w / n * 1e3 for w in walls_rb], "ms",
                                              note="bounded window (2 x threads) with as_completed, as the "
                                                   "downscale/aggregate stages submit")}


def _warm_worker(model_url: str, sha256: str, n_threads: int, device: str) -> float:
    """Imports and the model in a worker's cache (a real worker pays this once, on its first task)."""
    t0 = time.perf_counter()
    _warm_imports()
    from sm1km.runtime import caches

    caches.worker_model(model_url, sha256, {}, n_threads, device)
    return time.perf_counter() - t0


def bench_scaling(world: BenchWorld, configs, reps: int, scheduler_tasks: int = 1000,
                  region: str = "4x") -> dict[str, Any]:
    """The real ``downscale`` stage on LocalClusters of (workers, threads) with ``model.n_threads``
    xgboost threads per task; parallel efficiency vs 1 worker x 1 thread.

    All clusters are started (and their workers warmed) first; the repetitions then go round the
    configurations in turn, so a change of the machine's load hits every configuration alike.
    """
    import contextlib

    from distributed import Client, LocalCluster

    from sm1km.runtime import caches
    from sm1km.stages import downscale
    from sm1km.storage.model import load_model

    base = world.cfg4 if region == "4x" else world.cfg1
    root = Path(base.store.root)
    sha = load_model(base.model_path).sha256
    pd_total = region_summary(base)["pixel_days"]
    runs: dict[str, Any] = {}
    sched = None
    with contextlib.ExitStack() as stack:
        setups = []
        for (nw, nt, nx) in configs:
            name = f"w{nw}t{nt}" + (f"_xgb{nx}" if nx != 1 else "")
            cfg = base.model_copy(update={"model": base.model.model_copy(update={"n_threads": nx})})
            cluster = stack.enter_context(LocalCluster(n_workers=nw, threads_per_worker=nt, processes=True,
                                                       memory_limit="4GiB", dashboard_address=":0",
                                                       host="127.0.0.1"))
            client = stack.enter_context(Client(cluster, set_as_default=False))
            warm = client.run(_warm_worker, cfg.model_path, sha, nx, cfg.model.predict_device)
            setups.append((name, (nw, nt, nx), cfg, client))
            runs[name] = {"workers": nw, "threads_per_worker": nt, "xgboost_threads": nx, "cores": nw * nt * nx,
                          "worker_warm_up_s": round(max(warm.values()), 3), "_walls": [], "_cpus": [],
                          "loadavg": []}
        for _ in range(max(1, reps)):
            for name, _shape, cfg, client in setups:
                r = runs[name]
                _rm(root / "master.zarr", root / "_ledger" / "master.zarr")
                c0 = client.run(time.process_time)
                r["loadavg"].append(loadavg())
                s = timed(lambda: downscale.downscale(cfg, client))
                c1 = client.run(time.process_time)
                r["_walls"].append(s.wall_s)
                r["_cpus"].append(sum(c1[k] - c0[k] for k in c1))
        for name, (nw, nt, _nx), _cfg, client in setups:
            r = runs[name]
            loads = client.run(caches.model_loads)
            rss = client.run(peak_rss_bytes)
            walls, cpus = r.pop("_walls"), r.pop("_cpus")
            r.update({"wall_s": figure(walls, "s"), "worker_cpu_s": figure(cpus, "s"),
                      "cores_obtained": figure([c / w for c, w in zip(cpus, walls)], "CPU-s per s",
                                               note="worker CPU time / wall: the cores this run actually got"),
                      "pixel_days_per_s": rate_figure(pd_total, walls, "pixel-days/s"),
                      "pixel_days_per_s_per_core": rate_figure(pd_total, walls, "pixel-days/s/core", per=r["cores"]),
                      "model_loads_per_worker": sorted(loads.values()),
                      "worker_peak_rss_mb": round(max(rss.values()) / 2**20, 1)})
            if sched is None and nw * nt >= 2:
                sched = bench_scheduler(client, scheduler_tasks)
    ref = runs.get("w1t1")
    if ref:
        r1 = ref["pixel_days_per_s"]["median"]
        c1 = ref["worker_cpu_s"]["median"]
        for r in runs.values():
            r["speedup_vs_w1t1"] = round(r["pixel_days_per_s"]["median"] / r1, 3)
            r["parallel_efficiency"] = round(r["speedup_vs_w1t1"] / r["cores"], 3)
            # machine-independent part: CPU the same work costs in this layout vs 1 worker x 1 thread
            r["cpu_efficiency"] = round(c1 / r["worker_cpu_s"]["median"], 3)
    return {"region": region_summary(base), "runs": runs, "scheduler": sched,
            "note": "wall includes the stage's driver work (template, ledger listing, finalize); workers are "
                    "warmed first (worker_warm_up_s: imports and the model load a worker pays once), then the "
                    "repetitions go round the configurations, each rewriting the master from scratch (model "
                    "cached per worker)"}


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def bench_export(world: BenchWorld, formats, reps: int) -> dict[str, Any]:
    """``export`` of the 1x daily master, synchronous in this process: MB/s written per format."""
    from sm1km.stages.export import export

    cfg = world.cfg1
    pd_total = region_summary(cfg)["pixel_days"]
    out: dict[str, Any] = {}
    for fmt in formats:
        kw = {"fmt": "hdf5", "layout": "modis-sinusoidal"} if fmt == "modis" else {"fmt": fmt}
        dest = world.scratch / f"export_{fmt}"
        walls, cpus, nbytes, nfiles = [], [], 0, 0
        for _ in range(max(1, reps)):
            _rm(dest)
            s = timed(lambda: export(cfg, None, product="daily", out=str(dest), overwrite=True, **kw))
            walls.append(s.wall_s)
            cpus.append(s.cpu_s)
            nbytes, nfiles = tree_bytes(dest), tree_files(dest)
        out[fmt] = {"files": nfiles, "bytes": nbytes,
                    "written_mb_per_s": rate_figure(nbytes / 1e6, walls, "MB/s (files written / wall)"),
                    "master_mb_per_s": rate_figure(pd_total * 2 / 1e6, walls, "MB/s of int16 master values"),
                    "pixel_days_per_s_per_core": rate_figure(pd_total, walls, "pixel-days/s/core"),
                    "cpu_s": figure(cpus, "s"), "wall_s": figure(walls, "s"), **({"layout": "modis-sinusoidal"}
                                                                                 if fmt == "modis" else {})}
    return out


# --------------------------------------------------------------------------------------------
# projection to the global 2000-2020 run
# --------------------------------------------------------------------------------------------
def projection(ds: dict, scaling: dict | None, master_bytes: dict, cfg, sched: dict | None,
               workers=(100, 500, 1000, 4000)) -> dict[str, Any]:
    """Core-hours, wall time, objects, bytes and tasks of the global run, from the measured rates."""
    f, tile, block = cfg.grid.factor, cfg.grid.tile_cells, cfg.grid.time_block_days
    ny, nx = GLOBAL_PX if f == 30 else (720 * f, 1440 * f)
    tile_px = tile * f
    grid_pd = GLOBAL_DAYS * ny * nx
    land_pd = grid_pd * GLOBAL_LAND_FRACTION
    n_tiles = (-(-ny // tile_px)) * (-(-nx // tile_px))
    n_blocks = -(-GLOBAL_DAYS // block)
    shards_all = n_tiles * n_blocks
    tile_fraction = GLOBAL_LAND_TILE_FRACTIONS.get(tile, GLOBAL_LAND_TILE_FRACTION)
    shards_land = int(round(shards_all * tile_fraction))
    task_pd = block * tile_px * tile_px
    e2e = ds["end_to_end"]
    rate_wall = e2e["land_pixel_days_per_s_per_core"]["median"]
    rate_cpu = e2e["cpu_land_pixel_days_per_s_per_core"]["median"]
    ch_wall = land_pd / rate_wall / 3600
    ch_cpu = land_pd / rate_cpu / 3600
    eff = eff_wall = None
    if scaling and "w2t1" in scaling.get("runs", {}):
        w2 = scaling["runs"]["w2t1"]
        eff = min(1.0, w2.get("cpu_efficiency") or 1.0)
        eff_wall = w2.get("parallel_efficiency")
    eff_used = eff if eff else 1.0
    per_var = master_bytes["per_land_pixel_day"]
    stored = {k: v * land_pd for k, v in per_var.items()}
    task_cpu_s = task_pd * (ds["land_fraction"] or 1) / rate_cpu
    out: dict[str, Any] = {
        "assumptions": {"days": GLOBAL_DAYS, "grid_px": [ny, nx], "land_fraction": GLOBAL_LAND_FRACTION,
                        "land_tile_fraction": tile_fraction, "tile_cells": tile,
                        "note": "land fraction as SCIENCE.md (~2e12 land pixel-days; the ERA5 0.25 deg land mask "
                                "has 23.6 % land cells); land_tile_fraction counted on that mask for 1 deg tiles; "
                                "land pixel-days cost the measured land rate; all-sea shards read only the fused "
                                "block and write nothing; compressed bytes per land pixel-day as measured here "
                                "(synthetic fields: real data may compress differently)"},
        "grid_pixel_days": grid_pd, "land_pixel_days": land_pd,
        "core_hours": round(ch_wall), "core_hours_from_cpu_time": round(ch_cpu),
        "rate_used_land_pixel_days_per_s_per_core": {"wall": rate_wall, "cpu": rate_cpu},
        "parallel_efficiency_used": eff_used,
        "parallel_efficiency_note": "cpu_efficiency of 2 workers vs 1 (extra CPU the parallel layout costs); the "
                                    f"wall-time efficiency measured here ({eff_wall}) also contains the other jobs "
                                    "of a shared machine, which dedicated cluster cores do not have",
        "wall_hours_on_workers": {str(n): _round(ch_wall / n / eff_used, 4) for n in workers},
        "wall_hours_on_workers_from_cpu_time": {str(n): _round(ch_cpu / n / eff_used, 4) for n in workers},
        "tasks": {"total_shards": shards_all, "shards_touching_land": shards_land,
                  "pixel_days_per_task": task_pd, "cpu_s_per_land_task": round(task_cpu_s, 3),
                  "output_bytes_per_task": round(sum(per_var.values()) * task_pd * (ds["land_fraction"] or 1))},
        "objects": {"master_shard_objects": shards_land * len(per_var), "ledger_markers": shards_all,
                    "note": "one object per shard and variable (sharded Zarr v3; all-fill shards are not written), "
                            "plus one ledger marker per shard"},
        "bytes": {"stored_per_variable": {k: round(v) for k, v in stored.items()},
                  "stored_total": round(sum(stored.values())),
                  "uncompressed_int16_land_per_variable": round(land_pd * 2),
                  "uncompressed_int16_grid_per_variable": round(grid_pd * 2),
                  "compression_ratio_measured": master_bytes["ratio"],
                  "note": "ratio = int16 bytes of the land pixel-days / stored bytes, per variable, measured on "
                          "the benchmark master (its codec as written: master.PACKED_COMPRESSOR)"},
    }
    if sched:
        ov = sched["client_map_ms_per_task"]["median"] / 1e3
        ov_rb = sched["run_bounded_ms_per_task"]["median"] / 1e3
        needed = {str(n): round(n / task_cpu_s, 1) for n in workers}
        out["scheduler"] = {
            "overhead_s_per_task": ov,
            "overhead_fraction_of_task": round(ov / task_cpu_s, 5),
            "scheduler_limit_tasks_per_s": round(1 / ov, 1),
            "needed_tasks_per_s": needed,
            "max_workers_before_scheduler_bound": int(task_cpu_s / ov),
            "scheduler_time_land_tasks_h": round(shards_land * ov / 3600, 2),
            "bounded_window_latency_s_per_task": ov_rb,
            "note": "overhead = wall per trivial task of 1000 submitted at once (client.map) on a local 2-worker "
                    "cluster sharing the 2 cores: scheduler + comms + worker bookkeeping. The stages' bounded "
                    "window (run_bounded, 2 x threads in flight) adds a round trip per task "
                    "(bounded_window_latency_s_per_task) that overlaps with work on a large cluster. The "
                    "scheduler keeps up while needed_tasks_per_s < scheduler_limit_tasks_per_s",
        }
    return out


def master_bytes(ctx, land_pixel_days: int, pixel_days: int) -> dict[str, Any]:
    """Stored bytes of the benchmark master per variable and per land pixel-day; compression ratio
    against int16 of the land pixel-days (sea is never stored: all-fill chunks are not written)."""
    root = Path(ctx.master_url)
    per, tot = {}, {}
    for var in ("sm", "sm_uncertainty"):
        b = tree_bytes(root / var)
        if b:
            tot[var] = b
            per[var] = b / max(land_pixel_days, 1)
    stored = max(sum(tot.values()), 1)
    return {"stored_bytes": tot, "per_land_pixel_day": per,
            "ratio": round(land_pixel_days * 2 * len(tot) / stored, 3),
            "ratio_vs_whole_grid": round(pixel_days * 2 * len(tot) / stored, 3), "objects": tree_files(root)}


# --------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------
def bench_gpu(world: BenchWorld, ctx, reps: int) -> dict[str, Any]:
    from harness.machine import gpu_info

    info = gpu_info()
    if not info["available"]:
        return info
    try:  # pragma: no cover - needs a GPU
        from sm1km.core.features import build_features, day_of_year
        from sm1km.stages import downscale
        from sm1km.storage.model import load_model

        cfg = world.cfg1
        model = load_model(cfg.model_path, n_threads=1, device="cuda")
        spec = _most_land_spec(cfg, ctx)
        fused_sm, flag, _, times = downscale.read_inputs(spec, ctx)
        X = build_features(fused_sm, flag, _read_predictors(spec, ctx), day_of_year(times), spec.factor)
        model.booster.inplace_predict(X)
        walls = [timed(lambda: (model.booster.inplace_predict(X), model.uncertainty_booster.inplace_predict(X)
                                if model.has_uncertainty else None)).wall_s for _ in range(max(1, reps))]
        info["raw_predict_pixel_days_per_s"] = rate_figure(X.shape[0], walls, "pixel-days/s (one GPU)")
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info
