"""One stage run in a fresh process, for peak-memory figures: ``python -m harness.worker JOB``.

``JOB`` is a JSON file ``{"stage": "ingest"|"downscale"|"fuse", "config": run.yaml, "clean": [paths],
"options": {...}}``. The stage runs synchronously in this process (the process is the worker), and
the last line of stdout is JSON: wall and CPU seconds, peak RSS (``VmHWM``: ``ru_maxrss`` would
include the parent's RSS at fork on Linux) and the stage stats.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time


def run_job(job: dict) -> dict:
    import resource

    from harness.timing import peak_rss_bytes
    from sm1km.config import RunConfig

    for p in job.get("clean", []):
        shutil.rmtree(p, ignore_errors=True)
    cfg = RunConfig.from_yaml(job["config"])
    cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"kind": "synchronous"})})
    stage = job["stage"]
    if stage == "ingest":
        from sm1km.stages.ingest import ingest as fn
    elif stage == "downscale":
        from sm1km.stages.downscale import downscale as fn
    elif stage == "fuse":
        from sm1km.stages.fuse import fuse as fn
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    rss_before = peak_rss_bytes()  # imports done: what the process holds before any work
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    out = fn(cfg, None, **job.get("options", {}))
    wall = time.perf_counter() - w0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"stage": stage, "wall_s": wall, "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "peak_rss_bytes": peak_rss_bytes(), "peak_rss_before_stage_bytes": rss_before,
            "stats": dict(getattr(out, "stats", {}) or {})}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    print(json.dumps(run_job(job)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
