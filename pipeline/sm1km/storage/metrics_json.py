"""The shared ``report/metrics.json``: every stage owns one top-level key (read-modify-write).

:func:`jsonable` is sm1km's one JSON cleaner (numpy scalars and arrays → Python, non-finite floats
→ ``null``), used for every section of this file, for the model card and for ``sm1km inspect``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from sm1km.errors import StoreError
from sm1km.storage import store

if TYPE_CHECKING:
    from sm1km.config import RunConfig

log = logging.getLogger(__name__)


def jsonable(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """Plain-JSON copy of ``obj``: numpy scalars → Python, non-finite floats → None.

    Mappings become dicts with ``str`` keys, lists/tuples/arrays lists. ``default``, if given, is
    applied to every other leaf (e.g. to turn ``numpy.datetime64`` into a date string).
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, default) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), default)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj if default is None else default(obj)


def metrics_json_url(cfg: RunConfig) -> str:
    return cfg.store.url("report", "metrics.json")


def read_metrics_json(cfg: RunConfig) -> dict[str, Any]:
    """The current ``<root>/report/metrics.json`` ({} if absent)."""
    url = metrics_json_url(cfg)
    try:
        current = store.read_json(url, cfg.store.storage_options())
    except ValueError as exc:
        raise StoreError(url, f"metrics.json is not valid JSON ({exc}).",
                         "remove or repair the file; stages re-write their own sections.") from None
    return {} if current is None else current


def update_metrics_json(cfg: RunConfig, section: str, data: Mapping[str, Any]) -> str:
    """Read-modify-write ``<root>/report/metrics.json``: replace key ``section``, keep the others.

    Non-finite numbers become ``null``; keys are sorted so the file is reproducible. The file is
    replaced in one atomic put (:func:`sm1km.storage.store.put_atomic`). Returns the URL.
    """
    url = metrics_json_url(cfg)
    current = read_metrics_json(cfg)
    current[str(section)] = jsonable(dict(data))
    store.write_json(url, current, cfg.store.storage_options(), indent=2, allow_nan=False, newline=True)
    log.info("metrics.json: section %r written to %s", section, url)
    return url
