"""Tell which kind of sm1km input a file is: ``cci``, ``era5``, ``era5_lsm``, ``ismn``, ``raster``.

Decided from the file's signature (magic bytes) and, for netCDF, its variables — never from the
extension alone. Unrecognised or unreadable files raise :class:`~sm1km.errors.InputError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sm1km.errors import InputError
from sm1km.storage.readers._common import _DATE_LINE, open_netcdf_raw, sniff
from sm1km.storage.readers.limits import LimitError

KINDS = ("cci", "era5", "era5_lsm", "ismn", "raster", "ismn_archive", "dir")


def detect_kind(path: str | os.PathLike[str]) -> str:
    """One of :data:`KINDS` for ``path`` (``ismn_archive`` = zip of .stm files; a zip of netCDF files is
    a CDS ERA5 download, ``era5``; ``dir`` = folder)."""
    path = os.fspath(path)
    kind = sniff(path)
    if kind == "dir":
        return "dir"
    if kind == "zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                members = [n.lower() for n in zf.namelist()]
        except (zipfile.BadZipFile, OSError):
            return "ismn_archive"  # its reader names the damage
        if any(n.endswith(".nc") for n in members) and not any(n.endswith(".stm") for n in members):
            return "era5"  # a CDS download zipped (one netCDF per stepType)
        return "ismn_archive"
    if kind == "grib":
        return "era5"
    if kind in ("tiff", "hdf4"):  # hdf4: MODIS HDF-EOS granules (storage/readers/modis.py)
        return "raster"
    if kind in ("netcdf3", "hdf5"):
        try:
            ds = open_netcdf_raw(path)
        except LimitError:
            raise
        except InputError:
            if kind == "hdf5":  # plain HDF5 (not netCDF) rasters are left to GDAL
                return "raster"
            raise
        try:
            names = set(map(str, ds.variables))
        finally:
            ds.close()
        if "sm" in names:
            return "cci"
        if "swvl1" in names:
            return "era5"
        if names & {"lsm", "land", "land_sea_mask", "landmask"}:
            return "era5_lsm"
        raise InputError(path, "netCDF file with neither 'sm' (ESA CCI SM) nor 'swvl1' (ERA5) "
                         f"(variables: {', '.join(sorted(names)) or 'none'}).",
                         "pass ESA CCI SM daily files, ERA5 swvl1 files, ISMN .stm files or GeoTIFFs.")
    if kind == "text":
        with open(path, "rb") as f:
            head = f.read(2048).decode("utf-8", errors="replace")
        first = next((ln for ln in head.splitlines() if ln.strip()), "")
        if Path(path).suffix.lower() == ".stm" or _DATE_LINE.match(first) or _looks_like_ismn_header(first):
            return "ismn"
        expected = {".nc": "netCDF", ".nc4": "netCDF", ".grib": "GRIB", ".grb": "GRIB", ".grib2": "GRIB",
                    ".tif": "GeoTIFF", ".tiff": "GeoTIFF", ".hdf": "HDF", ".h5": "HDF5"}.get(Path(path).suffix.lower())
        if expected:
            raise InputError(path, f"this is a text file, not a {expected} file.",
                             "re-download the file (a failed download often saves an error page).")
        raise InputError(path, "unrecognised text file (not an ISMN .stm file).",
                         "pass ESA CCI SM daily files, ERA5 swvl1 files, ISMN .stm files or GeoTIFFs.")
    if kind == "empty":
        raise InputError(path, "the file is empty (0 bytes).", "re-download or re-create the file.")
    raise InputError(path, "unrecognised binary file (not netCDF, GRIB, GeoTIFF or zip).",
                     "pass ESA CCI SM daily files, ERA5 swvl1 files, ISMN .stm files or GeoTIFFs.")


def _looks_like_ismn_header(line: str) -> bool:
    tok = line.split()
    if len(tok) < 9:
        return False
    nums = 0
    for t in tok:
        try:
            float(t)
            nums += 1
        except ValueError:
            pass
    return nums >= 5
