"""Full-size units of work, each next to its floor measured in the same run (``results.units``).

The regional worlds of the other sections are small enough that fixed costs dominate; the global
run is made of *units* of known size, and each is measured here at that size (``size="full"``; the
test runs ``"quick"``, the same code on small arrays):

* ``ingest_cci_day``: one global ESA CCI day (1440 x 720, the real file layout, synthetic values,
  written by :mod:`sm1km.synth.writers`) through the real ``ingest`` stage into a fresh store, against
  (a) the raw decode of the same file into numpy (``netCDF4``, the variables ingest keeps) and
  (b) what a user would write instead: ``xr.open_mfdataset(...).chunk(<the store's chunks>).to_zarr(...)``;
* ``ingest_era5_day``: one global ERA5 day (24 hourly 1440 x 721 int16 fields, the CDS netCDF3 layout)
  + its land-sea mask file, likewise (the naive version also takes the daily mean);
* ``modis_tile``: one full 1200 x 1200 MOD11A1 HDF4 granule (LP DAAC layout, deflate, written with
  pyhdf as the readers' tests do) read onto the 1 km grid by the reader ingest uses
  (``read_modis``: decode + QC + warp) against pyhdf decoding the LST and QC arrays alone;
* ``export_cog_strip``: a daily COG of a global strip (43200 x 1200 px of the 43200 x 21600 globe,
  1/18 of a global day: the whole day is 1.8 GB of int16) through the real ``export`` stage from a
  master of that strip, against GDAL's COG driver writing the same array
  (``rio.to_raster(driver="COG")``, same compression, block size and overviews); a global day costs
  18 strips (rows are independent in both);
* ``export_modis_days``: the MODIS-sinusoidal HDF5 export of one tile (h18v04) for ``modis_days``
  days; the tile-year costs 365/``modis_days`` of it (the export's time loop is per day).

``ratio_to_*`` = floor time / stage time (1 = the stage costs what its floor costs; goal >= 0.8).
Every unit records its CPU and wall seconds, its input and output bytes; :func:`whole_run` prices
the global 2000-2020 run and one NRT day from them and from the other sections.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from harness.timing import _round, figure, timed
from harness.world import tree_bytes, tree_files

log = logging.getLogger(__name__)

#: sizes of the units: "full" = the global units, "quick" = the same code on small arrays (tests)
UNIT_SIZES: dict[str, dict[str, Any]] = {
    "full": {"bbox": (-180.0, -90.0, 180.0, 90.0), "modis_n": 1200, "strip": (-180.0, 50.0, 180.0, 60.0),
             "modis_days": 4},
    "quick": {"bbox": (0.0, 40.0, 10.0, 50.0), "modis_n": 240, "strip": (-10.0, 59.0, 10.0, 60.0),
              "modis_days": 2},
}
#: global 0.25 deg grid and the 1 km COG strip
GLOBAL_CELLS = (720, 1440)
STRIPS_PER_GLOBAL_DAY = 18           # 21600 rows / 1200 rows of a 10 deg strip
DAY = dt.date(2020, 1, 1)
#: MODIS tiles holding land (of the 460 non-fill tiles of the sinusoidal grid; MOD11A1 ships ~317)
MODIS_LAND_TILES = 317
MODIS_H, MODIS_V = 18, 4


def _fig(samples, key: str = "wall_s") -> dict[str, Any]:
    return figure([getattr(s, key) for s in samples], "s")


def _ratio(floor: dict, stage: dict) -> float:
    return _round(floor["median"] / stage["median"], 4) if stage["median"] > 0 else float("inf")


def _cfg(root: Path, bbox, inputs: dict, days: int = 1, **extra):
    from sm1km.config import RunConfig

    w, s, e, n = bbox
    end = DAY + dt.timedelta(days=days - 1)
    return RunConfig.model_validate({"region": {"west": w, "south": s, "east": e, "north": n},
                                     "period": {"start": DAY.isoformat(), "end": end.isoformat()},
                                     "store": {"root": str(root)}, "inputs": inputs,
                                     "cluster": {"kind": "synchronous"}, **extra})


# ------------------------------------------------------------------------------------- inputs
def write_cci_day(folder: Path, bbox, seed: int = 0) -> Path:
    """One synthetic CCI COMBINED day over ``bbox`` (global: 720 x 1440), ~30 % land cells valid."""
    from sm1km.synth import writers as W

    w, s, e, n = bbox
    ny, nx = int(round((n - s) * 4)), int(round((e - w) * 4))
    lat = (n - 0.125) - 0.25 * np.arange(ny)
    lon = (w + 0.125) + 0.25 * np.arange(nx)
    rng = np.random.default_rng(seed)
    land = rng.random((ny, nx)) < 0.3
    t = float((DAY - dt.date(1970, 1, 1)).days)
    v = {"sm": np.where(land, rng.uniform(0.05, 0.5, (ny, nx)), -9999.0).astype(np.float32),
         "sm_uncertainty": np.where(land, rng.uniform(0.02, 0.08, (ny, nx)), -9999.0).astype(np.float32),
         "t0": np.where(land, t + 0.4, -9999.0), "flag": np.where(land, 0, 127).astype(np.int8),
         "dnflag": np.ones((ny, nx), np.int8), "freqbandID": np.zeros((ny, nx), np.int16),
         "mode": np.ones((ny, nx), np.int8), "sensor": np.ones((ny, nx), np.int16)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / W.cci_filename(DAY)
    W.write_cci(path, DAY, lat, lon, {k: a[None] for k, a in v.items()}, seed=seed, period=(DAY, DAY))
    return path


def write_era5_day(folder: Path, bbox, seed: int = 0) -> tuple[Path, Path]:
    """24 hourly swvl1 fields of one day on the 0.25 deg points covering ``bbox`` (global: 721 x 1440,
    longitudes 0..359.75) + the land-sea mask file, as the CDS netCDF3 files."""
    from sm1km.synth import writers as W

    w, s, e, n = bbox
    glob_ = (e - w) >= 360
    lat = min(90.0, n + 0.25) - 0.25 * np.arange(int(round((min(90.0, n + 0.25) - max(-90.0, s - 0.25)) * 4)) + 1)
    lon = (0.25 * np.arange(1440)) if glob_ else (w - 0.25 + 0.25 * np.arange(int(round((e - w) * 4)) + 3))
    rng = np.random.default_rng(seed + 1)
    lsm = (rng.random((lat.size, lon.size)) < 0.3).astype(np.float64)
    times = [dt.datetime.combine(DAY, dt.time()) + dt.timedelta(hours=h) for h in range(24)]
    sw = rng.uniform(0.05, 0.5, (24, lat.size, lon.size)) * lsm
    folder.mkdir(parents=True, exist_ok=True)
    f, m = folder / f"era5_swvl1_{DAY:%Y%m}.nc", folder.parent / "era5_lsm.nc"
    W.write_era5(f, times, lat, lon, sw, lsm, seed=seed, sea=lsm < 0.5)
    W.write_era5(m, times[:1], lat, lon, sw[:1], lsm, seed=seed, sea=lsm < 0.5)
    return f, m


def write_mod11_tile(path: Path, n: int = 1200, seed: int = 0) -> Path:
    """A MOD11A1 granule of tile (18, 4) in the LP DAAC layout (HDF4-EOS, deflate as LP DAAC ships)."""
    from pyhdf.SD import SD, SDC

    from sm1km.storage.readers.modis import TILE_SIZE_M, TILE_X0, TILE_Y0

    res = TILE_SIZE_M / 1200  # 926.6 m pixels (a smaller n covers part of the tile)
    ul = (TILE_X0 + MODIS_H * TILE_SIZE_M, TILE_Y0 - MODIS_V * TILE_SIZE_M)
    lr = (ul[0] + n * res, ul[1] - n * res)
    rng = np.random.default_rng(seed)
    dn = np.round(rng.uniform(270, 300, (n, n)) / 0.02).astype(np.uint16)
    dn[rng.random((n, n)) < 0.3] = 0  # clouds / sea: fill
    qc = np.where(rng.random((n, n)) < 0.1, 1, 0).astype(np.uint8)
    lst = {"units": "K", "valid_range": [7500, 65535], "_FillValue": 0, "scale_factor": 0.02, "add_offset": 0.0}
    qca = {"units": "none", "valid_range": [0, 255], "_FillValue": 0}
    fields = {"LST_Day_1km": (dn, {**lst, "long_name": "Daily daytime 1km grid Land-surface Temperature"}),
              "QC_Day": (qc, qca),
              "LST_Night_1km": (dn, {**lst, "long_name": "Daily nighttime 1km grid Land-surface Temperature"}),
              "QC_Night": (qc, qca)}
    types = {np.dtype("uint16"): ("DFNT_UINT16", SDC.UINT16), np.dtype("uint8"): ("DFNT_UINT8", SDC.UINT8)}
    objs = "".join(f'\t\t\tOBJECT=DataField_{i}\n\t\t\t\tDataFieldName="{k}"\n\t\t\t\tDataType='
                   f'{types[a.dtype][0]}\n\t\t\t\tDimList=("YDim","XDim")\n\t\t\tEND_OBJECT=DataField_{i}\n'
                   for i, (k, (a, _)) in enumerate(fields.items(), 1))
    grid_name = "MODIS_Grid_Daily_1km_LST"
    struct = ("GROUP=SwathStructure\nEND_GROUP=SwathStructure\nGROUP=GridStructure\n\tGROUP=GRID_1\n"
              f'\t\tGridName="{grid_name}"\n\t\tXDim={n}\n\t\tYDim={n}\n'
              f"\t\tUpperLeftPointMtrs=({ul[0]:.6f},{ul[1]:.6f})\n\t\tLowerRightMtrs=({lr[0]:.6f},{lr[1]:.6f})\n"
              "\t\tProjection=GCTP_SNSOID\n\t\tProjParams=(6371007.181000,0,0,0,0,0,0,0,0,0,0,0,0)\n"
              "\t\tSphereCode=-1\n\t\tGridOrigin=HDFE_GD_UL\n\t\tGROUP=Dimension\n\t\tEND_GROUP=Dimension\n"
              f"\t\tGROUP=DataField\n{objs}\t\tEND_GROUP=DataField\n\t\tGROUP=MergedFields\n"
              "\t\tEND_GROUP=MergedFields\n\tEND_GROUP=GRID_1\nEND_GROUP=GridStructure\nGROUP=PointStructure\n"
              "END_GROUP=PointStructure\nEND\n")
    sd = SD(str(path), SDC.WRITE | SDC.CREATE | SDC.TRUNC)
    sd.attr("HDFEOSVersion").set(SDC.CHAR, "HDFEOS_V2.19")
    sd.attr("StructMetadata.0").set(SDC.CHAR, struct)
    for k, (arr, attrs) in fields.items():
        sds = sd.create(k, types[arr.dtype][1], arr.shape)
        sds.dim(0).setname(f"YDim:{grid_name}")
        sds.dim(1).setname(f"XDim:{grid_name}")
        for ak, av in attrs.items():
            if isinstance(av, str):
                sds.attr(ak).set(SDC.CHAR, av)
            elif isinstance(av, float):
                sds.attr(ak).set(SDC.FLOAT64, av)
            elif isinstance(av, list):
                sds.attr(ak).set(types[arr.dtype][1], av)
            else:
                sds.attr(ak).set(types[arr.dtype][1], int(av))
        sds.setcompress(SDC.COMP_DEFLATE, value=6)
        sds[:] = arr
        sds.endaccess()
    sd.end()
    return path


# -------------------------------------------------------------------------------------- ingest
def _decode_cci(files) -> int:
    import netCDF4

    n = 0
    for f in files:
        with netCDF4.Dataset(f) as ds:
            for v in ("sm", "flag", "sm_uncertainty"):
                n += np.asarray(ds[v][:]).nbytes
    return n


def _decode_era5(files) -> int:
    import netCDF4

    n = 0
    for f in files:
        with netCDF4.Dataset(f) as ds:
            for v in ("swvl1", "lsm"):
                if v in ds.variables:
                    n += np.asarray(ds[v][:]).nbytes
    return n


def _naive(files, variables, chunks: dict, dest: Path, daily_mean: bool = False,
           zarr_chunks: tuple[int, int, int] | None = None) -> None:
    """What a user would write instead of the ingest: open, (daily mean), rechunk, to_zarr — into
    the layout the fusion reads (``zarr_chunks``: the store's, whole series per pixel)."""
    import xarray as xr

    shutil.rmtree(dest, ignore_errors=True)
    with xr.open_mfdataset(files, combine="by_coords") as ds:
        sub = ds[list(variables)]
        if daily_mean:
            sub = sub.resample(time="1D").mean()
        enc = {v: {"chunks": zarr_chunks} for v in variables} if zarr_chunks else None
        sub.chunk(chunks).to_zarr(dest, mode="w", zarr_format=3, consolidated=True, encoding=enc)


def bench_ingest_unit(kind: str, wd: Path, bbox, reps: int) -> dict[str, Any]:
    """One global day of ``kind`` ("cci" | "era5"): the stage vs raw decode vs the naive to_zarr."""
    from sm1km.stages.ingest import ingest

    src = wd / "inputs"
    if kind == "cci":
        files = sorted(glob.glob(str(src / "cci" / "*.nc"))) or [str(write_cci_day(src / "cci", bbox))]
        inputs: dict[str, Any] = {"cci": str(src / "cci" / "*.nc")}
        all_files = files
    else:
        files = sorted(glob.glob(str(src / "era5" / "*.nc")))
        if not files:
            files = [str(write_era5_day(src / "era5", bbox)[0])]
        inputs = {"era5": str(src / "era5" / "*.nc"), "era5_lsm": str(src / "era5_lsm.nc")}
        all_files = files + [str(src / "era5_lsm.nc")]
    root = wd / f"store_{kind}"
    cfg = _cfg(root, bbox, inputs)
    chunk_cells = cfg.fusion.space_chunk

    def stage():
        shutil.rmtree(root, ignore_errors=True)
        return ingest(cfg)

    st = [timed(stage) for _ in range(max(1, reps))]
    out_bytes = tree_bytes(root / "inputs")
    out_objects = tree_files(root / "inputs")
    dec = [timed(lambda: (_decode_cci if kind == "cci" else _decode_era5)(all_files)) for _ in range(max(1, reps))]
    chunks = {"time": -1, "lat": chunk_cells, "lon": chunk_cells}
    from sm1km.stages.ingest import COARSE_TIME_CHUNK

    zc = (COARSE_TIME_CHUNK, chunk_cells, chunk_cells)  # the store's chunks: the same layout written
    naive_dest = wd / f"naive_{kind}.zarr"
    if kind == "cci":
        nv = [timed(lambda: _naive(files, ("sm", "flag", "sm_uncertainty"), chunks, naive_dest, zarr_chunks=zc))
              for _ in range(max(1, reps))]
    else:
        ch = {"time": -1, "latitude": chunk_cells, "longitude": chunk_cells}
        nv = [timed(lambda: _naive(files, ("swvl1",), ch, naive_dest, daily_mean=True, zarr_chunks=zc))
              for _ in range(max(1, reps))]
    naive_bytes = tree_bytes(naive_dest)
    shutil.rmtree(naive_dest, ignore_errors=True)
    stage_w, dec_w, nv_w = _fig(st), _fig(dec), _fig(nv)
    reg = cfg.coarse_region
    return {"cells": [reg.n_rows, reg.n_cols], "days": 1, "input_files": len(all_files),
            "input_bytes": sum(os.path.getsize(f) for f in all_files),
            "decoded_bytes": dec[-1].result, "written_bytes": out_bytes, "written_objects": out_objects,
            "stage_wall_s": stage_w, "stage_cpu_s": _fig(st, "cpu_s"),
            "decode_wall_s": dec_w, "decode_cpu_s": _fig(dec, "cpu_s"),
            "naive_wall_s": nv_w, "naive_cpu_s": _fig(nv, "cpu_s"), "naive_written_bytes": naive_bytes,
            "ratio_to_decode": _ratio(dec_w, stage_w), "ratio_to_naive": _ratio(nv_w, stage_w),
            "stats": dict(st[-1].result.stats) if st[-1].result is not None else {},
            "note": "stage = sm1km ingest (synchronous, in this process, fresh store each rep: plan, sha256, "
                    "read + validate into staging, write, index, consolidated metadata); decode = netCDF4 reading "
                    "the same files' variables into numpy; naive = xr.open_mfdataset + .chunk + to_zarr into the store's "
                    "chunk layout (4096 days x 16 x 16 cells: a whole series per pixel, as the fusion reads it; "
                    "era5: + daily mean), no validation, no index, no staging"}


def bench_modis_unit(wd: Path, n: int, reps: int) -> dict[str, Any]:
    """One MOD11A1 tile: ``read_modis`` onto the 1 km grid vs pyhdf decoding LST + QC alone."""
    from pyhdf.SD import SD, SDC

    from sm1km.core import grid
    from sm1km.storage.readers.modis import read_modis

    path = wd / f"MOD11A1.A2020001.h{MODIS_H:02d}v{MODIS_V:02d}.061.2020002000000.hdf"
    if not path.exists():
        write_mod11_tile(path, n)
    # a 1 km region inside the tile (h18v04: 0-15.6 E at 40 N, 0-10 E at 50 N): 10 x 8 deg at n=1200
    w, s, e, nn = (0.0, 41.0, 10.0, 49.0) if n == 1200 else (0.5, 48.0, 2.5, 49.5)
    region = grid.snap_bbox((w, s, e, nn))

    def raw():
        sd = SD(str(path), SDC.READ)
        try:
            return sum(np.asarray(sd.select(k).get()).nbytes for k in ("LST_Day_1km", "QC_Day"))
        finally:
            sd.end()

    st = [timed(lambda: read_modis(str(path), region, 30, "lst_day")) for _ in range(max(1, reps))]
    rw = [timed(raw) for _ in range(max(1, reps))]
    stage_w, raw_w = _fig(st), _fig(rw)
    return {"tile_px": [n, n], "file_bytes": os.path.getsize(path), "grid_px": list(st[-1].result.shape),
            "stage_wall_s": stage_w, "stage_cpu_s": _fig(st, "cpu_s"), "decode_wall_s": raw_w,
            "decode_cpu_s": _fig(rw, "cpu_s"), "ratio_to_decode": _ratio(raw_w, stage_w),
            "note": "stage = storage.readers.read_modis (what the predictor ingest calls per granule: header and "
                    "limits, decode of LST + QC, QC mask, scale, warp (average) onto the region's 1 km grid); "
                    "decode = pyhdf SD.select().get() of LST_Day_1km and QC_Day; the predictor store's write is "
                    "not in either"}


# -------------------------------------------------------------------------------------- export
def _strip_master(wd: Path, bbox, days: int = 1):
    """A master.zarr of ``bbox`` (the real template) with int16 values written with zarr: ~30 % fill."""
    import zarr

    from sm1km.storage import master, store

    root = wd / "store_export"
    cfg = _cfg(root, bbox, {}, days=days)
    url = cfg.store.url(master.MASTER_STORE)
    if (Path(url) / "zarr.json").exists() and (root / "_ledger" / master.MASTER_STORE / "blocks.json").exists():
        return cfg
    tpl, enc = master.master_template(cfg, model_sha256="0" * 64)
    store.create_template(url, tpl, enc, {})
    g = zarr.open_group(url, mode="r+")
    rng = np.random.default_rng(3)
    for var in ("sm", "sm_uncertainty"):
        a = g[var]
        t, ny, nx = a.shape
        for r0 in range(0, ny, 600):
            r1 = min(ny, r0 + 600)
            v = rng.integers(50, 500, (t, r1 - r0, nx), dtype=np.int16)
            v[:, :, : nx * 3 // 10] = -32768  # a sea strip: fill
            a[:, r0:r1, :] = v
    store.finalize(url, {}, {})
    # the time blocks' deps digests, as downscale records them (else export digests the shards' content)
    from sm1km.stages.downscale import block_key
    from sm1km.storage.deps import BlockDigests

    blocks = master.time_blocks(days, cfg.grid.time_block_days)
    BlockDigests(str(root), master.MASTER_STORE, {}).record({block_key(b.start, b.stop): "bench" for b in blocks})
    return cfg


def bench_export_units(wd: Path, sizes: dict, reps: int) -> dict[str, Any]:
    """A COG of a global strip: the stage vs ``rio.to_raster(driver="COG")`` of the same array; the
    MODIS-sinusoidal HDF5 of one tile for a few days."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    from sm1km.stages.export import export
    from sm1km.storage import master

    cfg = _strip_master(wd, sizes["strip"])
    dest = wd / "export_cog"

    def stage():
        shutil.rmtree(dest, ignore_errors=True)
        return export(cfg, None, fmt="geotiff", product="daily", out=str(dest), overwrite=True)

    st = [timed(stage) for _ in range(max(1, reps))]
    cog_bytes = sum(os.path.getsize(f) for f in glob.glob(str(dest / "*.tif")))
    ds = xr.open_zarr(cfg.store.url(master.MASTER_STORE), mask_and_scale=False)
    arr = ds["sm"].isel(time=0).load()
    da = xr.DataArray(arr.values, dims=("y", "x"), coords={"y": ds["lat"].values, "x": ds["lon"].values})
    da = da.rio.write_crs("EPSG:4326").rio.write_nodata(-32768)
    floor_path = wd / "floor.tif"

    def floor():
        da.rio.to_raster(floor_path, driver="COG", compress="DEFLATE", predictor="YES", level=6, blocksize=512,
                         overview_resampling="AVERAGE", num_threads=1)

    fl = [timed(floor) for _ in range(max(1, reps))]
    floor_bytes = os.path.getsize(floor_path)
    stage_w, floor_w = _fig(st), _fig(fl)
    out: dict[str, Any] = {
        "cog_strip": {"px": list(arr.shape), "strips_per_global_day": STRIPS_PER_GLOBAL_DAY if arr.shape[1] == 43200
                      else None, "bytes": cog_bytes, "floor_bytes": floor_bytes,
                      "stage_wall_s": stage_w, "stage_cpu_s": _fig(st, "cpu_s"), "floor_wall_s": floor_w,
                      "floor_cpu_s": _fig(fl, "cpu_s"), "ratio_to_floor": _ratio(floor_w, stage_w),
                      "note": "stage = sm1km export --format geotiff of one day of a master holding this strip "
                              "(manifest and deps, read + decode the shards, tiled temporary GTiff, COG copy with "
                              "overviews); floor = rio.to_raster(driver='COG') of the same int16 array already in "
                              "memory (DEFLATE level 6, predictor, 512 px blocks, average overviews). A global "
                              "day is 18 such strips (43200 x 21600 int16 = 1.8 GB uncompressed): scaled, not "
                              "written"}}
    return out


def bench_modis_export(wd: Path, sizes: dict, reps: int) -> dict[str, Any]:
    """The MODIS-sinusoidal HDF5 export of tile h18v04 over ``modis_days`` days (scaled to a year)."""
    from sm1km.stages.export import export

    n_days = int(sizes["modis_days"])
    bbox = (0.0, 40.0, 15.0, 50.0) if sizes is UNIT_SIZES["full"] else (0.0, 49.0, 1.0, 50.0)
    cfg = _strip_master(wd / "modis", bbox, days=n_days)
    dest = wd / "export_modis"

    def stage():
        shutil.rmtree(dest, ignore_errors=True)
        return export(cfg, None, fmt="hdf5", layout="modis-sinusoidal", product="daily", out=str(dest),
                      overwrite=True)

    st = [timed(stage) for _ in range(max(1, reps))]
    files = [f for f in glob.glob(str(dest / "**" / "*.h5"), recursive=True)]
    nbytes = sum(os.path.getsize(f) for f in files)
    return {"days": n_days, "files": len(files), "bytes": nbytes, "stage_wall_s": _fig(st),
            "stage_cpu_s": _fig(st, "cpu_s"), "tile_year_scale": round(365 / n_days, 3),
            "note": "sm1km export --format hdf5 --layout modis-sinusoidal of a master covering tile h18v04 "
                    f"(0-15 E, 40-50 N) for {n_days} days; a tile-year is priced as 365/days of it"}


# ---------------------------------------------------------------------------------------- all
def bench_units(workdir: Path, size: str, reps: int) -> dict[str, Any]:
    """Every full-size unit (``size`` "full" or "quick"); a failing unit is recorded as its error."""
    import traceback

    sizes = UNIT_SIZES[size]
    wd = Path(workdir) / f"units_{size}"
    wd.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"size": size, "reps": reps}
    steps = {
        "ingest_cci_day": lambda: bench_ingest_unit("cci", wd / "cci", sizes["bbox"], reps),
        "ingest_era5_day": lambda: bench_ingest_unit("era5", wd / "era5", sizes["bbox"], reps),
        "modis_tile": lambda: bench_modis_unit(wd, sizes["modis_n"], reps),
        "export": lambda: bench_export_units(wd, sizes, reps),
        "export_modis_days": lambda: bench_modis_export(wd, sizes, reps),
    }
    for name, fn in steps.items():
        log.info("bench units: %s ...", name)
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one unit must not abort the others
            log.error("bench units: %s failed: %s", name, exc)
            out[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
    if isinstance(out.get("export"), dict) and "cog_strip" in out["export"]:
        out["export_cog_strip"] = out.pop("export")["cog_strip"]
    return out
