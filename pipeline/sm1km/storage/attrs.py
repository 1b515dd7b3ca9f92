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


def now_iso() -> str:
    """UTC now as ISO 8601 (or SOURCE_DATE_EPOCH when set, for reproducible outputs)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def provenance_attrs(cfg: RunConfig | None = None, *, title: str, summary: str = "", inputs: Iterable[Mapping[str, Any]] = (),
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CF/ACDD global attributes + sm1km provenance. ``inputs``: dicts with name and sha256."""
    created = now_iso()
    attrs: dict[str, Any] = {
        "Conventions": CONVENTIONS,
        "title": title,
        "summary": summary,
        "institution": "sm1km project",
        "source": "ESA CCI SM COMBINED + ERA5 swvl1 fusion; XGBoost downscaling trained on ISMN",
        "references": "Zheng, Jia & Zhao (2023), Sci. Data 10:139, doi:10.1038/s41597-023-01991-w",
        "sm1km_version": __version__,
        "date_created": created,
        "history": f"{created} created by sm1km {__version__}",
    }
    if cfg is not None:
        attrs["sm1km_config"] = json.dumps(cfg.redacted(), sort_keys=True)
        b = cfg.coarse_region.bbox
        attrs.update(geospatial_lat_min=b.south, geospatial_lat_max=b.north,
                     geospatial_lon_min=b.west, geospatial_lon_max=b.east)
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
