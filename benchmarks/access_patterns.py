"""How scientists read the master over HTTP: requests, bytes and time for three access patterns,
for the chosen chunk/shard layout and alternatives.

A synthetic master (default 4°×4° at factor 30 = 480×480 px, 365 days, int16 soil-moisture-like
field with a coastline) is written per layout with the production code (``master.master_template``
→ ``store.create_template`` → one ``master.write_packed`` per shard → ``store.finalize``);
``monthly.zarr`` is made once by the real ``aggregate`` stage. Everything is served by a static
HTTP server that honours Range requests (tests/http_server.py) with an emulated per-request
latency, and read as docs/reading.md shows: ``xarray.open_zarr(url)`` (``dask``: dask chunks =
inner chunks, the default), ``xarray.open_zarr(url, chunks=<the shard shape>)`` (``dask_shards``)
and ``xarray.open_zarr(url, chunks=None)`` (``lazy``: no dask; zarr reads each shard's index once;
``lazy_c64``: the same with ``zarr.config`` ``async.concurrency`` 64 instead of 10).
Requests and bytes are counted by the server.

Patterns:
  * ``day_map``: one day over a 2°×2° region (240×240 px, not aligned with the tiles);
  * ``point_series``: the whole period at one pixel (mean over ``--points`` pixels);
  * ``month_mean``: the mean of one month over the same region — from ``monthly.zarr`` and
    computed from the master.

    python benchmarks/access_patterns.py --out bench_access.json            # ~5 min on 2 cores
    python benchmarks/access_patterns.py --small --out /tmp/bench_small.json   # seconds (tests)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the range-honouring test server

from http_server import RangeHTTPServer  # noqa: E402
from sm1km.config import GridConfig, RunConfig  # noqa: E402
from sm1km.core.encoding import encode_int16  # noqa: E402
from sm1km.stages import aggregate, downscale  # noqa: E402
from sm1km.storage import master, store  # noqa: E402
from sm1km.storage.shard_reads import concurrent_shard_reads  # noqa: E402

_GRID = GridConfig()
#: name -> (time_block_days, inner chunk as (time, lat, lon) in units of (days, px, px); None = unsharded)
LAYOUTS = {
    "chosen": {"time_block": _GRID.time_block_days, "inner": master.MASTER_INNER_PREFERRED, "sharded": True,
               "note": "master.py default: shard (128 d, 120, 120), inner (2 d, 60, 60)"},
    "previous": {"time_block": 32, "inner": (32, 30, 30), "sharded": True,
                 "note": "the layout before: shard (32 d, 120, 120), inner (32 d, 30, 30) = one 25 km cell"},
    "daily_inner": {"time_block": 32, "inner": (1, 120, 120), "sharded": True,
                    "note": "32-day shards, one inner chunk per day and tile (map-optimised)"},
    "shard128_cell": {"time_block": 128, "inner": (32, 30, 30), "sharded": True,
                      "note": "128-day shards (about 3 objects per year), inner chunks of 32 d x one 25 km cell"},
    "shard128_daily": {"time_block": 128, "inner": (1, 120, 120), "sharded": True,
                       "note": "128-day shards, one inner chunk per day and tile"},
    "shard128_1d60": {"time_block": 128, "inner": (1, 60, 60), "sharded": True,
                      "note": "128-day shards, inner chunks of 1 day x a quarter tile"},
    "shard128_4d60": {"time_block": 128, "inner": (4, 60, 60), "sharded": True,
                      "note": "128-day shards, inner chunks of 4 days x a quarter tile"},
    "unsharded": {"time_block": 32, "inner": (32, 30, 30), "sharded": False,
                  "note": "no sharding: every (32 d, 30, 30) chunk is its own object"},
}


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def run_config(root: Path, args, time_block: int) -> RunConfig:
    w, s = args.west, args.south
    return RunConfig.from_dict({
        "name": "bench-access",
        "region": {"west": w, "south": s, "east": w + args.size_deg, "north": s + args.size_deg},
        "period": {"start": args.start, "end": str((pd.Timestamp(args.start) + pd.Timedelta(days=args.days - 1)).date())},
        "grid": {"factor": args.factor, "tile_cells": args.tile_cells, "time_block_days": time_block},
        "store": {"root": str(root)},
        "cluster": {"kind": "synchronous"},
    })


def synthetic_block(spec, factor: int, n_px: int, seed: int) -> np.ndarray:
    """Soil-moisture-like float32 block (t, y, x) of one shard: smooth field + seasonal cycle +
    25 km-cell anomalies that wander in time + pixel noise; a coastline (NaN) in one corner."""
    y0, x0 = spec.fine[0].start, spec.fine[1].start
    ny, nx = spec.fine[0].stop - y0, spec.fine[1].stop - x0
    t = np.arange(spec.t0, spec.t1)[:, None, None]
    y = np.arange(y0, y0 + ny)[None, :, None]
    x = np.arange(x0, x0 + nx)[None, None, :]
    base = 0.22 + 0.08 * np.sin(y / 97.0) * np.cos(x / 131.0) + 0.03 * np.sin((x + y) / 17.0)
    season = 0.06 * np.sin(2 * np.pi * t / 365.25)
    rng = np.random.default_rng([seed, y0, x0])
    walk = rng.normal(0, 0.01, (spec.t1, ny // factor + 1, nx // factor + 1)).cumsum(axis=0)[spec.t0:]
    cells = np.repeat(np.repeat(walk, factor, axis=1), factor, axis=2)[:, :ny, :nx]
    noise = np.random.default_rng([seed, spec.t0, y0, x0]).normal(0, 0.008, (spec.t1 - spec.t0, ny, nx))
    sm = base + season + cells + noise
    sea = (y + 0.7 * x) < n_px // 5
    return np.where(np.broadcast_to(sea, sm.shape), np.nan, np.clip(sm, 0.02, 0.6)).astype(np.float32)


def build_master(cfg: RunConfig, layout: dict, seed: int, workers: int) -> dict:
    """Write a finalized master with ``layout`` (one write per shard, in a thread pool) + ledger."""
    url = cfg.store.url(master.MASTER_STORE)
    tpl, enc = master.master_template(cfg, inner=layout["inner"])
    if not layout["sharded"]:
        for v in ("sm", "sm_uncertainty"):
            enc[v] = master.packed_encoding(master.inner_chunks(master.master_shard(cfg), layout["inner"]), None)
    store.create_template(url, tpl, enc, overwrite=True)
    ledger = store.Ledger(cfg.store.root, master.MASTER_STORE)
    n_px = cfg.coarse_region.n_rows * cfg.grid.factor

    def write(spec):
        q = encode_int16(synthetic_block(spec, cfg.grid.factor, n_px, seed))
        master.write_packed(url, spec.region, {"sm": q})
        ledger.mark(spec.key)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, downscale.shard_specs(cfg)))
    store.finalize(url, None, store.coverage_attrs(cfg.dates()))
    build_s = time.perf_counter() - t0
    files = [p for p in Path(url, "sm").rglob("*") if p.is_file() and p.name != "zarr.json"]
    meta = zarr.open_group(url, mode="r")["sm"]
    return {"shard": list(meta.shards) if meta.shards else None, "inner_chunk": list(meta.chunks),
            "objects_sm": len(files), "stored_bytes_sm": sum(p.stat().st_size for p in files),
            "raw_bytes_sm": int(np.prod(meta.shape)) * 2, "build_s": round(build_s, 2)}


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def measure(srv: RangeHTTPServer, fn, repeats: int) -> dict:
    """Run ``fn`` ``repeats`` times; requests/bytes/objects of the first run, median time."""
    times, first = [], None
    for _ in range(repeats):
        i0 = len(srv.requests())
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        recs = srv.requests()[i0:]
        if first is None:
            first = {"requests": len(recs), "bytes": sum(r.bytes for r in recs),
                     "objects": len({r.path for r in recs}), "errors": sum(r.status >= 400 for r in recs),
                     "values": int(np.size(out))}
    return {**first, "time_s": round(statistics.median(times), 4)}


def region_slices(ds, bbox) -> dict:
    w, s, e, n = bbox
    return {"lat": slice(n, s), "lon": slice(w, e)}  # lat descends


def patterns_for(ds, monthly, bbox, points, month: str) -> dict:
    reg = region_slices(ds, bbox)
    day = ds.time.values[len(ds.time) // 2]
    m0 = pd.Timestamp(month)
    m1 = m0 + pd.offsets.MonthEnd(0)
    pats = {
        "day_map": lambda: ds.sm.sel(time=day, **reg).values,
        "point_series": [lambda la=la, lo=lo: ds.sm.sel(lat=la, lon=lo, method="nearest").values for la, lo in points],
        "month_mean_from_master": lambda: ds.sm.sel(time=slice(m0, m1), **reg).mean("time").values,
    }
    if monthly is not None:
        pats["month_mean_from_monthly"] = lambda: monthly.sm.sel(time=m0, **reg).values
    return pats


def _reader(concurrency, shard_reads):
    """zarr's ``async.concurrency`` (None: its default, 10) and, with ``shard_reads`` (a dict of
    ``concurrent_shard_reads`` settings), the concurrent coalesced partial shard reads."""
    stack = contextlib.ExitStack()
    stack.enter_context(zarr.config.set({"async.concurrency": concurrency} if concurrency else {}))
    if shard_reads is not None:
        stack.enter_context(concurrent_shard_reads(**shard_reads))
    return stack


def _measure_mode(srv, url, mon_url, kw, concurrency, bbox, points, month, repeats, shard_reads=None) -> dict:
    """Open master + monthly with ``open_zarr(**kw)`` and measure every pattern; ``concurrency``:
    zarr's ``async.concurrency`` during the reads (None: zarr's default, 10); ``shard_reads``:
    settings of :func:`sm1km.storage.shard_reads.concurrent_shard_reads` (None: zarr alone)."""
    with _reader(concurrency, shard_reads):
        i0 = len(srv.requests())
        t_open = time.perf_counter()
        ds = xr.open_zarr(url, **kw)
        monthly = xr.open_zarr(mon_url, **({} if "chunks" in kw and kw["chunks"] else kw))
        opened = srv.requests()[i0:]
        res = {"open": {"requests": len(opened), "bytes": sum(r.bytes for r in opened),
                        "time_s": round(time.perf_counter() - t_open, 4),
                        "note": "master + monthly metadata and coordinates"}}
        res["open"]["zarr_async_concurrency"] = concurrency or zarr.config.get("async.concurrency")
        res["open"]["shard_reads"] = shard_reads
        for pat, fn in patterns_for(ds, monthly, bbox, points, month).items():
            if isinstance(fn, list):  # one measurement per point, averaged
                ms = [measure(srv, f, repeats) for f in fn]
                m = {k: (round(statistics.mean(x[k] for x in ms), 4) if k == "time_s" else
                         statistics.mean(x[k] for x in ms)) for k in ms[0]}
            else:
                m = measure(srv, fn, repeats)
            m["returned_int16_bytes"] = m["values"] * 2
            m["bytes_per_returned_int16_byte"] = round(m["bytes"] / max(m["returned_int16_bytes"], 1), 2)
            res[pat] = m
    return res


def run(args) -> dict:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sm1km-access-"))
    work.mkdir(parents=True, exist_ok=True)
    layouts = {k: LAYOUTS[k] for k in args.layouts}
    rng = np.random.default_rng(args.seed)
    w, s = args.west, args.south
    # a region not aligned with the tiles, inside the domain
    r0 = args.region_deg
    bw, bs = w + 0.6 * (args.size_deg - r0), s + 0.3 * (args.size_deg - r0)
    bbox = (bw, bs, bw + r0, bs + r0)
    points = [(float(bs + rng.uniform(0.2, 0.8) * r0), float(bw + rng.uniform(0.2, 0.8) * r0))
              for _ in range(args.points)]
    month = str((pd.Timestamp(args.start) + pd.Timedelta(days=args.days // 2)).to_period("M").to_timestamp().date())
    out: dict = {"benchmark": "access_patterns", "layouts": {}, "results": {}}
    try:
        for name, lay in layouts.items():
            cfg = run_config(work / name, args, lay["time_block"])
            info = build_master(cfg, lay, args.seed, args.workers)
            out["layouts"][name] = {**info, "note": lay["note"]}
            print(f"built {name}: {info}", file=sys.stderr)
        first = next(iter(layouts))
        cfg0 = run_config(work / first, args, layouts[first]["time_block"])
        t0 = time.perf_counter()
        aggregate.aggregate(cfg0)
        out["monthly_build_s"] = round(time.perf_counter() - t0, 2)
        with RangeHTTPServer(work, latency_s=args.latency_ms / 1000) as srv:
            mon_url = srv.url(f"{first}/{master.MONTHLY_STORE}")
            for name in layouts:
                url = srv.url(f"{name}/{master.MASTER_STORE}")
                res = {}
                lay = out["layouts"][name]
                aligned = dict(zip(("time", "lat", "lon"), lay["shard"] or lay["inner_chunk"]))
                for mode, kw, conc, sr in (("dask", {}, None, None), ("dask_shards", {"chunks": aligned}, None, None),
                                           ("lazy", {"chunks": None}, None, None),
                                           ("lazy_c64", {"chunks": None}, 64, None),
                                           ("lazy_coalesced", {"chunks": None}, None, {})):
                    res[mode] = _measure_mode(srv, url, mon_url, kw, conc, bbox, points, month, args.repeats, sr)
                out["results"][name] = res
                print(f"measured {name}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    years = args.days / 365.25
    out["targets"] = {}
    for name, res in out["results"].items():
        best_series = min(res[m]["point_series"]["objects"] for m in res)
        best_map = min(res[m]["day_map"]["bytes_per_returned_int16_byte"] for m in res)
        out["targets"][name] = {
            "point_series_objects_per_year": round(best_series / years, 2),
            "point_series_requests_per_year": round(min(res[m]["point_series"]["requests"] for m in res) / years, 2),
            "point_series_ok (<= 4 objects/year)": best_series / years <= 4,
            "day_map_bytes_per_returned_int16_byte": best_map,
            "day_map_ok (<= 2)": best_map <= 2.0,
        }
    out["params"] = {"size_deg": args.size_deg, "factor": args.factor, "tile_cells": args.tile_cells,
                     "days": args.days, "start": args.start, "region_bbox": [round(v, 4) for v in bbox],
                     "region_px": int(round(args.region_deg * 4 * args.factor)), "points": points, "month": month,
                     "latency_ms": args.latency_ms, "repeats": args.repeats, "workers": args.workers}
    out["environment"] = {"python": platform.python_version(), "zarr": zarr.__version__, "xarray": xr.__version__,
                          "machine": platform.machine(), "cpus": os.cpu_count(),
                          "zarr_async_concurrency": zarr.config.get("async.concurrency")}
    return out


#: reader settings of the whole-record point series (``record``): name -> (async.concurrency, shard_reads)
RECORD_READERS = {
    "zarr": (None, None),
    "zarr_c64": (64, None),
    "concurrent": (None, {"max_gap_bytes": 0}),
    "coalesced": (None, {}),
    "coalesced_c64": (64, {}),
}


def record(args, work: Path) -> dict:
    """A whole record (``--record-days``, default 7671 = 2000-2020) of one tile with the chosen
    layout, read over HTTP at ``--latency-ms``: the point series (and a day map of the tile) with
    each of :data:`RECORD_READERS`."""
    lay = LAYOUTS["chosen"]
    rec = argparse.Namespace(**{**vars(args), "size_deg": args.tile_cells / 4, "days": args.record_days,
                                "start": "2000-01-01"})
    cfg = run_config(work / "record", rec, lay["time_block"])
    info = build_master(cfg, lay, args.seed, args.workers)
    print(f"built the {args.record_days}-day record: {info}", file=sys.stderr)
    n = cfg.coarse_region.n_rows * args.factor
    out: dict = {"layout": info, "days": args.record_days, "latency_ms": args.latency_ms, "readers": {}}
    with RangeHTTPServer(work, latency_s=args.latency_ms / 1000) as srv:
        url = srv.url(f"record/{master.MASTER_STORE}")
        for name, (conc, sr) in RECORD_READERS.items():
            with _reader(conc, sr):
                ds = xr.open_zarr(url, chunks=None, zarr_format=3)
                series = measure(srv, lambda ds=ds: ds.sm.isel(lat=n // 3, lon=(2 * n) // 3).values, args.repeats)
                day = measure(srv, lambda ds=ds: ds.sm.isel(time=args.record_days // 2).values, args.repeats)
            out["readers"][name] = {"async_concurrency": conc or zarr.config.get("async.concurrency"),
                                    "shard_reads": sr, "point_series": series, "day_map_tile": day}
            print(f"record {name}: series {series}", file=sys.stderr)
    return out


def summary_lines(out: dict) -> list[str]:
    lines = []
    for name, res in out["results"].items():
        for mode, pats in res.items():
            cells = []
            for pat in ("day_map", "point_series", "month_mean_from_master", "month_mean_from_monthly"):
                if pat in pats:
                    m = pats[pat]
                    cells.append(f"{pat}: {m['requests']:.0f} req {m['objects']:.0f} obj {m['bytes'] / 1e3:.0f} kB "
                                 f"({m['bytes_per_returned_int16_byte']}x) {m['time_s'] * 1e3:.0f} ms")
            lines.append(f"{name:12s} {mode:4s} | " + " | ".join(cells))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_access.json")
    p.add_argument("--size-deg", type=float, default=4.0, help="side of the synthetic master in degrees")
    p.add_argument("--region-deg", type=float, default=2.0, help="side of the region read (day map, month mean)")
    p.add_argument("--west", type=float, default=10.0)
    p.add_argument("--south", type=float, default=44.0)
    p.add_argument("--factor", type=int, default=30)
    p.add_argument("--tile-cells", type=int, default=4)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--start", default="2020-01-01")
    p.add_argument("--points", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--latency-ms", type=float, default=20.0, help="emulated per-request latency of the server")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="threads writing shards")
    p.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS),
                   help="layouts of the one-year comparison (none: only the whole record)")
    p.add_argument("--record-days", type=int, default=7671,
                   help="days of the whole-record point series (one tile, chosen layout; 0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where to build the stores (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the built stores")
    p.add_argument("--small", action="store_true", help="a tiny run (1°×1°, factor 10, 40 days) to check it works")
    args = p.parse_args(argv)
    if args.small:
        args.size_deg, args.region_deg, args.factor, args.tile_cells, args.days = 1.0, 0.5, 10, 2, 40
        args.points, args.repeats, args.latency_ms = 2, 1, 0.0
        args.record_days = min(args.record_days, 300)
    out = run(args) if args.layouts else {"benchmark": "access_patterns", "results": {}, "targets": {}}
    if args.record_days:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="sm1km-access-record-"))
        try:
            out["record"] = record(args, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    for line in summary_lines(out):
        print(line)
    print(json.dumps(out["targets"], indent=1))
    for name, r in out.get("record", {}).get("readers", {}).items():
        m = r["point_series"]
        print(f"record {out['record']['days']} days, {name:14s}: point series {m['requests']} requests, "
              f"{m['bytes'] / 1e6:.1f} MB, {m['time_s']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
