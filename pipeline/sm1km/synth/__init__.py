"""The synthetic world: a seeded 1 km daily soil-moisture truth and every input derived from it,
written in the real file formats (ESA CCI COMBINED netCDF, ERA5 netCDF, GeoTIFF predictors, ISMN
Header+values), plus the truth stores used for evaluation and a ready ``run.yaml``.

Python::

    from sm1km.synth import write_world, make_world, preset
    paths = write_world("work/demo", "demo", seed=1)           # files
    world = make_world(preset("tiny", n_days=5), seed=1)       # arrays in memory
    ideal = preset("demo", errors=ErrorModel.ideal())          # without the realistic error structure

The world's own diagnostics (station vs pixel truth, CCI/ERA5 vs truth, LST and clouds vs wetness):
``python -m sm1km.synth.diagnostics WORKDIR [--json OUT]`` (:mod:`sm1km.synth.diagnostics`).

CLI: ``sm1km synth --workdir DIR [--preset demo|medium|multiyear|tiny] [--seed N]``. See docs/synthetic-world.md.
"""

from __future__ import annotations

from sm1km.synth.generate import WorldPaths, run_config_dict, write_world
from sm1km.synth.params import PRESETS, ErrorModel, WorldParams, preset
from sm1km.synth.world import Day, Statics, World, make_statics, make_world, simulate

__all__ = ["PRESETS", "ErrorModel", "WorldParams", "preset", "Day", "Statics", "World", "make_statics", "make_world", "simulate",
           "WorldPaths", "run_config_dict", "write_world"]
