"""Cloud-Optimized GeoTIFF, one file per day (daily) or month (monthly).

Streaming: windows of the store (aligned to its shards) are written into tiled temporary GTiffs
whose blocks coincide with the windows, then GDAL's COG driver copies each block by block into the
final layout (512 px tiles, overviews computed from the full-resolution band with nodata ignored,
IFDs first). Memory stays bounded by the window and GDAL's block cache, whatever the raster size.

One task writes the files of the days that share the master's time chunk (the master's inner chunk
spans a whole time block, so a one-file-per-day task would decompress each chunk once per day):
each window is read once for all those days. Each file is still delivered atomically on its own.

Band 1 = ``sm``; with ``with_uncertainty`` band 2 = ``sm_uncertainty``. Both int16, scale 0.001,
offset 0, nodata −32768, EPSG:4326.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sm1km.stages.export.common import (
    FILL,
    SCALE,
    Source,
    open_arrays,
    plan_windows,
    provenance,
    read_block,
    scratch_dir,
    staged_output,
    time_groups,
)
from sm1km.stages.export.manifest import DEPS_ATTR

log = logging.getLogger(__name__)

COMPRESSIONS = ("deflate", "zstd")
MAX_TEMP_BLOCK = 4096
#: codec of the temporary tiled GTiff (read once by the COG copy; the COG's own bytes do not depend
#: on it): zstd level 1 writes in 0.72 CPU-s and is read back by the copy in 2.39 s where deflate
#: level 1 took 1.34 s + 3.9 s (a 43200 x 1200 int16 strip, same size on disk, identical COG)
TEMP_COMPRESS = "zstd"


@dataclass(frozen=True)
class GeoTiffItem:
    """One output file: store time index, its label (YYYY-MM-DD or YYYY-MM) and target URL."""

    t: int
    label: str
    url: str
    deps: str = ""   # deps digest written into the file (stages/export/manifest.py)


@dataclass(frozen=True)
class GeoTiffJob:
    """The COGs of consecutive store time steps (within one time chunk) over the same rows/cols."""

    items: tuple[GeoTiffItem, ...]
    storage_options: dict
    source: Source
    rows: slice
    cols: slice
    variables: tuple[str, ...]
    window_pixels: int
    blocksize: int = 512
    compress: str = "deflate"
    overview_resampling: str = "average"

    @property
    def urls(self) -> list[str]:
        return [it.url for it in self.items]

    @property
    def key(self) -> str:
        """The task's name on the dashboard: its first file (and how many follow)."""
        first = self.items[0].url.rstrip("/").rsplit("/", 1)[-1]
        return first if len(self.items) == 1 else f"{first}+{len(self.items) - 1}"


def file_name(product: str, date: str) -> str:
    """``sm1km_daily_YYYYMMDD.tif`` / ``sm1km_monthly_YYYYMM.tif`` for ISO ``date``."""
    d = date.replace("-", "")
    return f"sm1km_{product}_{d[:8] if product == 'daily' else d[:6]}.tif"


def temp_block(n: int) -> int:
    """GTiff block side for windows of ``n`` px: a multiple of 16 dividing ``n`` (≤ 4096) when one
    exists, so that every full window fills whole blocks; else 512 (or less for small rasters)."""
    if n % 16 == 0:
        for d in range(min(n, MAX_TEMP_BLOCK) // 16 * 16, 15, -16):
            if n % d == 0:
                return d
    return min(512, -(-n // 16) * 16)


def _coverage(label: str) -> dict[str, str]:
    """The file's own time coverage (not the store's): a day, or the days of a month (``YYYY-MM``)."""
    if len(label) == 7:
        first = pd.Period(label, freq="M")
        return {"time_coverage_start": first.start_time.strftime("%Y-%m-%d"),
                "time_coverage_end": first.end_time.strftime("%Y-%m-%d")}
    return {"time_coverage_start": label, "time_coverage_end": label}


def _tags(job: GeoTiffJob, item: GeoTiffItem) -> dict[str, str]:
    attrs = provenance(job.source, f"{job.source.product} GeoTIFF {item.label}")
    tags = {k: (v if isinstance(v, str) else str(v)) for k, v in attrs.items()}
    tags.update(time=item.label, product=job.source.product, scale_factor=str(SCALE), add_offset="0.0",
                _FillValue=str(FILL), **_coverage(item.label))
    if item.deps:
        tags[DEPS_ATTR] = item.deps
    return tags


def pending(job: GeoTiffJob, existing: set[str]) -> GeoTiffJob | None:
    """The job without the files whose names are in ``existing`` (None if nothing is left)."""
    from dataclasses import replace

    left = tuple(it for it in job.items if posixpath.basename(it.url) not in existing)
    return replace(job, items=left) if left else None


def write_geotiff(job: GeoTiffJob) -> int:
    """Write the job's COGs (each atomically). Returns the number of windows read."""
    import rasterio
    from affine import Affine
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    src = job.source
    ny, nx = job.rows.stop - job.rows.start, job.cols.stop - job.cols.start
    west, _, _, north = src.edges(job.rows, job.cols)
    arrays = open_arrays(src, job.variables)
    t_all = [it.t for it in job.items]
    groups = time_groups(t_all, src.time_unit, src.time_unit)
    depth = max(g.stop - g.start for g in groups)
    windows = plan_windows(job.rows, job.cols, src.unit, job.window_pixels, depth=depth, align=16)
    bh = temp_block(max(r.stop - r.start for r, _ in windows))
    bw = temp_block(max(c.stop - c.start for _, c in windows))
    pos = {it.t: k for k, it in enumerate(job.items)}
    bs = int(job.blocksize)
    n_reads = 0
    with scratch_dir() as tmp, rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS=1, CPL_TMPDIR=tmp):
        profile = dict(driver="GTiff", width=nx, height=ny, count=len(job.variables), dtype="int16", nodata=FILL,
                       crs="EPSG:4326", transform=Affine(src.res_deg, 0.0, west, 0.0, -src.res_deg, north),
                       tiled=True, blockxsize=bw, blockysize=bh, compress=TEMP_COMPRESS, zstd_level=1,
                       interleave="band", BIGTIFF="IF_SAFER")
        raws = [os.path.join(tmp, f"raw{k}.tif") for k in range(len(job.items))]
        dsts = [rasterio.open(p, "w", **profile) for p in raws]
        try:
            for dst, item in zip(dsts, job.items):
                dst.scales = tuple(float(src.var_encoding.get(v, {}).get("scale_factor", SCALE)) for v in job.variables)
                dst.offsets = tuple(float(src.var_encoding.get(v, {}).get("add_offset", 0.0)) for v in job.variables)
                dst.update_tags(**_tags(job, item))
                for b, v in enumerate(job.variables, start=1):
                    dst.set_band_description(b, v)
                    dst.update_tags(b, **{k: str(x) for k, x in src.var_attrs.get(v, {}).items()})
            for g in groups:
                for rows, cols in windows:
                    win = Window(cols.start - job.cols.start, rows.start - job.rows.start,
                                 cols.stop - cols.start, rows.stop - rows.start)
                    for b, v in enumerate(job.variables, start=1):
                        block = read_block(arrays[v], g, rows, cols)
                        n_reads += 1
                        for k, t in enumerate(range(g.start, g.stop)):
                            if t in pos:
                                dsts[pos[t]].write(block[k], b, window=win)
        finally:
            for d in dsts:
                d.close()
        opts: dict[str, Any] = dict(BLOCKSIZE=bs, COMPRESS=job.compress.upper(), PREDICTOR="YES",
                                    OVERVIEW_RESAMPLING=job.overview_resampling.upper(), RESAMPLING="NEAREST",
                                    BIGTIFF="IF_SAFER", NUM_THREADS=1)
        if job.compress == "deflate":
            opts["LEVEL"] = 6
        for raw, item in zip(raws, job.items):
            with staged_output(item.url, job.storage_options) as local:
                rio_copy(raw, local, driver="COG", **opts)
            os.remove(raw)
    log.debug("%d COGs (%s ...): %d windows, %d reads", len(job.items), job.items[0].url, len(windows), n_reads)
    return n_reads
