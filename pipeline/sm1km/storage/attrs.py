"""What every store says about itself: CF-1.8/ACDD-1.3 global attributes with sm1km provenance,
ARCO-style coverage attributes, and the encoding of a packed int16 soil-moisture variable.

Pure functions (no I/O): the stages pass their results to :mod:`sm1km.storage.store`
(``create_template`` / ``finalize``). Timestamps (``date_created``, ``last_updated``) honour
``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) so that two runs can be compared byte
for byte.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from sm1km._version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from sm1km.config import RunConfig

CONVENTIONS = "CF-1.8, ACDD-1.3"
#: the data licence of every product (the code is MIT; that is not a data licence). The STAC
#: catalogue (stages/catalog.py) states the same SPDX id.
DATA_LICENSE = "CC-BY-4.0"
CREATOR_NAME = "sm1km project"
CREATOR_URL = "https://github.com/sm1km/sm1km"
CREATOR_TYPE = "group"
NAMING_AUTHORITY = "io.github.sm1km"
KEYWORDS = "soil moisture, downscaling, ESA CCI, ERA5, 1 km, daily"
#: ACDD-1.3 "highly recommended" global attributes: every store and export carries all of them
ACDD_HIGHLY_RECOMMENDED = ("title", "summary", "keywords", "Conventions")
#: ACDD-1.3 "recommended" attributes sm1km always writes (tests/test_cf_compliance.py checks both)
ACDD_RECOMMENDED = ("id", "naming_authority", "history", "source", "license", "institution", "creator_name",
                    "creator_url", "date_created", "geospatial_lat_min", "geospatial_lat_max",
                    "geospatial_lon_min", "geospatial_lon_max", "geospatial_lat_units", "geospatial_lon_units",
                    "time_coverage_start", "time_coverage_end")


def now_iso() -> str:
    """UTC now as ISO 8601 (or SOURCE_DATE_EPOCH when set, for reproducible outputs)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def product_id(name: str) -> str:
    """ACDD ``id`` of a product (unique within :data:`NAMING_AUTHORITY`): ``sm1km.<name>``."""
    return f"sm1km.{name}"


def bbox_attrs(south: float, north: float, west: float, east: float) -> dict[str, Any]:
    """ACDD geospatial bounds (cell EDGES, not centres) with their units, as numbers and as a WKT
    polygon; the vertical extent is the product's soil layer (0-5 cm, depth positive down)."""
    s, n, w, e = float(south), float(north), float(west), float(east)
    return {"geospatial_lat_min": s, "geospatial_lat_max": n, "geospatial_lon_min": w, "geospatial_lon_max": e,
            "geospatial_lat_units": "degrees_north", "geospatial_lon_units": "degrees_east",
            "geospatial_bounds": f"POLYGON(({s!r} {w!r}, {n!r} {w!r}, {n!r} {e!r}, {s!r} {e!r}, {s!r} {w!r}))",
            "geospatial_bounds_crs": "EPSG:4326",
            "geospatial_vertical_min": 0.0, "geospatial_vertical_max": 0.05, "geospatial_vertical_units": "m",
            "geospatial_vertical_positive": "down"}


def edges_bbox(lat: np.ndarray, lon: np.ndarray) -> dict[str, Any]:
    """:func:`bbox_attrs` of regular centre coordinates (half a cell out on every side)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    dy = abs(float(lat[1] - lat[0])) if lat.size > 1 else 0.0
    dx = abs(float(lon[1] - lon[0])) if lon.size > 1 else 0.0
    return bbox_attrs(float(lat.min()) - dy / 2, float(lat.max()) + dy / 2,
                      float(lon.min()) - dx / 2, float(lon.max()) + dx / 2)


def valid_range(dtype: Any, lo: float, hi: float) -> np.ndarray:
    """CF ``valid_range`` in the variable's own type (CF 2.5.1: same type as the variable)."""
    return np.array([lo, hi], dtype=np.dtype(dtype))


#: variable attributes CF wants in the variable's own type (CF 2.5.1, 8.1). Zarr attributes are JSON
#: (no numeric type): netCDF/HDF5 writers type them with :func:`typed_var_attrs`.
TYPED_ATTRS = ("valid_range", "valid_min", "valid_max", "flag_values", "missing_value")


def typed_var_attrs(attrs: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """``attrs`` with those of :data:`TYPED_ATTRS` cast to ``dtype`` (the variable's on-disk type)."""
    out = dict(attrs)
    for k in TYPED_ATTRS:
        if k in out and out[k] is not None and not isinstance(out[k], str):
            out[k] = np.asarray(out[k]).astype(np.dtype(dtype))
    return out


def provenance_attrs(cfg: RunConfig | None = None, *, title: str, summary: str = "", inputs: Iterable[Mapping[str, Any]] = (),
                     extra: Mapping[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    """CF/ACDD global attributes + sm1km provenance. ``inputs``: dicts with name and sha256.

    ``name`` (e.g. ``"master"``) gives the ACDD ``id`` (:func:`product_id`); the licence,
    creator, naming authority and keywords are the project's constants above; with ``cfg`` the
    geospatial bounds are the region's cell edges.
    """
    created = now_iso()
    attrs: dict[str, Any] = {
        "Conventions": CONVENTIONS,
        "title": title,
        "summary": summary,
        "keywords": KEYWORDS,
        "license": DATA_LICENSE,
        "creator_name": CREATOR_NAME,
        "creator_url": CREATOR_URL,
        "creator_type": CREATOR_TYPE,
        "publisher_name": CREATOR_NAME,
        "publisher_url": CREATOR_URL,
        "naming_authority": NAMING_AUTHORITY,
        "project": "sm1km",
        "processing_level": "L4 (gap-free, model-downscaled)",
        "acknowledgement": "ESA CCI Soil Moisture (TU Wien), ECMWF ERA5 (Copernicus C3S), ISMN (TU Wien)",
        "institution": "sm1km project",
        "source": "ESA CCI SM COMBINED + ERA5 swvl1 fusion; XGBoost downscaling trained on ISMN",
        "references": "Zheng, Jia & Zhao (2023), Sci. Data 10:139, doi:10.1038/s41597-023-01991-w",
        "sm1km_version": __version__,
        "date_created": created,
        "history": f"{created} created by sm1km {__version__}",
    }
    if cfg is not None:
        attrs["sm1km_config"] = json.dumps(cfg.redacted(), sort_keys=True)
        b = cfg.coarse_region.bbox  # whole 0.25 degree cells: these are edges
        attrs.update(bbox_attrs(b.south, b.north, b.west, b.east))
    if name:
        attrs["id"] = product_id(name)
    inputs = list(inputs)
    if inputs:
        attrs["input_files"] = json.dumps(inputs, sort_keys=True)
    attrs.update(dict(extra or {}))
    return attrs


def coverage_attrs(times: pd.Index | np.ndarray) -> dict[str, str]:
    """ARCO-style coverage: the complete time range and when it was last updated."""
    import pandas as pd

    t = pd.DatetimeIndex(times)
    return {"time_coverage_start": t.min().strftime("%Y-%m-%d"),
            "time_coverage_end": t.max().strftime("%Y-%m-%d"),
            "last_updated": now_iso()}


def cf_int16_encoding(fill: int = -32768, scale: float = 0.001, **extra: Any) -> dict[str, Any]:
    """Encoding of a packed soil-moisture variable: int16, scale 0.001, fill −32768."""
    # zarr's own fill_value too: unwritten chunks must read as fill (NaN), not as a valid 0
    enc = {"dtype": "int16", "scale_factor": scale, "add_offset": 0.0, "_FillValue": np.int16(fill),
           "fill_value": np.int16(fill)}
    enc.update(extra)
    return enc
