"""The 1 km master against the synthetic world's 1 km truth (``metrics.json`` → ``truth``).

One task per master shard (the downscale plan, :func:`sm1km.stages.downscale.shard_specs`): it
reads the shard's packed values (decoded as xarray decodes them), the truth and the fused 25 km
block, and returns mergeable moments (:func:`sm1km.core.metrics.truth_shard_moments`); the
driver merges them, so nothing global is ever in memory. ``sm1km downscale --truth-metrics`` and
``sm1km validate`` both call :func:`truth_metrics`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import numpy as np
import pandas as pd

from sm1km.core.grid import FineGrid
from sm1km.core.metrics import Moments, truth_shard_moments
from sm1km.errors import InputError
from sm1km.runtime.client import stage_client
from sm1km.runtime.runner import run_tasks
from sm1km.runtime.units import WorkUnit
from sm1km.stages.downscale import check_space, shard_specs, time_offset
from sm1km.storage import master, store

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TruthContext:
    master_url: str
    truth_url: str
    fused_url: str
    storage_options: dict
    truth_t0: int
    fused_t0: int


def _truth_task(spec: WorkUnit, ctx: TruthContext) -> dict[str, tuple]:
    from sm1km.core.encoding import decode_int16

    so = ctx.storage_options
    y, x = spec.fine
    t0, t1 = spec.time_bounds
    q = np.asarray(store.array(store.open_group(ctx.master_url, so), "sm")[t0:t1, y, x])
    product = decode_int16(q, dtype=np.float64)  # as xarray decodes it (float64 scale_factor)
    truth = np.asarray(store.open_dataset(ctx.truth_url, so)["sm"].isel(
        time=slice(ctx.truth_t0 + t0, ctx.truth_t0 + t1), lat=y, lon=x).values, dtype=np.float32)
    fused = np.asarray(store.open_dataset(ctx.fused_url, so)["sm"].isel(
        time=slice(ctx.fused_t0 + t0, ctx.fused_t0 + t1), lat=slice(spec.r0, spec.r1),
        lon=slice(spec.c0, spec.c1)).values, dtype=np.float32)
    baseline = np.repeat(np.repeat(fused, spec.factor, axis=1), spec.factor, axis=2)
    return truth_shard_moments(product, truth, baseline, spec.factor)


def truth_url(cfg) -> str | None:
    """The synthetic truth store of a run: ``inputs.truth``, else ``<root>/truth.zarr`` if present."""
    if cfg.inputs.truth:
        return cfg.inputs.truth
    url = cfg.store.url("truth.zarr")
    return url if store.exists(url, cfg.store.storage_options()) else None


def truth_metrics(cfg, client=None, *, max_in_flight: int | None = None) -> dict[str, Any]:
    """ubRMSE, R, bias (and RMSE, n) of the 1 km master and of the 25 km baseline (fused value
    repeated over its 1 km pixels) against the 1 km truth, pooled over all land pixel-days; plus
    ``spatial_anomaly_r`` (and ``_rmse``): agreement of sub-cell anomalies (value minus its 25 km
    cell mean). Computed per master shard, merged from sufficient statistics."""
    so = cfg.store.storage_options()
    turl = truth_url(cfg)
    if turl is None:
        raise InputError("inputs.truth", "no truth store for this run (synthetic world only).",
                         "set inputs.truth to the synthetic world's truth.zarr.")
    dates = pd.DatetimeIndex(cfg.dates())
    region, factor = cfg.coarse_region, cfg.grid.factor
    truth = store.open_dataset(turl, so)
    check_space(turl, truth, float(FineGrid(factor).lat(region.row0 * factor)), region.n_rows * factor,
                region.n_cols * factor)
    furl = cfg.store.url("fused.zarr")
    ctx = TruthContext(master_url=cfg.store.url(master.MASTER_STORE), truth_url=turl, fused_url=furl,
                       storage_options=so, truth_t0=time_offset(turl, truth, dates),
                       fused_t0=time_offset(furl, store.open_dataset(furl, so), dates))
    acc = {k: Moments() for k in ("downscaled", "baseline_25km", "anomaly_downscaled", "anomaly_baseline_25km")}
    with stage_client(cfg, client) as c:
        for res in run_tasks(c, functools.partial(_truth_task, ctx=ctx), shard_specs(cfg), window=max_in_flight,
                             name="truth_metrics", ordered=True):  # merged in plan order: same bits every run
            for k, tup in res.items():
                acc[k] = acc[k].merge(Moments(*tup))
    out: dict[str, Any] = {}
    for name in ("downscaled", "baseline_25km"):
        d = acc[name].to_dict()
        a = acc[f"anomaly_{name}"].to_dict()
        d["spatial_anomaly_r"] = a["r"]
        d["spatial_anomaly_rmse"] = a["rmse"]
        out[name] = d
    out["truth"] = turl
    out["definition"] = ("pooled over land pixel-days of the run; baseline_25km = fused 25 km value repeated over "
                         "its 1 km pixels; spatial anomaly = value minus the mean of its 25 km cell on that day")
    return out


def write_truth_metrics(cfg, client=None) -> str:
    """Compute :func:`truth_metrics` and write them as the ``truth`` section of metrics.json."""
    from sm1km.storage.metrics_json import update_metrics_json

    m = truth_metrics(cfg, client)
    d, b = m["downscaled"], m["baseline_25km"]
    log.info("vs 1 km truth: ubRMSE %.4f (1 km) vs %.4f (25 km baseline); R %.3f vs %.3f; spatial anomaly R %.3f",
             d["ubrmse"], b["ubrmse"], d["r"], b["r"], d["spatial_anomaly_r"])
    return update_metrics_json(cfg, "truth", m)


__all__ = ["truth_metrics", "write_truth_metrics", "truth_url"]
