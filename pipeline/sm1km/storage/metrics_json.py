"""The shared ``report/metrics.json``: every stage owns one top-level key (read-modify-write)."""

from __future__ import annotations

import json
import logging
import math
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sm1km.config import RunConfig

log = logging.getLogger(__name__)

def jsonable(obj: Any) -> Any:
    """Plain-JSON copy of ``obj``: numpy scalars → Python, non-finite floats → None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def metrics_json_url(cfg: RunConfig) -> str:
    return cfg.store.url("report", "metrics.json")


def read_metrics_json(cfg: RunConfig) -> dict[str, Any]:
    """The current ``<root>/report/metrics.json`` ({} if absent)."""
    from sm1km.errors import StoreError
    from sm1km.storage.store import filesystem

    url = metrics_json_url(cfg)
    fs, path = filesystem(url, cfg.store.storage_options())
    if not fs.exists(path):
        return {}
    try:
        doc: dict[str, Any] = json.loads(fs.cat_file(path).decode("utf-8"))
        return doc
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(url, f"metrics.json is not valid JSON ({exc}).",
                         "remove or repair the file; stages re-write their own sections.") from None


def update_metrics_json(cfg: RunConfig, section: str, data: Mapping[str, Any]) -> str:
    """Read-modify-write ``<root>/report/metrics.json``: replace key ``section``, keep the others.

    Non-finite numbers become ``null``; keys are sorted so the file is reproducible. Local files
    are replaced atomically (write + rename); an S3 PUT is atomic by itself. Returns the URL.
    """
    from sm1km.storage.store import filesystem, is_remote

    url = metrics_json_url(cfg)
    fs, path = filesystem(url, cfg.store.storage_options())
    current = read_metrics_json(cfg)
    current[str(section)] = jsonable(dict(data))
    payload = (json.dumps(current, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    if is_remote(url):
        fs.pipe_file(path, payload)
    else:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with fs.open(tmp, "wb") as f:
            f.write(payload)
        fs.mv(tmp, path)
    log.info("metrics.json: section %r written to %s", section, url)
    return url
