"""``sm1km synth --workdir DIR [--preset demo|medium|multiyear|tiny] [--seed N]``: write the synthetic world.

Calls :func:`sm1km.synth.write_world` and prints what it wrote. See docs/synthetic-world.md.
"""

from __future__ import annotations

import time


def add_arguments(p) -> None:
    from sm1km.config import SeedsConfig
    from sm1km.synth import PRESETS

    p.add_argument("--workdir", required=True, metavar="DIR", help="folder to write the world into")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="world size (default: demo)")
    p.add_argument("--seed", type=int, default=SeedsConfig().synth, help="random seed (same seed → same bytes)")
    p.add_argument("--days", type=int, default=None, metavar="N", help="override the preset's number of days")
    p.add_argument("--stations", type=int, default=None, metavar="N", help="override the number of ISMN stations")
    p.add_argument("--overwrite", action="store_true", help="replace a different world already in --workdir")


def run(args) -> int:
    from sm1km.cli._common import chatty
    from sm1km.synth import preset, write_world

    overrides = {}
    if args.days is not None:
        overrides["n_days"] = args.days
    if args.stations is not None:
        overrides["n_stations"] = args.stations
    params = preset(args.preset, **overrides)
    t0 = time.perf_counter()
    paths = write_world(args.workdir, params, seed=args.seed, overwrite=args.overwrite)
    took = time.perf_counter() - t0
    if not chatty(args):
        return 0
    files = paths.all_files()
    size = sum(f.stat().st_size for f in files)
    print(f"synthetic world '{params.name}' (seed {args.seed}) written in {took:.1f} s: "
          f"{len(files)} files, {size / 1e6:.1f} MB")
    print(f"  run config : {paths.run_yaml}")
    print(f"  CCI        : {paths.cci_dir}/ ({len(paths.cci_files())} daily files)")
    print(f"  ERA5       : {paths.era5_dir}/ ({len(paths.era5_files())} files) + {paths.era5_lsm.name}")
    print(f"  ISMN       : {paths.ismn_dir}/ ({len(paths.ismn_files())} station files)")
    print(f"  predictors : {paths.predictors_dir}/")
    print(f"  truth      : {paths.truth} and {paths.truth_25km.name} (evaluation only)")
    print(f"  summary    : {paths.world_json}")
    print(f"next: sm1km ingest --config {paths.run_yaml}")
    return 0
