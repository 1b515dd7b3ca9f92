"""The withheld-observation experiment: how good is the fusion where CCI did not observe?

``withheld_experiment`` hides a seeded random fraction of the CCI observations
(:func:`sm1km.core.fusion.withheld_mask`, seed ``seeds.withhold``), fuses without them (in
memory, chunk by chunk on the fuse stage's own units and reads; ``fused.zarr`` is not touched)
and scores fused / ERA5 / climatology at the hidden points; with the synthetic world's
``truth_25km.zarr`` also against the truth, at the hidden points and at the real gaps. The result
goes into ``report/metrics.json`` under ``fusion``. Run by ``sm1km fuse --withhold`` and by
``sm1km validate`` (once: it is skipped when metrics.json has it).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sm1km.config import RunConfig
from sm1km.core import fusion as fc
from sm1km.core import grid
from sm1km.core.metrics import Moments
from sm1km.errors import ConfigError, InputError, StoreError
from sm1km.runtime.client import stage_client
from sm1km.runtime.runner import map_tasks
from sm1km.runtime.units import WorkUnit
from sm1km.stages.fuse import FusionInputs, fusion_units, land_mask, open_inputs, positions, read_block, time_indexer
from sm1km.storage import store
from sm1km.storage.metrics_json import update_metrics_json

log = logging.getLogger(__name__)

CLIMATOLOGY_HALF_WINDOW = 15


def truth_25km_url(cfg: RunConfig) -> str | None:
    """``truth_25km.zarr`` beside ``cfg.inputs.truth`` (synthetic world only), else None."""
    if not cfg.inputs.truth:
        return None
    t = cfg.inputs.truth.rstrip("/")
    return t.rsplit("/", 1)[0] + "/truth_25km.zarr" if "/" in t else "truth_25km.zarr"


@dataclass(frozen=True)
class _TruthMap:
    url: str
    storage_options: dict
    time: list
    row_off: int
    col_off: int


def _truth_map(cfg: RunConfig, inp: FusionInputs) -> _TruthMap | None:
    url = truth_25km_url(cfg)
    if url is None:
        return None
    so = cfg.store.storage_options() if store.is_remote(url) else {}
    try:
        ds = store.open_dataset(url, so)
    except StoreError:
        log.warning("withheld experiment: %s not found, so no comparison with the truth", url)
        return None
    lat, lon = ds["lat"].values, ds["lon"].values
    r = (grid.coarse_lat(inp.row0) - lat) * grid.COARSE_PER_DEG
    c = (lon - grid.coarse_lon(inp.col0)) * grid.COARSE_PER_DEG
    r0, c0 = int(np.rint(-r[0])), int(np.rint(-c[0]))
    if not (np.allclose(r, np.rint(r), atol=1e-3) and r0 >= 0 and c0 >= 0 and
            r0 + inp.ny <= lat.size and c0 + inp.nx <= lon.size):
        log.warning("withheld experiment: %s does not cover the region on the 0.25° grid; truth comparison skipped",
                    url)
        return None
    try:
        tpos = positions(url, ds["time"].values, cfg.dates(), "truth_25km.zarr")
    except InputError as exc:
        log.warning("withheld experiment: %s; truth comparison skipped", exc)
        return None
    return _TruthMap(url, so, tpos, r0, c0)


@dataclass(frozen=True)
class WithheldContext:
    """What every block of the experiment needs besides its unit."""

    inputs: FusionInputs
    truth: _TruthMap | None
    fraction: float
    seed: int
    day_numbers: np.ndarray   # days since 1970-01-01 of the run's days (the mask's time coordinate)
    doy: np.ndarray           # day of year of the run's days
    methods: tuple[str, ...]
    min_overlap_days: int
    neighbourhood_cells: int


def _withheld_chunk(unit: WorkUnit, ctx: WithheldContext) -> dict:
    """Moments at the hidden points of one chunk for every estimate (tuples, for pickling)."""
    inp = ctx.inputs
    tm = ctx.truth
    window = unit.grown(ctx.neighbourhood_cells, inp.ny, inp.nx)
    c, e, lf = read_block(inp, window)
    land = land_mask(c, lf)
    obs = np.isfinite(c) & land[None]
    days = ctx.day_numbers
    rows = inp.row0 + np.arange(window.r0, window.r1)
    cols = inp.col0 + np.arange(window.c0, window.c1)
    hidden = fc.withheld_mask(obs, ctx.fraction, ctx.seed, days, rows, cols)
    train = np.where(hidden, np.nan, c)
    doy = ctx.doy
    mo, nb = ctx.min_overlap_days, ctx.neighbourhood_cells
    est = {f"fused_{m}": fc.fuse_block_detailed(train, e, land, m, mo, nb).sm for m in ctx.methods}
    est["era5"] = np.where(land[None], e, np.nan)
    est["climatology"] = fc.doy_climatology(train, doy, CLIMATOLOGY_HALF_WINDOW)

    ys, xs = unit.within(window)
    inner = (slice(None), ys, xs)
    h = hidden[inner]
    out: dict[str, Any] = {"withheld": {k: Moments.from_arrays(v[inner][h], c[inner][h]).as_tuple()
                                        for k, v in est.items()},
                           "counts": {"hidden": int(h.sum()), "observed": int(obs[inner].sum())}}
    if tm is not None:
        tr = store.open_dataset(tm.url, tm.storage_options)["sm"].isel(
            time=time_indexer(tm.time), lat=slice(tm.row_off + unit.r0, tm.row_off + unit.r1),
            lon=slice(tm.col_off + unit.c0, tm.col_off + unit.c1)).values.astype(np.float64)
        out["vs_truth"] = {k: Moments.from_arrays(v[inner][h], tr[h]).as_tuple() for k, v in est.items()}
        out["vs_truth"]["cci"] = Moments.from_arrays(c[inner][h], tr[h]).as_tuple()
        # the real gaps (CCI never observed that day), fused with all observations
        gaps = (land[None] & ~np.isfinite(c))[inner]
        full = {f"fused_{m}": fc.fuse_block_detailed(c, e, land, m, mo, nb).sm for m in ctx.methods}
        full["era5"] = est["era5"]
        full["climatology"] = fc.doy_climatology(c, doy, CLIMATOLOGY_HALF_WINDOW)
        out["vs_truth_gaps"] = {k: Moments.from_arrays(v[inner][gaps], tr[gaps]).as_tuple() for k, v in full.items()}
    return out


def withheld_experiment(cfg: RunConfig, fraction: float = 0.2, client=None, *,
                        methods: tuple[str, ...] = fc.METHODS, write: bool = True) -> dict:
    """Hide ``fraction`` of the CCI observations (seed ``cfg.seeds.withhold``), fuse without them and
    score every estimate at the hidden points. Writes ``report/metrics.json`` → ``fusion``.

    Returns ``{"withheld": {name: {n, r, ubrmse, bias, rmse}}, "vs_truth": {...}, "vs_truth_gaps": {...},
    "default_method": ..., ...}`` with names ``fused`` (= the configured method), ``fused_<method>``,
    ``era5`` (raw, regridded) and ``climatology`` (smoothed CCI day-of-year climatology of the
    non-withheld days); ``vs_truth*`` only when the synthetic truth exists.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError("--withhold", f"the withheld fraction must be in (0, 1), got {fraction}.",
                          "use e.g. --withhold 0.2.")
    default = cfg.fusion.method
    methods = tuple(dict.fromkeys((default, *methods)))
    inp = open_inputs(cfg)
    tm = _truth_map(cfg, inp)
    dates = cfg.dates()
    day_numbers = ((dates - pd.Timestamp("1970-01-01")).days).to_numpy()
    ctx = WithheldContext(inputs=inp, truth=tm, fraction=float(fraction), seed=cfg.seeds.withhold,
                          day_numbers=day_numbers, doy=dates.day_of_year.to_numpy(), methods=methods,
                          min_overlap_days=cfg.fusion.min_overlap_days,
                          neighbourhood_cells=cfg.fusion.neighbourhood_cells)
    with stage_client(cfg, client) as c:
        parts = map_tasks(c, functools.partial(_withheld_chunk, ctx=ctx), list(fusion_units(cfg)),
                          name="withheld_chunk")

    def merged(group: str) -> dict[str, dict]:
        acc: dict[str, Moments] = {}
        for p in parts:
            for k, tup in p.get(group, {}).items():
                acc[k] = acc.get(k, Moments()) + Moments(*tup)
        res = {k: v.to_dict() for k, v in acc.items()}
        if f"fused_{default}" in res:
            res["fused"] = dict(res[f"fused_{default}"])
        return dict(sorted(res.items()))

    withheld = merged("withheld")
    result: dict[str, Any] = {
        "withheld": withheld,
        "default_method": default,
        "fraction": float(fraction),
        "seed": cfg.seeds.withhold,
        "n_observed": sum(p["counts"]["observed"] for p in parts),
        "n_withheld": sum(p["counts"]["hidden"] for p in parts),
        "period": [str(cfg.period.start), str(cfg.period.end)],
        "climatology": f"per-pixel CCI day-of-year mean within ±{CLIMATOLOGY_HALF_WINDOW} days, "
                       "all years pooled, from the non-withheld days (pixel mean where the window is empty)",
    }
    if tm is not None:
        result["vs_truth"] = merged("vs_truth")
        result["vs_truth_gaps"] = merged("vs_truth_gaps")
    fused_scores = {m: withheld[f"fused_{m}"]["ubrmse"] for m in methods if f"fused_{m}" in withheld}
    finite = {m: s for m, s in fused_scores.items() if s is not None and np.isfinite(s)}
    result["best_method"] = min(finite, key=lambda m: finite[m]) if finite else None
    base = [withheld.get(k, {}).get("ubrmse") for k in ("era5", "climatology")]
    d = withheld.get("fused", {}).get("ubrmse")
    result["default_beats_baselines"] = bool(d is not None and np.isfinite(d) and
                                             all(x is None or not np.isfinite(x) or d < x for x in base))
    log.info("withheld experiment (%.0f%% of %d observations hidden): %s", 100 * fraction, result["n_observed"],
             "; ".join(f"{k} ubRMSE={v['ubrmse']:.4f} r={v['r']:.3f}" for k, v in withheld.items()
                       if np.isfinite(v["ubrmse"])))
    if write:
        result["metrics_json"] = update_metrics_json(cfg, "fusion", result)
    return result


__all__ = ["withheld_experiment", "truth_25km_url", "CLIMATOLOGY_HALF_WINDOW"]
