"""``sm1km inspect PATH...``: describe input files as JSON lines (one object per file).

Each object has ``path``, ``kind`` (``cci``, ``era5``, ``era5_lsm``, ``ismn``, ``raster``),
``variable``, ``units`` (after conversion), ``time_start``, ``time_end``, ``n_valid``, ``min``,
``max`` (physical units after conversion) and kind-specific keys (ISMN: ``network``,
``station``, ``lat``, ``lon``, ``depth_from``, ``depth_to``, ``n_good`` …; MODIS HDF4 granules:
``product``, ``tile``, ``composite_days`` and per-variable statistics in ``variables``). Folders are walked and
zip archives expanded (members as ``archive.zip::member``). A file that cannot be read prints one
line to stderr naming it and the problem; the others are still inspected and the exit code is 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sm1km.errors import InputError

_DIR_SUFFIXES = {".nc", ".nc4", ".grib", ".grb", ".grib2", ".grb2", ".tif", ".tiff", ".stm", ".zip", ".hdf", ".h5"}


def _minmax(a: npt.ArrayLike) -> tuple[int, float | None, float | None]:
    arr = np.asarray(a)
    fin = np.isfinite(arr)
    n = int(fin.sum())
    if not n:
        return 0, None, None
    return n, float(arr[fin].min()), float(arr[fin].max())


def describe_cci(path: str) -> dict[str, Any]:
    from sm1km.storage.readers.cci import composite_period, parse_cci_filename, read_cci_day

    ds = read_cci_day(path, composites=True)
    var = "sm" if "sm" in ds else "sm_percent"
    n, lo, hi = _minmax(ds[var].values)
    t = t_end = ds["time"].values[0]
    info = parse_cci_filename(path)
    if info.get("frequency", "DAILY") != "DAILY":
        t, t_end = composite_period(info)
    return {"variable": var, "units": ds[var].attrs.get("units"), "time_start": t, "time_end": t_end,
            "service": ds.attrs.get("service"), "frequency": ds.attrs.get("frequency"),
            "record": info.get("record"),
            "n_valid": n, "min": lo, "max": hi, "product": ds.attrs.get("product"),
            "product_version": ds.attrs.get("product_version"),
            "n_flagged": int((ds["flag"].values > 0).sum()),
            "lat_range": [float(ds["lat"].min()), float(ds["lat"].max())],
            "lon_range": [float(ds["lon"].min()), float(ds["lon"].max())]}


def describe_era5(path: str, lsm_path: str | None) -> dict[str, Any]:
    from sm1km.storage.readers.era5 import read_era5

    ds = read_era5([path], region=None, lsm_path=lsm_path)
    n, lo, hi = _minmax(ds["swvl1"].values)
    t = ds["time"].values
    return {"variable": "swvl1", "units": "m3 m-3", "time_start": t[0] if t.size else None,
            "time_end": t[-1] if t.size else None, "n_valid": n, "min": lo, "max": hi,
            "n_days": int(t.size), "lsm_source": ds.attrs.get("lsm_source"),
            "note": "daily means on 0.25° CCI cell centres (land-weighted bilinear)",
            "lat_range": [float(ds["lat"].min()), float(ds["lat"].max())],
            "lon_range": [float(ds["lon"].min()), float(ds["lon"].max())]}


def describe_lsm(path: str) -> dict[str, Any]:
    from sm1km.storage.readers.era5 import read_lsm

    da = read_lsm(path)
    n, lo, hi = _minmax(da.values)
    return {"variable": da.attrs.get("variable"), "units": "1", "time_start": None, "time_end": None,
            "n_valid": n, "min": lo, "max": hi, "n_land": int((da.values >= 0.5).sum()),
            "n_unknown": int(np.isnan(da.values).sum())}


def describe_ismn(path: str, data: bytes | None = None, min_hours: int = 12) -> dict[str, Any]:
    from sm1km.storage.readers.ismn import daily_means, read_ismn_file

    rec = read_ismn_file(path, data)
    daily = daily_means(rec.hourly, min_hours)
    v = rec.hourly["value"].to_numpy()
    n, lo, hi = _minmax(v)
    idx = rec.hourly.index
    return {"variable": rec.variable, "units": "m3 m-3" if rec.variable == "sm" else None,
            "time_start": idx[0].isoformat() if len(idx) else None,
            "time_end": idx[-1].isoformat() if len(idx) else None,
            "n_valid": n, "min": lo, "max": hi, "network": rec.network, "station": rec.station,
            "lat": rec.lat, "lon": rec.lon, "elevation": rec.elevation, "depth_from": rec.depth_from,
            "depth_to": rec.depth_to, "sensor": rec.sensor, "n_good": int(len(rec.good)),
            "n_days": int(daily["sm"].notna().sum()), "format": rec.file_format,
            "flags": rec.flag_counts, "unknown_flags": rec.unknown_flags}


def describe_raster(path: str) -> dict[str, Any]:
    from sm1km.storage.readers._common import sniff
    from sm1km.storage.readers.rasters import raster_date, raster_stats

    if sniff(path) == "hdf4":  # MODIS HDF4-EOS granules: read natively (GDAL here has no HDF4 driver)
        from sm1km.storage.readers.modis import describe_granule

        return describe_granule(path)
    st = raster_stats(path)
    day = raster_date(path)
    return {"variable": st["variable"], "units": st["units"] or None,
            "time_start": day.isoformat() if day else None, "time_end": day.isoformat() if day else None,
            "n_valid": st["n_valid"], "min": st["min"], "max": st["max"], "dtype": st["dtype"],
            "scale_applied": st["scale_applied"], "width": st["width"], "height": st["height"], "crs": st["crs"]}


def inspect_path(path: str, lsm_path: str | None = None,
                 min_hours: int = 12) -> Iterator[dict[str, Any] | InputError]:
    """Yield (record dict | InputError) for a file, folder or zip archive."""
    from sm1km.storage.readers.detect import detect_kind
    from sm1km.storage.readers.ismn import iter_ismn_sources

    try:
        kind = detect_kind(path)
    except InputError as exc:
        yield exc
        return
    if kind == "dir":
        files = sorted(f for f in Path(path).rglob("*")
                       if f.is_file() and f.suffix.lower() in _DIR_SUFFIXES and "python_metadata" not in f.parts)
        if not files:
            yield InputError(path, "folder holds no input files (.nc, .grib, .tif, .stm, .zip).",
                             "pass files or a folder that contains them.")
        for f in files:
            yield from inspect_path(str(f), lsm_path, min_hours)
        return
    if kind == "ismn_archive":
        try:
            members = iter_ismn_sources(path)
        except InputError as exc:
            yield exc
            return
        if not members:
            yield InputError(path, "zip archive holds no ISMN .stm files.", "pass an ISMN download archive.")
        for name, read in members:
            try:
                yield {"path": name, "kind": "ismn", **describe_ismn(name, read(), min_hours)}
            except InputError as exc:
                yield exc
        return
    try:
        if kind == "cci":
            rec = describe_cci(path)
        elif kind == "era5":
            rec = describe_era5(path, lsm_path)
        elif kind == "era5_lsm":
            rec = describe_lsm(path)
        elif kind == "ismn":
            rec = describe_ismn(path, None, min_hours)
        else:
            rec = describe_raster(path)
    except InputError as exc:
        yield exc
        return
    yield {"path": path, "kind": kind, **rec}
