"""``sm1km demo --workdir DIR``: generate the synthetic world, then run every stage on it.

Calls :func:`sm1km.pipeline.demo`, then prints where the outputs are and the headline numbers.
Re-running resumes: the world is deterministic (same files), and every stage skips work that is
already done.
"""

from __future__ import annotations

import logging
import sys


def add_arguments(p) -> None:
    p.add_argument("--workdir", required=True, help="folder for the synthetic inputs, stores and report")
    p.add_argument("--preset", default="demo", help="synthetic world preset (demo, medium)")
    p.add_argument("--seed", type=int, default=None, help="world seed (default: the preset's)")


def run(args) -> int:
    from pathlib import Path

    from sm1km.cli._common import chatty, log_level
    from sm1km.config import RunConfig
    from sm1km.pipeline import demo
    from sm1km.storage.metrics_json import read_metrics_json
    from sm1km.validation.validate import headline

    logging.getLogger("sm1km").setLevel(log_level(args))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level(args), stream=sys.stderr)
    out = demo(args.workdir, preset=args.preset, seed=args.seed)
    if not chatty(args):
        return 0
    wd = Path(args.workdir).resolve()
    print("\nsm1km demo finished. Outputs:")
    print(f"  config:   {out['_config']}")
    cfg = RunConfig.from_yaml(out["_config"])
    for name in ("inputs/cci.zarr", "inputs/era5.zarr", "inputs/predictors.zarr", "inputs/stations.zarr",
                 "fused.zarr", "master.zarr", "monthly.zarr", "model/model.ubj", "exports", "catalog",
                 "report/index.html"):
        p = Path(cfg.store.url(name))
        if p.exists():
            print(f"  {name:24s}{p}")
    print("  stage timings (s): " + ", ".join(f"{k} {v}" for k, v in out["_timings_s"].items()))
    text = headline(read_metrics_json(cfg))
    if text:
        print("\nHeadline numbers:\n  " + text.replace("\n", "\n  "))
    print(f"\nOpen the report: {wd / 'store' / 'report' / 'index.html'}")
    return 0
