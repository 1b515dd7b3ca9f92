"""The benchmark's world: a synthetic world (``sm1km.synth``) with its run configs at 1× and 4×.

The world covers the **4×** region; the **1×** run is one quarter of it (half the rows and half
the columns of 0.25° cells; which quarter is a preset choice), ingested from the same input files
into its own store root, so memory at 1× and 4× is compared on the same code, inputs and model. The model is trained once,
on the 4× stores, with the real ``train`` stage, and the 1× config points at it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sm1km.config import RunConfig
from sm1km.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BenchPreset:
    """Size of a benchmark: the synthetic world (= the 4× region) and the work done on it."""

    name: str
    world: str                       # sm1km.synth preset
    overrides: tuple = ()            # WorldParams overrides, as (key, value) pairs
    seed: int = 1
    train_options: tuple = (("algorithms", ("gbt",)), ("target", "residual"))
    scaling: tuple = ((1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2))  # (workers, threads, xgboost threads)
    export_formats: tuple = ("geotiff", "hdf5", "modis")
    ingest_task_memory_bytes: int = 16 << 20   # ingest budget of the memory runs: below what 1x needs
    rf_compare: bool = True
    quarter: str = "coast"           # the 1x quarter: nw, ne, sw, se, or coast (the one with most sea)
    scaling_region: str = "4x"       # region the scaling runs downscale (enough shards for 2 workers)
    units: str = "full"              # size of results.units: "full" (global units) or "quick" (tests)

    def params(self):
        from sm1km.synth import preset

        return preset(self.world, **dict(self.overrides))


PRESETS: dict[str, BenchPreset] = {
    # the test's world: seconds
    "tiny": BenchPreset("tiny", "tiny", (("n_days", 12),),
                        train_options=(("algorithms", ("gbt",)), ("target", "residual"), ("gbt_max_rounds", 40)),
                        scaling=((1, 1, 1), (2, 1, 1)), export_formats=("geotiff", "hdf5"), rf_compare=False,
                        units="quick"),
    # the demo world (480x480 px, north Italy) for 32 days. 1x = its coastal quarter (240x240 px, 4
    # shards of 32x120x120; with seed 1 the sea is in the north-east: one shard all sea, two coastal,
    # one inland - as a global run meets coasts); 4x = the whole world (16 shards), also the region
    # of the scaling runs
    "small": BenchPreset("small", "demo", (("n_days", 32),)),
    # the medium world (720x720 px, 6x6 deg) for 128 days = full 128-day shards; 1x = 360x360 px =
    # 9 shards of 128x120x120 (also the region of the scaling runs), 4x = 36 shards
    "medium": BenchPreset("medium", "medium", (("n_days", 128),), scaling_region="1x"),
}


def get_preset(name: str) -> BenchPreset:
    if name not in PRESETS:
        raise ConfigError("--preset", f"unknown benchmark preset '{name}'.", f"use one of {', '.join(PRESETS)}.")
    return PRESETS[name]


@dataclasses.dataclass
class BenchWorld:
    """Paths and configs of a prepared benchmark world."""

    workdir: Path
    cfg4: RunConfig          # the whole world (4x), store root <workdir>/world/store
    cfg1: RunConfig          # one quarter of it (1x), store root <workdir>/store_1x
    setup_s: dict[str, float]
    world_json: dict

    @property
    def scratch(self) -> Path:
        p = self.workdir / "scratch"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def config_file(self, cfg: RunConfig, name: str) -> str:
        """Write ``cfg`` as a YAML file (for subprocess workers) and return its path."""
        import yaml

        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return str(path)


def _synchronous(cfg: RunConfig) -> RunConfig:
    return cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"kind": "synchronous"})})


QUARTERS = ("nw", "ne", "sw", "se")


def coastal_quarter(truth_url: str | None) -> str:
    """The quarter of the world with the most sea pixels (the synthetic truth's ``land`` mask); nw if
    there is no truth store or no sea."""
    if not truth_url or not os.path.exists(truth_url):
        return "nw"
    import xarray as xr

    with xr.open_zarr(truth_url) as ds:
        if "land" not in ds:
            return "nw"
        land = ds["land"].values.astype(bool)
    h, w = land.shape[0] // 2, land.shape[1] // 2
    sea = {"nw": (~land[:h, :w]).sum(), "ne": (~land[:h, w:]).sum(), "sw": (~land[h:, :w]).sum(),
           "se": (~land[h:, w:]).sum()}
    best = max(QUARTERS, key=lambda q: (sea[q], -QUARTERS.index(q)))
    return best if sea[best] > 0 else "nw"


def quarter_config(cfg: RunConfig, root: str, quarter: str = "nw") -> RunConfig:
    """A quarter (``nw``, ``ne``, ``sw``, ``se``) of ``cfg``'s region (whole 0.25° cells), with its
    own store root and the same model."""
    reg = cfg.coarse_region
    if reg.n_rows % 2 or reg.n_cols % 2 or reg.n_rows < 2 or reg.n_cols < 2:
        raise ConfigError("benchmark world", f"the region ({reg.n_rows}x{reg.n_cols} cells) cannot be halved.",
                          "use a world with an even number of 0.25° rows and columns.")
    if quarter not in QUARTERS:
        raise ConfigError("benchmark quarter", f"unknown quarter {quarter!r}.", "use nw, ne, sw or se.")
    b = reg.bbox
    mid_lon = b.west + (reg.n_cols // 2) * 0.25
    mid_lat = b.north - (reg.n_rows // 2) * 0.25
    west, east = (b.west, mid_lon) if quarter[1] == "w" else (mid_lon, b.east)
    south, north = (mid_lat, b.north) if quarter[0] == "n" else (b.south, mid_lat)
    region = cfg.region.model_copy(update={"west": west, "east": east, "south": south, "north": north})
    model = cfg.model.model_copy(update={"path": cfg.model_path})
    return cfg.model_copy(update={"region": region, "store": cfg.store.model_copy(update={"root": root}),
                                  "model": model, "inputs": cfg.inputs.model_copy(update={"truth": None})})


def input_files(cfg: RunConfig) -> list[str]:
    """Every input file the ingest of ``cfg`` opens (whole files)."""
    inp = cfg.inputs
    pats: list[str] = []
    for v in (inp.cci, inp.era5, inp.era5_lsm):
        if v:
            pats.append(str(v))
    if inp.ismn:
        pats.append(os.path.join(str(inp.ismn), "**", "*"))
    pred = inp.predictors
    for field in type(pred).model_fields:
        v = getattr(pred, field)
        if isinstance(v, str) and v:
            pats.append(v)
    files: set[str] = set()
    for p in pats:
        for f in glob.glob(p, recursive=True):
            if os.path.isfile(f):
                files.add(f)
    return sorted(files)


def tree_bytes(path) -> int:
    """Bytes of all files under ``path`` (0 if missing)."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(dirpath, n))
            except OSError:
                pass
    return total


def tree_files(path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


def prepare_world(preset: BenchPreset, workdir: Path, *, reuse: bool = True) -> BenchWorld:
    """Write the synthetic world (or reuse an identical one in ``workdir``) and build the configs.

    Ingest, fusion and training are *not* done here: the benchmark runs them (they are measured).
    """
    from sm1km.synth import write_world
    from sm1km.synth.generate import WorldPaths

    workdir = Path(workdir).resolve()
    wdir = workdir / "world"
    params = preset.params()
    paths = WorldPaths(wdir)
    setup: dict[str, float] = {}
    same = False
    if reuse and paths.world_json.exists():
        try:
            old = json.loads(paths.world_json.read_text())
            same = old.get("params") == params.to_dict() and old.get("seed") == preset.seed
        except (OSError, ValueError):
            same = False
    t0 = time.perf_counter()
    if not same:
        paths = write_world(wdir, params, seed=preset.seed, overwrite=True)
    setup["world_s"] = round(time.perf_counter() - t0, 2)
    setup["world_reused"] = same
    cfg4 = _synchronous(RunConfig.from_yaml(paths.run_yaml))
    quarter = coastal_quarter(cfg4.inputs.truth) if preset.quarter == "coast" else preset.quarter
    setup["quarter_1x"] = quarter
    cfg1 = _synchronous(quarter_config(cfg4, str(workdir / "store_1x"), quarter))
    return BenchWorld(workdir, cfg4, cfg1, setup, json.loads(paths.world_json.read_text()))


def region_summary(cfg: RunConfig) -> dict[str, Any]:
    reg, f = cfg.coarse_region, cfg.grid.factor
    b = reg.bbox
    return {"bbox": [b.west, b.south, b.east, b.north], "cells": [reg.n_rows, reg.n_cols],
            "pixels": [reg.n_rows * f, reg.n_cols * f], "days": int(cfg.period.n_days), "factor": f,
            "pixel_days": int(reg.n_rows * f * reg.n_cols * f * cfg.period.n_days),
            "cell_days": int(reg.n_rows * reg.n_cols * cfg.period.n_days)}
