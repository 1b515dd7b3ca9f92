"""ERA5 ``swvl1`` (volumetric soil water, layer 0–7 cm) from netCDF or GRIB, daily, on CCI centres.

Accepted layouts:

* CDS netCDF before 2024: ``time``, ``latitude``, ``longitude``; ``swvl1`` packed int16 with
  ``scale_factor``/``add_offset``; sometimes an ``expver`` *dimension* (ERA5 vs ERA5T): combined.
* CDS netCDF since 2024: ``valid_time`` (plus ``number`` and ``expver`` coordinates), float32.
* GRIB (paramId 39) read with cfgrib and ``filter_by_keys={"shortName": "swvl1"}`` (a mixed
  file otherwise silently drops variables); no ``.idx`` file is written next to the input.

Processing, per file (memory ≈ one file's subset): longitudes 0–360 → -180..180; hourly (or any
step) → daily mean over UTC days; days split across files are merged with per-day sums/counts.
Sea points hold 0 or tiny negative values rather than missing, so a land–sea mask is needed:
``lsm_path`` (e.g. ``landmask_0.25_0.25.nc``, ``land``/``lsm``), else ``lsm`` in the files, else
(with a warning) points that are never above 1e-4 are taken as sea. Mask NaN (the ERA5 land mask
is cut off south of -60°) means *unknown*, not sea: such points never contribute.

Regridding onto the CCI cell centres (see docs/inputs.md): **land-weighted bilinear**. ERA5
points sit on 0.25° multiples and CCI centres halfway between, so for the native grid each CCI
cell is the mean of its 4 surrounding ERA5 points — an unbiased estimate at the centre that uses
every ERA5 point once per neighbouring cell, no smoothing beyond the 4 corners, and exactly
reproducible. Only land points (lsm ≥ 0.5) carry weight, so coastal cells are not diluted by
the ~0 sea values; ``land_fraction`` is the bilinear mean of the (fractional) mask. Coarser or
other regular grids (e.g. a 2° test GRIB) use the same bilinear weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage import input_files
from sm1km.storage.input_files import InputOptions
from sm1km.storage.readers._common import (
    PathsLike,
    check_netcdf3_complete,
    expand_paths,
    load_checked,
    sniff,
    units_kind,
)
from sm1km.storage.readers.limits import (
    check_dims,
    check_grib_messages,
    check_netcdf_header,
    check_zip,
    read_zip_member,
)

log = logging.getLogger(__name__)

SEA_THRESHOLD = 1e-4  # m3/m3: points never above this are sea when no mask is available
LAND_THRESHOLD = 0.5  # ERA5 convention: a grid point is land where lsm >= 0.5


# --------------------------------------------------------------------------------------------
# opening one file -> a standard (time, lat, lon) DataArray (lazy)
# --------------------------------------------------------------------------------------------

def _open_grib(path: str, short_name: str) -> xr.Dataset:
    check_grib_messages(path)
    try:
        return xr.open_dataset(path, engine="cfgrib", cache=False, backend_kwargs={
            "filter_by_keys": {"shortName": short_name}, "indexpath": "", "errors": "raise"})
    except Exception as exc:
        raise InputError(path, f"cannot read GRIB {short_name!r} ({type(exc).__name__}: {exc}).",
                         "re-download the GRIB file; it may be truncated.") from None


def _open_nc(path: str) -> xr.Dataset:
    check_netcdf3_complete(path)
    check_netcdf_header(path)
    try:
        return xr.open_dataset(path, engine="netcdf4", cache=False, decode_timedelta=False)
    except Exception as exc:
        raise InputError(path, f"cannot open as netCDF ({type(exc).__name__}: {exc}); the file is probably "
                         "truncated or corrupt.", "re-download the file and compare its size/checksum.") from None


def _open_zip(path: str) -> xr.Dataset:
    """A CDS zip download (the CDS zips a request that spans several files, e.g. one netCDF per
    ``stepType``: ``data_stream-oper_stepType-instant.nc`` …): its netCDF members merged, in memory.

    Members are inflated with the archive limits (``storage/readers/limits``), their declared
    dimensions checked before any array is read, and loaded (so no extracted file is left behind).
    """
    import io
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            check_zip(zf, path)
            names = sorted(n for n in zf.namelist() if n.lower().endswith(".nc"))
            if not names:
                raise InputError(path, f"the zip archive holds no netCDF file ({len(zf.namelist())} member(s)).",
                                 "download ERA5 from the CDS as netCDF (or unzip the download and pass its .nc files).")
            parts: list[xr.Dataset] = []
            for n in names:
                where = f"{path}::{n}"
                raw = read_zip_member(zf, n, where)
                engine = "scipy" if raw[:3] == b"CDF" else "h5netcdf"
                try:
                    ds = xr.open_dataset(io.BytesIO(raw), engine=engine, decode_timedelta=False)
                except Exception as exc:
                    raise InputError(where, f"cannot open the member as netCDF ({type(exc).__name__}: {exc}).",
                                     "re-download the CDS archive; it may be truncated.") from None
                check_dims(where, {str(k): int(v) for k, v in ds.sizes.items()},
                           {str(k): tuple(int(x) for x in v.shape) for k, v in ds.variables.items()})
                parts.append(ds.load())
    except zipfile.BadZipFile as exc:
        raise InputError(path, f"corrupt zip archive ({exc}).", "re-download the CDS archive.") from None
    with_sw = [ds for ds in parts if "swvl1" in ds]
    if not with_sw:
        found = sorted({str(v) for ds in parts for v in ds.data_vars})
        raise InputError(path, f"no member of the archive has 'swvl1' (found: {', '.join(found) or 'none'}).",
                         "download ERA5 variable 'volumetric_soil_water_layer_1' (short name swvl1).")
    out = with_sw[0]
    if "lsm" not in out:
        lsm = next((ds["lsm"] for ds in parts if "lsm" in ds), None)
        if lsm is not None:
            out = out.assign(lsm=lsm)
    out.attrs["zip_members"] = ", ".join(names)
    return out


def open_era5_file(path: str | os.PathLike[str]) -> tuple[xr.DataArray, xr.DataArray | None]:
    """(swvl1, lsm or None) of one ERA5 file (netCDF, GRIB, or a CDS zip of netCDF files),
    standardised to dims (time, lat, lon), lazily (a zip's members are loaded)."""
    path = os.fspath(path)
    kind = sniff(path)
    if kind == "zip":
        ds = _open_zip(path)
        lsm = _standardise(ds["lsm"], path, "lsm") if "lsm" in ds else None
        return _standardise(ds["swvl1"], path, "swvl1"), lsm
    if kind == "grib":
        ds = _open_grib(path, "swvl1")
        if "swvl1" not in ds:
            raise InputError(path, "GRIB file has no 'swvl1' (volumetric soil water layer 1, paramId 39).",
                             "download ERA5 variable 'volumetric_soil_water_layer_1'.")
        lsm = None
        try:
            lds = xr.open_dataset(path, engine="cfgrib", cache=False,
                                  backend_kwargs={"filter_by_keys": {"shortName": "lsm"}, "indexpath": ""})
            if "lsm" in lds:
                lsm = _standardise(lds["lsm"], path, "lsm")
        except Exception:  # no lsm messages in this GRIB
            lsm = None
        return _standardise(ds["swvl1"], path, "swvl1"), lsm
    if kind in ("netcdf3", "hdf5"):
        ds = _open_nc(path)
        if "swvl1" not in ds:
            raise InputError(path, f"no variable 'swvl1' (found: {', '.join(sorted(map(str, ds.data_vars))) or 'none'}).",
                             "download ERA5 variable 'volumetric_soil_water_layer_1' (short name swvl1).")
        lsm = _standardise(ds["lsm"], path, "lsm") if "lsm" in ds else None
        return _standardise(ds["swvl1"], path, "swvl1"), lsm
    raise InputError(path, f"not a netCDF, GRIB or zip file (looks like: {kind}).",
                     "pass ERA5 swvl1 as netCDF or GRIB from the Copernicus Climate Data Store.")


def _expver_rank(v: Any) -> int:
    """ERA5 experiment version as an int (``'0001'`` / ``b'0005'`` / 1.0 -> 1 / 5; unknown -> 99)."""
    try:
        return int(float(v.decode() if isinstance(v, bytes) else v))
    except (TypeError, ValueError):
        return 99


def _standardise(da: xr.DataArray, path: str, name: str) -> xr.DataArray:
    """Rename to (time, lat, lon), merge ``expver``, drop ``number``; GRIB steps -> valid times."""
    ren = {}
    for old, new in (("latitude", "lat"), ("longitude", "lon")):
        if old in da.dims or old in da.coords:
            ren[old] = new
    da = da.rename(ren)
    if "lat" not in da.dims or "lon" not in da.dims:
        raise InputError(path, f"{name!r} has dims {da.dims}; expected latitude and longitude dimensions "
                         "(a regular lat/lon grid).", "request a regular 0.25° lat/lon grid from the CDS.")
    # ensemble member dimension
    if "number" in da.dims:
        if da.sizes["number"] != 1:
            raise InputError(path, f"{da.sizes['number']} ensemble members in {name!r}.",
                             "download the reanalysis (not the ensemble) or one member.")
        da = da.isel(number=0)
    # expver as a dimension (old CDS files mixing ERA5 and ERA5T): per value, the final ERA5
    # (expver 1) where it exists, else ERA5T (5) — lowest experiment version first
    if "expver" in da.dims:
        order = sorted(range(da.sizes["expver"]), key=lambda i: _expver_rank(da["expver"].values[i]))
        parts = [da.isel(expver=i, drop=True) for i in order]
        merged = parts[0]
        for p in parts[1:]:
            merged = merged.combine_first(p)
        merged.attrs = dict(da.attrs)
        merged.attrs["expver_preference"] = "final ERA5 (expver 1) over ERA5T (expver 5)"
        da = merged
    elif "expver" in da.coords and da["expver"].size > 1:
        # new CDS netCDF: expver is a coordinate along valid_time (one value per step)
        ev = np.asarray(da["expver"].values).ravel()
        n5 = int(sum(_expver_rank(v) == 5 for v in ev))
        if n5:
            da.attrs["era5t_steps"] = n5
            log.info("%s: %d of %d time steps are ERA5T (preliminary, expver 5); they will be revised", path,
                     n5, ev.size)
    # time: valid_time dim (new CDS), time (old CDS / GRIB analyses), time+step (GRIB forecasts)
    if "valid_time" in da.dims:
        da = da.rename({"valid_time": "time"}) if "time" not in da.dims else da
    elif "step" in da.dims and "time" in da.dims:
        da = da.stack(t=("time", "step"))
        vt = da["valid_time"].values.ravel() if "valid_time" in da.coords else (
            da["time"].values + da["step"].values)
        da = da.drop_vars([c for c in ("t", "time", "step", "valid_time") if c in da.coords]).rename(t="time")
        da = da.assign_coords(time=("time", vt)).transpose("time", ...)
    if "time" not in da.dims:
        t = None
        for c in ("valid_time", "time"):
            if c in da.coords and da[c].size == 1:
                t = da[c].values.reshape(-1)[:1]
                break
        if t is None:
            if name == "lsm":
                da = da.expand_dims(time=[np.datetime64("NaT", "ns")])
            else:
                raise InputError(path, f"{name!r} has no time coordinate.", "pass ERA5 files as downloaded.")
        else:
            da = da.drop_vars([c for c in ("valid_time", "time") if c in da.coords]).expand_dims(time=t)
    extra = [d for d in da.dims if d not in ("time", "lat", "lon")]
    for d in extra:
        if da.sizes[d] != 1:
            raise InputError(path, f"unexpected dimension {d!r} (size {da.sizes[d]}) in {name!r}.",
                             "select a single level/member when downloading.")
        da = da.isel({d: 0}, drop=True)
    keep = {"time", "lat", "lon"}
    da = da.drop_vars([c for c in da.coords if c not in keep])
    da = da.transpose("time", "lat", "lon")
    if name == "swvl1":
        units = da.attrs.get("units") or da.attrs.get("GRIB_units")
        if units_kind(units) != "volumetric":
            raise InputError(path, f"'swvl1' has units {units!r}, expected m3 m-3 (m**3 m**-3).",
                             "pass ERA5 volumetric soil water layer 1 as delivered by the CDS.")
    return da


# --------------------------------------------------------------------------------------------
# pure numerics: axis bracketing and land-weighted bilinear regridding
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bracket:
    """For each target coordinate: the two source indices around it and the weight of the second."""

    lo: np.ndarray  # source index (file order)
    hi: np.ndarray
    w_hi: np.ndarray  # weight of ``hi``; weight of ``lo`` is 1 - w_hi
    ok: np.ndarray  # target inside the source extent


#: tolerance (degrees) for "on the native ERA5 grid": points at multiples of 0.25°
NATIVE_TOL = 1e-3


def _native_offset(coord: np.ndarray) -> float:
    """Largest distance (degrees) of a coordinate's points from multiples of 0.25°."""
    q = np.asarray(coord, dtype=np.float64) / 0.25
    return float(np.max(np.abs(q - np.round(q)), initial=0.0) * 0.25)


def regular_step(coord: np.ndarray, path: str = "", what: str = "coordinate") -> float:
    """The constant spacing of a sorted coordinate; InputError if it is irregular."""
    c = np.sort(np.asarray(coord, dtype=np.float64))
    if c.size < 2:
        raise InputError(path, f"{what} has fewer than 2 points; cannot interpolate.",
                         "download an area of at least 2×2 grid points around the region.")
    d = np.diff(c)
    step = float(np.median(d))
    if step <= 0 or np.abs(d - step).max() > 1e-3 * step + 1e-6:
        raise InputError(path, f"{what} is not a regular grid (spacings {d.min():g}…{d.max():g}).",
                         "request a regular lat/lon grid (e.g. 0.25°) from the CDS.")
    return step


def bracket(src: np.ndarray, targets: np.ndarray, period: float | None = None) -> Bracket:
    """Bracket ``targets`` in the (unsorted, possibly periodic) source coordinate ``src``."""
    src = np.asarray(src, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    order = np.argsort(src, kind="stable")
    cs = src[order]
    idx = order
    if period is not None and cs.size > 1:
        step = float(np.median(np.diff(cs)))
        if abs(cs.size * step - period) < 1e-3 * step:  # global: wrap around
            cs = np.concatenate([[cs[-1] - period], cs, [cs[0] + period]])
            idx = np.concatenate([[order[-1]], order, [order[0]]])
    k = np.searchsorted(cs, targets, side="right") - 1
    k = np.clip(k, 0, cs.size - 2)
    lo_c, hi_c = cs[k], cs[k + 1]
    eps = 1e-9
    ok = (targets >= cs[0] - eps) & (targets <= cs[-1] + eps)
    w = np.clip((targets - lo_c) / (hi_c - lo_c), 0.0, 1.0)
    return Bracket(lo=idx[k], hi=idx[k + 1], w_hi=w, ok=ok)


def bilinear_land_weighted(values: np.ndarray, land: np.ndarray, lsm: np.ndarray,
                           by: Bracket, bx: Bracket) -> tuple[np.ndarray, np.ndarray]:
    """Regrid (time, ny, nx) source values to targets with land-only bilinear weights.

    ``land`` (ny, nx) bool: points that may contribute; ``lsm`` (ny, nx) float mask 0–1 (NaN =
    unknown). Returns (values (time, nty, ntx) float32 with NaN where no land point
    contributes, land_fraction (nty, ntx) float32 = bilinear mean of the known mask values).
    """
    values = np.asarray(values, dtype=np.float64)
    nt = values.shape[0]
    num = np.zeros((nt, by.lo.size, bx.lo.size))
    den = np.zeros((nt, by.lo.size, bx.lo.size))
    lnum = np.zeros((by.lo.size, bx.lo.size))
    lden = np.zeros((by.lo.size, bx.lo.size))
    for iy, wy in ((by.lo, 1.0 - by.w_hi), (by.hi, by.w_hi)):
        for ix, wx in ((bx.lo, 1.0 - bx.w_hi), (bx.hi, bx.w_hi)):
            w = wy[:, None] * wx[None, :]
            m = lsm[np.ix_(iy, ix)]
            known = np.isfinite(m)
            lnum += np.where(known, w * np.nan_to_num(m), 0.0)
            lden += np.where(known, w, 0.0)
            lw = np.where(land[np.ix_(iy, ix)], w, 0.0)
            v = values[:, iy[:, None], ix[None, :]]
            fin = np.isfinite(v)
            num += np.where(fin, lw * np.nan_to_num(v), 0.0)
            den += np.where(fin, lw, 0.0)
    inside = by.ok[:, None] & bx.ok[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((den > 1e-12) & inside, num / den, np.nan)
        lf = np.where((lden > 1e-12) & inside, lnum / lden, np.nan)
    return out.astype(np.float32), lf.astype(np.float32)


def daily_sums(values: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per UTC day: (days datetime64[ns], sum over times, count of finite values)."""
    days = pd.DatetimeIndex(times).floor("D").values
    order = np.argsort(days, kind="stable")
    days_sorted = days[order]
    uniq, starts = np.unique(days_sorted, return_index=True)
    v = values[order] if not np.all(order == np.arange(order.size)) else values
    fin = np.isfinite(v)
    sums = np.add.reduceat(np.where(fin, v, 0.0), starts, axis=0)
    counts = np.add.reduceat(fin.astype(np.int32), starts, axis=0)
    return uniq.astype("datetime64[ns]"), sums, counts


# --------------------------------------------------------------------------------------------
# land-sea mask
# --------------------------------------------------------------------------------------------

def read_lsm(path: str | os.PathLike[str]) -> xr.DataArray:
    """A land-sea mask file (``lsm``, ``land`` …) as a 2-D (lat, lon) DataArray, lon in -180..180."""
    path = os.fspath(path)
    kind = sniff(path)
    if kind == "grib":
        ds = _open_grib(path, "lsm")
    elif kind in ("netcdf3", "hdf5"):
        ds = _open_nc(path)
    else:
        raise InputError(path, f"land-sea mask is not a netCDF or GRIB file (looks like: {kind}).",
                         "pass the ERA5 'lsm' field or a land mask netCDF such as landmask_0.25_0.25.nc.")
    name = next((n for n in ("lsm", "land", "LSM", "land_sea_mask", "landmask", "mask") if n in ds.data_vars), None)
    if name is None:
        cands = [str(n) for n, v in ds.data_vars.items() if v.ndim >= 2]
        if len(cands) != 1:
            raise InputError(path, f"cannot tell which variable is the land-sea mask (found: "
                             f"{sorted(map(str, ds.data_vars))}).",
                             "name the variable 'lsm' or 'land'.")
        name = cands[0]
    da = _standardise(ds[name], path, "lsm").isel(time=0, drop=True)
    vals = load_checked(path, da, name).astype(np.float64)
    if np.nanmax(vals, initial=0.0) > 1.0 + 1e-6 or np.nanmin(vals, initial=0.0) < -1e-6:
        raise InputError(path, f"land-sea mask {name!r} has values outside 0–1 "
                         f"({np.nanmin(vals):g}…{np.nanmax(vals):g}).", "pass a 0–1 land fraction / binary mask.")
    lon = _lon180(da["lon"].values)
    return xr.DataArray(vals, dims=("lat", "lon"),
                        coords={"lat": da["lat"].values.astype(np.float64), "lon": lon},
                        attrs={"source_file": Path(path).name, "variable": name})


def _lon180(lon: npt.ArrayLike) -> npt.NDArray[np.float64]:
    lo = np.asarray(lon, dtype=np.float64)
    out: npt.NDArray[np.float64] = ((lo + 180.0) % 360.0) - 180.0
    return out


def sample_mask(mask: xr.DataArray, lat: np.ndarray, lon: np.ndarray, path: str = "") -> np.ndarray:
    """Mask values at the given point coordinates (nearest mask point within half its spacing)."""
    mlat = mask["lat"].values
    mlon = mask["lon"].values
    out = np.full((lat.size, lon.size), np.nan)

    def nearest(src: np.ndarray, tgt: npt.ArrayLike, period: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(src)
        s = src[order]
        step = float(np.median(np.diff(s))) if s.size > 1 else 1.0
        t = np.asarray(tgt, dtype=np.float64)
        k = np.clip(np.searchsorted(s, t), 1, s.size - 1)
        cand = np.stack([k - 1, k])
        d = np.abs(s[cand] - t)
        if period is not None:
            d = np.minimum(d, period - d)
            # also compare with the wrapped neighbours at the ends
            d0 = np.abs(((t - s[0] + period / 2) % period) - period / 2)
            d1 = np.abs(((t - s[-1] + period / 2) % period) - period / 2)
            best = np.argmin(d, axis=0)
            pick = cand[best, np.arange(t.size)]
            dist = d[best, np.arange(t.size)]
            pick = np.where(d0 < dist, 0, pick)
            dist = np.minimum(dist, d0)
            pick = np.where(d1 < dist, s.size - 1, pick)
            dist = np.minimum(dist, d1)
        else:
            best = np.argmin(d, axis=0)
            pick = cand[best, np.arange(t.size)]
            dist = d[best, np.arange(t.size)]
        return order[pick], dist <= step / 2 + 1e-6

    iy, oky = nearest(mlat, lat)
    ix, okx = nearest(mlon, _lon180(lon), period=360.0)
    if not oky.all() or not okx.all():
        raise InputError(path or mask.attrs.get("source_file", "land-sea mask"),
                         "the land-sea mask does not cover the ERA5 grid points of the region.",
                         "pass a global mask (or one covering the region) on the ERA5 grid.")
    out[:] = mask.values[np.ix_(iy, ix)]
    return out


# --------------------------------------------------------------------------------------------
# the public reader
# --------------------------------------------------------------------------------------------

def _target_region(lat: np.ndarray, lon: np.ndarray, path: str) -> grid.Region:
    """CCI cells whose centres lie inside the ERA5 point grid (all of them if it is global)."""
    lat = np.sort(lat)
    lon180 = np.sort(_lon180(lon))
    step = regular_step(lon180, path, "longitude")
    rows = np.nonzero((grid.coarse_lat(np.arange(grid.COARSE_NLAT)) >= lat[0] - 1e-9)
                      & (grid.coarse_lat(np.arange(grid.COARSE_NLAT)) <= lat[-1] + 1e-9))[0]
    if abs(lon180.size * step - 360.0) < 1e-3 * step:
        cols = np.arange(grid.COARSE_NLON)
    else:
        clon = grid.coarse_lon(np.arange(grid.COARSE_NLON))
        cols = np.nonzero((clon >= lon180[0] - 1e-9) & (clon <= lon180[-1] + 1e-9))[0]
    if rows.size == 0 or cols.size == 0:
        raise InputError(path, "the ERA5 grid does not enclose any 0.25° CCI cell centre.",
                         "download an area at least one grid step larger than the region.")
    return grid.Region(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def read_era5(paths: PathsLike, region: grid.Region | None = None,
              lsm_path: str | os.PathLike[str] | None = None, *,
              input_options: InputOptions | None = None) -> xr.Dataset:
    """Read ERA5 ``swvl1`` files (netCDF and/or GRIB) as daily means on the CCI cell centres.

    ``paths``: a path, glob or list. ``region``: the CCI cells to produce (default: those inside
    the ERA5 grid). ``lsm_path``: a separate land-sea mask (else ``lsm`` in the files, else
    inferred from the data with a warning). Returns ``swvl1`` (time, lat, lon) float32 m³/m³ and
    ``land_fraction`` (lat, lon) float32 0–1 (NaN where the mask is unknown); ``attrs["partial_days"]``
    names the days with fewer time steps than the others (a download cut off, ERA5T not complete):
    ingest refuses them inside its period. Remote paths
    (``s3://``, ``https://``; reached with ``input_options``) are read from copies in the bounded
    local input cache (GRIB needs a real path for eccodes), removed afterwards.
    """
    listed = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if input_files.any_remote([*listed, lsm_path]):
        with input_files.local_paths(listed + ([os.fspath(lsm_path)] if lsm_path is not None else []),
                                     input_options) as local:
            return read_era5(local[:len(listed)], region, local[len(listed)] if lsm_path is not None else None)
    files = expand_paths(paths, "ERA5")
    mask_da = read_lsm(lsm_path) if lsm_path is not None else None
    by = bx = None
    tlat = tlon = None
    grid_sig = None
    file_lsm = None
    day_sum: dict[Any, np.ndarray] = {}
    day_cnt: dict[Any, np.ndarray] = {}
    day_times: dict[Any, set[Any]] = {}  # UTC day -> its time stamps over all files (partial days)
    src_lat = src_lon = None
    for path in files:
        da, lsm = open_era5_file(path)
        lat = da["lat"].values.astype(np.float64)
        lon = da["lon"].values.astype(np.float64)
        sig = (lat.tobytes(), lon.tobytes())
        if grid_sig is None:
            regular_step(lat, path, "latitude")
            step_lon = regular_step(_lon180(lon), path, "longitude")
            off = max(_native_offset(lat), _native_offset(_lon180(lon)))
            if off > NATIVE_TOL:
                raise InputError(path, f"the ERA5 grid points are {off:.3g}° off the native 0.25° grid (points at "
                                       f"lat {lat[0]:g}, lon {lon[0]:g}, …): the file was regridded, or it is another "
                                       "product (ERA5-Land is on 0.1°).",
                                 "download ERA5 single levels on its native grid (CDS 'grid' 0.25/0.25 and an "
                                 "'area' on multiples of 0.25°).")
            if abs(step_lon - 0.25) > 1e-6:
                log.warning("%s: ERA5 grid spacing is %g°, not 0.25°; bilinear weights still apply", path, step_lon)
            reg = region if region is not None else _target_region(lat, lon, path)
            tlat, tlon = grid.region_coords(reg)
            by = bracket(lat, tlat)
            bx = bracket(_lon180(lon), tlon, period=360.0)
            if not (by.ok.any() and bx.ok.any()):
                raise InputError(path, f"the ERA5 grid (lat {lat.min():g}…{lat.max():g}, lon {lon.min():g}…"
                                 f"{lon.max():g}) does not cover the region {reg.bbox.as_tuple()}.",
                                 "download ERA5 for an area enclosing the region.")
            if not (by.ok.all() and bx.ok.all()):
                log.warning("%s: the ERA5 grid covers only part of the region; the rest is missing", path)
            need_y = np.unique(np.concatenate([by.lo[by.ok], by.hi[by.ok]]))
            need_x = np.unique(np.concatenate([bx.lo[bx.ok], bx.hi[bx.ok]]))
            src_lat, src_lon = lat[need_y], lon[need_x]
            grid_sig = sig
            ny_pos = np.searchsorted(need_y, np.where(by.ok, by.lo, need_y[0]))
            nyh_pos = np.searchsorted(need_y, np.where(by.ok, by.hi, need_y[0]))
            nx_pos = np.searchsorted(need_x, np.where(bx.ok, bx.lo, need_x[0]))
            nxh_pos = np.searchsorted(need_x, np.where(bx.ok, bx.hi, need_x[0]))
            by_sub = Bracket(ny_pos, nyh_pos, by.w_hi, by.ok)
            bx_sub = Bracket(nx_pos, nxh_pos, bx.w_hi, bx.ok)
        elif sig != grid_sig:
            raise InputError(path, "this file's grid differs from the first ERA5 file's grid.",
                             "download all ERA5 files with the same area and grid.")
        sub = da.isel(lat=slice(int(need_y[0]), int(need_y[-1]) + 1), lon=slice(int(need_x[0]), int(need_x[-1]) + 1))
        vals = load_checked(path, sub, "swvl1").astype(np.float64)
        vals = vals[:, need_y - need_y[0]][:, :, need_x - need_x[0]]
        vmax = np.nanmax(vals, initial=0.0)
        if vmax > 1.5:
            raise InputError(path, f"'swvl1' values reach {vmax:g}, too large for m3 m-3.",
                             "check the units (percent or kg m-2 are not accepted).")
        times = sub["time"].values
        if np.isnat(times).any():
            raise InputError(path, "some time values are missing.", "pass ERA5 files as downloaded.")
        for t in np.asarray(times, dtype="datetime64[ns]"):
            day_times.setdefault(t.astype("datetime64[D]"), set()).add(t)
        days, sums, counts = daily_sums(vals, times)
        for d, s, c in zip(days, sums, counts, strict=True):
            if d in day_sum:
                day_sum[d] += s
                day_cnt[d] += c
            else:
                day_sum[d], day_cnt[d] = s, c
        if lsm is not None and file_lsm is None:
            file_lsm = load_checked(path, lsm.isel(time=0), "lsm").astype(np.float64)[np.ix_(need_y, need_x)]
    days = np.array(sorted(day_sum), dtype="datetime64[ns]")
    daily = np.stack([np.where(day_cnt[d] > 0, day_sum[d] / np.maximum(day_cnt[d], 1), np.nan) for d in days])
    steps = np.array([len(day_times.get(np.datetime64(d, "D"), ())) for d in days])
    partial: dict[str, str] = {}
    if steps.size and (steps < steps.max()).any():
        partial = {str(d)[:10]: f"{k} of {int(steps.max())}" for d, k in zip(days, steps, strict=True)
                   if k < steps.max()}
        log.warning("ERA5: %d day(s) have fewer time steps than others (partial days at file edges?): %s",
                    len(partial), ", ".join(list(partial)[:5]))

    if mask_da is not None:
        assert lsm_path is not None and src_lat is not None and src_lon is not None  # set with mask_da / by file 1
        lsm_vals = sample_mask(mask_da, src_lat, src_lon, os.fspath(lsm_path))
        lsm_source = f"file {Path(lsm_path).name}"
    elif file_lsm is not None:
        lsm_vals = file_lsm
        lsm_source = "lsm in the ERA5 file"
    else:
        with np.errstate(invalid="ignore"):
            seen_land = np.nanmax(np.abs(daily), axis=0) > SEA_THRESHOLD
        lsm_vals = np.where(np.isfinite(daily).any(axis=0), seen_land.astype(np.float64), np.nan)
        lsm_source = f"inferred (points never above {SEA_THRESHOLD} m3 m-3 taken as sea)"
        log.warning("ERA5: no land-sea mask given or found in the files; %s. Pass lsm_path for a real mask.",
                    lsm_source)
    land = np.nan_to_num(lsm_vals, nan=0.0) >= LAND_THRESHOLD
    daily = np.where(land[None] & (daily < 0), 0.0, daily)  # tiny negatives at coasts -> 0
    swvl1, land_fraction = bilinear_land_weighted(daily, land, lsm_vals, by_sub, bx_sub)
    out = xr.Dataset(
        {"swvl1": (("time", "lat", "lon"), swvl1, {
            "units": "m3 m-3", "long_name": "volumetric soil water layer 1 (0-7 cm), daily mean",
            "cell_methods": "time: mean (UTC day)",
            "regrid_method": "land-weighted bilinear onto 0.25 deg CCI cell centres"}),
         "land_fraction": (("lat", "lon"), land_fraction, {
             "units": "1", "long_name": "land fraction (bilinear mean of the ERA5 land-sea mask)"})},
        coords={"time": days, "lat": tlat, "lon": tlon},
        attrs={"source_files": ", ".join(Path(p).name for p in files), "lsm_source": lsm_source,
               "steps_per_day_max": int(steps.max()) if steps.size else 0,
               # {day: "k of n"}: days with fewer time steps than the others (the caller decides)
               "partial_days": partial})
    out["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    out["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    return out
