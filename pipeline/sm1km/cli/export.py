"""``sm1km export --config run.yaml --format geotiff|hdf5|netcdf``: deliverable files from the master.

Calls :func:`sm1km.stages.export.export` under the store's run lock; prints one file URL per line.
A re-run writes only what is missing or out of date (docs/exports.md, "Growing exports").
"""

from __future__ import annotations

import sys

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    from sm1km.stages.export import FORMATS, LAYOUTS, PERIODS, PRODUCTS
    from sm1km.stages.export.common import DEFAULT_WINDOW_PIXELS
    from sm1km.stages.export.geotiff import COMPRESSIONS

    add_config_argument(p)
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="geotiff", help="file format (default geotiff)")
    p.add_argument("--product", choices=PRODUCTS, default="daily", help="daily (master.zarr) or monthly (monthly.zarr)")
    p.add_argument("--start", help="first day to export (YYYY-MM-DD; default: the store's first)")
    p.add_argument("--end", help="last day to export (YYYY-MM-DD, inclusive; default: the store's last)")
    p.add_argument("--bbox", metavar="W,S,E,N", help="export only this box (degrees)")
    p.add_argument("--layout", choices=LAYOUTS, default="latlon",
                   help="latlon (the master grid) or modis-sinusoidal (daily HDF5 per MODIS tile and year)")
    p.add_argument("--out", metavar="URL", help="output folder: path or s3://bucket/prefix "
                                                "(default <store.root>/exports/<format>)")
    p.add_argument("--with-uncertainty", action="store_true",
                   help="also export sm_uncertainty (GeoTIFF band 2; HDF5/netCDF variable sm_uncertainty)")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite every file (default: only files missing or out of date with the store)")
    p.add_argument("--file-period", choices=PERIODS, default=None,
                   help="netcdf: one file per month or per year (default: the config's export.netcdf.period, "
                        "else month for daily, year for monthly)")
    p.add_argument("--compress", choices=COMPRESSIONS, default="deflate", help="GeoTIFF compression (default deflate)")
    p.add_argument("--blocksize", type=int, default=512, help="GeoTIFF tile size in pixels (default 512)")
    p.add_argument("--files-per-task", type=int, default=None,
                   help="daily GeoTIFF: days per task (default: the master's time chunk, bounded by scratch)")
    p.add_argument("--window-pixels", type=int, default=DEFAULT_WINDOW_PIXELS,
                   help=f"read budget per window in pixels x days (default {DEFAULT_WINDOW_PIXELS})")


@locked_cli("export")
def run(args) -> int:
    from sm1km.stages.export import export

    cfg = load_config(args)
    files = export(cfg, fmt=args.fmt, product=args.product, start=args.start, end=args.end, bbox=args.bbox,
                   out=args.out, layout=args.layout, with_uncertainty=args.with_uncertainty,
                   overwrite=args.overwrite, window_pixels=args.window_pixels, blocksize=args.blocksize,
                   compress=args.compress, files_per_task=args.files_per_task, file_period=args.file_period)
    for f in files["files"]:
        sys.stdout.write(f + "\n")
    return 0
