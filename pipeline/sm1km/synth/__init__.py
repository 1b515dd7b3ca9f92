"""The synthetic world: a seeded 1 km daily soil-moisture truth and every input derived from it,
written in the real file formats (ESA CCI COMBINED netCDF, ERA5 netCDF, GeoTIFF predictors, ISMN
Header+values), plus the truth stores used for evaluation and a ready ``run.yaml``.

Python::

    from sm1km.synth import write_world, make_world, preset
    paths = write_world("work/demo", "demo", seed=1)           # files
    world = make_world(preset("tiny", n_days=5), seed=1)       # arrays in memory

CLI: ``sm1km synth --workdir DIR [--preset demo|medium|tiny] [--seed N]``. See docs/synthetic-world.md.
"""

from __future__ import annotations

import time

from sm1km.synth.params import PRESETS, WorldParams, preset
from sm1km.synth.world import Day, Statics, World, make_statics, make_world, simulate
from sm1km.synth.generate import WorldPaths, run_config_dict, write_world

__all__ = ["PRESETS", "WorldParams", "preset", "Day", "Statics", "World", "make_statics", "make_world", "simulate",
           "WorldPaths", "run_config_dict", "write_world", "add_arguments", "run_cli"]


def add_arguments(p) -> None:
    from sm1km.config import SeedsConfig

    p.add_argument("--workdir", required=True, metavar="DIR", help="folder to write the world into")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="world size (default: demo)")
    p.add_argument("--seed", type=int, default=SeedsConfig().synth, help="random seed (same seed → same bytes)")
    p.add_argument("--days", type=int, default=None, metavar="N", help="override the preset's number of days")
    p.add_argument("--stations", type=int, default=None, metavar="N", help="override the number of ISMN stations")
    p.add_argument("--overwrite", action="store_true", help="replace a different world already in --workdir")


def run_cli(args) -> int:
    overrides = {}
    if args.days is not None:
        overrides["n_days"] = args.days
    if args.stations is not None:
        overrides["n_stations"] = args.stations
    params = preset(args.preset, **overrides)
    t0 = time.perf_counter()
    paths = write_world(args.workdir, params, seed=args.seed, overwrite=args.overwrite)
    took = time.perf_counter() - t0
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
