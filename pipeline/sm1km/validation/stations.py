"""Station metrics: the final 1 km product against every ISMN station in the region, with the
25 km fused cube, raw ERA5 and CCI as baselines at the same stations and days
(``metrics.json`` → ``stations``; pytesmo definitions, median over stations + pooled).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.config import RunConfig
from sm1km.core.grid import FineGrid, coarse_col_of_lon, coarse_row_of_lat
from sm1km.storage import store

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- pure core
def station_metrics(obs: np.ndarray, est: np.ndarray, min_n: int = 5
                    ) -> tuple[dict[str, float | int], list[dict[str, float | int]]]:
    """Per-station metrics (columns = stations) → (median over stations + pooled, pytesmo
    definitions; the metrics of each station)."""
    from sm1km.core.metrics import metric_dict

    per = [metric_dict(est[:, k], obs[:, k]) for k in range(obs.shape[1])]
    ok = [m for m in per if m["n"] >= min_n and np.isfinite(m["r"])]
    pooled = metric_dict(est.ravel(), obs.ravel())
    return {
        "n_stations": len(ok),
        "n_samples": int(pooled["n"]),
        "r_median": float(np.median([m["r"] for m in ok])) if ok else float("nan"),
        "ubrmse_median": float(np.median([m["ubrmse"] for m in ok])) if ok else float("nan"),
        "bias_median": float(np.median([m["bias"] for m in ok])) if ok else float("nan"),
        "rmse_median": float(np.median([m["rmse"] for m in ok])) if ok else float("nan"),
        "r_pooled": pooled["r"],
        "ubrmse_pooled": pooled["ubrmse"],
        "bias_pooled": pooled["bias"],
        "rmse_pooled": pooled["rmse"],
    }, per


# ------------------------------------------------------------------------------------- extraction
def station_table(cfg: RunConfig, so) -> xr.Dataset | None:
    url = cfg.store.url("inputs", "stations.zarr")
    if not store.exists(url, so):
        log.warning("no station table at %s: station validation skipped", url)
        return None
    ds = store.open_dataset(url, so).load()
    t0, t1 = pd.Timestamp(cfg.period.start), pd.Timestamp(cfg.period.end)
    return ds.sel(time=slice(t0, t1))


def in_region(cfg: RunConfig, lat, lon) -> np.ndarray:
    b = cfg.coarse_region.bbox
    return (lat > b.south) & (lat < b.north) & (lon > b.west) & (lon < b.east)


def products_at_stations(cfg: RunConfig, stations: xr.Dataset, so) -> dict[str, np.ndarray | None]:
    """(time, station) arrays of station obs, the 1 km master, the fused 25 km cube, raw ERA5 and CCI
    (None for a store or variable that is not there)."""
    reg, g = cfg.coarse_region, FineGrid(cfg.grid.factor)
    lat, lon = stations["lat"].values, stations["lon"].values
    frow = g.row_of_lat(lat) - reg.row0 * g.factor
    fcol = g.col_of_lon(lon) - reg.col0 * g.factor
    crow = coarse_row_of_lat(lat) - reg.row0
    ccol = coarse_col_of_lon(lon) - reg.col0
    times = stations.time.values
    out: dict[str, np.ndarray | None] = {"obs": stations["sm"].transpose("time", "station").values.astype("float64")}

    def pick(url: str, var: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        if not store.exists(url, so):
            return None
        ds = store.open_dataset(url, so)
        if var not in ds:
            return None
        da = ds[var].isel(lat=xr.DataArray(rows, dims="station"), lon=xr.DataArray(cols, dims="station"))
        da = da.reindex(time=times)
        return da.transpose("time", "station").values.astype("float64")

    out["master_1km"] = pick(cfg.store.url("master.zarr"), "sm", frow, fcol)
    out["fused_25km"] = pick(cfg.store.url("fused.zarr"), "sm", crow, ccol)
    out["source_flag"] = pick(cfg.store.url("fused.zarr"), "source_flag", crow, ccol)
    out["era5"] = pick(cfg.store.url("inputs", "era5.zarr"), "swvl1", crow, ccol)
    out["cci"] = pick(cfg.store.url("inputs", "cci.zarr"), "sm", crow, ccol)
    return out


# ------------------------------------------------------------------------------------- the section
def station_section(cfg: RunConfig, so) -> tuple[dict[str, Any] | None, dict | None, pd.DataFrame | None]:
    """(``stations`` section of metrics.json or None without stations, the (time, station) series
    of :func:`products_at_stations`, per-station metrics of the 1 km product (for the figures))."""
    stations = station_table(cfg, so)
    per_station = None
    series = None
    if stations is None or not stations.sizes.get("station", 0):
        return None, series, per_station
    inreg = in_region(cfg, stations["lat"].values, stations["lon"].values)
    if not inreg.all():
        log.warning("%d station(s) outside the region are not validated: %s", int((~inreg).sum()),
                    ", ".join(map(str, stations.station.values[~inreg][:10])))
    stations = stations.isel(station=np.flatnonzero(inreg))
    series = products_at_stations(cfg, stations, so)
    obs, master = series["obs"], series["master_1km"]
    assert obs is not None  # products_at_stations always reads the stations' own series
    section: dict[str, Any] = {}
    if master is not None:
        summary, per = station_metrics(obs, master)
        section.update(summary)
        per_station = pd.DataFrame(per, index=stations.station.values)
        per_station["network"] = stations["network"].values
        per_station["lat"], per_station["lon"] = stations["lat"].values, stations["lon"].values
        section["networks"] = {}
        for net, idx in per_station.groupby("network").indices.items():
            s, _ = station_metrics(obs[:, idx], master[:, idx])
            section["networks"][str(net)] = s
    section["baselines"] = {}
    for name in ("fused_25km", "era5", "cci"):
        baseline = series[name]
        if baseline is not None:
            section["baselines"][name], _ = station_metrics(obs, baseline)
    return section, series, per_station


__all__ = ["station_metrics", "station_table", "in_region", "products_at_stations", "station_section"]
