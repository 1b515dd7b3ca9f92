"""``sm1km demo --workdir DIR``: generate the synthetic world, then run every stage on it.

Ends by printing where the outputs are and the headline numbers. Re-running resumes: the world is
deterministic (same files), and every stage skips work that is already done.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from sm1km.config import RunConfig
from sm1km.stages.pipeline import STAGES, Pipeline

log = logging.getLogger(__name__)

DEMO_STAGES = ("ingest", "fuse", "train", "downscale", "aggregate", "export", "validate", "catalog")


def demo(workdir, preset: str = "demo", seed: int | None = None, client=None) -> dict:
    """Synthesise the world into ``workdir`` and run the pipeline; returns the stage outputs."""
    from sm1km.config import SeedsConfig
    from sm1km.synth import write_world

    workdir = Path(workdir)
    t0 = time.perf_counter()
    world = write_world(workdir, preset, seed=SeedsConfig().synth if seed is None else seed)
    log.info("synthetic world (%s) ready in %.1f s", preset, time.perf_counter() - t0)
    cfg = RunConfig.from_yaml(world.run_yaml)
    pipe = Pipeline(cfg)
    outputs = pipe.run(client=client, stages=DEMO_STAGES, skip_missing=True)
    outputs["_timings_s"] = {k: round(v, 1) for k, v in pipe.timings.items()}
    outputs["_config"] = str(world.run_yaml)
    return outputs


def add_arguments(p) -> None:
    p.add_argument("--workdir", required=True, help="folder for the synthetic inputs, stores and report")
    p.add_argument("--preset", default="demo", help="synthetic world preset (demo, medium)")
    p.add_argument("--seed", type=int, default=None, help="world seed (default: the preset's)")


def run_cli(args) -> int:
    logging.getLogger("sm1km").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    out = demo(args.workdir, preset=args.preset, seed=args.seed)
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
    missing = [s for s in DEMO_STAGES if s not in out]
    if missing:
        print(f"  (stages not available in this version: {', '.join(missing)})")
    print("  stage timings (s): " + ", ".join(f"{k} {v}" for k, v in out["_timings_s"].items()))
    from sm1km.storage.metrics_json import read_metrics_json
    from sm1km.validation.validate import headline

    text = headline(read_metrics_json(cfg))
    if text:
        print("\nHeadline numbers:\n  " + text.replace("\n", "\n  "))
    print(f"\nOpen the report: {wd / 'store' / 'report' / 'index.html'}")
    return 0
