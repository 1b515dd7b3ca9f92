"""Tiny master/monthly stores for the export tests, written per the store contract with store.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core import grid
from sm1km.storage import store

FILL = -32768


def run_config(root: str, so: dict, bbox=(10.0, 45.0, 10.5, 45.5), factor: int = 10,
               start: str = "2020-01-30", end: str = "2020-02-04", **store_extra) -> RunConfig:
    s = {"root": root}
    if so.get("endpoint_url"):
        s["endpoint_url"] = so["endpoint_url"]
    s.update(store_extra)
    w, so_, e, n = bbox
    return RunConfig.from_dict({
        "region": {"west": w, "south": so_, "east": e, "north": n},
        "period": {"start": start, "end": end},
        "grid": {"factor": factor, "tile_cells": 1, "time_block_days": 4},
        "store": s,
        "cluster": {"kind": "synchronous"},
    })


def _crs() -> xr.DataArray:
    from pyproj import CRS

    return xr.DataArray(np.int32(0), attrs={"grid_mapping_name": "latitude_longitude",
                                            "crs_wkt": CRS.from_epsg(4326).to_wkt(), "epsg_code": "EPSG:4326"})


def random_int16(shape, seed: int, fill_fraction: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 600, size=shape, dtype=np.int16)
    q[rng.random(shape) < fill_fraction] = FILL
    return q


def write_store(url: str, so: dict, cfg: RunConfig, variables: dict[str, np.ndarray], times,
                chunks=(4, 10, 10), shards=None, scaled=("sm", "sm_uncertainty")) -> None:
    """Write int16 arrays (time, lat, lon) as a contract store (float data + CF int16 encoding)."""
    lat, lon = grid.region_coords(cfg.coarse_region, cfg.grid.factor)
    data_vars, enc = {}, {}
    for name, q in variables.items():
        assert q.shape == (len(times), len(lat), len(lon)), (name, q.shape)
        if name in scaled:
            f = np.where(q == FILL, np.nan, q.astype(np.float64) * 0.001)
            data_vars[name] = xr.DataArray(f, dims=("time", "lat", "lon"),
                                           attrs={"units": "m3 m-3", "grid_mapping": "crs",
                                                  "long_name": f"{name} test"})
            e = store.cf_int16_encoding()
        else:
            data_vars[name] = xr.DataArray(q, dims=("time", "lat", "lon"), attrs={"long_name": name, "units": "1"})
            e = {"dtype": "int16"}
        e["chunks"] = chunks
        e["fill_value"] = FILL if name in scaled else 0
        if shards:
            e["shards"] = shards
        enc[name] = e
    ds = xr.Dataset(data_vars, coords={"time": pd.DatetimeIndex(times), "lat": lat, "lon": lon})
    ds["crs"] = _crs()
    ds.attrs.update(store.provenance_attrs(cfg, title="sm1km test store", summary="export tests"))
    ds.attrs["time_coverage_start"] = str(pd.DatetimeIndex(times)[0].date())
    tpl = ds.chunk({"time": (shards or chunks)[0], "lat": (shards or chunks)[1], "lon": (shards or chunks)[2]})
    store.create_template(url, tpl, enc, so, overwrite=True)
    step = (shards or chunks)[0]
    for t0 in range(0, len(times), step):
        reg = {"time": slice(t0, min(t0 + step, len(times))), "lat": slice(0, len(lat)), "lon": slice(0, len(lon))}
        store.write_region(url, ds.isel(reg).drop_vars("crs"), reg, so)
    store.finalize(url, so, store.coverage_attrs(times))


def make_master(cfg: RunConfig, so: dict, seed: int = 0, **kw) -> dict[str, np.ndarray]:
    """master.zarr with random `sm` and `sm_uncertainty` (10 % fill); returns the raw int16 arrays."""
    lat, lon = grid.region_coords(cfg.coarse_region, cfg.grid.factor)
    times = cfg.dates()
    shape = (len(times), len(lat), len(lon))
    q = {"sm": random_int16(shape, seed), "sm_uncertainty": random_int16(shape, seed + 1)}
    q["sm_uncertainty"][q["sm"] == FILL] = FILL
    write_store(cfg.store.url("master.zarr"), so, cfg, q, times, **kw)
    return q


def make_monthly(cfg: RunConfig, so: dict, months: int = 14, seed: int = 5, **kw) -> dict[str, np.ndarray]:
    lat, lon = grid.region_coords(cfg.coarse_region, cfg.grid.factor)
    times = pd.date_range("2019-12-01", periods=months, freq="MS")
    shape = (len(times), len(lat), len(lon))
    sm = random_int16(shape, seed)
    nvd = np.where(sm == FILL, 0, 28).astype(np.int16)
    q = {"sm": sm, "n_valid_days": nvd}
    write_store(cfg.store.url("monthly.zarr"), so, cfg, q, times, **kw)
    return q


def local_copy(url: str, so: dict, tmp_path) -> str:
    """A local path of an exported file (downloaded first when it is on S3)."""
    if not store.is_remote(url):
        return url
    fs, path = store.filesystem(url, so)
    dst = str(tmp_path / ("dl_" + path.replace("/", "_")))
    fs.get_file(path, dst)
    return dst


def listing(url: str, so: dict) -> list[str]:
    """Names of every object/file under ``url`` (recursively)."""
    fs, path = store.filesystem(url, so)
    if not fs.exists(path):
        return []
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))
