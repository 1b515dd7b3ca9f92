"""``sm1km predictors``: the static predictor rasters of a run, derived from public downloads.

From ``inputs.predictor_sources`` (DEM tiles, SoilGrids clay/sand, a land-cover map; docs/data.md)
to the GeoTIFFs that ``inputs.predictors.elevation/slope/twi/clay/sand/land_cover`` point at, on
the 1 km grid of the run's region (``grid.FineGrid(cfg.grid.factor).transform(region)``, EPSG:4326):

- elevation, slope, TWI: the DEM tiles mosaicked (rasterio.merge) over the region plus a margin,
  slope and TWI computed on the DEM's native resolution (:mod:`sm1km.core.terrain`, own D8), then
  all three averaged onto the 1 km grid (``read_raster(..., "average")``). The DEM must be on a
  geographic CRS and its tiles' extent must cover the region (holes inside, e.g. missing all-sea
  tiles, stay no data).
- clay, sand: SoilGrids g/kg averaged onto the grid, ÷ 1000. Percent files (units tag, or clay +
  sand never above 100) and values above 1000 are refused: an error of 10x would go unnoticed.
- land cover: the class map's mode on the 1 km grid (GeoTIFF; MCD12Q1 ``.hdf`` granules with the
  MODIS reader, ``read_modis(..., "land_cover")``), then mapped to IGBP codes
  (``terrain.map_land_cover``; mode before mapping: a 10 m WorldCover tile is 1.3 GB of classes, and
  the mapping is one-to-one but for moss/lichen and grassland). A class the scheme does not define is
  refused (the other scheme's file).

Everything is read and computed before anything is written; each output is then written to
``<name>.part`` and renamed into place (``s3://`` targets: one PUT), so a killed or failed run never
leaves a half-written file under a final name. A re-run skips the outputs whose sources, grid and
recipe are unchanged (the digest in ``<name>.sources.json``, see :func:`predictors`). Memory: the DEM mosaic in float64 and a few arrays like it (a 4° x 4° region of
GLO-90 is 23 M cells, ~1.5 GB peak, ~2-3 min: :mod:`sm1km.core.terrain`).
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sm1km.core import grid, terrain
from sm1km.errors import ConfigError, InputError
from sm1km.runtime.result import StageResult

log = logging.getLogger(__name__)

#: DEM cells of margin around the region (slope differences and flow from just outside)
DEM_MARGIN_CELLS = 4
#: what each output needs from the sources
OUTPUT_SOURCE = {"elevation": "dem", "slope": "dem", "twi": "dem", "clay": "clay", "sand": "sand",
                 "land_cover": "land_cover"}
_ATTRS = {
    "elevation": ("m", "elevation above sea level (mean of the DEM)"),
    "slope": ("degree", "terrain slope (mean of the DEM-resolution slope)"),
    "twi": ("1", "topographic wetness index ln(a/tan(beta)), D8, mean of the DEM-resolution TWI"),
    "clay": ("1", "clay mass fraction of the topsoil (SoilGrids g/kg / 1000)"),
    "sand": ("1", "sand mass fraction of the topsoil (SoilGrids g/kg / 1000)"),
    "land_cover": ("1", "IGBP land cover class (MCD12Q1 LC_Type1 codes), 17 = water, 255 = no data"),
}


def _expand(spec: Any, what: str) -> list[str]:
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    out: list[str] = []
    for s in specs:
        if "://" in s:
            raise ConfigError(f"inputs.predictor_sources.{what}", f"{s!r}: only local files are supported here.",
                              "download the files first (docs/data.md).")
        hits = sorted(glob.glob(s)) if any(c in s for c in "*?[") else ([s] if os.path.exists(s) else [])
        out.extend(hits)
    if not out:
        raise InputError(f"inputs.predictor_sources.{what}", f"no file matches {specs}.",
                         "download the files (docs/data.md) and point the config at them.")
    return out


def _targets(cfg) -> dict[str, str]:
    """Output key -> local path of every configured static predictor whose source is configured."""
    src = cfg.inputs.predictor_sources
    if src is None:
        raise ConfigError("inputs.predictor_sources", "not set: nothing to derive the predictors from.",
                          "add inputs.predictor_sources {dem, clay, sand, land_cover, land_cover_scheme} "
                          "(docs/data.md).")
    out: dict[str, str] = {}
    for key, s in OUTPUT_SOURCE.items():
        target = getattr(cfg.inputs.predictors, key)
        if target is None or getattr(src, s) is None:
            continue
        if not isinstance(target, str) or any(c in target for c in "*?[{") or (
                "://" in target and not target.startswith("s3://")):
            raise ConfigError(f"inputs.predictors.{key}", f"{target!r} is not one file name (local or s3://).",
                              "point it at the GeoTIFF to write (e.g. ./inputs/predictors/slope.tif).")
        out[key] = target
    if not out:
        raise ConfigError("inputs.predictor_sources", "no output: no inputs.predictors entry "
                          "(elevation/slope/twi/clay/sand/land_cover) has its source configured.",
                          "set the sources and the target file names (docs/data.md).")
    return out


# --------------------------------------------------------------------------------------------
# DEM
# --------------------------------------------------------------------------------------------
def _dem_mosaic(paths: list[str], region: grid.Region) -> tuple[np.ndarray, Any]:
    """The DEM tiles merged over the region (+ margin), float64 with NaN: (array, transform)."""
    import rasterio
    from rasterio.merge import merge

    b = region.bbox
    ds_list = []
    try:
        for p in paths:
            try:
                ds = rasterio.open(p)
            except Exception as exc:
                raise InputError(p, f"cannot open the DEM ({exc}).", "re-download the tile.") from None
            ds_list.append(ds)
            if ds.crs is None or not ds.crs.is_geographic:
                raise InputError(p, f"the DEM is not on a geographic CRS ({ds.crs}).",
                                 "use the EPSG:4326 tiles (Copernicus GLO-90, SRTM) or gdalwarp -t_srs EPSG:4326.")
        res = max(abs(ds_list[0].res[0]), abs(ds_list[0].res[1]))
        w = min(d.bounds.left for d in ds_list)
        e = max(d.bounds.right for d in ds_list)
        s = min(d.bounds.bottom for d in ds_list)
        n = max(d.bounds.top for d in ds_list)
        tol = 1e-6
        if w > b.west + tol or e < b.east - tol or s > b.south + tol or n < b.north - tol:
            raise InputError(paths[0] if len(paths) == 1 else f"{len(paths)} DEM files",
                             f"the DEM covers lon {w:.4f}…{e:.4f}, lat {s:.4f}…{n:.4f}, not the whole region "
                             f"{b.as_tuple()}.", "download the DEM tiles of the whole region (docs/data.md).")
        m = DEM_MARGIN_CELLS * res
        from sm1km.storage.readers.limits import check_read_window

        check_read_window(paths[0], int((b.east - b.west + 2 * m) / abs(ds_list[0].res[0])) + 1,
                          int((b.north - b.south + 2 * m) / abs(ds_list[0].res[1])) + 1)
        bounds = (max(b.west - m, w), max(b.south - m, s), min(b.east + m, e), min(b.north + m, n))
        try:
            arr, transform = merge(ds_list, bounds=bounds, nodata=np.nan, dtype="float64", res=ds_list[0].res)
        except Exception as exc:
            raise InputError(paths[0], f"cannot read or mosaic the DEM ({type(exc).__name__}: {exc}).",
                             "re-download the tiles; they must share one CRS and resolution.") from None
    finally:
        for ds in ds_list:
            ds.close()
    z = arr[0].astype(np.float64)
    z[~np.isfinite(z)] = np.nan
    if not np.isfinite(z).any():
        raise InputError(paths[0], "the DEM has no valid value over the region.", "check the tiles.")
    if np.nanmin(z) < -500 or np.nanmax(z) > 9000:
        raise InputError(paths[0], f"DEM values {np.nanmin(z):.0f}…{np.nanmax(z):.0f} are not elevations in metres.",
                         "use a DEM in metres whose no-data value is set.")
    return z, transform


def _write(path: str, data: np.ndarray, transform: Any, nodata: float, units: str, desc: str) -> None:
    import rasterio

    h, w = data.shape
    profile = dict(driver="GTiff", height=h, width=w, count=1, dtype=data.dtype.name, crs="EPSG:4326",
                   transform=transform, nodata=nodata, compress="deflate",
                   predictor=3 if data.dtype.kind == "f" else 2)
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(1, units=units, long_name=desc)
        dst.set_band_description(1, desc)
        dst.set_band_unit(1, units)


def _terrain(paths: list[str], region: grid.Region, factor: int, keys: set[str], tmp: str) -> dict[str, np.ndarray]:
    from sm1km.storage.readers.rasters import read_raster

    z, t = _dem_mosaic(paths, region)
    lat = t.f + t.e * (np.arange(z.shape[0]) + 0.5)
    native: dict[str, np.ndarray] = {"elevation": z}
    if "slope" in keys:
        native["slope"] = terrain.slope_deg(z, lat, t.e, t.a)
    if "twi" in keys:
        native["twi"] = terrain.twi(z, lat, t.e, t.a)
    out = {}
    for k in keys:
        p = os.path.join(tmp, f"{k}_native.tif")
        a = native[k].astype(np.float32)
        _write(p, a, t, np.nan, _ATTRS[k][0], k)
        out[k] = read_raster(p, region, factor, "average", integer_scale=None).values
    return out


# --------------------------------------------------------------------------------------------
# soil, land cover
# --------------------------------------------------------------------------------------------
def _first_valid(arrays: list[np.ndarray]) -> np.ndarray:
    out = arrays[0].copy()
    for a in arrays[1:]:
        out = np.where(np.isnan(out), a, out)
    return out


def _units_tag(path: str) -> str:
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return ((ds.units[0] if ds.units else "") or ds.tags(1).get("units") or ds.tags().get("units") or "")
    except Exception:
        return ""


def _soil(paths: list[str], what: str, region: grid.Region, factor: int) -> np.ndarray:
    from sm1km.storage.readers.rasters import read_raster

    for p in paths:
        u = _units_tag(p).strip().lower()
        if u in ("%", "percent", "pct"):
            raise InputError(p, f"the {what} raster is in percent; SoilGrids serves g/kg.",
                             "use the SoilGrids GeoTIFF as downloaded (g/kg), docs/data.md.")
    g = _first_valid([read_raster(p, region, factor, "average", integer_scale=None).values for p in paths])
    if np.isfinite(g).any() and (np.nanmin(g) < 0 or np.nanmax(g) > 1000 + 1e-3):
        raise InputError(paths[0], f"{what} values {np.nanmin(g):.1f}…{np.nanmax(g):.1f} are not g/kg (0-1000).",
                         "use the SoilGrids GeoTIFF as downloaded (g/kg), docs/data.md.")
    return g


def _mode_warp(path: str, region: grid.Region, factor: int) -> tuple[np.ndarray | None, float | None]:
    """The class map's mode on the fine grid of ``region`` by GDAL's warper (a WarpedVRT): it reads the
    source in chunks, so a 10 m WorldCover tile (36 000² classes) needs no window in memory.
    (None, nodata) for a raster outside the region."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    lat, lon = grid.region_coords(region, factor)
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(path, "the land-cover raster has no CRS.", "use the file as downloaded.")
            nodata = ds.nodata
            b = region.bbox
            from rasterio.warp import transform_bounds

            lw, ls, le, ln = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
            if le <= b.west or lw >= b.east or ln <= b.south or ls >= b.north:
                return None, nodata  # a tile of the glob outside the region
            with WarpedVRT(ds, crs="EPSG:4326", transform=grid.FineGrid(factor).transform(region),
                           width=lon.size, height=lat.size, resampling=Resampling.mode,
                           src_nodata=nodata, nodata=nodata if nodata is not None else 0) as vrt:
                raw = vrt.read(1, masked=True).astype(np.float32).filled(np.nan)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot read the land-cover raster ({type(exc).__name__}: {exc}).",
                         "re-download the file.") from None
    return raw, nodata


def _land_cover(paths: list[str], scheme: str, region: grid.Region, factor: int) -> np.ndarray:


    hdf = [p for p in paths if p.lower().endswith(".hdf")]
    if hdf:  # MCD12Q1 granules as LP DAAC serves them: the MODIS reader mosaics the tiles (mode)
        from sm1km.storage.readers.modis import read_modis

        if scheme != "mcd12q1" or len(hdf) != len(paths):
            raise InputError(hdf[0], "MODIS .hdf land cover is MCD12Q1 LC_Type1 (IGBP), alone.",
                             "set inputs.predictor_sources.land_cover_scheme: mcd12q1 and pass only the "
                             "MCD12Q1 granules of one year.")
        raw = read_modis(hdf, region, factor, "land_cover").values
        bad = terrain.unknown_classes(raw, scheme)
        if bad:
            raise InputError(hdf[0], f"class values {bad[:10]} are not IGBP classes.", "pass MCD12Q1 granules.")
        return terrain.map_land_cover(raw, scheme)
    arrays = []
    for p in paths:
        warped, nodata = _mode_warp(p, region, factor)
        if warped is None:
            continue
        bad = terrain.unknown_classes(warped, scheme, nodata)
        if bad:
            raise InputError(p, f"class values {bad[:10]} are not {scheme} classes.",
                             "set inputs.predictor_sources.land_cover_scheme to the file's scheme "
                             "(worldcover | mcd12q1).")
        arrays.append(np.where(np.isin(warped, [nodata]) if nodata is not None else False, np.nan, warped))
    if not arrays:
        raise InputError(paths[0] if len(paths) == 1 else f"{len(paths)} land-cover files",
                         f"no land-cover raster overlaps the region {region.bbox.as_tuple()}.",
                         "pass the tiles of the run's region (docs/data.md).")
    return terrain.map_land_cover(_first_valid(arrays), scheme)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
#: bump when the derivation changes (a new digest: every output is re-derived)
RECIPE_VERSION = 1
MARKER_SUFFIX = ".sources.json"


def _target_options(cfg) -> dict[str, Any]:
    st = cfg.inputs.storage
    return st.storage_options() if st is not None else cfg.store.storage_options()


def _digest(cfg, key: str) -> str:
    """What an output is derived from: its sources (name, size, mtime), the scheme, the grid, the recipe."""
    import hashlib
    import json

    src = cfg.inputs.predictor_sources
    s = OUTPUT_SOURCE[key]
    files = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in _expand(getattr(src, s), s)]
    doc = {"recipe": RECIPE_VERSION, "key": key, "files": files, "region": [cfg.coarse_region.row0, cfg.coarse_region.row1,
                                                                   cfg.coarse_region.col0, cfg.coarse_region.col1],
           "factor": cfg.grid.factor, "scheme": src.land_cover_scheme if key == "land_cover" else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _marker(digest: str) -> bytes:
    import json

    return (json.dumps({"sources_sha256": digest, "recipe": RECIPE_VERSION}, sort_keys=True) + "\n").encode()


def _read(url: str, opts: dict[str, Any]) -> bytes | None:
    from sm1km.storage import store

    fs, path = store.filesystem(url, opts if "://" in url else None)
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None


def _exists(url: str, opts: dict[str, Any]) -> bool:
    from sm1km.storage import store

    fs, path = store.filesystem(url, opts if "://" in url else None)
    return bool(fs.exists(path))


def predictors(cfg) -> StageResult:
    """Derive the static predictor GeoTIFFs (see the module docstring); ``{key: path}`` + stats.

    Each output has a marker ``<file>.sources.json`` (the digest of its sources, grid and recipe),
    written before the file: an output whose file exists and whose marker matches is skipped; one
    whose marker differs has its old file removed first, so a run killed in between re-derives it.
    """
    import rasterio

    from sm1km.storage import store

    targets = _targets(cfg)
    opts = _target_options(cfg)
    digests = {k: _digest(cfg, k) for k in targets}
    todo = {k: t for k, t in targets.items()
            if not (_read(t + MARKER_SUFFIX, opts) == _marker(digests[k]) and _exists(t, opts))}
    src = cfg.inputs.predictor_sources
    region, factor = cfg.coarse_region, cfg.grid.factor
    transform = grid.FineGrid(factor).transform(region)
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="sm1km-predictors-") as tmp, rasterio.Env():
        dem_keys = {k for k in todo if OUTPUT_SOURCE[k] == "dem"}
        if dem_keys:
            arrays.update(_terrain(_expand(src.dem, "dem"), region, factor, dem_keys, tmp))
        soil_keys = [k for k in ("clay", "sand") if k in todo]
        if soil_keys:  # both checked together (percent detection), also when only one is to redo
            soil = {k: _soil(_expand(getattr(src, k), k), k, region, factor) for k in ("clay", "sand") if k in targets}
            if "clay" in soil and "sand" in soil:
                tot = soil["clay"] + soil["sand"]
                if np.isfinite(tot).any() and np.nanmax(tot) <= 100:
                    raise InputError(f"{src.clay} / {src.sand}", f"clay + sand never exceeds {np.nanmax(tot):.1f} "
                                     "over the region: the files look like percent, SoilGrids serves g/kg (clay + "
                                     "sand + silt = 1000).", "use the SoilGrids GeoTIFFs as downloaded (g/kg), "
                                     "docs/data.md.")
            for soil_key in soil_keys:
                arrays[soil_key] = soil[soil_key] / 1000.0
        if "land_cover" in todo:
            arrays["land_cover"] = _land_cover(_expand(src.land_cover, "land_cover"), src.land_cover_scheme,
                                               region, factor)
        # everything is computed: now write, each output marker first, then its file atomically
        for k, path in todo.items():
            marker = _marker(digests[k])
            if _read(path + MARKER_SUFFIX, opts) != marker:
                if _exists(path, opts):
                    fs, p = store.filesystem(path, opts if "://" in path else None)
                    fs.rm_file(p)
                if "://" not in path:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                store.put_atomic(path + MARKER_SUFFIX, marker, opts if "://" in path else None)
            units, desc = _ATTRS[k]
            local = path + ".part" if "://" not in path else os.path.join(tmp, f"{k}.tif")
            if k == "land_cover":
                _write(local, arrays[k].astype(np.uint8), transform, terrain.LC_NODATA, units, desc)
            else:
                _write(local, arrays[k].astype(np.float32), transform, np.nan, units, desc)
            if "://" in path:
                store.put_atomic(path, Path(local).read_bytes(), opts)
            else:
                os.replace(local, path)
            log.info("predictors: wrote %s (%s)", path, k)
    stats = {"units_written": len(todo), "units_skipped": len(targets) - len(todo),
             "valid_fraction": {k: float(np.isfinite(a).mean()) if a.dtype.kind == "f"
                                else float((a != terrain.LC_NODATA).mean()) for k, a in arrays.items()}}
    return StageResult(dict(targets), stats)
