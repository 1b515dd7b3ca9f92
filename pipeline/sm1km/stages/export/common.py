"""Shared pieces of the exporters: the source store, window planning, reads, atomic delivery.

The driver describes the source once (:class:`Source`: URL, grid position, chunking, attributes);
each file task opens the raw Zarr arrays itself and reads **windows aligned to the store's chunks**
(:func:`plan_windows`), so a global day is never held whole in one process. Files are written to a
local temporary path and delivered atomically (:func:`deliver`): locally by ``os.replace`` of a
``.part`` file, on object stores by one ``put`` (a single PUT or a multipart upload; either makes the
object visible only when complete).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast

import numpy as np

from sm1km._version import __version__
from sm1km.core.encoding import FILL, SCALE
from sm1km.core.grid import BBox, FineGrid
from sm1km.errors import ConfigError, StoreError
from sm1km.redact import redact_text, redact_url
from sm1km.storage import store

log = logging.getLogger(__name__)

#: default read budget of one window, in int16 pixels (times days read at once): 16 Mi px = 32 MiB
DEFAULT_WINDOW_PIXELS = 1 << 24

PRODUCT_STORES = {"daily": "master.zarr", "monthly": "monthly.zarr"}

SM_ATTRS = {"long_name": "surface soil moisture (0-5 cm)", "standard_name": "volume_fraction_of_condensed_water_in_soil",
            "units": "m3 m-3"}
UNC_ATTRS = {"long_name": "uncertainty of surface soil moisture (half the 16-84 % quantile range)",
             "units": "m3 m-3"}
NVALID_ATTRS = {"long_name": "number of valid days in the month", "units": "1"}


def default_var_attrs(name: str) -> dict[str, Any]:
    return dict({"sm": SM_ATTRS, "sm_uncertainty": UNC_ATTRS, "n_valid_days": NVALID_ATTRS}.get(name, {}))


# ---------------------------------------------------------------------------------------------- source
@dataclass(frozen=True)
class Source:
    """What a file task needs to know about the source store (picklable, no open handles)."""

    url: str
    storage_options: dict
    product: str                   # "daily" | "monthly"
    shape: tuple[int, int, int]    # (time, lat, lon) of the store
    row0: int                      # global fine-grid row of store row 0
    col0: int                      # global fine-grid column of store column 0
    per_deg: int                   # fine pixels per degree
    unit: tuple[int, int]          # spatial read unit (shard or chunk shape), windows are multiples
    time_unit: int                 # time length of a shard (or chunk)
    attrs: dict = field(default_factory=dict)          # global attributes (provenance)
    var_attrs: dict = field(default_factory=dict)      # name -> CF attributes (without encoding keys)
    crs_attrs: dict = field(default_factory=dict)      # attributes of the `crs` grid-mapping variable
    var_encoding: dict = field(default_factory=dict)   # name -> packing attrs (scale_factor, add_offset, _FillValue)
    times: tuple[str, ...] = ()                        # ISO dates of the time axis (str)

    @property
    def res_deg(self) -> float:
        return 1.0 / self.per_deg

    def edges(self, rows: slice, cols: slice) -> tuple[float, float, float, float]:
        """(west, south, east, north) of store rows/cols (one integer numerator, one division)."""
        p = self.per_deg
        return ((self.col0 + cols.start - 180 * p) / p, (90 * p - self.row0 - rows.stop) / p,
                (self.col0 + cols.stop - 180 * p) / p, (90 * p - self.row0 - rows.start) / p)

    def lat(self, rows: slice) -> np.ndarray:
        """Cell-centre latitudes of store rows, exactly as :mod:`sm1km.core.grid` computes them."""
        return FineGrid(self.per_deg // 4).lat(np.arange(self.row0 + rows.start, self.row0 + rows.stop))

    def lon(self, cols: slice) -> np.ndarray:
        return FineGrid(self.per_deg // 4).lon(np.arange(self.col0 + cols.start, self.col0 + cols.stop))


_ENCODING_KEYS = {"scale_factor", "add_offset", "_FillValue", "missing_value", "dtype", "coordinates"}


def _plain(v: Any) -> Any:
    """A JSON/HDF5/TIFF-friendly attribute value."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def open_source(url: str, storage_options: Mapping[str, Any] | None, product: str, per_deg: int,
                variables: Sequence[str]) -> Source:
    """Describe a master/monthly store (coordinates, chunking, attributes) from its metadata only."""
    ds = store.open_dataset(url, storage_options)  # lazy; only coordinates are read
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise StoreError(url, f"variables {missing} are not in the store (it has {sorted(map(str, ds.data_vars))}).",
                         "export only what the store holds (drop --with-uncertainty), or re-run the stage "
                         "that writes the store.")
    for v in variables:
        if ds[v].dims != ("time", "lat", "lon"):
            raise StoreError(url, f"variable {v} has dims {ds[v].dims}, expected (time, lat, lon).",
                             "the store does not follow the master contract (docs/architecture.md).")
    lat = ds["lat"].values
    lon = ds["lon"].values
    res = 1.0 / per_deg
    for name, c, sign in (("lat", lat, -1.0), ("lon", lon, 1.0)):
        if c.size > 1 and not np.allclose(np.diff(c), sign * res, rtol=0, atol=res * 1e-6):
            raise StoreError(url, f"the {name} spacing ({c[1] - c[0]!r}) is not {sign * res!r} as the config's "
                                  f"grid.factor implies.",
                             "use the config the store was made with (grid.factor).")
    row0 = int(round((90.0 - lat[0]) * per_deg - 0.5))
    col0 = int(round((lon[0] + 180.0) * per_deg - 0.5))
    g = store.open_group(url, storage_options)
    arr = store.array(g, variables[0])
    shards = getattr(arr, "shards", None)
    unit3 = tuple(shards) if shards else tuple(arr.chunks)
    for v in variables:
        a = store.array(g, v)
        fv = a.metadata.fill_value
        cf = cast("int | float | None", a.attrs.get("_FillValue"))  # CF: a number of the variable's type
        if cf is not None and fv is not None and int(fv) != int(cf):
            log.warning("%s/%s: Zarr fill_value %s differs from _FillValue %s: chunks never written read as %s, "
                        "not as missing", url, v, fv, cf, fv)
        if np.dtype(a.dtype) != np.int16:
            raise StoreError(url, f"variable {v} is {a.dtype}, expected int16 (scale 0.001).",
                             "the store does not follow the master contract (docs/architecture.md).")
    var_attrs, var_encoding = {}, {}
    for v in variables:
        raw = dict(g[v].attrs)
        var_encoding[v] = {k: _plain(raw[k]) for k in ("scale_factor", "add_offset", "_FillValue") if k in raw}
        own = {k: _plain(x) for k, x in ds[v].attrs.items() if k not in _ENCODING_KEYS}
        var_attrs[v] = {**default_var_attrs(v), **own}
    crs_attrs = {k: _plain(x) for k, x in ds["crs"].attrs.items()} if "crs" in ds.variables else {}
    import pandas as pd

    times = tuple(pd.DatetimeIndex(ds["time"].values).strftime("%Y-%m-%d"))
    return Source(url=url, storage_options=dict(storage_options or {}), product=product,
                  shape=(len(times), len(lat), len(lon)), row0=row0, col0=col0, per_deg=per_deg,
                  unit=(int(unit3[1]), int(unit3[2])), time_unit=int(unit3[0]),
                  attrs={k: _plain(x) for k, x in ds.attrs.items()}, var_attrs=var_attrs, crs_attrs=crs_attrs,
                  var_encoding=var_encoding, times=times)


def bbox_slices(source: Source, bbox: BBox | None) -> tuple[slice, slice]:
    """Store rows/cols of every pixel that touches ``bbox`` (whole store if None); ConfigError if none."""
    ny, nx = source.shape[1:]
    if bbox is None:
        return slice(0, ny), slice(0, nx)
    p = source.per_deg
    w, s, e, n = (Fraction(v).limit_denominator(10**9) for v in bbox.as_tuple())
    r0 = math.floor((90 - n) * p) - source.row0
    r1 = math.ceil((90 - s) * p) - source.row0
    c0 = math.floor((w + 180) * p) - source.col0
    c1 = math.ceil((e + 180) * p) - source.col0
    r0, r1, c0, c1 = max(r0, 0), min(r1, ny), max(c0, 0), min(c1, nx)
    if r0 >= r1 or c0 >= c1:
        we, se, ee, ne = source.edges(slice(0, ny), slice(0, nx))
        raise ConfigError("--bbox", f"the box {bbox.as_tuple()} does not overlap the store "
                                    f"({we}, {se}, {ee}, {ne}).", "pass a box inside the run's region.")
    return slice(r0, r1), slice(c0, c1)


def parse_bbox(text: str | Sequence[float] | BBox | None) -> BBox | None:
    if text is None or isinstance(text, BBox):
        return text
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
        if len(vals) != 4:
            raise ValueError(f"4 numbers expected, got {len(vals)}")
        return BBox(*vals)
    except ValueError as exc:
        raise ConfigError("--bbox", f"invalid box {text!r} ({exc}).",
                          "write it as W,S,E,N in degrees, e.g. --bbox 10,44,12,46.") from None


# -------------------------------------------------------------------------------------------- windows
def _edges(start: int, stop: int, step: int) -> list[int]:
    """``start``, every multiple of ``step`` strictly inside (start, stop), ``stop``."""
    first = (start // step + 1) * step
    return [start, *range(first, stop, step), stop]


def plan_windows(rows: slice, cols: slice, unit: tuple[int, int], max_pixels: int, depth: int = 1,
                 align: int = 1) -> list[tuple[slice, slice]]:
    """Split store ``rows × cols`` into windows whose inner edges are multiples of ``unit`` (the store's
    shard/chunk shape, counted from store index 0), each at most ``max_pixels / depth`` pixels
    (at least one unit). Wide windows first (whole rows of units), then as many unit rows as fit.
    With ``align`` the unit grows to ``lcm(unit, align)`` when that fits the budget (so GeoTIFF
    blocks, multiples of 16, can coincide with windows). Row-major order. Pure.
    """
    uh, uw = int(unit[0]), int(unit[1])
    if uh < 1 or uw < 1:
        raise ValueError(f"unit must be positive, got {unit}")
    per_window = max(1, int(max_pixels) // max(1, int(depth)))
    ah, aw = math.lcm(uh, int(align)), math.lcm(uw, int(align))
    if ah * aw <= per_window:
        uh, uw = ah, aw
    budget_units = max(1, per_window // (uh * uw))
    n_unit_cols = (cols.stop - 1) // uw - cols.start // uw + 1
    w_units = max(1, min(n_unit_cols, budget_units))
    h_units = max(1, budget_units // w_units)
    row_edges = _edges(rows.start, rows.stop, uh * h_units)
    col_edges = _edges(cols.start, cols.stop, uw * w_units)
    return [(slice(r0, r1), slice(c0, c1)) for r0, r1 in zip(row_edges[:-1], row_edges[1:])
            for c0, c1 in zip(col_edges[:-1], col_edges[1:])]


def time_groups(indices: Sequence[int], time_unit: int, max_len: int) -> list[slice]:
    """Contiguous runs of store time ``indices`` that never cross a multiple of ``time_unit`` and are
    at most ``max_len`` long (so each read touches one time shard). Pure."""
    out: list[slice] = []
    idx = sorted(int(i) for i in indices)
    max_len = max(1, int(max_len))
    i = 0
    while i < len(idx):
        start = idx[i]
        j = i
        while (j + 1 < len(idx) and idx[j + 1] == idx[j] + 1 and (idx[j + 1] // time_unit) == (start // time_unit)
               and idx[j + 1] - start < max_len):
            j += 1
        out.append(slice(start, idx[j] + 1))
        i = j + 1
    return out


def open_arrays(source: Source, variables: Sequence[str]) -> dict[str, Any]:
    """Raw (int16, undecoded) Zarr arrays of the source, opened in the calling process."""
    g = store.open_group(source.url, source.storage_options)
    return {v: g[v] for v in variables}


def read_block(arr, times: slice | int, rows: slice, cols: slice) -> np.ndarray:
    """Raw int16 values of one window (``times`` an index or a slice)."""
    url = str(arr.store_path).rsplit("/" + arr.path, 1)[0] if getattr(arr, "path", "") else str(arr.store_path)
    try:
        return store.read_window(arr, (times, rows, cols), url, "downscale")
    except StoreError:
        raise
    except Exception as exc:  # pragma: no cover - depends on the object store
        raise StoreError(str(getattr(arr, "path", "array")), f"cannot read window {times}, {rows}, {cols} "
                         f"({type(exc).__name__}: {exc}).", "check the store and the credentials; re-run to resume.") from None


# -------------------------------------------------------------------------------------------- delivery
def existing_names(folder: str, storage_options: Mapping[str, Any] | None) -> set[str]:
    """Names of the files directly in ``folder`` (one listing instead of one request per file)."""
    fs, path = store.filesystem(folder, storage_options)
    fs.invalidate_cache(path)  # never trust a listing cached by an earlier call (s3fs)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return set()
    return {posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") != "directory"}


@contextlib.contextmanager
def staged_output(url: str, storage_options: Mapping[str, Any] | None) -> Iterator[str]:
    """Yield a local path to write the file to; on success it becomes ``url`` atomically.

    Local: ``<url>.part`` in the target folder, then ``os.replace``. Remote: a temporary local file,
    then one ``put`` (the object appears only when the upload completes). On error nothing is left
    under the final name.
    """
    if not store.is_remote(url):
        final = url.removeprefix("file://")
        os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
        part = final + ".part"
        try:
            yield part
            os.replace(part, final)
        finally:
            if os.path.exists(part):
                os.remove(part)
        return
    tmpdir = tempfile.mkdtemp(prefix="sm1km-export-")
    local = os.path.join(tmpdir, posixpath.basename(url))
    try:
        yield local
        fs, path = store.filesystem(url, storage_options)
        try:
            fs.put_file(local, path)
        except Exception as exc:
            raise StoreError(url, f"upload failed ({type(exc).__name__}: {exc}).",
                             "check the bucket, the endpoint and the credentials; re-run to resume.") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="sm1km-export-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def history_line(what: str) -> str:
    return f"{store.now_iso()} exported by sm1km {__version__}: {what}"


#: an absolute local path inside free text or JSON (``/a/b``, ``file:///a/b``, ``~/a``); not ``1/120``, not a URL
_ABS_PATH = re.compile(r"(?<![\w.~:/-])(?:file://)?(?:~|/)(?:/?[^\s/\"',;]+)+/?")


def portable_path(value: str, root: str) -> str:
    """``value`` as an exported file may carry it: a local path relative to the store ``root`` when it
    lies under it (``.`` for the root itself), else its basename; URLs (``s3://``, ``https://``) are kept,
    redacted (:func:`sm1km.redact.redact_url`). Pure."""
    if "://" in value and not value.startswith("file://"):
        return redact_url(value)
    path = value.removeprefix("file://")
    if not (path.startswith(("/", "~"))):
        return value
    path = posixpath.normpath(path)
    base = posixpath.normpath(root.removeprefix("file://")) if root and "://" not in root.replace("file://", "") else ""
    if base and (path == base or path.startswith(base.rstrip("/") + "/")):
        return posixpath.relpath(path, base)
    name = posixpath.basename(path) or "."
    if any(c in name for c in "*?["):  # a glob of inputs: its folder's name says more than "*.nc"
        name = posixpath.join(posixpath.basename(posixpath.dirname(path)), name)
    return name


def portable_text(text: str, root: str) -> str:
    """Free text / a JSON document with every absolute local path made portable (:func:`portable_path`)
    and every URL redacted. JSON (an object or a list) is rewritten value by value, keys sorted."""
    stripped = text.lstrip()
    if stripped[:1] in "{[":
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, (dict, list)):
            return json.dumps(_portable_obj(doc, root), sort_keys=True)
    out = _ABS_PATH.sub(lambda m: portable_path(m.group(0), root), text)
    return redact_text(out)


def _portable_obj(obj: Any, root: str) -> Any:
    if isinstance(obj, dict):
        return {k: _portable_obj(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable_obj(v, root) for v in obj]
    if isinstance(obj, str):
        return portable_text(obj, root) if obj else obj
    return obj


def provenance(source: Source, what: str) -> dict[str, Any]:
    """Global attributes of an exported file: the store's provenance plus an export history line.

    Exported files travel (downloads, mirrors): they carry no path of the machine that wrote them.
    ``source_store`` and every path inside the attributes (``sm1km_config``'s ``store.root`` and
    input paths, free text) are made relative to the store root (the source store's folder), or cut
    to their basename when outside it; ``s3://``/``https://`` URLs are kept, redacted
    (:func:`portable_text`).
    """
    root = posixpath.dirname(source.url.rstrip("/"))
    attrs = {k: (portable_text(v, root) if isinstance(v, str) else v) for k, v in source.attrs.items()}
    hist = attrs.get("history", "")
    attrs["history"] = (hist + "\n" if hist else "") + portable_text(history_line(what), root)
    attrs["source_store"] = portable_path(source.url, root)
    return attrs


def encode_fill_to(values: np.ndarray, fill: int) -> np.ndarray:
    """Map the master's FILL to ``fill`` and clip valid values below 0 to 0 (so they cannot read as fill)."""
    out = np.where(values == FILL, np.int16(fill), np.maximum(values, 0)).astype(np.int16, copy=False)
    return out


__all__ = ["Source", "open_source", "plan_windows", "time_groups", "bbox_slices", "parse_bbox", "staged_output",
           "read_block", "open_arrays", "provenance", "DEFAULT_WINDOW_PIXELS", "FILL", "SCALE"]
