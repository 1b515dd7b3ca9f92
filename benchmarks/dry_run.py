"""The globe, simulated: ``sm1km run --dry-run`` of the global 2000-2020 configuration, measured.

1. **The dry run itself** on a fresh root, locally and on S3 (a moto server on 127.0.0.1): every
   store's template at full size (1440 × 720 cells at 0.25°, 43200 × 21600 px at 1 km, 7671 days),
   every unit of every stage planned (3.9 million master shards, 1.36 million monthly chunks,
   243,000 fusion units, ...), every ledger scanned. Wall time, the driver's peak RSS and the
   object-store requests, each in a fresh subprocess (``peak RSS`` is per process).
2. **The ledger scan of millions of markers**: a ledger of ``--markers`` markers (local) and
   ``--s3-markers`` (moto) scanned with :func:`sm1km.runtime.units.scan_ledger` (paged LIST, one
   byte per unit); the time per marker and per LIST page projected to the markers of a finished
   global run (every master shard, monthly chunk and fusion unit marked: 5.49 million), at the
   page time measured on moto and at an assumed 100 ms per LIST page of real S3, one page after
   the other and listed by tile row 16 at a time (as ``scan_ledger`` does for big plans).

    python benchmarks/dry_run.py --out benchmarks/results/dry_run.json       # ~3 min on 2 cores
    python benchmarks/dry_run.py --quick                                     # a 10°x10° config, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

GLOBAL = {"name": "global-2000-2020-dry-run", "region": {"west": -180, "south": -90, "east": 180, "north": 90},
          "period": {"start": "2000-01-01", "end": "2020-12-31"}}
QUICK = {"name": "quick-dry-run", "region": {"west": 0, "south": 0, "east": 10, "north": 10},
         "period": {"start": "2000-01-01", "end": "2020-12-31"}}
STAGES = "ingest,fuse,train,downscale,aggregate,validate,export,catalog"
#: assumed time of one LIST page (1000 keys) on real S3 from a cluster in the bucket's region
S3_LIST_PAGE_S = 0.1

_CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from sm1km.config import RunConfig
    from sm1km.pipeline import Pipeline
    t_import = time.perf_counter() - t0
    cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
    res = Pipeline(cfg).run(stages=sys.argv[2].split(","), dry_run=True)
    out = {"stats": res.stats, "stages": {k: {a: b for a, b in v.items() if a != "templates"} for k, v in res.items()},
           "import_s": round(t_import, 2), "process_s": round(time.perf_counter() - t0, 2)}
    print("@@" + json.dumps(out, default=str))
""")


def _dry_run(cfg: dict, stages: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg), stages], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def _summary(r: dict) -> dict:
    s = r["stats"]
    return {"units_total": s["units_total"], "units_by_stage": s["units_by_stage"], "wall_s": s["wall_s"],
            "process_s": r["process_s"], "import_s": r["import_s"], "peak_rss_mb": s["peak_rss_mb"],
            "requests": s["requests"], "plan_units_per_s": s["plan_units_per_s"],
            "templates": s["templates"],
            "per_stage_s": {k: v.get("wall_s") for k, v in r["stages"].items()}}


def _markers(ledger, grid, n: int) -> None:
    """Mark the first ``n`` units of ``grid`` (empty markers, as fast as the store takes them)."""
    import itertools

    fs, path = ledger.fs, ledger.path
    keys = [u.key for u in itertools.islice(grid.units(), n)]
    if ledger.url.startswith("s3://"):
        for i in range(0, len(keys), 500):
            fs.pipe({f"{path}/{k}.json": b"{}" for k in keys[i:i + 500]})
        return
    os.makedirs(path, exist_ok=True)
    for k in keys:
        with open(os.path.join(path, f"{k}.json"), "wb") as f:
            f.write(b"{}")


def _scan(url: str, so: dict, n: int) -> dict:
    from sm1km.config import RunConfig
    from sm1km.runtime.units import scan_ledger
    from sm1km.stages.downscale import shard_grid
    from sm1km.stages.dryrun import RequestCounter
    from sm1km.storage import store

    cfg = RunConfig.from_dict({**GLOBAL, "store": {"root": url}})
    grid = shard_grid(cfg)
    ledger = store.Ledger(url, "master.zarr", so)
    t0 = time.perf_counter()
    _markers(ledger, grid, n)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    with RequestCounter([url]) as req:
        scan = scan_ledger(ledger, grid)
    t = time.perf_counter() - t0
    assert scan.n_done == n, (scan.n_done, n)
    pages = req.counts.get("s3.list_objects_v2", 0)
    return {"markers": n, "units": len(grid), "scan_s": round(t, 3), "us_per_marker": round(t / n * 1e6, 2),
            "list_requests": pages or None, "s_per_list_page": round(t / pages, 4) if pages else None,
            "write_markers_s": round(t_write, 1), "bitmap_bytes": int(scan.marked.nbytes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="a 10x10 degree region instead of the globe")
    ap.add_argument("--markers", type=int, default=200_000, help="markers of the local ledger-scan measurement")
    ap.add_argument("--s3-markers", type=int, default=3_000, help="markers of the moto ledger-scan measurement")
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args(argv)
    base = GLOBAL if not args.quick else QUICK
    tmp = Path(tempfile.mkdtemp(prefix="sm1km-dry-run-"))
    result: dict = {"config": base, "stages": STAGES, "machine": {"python": platform.python_version(),
                                                                   "cpus": os.cpu_count()}}
    try:
        result["local"] = _summary(_dry_run({**base, "store": {"root": str(tmp / "root")}}, STAGES))
        print("local:", json.dumps({k: result["local"][k] for k in ("units_total", "wall_s", "peak_rss_mb")}))
        result["scan_local"] = _scan(str(tmp / "scan"), {}, args.markers)
        print("scan local:", result["scan_local"])
        if not args.no_s3:
            import logging

            import s3fs  # type: ignore[import-untyped]
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            os.environ.update(env)
            try:
                bucket = f"dry-run-{uuid.uuid4().hex[:8]}"
                s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(bucket)
                cfg = {**base, "store": {"root": f"s3://{bucket}/run", "endpoint_url": endpoint}}
                result["s3_moto"] = _summary(_dry_run(cfg, STAGES, env))
                print("s3:", json.dumps({k: result["s3_moto"][k] for k in ("units_total", "wall_s", "peak_rss_mb")}))
                result["scan_s3_moto"] = _scan(f"s3://{bucket}/scan", {"endpoint_url": endpoint}, args.s3_markers)
                print("scan s3:", result["scan_s3_moto"])
            finally:
                server.stop()
        full = 3_888_000 + 1_360_800 + 243_000  # every master shard, monthly chunk and fusion unit marked
        proj = {"markers_finished_global_run": full,
                "local_scan_s": round(full * result["scan_local"]["us_per_marker"] / 1e6, 1),
                "list_pages": -(-full // 1000)}
        proj["s3_scan_s_at_100ms_per_page"] = round(proj["list_pages"] * S3_LIST_PAGE_S, 1)
        # listed by tile row, SCAN_WORKERS rows at once (runtime.units.scan_ledger): 180 rows of
        # 21,600 master markers (22 pages each) + 180 rows of 7,560 monthly (8) + 45 rows of 5,400 fused (6)
        from sm1km.runtime.units import SCAN_WORKERS

        row_pages = 180 * 22 + 180 * 8 + 45 * 6 + 3 * 2
        proj["s3_scan_s_by_rows_at_100ms_per_page"] = round(row_pages / SCAN_WORKERS * S3_LIST_PAGE_S, 1)
        result["projection"] = proj
        print("projection:", proj)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
