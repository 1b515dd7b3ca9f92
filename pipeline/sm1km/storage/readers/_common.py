"""Small helpers shared by the readers: file sniffing, netCDF opening, CF decoding, units.

Nothing here trusts a library's automatic masking: values are decoded from the raw stored
numbers with the attributes in hand, so quirks (``valid_range`` in physical units on packed
data, sentinels that are not ``_FillValue``) can be handled explicitly.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sm1km.errors import InputError
from sm1km.storage.readers.limits import check_netcdf_header

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

#: what :func:`expand_paths` accepts: a path or glob, or several
PathsLike = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]

# --- file sniffing --------------------------------------------------------------------------

MAGIC_NETCDF3 = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
MAGIC_HDF5 = b"\x89HDF\r\n\x1a\n"
MAGIC_HDF4 = b"\x0e\x03\x13\x01"
MAGIC_GRIB = b"GRIB"
MAGIC_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
MAGIC_ZIP = b"PK\x03\x04"


def sniff(path: str | os.PathLike[str]) -> str:
    """Container type from the first bytes: netcdf3, hdf5, hdf4, grib, tiff, zip, empty or text/binary."""
    p = Path(path)
    if p.is_dir():
        return "dir"
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise InputError(str(p), "file not found.", "check the path (and the glob in the config).") from None
    except OSError as exc:
        raise InputError(str(p), f"cannot read the file ({exc.strerror or exc}).",
                         "check the path and its permissions.") from None
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> str:
    if not head:
        return "empty"
    if head.startswith(MAGIC_NETCDF3):
        return "netcdf3"
    if head.startswith(MAGIC_ZIP) or head.startswith(b"PK\x05\x06"):  # (a stored member may hold HDF5 bytes)
        return "zip"
    if head.startswith(MAGIC_HDF5) or MAGIC_HDF5 in head[:2048]:
        # netCDF4 files are HDF5 files (the signature may sit at offset 512/1024/2048 with a user block)
        return "hdf5"
    if head.startswith(MAGIC_HDF4):
        return "hdf4"
    if head.startswith(MAGIC_GRIB) or MAGIC_GRIB in head[:1024]:
        return "grib"
    if head.startswith(MAGIC_TIFF):
        return "tiff"
    if b"\x00" in head:
        return "binary"
    return "text"


def expand_paths(paths: PathsLike, what: str = "input") -> list[str]:
    """A path, glob, or list of them -> sorted list of existing file paths (error if none)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        s = os.fspath(p)
        if glob.has_magic(s):
            hits = sorted(glob.glob(s, recursive=True))
            if not hits:
                raise InputError(s, f"no {what} files match this pattern.", "check the glob in the config.")
            out.extend(hits)
        else:
            if not os.path.exists(s):
                raise InputError(s, "file not found.", "check the path (and the glob in the config).")
            out.append(s)
    if not out:
        raise InputError("<none>", f"no {what} files given.", f"pass at least one {what} file.")
    return out


# --- netCDF ---------------------------------------------------------------------------------

def open_netcdf_raw(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a netCDF file lazily with *no* CF decoding (raw stored values, attributes intact).

    Non-netCDF, truncated and empty files raise :class:`InputError` naming the problem.
    """
    import xarray as xr

    kind = sniff(path)
    if kind not in ("netcdf3", "hdf5"):
        problem = {
            "empty": "the file is empty (0 bytes).",
            "text": "this is a text file, not a netCDF file.",
            "grib": "this is a GRIB file, not netCDF.",
            "tiff": "this is a GeoTIFF, not netCDF.",
            "zip": "this is a zip archive, not netCDF.",
            "hdf4": "this is an HDF4 file, not netCDF.",
        }.get(kind, "this is not a netCDF file (unknown signature).")
        raise InputError(str(path), problem, "pass the original netCDF file (re-download it if it was damaged).")
    check_netcdf3_complete(path)
    check_netcdf_header(os.fspath(path))
    try:
        ds = xr.open_dataset(path, engine="netcdf4", decode_cf=False, mask_and_scale=False,
                             decode_times=False, decode_coords=False, cache=False)
    except Exception as exc:  # netCDF4/HDF5 raise OSError/RuntimeError with terse messages
        raise InputError(str(path), f"cannot open as netCDF ({type(exc).__name__}: {exc}); the file is probably "
                         "truncated or corrupt.", "re-download the file and compare its size/checksum.") from None
    return ds


def open_netcdf4_fileobj(url: str, input_options: Any = None) -> tuple[xr.Dataset, Any] | None:
    """Open a remote netCDF-4 (HDF5) file through an fsspec file object (h5netcdf; range reads,
    no local copy), raw like :func:`open_netcdf_raw`, its declared dimensions checked against the
    limits first. ``(dataset, file)`` — close both — or None when the file is not HDF5 (classic
    netCDF and anything else go through a local copy: their checks need a path)."""
    import h5netcdf  # type: ignore[import-untyped]
    import xarray as xr

    from sm1km.storage import input_files
    from sm1km.storage.readers.limits import check_dims

    where = input_files.display(url)
    f = input_files.open_input(url, input_options)
    try:
        if sniff_bytes(f.read(4096)) != "hdf5":
            f.close()
            return None
        f.seek(0)
        try:
            with h5netcdf.File(f, "r", decode_vlen_strings=True) as nc:
                dims = {str(k): int(v.size) for k, v in nc.dimensions.items()}
                variables = {str(k): tuple(int(s) for s in v.shape) for k, v in nc.variables.items()}
            f.seek(0)
            ds = xr.open_dataset(f, engine="h5netcdf", decode_cf=False, mask_and_scale=False, decode_times=False,
                                 decode_coords=False, cache=False)
        except Exception as exc:
            raise InputError(where, f"cannot open as netCDF ({type(exc).__name__}: {exc}); the file is probably "
                             "truncated or corrupt.", "re-download the file and compare its size/checksum.") from None
        check_dims(where, dims, variables)
    except BaseException:
        f.close()
        raise
    return ds, f


def check_netcdf3_complete(path: str | os.PathLike[str]) -> None:
    """InputError if a classic netCDF file (CDF-1/CDF-2) is shorter than its header says.

    netcdf-c zero-fills reads past the end of a truncated classic file instead of failing, so a
    half-downloaded ERA5/CCI netCDF3 file would otherwise be read as zeros. The check maps the
    file (scipy's reader, no data read) and lets it place every variable inside the file.
    """
    import warnings

    with open(path, "rb") as f:
        if f.read(4) not in (b"CDF\x01", b"CDF\x02"):
            return  # HDF5-based netCDF4 fails loudly on its own; CDF-5 is not checked
    from scipy.io import netcdf_file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "cannot close a netcdf_file opened with mmap=True ..."
            nc = netcdf_file(path, mode="r", mmap=True)
            nc.close()
    except (ValueError, TypeError, OSError, IndexError) as exc:
        size = os.path.getsize(path)
        raise InputError(str(path), f"the file ({size} bytes) is shorter than its netCDF header says "
                         f"({type(exc).__name__}: {exc}); it is truncated.",
                         "re-download the file and compare its size/checksum.") from None


def load_checked(path: str | os.PathLike[str], var: Any, what: str = "data") -> np.ndarray:
    """``var.values`` turning HDF5/netCDF read errors (truncated chunks) into InputError."""
    try:
        return np.asarray(var.values)
    except Exception as exc:
        raise InputError(str(path), f"cannot read {what} ({type(exc).__name__}: {exc}); the file is probably "
                         "truncated or corrupt.", "re-download the file and compare its size/checksum.") from None


def _attr_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(np.atleast_1d(np.asarray(v)).ravel())


def decode_cf_values(raw: npt.ArrayLike, attrs: Mapping[Any, Any], *, name: str = "variable",
                     path: str = "") -> npt.NDArray[np.float64]:
    """Physical float64 values from raw stored values, NaN where missing.

    Missing = ``_FillValue``, ``missing_value``, NaN, or outside ``valid_range``/``valid_min``/
    ``valid_max``. CF says the valid range is in *packed* units, but some products (older ESA CCI
    SM) give it in physical units on packed data; when scale/offset is present both readings are
    tried and the one that keeps more non-fill values wins (ties: CF).
    """
    raw = np.asarray(raw)
    missing = np.zeros(raw.shape, dtype=bool)
    if raw.dtype.kind == "f":
        missing |= ~np.isfinite(raw)
    for fv in _attr_list(attrs.get("_FillValue")) + _attr_list(attrs.get("missing_value")):
        try:
            fv = raw.dtype.type(fv)
        except (OverflowError, ValueError):
            continue
        missing |= raw == fv
    scale = attrs.get("scale_factor")
    offset = attrs.get("add_offset")
    scaled = scale is not None or offset is not None
    scale = 1.0 if scale is None else float(np.asarray(scale).ravel()[0])
    offset = 0.0 if offset is None else float(np.asarray(offset).ravel()[0])
    phys = raw.astype(np.float64) * scale + offset if scaled else raw.astype(np.float64)

    lo, hi = -np.inf, np.inf
    vr = attrs.get("valid_range")
    if vr is not None and len(_attr_list(vr)) == 2:
        lo, hi = (float(x) for x in _attr_list(vr))
    if attrs.get("valid_min") is not None:
        lo = float(_attr_list(attrs["valid_min"])[0])
    if attrs.get("valid_max") is not None:
        hi = float(_attr_list(attrs["valid_max"])[0])
    if np.isfinite(lo) or np.isfinite(hi):
        tol = 1e-6 * max(1.0, abs(lo) if np.isfinite(lo) else 0.0, abs(hi) if np.isfinite(hi) else 0.0)
        with np.errstate(invalid="ignore"):
            rawf = raw.astype(np.float64)
            in_packed = (rawf >= lo - tol) & (rawf <= hi + tol)
            in_phys = (phys >= lo - tol) & (phys <= hi + tol)
        if scaled:
            keep_packed = int((in_packed & ~missing).sum())
            keep_phys = int((in_phys & ~missing).sum())
            if keep_phys > keep_packed:
                log.debug("%s %s: valid_range [%g, %g] read in physical units (keeps %d vs %d values)",
                          path, name, lo, hi, keep_phys, keep_packed)
                missing |= ~in_phys
            else:
                missing |= ~in_packed
        else:
            missing |= ~in_phys
    phys[missing] = np.nan
    return phys


# --- units ----------------------------------------------------------------------------------

_VOLUMETRIC = {"m3m-3", "m3/m3", "m^3m^-3", "m**3m**-3", "m^3/m^3", "m3.m-3", "cm3/cm3", "cm3cm-3",
               "m3m^-3", "m^3m-3", "fraction", "1", "m3m**-3", "volumetric"}
_PERCENT = {"percent", "%", "%saturation", "percentofsaturation", "percentsaturation", "degreeofsaturation(%)",
            "%ofsaturation", "percent(ofsaturation)"}


def units_kind(units: str | None) -> str | None:
    """'volumetric', 'percent' or None (unknown) for a units string, tolerant of spelling."""
    if units is None:
        return None
    u = re.sub(r"\s+", "", str(units)).lower().replace("³", "3").replace("⁻³", "-3")
    if u in _VOLUMETRIC:
        return "volumetric"
    if u in _PERCENT or u.startswith("percent") or u.startswith("%"):
        return "percent"
    return None


def iso_day(t: Any) -> str | None:
    import pandas as pd

    if t is None or (isinstance(t, float) and np.isnan(t)):
        return None
    ts = pd.Timestamp(t)
    if pd.isna(ts):  # pd.Timestamp(NaT-like) is the NaT singleton
        return None
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- time -----------------------------------------------------------------------------------

_UNIT_NS = {"day": 86_400_000_000_000, "hour": 3_600_000_000_000, "minute": 60_000_000_000,
            "second": 1_000_000_000}


def parse_time_units(units: str) -> tuple[int, np.datetime64]:
    """('days since 1970-01-01 00:00:00 UTC') -> (ns per unit, reference datetime64[ns])."""
    import pandas as pd

    m = re.match(r"\s*(\w+?)s?\s+since\s+(.+?)\s*$", str(units), flags=re.I)
    if not m or m.group(1).lower() not in _UNIT_NS:
        raise ValueError(f"unsupported time units {units!r}")
    ref = re.sub(r"\s*(UTC|Z|GMT|\+00:?00)\s*$", "", m.group(2), flags=re.I)
    return _UNIT_NS[m.group(1).lower()], pd.Timestamp(ref).to_datetime64().astype("datetime64[ns]")


def decode_times(values: npt.ArrayLike, units: str, *, round_to_day: bool = False) -> np.ndarray:
    """Numeric CF times -> datetime64[ns]; NaN -> NaT; optionally rounded to the nearest day.

    Rounding absorbs times stored a hair below midnight (e.g. 16958.99999999 days).
    """
    ns_per, ref = parse_time_units(units)
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = np.isfinite(v)
    total = ref.astype(np.int64) + np.round(v[ok] * ns_per)
    if round_to_day:
        day_ns = _UNIT_NS["day"]
        total = np.round(total / day_ns) * day_ns
    out[ok] = total.astype(np.int64).astype("datetime64[ns]")
    return out


#: an ISMN CEOP data line starts with a date and a time
_DATE_LINE = re.compile(r"^\s*\d{4}/\d{2}/\d{2}\s+\d{2}:\d{2}")
