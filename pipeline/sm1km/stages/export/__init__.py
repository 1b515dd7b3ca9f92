"""``sm1km export``: GeoTIFF (COG), HDF5 and netCDF-4 deliverables from the master (or monthly) store.

One dask task per output file; each task streams the store window by window (windows aligned to
the store's shards) into a local file and delivers it atomically to a path or ``s3://`` URL.
The export grows with the store: each file's deps digest (the source's time blocks it touches, its
days, the options; :mod:`sm1km.stages.export.manifest`) is recorded in ``<out>/_manifest.json`` and
in the file; a re-run writes the files that are missing or whose digest changed (new days, the open
month, a revised block), atomically, and skips the others; ``overwrite`` rewrites all.

Layouts: ``latlon`` (the master's EPSG:4326 grid; GeoTIFF per day/month, HDF5 per month/year, CF
netCDF-4 per month or year, ``export.netcdf.period`` / ``file_period``) and
``modis-sinusoidal`` (HDF5 per MODIS tile and year, as the published product; daily only).
See docs/exports.md.

Result: a :class:`~sm1km.runtime.result.StageResult` ``{"exports": out, "files": [url, ...]}``:
``"files"`` holds the sorted URLs of every file of the export (what this function returned as a
list before; the CLI prints one per line). ``stats``: ``units_total`` (files of the export),
``units_written`` (of which ``units_rewritten`` replaced an older file), ``units_skipped`` (up to
date; ``units_adopted`` of them by the digest in the file, not yet in the manifest), ``units_empty``
(MODIS tiles that touch the region but hold no pixel centre in it: not written) and ``tasks``. Tasks run through
``runtime.runner``: an error of the sm1km family raised by a file task reaches the driver as
itself (the first one stops the export; a re-run writes what is missing).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sm1km.config import RunConfig
from sm1km.core.grid import BBox
from sm1km.errors import ConfigError
from sm1km.runtime.client import stage_client
from sm1km.runtime.result import StageResult
from sm1km.runtime.runner import run_tasks
from sm1km.stages.export.common import (
    DEFAULT_WINDOW_PIXELS,
    PRODUCT_STORES,
    Source,
    bbox_slices,
    existing_names,
    open_source,
    parse_bbox,
    time_groups,
)
from sm1km.stages.export.geotiff import COMPRESSIONS, GeoTiffItem, GeoTiffJob, write_geotiff
from sm1km.stages.export.geotiff import file_name as geotiff_name
from sm1km.stages.export.geotiff import pending as geotiff_pending
from sm1km.stages.export.hdf5 import Hdf5Job, write_hdf5
from sm1km.stages.export.hdf5 import file_name as hdf5_name
from sm1km.stages.export.manifest import embedded_deps, file_deps, read_manifest, source_blocks, write_manifest
from sm1km.stages.export.modis import ModisJob, tiles_intersecting, write_modis
from sm1km.stages.export.modis import file_name as modis_name
from sm1km.stages.export.netcdf import PERIODS, NetcdfJob, default_period, file_label, write_netcdf
from sm1km.stages.export.netcdf import file_name as netcdf_name
from sm1km.storage import store

log = logging.getLogger(__name__)

FORMATS = ("geotiff", "hdf5", "netcdf")
PRODUCTS = ("daily", "monthly")
LAYOUTS = ("latlon", "modis-sinusoidal")

#: scratch space a GeoTIFF task may fill with temporary rasters (bounds its files per task)
SCRATCH_BYTES = 16 << 30

#: job type -> its writer (runs on a worker; returns the store reads, None: nothing to write)
_WRITERS: dict[type, Callable[[Any], int | None]] = {GeoTiffJob: write_geotiff, Hdf5Job: write_hdf5,
                                                     ModisJob: write_modis, NetcdfJob: write_netcdf}


def _date(value, key: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(key, f"invalid date {value!r}.", "write dates as YYYY-MM-DD.") from None


def _check_options(fmt: str, product: str, layout: str, with_uncertainty: bool, compress: str, blocksize: int,
                   file_period: str | None = None) -> None:
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}.", f"use one of {', '.join(FORMATS)}.")
    if file_period is not None:
        if file_period not in PERIODS:
            raise ConfigError("--file-period", f"unknown file period {file_period!r}.",
                              f"use one of {', '.join(PERIODS)}.")
        if fmt != "netcdf":
            raise ConfigError("--file-period", f"the file period is an option of the netcdf format, not of {fmt}.",
                              "drop --file-period, or export with --format netcdf.")
    if product not in PRODUCTS:
        raise ConfigError("--product", f"unknown product {product!r}.", f"use one of {', '.join(PRODUCTS)}.")
    if layout not in LAYOUTS:
        raise ConfigError("--layout", f"unknown layout {layout!r}.", f"use one of {', '.join(LAYOUTS)}.")
    if layout == "modis-sinusoidal":
        if fmt != "hdf5" or product != "daily":
            raise ConfigError("--layout", "the modis-sinusoidal layout exists for daily HDF5 only "
                                          "(as the published SM.1km.Daily files).",
                              "use --format hdf5 --product daily, or --layout latlon.")
        if with_uncertainty:
            raise ConfigError("--with-uncertainty", "the modis-sinusoidal files hold /SM only.",
                              "export the uncertainty with --layout latlon.")
    if compress not in COMPRESSIONS:
        raise ConfigError("--compress", f"unknown compression {compress!r}.", f"use one of {', '.join(COMPRESSIONS)}.")
    if blocksize < 16 or blocksize % 16:
        raise ConfigError("--blocksize", f"GeoTIFF tile size {blocksize} is not a positive multiple of 16.",
                          "use 512 (default) or 256.")


def select_times(times: Sequence[str], product: str, start: dt.date | None, end: dt.date | None) -> list[int]:
    """Store time indices inside [start, end] (monthly: months whose first day is in [month(start), end])."""
    t = pd.DatetimeIndex(pd.to_datetime(list(times)))
    keep = np.ones(len(t), dtype=bool)
    if start is not None:
        s = pd.Timestamp(start)
        if product == "monthly":
            s = s.replace(day=1)
        keep &= t >= s
    if end is not None:
        keep &= t <= pd.Timestamp(end)
    return [int(i) for i in np.flatnonzero(keep)]


def _default_out_options(cfg: RunConfig, out: str) -> dict[str, Any]:
    if not store.is_remote(out):
        return {}
    return cfg.store.storage_options() if store.is_remote(cfg.store.root) else {}


def plan_jobs(source: Source, *, fmt: str, layout: str, t_indices: Sequence[int], rows: slice, cols: slice,
              variables: Sequence[str], out: str, out_storage_options: Mapping[str, Any], window_pixels: int,
              blocksize: int = 512, compress: str = "deflate", files_per_task: int | None = None,
              file_period: str | None = None) -> list:
    """The tasks of an export (pure planning; nothing is read beyond the source description).

    GeoTIFF: one task per run of days inside one store time chunk, at most ``files_per_task`` files
    (default: the chunk length, reduced so the task's temporary rasters fit ``SCRATCH_BYTES``
    uncompressed); HDF5 and netCDF: one task per file (netCDF: one file per ``file_period``,
    ``month`` or ``year``; default a month of daily data, a year of monthly data).
    """
    so = dict(out_storage_options)
    variables = tuple(variables)
    product = source.product
    jobs: list = []
    if layout == "modis-sinusoidal":
        west, south, east, north = source.edges(rows, cols)
        by_year: dict[int, list[int]] = {}
        for i in t_indices:
            by_year.setdefault(int(source.times[i][:4]), []).append(i)
        for h, v in tiles_intersecting(west, south, east, north):
            for year, idx in sorted(by_year.items()):
                jobs.append(ModisJob(url=store.join(out, modis_name(year, h, v)), storage_options=so, source=source,
                                     h=h, v=v, year=year, t_indices=tuple(idx), rows=rows, cols=cols,
                                     window_pixels=window_pixels))
        return jobs
    if fmt == "geotiff":
        day_bytes = 2 * len(variables) * (rows.stop - rows.start) * (cols.stop - cols.start)
        per_task = int(files_per_task or max(1, min(source.time_unit, SCRATCH_BYTES // day_bytes)))
        for g in time_groups(t_indices, source.time_unit, per_task):
            items = tuple(GeoTiffItem(t=i, label=source.times[i] if product == "daily" else source.times[i][:7],
                                      url=store.join(out, geotiff_name(product, source.times[i])))
                          for i in range(g.start, g.stop))
            jobs.append(GeoTiffJob(items=items, storage_options=so, source=source, rows=rows, cols=cols,
                                   variables=variables, window_pixels=window_pixels, blocksize=blocksize,
                                   compress=compress))
        return jobs
    groups: dict[str, list[int]] = {}
    if fmt == "netcdf":
        period = file_period or default_period(product)
        for i in t_indices:
            groups.setdefault(file_label(source.times[i], period), []).append(i)
        return [NetcdfJob(url=store.join(out, netcdf_name(product, label)), storage_options=so, source=source,
                          t_indices=tuple(idx), rows=rows, cols=cols, variables=variables, label=label,
                          window_pixels=window_pixels) for label, idx in sorted(groups.items())]
    for i in t_indices:
        key = source.times[i][:7] if product == "daily" else source.times[i][:4]
        groups.setdefault(key, []).append(i)
    for label, idx in sorted(groups.items()):
        jobs.append(Hdf5Job(url=store.join(out, hdf5_name(product, label)), storage_options=so, source=source,
                            t_indices=tuple(idx), rows=rows, cols=cols, variables=variables, label=label,
                            window_pixels=window_pixels))
    return jobs


def job_urls(job) -> list[str]:
    """The files a task writes."""
    return job.urls if isinstance(job, GeoTiffJob) else [job.url]


def pending_jobs(jobs: Sequence, out: str, out_storage_options: Mapping[str, Any] | None,
                 overwrite: bool = False) -> list:
    """The jobs (or parts of GeoTIFF jobs) whose files are not in ``out`` yet (all with ``overwrite``)."""
    if overwrite:
        return list(jobs)
    existing = existing_names(out, out_storage_options)
    pending = []
    for j in jobs:
        if isinstance(j, GeoTiffJob):
            j = geotiff_pending(j, existing)
        elif posixpath.basename(j.url) in existing:
            j = None
        if j is not None:
            pending.append(j)
    return pending


def run_job(job) -> dict[str, Any]:
    """Write one task's file(s) (runs on a dask worker): ``{"urls": written, "reads": store reads}``.
    Errors of the sm1km family propagate (``runtime.runner`` carries them to the driver as themselves)."""
    n = _WRITERS[type(job)](job)
    return {"urls": job_urls(job) if n is not None else [], "reads": n or 0}


def file_specs(jobs: Sequence) -> dict[str, tuple[tuple[int, ...], dict[str, Any]]]:
    """{file URL: (store time indices it holds, options of that file alone)} of planned jobs."""
    out: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}
    for j in jobs:
        if isinstance(j, GeoTiffJob):
            for it in j.items:
                out[it.url] = ((it.t,), {})
        elif isinstance(j, ModisJob):
            out[j.url] = (tuple(j.t_indices), {"h": j.h, "v": j.v, "year": j.year})
        else:
            out[j.url] = (tuple(j.t_indices), {})
    return out


def export_options(source: Source, *, fmt: str, layout: str, variables: Sequence[str], rows: slice, cols: slice,
                   blocksize: int, compress: str, file_period: str | None = None) -> dict[str, Any]:
    """The options that change an exported file's bytes (part of its deps digest)."""
    opts: dict[str, Any] = {"format": fmt, "layout": layout, "product": source.product, "variables": list(variables),
                            "rows": [source.row0 + rows.start, source.row0 + rows.stop],
                            "cols": [source.col0 + cols.start, source.col0 + cols.stop], "per_deg": source.per_deg}
    if fmt == "geotiff" and layout == "latlon":
        opts.update(blocksize=int(blocksize), compress=compress)
    if fmt == "netcdf":
        opts.update(period=file_period or default_period(source.product))
    return opts


def with_deps(job, deps: Mapping[str, str]):
    """The job with each file's deps digest set (written into the file)."""
    from dataclasses import replace

    if isinstance(job, GeoTiffJob):
        return replace(job, items=tuple(replace(it, deps=deps[it.url]) for it in job.items))
    return replace(job, deps=deps[job.url])


def only(job, urls: set[str]):
    """The job reduced to the files in ``urls`` (None if none is left)."""
    from dataclasses import replace

    if isinstance(job, GeoTiffJob):
        left = tuple(it for it in job.items if it.url in urls)
        return replace(job, items=left) if left else None
    return job if job.url in urls else None


def _entry(source: Source, t_indices: Sequence[int], deps: str, empty: bool = False) -> dict[str, Any]:
    days = sorted(source.times[i] for i in t_indices)
    e: dict[str, Any] = {"deps": deps, "time_coverage_start": days[0], "time_coverage_end": days[-1],
                         "n_days": len(days)}
    if empty:
        e["empty"] = True
    return e


def export(cfg: RunConfig, client=None, fmt: str = "geotiff", product: str = "daily", start=None, end=None,
           bbox: str | Sequence[float] | BBox | None = None, out: str | None = None, layout: str = "latlon", *,
           with_uncertainty: bool = False, overwrite: bool = False, window_pixels: int = DEFAULT_WINDOW_PIXELS,
           blocksize: int = 512, compress: str = "deflate", files_per_task: int | None = None,
           out_storage_options: Mapping[str, Any] | None = None, file_period: str | None = None) -> StageResult:
    """Export the daily master (``product='daily'``) or the monthly store as files under ``out``.

    ``fmt``: ``geotiff`` (COG per day / month), ``hdf5`` (per month / year) or ``netcdf`` (CF netCDF-4
    per ``file_period``: ``month`` or ``year``, default the config's ``export.netcdf.period``, else a
    month of daily data, a year of monthly data); ``layout``: ``latlon`` or ``modis-sinusoidal``
    (daily HDF5 per MODIS tile and year). ``start``/``end`` (ISO dates, inclusive)
    and ``bbox`` (W,S,E,N degrees) select a subset. ``out`` defaults to ``<store.root>/exports/<fmt>``.

    The export grows with the store (:mod:`sm1km.stages.export.manifest`): a file is written when it
    is missing or its deps digest (the source's time blocks it touches, its days, the options) is not
    the one recorded in ``<out>/_manifest.json`` or written into it — new days' files are added, the
    open month's HDF5 and files of a revised block are rewritten (atomically), the others are
    skipped; ``overwrite`` rewrites every file. Returns ``{"exports": out, "files": urls}``: ``urls``
    are all files of the export, sorted (MODIS tiles whose area touches the region but hold no pixel
    centre in it are not written); ``.stats`` counts them (``units_written``, of which
    ``units_rewritten`` replaced an older file; ``units_skipped`` up to date; ``units_empty``).
    """
    _check_options(fmt, product, layout, with_uncertainty, compress, int(blocksize), file_period)
    if fmt == "netcdf" and file_period is None:
        file_period = cfg.export.netcdf.period
    start, end = _date(start, "--start"), _date(end, "--end")
    if start and end and end < start:
        raise ConfigError("--end", f"end ({end}) is before start ({start}).", "swap the dates.")
    bbox = parse_bbox(bbox)
    out = out or cfg.store.url("exports", fmt if layout == "latlon" else "modis")
    out_so = dict(out_storage_options) if out_storage_options is not None else _default_out_options(cfg, out)
    url = cfg.store.url(PRODUCT_STORES[product])
    so = cfg.store.storage_options()
    variables = ["sm"] + (["sm_uncertainty"] if with_uncertainty else [])
    source = open_source(url, so, product, cfg.fine_grid.per_deg, variables)
    if fmt in ("hdf5", "netcdf") and product == "monthly" and layout == "latlon":
        extra = open_source(url, so, product, cfg.fine_grid.per_deg, ["n_valid_days"]) \
            if _has_var(url, so, "n_valid_days") else None
        if extra is not None:
            variables.append("n_valid_days")
            source = _merge(source, extra)
    t_indices = select_times(source.times, product, start, end)
    if not t_indices:
        raise ConfigError("--start/--end", f"no {product} time steps of {url} between {start} and {end} "
                                           f"(the store covers {source.times[0]} to {source.times[-1]}).",
                          "choose dates inside the store's period.")
    rows, cols = bbox_slices(source, bbox)
    jobs = plan_jobs(source, fmt=fmt, layout=layout, t_indices=t_indices, rows=rows, cols=cols,
                     variables=variables, out=out, out_storage_options=out_so, window_pixels=int(window_pixels),
                     blocksize=int(blocksize), compress=compress, files_per_task=files_per_task,
                     file_period=file_period)
    # what each file is computed from, and which files are not up to date
    blocks = source_blocks(cfg.store.root, PRODUCT_STORES[product], source, variables, so)
    opts = export_options(source, fmt=fmt, layout=layout, variables=variables, rows=rows, cols=cols,
                          blocksize=int(blocksize), compress=compress, file_period=file_period)
    specs = file_specs(jobs)
    deps = {u: file_deps(blocks, t, source.times, {**opts, **x}) for u, (t, x) in specs.items()}
    jobs = [with_deps(j, deps) for j in jobs]
    manifest = read_manifest(out, out_so)
    existing = existing_names(out, out_so)
    todo_urls: set[str] = set()
    known_empty: set[str] = set()
    adopted: set[str] = set()
    for u in specs:
        name = posixpath.basename(u)
        entry = manifest.get(name) or {}
        if overwrite:
            todo_urls.add(u)
        elif entry.get("deps") == deps[u] and (entry.get("empty") or name in existing):
            if entry.get("empty"):
                known_empty.add(u)
        elif name in existing and embedded_deps(u, out_so) == deps[u]:
            adopted.add(u)  # written before the manifest was (a killed run): up to date
        else:
            todo_urls.add(u)
    replacing = {u for u in todo_urls if posixpath.basename(u) in existing}
    todo = [k for k in (only(j, todo_urls) for j in jobs) if k is not None]
    urls = sorted(specs)
    log.info("export %s %s (%s) to %s: %d files, %d to write (%d replacing files whose deps changed) in %d tasks",
             product, fmt, layout, out, len(urls), len(todo_urls), len(replacing), len(todo))
    for u in sorted(replacing):
        log.info("export: %s is rewritten (%s)", posixpath.basename(u),
                 "--overwrite" if overwrite else "what it is computed from changed")
    with stage_client(cfg, client) as c:
        results = list(run_tasks(c, run_job, todo, name="export")) if todo else []
    written = {u for r in results for u in r["urls"]}
    empty = (todo_urls - written) | known_empty
    files = sorted(u for u in urls if u not in empty)
    entries = dict(manifest)
    for u in urls:
        entries[posixpath.basename(u)] = _entry(source, specs[u][0], deps[u], empty=u in empty)
    write_manifest(out, out_so, entries, manifest)
    stats = {"units_total": len(urls), "units_written": len(written), "units_rewritten": len(written & replacing),
             "units_skipped": len(urls) - len(todo_urls) - len(known_empty), "units_empty": len(empty),
             "units_adopted": len(adopted), "tasks": len(todo)}
    return StageResult({"exports": out, "files": files}, stats)


def _has_var(url: str, so, name: str) -> bool:
    return name in store.open_group(url, so)


def _merge(a: Source, b: Source) -> Source:
    from dataclasses import replace

    return replace(a, var_attrs={**a.var_attrs, **b.var_attrs}, var_encoding={**a.var_encoding, **b.var_encoding})


# ---------------------------------------------------------------------------------------------- CLI


__all__ = ["export", "plan_jobs", "pending_jobs", "run_job", "select_times", "file_specs", "export_options",
           "FORMATS", "PRODUCTS", "LAYOUTS", "PERIODS"]
