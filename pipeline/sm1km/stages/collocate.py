"""Collocation: pair each station-day with the features of the 1 km pixel that contains the station.

The features come from :func:`sm1km.core.features.build_features` on the 1 × 1 coarse-cell block
around the station — exactly what inference computes for that pixel, because every feature of a
pixel depends only on its own 0.25° cell and its own day. Stations outside the region, without a
fused 25 km value (sea / no-data cell) or with fewer than ``min_station_days`` usable days are
**reported** (returned list + log), never silently dropped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.core.features import FEATURE_NAMES, N_FEATURES, PREDICTOR_NAMES, build_features, day_of_year
from sm1km.core.grid import FineGrid, coarse_col_of_lon, coarse_row_of_lat
from sm1km.errors import InputError
from sm1km.runtime.runner import map_tasks
from sm1km.storage import store

log = logging.getLogger(__name__)

META_COLUMNS = ("station", "network", "lat", "lon", "time", "y", "baseline_25km")
DAYS_PER_BUILD = 256  # bounds memory: 256 days × factor² px × N_FEATURES floats per build


def _strings(values) -> np.ndarray:
    """Python ``str`` objects from any string array (fixed-width, object or numpy StringDType)."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def _station_meta(stations: xr.Dataset) -> pd.DataFrame:
    ids = _strings(stations["station"].values)
    if "network" in stations.coords or "network" in stations:
        nets = _strings(stations["network"].values)
    else:
        nets = np.array([s.split("/", 1)[0] for s in ids])
    return pd.DataFrame({"station": ids, "network": nets,
                         "lat": np.asarray(stations["lat"].values, dtype=np.float64),
                         "lon": np.asarray(stations["lon"].values, dtype=np.float64)})


def _grid_offsets(fused: xr.Dataset, predictors: xr.Dataset, factor: int) -> tuple[int, int, int, int]:
    """(first coarse row, first coarse col, n coarse rows, n coarse cols) shared by both stores."""
    g = FineGrid(factor)
    crow0 = int(coarse_row_of_lat(fused["lat"].values[0]))
    ccol0 = int(coarse_col_of_lon(fused["lon"].values[0]))
    frow0 = int(g.row_of_lat(predictors["lat"].values[0]))
    fcol0 = int(g.col_of_lon(predictors["lon"].values[0]))
    nyc, nxc = fused.sizes["lat"], fused.sizes["lon"]
    if (frow0, fcol0) != (crow0 * factor, ccol0 * factor) or \
            (predictors.sizes["lat"], predictors.sizes["lon"]) != (nyc * factor, nxc * factor):
        raise InputError("inputs/predictors.zarr",
                         f"the predictors do not cover the fused cube's cells at factor {factor} "
                         f"(fine origin {frow0},{fcol0} size {predictors.sizes['lat']}x{predictors.sizes['lon']}; "
                         f"coarse origin {crow0},{ccol0} size {nyc}x{nxc}).",
                         "re-run `sm1km ingest` and `sm1km fuse` with the same config (region and grid.factor).")
    return crow0, ccol0, nyc, nxc


def collocate(stations: xr.Dataset, fused: xr.Dataset, predictors: xr.Dataset, factor: int,
              min_station_days: int = 1) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Training table (one row per usable station-day) and the list of excluded stations.

    ``stations``: ``sm`` (station, time) with coords station/network/lat/lon (inputs/stations.zarr);
    ``fused``: ``sm``, ``source_flag`` (time, lat, lon) coarse; ``predictors``: the 1 km predictors
    (inputs/predictors.zarr). Datasets may be lazy: only the cells with stations are read.
    Columns: station, network, lat, lon, time, y (station, m3/m3), baseline_25km (fused value at
    the station's cell), then :data:`FEATURE_NAMES`.
    """
    g = FineGrid(factor)
    crow0, ccol0, nyc, nxc = _grid_offsets(fused, predictors, factor)
    meta = _station_meta(stations)
    daily = [n for n in PREDICTOR_NAMES if "time" in predictors[n].dims]
    # the days present in all three stores
    times = pd.DatetimeIndex(fused["time"].values)
    times = times.intersection(pd.DatetimeIndex(stations["time"].values))
    if daily:
        times = times.intersection(pd.DatetimeIndex(predictors["time"].values))
    f_ti = pd.DatetimeIndex(fused["time"].values).get_indexer(times)
    s_ti = pd.DatetimeIndex(stations["time"].values).get_indexer(times)
    p_ti = pd.DatetimeIndex(predictors["time"].values).get_indexer(times) if daily else None
    doy_all = day_of_year(times.values)

    excluded: list[dict[str, Any]] = []

    def exclude(i, reason, n_days=None):
        row = {"station": meta.station[i], "network": meta.network[i], "lat": float(meta.lat[i]),
               "lon": float(meta.lon[i]), "reason": reason}
        if n_days is not None:
            row["n_days"] = int(n_days)
        excluded.append(row)

    ok_ll = np.isfinite(meta.lat.to_numpy()) & np.isfinite(meta.lon.to_numpy())
    rows = g.row_of_lat(np.nan_to_num(meta.lat.to_numpy()))
    cols = g.col_of_lon(np.nan_to_num(meta.lon.to_numpy()))
    inside = ok_ll & (rows >= crow0 * factor) & (rows < (crow0 + nyc) * factor) & \
        (cols >= ccol0 * factor) & (cols < (ccol0 + nxc) * factor)
    # y on the common days: (station, t)
    y_all = np.asarray(stations["sm"].isel(time=s_ti).values, dtype=np.float32) if len(times) else \
        np.empty((len(meta), 0), np.float32)

    by_cell: dict[tuple[int, int], list[int]] = {}
    for i in range(len(meta)):
        if not inside[i]:
            exclude(i, "outside the region" if ok_ll[i] else "no coordinates")
            continue
        n = int(np.isfinite(y_all[i]).sum())
        if n < min_station_days:
            exclude(i, f"too few days with data in the period ({n} < model.min_station_days={min_station_days})", n)
            continue
        by_cell.setdefault((int(rows[i]) // factor - crow0, int(cols[i]) // factor - ccol0), []).append(i)

    parts = []
    for (ci, cj), members in sorted(by_cell.items()):
        valid = np.isfinite(y_all[members]).any(axis=0)
        fsm = np.asarray(fused["sm"].isel(lat=ci, lon=cj).values, dtype=np.float32)[f_ti]
        valid &= np.isfinite(fsm)
        tsel = np.flatnonzero(valid)
        fflag = np.asarray(fused["source_flag"].isel(lat=ci, lon=cj).values)[f_ti]
        ys, xs = slice(ci * factor, (ci + 1) * factor), slice(cj * factor, (cj + 1) * factor)
        static = {n: np.asarray(predictors[n].isel(lat=ys, lon=xs).values) for n in PREDICTOR_NAMES
                  if n not in daily}
        feats = np.full((len(members), len(tsel), N_FEATURES), np.nan, dtype=np.float32)
        pix = [(int(rows[i]) - (crow0 + ci) * factor) * factor + (int(cols[i]) - (ccol0 + cj) * factor)
               for i in members]
        for a in range(0, len(tsel), DAYS_PER_BUILD):
            tb = tsel[a:a + DAYS_PER_BUILD]
            preds = dict(static)
            if p_ti is not None:  # None: no daily predictors
                for name in daily:
                    preds[name] = np.asarray(predictors[name].isel(time=p_ti[tb], lat=ys, lon=xs).values)
            X = build_features(fsm[tb][:, None, None], fflag[tb][:, None, None], preds, doy_all[tb], factor)
            X = X.reshape(len(tb), factor * factor, N_FEATURES)
            feats[:, a:a + len(tb)] = X[:, pix].transpose(1, 0, 2)
        for k, i in enumerate(members):
            y = y_all[i, tsel]
            keep = np.isfinite(y)
            n = int(keep.sum())
            if n < min_station_days:
                exclude(i, "no fused 25 km value on its days (sea / no-data cell)" if n == 0 else
                        f"too few days with a fused 25 km value ({n} < model.min_station_days={min_station_days})", n)
                continue
            df = pd.DataFrame(feats[k, keep], columns=list(FEATURE_NAMES))
            df.insert(0, "baseline_25km", fsm[tsel][keep])
            df.insert(0, "y", y[keep])
            df.insert(0, "time", times.values[tsel][keep])
            df.insert(0, "lon", meta.lon[i])
            df.insert(0, "lat", meta.lat[i])
            df.insert(0, "network", meta.network[i])
            df.insert(0, "station", meta.station[i])
            parts.append(df)
    table = pd.concat(parts, ignore_index=True) if parts else _empty_table()
    table = table.sort_values(["station", "time"], kind="stable", ignore_index=True)
    _log_excluded(excluded)
    log.info("collocated %d samples at %d stations (%d excluded)", len(table), table["station"].nunique(),
             len(excluded))
    return table, excluded


def _log_excluded(excluded: list[dict[str, Any]]) -> None:
    """One warning per reason (with up to 10 station ids); every station at debug level."""
    by_reason: dict[str, list[str]] = {}
    for e in excluded:
        by_reason.setdefault(e["reason"].split(" (")[0], []).append(e["station"])
        log.debug("station %s not used for training: %s", e["station"], e["reason"])
    for reason, ids in by_reason.items():
        more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
        log.warning("%d station(s) not used for training: %s: %s%s", len(ids), reason, ", ".join(ids[:10]), more)


def _empty_table() -> pd.DataFrame:
    cols = {c: pd.Series(dtype="float64") for c in (*META_COLUMNS, *FEATURE_NAMES)}
    cols["station"] = pd.Series(dtype="str")
    cols["network"] = pd.Series(dtype="str")
    cols["time"] = pd.Series(dtype="datetime64[ns]")
    return pd.DataFrame(cols)


@dataclass(frozen=True)
class _Batch:
    """A batch of station ids (a task of :func:`collocate_stores`; ``key`` names it on the dashboard)."""

    key: str
    station_ids: tuple[str, ...]


def _collocate_batch(urls: Mapping[str, str], storage_options, factor, min_station_days, batch: _Batch):
    station_ids = batch.station_ids
    stations = store.open_dataset(urls["stations"], storage_options)
    wanted = set(station_ids)
    stations = stations.isel(station=[i for i, s in enumerate(_strings(stations["station"].values)) if s in wanted])
    return collocate(stations, store.open_dataset(urls["fused"], storage_options),
                     store.open_dataset(urls["predictors"], storage_options), factor, min_station_days)


def collocate_stores(cfg, client=None, batch_size: int = 64) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """:func:`collocate` on the run's stores; with a dask ``client``, batches of stations in parallel."""
    so = cfg.store.storage_options()
    urls = {"stations": cfg.store.url("inputs", "stations.zarr"),
            "fused": cfg.store.url("fused.zarr"),
            "predictors": cfg.store.url("inputs", "predictors.zarr")}
    stations = store.open_dataset(urls["stations"], so)
    factor, min_days = cfg.grid.factor, cfg.model.min_station_days
    if client is None or stations.sizes["station"] <= batch_size:
        return collocate(stations, store.open_dataset(urls["fused"], so),
                         store.open_dataset(urls["predictors"], so), factor, min_days)
    # batches of stations sorted by position, so a batch reads few distinct predictor shards
    meta = _station_meta(stations)
    order = np.lexsort((meta.lon.to_numpy(), -meta.lat.to_numpy()))
    ids = meta.station.to_numpy()[order]
    batches = [_Batch(f"stations-{a}-{a + batch_size}", tuple(ids[a:a + batch_size].tolist()))
               for a in range(0, len(ids), batch_size)]
    results = map_tasks(client, functools.partial(_collocate_batch, urls, so, factor, min_days), batches,
                        name="collocate_batch")
    table = pd.concat([r[0] for r in results], ignore_index=True)
    table = table.sort_values(["station", "time"], kind="stable", ignore_index=True)
    excluded = sorted((e for r in results for e in r[1]), key=lambda e: e["station"])
    return table, excluded


#: raw coarse products scored as baselines at the training station-days: (column, store, variable)
RAW_BASELINES = (("baseline_era5", "era5.zarr", "swvl1"), ("baseline_cci", "cci.zarr", "sm"))


def add_raw_baselines(cfg, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``baseline_era5`` (raw ERA5 ``swvl1``) and ``baseline_cci`` (raw CCI ``sm``,
    NaN on its gaps) at each row's 0.25° cell and day, read from ``inputs/`` (a missing store or
    variable adds no column). Only the cells with stations are read."""
    so = cfg.store.storage_options()
    out = table.copy()
    if not len(table):
        return out
    rows_all = coarse_row_of_lat(table["lat"].to_numpy())
    cols_all = coarse_col_of_lon(table["lon"].to_numpy())
    for column, name, var in RAW_BASELINES:
        url = cfg.store.url("inputs", name)
        if not store.exists(url, so):
            continue
        ds = store.open_dataset(url, so)
        if var not in ds:
            continue
        r0, c0 = int(coarse_row_of_lat(ds["lat"].values[0])), int(coarse_col_of_lon(ds["lon"].values[0]))
        ri, ci = rows_all - r0, cols_all - c0
        inside = (ri >= 0) & (ri < ds.sizes["lat"]) & (ci >= 0) & (ci < ds.sizes["lon"])
        ti = pd.DatetimeIndex(ds["time"].values).get_indexer(pd.DatetimeIndex(table["time"].to_numpy()))
        inside &= ti >= 0
        vals = np.full(len(table), np.nan, dtype=np.float32)
        cells = sorted(set(zip(ri[inside].tolist(), ci[inside].tolist())))
        for r, c in cells:
            series = np.asarray(ds[var].isel(lat=r, lon=c).values, dtype=np.float32)
            sel = inside & (ri == r) & (ci == c)
            vals[sel] = series[ti[sel]]
        out[column] = vals
    return out
