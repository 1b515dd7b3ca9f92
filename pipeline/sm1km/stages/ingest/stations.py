"""``inputs/stations.zarr``: ISMN in-situ daily soil moisture, (station, time), one chunk.

The whole table is one unit: it is small (hundreds of stations × days), so it is read in one
task, compared with the stored table (a station whose overlapping days differ is refused unless
``--overwrite``; usually its file became unreadable, and the message says which) and rewritten
whole. Stations outside the region are kept with ``in_region = false``.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import json
import logging
import os
from pathlib import Path

import numpy as np
import xarray as xr

from sm1km.core import grid
from sm1km.errors import InputError, Sm1kmError
from sm1km.storage import store
from sm1km.storage.input_files import InputOptions, basename, is_remote

from .cube import (
    LATLON_ATTRS,
    SM_STANDARD_NAME,
    TIME_ATTRS,
    TIME_UNITS,
    axis,
    existing_store,
    final_attrs,
    iso,
    starts_before,
    time_axis,
    time_coord,
    unfinished,
)
from .index import INDEX_VERSION, digest, hex_digest
from .inputs import hash_files, input_options, ismn_files
from .job import IngestContext, UnitCounts, raise_problems, run_units, task_errors

log = logging.getLogger(__name__)


def _station_arrays_equal(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """Stations of ``a`` whose overlapping days differ in ``b`` (or that ``b`` lacks)."""
    bad = []
    bst = {str(s): i for i, s in enumerate(b["station"].values)}
    common_t = np.intersect1d(a["time"].values, b["time"].values)
    ai = np.searchsorted(a["time"].values, common_t)
    bi = np.searchsorted(b["time"].values, common_t)
    for i, s in enumerate(map(str, a["station"].values)):
        j = bst.get(s)
        if j is None:
            bad.append(s)
            continue
        if not (np.array_equal(a["sm"].values[i, ai], b["sm"].values[j, bi], equal_nan=True)
                and np.array_equal(a["n_hours"].values[i, ai], b["n_hours"].values[j, bi])):
            bad.append(s)
    return bad


def _encoding(ds: xr.Dataset) -> dict:
    enc: dict[str, dict] = {v: {"_FillValue": None} for v in ("lat", "lon", "elevation", "depth_from", "depth_to") if v in ds.variables}
    enc["sm"] = {"_FillValue": np.float32(np.nan)}
    enc["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int32"}
    return enc


@dataclasses.dataclass(frozen=True)
class StationStageTask:
    """Read pass: the ISMN download ``source`` into a staging table on the period's axis."""

    source: str | tuple[str, ...]   # the download (local), or its resolved files (lists, remote)
    min_hours: int
    first_day: str
    last_day: str
    region: grid.Region
    staging_url: str
    url: str           # the store (compared with when ``compare``)
    so: dict
    compare: bool
    overwrite: bool
    opts: InputOptions | None = None  # how remote inputs are reached


@dataclasses.dataclass(frozen=True)
class StationTable:
    """What the read pass staged: the content digest, the number of stations, those outside the region."""

    digest: str
    n: int
    outside: tuple[str, ...]
    day_digests: tuple[tuple[str, str], ...] = ()  # (ISO day, digest of that day's column)
    static_digest: str = ""                         # stations, their coordinates and in_region


def stage_stations(task: StationStageTask) -> StationTable:
    """Task, read pass of the stations: read, reindex on the axis, flag the region, compare, stage."""
    from sm1km.storage.readers import read_ismn

    ds = read_ismn(list(task.source) if isinstance(task.source, tuple) else task.source, task.min_hours,
                   input_options=task.opts)
    days = time_coord(axis(task.first_day, task.last_day))
    ds = ds.reindex(time=days)
    ds["sm"] = ds["sm"].astype(np.float32)
    ds["n_hours"] = ds["n_hours"].fillna(0).astype(np.int16)
    b = task.region.bbox
    lat, lon = ds["lat"].values, ds["lon"].values
    inside = (lat >= b.south) & (lat < b.north) & (lon >= b.west) & (lon < b.east)
    ds["in_region"] = ("station", inside, {"long_name": "station lies inside the region of the run"})
    ds["sm"].attrs = {"standard_name": SM_STANDARD_NAME, "long_name": "daily mean in-situ soil moisture (ISMN, flag G)",
                      "units": "m3 m-3", "comment": f"NaN if fewer than {task.min_hours} good hours in the UTC day"}
    ds["n_hours"].attrs = {"long_name": "hours with a good (flag G) value in the UTC day", "units": "1"}
    for c in ("lat", "lon"):
        ds[c].attrs = {k: v for k, v in LATLON_ATTRS[c].items() if k != "axis"}
    for c in ("depth_from", "depth_to"):
        ds[c].attrs = {"units": "m", "long_name": f"sensor depth ({c.split('_')[1]})", "positive": "down"}
    ds["time"].attrs = dict(TIME_ATTRS)
    # variable-length UTF-8 strings (fixed-length '<U' has no stable Zarr v3 data type)
    vstr = np.dtypes.StringDType()
    ds = ds.assign_coords({c: ("station", np.asarray(ds[c].values, dtype=vstr), ds[c].attrs)
                           for c in ("station", "network", "station_name", "sensor")})
    outside = [str(s) for s, ok in zip(ds["station"].values, inside) if not ok]
    skipped = ds.attrs.get("skipped", "[]")
    ds.attrs = {"ismn_skipped": skipped, "stations_outside_region": json.dumps(outside),
                "min_hours_per_day": int(task.min_hours)}
    if task.compare:
        old = store.open_dataset(task.url, task.so, consolidated=False).load()
        bad = _station_arrays_equal(old, ds)
        if bad and not task.overwrite:
            # a station usually goes missing because its file became unreadable: say which and why
            unreadable = [s_ for s_ in json.loads(skipped) if str(s_.get("reason", "")).startswith("unreadable")]
            why = "; ".join(f"{Path(s_['source']).name}: {s_['reason'].removeprefix('unreadable: ')}"
                            for s_ in unreadable[:3])
            raise InputError(unreadable[0]["source"] if unreadable else
                             (task.source if isinstance(task.source, str) else "inputs.ismn"),
                             f"{len(bad)} station(s) differ from (or are missing in) what inputs/stations.zarr "
                             f"holds: {', '.join(bad[:5])}{', …' if len(bad) > 5 else ''}."
                             + (f" Unreadable ISMN file(s): {why}" if why else ""),
                             ("repair or restore the unreadable file(s); " if why else "")
                             + "pass --overwrite to replace the stored stations, or restore the original ISMN files.")
    total = 0
    for name in ("sm", "n_hours", "lat", "lon", "in_region"):
        total += digest(name, np.asarray(ds[name].values))
    ids = np.array("\n".join(map(str, ds["station"].values)).encode())
    total += digest("station", ids)
    static = sum(digest(name, np.asarray(ds[name].values)) for name in ("lat", "lon", "in_region"))
    static_hex = hex_digest(static + digest("station", ids))
    sm, nh = np.asarray(ds["sm"].values), np.asarray(ds["n_hours"].values)
    day_digests = tuple((iso(t), hex_digest(digest(f"sm@{iso(t)}", sm[:, i]) + digest(f"n_hours@{iso(t)}", nh[:, i])))
                        for i, t in enumerate(ds["time"].values))
    enc: dict[str, dict] = {v: {"_FillValue": None} for v in ("lat", "lon", "elevation", "depth_from", "depth_to")}
    enc["sm"] = {"_FillValue": np.float32(np.nan)}
    enc["time"] = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int32"}
    store.create_template(task.staging_url, ds, enc, task.so)  # numpy data: written now
    return StationTable(hex_digest(total), int(ds.sizes["station"]), tuple(outside), day_digests, static_hex)


@dataclasses.dataclass(frozen=True)
class StationWriteTask:
    """Write pass: the staged table into the store, with its final attributes."""

    staging_url: str
    url: str
    so: dict
    exists: bool
    attrs: dict


def write_stations(task: StationWriteTask) -> None:
    """Task, write pass of the stations: the whole table."""
    ds = store.open_dataset(task.staging_url, task.so, consolidated=False).load()
    enc = _encoding(ds)
    for v in ds.variables.values():
        v.encoding = {}
    ds.attrs = {**ds.attrs, **task.attrs}
    store.create_template(task.url, ds, enc, task.so, overwrite=task.exists)  # numpy data: written now


def relative_name(source: str | list[str], f: str, files: list[str]) -> str:
    """The name of an ISMN file as the index and attrs record it: relative to the download folder
    (a local folder or ``s3://`` prefix), for a list relative to the files' common folder, for a
    glob to the first file's folder; never a query string."""
    def plain(u: str) -> str:
        return u.split("?", 1)[0].split("#", 1)[0] if is_remote(u) else u

    f = plain(f)
    if isinstance(source, str) and not _glob.has_magic(source) and (
            os.path.isdir(source) or (is_remote(source) and f.startswith(source.rstrip("/") + "/"))):
        base = source.rstrip("/")
    elif isinstance(source, str):
        base = os.path.dirname(plain(files[0]))
    else:  # a list: the files' common folder
        parts = [plain(x).split("/")[:-1] for x in files]
        common = parts[0]
        for p in parts[1:]:
            n = 0
            while n < min(len(common), len(p)) and common[n] == p[n]:
                n += 1
            common = common[:n]
        base = "/".join(common)
    if is_remote(f):
        return f[len(base) + 1:] if f.startswith(base + "/") else basename(f)
    return os.path.relpath(f, base)


class StationJob:
    """``inputs/stations.zarr`` (an :class:`~.job.IngestJob`; one unit: the table)."""

    store_name = "inputs/stations.zarr"

    def __init__(self, ctx: IngestContext):
        self.ctx = ctx
        self.url = ctx.cfg.store.url("inputs", "stations.zarr")
        self.index_store = ctx.index(self.store_name)
        self.source = ctx.cfg.inputs.ismn or ""  # the job exists only if inputs.ismn is set
        self.opts = input_options(ctx.cfg)
        self.problems: list[Sm1kmError] = []
        self.action: str | None = None
        self.rewritten = False

    def counts(self) -> UnitCounts:
        return UnitCounts(total=1, written=int(self.rewritten))

    def plan(self) -> None:
        ctx = self.ctx
        files = ismn_files(self.source, ctx.cfg)
        self.read_source: str | tuple[str, ...] = (
            self.source if isinstance(self.source, str) and not is_remote(self.source) else tuple(files))
        if isinstance(self.source, str) and is_remote(self.source) and not _glob.has_magic(self.source):
            # an s3:// prefix is read like a local download folder: its .stm files and zips
            self.read_source = tuple(f for f in files if basename(f).lower().endswith((".stm", ".zip")))
        self.sha = hash_files(ctx, files, self.problems)
        if self.problems:
            return
        self.files = {relative_name(self.source, f, files): s for f, s in self.sha.items()}
        ds = existing_store(self.url, ctx.so)
        self.exists = ds is not None
        index = self.index_store.read() if ds is not None else None
        if unfinished(ds, index, self.url):
            ds = None  # created again from scratch (overwriting the remains)
        self.index = index or self.index_store.empty()
        self.axis, _ = time_axis(ctx, ds, self.url, self.problems, ctx.overwrite and starts_before(ctx, ds))
        unchanged = (ds is not None and self.index.get("files") == self.files
                     and self.index.get("axis") == [iso(self.axis[0]), iso(self.axis[-1])]
                     and self.index.get("min_hours") == ctx.cfg.model.min_hours_per_day)
        self.compare = ds is not None and not ctx.overwrite
        self.action = None if unchanged else ("update" if ds is not None else "create")
        log.info("%s: %s", self.store_name, self.action or "up to date")

    def stage(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        self.staging_url = store.join(ctx.staging_root, "stations.zarr")
        task = StationStageTask(self.read_source, ctx.cfg.model.min_hours_per_day, iso(self.axis[0]),
                                iso(self.axis[-1]), ctx.region, self.staging_url, self.url, ctx.so, self.compare,
                                ctx.overwrite, self.opts)
        res = run_units(ctx, stage_stations, [task], "stations-read")
        self.problems.extend(task_errors(res))
        if not self.problems:
            self.result: StationTable = res[0]
            if self.result.outside:
                log.warning("ISMN: %d station(s) lie outside the region (kept, in_region = false): %s",
                            len(self.result.outside), ", ".join(self.result.outside[:10]))

    def write(self) -> None:
        if self.action is None:
            return
        ctx = self.ctx
        if self.exists and self.index.get("digest") == self.result.digest:
            # same content, other files/axis bookkeeping: only the index changes
            self._write_index()
            return
        inputs = [{"name": n, "sha256": s} for n, s in sorted(self.files.items())]
        attrs = final_attrs(ctx.cfg, self.url, ctx.so, self.action == "create",
                            "ISMN in-situ daily surface soil moisture",
                            "Daily means of flag-G hourly values of the shallowest sensor at 0-0.05 m per station.",
                            inputs, self.axis, f"{self.result.n} station(s), axis {iso(self.axis[0])}.."
                                               f"{iso(self.axis[-1])}",
                            {"sm1km_stage": "ingest", "n_stations_outside_region": len(self.result.outside)})
        task = StationWriteTask(self.staging_url, self.url, ctx.so, self.exists, attrs)
        raise_problems(task_errors(run_units(ctx, write_stations, [task], "stations-write")))
        store.finalize(self.url, ctx.so)
        self.rewritten = True
        self._write_index()  # last: the store is complete

    def _write_index(self) -> None:
        ctx = self.ctx
        self.index_store.write({"version": INDEX_VERSION, "store": self.store_name, "files": self.files,
                                "digest": self.result.digest, "axis": [iso(self.axis[0]), iso(self.axis[-1])],
                                "min_hours": ctx.cfg.model.min_hours_per_day,
                                # what the store holds (storage.deps reads these)
                                "stored_days": dict(self.result.day_digests),
                                "stored_static": self.result.static_digest})


__all__ = ["StationJob", "StationStageTask", "StationTable", "stage_stations", "StationWriteTask", "write_stations"]
