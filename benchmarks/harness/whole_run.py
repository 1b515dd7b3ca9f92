"""The whole global run priced stage by stage, and every store sized (``results.whole_run``).

Built from figures measured in the same ``sm1km bench`` run: the full-size units
(:mod:`.units`), the fusion section (the vectorised formula on a 365-day block), the downscale
projection (:func:`.sections.projection`), the training and aggregate stages on the bench world,
and the bytes of the bench world's stores. Core-hours are CPU time (``*_cpu_s``: what the code
costs, not what a shared machine delivered). Each row says which measurement it scales and how
(``basis``); rows that are not measured say so instead of guessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.sections import GLOBAL_DAYS, GLOBAL_LAND_FRACTION, GLOBAL_PX
from harness.timing import timed
from harness.units import MODIS_LAND_TILES, STRIPS_PER_GLOBAL_DAY
from harness.world import region_summary, tree_bytes

GLOBAL_CELL_DAYS = GLOBAL_DAYS * 720 * 1440
GLOBAL_YEARS = 21
NDVI_COMPOSITES = GLOBAL_DAYS // 16 + 1


def _ok(v) -> bool:
    return isinstance(v, dict) and "error" not in v and not v.get("skipped")


def _med(d: dict, key: str) -> float:
    return float(d[key]["median"])


def measure_aggregate(cfg) -> dict[str, Any]:
    """``aggregate`` of the bench's 1x master (timed once): CPU s per pixel-day and monthly bytes."""
    from sm1km.stages.aggregate import aggregate
    from sm1km.storage import master, store

    root = Path(cfg.store.root)
    store.remove(str(root / master.MONTHLY_STORE), {})
    store.remove(str(root / "_ledger" / master.MONTHLY_STORE), {})
    s = timed(lambda: aggregate(cfg, None))
    reg = region_summary(cfg)
    months = len(master.month_starts(cfg.dates()))
    b = tree_bytes(root / master.MONTHLY_STORE)
    return {"wall_s": round(s.wall_s, 3), "cpu_s": round(s.cpu_s, 3), "pixel_days": reg["pixel_days"],
            "months": months, "monthly_bytes": b,
            "bytes_per_pixel_month": b / max(1, reg["pixels"][0] * reg["pixels"][1] * months)}


def store_bytes(cfg4, cfg1) -> dict[str, Any]:
    """Bytes per unit of the bench world's stores (predictors per 1 km pixel-day, fused per cell-day)."""
    r4, r1 = Path(cfg4.store.root), Path(cfg1.store.root)
    reg4 = region_summary(cfg4)
    pred = tree_bytes(r4 / "inputs" / "predictors.zarr")
    fused = tree_bytes(r4 / "fused.zarr")
    return {"predictors_bytes": pred, "predictors_per_pixel_day": pred / max(1, reg4["pixel_days"]),
            "fused_bytes": fused, "fused_per_cell_day": fused / max(1, reg4["cell_days"]),
            "master_1x_bytes": tree_bytes(r1 / "master.zarr")}


def whole_run(results: dict, setup: dict, agg: dict | None, stores: dict) -> dict[str, Any]:
    """Rows (stage, core-hours, bytes stored) for 2000-2020 and for one NRT day, with shares."""
    u = results.get("units", {})
    fu, pr, ds = results.get("fusion", {}), results.get("projection", {}), results.get("downscale", {})
    ny, nx = GLOBAL_PX
    land_pd = GLOBAL_DAYS * ny * nx * GLOBAL_LAND_FRACTION
    rows: list[dict[str, Any]] = []

    def add(stage, store, cpu_s_run, cpu_s_nrt, bytes_run, bytes_nrt, basis):
        rows.append({"stage": stage, "store": store,
                     "core_hours": None if cpu_s_run is None else round(cpu_s_run / 3600, 2),
                     "nrt_day_core_hours": None if cpu_s_nrt is None else round(cpu_s_nrt / 3600, 4),
                     "bytes_stored": None if bytes_run is None else round(bytes_run),
                     "nrt_day_bytes_written": None if bytes_nrt is None else round(bytes_nrt), "basis": basis})

    for kind, store in (("cci", "inputs/cci.zarr"), ("era5", "inputs/era5.zarr")):
        x = u.get(f"ingest_{kind}_day")
        if _ok(x):
            c = _med(x, "stage_cpu_s")
            add(f"ingest {kind.upper()}", store, c * GLOBAL_DAYS, c, x["written_bytes"] * GLOBAL_DAYS,
                x["written_bytes"],
                f"one global {kind.upper()} day ingested into a fresh store ({c:.1f} CPU-s, "
                f"{x['written_bytes'] / 1e6:.1f} MB) x {GLOBAL_DAYS} days. NRT: an appended day rewrites the "
                "4096-day time chunk of every cell (up to 4096x the bytes of the day), not measured here")
    m = u.get("modis_tile")
    if _ok(m) and m.get("tile_px") == [1200, 1200]:
        c = _med(m, "stage_cpu_s")
        files = GLOBAL_DAYS * MODIS_LAND_TILES + NDVI_COMPOSITES * MODIS_LAND_TILES
        pb = stores.get("predictors_per_pixel_day")
        add("ingest predictors (MODIS read + warp)", "inputs/predictors.zarr", c * files, c * MODIS_LAND_TILES,
            pb * GLOBAL_DAYS * ny * nx if pb else None, pb * ny * nx if pb else None,
            f"read_modis of one 1200x1200 MOD11A1 tile ({c:.2f} CPU-s) x {MODIS_LAND_TILES} land tiles x "
            f"({GLOBAL_DAYS} daily LST + {NDVI_COMPOSITES} NDVI composites); the gap-fill and the store's "
            "write are not in it; bytes = the bench world's predictors.zarr per 1 km pixel-day x the global grid")
    if _ok(fu) and "core" in fu:
        rate = _med(fu["core"], "cpu_pixel_days_per_s_per_core")
        fb = stores.get("fused_per_cell_day")
        add("fuse", "fused.zarr", GLOBAL_CELL_DAYS / rate, 720 * 1440 / rate,
            fb * GLOBAL_CELL_DAYS if fb else None, fb * 720 * 1440 if fb else None,
            f"the vectorised formula (fuse_block) on a {fu['core']['block']} block: {rate:,.0f} cell-days per "
            "CPU-s x 7671 x 720 x 1440 cell-days; the stage's own overhead at this size is not measured (ratio "
            "stage/formula on the bench world in results.fusion.ratio_to_formula)")
    tr = setup.get("train")
    if isinstance(tr, dict):
        add("train", "model", tr["cpu_s"], 0.0, None, None,
            "the train stage on the bench world, once (grows with the number of station-days, not the grid)")
    if _ok(pr):
        rate = pr["rate_used_land_pixel_days_per_s_per_core"]["cpu"]
        add("downscale", "master.zarr", land_pd / rate, land_pd / GLOBAL_DAYS / rate,
            pr["bytes"]["stored_total"], pr["bytes"]["stored_total"] / GLOBAL_DAYS,
            f"results.projection: land pixel-days / {rate:,.0f} land pixel-days per CPU-s (the task end to end)")
    if agg:
        cps = agg["cpu_s"] / max(1, agg["pixel_days"])
        months = GLOBAL_YEARS * 12
        add("aggregate (monthly)", "monthly.zarr", cps * GLOBAL_DAYS * ny * nx, cps * ny * nx,
            agg["bytes_per_pixel_month"] * ny * nx * months, None,
            f"the aggregate stage on the bench 1x master ({agg['cpu_s']:.2f} CPU-s for {agg['pixel_days']:,} "
            "pixel-days) x the global grid; NRT: the open month is recomputed (one day's share priced)")
    x = u.get("export_cog_strip")
    if _ok(x) and x.get("strips_per_global_day"):
        c = _med(x, "stage_cpu_s") * STRIPS_PER_GLOBAL_DAY
        b = x["bytes"] * STRIPS_PER_GLOBAL_DAY
        add("export daily COG", "exports/geotiff", c * GLOBAL_DAYS, c, b * GLOBAL_DAYS, b,
            f"one 43200x1200 strip ({_med(x, 'stage_cpu_s'):.1f} CPU-s, {x['bytes'] / 1e6:.1f} MB) x 18 strips "
            "per global day x 7671 days")
    x = u.get("export_modis_days")
    if _ok(x) and x.get("days", 0) >= 4:
        per_tile = x["tile_year_scale"] / max(1, x["files"])  # the bbox touches x["files"] tiles
        c = _med(x, "stage_cpu_s") * per_tile
        b = x["bytes"] * per_tile
        n = MODIS_LAND_TILES * GLOBAL_YEARS
        add("export MODIS-tile HDF5", "exports/modis", c * n, c / 365 * MODIS_LAND_TILES, b * n,
            b / 365 * MODIS_LAND_TILES,
            f"the tiles of 0-15 E, 40-50 N ({x['files']} files) for {x['days']} days, per tile x 365/{x['days']} = a "
            f"tile-year ({c:.1f} CPU-s) x "
            f"{MODIS_LAND_TILES} land tiles x {GLOBAL_YEARS} years; NRT: the open year's file is rewritten (one "
            "day's share priced)")
    total = sum(r["core_hours"] or 0 for r in rows)
    total_nrt = sum(r["nrt_day_core_hours"] or 0 for r in rows)
    for r in rows:
        r["share"] = round((r["core_hours"] or 0) / total, 4) if total else None
        r["nrt_share"] = round((r["nrt_day_core_hours"] or 0) / total_nrt, 4) if total_nrt else None
    return {"rows": rows, "core_hours_total": round(total, 1), "nrt_day_core_hours_total": round(total_nrt, 3),
            "bytes_stored_total": round(sum(r["bytes_stored"] or 0 for r in rows)),
            "not_priced": ["catalog and publish (metadata only)", "collocate (station table, small)",
                           "the predictors' gap-fill and write (only the MODIS read + warp is priced)",
                           "the ingest index and sha256 of 2.4 M MODIS granules", "an `update` day measured end to "
                           "end (its stages are priced one by one: nrt_day_*)"],
            "assumptions": {"days": GLOBAL_DAYS, "grid_px": list(GLOBAL_PX), "cells": [720, 1440],
                            "land_fraction": GLOBAL_LAND_FRACTION, "modis_land_tiles": MODIS_LAND_TILES,
                            "years": GLOBAL_YEARS},
            "downscale_raw_predict_ratio": ds.get("ratio_to_raw_predict") if _ok(ds) else None}
