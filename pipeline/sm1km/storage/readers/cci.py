"""ESA CCI SM daily L3S files (COMBINED, ACTIVE, PASSIVE; product versions v02 … v08+), and the
Copernicus (C3S) version of the same product.

C3S SM files (``C3S-SOILMOISTURE-L3S-SSMV-COMBINED-DAILY-20200101000000-TCDR-v202212.0.0.nc``;
TCDR = the climate data record, ICDR = its near-real-time extension) have the layout of CCI
files and are read by the same code. C3S also serves ``DEKADAL`` and ``MONTHLY`` means:
:func:`read_cci_day` refuses them (the pipeline needs daily values) unless ``composites=True``
(``sm1km inspect``), and :func:`composite_period` gives the period a file covers.

One file = one UTC day on the 0.25° grid (``lat`` 89.875 → -89.875, ``lon`` -179.875 → 179.875).
The reader decodes the stored numbers itself (never blind auto-masking) because versions differ:

* ``sm`` may be packed (``scale_factor``/``add_offset``) with ``valid_range`` in *physical* units;
  out-of-range, ``_FillValue``, ``missing_value`` and NaN are missing.
* ``time`` may be a float a hair below midnight: it is rounded to the nearest day. Without a
  ``time`` variable the date comes from the file name (``…-YYYYMMDD000000-fv…``).
* ``t0`` (observation time) holds sentinels that are not its ``_FillValue`` (-3440586.5 = Julian
  date -999999); anything outside its ``valid_range`` is missing (only returned on request).
* ``freqbandID`` was ``freqband`` in older versions (not needed here; recorded in attrs).
* ACTIVE products are in percent of saturation. Without a porosity they are returned as
  ``sm_percent`` (units ``percent``); with ``porosity`` (m³/m³) they become ``sm`` in m³/m³.
* ``flag`` bit meanings changed between versions, so the flag is kept as is (int16, -1 = no flag).

A file may hold only part of the global grid (e.g. the synthetic world writes just its region):
cells are placed by their coordinates, which must be 0.25° CCI cell centres.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sm1km.core import grid
from sm1km.errors import InputError
from sm1km.storage import input_files
from sm1km.storage.input_files import InputOptions
from sm1km.storage.readers._common import (
    decode_cf_values,
    decode_times,
    load_checked,
    open_netcdf4_fileobj,
    open_netcdf_raw,
    units_kind,
)

log = logging.getLogger(__name__)

_NAME_RE = re.compile(
    r"ESACCI-SOILMOISTURE-L3S-(?P<tag>SSM[VS])-(?P<product>[A-Z]+)-(?P<date>\d{8})(?P<hms>\d{6})?-fv(?P<version>\d+(?:\.\d+)*)",
    re.I)
_C3S_RE = re.compile(
    r"C3S-SOILMOISTURE-L3S-(?P<tag>SSM[VS])-(?P<product>[A-Z]+)-(?P<frequency>DAILY|DEKADAL|MONTHLY)-"
    r"(?P<date>\d{8})(?P<hms>\d{6})?-(?P<record>TCDR|ICDR)-v(?P<version>\d+(?:\.\d+)*)", re.I)
#: the Julian-date sentinel -999999 shifted to the Unix epoch, found in ``t0`` of real files
T0_SENTINEL = -3440586.5
_COORD_TOL = 1e-3  # degrees; CCI coordinates are float32


def parse_cci_filename(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Product, date, version, ``frequency`` (DAILY/DEKADAL/MONTHLY) and ``service`` (``ESA CCI``
    or ``C3S``, with ``record`` TCDR/ICDR) from an ESA CCI SM or C3S SM file name ({} when it
    matches neither)."""
    name = Path(path).name
    m = _NAME_RE.search(name)
    c3s = None if m else _C3S_RE.search(name)
    hit = m or c3s
    if not hit:
        return {}
    d = hit.group("date")
    try:
        day = np.datetime64(dt.date(int(d[:4]), int(d[4:6]), int(d[6:8])), "ns")
    except ValueError as exc:
        raise InputError(str(path), f"the file name's date {d[:8]} is not a calendar day ({exc}).",
                         "rename the file to the product's naming (…-YYYYMMDD000000-…) or re-download it.") from exc
    info: dict[str, Any] = {"product": hit.group("product").upper(),
                            "date": day,
                            "version": hit.group("version"), "tag": hit.group("tag").upper(),
                            "frequency": "DAILY", "service": "ESA CCI"}
    if c3s:
        info.update(frequency=c3s.group("frequency").upper(), service="C3S", record=c3s.group("record").upper())
    return info


def composite_period(info: Mapping[str, Any]) -> tuple[np.datetime64, np.datetime64]:
    """First and last day a file covers (from :func:`parse_cci_filename`): the day itself for
    DAILY, the dekad (1–10, 11–20, 21–end of month) for DEKADAL, the month for MONTHLY."""
    import pandas as pd

    start = pd.Timestamp(info["date"])
    freq = info.get("frequency", "DAILY")
    if freq == "MONTHLY":
        end = start + pd.offsets.MonthEnd(0)
    elif freq == "DEKADAL":
        end = start.replace(day=10) if start.day <= 10 else (
            start.replace(day=20) if start.day <= 20 else start + pd.offsets.MonthEnd(0))
    else:
        end = start
    return np.datetime64(start.normalize(), "ns"), np.datetime64(end.normalize(), "ns")


def _refuse_composite(path: str, info: Mapping[str, Any]) -> None:
    if info.get("frequency", "DAILY") != "DAILY":
        a, b = composite_period(info)
        raise InputError(path, f"a {info.get('service', '')} {info['frequency']} file (means over "
                               f"{str(a)[:10]} … {str(b)[:10]}); the pipeline needs daily values.",
                         "pass the DAILY product (…-SSMV-COMBINED-DAILY-…) for the run's period.")


def cci_rows_cols(lat: np.ndarray, lon: np.ndarray, path: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Global CCI row/column indices of coordinate values; InputError if they are not cell centres."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    lon = np.where(lon >= 180.0, lon - 360.0, lon)  # tolerate a 0..360 convention
    rf = (grid.coarse_lat(0) - lat) * grid.COARSE_PER_DEG
    cf = (lon - grid.coarse_lon(0)) * grid.COARSE_PER_DEG
    rows = np.round(rf).astype(np.int64)
    cols = np.round(cf).astype(np.int64)
    bad_r = np.abs(rf - rows) > _COORD_TOL * grid.COARSE_PER_DEG
    bad_c = np.abs(cf - cols) > _COORD_TOL * grid.COARSE_PER_DEG
    if bad_r.any() or bad_c.any() or lat.size == 0 or lon.size == 0:
        example = (f"lat={lat[bad_r][0]:.6f}" if bad_r.any() else
                   f"lon={lon[bad_c][0]:.6f}" if bad_c.any() else "no coordinates")
        raise InputError(path, f"coordinates are not on the 0.25° CCI cell centres ({example}; centres are "
                         "±89.875, ±179.875 in steps of 0.25).",
                         "pass ESA CCI SM L3S files on the regular 0.25° grid (regrid other products first).")
    if (rows < 0).any() or (rows >= grid.COARSE_NLAT).any() or (cols < 0).any() or (cols >= grid.COARSE_NLON).any():
        raise InputError(path, "coordinates fall outside the global 0.25° grid.", "check the lat/lon variables.")
    if len(np.unique(rows)) != len(rows) or len(np.unique(cols)) != len(cols):
        raise InputError(path, "duplicate latitude or longitude values.", "pass a regular-grid CCI file.")
    for name, idx in (("latitude", rows), ("longitude", cols)):
        steps = np.diff(np.sort(idx))
        if steps.size and not (steps == 1).all():
            raise InputError(path, f"{name} spacing is {steps.max() / grid.COARSE_PER_DEG:g}° somewhere, not 0.25° "
                             "(wrong resolution or gaps in the grid).",
                             "pass ESA CCI SM L3S files on the regular 0.25° grid (regrid other products first).")
    return rows, cols


def _find(ds: xr.Dataset, names: Iterable[str]) -> str | None:
    for n in names:
        if n in ds.variables:
            return n
    return None


def _day_of_file(ds: xr.Dataset, path: str, info: Mapping[str, Any] | None = None) -> np.datetime64:
    info = parse_cci_filename(path) if info is None else info
    tname = _find(ds, ["time"])
    if tname is not None and ds[tname].size >= 1:
        units = ds[tname].attrs.get("units")
        raw = load_checked(path, ds[tname], "time")
        if raw.size != 1:
            raise InputError(path, f"expected one day per file, found {raw.size} time steps.",
                             "pass daily ESA CCI SM files (one file per day).")
        if units is None:
            raise InputError(path, "variable 'time' has no units.", "pass an original ESA CCI SM file.")
        try:
            day: np.datetime64 = decode_times(raw.ravel(), units, round_to_day=True)[0]
        except ValueError as exc:
            raise InputError(path, f"cannot decode time ({exc}).", "pass an original ESA CCI SM file.") from None
        if np.isnat(day):
            raise InputError(path, "time value is missing.", "pass an original ESA CCI SM file.")
        if "date" in info and info["date"] != day:
            log.warning("%s: file name says %s but the time variable says %s; using the time variable",
                        path, str(info["date"])[:10], str(day)[:10])
        return day
    if "date" in info:
        file_day: np.datetime64 = info["date"]
        return file_day
    raise InputError(path, "no 'time' variable and no date (…-YYYYMMDD000000-…) in the file name.",
                     "pass original ESA CCI SM daily files or keep their names.")


def _units_of_sm(ds: xr.Dataset, path: str, info: Mapping[str, Any]) -> str:
    attrs = ds["sm"].attrs
    kind = units_kind(attrs.get("units"))
    if kind is not None:
        return kind
    if attrs.get("units") is None:
        # no units: fall back to the product type in the name/attrs
        product = info.get("product") or str(ds.attrs.get("id", "")).upper()
        if "ACTIVE" in product:
            log.warning("%s: 'sm' has no units; ACTIVE product assumed to be in percent of saturation", path)
            return "percent"
        if "COMBINED" in product or "PASSIVE" in product:
            log.warning("%s: 'sm' has no units; COMBINED/PASSIVE product assumed to be in m3 m-3", path)
            return "volumetric"
    raise InputError(path, f"variable 'sm' has units {attrs.get('units')!r}, expected 'm3 m-3' (COMBINED/PASSIVE) "
                     "or 'percent' (ACTIVE).", "pass ESA CCI SM files with their original attributes.")


def read_cci_day(path: str | os.PathLike[str], region: grid.Region | None = None, *,
                 porosity: float | xr.DataArray | None = None, with_t0: bool = False,
                 composites: bool = False, input_options: InputOptions | None = None) -> xr.Dataset:
    """Read one ESA CCI SM daily file onto the 0.25° grid (the region, or the file's own extent).

    Returns a Dataset with dims (time=1, lat, lon): ``sm`` float32 m³/m³ (NaN = missing) — or
    ``sm_percent`` (percent of saturation) for ACTIVE files without ``porosity`` —, ``flag`` int16
    (-1 = no flag), ``sm_uncertainty`` float32 when present, and ``t0`` (datetime64, NaT = missing)
    when ``with_t0``. Cells of ``region`` that the file does not cover are missing. A remote
    ``path`` (``s3://``, ``https://``; reached with ``input_options``) is read from a copy in the
    bounded local input cache (:mod:`sm1km.storage.input_files`), removed afterwards.
    """
    path = os.fspath(path)
    if input_files.is_remote(path):
        where = input_files.display(path)
        if not composites:
            _refuse_composite(where, parse_cci_filename(input_files.basename(path)))
        opened = open_netcdf4_fileobj(path, input_options)
        if opened is None:  # classic netCDF: its truncation check needs a path
            with input_files.local_paths([path], input_options) as (local,):
                return read_cci_day(local, region, porosity=porosity, with_t0=with_t0, composites=composites)
        ds, f = opened
        try:
            return _read(ds, where, region, porosity, with_t0, file_name=input_files.basename(path))
        finally:
            ds.close()
            f.close()
    if not composites:
        _refuse_composite(path, parse_cci_filename(path))
    ds = open_netcdf_raw(path)
    try:
        return _read(ds, path, region, porosity, with_t0)
    finally:
        ds.close()


def _read(ds: xr.Dataset, path: str, region: grid.Region | None, porosity: float | xr.DataArray | None,
          with_t0: bool, file_name: str | None = None) -> xr.Dataset:
    info = parse_cci_filename(file_name or path)
    if "sm" not in ds.variables:
        raise InputError(path, f"no variable 'sm' (found: {', '.join(sorted(map(str, ds.variables))) or 'none'}).",
                         "pass an ESA CCI SM L3S daily file (COMBINED, ACTIVE or PASSIVE).")
    latn = _find(ds, ["lat", "latitude"])
    lonn = _find(ds, ["lon", "longitude"])
    if latn is None or lonn is None:
        raise InputError(path, "no lat/lon coordinate variables.", "pass an ESA CCI SM L3S daily file.")
    sm_var = ds["sm"]
    dims = tuple(sm_var.dims)
    ydim, xdim = ds[latn].dims[0], ds[lonn].dims[0]
    if dims[-2:] != (ydim, xdim) or len(dims) not in (2, 3):
        raise InputError(path, f"'sm' has dims {dims}, expected (time, {ydim}, {xdim}).",
                         "pass an ESA CCI SM L3S daily file.")
    if len(dims) == 3 and sm_var.shape[0] != 1:
        raise InputError(path, f"expected one day per file, 'sm' has {sm_var.shape[0]} time steps.",
                         "pass daily ESA CCI SM files (one file per day).")
    day = _day_of_file(ds, path, info)
    kind = _units_of_sm(ds, path, info)

    frows, fcols = cci_rows_cols(load_checked(path, ds[latn], "lat"), load_checked(path, ds[lonn], "lon"), path)
    extent = grid.Region(int(frows.min()), int(frows.max()) + 1, int(fcols.min()), int(fcols.max()) + 1)
    out_region = region if region is not None else extent
    sel_r = np.nonzero((frows >= out_region.row0) & (frows < out_region.row1))[0]
    sel_c = np.nonzero((fcols >= out_region.col0) & (fcols < out_region.col1))[0]
    if sel_r.size == 0 or sel_c.size == 0:
        raise InputError(path, f"the file covers rows {extent.row0}-{extent.row1}, cols {extent.col0}-{extent.col1} "
                         f"of the 0.25° grid (bbox {extent.bbox.as_tuple()}), which does not overlap the region "
                         f"{out_region.bbox.as_tuple()}.", "pass files that cover the run's region.")
    # contiguous file ranges covering the selection (cheap lazy slicing), then scatter by coordinate
    rs, cs = slice(int(sel_r.min()), int(sel_r.max()) + 1), slice(int(sel_c.min()), int(sel_c.max()) + 1)
    r_out = frows[rs] - out_region.row0
    c_out = fcols[cs] - out_region.col0
    r_ok = (r_out >= 0) & (r_out < out_region.n_rows)
    c_ok = (c_out >= 0) & (c_out < out_region.n_cols)
    shape = (out_region.n_rows, out_region.n_cols)

    def read2d(name: str) -> tuple[np.ndarray, dict[Any, Any]]:
        v = ds[name]
        idx = {v.dims[-2]: rs, v.dims[-1]: cs}
        raw = load_checked(path, v.isel(idx), name)
        if raw.ndim == 3:
            raw = raw[0]
        return raw[np.ix_(r_ok, c_ok)], dict(v.attrs)

    def place(values: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full(shape, fill, dtype=values.dtype)
        out[np.ix_(r_out[r_ok], c_out[c_ok])] = values
        return out

    raw, attrs = read2d("sm")
    sm = place(decode_cf_values(raw, attrs, name="sm", path=path).astype(np.float32), np.float32(np.nan))
    n_valid = int(np.isfinite(sm).sum())
    if n_valid == 0:
        _check_file_not_empty(ds, path, region is not None)

    if "flag" in ds.variables:
        fraw, fattrs = read2d("flag")
        fl = fraw.astype(np.int32)
        missing = np.zeros(fl.shape, dtype=bool)
        for fv in np.atleast_1d(fattrs.get("_FillValue", [])).tolist() + np.atleast_1d(
                fattrs.get("missing_value", [])).tolist():
            missing |= fraw == fraw.dtype.type(fv)
        fl = np.where(missing | (fl < 0) | (fl > 32767), -1, fl).astype(np.int16)
        flag = place(fl, np.int16(-1))
    else:
        flag = np.full(shape, -1, dtype=np.int16)

    coords = {"time": np.array([day], dtype="datetime64[ns]")}
    lat, lon = grid.region_coords(out_region)
    coords["lat"], coords["lon"] = lat, lon
    dims3 = ("time", "lat", "lon")
    data_vars: dict[str, Any] = {}
    unc = None
    if "sm_uncertainty" in ds.variables:
        uraw, uattrs = read2d("sm_uncertainty")
        unc = place(decode_cf_values(uraw, uattrs, name="sm_uncertainty", path=path).astype(np.float32),
                    np.float32(np.nan))

    if kind == "percent":
        if porosity is None:
            data_vars["sm_percent"] = (dims3, sm[None], {
                "units": "percent", "long_name": "soil moisture in percent of saturation (ESA CCI SM ACTIVE)",
                "comment": "not converted: pass porosity (m3 m-3) to get volumetric sm"})
            if unc is not None:
                data_vars["sm_uncertainty_percent"] = (dims3, unc[None], {"units": "percent"})
        else:
            por = _porosity_array(porosity, lat, lon, path)
            data_vars["sm"] = (dims3, (sm / np.float32(100.0) * por)[None].astype(np.float32), {
                "units": "m3 m-3", "long_name": "volumetric soil moisture (ACTIVE, converted with porosity)"})
            if unc is not None:
                data_vars["sm_uncertainty"] = (dims3, (unc / np.float32(100.0) * por)[None].astype(np.float32),
                                               {"units": "m3 m-3"})
    else:
        data_vars["sm"] = (dims3, sm[None], {"units": "m3 m-3", "long_name": "volumetric soil moisture"})
        if unc is not None:
            data_vars["sm_uncertainty"] = (dims3, unc[None], {"units": "m3 m-3"})
    data_vars["flag"] = (dims3, flag[None], {"long_name": "ESA CCI SM flag (bit meanings depend on the version)",
                                             "missing_value_note": "-1 = no flag"})
    if with_t0:
        data_vars["t0"] = (dims3, _read_t0(ds, path, read2d, place, shape)[None],
                           {"long_name": "observation time (UTC)"})

    product = info.get("product") or _product_from_attrs(ds)
    out = xr.Dataset(data_vars, coords=coords, attrs={
        "source_file": file_name or Path(path).name,
        "product": product or "unknown",
        "product_version": str(ds.attrs.get("product_version", info.get("version", "unknown"))),
        "service": info.get("service", "unknown"),
        "frequency": info.get("frequency", "DAILY"),
        "sm_units_in_file": str(ds["sm"].attrs.get("units", "")),
        "freqband_variable": _find(ds, ["freqbandID", "freqband"]) or "",
    })
    out["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    out["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    return out


def _product_from_attrs(ds: xr.Dataset) -> str | None:
    text = " ".join(str(ds.attrs.get(k, "")) for k in ("id", "title", "product")).upper()
    for p in ("COMBINED", "ACTIVE", "PASSIVE"):
        if p in text:
            return p
    return None


def _check_file_not_empty(ds: xr.Dataset, path: str, was_subset: bool) -> None:
    if was_subset:
        raw = load_checked(path, ds["sm"], "sm")
        if np.isfinite(decode_cf_values(raw, dict(ds["sm"].attrs), name="sm", path=path)).any():
            log.info("%s: no valid sm inside the region (valid elsewhere in the file)", path)
            return
    raw = load_checked(path, ds["sm"], "sm")
    attrs = {k: v for k, v in ds["sm"].attrs.items() if k not in ("valid_range", "valid_min", "valid_max")}
    outside = decode_cf_values(raw, attrs, name="sm", path=path)
    outside = outside[np.isfinite(outside)]
    if outside.size:
        vr = "; ".join(f"{k} {np.asarray(v).ravel().tolist()}" for k in ("valid_range", "valid_min", "valid_max")
                       if (v := ds["sm"].attrs.get(k)) is not None)
        raise InputError(path, f"every 'sm' value lies outside the file's valid range ({outside.size} values, "
                               f"{outside.min():.4g}…{outside.max():.4g}; {vr}): an "
                               "out-of-range product, not soil moisture in m3 m-3.",
                         "re-download the file; check that it is the CCI/C3S SM volumetric product "
                         "(not a percent-of-saturation or a damaged file).")
    raise InputError(path, "'sm' has no valid value at all in this file (all-missing day).",
                     "re-download the file; if the day is genuinely empty, leave it out of the input glob.")


def _porosity_array(porosity: float | xr.DataArray, lat: np.ndarray, lon: np.ndarray, path: str) -> np.ndarray:
    if isinstance(porosity, xr.DataArray):
        por = porosity.reindex(lat=lat, lon=lon, method="nearest", tolerance=1e-6).values.astype(np.float32)
    else:
        por = np.full((lat.size, lon.size), float(porosity), dtype=np.float32)
    if np.nanmax(por, initial=0) > 1.0 or np.nanmin(por, initial=0) < 0:
        raise InputError(path, "porosity must be a volumetric fraction (0–1 m3 m-3).",
                         "pass porosity in m3 m-3, not percent.")
    return por


def _read_t0(ds: xr.Dataset, path: str, read2d: Callable[[str], tuple[np.ndarray, dict[Any, Any]]],
             place: Callable[[np.ndarray, Any], np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    if "t0" not in ds.variables:
        return np.full(shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    raw, attrs = read2d("t0")
    units = attrs.get("units", "days since 1970-01-01 00:00:00 UTC")
    vals = decode_cf_values(raw, {k: v for k, v in attrs.items() if k in ("_FillValue", "missing_value",
                                                                          "valid_range", "valid_min", "valid_max")},
                            name="t0", path=path)
    if attrs.get("valid_range") is None and attrs.get("valid_min") is None:
        vals[vals <= T0_SENTINEL + 1] = np.nan  # no range given: at least drop the known sentinel
    return place(decode_times(vals, units), np.datetime64("NaT", "ns"))


def count_valid_sm(path: str | os.PathLike[str]) -> int:
    """Number of valid ``sm`` (or ``sm_percent``) cells in a whole CCI file."""
    ds = read_cci_day(path)
    name = "sm" if "sm" in ds else "sm_percent"
    return int(np.isfinite(ds[name].values).sum())
