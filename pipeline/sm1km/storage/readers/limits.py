"""Bounded bad input: size checks that run *before* a reader loads anything a file only declares.

A few kilobytes can declare gigabytes: a zip member of 4 M newlines (4.2 KB compressed) cost
443 MB when read whole and split into lines; a 9.9 KB netCDF declaring ``lat`` = 20 M cost 847 MB
in xarray's coordinate index before it was rejected. Each check here reads only headers (zip
directory, netCDF/HDF5 dimensions, GRIB message sections, raster width/height) and refuses with
the usual one-paragraph :class:`~sm1km.errors.InputError` (exit 2) — the file, what it declares,
the limit, and how to raise it if the file is genuine.

Limits (defaults sized for the real products: a global 0.25° day is 1440×720, ERA5-Land 0.1° is
3600×1801, an ERA5 hourly month 744 steps, an ISMN station file of 30 years hourly ~263 k lines),
each overridable with an environment variable (set it on the pods with ``kubernetes.env``):

==========================  ===============================  ==============
limit                       variable                         default
==========================  ===============================  ==============
zip: bytes after inflating  ``SM1KM_MAX_UNZIPPED_BYTES``     512 MiB (total)
zip: members                ``SM1KM_MAX_ZIP_MEMBERS``        200 000
zip: compression ratio      ``SM1KM_MAX_ZIP_RATIO``          200
text: line length (bytes)   ``SM1KM_MAX_LINE_BYTES``         4 096
text: lines per file        ``SM1KM_MAX_LINES``              2 000 000
array: one dimension        ``SM1KM_MAX_DIM``                200 000
array: cells per variable   ``SM1KM_MAX_CELLS``              2 000 000 000
GRIB: points per message    ``SM1KM_MAX_GRIB_POINTS``        50 000 000
raster: cells read at once  ``SM1KM_MAX_READ_CELLS``         100 000 000
==========================  ===============================  ==============
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from typing import Any

from sm1km.errors import InputError


class LimitError(InputError):
    """A file declares more than a limit allows (never retried, never swallowed by a fallback reader)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_unzipped_bytes: int = 512 << 20
    max_zip_members: int = 200_000
    max_zip_ratio: float = 200.0
    max_line_bytes: int = 4096
    max_lines: int = 2_000_000
    max_dim: int = 200_000
    max_cells: int = 2_000_000_000
    max_grib_points: int = 50_000_000
    max_read_cells: int = 100_000_000

    @classmethod
    def from_env(cls, environ: Any = None) -> Limits:
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV[f.name])
            if raw in (None, ""):
                continue
            try:
                kw[f.name] = float(raw) if f.type in ("float", float) else int(float(raw))
            except ValueError:
                raise InputError(ENV[f.name], f"not a number: {raw!r}.", "set it to a positive number or unset it.") from None
            if kw[f.name] <= 0:
                raise InputError(ENV[f.name], f"must be positive, got {raw!r}.", "set it to a positive number or unset it.")
        return cls(**kw)


ENV = {f.name: "SM1KM_" + f.name.upper() for f in dataclasses.fields(Limits)}


def limits() -> Limits:
    """The limits in force (defaults, overridden by the environment)."""
    return Limits.from_env()


def _refuse(where: str, what: str, name: str, value: Any, limit: Any) -> LimitError:
    return LimitError(where, f"{what} is {value:,}, above the limit of {limit:,}; refused before reading "
                             "(a damaged or hostile file, or a much larger product than sm1km expects).",
                      f"if the file is genuine, raise the limit: export {ENV[name]}=<larger value>.")


# --------------------------------------------------------------------------------------------
# archives and text
# --------------------------------------------------------------------------------------------
def check_zip(zf: zipfile.ZipFile, where: str, lim: Limits | None = None) -> None:
    """Member count, declared total size and per-member ratio of an archive (its directory only)."""
    lim = lim or limits()
    infos = zf.infolist()
    if len(infos) > lim.max_zip_members:
        raise _refuse(where, "the number of archive members", "max_zip_members", len(infos), lim.max_zip_members)
    total = 0
    for zi in infos:
        total += zi.file_size
        if zi.file_size > 1 << 20 and zi.file_size > lim.max_zip_ratio * max(zi.compress_size, 1):
            raise LimitError(f"{where}::{zi.filename}",
                             f"the member inflates {zi.file_size / max(zi.compress_size, 1):,.0f}-fold "
                             f"({zi.compress_size:,} -> {zi.file_size:,} bytes), above the limit of "
                             f"{lim.max_zip_ratio:g}; refused before reading (a zip bomb or a damaged archive).",
                             f"if the archive is genuine, raise the limit: export {ENV['max_zip_ratio']}=<larger>.")
    if total > lim.max_unzipped_bytes:
        raise _refuse(where, "the archive's declared uncompressed size in bytes", "max_unzipped_bytes", total,
                      lim.max_unzipped_bytes)


def read_zip_member(zf: zipfile.ZipFile, name: str, where: str, lim: Limits | None = None) -> bytes:
    """A member's bytes, read in pieces and stopped at ``max_unzipped_bytes`` whatever its header says."""
    lim = lim or limits()
    out = bytearray()
    with zf.open(name) as f:
        while piece := f.read(1 << 20):
            out += piece
            if len(out) > lim.max_unzipped_bytes:
                raise _refuse(where, "the member's size after inflating, in bytes", "max_unzipped_bytes",
                              len(out), lim.max_unzipped_bytes)
    return bytes(out)


def check_text(data: bytes, where: str, lim: Limits | None = None) -> None:
    """Line count and longest line of a text file (before it is decoded and split); line breaks are
    LF, CRLF or a lone CR (old ISMN files use CR only)."""
    lim = lim or limits()
    n = max(data.count(b"\n"), data.count(b"\r"))
    if n > lim.max_lines:
        raise _refuse(where, "the number of lines", "max_lines", n, lim.max_lines)
    m = re.compile(rb"[^\r\n]{%d}" % (lim.max_line_bytes + 1)).search(data)
    if m:
        lineno = max(data.count(b"\n", 0, m.start()), data.count(b"\r", 0, m.start())) + 1
        end = len(data)
        for brk in (b"\n", b"\r"):
            k = data.find(brk, m.start())
            if k >= 0:
                end = min(end, k)
        raise LimitError(where, f"line {lineno} is {end - m.start():,} bytes long, above the limit of "
                                f"{lim.max_line_bytes:,} (not an ISMN text file, or a damaged one).",
                         f"if the file is genuine, raise the limit: export {ENV['max_line_bytes']}=<larger>.")


# --------------------------------------------------------------------------------------------
# arrays declared by a file
# --------------------------------------------------------------------------------------------
def check_dims(where: str, dims: dict[str, int], variables: dict[str, tuple[int, ...]] | None = None,
               lim: Limits | None = None) -> None:
    """Dimension sizes and cells per variable, as declared."""
    lim = lim or limits()
    for name, size in dims.items():
        if size > lim.max_dim:
            raise _refuse(where, f"the declared size of dimension {name!r}", "max_dim", int(size), lim.max_dim)
    for name, shape in (variables or {}).items():
        cells = 1
        for s in shape:
            cells *= int(s)
        if cells > lim.max_cells:
            raise _refuse(where, f"the declared number of cells of variable {name!r}", "max_cells", cells, lim.max_cells)


def check_netcdf_header(path: str, lim: Limits | None = None) -> None:
    """Dimensions of a netCDF-3/4 file from its header (netCDF4-python; no variable is read)."""
    import netCDF4

    try:
        with netCDF4.Dataset(path, "r") as nc:
            dims = {str(k): len(v) for k, v in nc.dimensions.items()}
            variables = {str(k): tuple(int(s) for s in v.shape) for k, v in nc.variables.items()}
            for g in nc.groups.values():
                dims.update({f"{g.name}/{k}": len(v) for k, v in g.dimensions.items()})
    except OSError:
        return  # not openable as netCDF: the reader's own open gives the precise message
    check_dims(path, dims, variables, lim)


def check_grib_messages(path: str, lim: Limits | None = None) -> None:
    """Points per GRIB message from its grid section (eccodes, values not decoded)."""
    import eccodes

    lim = lim or limits()
    with open(path, "rb") as f:
        while True:
            try:
                h = eccodes.codes_grib_new_from_file(f, headers_only=True)
            except Exception:
                return  # a damaged message: cfgrib's open reports it precisely
            if h is None:
                return
            try:
                n = int(eccodes.codes_get(h, "numberOfPoints"))
            except Exception:
                n = 0
            finally:
                eccodes.codes_release(h)
            if n > lim.max_grib_points:
                raise _refuse(path, "the number of grid points of a GRIB message", "max_grib_points", n,
                              lim.max_grib_points)


def check_read_window(where: str, width: int, height: int, lim: Limits | None = None) -> None:
    """A raster window about to be read (source pixels covering the region)."""
    lim = lim or limits()
    cells = int(width) * int(height)
    if cells > lim.max_read_cells:
        raise LimitError(where, f"covering the region needs a window of {width:,}×{height:,} source pixels "
                                f"({cells:,}), above the limit of {lim.max_read_cells:,} (a raster much finer than "
                                "the 1 km grid, or wrong georeferencing).",
                         "resample the raster to about 1 km first (gdalwarp -tr …), or raise the limit: "
                         f"export {ENV['max_read_cells']}=<larger>.")


__all__ = ["LimitError", "Limits", "ENV", "limits", "check_zip", "read_zip_member", "check_text", "check_dims",
           "check_netcdf_header", "check_grib_messages", "check_read_window"]
