"""Write a whole synthetic world to a folder: inputs in real formats, truth stores, ``run.yaml``.

The simulation streams day by day, so memory stays bounded by one truth time block (plus small
coarse and station series) whatever the world's size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sm1km.config import RunConfig
from sm1km.core.grid import FineGrid, region_coords
from sm1km.errors import ConfigError, StoreError
from sm1km.synth import fields as F
from sm1km.synth import observe as O
from sm1km.synth import writers as W
from sm1km.synth.params import WorldParams
from sm1km.synth.world import (
    STREAM_CCI,
    STREAM_ERA5,
    STREAM_NDVI,
    STREAM_PREDICTORS,
    STREAM_STATIONS,
    Statics,
    make_statics,
    rng_for,
    simulate,
)

log = logging.getLogger(__name__)

WORLD_FORMAT_VERSION = 2  # 2: realistic error structure (WorldParams.errors), station error fields


@dataclass(frozen=True)
class WorldPaths:
    """Where a written world lies (all under ``workdir``)."""

    workdir: Path

    @property
    def run_yaml(self) -> Path:
        return self.workdir / "run.yaml"

    @property
    def world_json(self) -> Path:
        return self.workdir / "world.json"

    @property
    def inputs(self) -> Path:
        return self.workdir / "inputs"

    @property
    def cci_dir(self) -> Path:
        return self.inputs / "cci"

    @property
    def era5_dir(self) -> Path:
        return self.inputs / "era5"

    @property
    def era5_lsm(self) -> Path:
        return self.inputs / "era5_lsm.nc"

    @property
    def ismn_dir(self) -> Path:
        return self.inputs / "ismn"

    @property
    def predictors_dir(self) -> Path:
        return self.inputs / "predictors"

    @property
    def store(self) -> Path:
        return self.workdir / "store"

    @property
    def truth(self) -> Path:
        return self.store / "truth.zarr"

    @property
    def truth_25km(self) -> Path:
        return self.store / "truth_25km.zarr"

    def cci_files(self) -> list[Path]:
        return sorted(self.cci_dir.glob("*.nc"))

    def era5_files(self) -> list[Path]:
        return sorted(self.era5_dir.glob("*.nc"))

    def ismn_files(self) -> list[Path]:
        return sorted(self.ismn_dir.rglob("*.stm"))

    def generated(self) -> list[Path]:
        """Every path this module writes (removed by ``overwrite``); the rest of ``store/`` is left alone."""
        return [self.run_yaml, self.world_json, self.cci_dir, self.era5_dir, self.era5_lsm, self.ismn_dir,
                self.predictors_dir, self.truth, self.truth_25km]

    def all_files(self) -> list[Path]:
        out = []
        for p in self.generated():
            if p.is_file():
                out.append(p)
            elif p.is_dir():
                out += [q for q in p.rglob("*") if q.is_file()]
        return sorted(out)


# ------------------------------------------------------------------------------------------ truth
@contextlib.contextmanager
def _quiet_zarr():
    """Silence zarr's note that consolidated metadata is not in the v3 spec (we use it on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


class _TruthWriter:
    """Fine truth into ``truth.zarr`` block by block: template first, then one region write per time block."""

    def __init__(self, path: Path, st: Statics, dates, time_block: int, tile_px: int):
        import dask.array as da
        import pandas as pd
        import xarray as xr

        self.path = path
        self.tb = time_block
        lat, lon = region_coords(st.region, st.factor)
        ny, nx = st.shape
        nt = len(dates)
        self.nt = nt
        t = pd.DatetimeIndex(pd.to_datetime(dates)).astype("datetime64[ns]")
        chunks = (min(time_block, nt), min(tile_px, ny), min(tile_px, nx))
        sm = xr.DataArray(da.zeros((nt, ny, nx), dtype="float32", chunks=chunks), dims=("time", "lat", "lon"),
                          attrs={"units": "m3 m-3", "long_name": "synthetic 1 km truth of surface soil moisture (0-5 cm)",
                                 "standard_name": "volume_fraction_of_condensed_water_in_soil"})
        land = xr.DataArray(st.land.astype("uint8"), dims=("lat", "lon"),
                            attrs={"long_name": "land mask of the synthetic world (1 land, 0 sea)"})
        ds = xr.Dataset({"sm": sm, "land": land}, coords={"time": t, "lat": lat, "lon": lon})
        ds.lat.attrs.update(units="degrees_north", standard_name="latitude")
        ds.lon.attrs.update(units="degrees_east", standard_name="longitude")
        ds.attrs.update(title="sm1km synthetic world: 1 km truth (evaluation only)", seed=st.seed,
                        world=json.dumps(st.params.to_dict()), date_created=W.SYNTH_EPOCH)
        enc = {"sm": {"chunks": chunks, "fill_value": np.float32(np.nan)},
               "land": {"chunks": (min(tile_px, ny), min(tile_px, nx))},
               "time": {"units": f"days since {dates[0]:%Y-%m-%d}", "calendar": "proleptic_gregorian",
                        "dtype": "int64"}}
        try:
            with _quiet_zarr():
                ds.to_zarr(path, mode="w", compute=False, zarr_format=3, consolidated=True, encoding=enc)
        except OSError as exc:
            raise StoreError(str(path), f"cannot create the truth store ({exc}).", "check the folder and free space.") from None
        self.buf = np.empty((chunks[0], ny, nx), np.float32)
        self.block_start = 0

    def add(self, k: int, theta: np.ndarray) -> None:
        self.buf[k - self.block_start] = theta
        if k - self.block_start + 1 == self.buf.shape[0] or k + 1 == self.nt:
            self._flush(k + 1)

    def _flush(self, stop: int) -> None:
        import xarray as xr

        n = stop - self.block_start
        ds = xr.Dataset({"sm": (("time", "lat", "lon"), self.buf[:n])})
        ds.to_zarr(self.path, region={"time": slice(self.block_start, stop), "lat": slice(None), "lon": slice(None)},
                   zarr_format=3, consolidated=False)
        self.block_start = stop


def _write_truth_25km(path: Path, st: Statics, dates, theta_c: np.ndarray) -> None:
    import pandas as pd
    import xarray as xr

    lat, lon = region_coords(st.region)
    t = pd.DatetimeIndex(pd.to_datetime(dates)).astype("datetime64[ns]")
    ds = xr.Dataset(
        {"sm": (("time", "lat", "lon"), theta_c.astype(np.float32),
                {"units": "m3 m-3", "long_name": "0.25 degree cell mean of the synthetic 1 km truth (land pixels)"}),
         "land_fraction": (("lat", "lon"), st.cell_land_fraction.astype(np.float32),
                           {"units": "1", "long_name": "fraction of land pixels in the cell"})},
        coords={"time": t, "lat": lat, "lon": lon})
    ds.lat.attrs.update(units="degrees_north", standard_name="latitude")
    ds.lon.attrs.update(units="degrees_east", standard_name="longitude")
    ds.attrs.update(title="sm1km synthetic world: 25 km truth (evaluation only)", seed=st.seed,
                    date_created=W.SYNTH_EPOCH)
    enc = {"sm": {"chunks": theta_c.shape, "fill_value": np.float32(np.nan)},
           "time": {"units": f"days since {dates[0]:%Y-%m-%d}", "calendar": "proleptic_gregorian", "dtype": "int64"}}
    with _quiet_zarr():
        ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True, encoding=enc)


# -------------------------------------------------------------------------------------- run.yaml
def run_config_dict(params: WorldParams, seed: int) -> dict:
    """The RunConfig (as a plain dict, paths relative to the world folder) that runs on this world."""
    b = params.region.bbox
    pred = {k: f"inputs/predictors/{k}_*.tif" for k in ("lst_day", "lst_night", "ndvi")}
    pred.update({k: f"inputs/predictors/{k}.tif" for k in ("elevation", "slope", "twi", "clay", "sand", "land_cover")})
    return {
        "name": f"synth-{params.name}",
        "region": {"west": b.west, "south": b.south, "east": b.east, "north": b.north},
        "period": {"start": params.start.isoformat(), "end": params.end.isoformat()},
        "grid": {"factor": params.factor, "tile_cells": params.tile_cells, "time_block_days": params.time_block_days},
        "store": {"root": "store"},
        "inputs": {"cci": "inputs/cci/*.nc", "era5": "inputs/era5/*.nc", "era5_lsm": "inputs/era5_lsm.nc",
                   "ismn": "inputs/ismn", "predictors": pred, "truth": "store/truth.zarr"},
        "seeds": {"synth": int(seed)},
    }


def _write_run_yaml(path: Path, params: WorldParams, seed: int) -> RunConfig:
    import yaml

    data = run_config_dict(params, seed)
    RunConfig.from_dict(data, source=str(path))  # validate before writing
    text = ("# sm1km run configuration of a synthetic world (written by `sm1km synth`).\n"
            "# Relative paths are relative to this file's folder.\n" + yaml.safe_dump(data, sort_keys=False))
    path.write_text(text, encoding="utf-8")
    return RunConfig.from_yaml(path)


# ------------------------------------------------------------------------------------------ main
def _prepare(paths: WorldPaths, params: WorldParams, seed: int, overwrite: bool) -> None:
    paths.workdir.mkdir(parents=True, exist_ok=True)
    if paths.world_json.exists() and not overwrite:
        try:
            old = json.loads(paths.world_json.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("params") != params.to_dict() or old.get("seed") != seed:
            raise ConfigError(str(paths.workdir), "holds a different synthetic world (other preset, parameters or seed).",
                              "use an empty --workdir, or pass --overwrite to replace that world.")
    elif not paths.world_json.exists() and not overwrite:
        clash = [p for p in paths.generated() if p.exists()]
        if clash:
            raise ConfigError(str(paths.workdir), f"already holds {clash[0].name} that sm1km synth did not write.",
                              "use an empty --workdir, or pass --overwrite.")
    for p in paths.generated():  # same world again: rewrite from scratch so no stale file survives
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for d in (paths.cci_dir, paths.era5_dir, paths.ismn_dir, paths.predictors_dir, paths.store):
        d.mkdir(parents=True, exist_ok=True)


def write_world(workdir, params: WorldParams | str = "demo", seed: int = 20240601, overwrite: bool = False) -> WorldPaths:
    """Simulate a world and write every input in its real format, the truth stores and ``run.yaml``.

    Same ``params`` and ``seed`` → byte-identical files. Returns the paths.
    """
    from sm1km.synth.params import preset

    if isinstance(params, str):
        params = preset(params)
    t_begin = time.perf_counter()
    paths = WorldPaths(Path(workdir).resolve())
    _prepare(paths, params, seed, overwrite)
    f = params.factor
    st = make_statics(params, seed)
    region = st.region
    transform = FineGrid(f).transform(region)
    clat, clon = region_coords(region)
    log.info("synth: %s world, %d×%d px, %d days, seed %d", params.name, *st.shape, params.n_days, seed)

    # static predictors
    pdir = paths.predictors_dir
    ps = O.predictor_statics(st, rng_for(seed, STREAM_PREDICTORS))
    static_meta = {
        "elevation": (-32768, {"units": "m", "long_name": "elevation above sea level (0 over the sea)"}),
        "slope": (-9999.0, {"units": "degree", "long_name": "terrain slope"}),
        "twi": (-9999.0, {"units": "1", "long_name": "topographic wetness index ln(a/tan(beta))"}),
        "clay": (255, {"units": "percent", "long_name": "clay mass fraction of the topsoil in percent (0-100)"}),
        "sand": (255, {"units": "percent", "long_name": "sand mass fraction of the topsoil in percent (0-100)"}),
        "land_cover": (255, {"units": "1", "long_name": "IGBP land cover class (MCD12Q1 LC_Type1), 17 = water"}),
    }
    for name, (nodata, tags) in static_meta.items():
        W.write_geotiff(pdir / f"{name}.tif", ps[name], transform, nodata, tags, tags["long_name"], units=tags["units"])

    dates = [params.start + dt.timedelta(days=k) for k in range(params.n_days)]
    truth = _TruthWriter(paths.truth, st, dates, params.time_block_days, params.tile_cells * f)
    r_cci = rng_for(seed, STREAM_CCI)
    cells = O.cci_cells(st, r_cci)
    r_ndvi = rng_for(seed, STREAM_NDVI)
    stations = O.place_stations(st, rng_for(seed, STREAM_STATIONS))
    st_rows = np.array([s.row for s in stations], int)
    st_cols = np.array([s.col for s in stations], int)
    st_theta = np.empty((params.n_days, len(stations)), np.float64)
    st_tair = np.empty((params.n_days, len(stations)), np.float64)
    theta_c_all = np.empty((params.n_days, *st.coarse_shape), np.float64)
    cci_missing = np.empty(params.n_days)
    cci_valid_days = np.zeros(st.coarse_shape, int)
    land_w = st.land.astype(np.float64)

    comp_key, comp_sum, comp_n = None, None, 0
    n_ndvi = 0

    def flush_composite():
        nonlocal n_ndvi
        if comp_key is None or comp_key > params.end or comp_key + dt.timedelta(days=15) < params.start:
            return
        q = O.ndvi_composite(comp_sum / comp_n, st.land, r_ndvi)
        W.write_geotiff(pdir / f"ndvi_{comp_key:%Y%m%d}.tif", q, transform, 32767,
                        {"units": "1", "long_name": "NDVI x 10000 (band scale 0.0001)",
                         "composite": f"16-day mean starting {comp_key.isoformat()} (MODIS MOD13 style)"},
                        "NDVI", units="1", scale=1e-4)
        n_ndvi += 1

    k = 0
    for day in simulate(st):
        key = O.modis_composite_start(day.date)
        if key != comp_key:
            flush_composite()
            comp_key, comp_sum, comp_n = key, np.zeros(st.shape, np.float64), 0
        comp_sum += day.ndvi
        comp_n += 1
        if not day.in_period:
            continue
        theta_c = F.block_mean(day.theta, f)
        theta_c_all[k] = theta_c
        tair_c = F.block_mean(day.t_air_c, f, land_w)
        v = O.cci_day(theta_c, tair_c, cells, day.date, clon, r_cci, ndvi_c=F.block_mean(day.ndvi, f, land_w),
                      errors=params.errors)
        W.write_cci(paths.cci_dir / W.cci_filename(day.date), day.date, clat, clon, v, seed=seed,
                    period=(params.start, params.end))
        valid = v["sm"] != np.float32(-9999.0)
        cci_valid_days += valid
        n_land = int(cells.land.sum())
        cci_missing[k] = 1.0 - valid.sum() / max(n_land, 1)
        for name, arr in (("lst_day", day.lst_day_k), ("lst_night", day.lst_night_k)):
            W.write_geotiff(pdir / f"{name}_{day.date:%Y%m%d}.tif", np.where(np.isfinite(arr), arr, -9999.0).astype(np.float32),
                            transform, -9999.0, {"units": "K", "long_name": f"land surface temperature ({name[4:]}time)"},
                            f"LST {name[4:]}", units="K")
        truth.add(k, day.theta)
        if stations:
            st_theta[k] = day.theta[st_rows, st_cols]
            st_tair[k] = day.t_air_c[st_rows, st_cols]
        k += 1
    flush_composite()
    _write_truth_25km(paths.truth_25km, st, dates, theta_c_all)

    # ERA5: monthly files of hourly (or every era5_step_hours) values + a land-sea mask file
    r_era5 = rng_for(seed, STREAM_ERA5)
    eg = O.era5_grid(st)
    daily = O.era5_daily(theta_c_all, st, eg, r_era5, dates)
    hourly = O.era5_hourly(daily, eg, params.era5_step_hours, r_era5)
    steps = 24 // params.era5_step_hours
    times = [dt.datetime.combine(d, dt.time()) + dt.timedelta(hours=h * params.era5_step_hours)
             for d in dates for h in range(steps)]
    lon360 = np.mod(eg.lon, 360.0)
    if np.any(np.diff(lon360) <= 0):  # region crosses 0°: keep -180..180 so longitude stays monotonic
        lon360 = eg.lon
    months = sorted({(t.year, t.month) for t in times})
    for y, m in months:
        idx = [i for i, t in enumerate(times) if (t.year, t.month) == (y, m)]
        W.write_era5(paths.era5_dir / f"era5_swvl1_{y:04d}{m:02d}.nc", [times[i] for i in idx], eg.lat, lon360,
                     hourly[idx[0]: idx[-1] + 1], eg.lsm, seed=seed, sea=~eg.land)
    W.write_era5(paths.era5_lsm, [times[0]], eg.lat, lon360, hourly[:1], eg.lsm, seed=seed, sea=~eg.land)

    # ISMN stations
    r_st = rng_for(seed, STREAM_STATIONS + 100)
    start_ts = np.datetime64(params.start.isoformat(), "h")
    station_info = []
    for i, s in enumerate(stations):
        sdir = paths.ismn_dir / s.network / s.name
        sdir.mkdir(parents=True, exist_ok=True)
        por = float(st.porosity[s.row, s.col])
        sensors = [("surface", 0.0, 0.05)] + ([("deep", 0.2, 0.2)] if s.deep_sensor else [])
        for depth, d0, d1 in sensors:
            hours, vals, flags = O.station_hourly(s, st_theta[:, i], st_tair[:, i], por, r_st, depth)
            stamps = np.datetime_as_string(start_ts + hours.astype("timedelta64[h]"), unit="m")
            tstr = [x.replace("-", "/").replace("T", " ") for x in stamps]
            hdr = W.ismn_header(s.network, s.name, s.lat, s.lon, s.elevation, d0, d1, s.sensor)
            W.write_ismn_stm(sdir / W.ismn_filename(s.network, s.name, d0, d1, s.sensor, params.start, params.end),
                             hdr, tstr, vals, flags)
        lc = int(st.land_cover[s.row, s.col])
        lc_row = F.LC_TABLE[lc]
        elev = st.elevation_m[s.row, s.col]
        climate = (("Cfb", "Temperate - Without dry season - Warm Summer") if elev < 800 else
                   ("Dfb", "Cold - Without dry season - Warm Summer") if elev < 1800 else ("ET", "Polar - Tundra"))
        W.write_ismn_static(sdir / f"{s.network}_{s.network}_{s.name}_static_variables.csv", por,
                            float(np.round(st.clay[s.row, s.col] * 100)), float(np.round(st.sand[s.row, s.col] * 100)),
                            lc_row[4], lc_row[5], climate)
        station_info.append({"network": s.network, "station": s.name, "lat": s.lat, "lon": s.lon, "row": s.row,
                             "col": s.col, "sensor": s.sensor, "gap_days": list(s.gap) if s.gap else None,
                             "late_start_days": s.late_start, "deep_sensor": s.deep_sensor,
                             "negative_spikes": s.negative_spikes, "bias": round(s.bias, 5), "gain": round(s.gain, 5),
                             "network_bias": round(s.network_bias, 5), "network_gain": round(s.network_gain, 5),
                             "repr_sigma": round(s.repr_sigma, 5), "drift": round(s.drift, 5),
                             "drift_start_day": s.drift_start if s.drift else None, "break_day": s.break_day,
                             "break_size": round(s.break_size, 5)})

    frac_valid = cci_valid_days / params.n_days
    sparse = [[int(r), int(c)] for r, c in zip(*np.nonzero(cells.land & (cci_valid_days < 20)))]
    stats = {
        "fine_shape": list(st.shape), "coarse_shape": list(st.coarse_shape),
        "sea_fraction_fine": round(float(1 - st.land.mean()), 4),
        "cci_land_cells": int(cells.land.sum()),
        "cci_missing_fraction": {"min": round(float(cci_missing.min()), 4), "mean": round(float(cci_missing.mean()), 4),
                                 "max": round(float(cci_missing.max()), 4)},
        "cci_cells_with_fewer_than_20_valid_days": sparse,
        "cci_mean_valid_fraction": round(float(frac_valid[cells.land].mean()), 4),
        "dense_forest_block_cells": [list(c) for c in st.forest_block],
        "ndvi_composites": n_ndvi,
        "era5_files": len(months), "era5_step_hours": params.era5_step_hours,
        "n_stations": len(stations),
        "truth_range": [round(float(np.nanmin(theta_c_all)), 4), round(float(np.nanmax(theta_c_all)), 4)],
    }
    world = {"format": WORLD_FORMAT_VERSION, "seed": seed, "params": params.to_dict(), "stats": stats,
             "stations": station_info,
             "files": {"cci": "inputs/cci/" + W.cci_filename(params.start).replace(f"{params.start:%Y%m%d}", "YYYYMMDD"),
                       "era5": "inputs/era5/era5_swvl1_YYYYMM.nc", "era5_lsm": "inputs/era5_lsm.nc",
                       "ismn": "inputs/ismn/<network>/<station>/*.stm", "predictors": "inputs/predictors/*.tif",
                       "truth": "store/truth.zarr", "truth_25km": "store/truth_25km.zarr"}}
    paths.world_json.write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")
    _write_run_yaml(paths.run_yaml, params, seed)
    log.info("synth: wrote %s in %.1f s", paths.workdir, time.perf_counter() - t_begin)
    return paths
