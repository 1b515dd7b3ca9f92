"""``sm1km validate``: metrics of every product against stations (and the synthetic truth), and a
report a scientist can read: ``<root>/report/metrics.json`` + ``index.html`` + PNG figures.

metrics.json contract (other tools read it; extend, don't rename): ``fusion``, ``model``,
``stations``, ``truth`` (synthetic only), ``published``, ``outputs``.

:func:`validate` is the entry point; the parts are modules of this package: the fusion's
withheld-observation experiment (:mod:`~sm1km.validation.withheld`), the truth metrics
(:mod:`~sm1km.validation.truth`), the station metrics (:mod:`~sm1km.validation.stations`) and the
HTML report with its figures (:mod:`~sm1km.validation.report`).
"""

from __future__ import annotations

import logging
from typing import Any

from sm1km.config import RunConfig
from sm1km.runtime.result import StageResult
from sm1km.storage import store
from sm1km.storage.metrics_json import read_metrics_json, update_metrics_json
from sm1km.validation.report import PUBLISHED, headline, write_report
from sm1km.validation.stations import station_section
from sm1km.validation.truth import truth_metrics
from sm1km.validation.withheld import withheld_experiment

log = logging.getLogger(__name__)




# ------------------------------------------------------------------------------------- stage
def validate(cfg: RunConfig, client=None, run_withheld: bool = True) -> StageResult:
    """Compute all metrics sections, draw the figures, write the report; returns report URLs
    (``{"metrics", "report"}``; ``.stats``: units = the report's files, all written each time,
    and ``sections`` = the sections metrics.json holds)."""
    so = cfg.store.storage_options()
    metrics = read_metrics_json(cfg)

    # fusion: the withheld-observation experiment (run once; fuse --withhold may have done it)
    if run_withheld and "withheld" not in metrics.get("fusion", {}):
        try:
            withheld_experiment(cfg, fraction=0.2, client=client)
        except Exception as exc:  # the experiment needs the ingested cubes
            log.warning("withheld-observation experiment failed: %s", exc)

    # model: copy the CV results from the model card (train wrote them too; the card is the source)
    card = _model_card(cfg, so)
    if card and "cv" in card:
        model_section = dict(card["cv"])
        model_section.setdefault("default_algorithm", card.get("algorithm"))
        update_metrics_json(cfg, "model", model_section)

    # stations: the final 1 km product against every station, with baselines at the same stations
    section, series, per_station = station_section(cfg, so)
    if section is not None:
        update_metrics_json(cfg, "stations", section)

    # truth (synthetic world only)
    if cfg.inputs.truth:
        try:
            update_metrics_json(cfg, "truth", truth_metrics(cfg, client=client))
        except Exception as exc:
            log.warning("truth metrics failed: %s", exc)

    update_metrics_json(cfg, "published", PUBLISHED)
    update_metrics_json(cfg, "outputs", _outputs(cfg, so))
    metrics = read_metrics_json(cfg)

    report_url = cfg.store.url("report")
    files = write_report(cfg, so, metrics, series, per_station, card)
    log.info("report written to %s/index.html", report_url)
    stats = {"units_total": len(files), "units_written": len(files), "units_skipped": 0,
             "sections": sorted(metrics)}
    return StageResult({"metrics": store.join(report_url, "metrics.json"),
                        "report": store.join(report_url, "index.html")}, stats)


def _model_card(cfg: RunConfig, so) -> dict | None:
    url = cfg.model_path.rsplit(".", 1)[0] + ".json"
    return store.read_json(url, so)


def _outputs(cfg: RunConfig, so) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rel in (("fused", "fused.zarr"), ("master", "master.zarr"), ("monthly", "monthly.zarr")):
        url = cfg.store.url(rel)
        if store.exists(url, so):
            out[key] = url
    if cfg.inputs.truth:
        out["truth"] = cfg.inputs.truth
    for fmt, pattern in (("geotiff", "**/*.tif"), ("hdf5", "**/*.h5"), ("netcdf", "**/*.nc")):
        fs, path = store.filesystem(cfg.store.url("exports"), so)
        found = sorted(fs.glob(f"{path}/{pattern}")) if fs.exists(path) else []
        prefix = cfg.store.url("exports")
        out[fmt] = [prefix + p[len(path):] for p in found]
    out["model"] = cfg.model_path
    out["model_card"] = cfg.model_path.rsplit(".", 1)[0] + ".json"
    return out


# ------------------------------------------------------------------------------------- CLI


__all__ = ["validate", "headline"]
