"""Master-store layout benchmark: bytes, objects (requests) and time read for the two user access
patterns, for several inner-chunk shapes inside the master shard (time_block_days, tile, tile).

Patterns (two stores per candidate, so both can be realistic in size):
  * ``map_region_day`` — one day over a region of ``tiles × tiles`` master tiles (map store:
    that region × one time block);
  * ``map_tile_day``   — one day over one tile (map store);
  * ``series_point``   — ``--series-days`` at one pixel, mean over several pixels (series store: one
    tile × ``--series-days``); also extrapolated to the full 2000–2020 record (7,671 days).

Each candidate store is built with the production code (``sm1km.storage.master.packed_encoding`` +
``master.write_packed``, one write per shard) from a synthetic soil-moisture field with realistic
spatial/temporal structure, noise and a sea mask (so compression is realistic). Reads go through
zarr-python with a counting store wrapper (requests and bytes actually fetched, metadata excluded);
time is measured on the local disk and with an emulated object store (fixed latency per request
plus a per-stream bandwidth, requests concurrent as zarr issues them). Results are written as JSON.

    python benchmarks/master_layout.py --out benchmarks/results/master_layout.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.storage import LocalStore, WrapperStore

from sm1km.core.encoding import encode_int16
from sm1km.storage import master

CANDIDATES = [(1, 120, 120), (4, 60, 60), (8, 60, 60), (8, 40, 40), (16, 30, 30), (32, 30, 30), (32, 120, 120)]
FULL_RECORD_DAYS = 7671


class CountingStore(WrapperStore):
    """Counts get requests and bytes fetched; optionally adds object-store latency/bandwidth."""

    def __init__(self, store, latency_s: float = 0.0, bandwidth_bps: float = 0.0):
        super().__init__(store)
        self.latency_s, self.bandwidth_bps = latency_s, bandwidth_bps
        self.requests = 0
        self.bytes = 0

    def _with_store(self, store):
        return type(self)(store, self.latency_s, self.bandwidth_bps)

    async def _delay(self, nbytes: int) -> None:
        if self.latency_s or self.bandwidth_bps:
            await asyncio.sleep(self.latency_s + (nbytes / self.bandwidth_bps if self.bandwidth_bps else 0.0))

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        n = len(buf) if buf is not None else 0
        self.requests += 1
        self.bytes += n
        await self._delay(n)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        out = await self._store.get_partial_values(prototype, key_ranges)
        n = sum(len(b) for b in out if b is not None)
        self.requests += len(key_ranges)
        self.bytes += n
        await self._delay(n)
        return out


def synthetic_block(rng: np.random.Generator, t0: int, nt: int, ny: int, nx: int, y0: int, x0: int,
                    cell: int, coast_px: int) -> np.ndarray:
    """Soil-moisture-like float32 block: smooth base + seasonal + coarse-cell anomalies + noise, sea NaN."""
    t = np.arange(t0, t0 + nt)[:, None, None]
    y = np.arange(y0, y0 + ny)[None, :, None]
    x = np.arange(x0, x0 + nx)[None, None, :]
    base = 0.22 + 0.08 * np.sin(y / 97.0) * np.cos(x / 131.0) + 0.03 * np.sin((x + y) / 17.0)
    season = 0.06 * np.sin(2 * np.pi * t / 365.25)
    coarse = rng.normal(0, 0.03, (nt, ny // cell + 1, nx // cell + 1)).cumsum(axis=0) * 0.2
    anom = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :ny, :nx]
    sm = base + season + anom + rng.normal(0, 0.01, (nt, ny, nx))
    sea = (y + 0.6 * x) < coast_px  # a coastline across the north-west corner
    sm = np.where(np.broadcast_to(sea, sm.shape), np.nan, sm)
    return np.clip(sm, 0.01, 0.6).astype(np.float32)


def build_store(path: Path, inner, shard, n_days: int, n_px: int, cell: int, seed: int) -> dict:
    """A master-like store (n_days × n_px × n_px) with the candidate layout, written shard by shard."""
    import dask.array as da

    times = pd.date_range("2000-01-01", periods=n_days, freq="D")
    tpl = xr.Dataset({"sm": (("time", "lat", "lon"), da.empty((n_days, n_px, n_px), dtype="float32",
                                                              chunks=(n_days, n_px, n_px)))},
                     coords={"time": times, "lat": np.linspace(50, 49, n_px), "lon": np.linspace(10, 11, n_px)})
    enc = {"sm": master.packed_encoding(inner, shard), "lat": {"_FillValue": None}, "lon": {"_FillValue": None}}
    tpl.to_zarr(str(path), mode="w", compute=False, consolidated=False, zarr_format=3, encoding=enc)
    t_write = 0.0
    n_shards = 0
    for t0 in range(0, n_days, shard[0]):
        for y0 in range(0, n_px, shard[1]):
            for x0 in range(0, n_px, shard[2]):
                nt = min(shard[0], n_days - t0)
                rng = np.random.default_rng([seed, t0, y0, x0])
                q = encode_int16(synthetic_block(rng, t0, nt, shard[1], shard[2], y0, x0, cell, n_px // 4))
                start = time.perf_counter()
                master.write_packed(str(path), {"time": slice(t0, t0 + nt), "lat": slice(y0, y0 + shard[1]),
                                                "lon": slice(x0, x0 + shard[2])}, {"sm": q})
                t_write += time.perf_counter() - start
                n_shards += 1
    size = sum(p.stat().st_size for p in (path / "sm").rglob("*") if p.is_file() and p.name != "zarr.json")
    return {"stored_bytes": size, "raw_bytes": n_days * n_px * n_px * 2, "n_shards": n_shards,
            "write_s_per_shard": t_write / n_shards}


def measure(path: Path, read, latency_s: float, bandwidth_bps: float, repeats: int) -> dict:
    times, reqs, nbytes = [], [], []
    for _ in range(repeats):
        cs = CountingStore(LocalStore(str(path), read_only=True), latency_s, bandwidth_bps)
        arr = zarr.open_array(cs, path="sm", mode="r")
        cs.requests = cs.bytes = 0  # exclude metadata
        start = time.perf_counter()
        read(arr)
        times.append(time.perf_counter() - start)
        reqs.append(cs.requests)
        nbytes.append(cs.bytes)
    return {"requests": reqs[0], "bytes": nbytes[0], "time_s": statistics.median(times)}


def run(args) -> dict:
    shard = (args.time_block, args.tile_px, args.tile_px)
    n_px = args.tiles * args.tile_px
    rng = np.random.default_rng(args.seed)
    tp = args.tile_px
    # series pixels on land (the synthetic coastline cuts the north-west corner)
    points = [(int(rng.integers(tp // 2, tp)), int(rng.integers(tp // 2, tp))) for _ in range(args.points)]
    day = args.time_block // 2
    map_patterns = {
        "map_region_day": lambda a: a[day, :, :],
        "map_tile_day": lambda a: a[day, n_px - tp:, n_px - tp:],
    }
    series_pattern = {"series_point": lambda a: [a[:, y, x] for y, x in points]}
    n_series_shards = -(-args.series_days // args.time_block)
    full_shards = -(-FULL_RECORD_DAYS // args.time_block)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="sm1km-layout-"))
    try:
        for inner in [tuple(c) for c in args.candidates]:
            inner = master.inner_chunks(shard, inner)
            row = {"inner_chunk": list(inner), "shard": list(shard), "patterns": {}}
            for kind, (days, px, pats) in {"map": (args.time_block, n_px, map_patterns),
                                           "series": (args.series_days, tp, series_pattern)}.items():
                path = tmp / f"{kind}_{'x'.join(map(str, inner))}.zarr"
                info = build_store(path, inner, shard, days, px, args.cell, args.seed)
                row[f"{kind}_store"] = info
                for name, fn in pats.items():
                    local = measure(path, fn, 0.0, 0.0, args.repeats)
                    remote = measure(path, fn, args.latency_ms / 1000, args.bandwidth_mbps * 1e6, 1)
                    div = len(points) if name == "series_point" else 1
                    rec = {"requests": local["requests"] / div, "bytes": local["bytes"] / div,
                           "local_s": local["time_s"] / div, "emulated_object_store_s": remote["time_s"] / div}
                    if name == "series_point":
                        f = full_shards / n_series_shards
                        rec["full_record_requests"] = rec["requests"] * f
                        rec["full_record_bytes"] = rec["bytes"] * f
                    row["patterns"][name] = rec
                shutil.rmtree(path)
            results.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "master_layout",
        "zarr": zarr.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "params": {"map_region_px": n_px, "tiles": args.tiles, "series_days": args.series_days,
                   "shard": list(shard), "series_points": len(points), "repeats": args.repeats,
                   "latency_ms": args.latency_ms, "bandwidth_mbps": args.bandwidth_mbps,
                   "full_record_days": FULL_RECORD_DAYS,
                   "zarr_async_concurrency": zarr.config.get("async.concurrency")},
        "results": results,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/master_layout.json")
    p.add_argument("--series-days", type=int, default=1096, help="length of the series store")
    p.add_argument("--tiles", type=int, default=4, help="region side in tiles")
    p.add_argument("--tile-px", type=int, default=120)
    p.add_argument("--time-block", type=int, default=32)
    p.add_argument("--cell", type=int, default=30, help="fine px per 25 km cell (anomaly structure)")
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--bandwidth-mbps", type=float, default=100.0, help="MB/s per request stream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=lambda s: [tuple(int(v) for v in c.split(",")) for c in s.split(";")],
                   default=CANDIDATES, help="e.g. '1,120,120;8,60,60'")
    args = p.parse_args(argv)
    out = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    for r in out["results"]:
        pats = " | ".join(f"{k}: {v['requests']:.0f} req {v['bytes'] / 1e3:.0f} kB {v['local_s'] * 1e3:.1f} ms "
                          f"(obj {v['emulated_object_store_s'] * 1e3:.0f} ms)" for k, v in r["patterns"].items())
        print(f"inner {r['inner_chunk']}: {r['series_store']['stored_bytes'] / r['series_store']['raw_bytes']:.2f} "
              f"compressed/raw | {pats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
