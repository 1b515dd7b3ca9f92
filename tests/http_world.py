"""A finished tiny run for the HTTP-reading and catalog tests, built once per test session with the
real stage code: the downscale test world (fused.zarr, predictors, trained model) → ``downscale``
→ ``aggregate`` → ``export`` (two daily GeoTIFFs, one monthly HDF5).

``tile_cells=2`` makes the master shards (16 days × 20 × 20 px) hold 2×2 inner chunks (16 × 10 × 10),
so partial reads go through Range requests (suffix range for the shard index, then chunk ranges).
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def built_run(root: str):
    """(cfg, {"master": url, "monthly": url, "fused": url, "exports": [paths]}) under ``root``."""
    from downscale_world import make_world
    from sm1km.stages import aggregate, downscale
    from sm1km.stages.export import export

    cfg, _ = make_world(root, tile_cells=2)
    out = {"master": downscale.downscale(cfg)["master"], "monthly": aggregate.aggregate(cfg)["monthly"],
           "fused": cfg.store.url("fused.zarr")}
    files = export(cfg, fmt="geotiff", product="daily", start="2020-01-01", end="2020-01-02",
                   out=cfg.store.url("exports", "geotiff"))["files"]
    files += export(cfg, fmt="hdf5", product="monthly", out=cfg.store.url("exports", "hdf5"))["files"]
    files += export(cfg, fmt="netcdf", product="daily", start="2020-01-01", end="2020-01-02",
                    out=cfg.store.url("exports", "netcdf"))["files"]
    out["exports"] = sorted(files)
    return cfg, out


def run_root(tmp_path_factory) -> Path:
    """One run folder per session (cached: every test module gets the same run)."""
    return _session_root(str(tmp_path_factory.getbasetemp()))


@functools.cache
def _session_root(base: str) -> Path:
    p = Path(base) / "http_run"
    p.mkdir(parents=True, exist_ok=True)
    return p
