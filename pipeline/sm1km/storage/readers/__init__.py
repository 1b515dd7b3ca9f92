"""Input readers, one module per format; each returns xarray objects in physical units.

* :func:`read_cci_day` — ESA CCI SM daily netCDF (COMBINED/ACTIVE/PASSIVE, v02…v08+)
* :func:`read_era5` — ERA5 ``swvl1`` netCDF (old and new CDS layouts) or GRIB, daily on CCI centres
* :func:`read_ismn_file`, :func:`read_ismn` — ISMN downloads (Header+values, CEOP; folders, zips)
* :func:`read_raster`, :func:`raster_date` — GeoTIFF/MODIS predictors on the fine grid
* :func:`read_modis`, :func:`describe_granule` — MODIS HDF4-EOS granules (pyhdf; tile mosaics)
* :func:`detect_kind` — which of the above a file is

All raise :class:`~sm1km.errors.InputError` (where, problem, fix) for unusable files.
"""

from sm1km.storage.readers.cci import count_valid_sm, parse_cci_filename, read_cci_day
from sm1km.storage.readers.detect import detect_kind
from sm1km.storage.readers.era5 import read_era5, read_lsm
from sm1km.storage.readers.ismn import StationRecord, daily_means, read_ismn, read_ismn_file
from sm1km.storage.readers.modis import describe_granule, read_modis
from sm1km.storage.readers.rasters import raster_date, raster_stats, read_raster

__all__ = [
    "read_cci_day", "count_valid_sm", "parse_cci_filename", "read_era5", "read_lsm", "read_ismn",
    "read_ismn_file", "daily_means", "StationRecord", "read_raster", "raster_date", "raster_stats",
    "detect_kind", "read_modis", "describe_granule",
]
