"""``sm1km predictors --config run.yaml``: derive the static predictor GeoTIFFs from public downloads.

Reads ``inputs.predictor_sources`` (DEM tiles, SoilGrids clay/sand, WorldCover or MCD12Q1) and writes
the files ``inputs.predictors.elevation/slope/twi/clay/sand/land_cover`` point at, on the run's 1 km
grid (:mod:`sm1km.stages.predictors`; docs/data.md). Runs under the store's run lock, as every stage
(the files are a run's inputs: no other run of the same store writes or reads them meanwhile).
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)


@locked_cli("predictors")
def run(args) -> int:
    import json

    from sm1km.stages.predictors import predictors

    cfg = load_config(args)
    print(json.dumps(predictors(cfg).to_json(), indent=2))
    return 0
