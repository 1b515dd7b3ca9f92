"""Diagnostics of a synthetic world's design: how far its observations are from its truth.

* :func:`world_diagnostics` reads a written world's files (the ISMN, CCI, ERA5 and LST files, the
  truth stores) with the pipeline's own readers and measures what a downscaling model is up
  against: station vs its own 1 km pixel's truth (per-station R, ubRMSE, bias: medians and
  pooled), CCI and ERA5 vs the 25 km truth and vs the stations, how strongly LST reads wetness
  (pooled and as within-cell anomalies), and how cloud gaps go with wet days. It returns a JSON-able
  dict; ``python -m sm1km.synth.diagnostics WORKDIR [--json OUT]`` prints/writes it.
* :func:`render_table` / :func:`update_doc` turn that JSON into the marked table block of
  ``docs/synthetic-world.md`` (so the page's numbers are generated, never copied by hand):
  ``python -m sm1km.synth.diagnostics --doc docs/synthetic-world.md --from docs/synthetic-world-diagnostics.json``.
* :func:`subgrid_skill`: how much of the sub-25 km truth pattern the 1 km predictors explain. The
  target is the anomaly of the 1 km truth from its 0.25° cell mean. A linear model on predictor
  anomalies (static: elevation, slope, TWI, clay, sand, land cover; dynamic: LST day/night, NDVI),
  each also multiplied by the cell-mean soil moisture, is fitted on even days and scored on odd
  days (clear-sky pixel-days). A downscaling model that beats the 25 km baseline needs R² well
  above 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from sm1km.synth import fields as F
from sm1km.synth.observe import predictor_statics
from sm1km.synth.world import STREAM_PREDICTORS, World, rng_for


def _anomaly(a: np.ndarray, factor: int) -> np.ndarray:
    c = F.block_mean(a, factor)
    return a - np.repeat(np.repeat(c, factor, -2), factor, -1)


def subgrid_skill(world: World, max_samples: int = 200_000, seed: int = 0) -> dict:
    """R² and RMSEs of a linear sub-grid model: {'r2', 'r2_static', 'rmse_coarse', 'rmse_downscaled', 'n_test'}.

    Features are gathered only at sampled pixel-days, so memory stays ~ one (time, y, x) array.
    """
    st = world.statics
    f = st.factor
    ps = predictor_statics(st, rng_for(st.seed, STREAM_PREDICTORS))
    land = st.land
    theta = world.theta
    nt, ny, nx = theta.shape
    coarse = np.repeat(np.repeat(F.block_mean(theta, f), f, -2), f, -1).reshape(-1)
    y = theta.reshape(-1) - coarse
    ok = (land[None] & np.isfinite(world.lst_day_k) & np.isfinite(world.lst_night_k)
          & np.isfinite(world.ndvi) & np.isfinite(theta)).reshape(-1)
    day = np.repeat(np.arange(nt), ny * nx)
    rng = np.random.default_rng(seed)
    tr = np.nonzero(ok & (day % 2 == 0))[0]
    te = np.nonzero(ok & (day % 2 == 1))[0]
    tr = np.sort(rng.choice(tr, min(tr.size, max_samples), replace=False))
    te = np.sort(rng.choice(te, min(te.size, max_samples), replace=False))
    idx = np.concatenate([tr, te])
    pix = idx % (ny * nx)
    cols, dynamic = [], []
    for k in ("elevation", "slope", "twi", "clay", "sand"):
        a = _anomaly(np.where(land, ps[k].astype(np.float64), np.nan), f).reshape(-1)[pix]
        cols += [a, a * coarse[idx]]
        dynamic += [False, False]
    for code in (F.LC_EVERGREEN_NEEDLELEAF, F.LC_DECIDUOUS_BROADLEAF, F.LC_MIXED_FOREST, F.LC_GRASSLAND,
                 F.LC_CROPLAND, F.LC_URBAN):
        cols.append(_anomaly(np.where(land, (ps["land_cover"] == code).astype(np.float64), np.nan), f).reshape(-1)[pix])
        dynamic.append(False)
    for arr in (world.lst_day_k, world.lst_night_k, world.ndvi):
        a = _anomaly(arr, f).reshape(-1)[idx].astype(np.float64)
        cols += [a, a * coarse[idx]]
        dynamic += [True, True]
    x = np.stack(cols, 1)
    good = np.isfinite(x).all(1)
    x_tr, y_tr = x[: tr.size][good[: tr.size]], y[tr][good[: tr.size]]
    x_te, y_te = x[tr.size:][good[tr.size:]], y[te][good[tr.size:]]

    def fit(sel):
        beta, *_ = np.linalg.lstsq(np.c_[np.ones(len(y_tr)), x_tr[:, sel]], y_tr, rcond=None)
        return np.c_[np.ones(len(y_te)), x_te[:, sel]] @ beta

    pred = fit(np.arange(x.shape[1]))
    pred_static = fit(np.nonzero(~np.array(dynamic))[0])
    var = float(np.var(y_te))
    return {
        "r2": 1.0 - float(np.mean((y_te - pred) ** 2)) / var,
        "r2_static": 1.0 - float(np.mean((y_te - pred_static) ** 2)) / var,
        "rmse_coarse": float(np.sqrt(np.mean(y_te**2))),
        "rmse_downscaled": float(np.sqrt(np.mean((y_te - pred) ** 2))),
        "n_test": int(len(y_te)),
    }


# ------------------------------------------------------------------------------- from the files
#: diagnostics JSON format (bump when a key changes meaning)
DIAGNOSTICS_VERSION = 1
MIN_DAYS = 10  # a station or cell needs this many paired days to get a score

#: literature values printed next to the world's own (see docs/synthetic-world.md for the sources)
LITERATURE = {
    "station_vs_pixel_r": "0.8–0.9",
    "station_vs_pixel_ubrmse": "0.02–0.04",
    "cci_vs_station_r": "0.5–0.7",
    "cci_vs_station_ubrmse": "0.04–0.06",
    "era5_vs_station_r": "0.5–0.7",
    "era5_vs_station_ubrmse": "0.04–0.06",
}


def _scores(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """(R, ubRMSE, bias) of x against y on their common finite values; None with < MIN_DAYS or no variance."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < MIN_DAYS:
        return None
    a, b = x[ok].astype(np.float64), y[ok].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    r = float(np.corrcoef(a, b)[0, 1])
    ub = float(np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2)))
    return r, ub, float(np.mean(a - b))


def _summary(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Per-series medians and pooled values of R/ubRMSE/bias over (estimate, reference) series."""
    per = [sc for sc in (_scores(x, y) for x, y in pairs) if sc is not None]
    out: dict = {"n": len(per)}
    if not per:
        return out
    arr = np.array(per)
    xs = np.concatenate([x for x, _ in pairs])
    ys = np.concatenate([y for _, y in pairs])
    pooled = _scores(xs, ys)
    out.update({"r_median": round(float(np.median(arr[:, 0])), 4), "ubrmse_median": round(float(np.median(arr[:, 1])), 4),
                "bias_median": round(float(np.median(arr[:, 2])), 4),
                "r_p10": round(float(np.percentile(arr[:, 0], 10)), 4), "r_p90": round(float(np.percentile(arr[:, 0], 90)), 4)})
    if pooled is not None:
        out.update({"r_pooled": round(pooled[0], 4), "ubrmse_pooled": round(pooled[1], 4)})
    return out


def _corr(sx: float, sy: float, sxx: float, syy: float, sxy: float, n: float) -> float | None:
    if n < 2:
        return None
    cov = sxy / n - (sx / n) * (sy / n)
    vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
    return round(float(cov / np.sqrt(vx * vy)), 4) if vx > 0 and vy > 0 else None


class _Corr:
    """Streaming Pearson correlation (sums in float64)."""

    def __init__(self):
        self.s = np.zeros(6)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = x.astype(np.float64), y.astype(np.float64)
        self.s += [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum(), x.size]

    def value(self) -> float | None:
        return _corr(*self.s)


def world_diagnostics(workdir, subgrid: bool = False) -> dict:
    """The world's diagnostics, computed from the files in ``workdir`` (see the module docstring).

    ``subgrid=True`` also re-simulates the world in memory (from ``world.json``'s parameters and
    seed) and adds :func:`subgrid_skill` under ``"subgrid"`` (small and demo worlds only: it holds
    the whole period in memory).
    """
    import datetime as dt

    import rasterio
    import xarray as xr

    from sm1km.config import RunConfig
    from sm1km.core.grid import FineGrid, coarse_col_of_lon, coarse_row_of_lat
    from sm1km.storage.readers import read_era5, read_ismn
    from sm1km.synth.generate import WorldPaths

    paths = WorldPaths(Path(workdir).resolve())
    world = json.loads(paths.world_json.read_text())
    cfg = RunConfig.from_yaml(paths.run_yaml)
    region, factor = cfg.coarse_region, cfg.grid.factor
    truth = xr.open_zarr(paths.truth)
    times = truth.time.values
    theta = truth.sm.values  # (time, y, x) float32
    land = truth.land.values.astype(bool)
    truth_c = xr.open_zarr(paths.truth_25km).sm.values
    nt = times.size
    t_index = {np.datetime64(t, "D"): k for k, t in enumerate(times.astype("datetime64[D]"))}

    # CCI on the cells (fill -> NaN), in the period's order
    import netCDF4

    cci = np.full(truth_c.shape, np.nan)
    for f in paths.cci_files():
        with netCDF4.Dataset(f) as nc:
            nc.set_auto_mask(False)
            day = np.datetime64(dt.date(1970, 1, 1) + dt.timedelta(days=int(nc["time"][0])), "D")
            if day in t_index:
                v = nc["sm"][0].astype(np.float64)
                cci[t_index[day]] = np.where(v == -9999.0, np.nan, v)
    era = read_era5(paths.era5_files(), region, paths.era5_lsm)
    era5 = era.swvl1.reindex(time=times).values.astype(np.float64)
    cell_land = np.isfinite(truth_c).any(axis=0)

    # stations: daily means of G values of the surface sensor vs the pixel truth and the cell's CCI/ERA5
    ds = read_ismn(paths.ismn_dir)
    ds = ds.isel(station=np.flatnonzero((ds.depth_to.values <= 0.05) & (ds.depth_from.values >= 0)))
    sm = ds.sm.reindex(time=times).values.astype(np.float64)
    g = FineGrid(factor)
    rows = g.row_of_lat(ds.lat.values) - region.row0 * factor
    cols = g.col_of_lon(ds.lon.values) - region.col0 * factor
    crow = coarse_row_of_lat(ds.lat.values) - region.row0
    ccol = coarse_col_of_lon(ds.lon.values) - region.col0
    st_px, st_cci, st_era = [], [], []
    for k in range(ds.sizes["station"]):
        obs = sm[k]
        st_px.append((obs, theta[:, rows[k], cols[k]].astype(np.float64)))
        st_cci.append((cci[:, crow[k], ccol[k]], obs))
        st_era.append((era5[:, crow[k], ccol[k]], obs))
    cells = [(r, c) for r in range(truth_c.shape[1]) for c in range(truth_c.shape[2]) if cell_land[r, c]]
    cci_truth = [(cci[:, r, c], truth_c[:, r, c].astype(np.float64)) for r, c in cells]
    era_truth = [(era5[:, r, c], truth_c[:, r, c].astype(np.float64)) for r, c in cells]

    # LST vs wetness and clouds vs wet days, streamed day by day over the land pixels
    def read_lst(kind, date):
        with rasterio.open(paths.predictors_dir / f"{kind}_{date:%Y%m%d}.tif") as r:
            a = r.read(1).astype(np.float64)
        return np.where(a == -9999.0, np.nan, a)

    def cell_anom(a):
        c = F.block_mean(a, factor)
        return a - np.repeat(np.repeat(c, factor, 0), factor, 1)

    dn_r, dn_anom_r, day_anom_r, cloud_wet, cloud_theta = _Corr(), _Corr(), _Corr(), _Corr(), _Corr()
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theta_mean = np.nanmean(theta, axis=0)
    cloud_on_wet, cloud_on_dry = [0.0, 0.0], [0.0, 0.0]
    dates = [dt.date.fromisoformat(str(t)[:10]) for t in times]
    for k, date in enumerate(dates):
        d, n = read_lst("lst_day", date), read_lst("lst_night", date)
        th = theta[k].astype(np.float64)
        dn = d - n
        ok = land & np.isfinite(dn) & np.isfinite(th)
        dn_r.add(dn[ok], th[ok])
        dna, tha, da = cell_anom(np.where(ok, dn, np.nan)), cell_anom(np.where(ok, th, np.nan)), cell_anom(np.where(ok, d, np.nan))
        ok2 = ok & np.isfinite(dna) & np.isfinite(tha)
        dn_anom_r.add(dna[ok2], tha[ok2])
        day_anom_r.add(da[ok2], tha[ok2])
        cloud = (~np.isfinite(d)).astype(np.float64)
        cloud_theta.add(cloud[land], (th - theta_mean)[land])
        if k > 0:
            wetting = ((th - theta[k - 1]) > 0.01).astype(np.float64)
            cloud_wet.add(cloud[land], wetting[land])
            w = wetting[land] > 0
            cloud_on_wet[0] += cloud[land][w].sum()
            cloud_on_wet[1] += w.sum()
            cloud_on_dry[0] += cloud[land][~w].sum()
            cloud_on_dry[1] += (~w).sum()

    st_pixel = _summary(st_px)
    params = world.get("params", {})
    out = {
        "version": DIAGNOSTICS_VERSION, "world_format": world.get("format"), "seed": world.get("seed"),
        "preset": params.get("name"), "n_days": nt, "years": sorted({d.year for d in dates}),
        "fine_shape": list(theta.shape[1:]), "n_stations": int(ds.sizes["station"]),
        "station_vs_pixel_truth": st_pixel,
        "cci_vs_truth_25km": _summary(cci_truth),
        "era5_vs_truth_25km": _summary(era_truth),
        "cci_vs_station": _summary(st_cci),
        "era5_vs_station": _summary(st_era),
        "lst": {"day_minus_night_vs_theta_r": dn_r.value(),
                "day_minus_night_vs_theta_r_within_cell": dn_anom_r.value(),
                "day_vs_theta_r_within_cell": day_anom_r.value()},
        "clouds": {"cloud_vs_wetting_day_r": cloud_wet.value(), "cloud_vs_theta_anomaly_r": cloud_theta.value(),
                   "cloud_fraction_wetting_days": round(cloud_on_wet[0] / max(cloud_on_wet[1], 1), 4),
                   "cloud_fraction_other_days": round(cloud_on_dry[0] / max(cloud_on_dry[1], 1), 4)},
        "stations_with_drift_or_break": sum(1 for s in world.get("stations", []) if s.get("drift") or s.get("break_day") is not None),
        "literature": LITERATURE,
    }
    if subgrid:
        from sm1km.synth.params import WorldParams
        from sm1km.synth.world import make_world

        sk = subgrid_skill(make_world(WorldParams.from_dict(params), int(world["seed"])))
        out["subgrid"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in sk.items()}
    return out


# --------------------------------------------------------------------------------- the doc table
DOC_BEGIN = "<!-- BEGIN world-diagnostics (generated by python -m sm1km.synth.diagnostics --doc; do not edit) -->"
DOC_END = "<!-- END world-diagnostics -->"


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def render_table(d: dict) -> str:
    """The markdown block (between the markers) for a diagnostics dict."""
    lit = d.get("literature", LITERATURE)
    sp, ct, et, cs, es = (d[k] for k in ("station_vs_pixel_truth", "cci_vs_truth_25km", "era5_vs_truth_25km",
                                         "cci_vs_station", "era5_vs_station"))
    rows = [
        ("station vs its own 1 km pixel's truth", sp, lit.get("station_vs_pixel_r"), lit.get("station_vs_pixel_ubrmse")),
        ("CCI COMBINED vs 25 km truth (per cell)", ct, None, None),
        ("ERA5 vs 25 km truth (per cell)", et, None, None),
        ("CCI COMBINED vs stations", cs, lit.get("cci_vs_station_r"), lit.get("cci_vs_station_ubrmse")),
        ("ERA5 vs stations", es, lit.get("era5_vs_station_r"), lit.get("era5_vs_station_ubrmse")),
    ]
    lines = [DOC_BEGIN,
             f"World `{d.get('preset')}`, seed {d.get('seed')}, {d.get('n_days')} days ({', '.join(map(str, d.get('years', [])))}), "
             f"{d.get('n_stations')} stations ({d.get('stations_with_drift_or_break')} with an unflagged drift or break); "
             f"diagnostics format {d.get('version')}, world format {d.get('world_format')}.",
             "",
             "| comparison | n | R median (p10–p90) | ubRMSE median | bias median | R pooled | literature R | literature ubRMSE |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s, lr, lu in rows:
        lines.append(f"| {name} | {s.get('n', 0)} | {_fmt(s.get('r_median'))} ({_fmt(s.get('r_p10'))}–{_fmt(s.get('r_p90'))}) | "
                     f"{_fmt(s.get('ubrmse_median'))} | {_fmt(s.get('bias_median'))} | {_fmt(s.get('r_pooled'))} | "
                     f"{lr or '–'} | {lu or '–'} |")
    lst, cl = d["lst"], d["clouds"]
    lines += ["",
              "| LST and clouds | value |", "|---|---|",
              f"| R(LST day − night, θ), pooled clear pixel-days | {_fmt(lst.get('day_minus_night_vs_theta_r'))} |",
              f"| R(LST day − night, θ), anomalies from the 0.25° cell mean | {_fmt(lst.get('day_minus_night_vs_theta_r_within_cell'))} |",
              f"| R(LST day, θ), anomalies from the 0.25° cell mean | {_fmt(lst.get('day_vs_theta_r_within_cell'))} |",
              f"| R(cloud gap, wetting day Δθ > 0.01) | {_fmt(cl.get('cloud_vs_wetting_day_r'))} |",
              f"| R(cloud gap, θ − pixel mean) | {_fmt(cl.get('cloud_vs_theta_anomaly_r'))} |",
              f"| cloud fraction on wetting / other pixel-days | {_fmt(cl.get('cloud_fraction_wetting_days'))} / "
              f"{_fmt(cl.get('cloud_fraction_other_days'))} |"]
    sg = d.get("subgrid")
    if sg:
        lines += [f"| sub-grid skill of a linear model on the predictors: R² (static only) | {_fmt(sg.get('r2'))} "
                  f"({_fmt(sg.get('r2_static'))}) |",
                  f"| RMSE of the within-cell anomaly: 25 km baseline → linear model | {_fmt(sg.get('rmse_coarse'))} → "
                  f"{_fmt(sg.get('rmse_downscaled'))} |"]
    lines.append(DOC_END)
    return "\n".join(lines)


def update_doc(doc: str | Path, d: dict) -> bool:
    """Rewrite the marked block of ``doc`` from ``d``; True when the file changed."""
    p = Path(doc)
    text = p.read_text(encoding="utf-8")
    i, j = text.find(DOC_BEGIN), text.find(DOC_END)
    if i < 0 or j < i:
        raise ValueError(f"{p} has no diagnostics block ({DOC_BEGIN!r} … {DOC_END!r})")
    new = text[:i] + render_table(d) + text[j + len(DOC_END):]
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


def doc_block(doc: str | Path) -> str:
    """The marked block of ``doc`` as it stands (for the test that the page matches the JSON)."""
    text = Path(doc).read_text(encoding="utf-8")
    i, j = text.find(DOC_BEGIN), text.find(DOC_END)
    return text[i:j + len(DOC_END)] if i >= 0 and j >= i else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sm1km.synth.diagnostics",
                                 description="Diagnostics of a written synthetic world (station vs pixel truth, CCI/ERA5 "
                                             "vs truth, LST and clouds vs wetness) as JSON.")
    ap.add_argument("workdir", nargs="?", help="the world's folder (as written by sm1km synth)")
    ap.add_argument("--json", metavar="OUT", help="write the JSON here (default: print it)")
    ap.add_argument("--subgrid", action="store_true", help="also re-simulate the world and add subgrid_skill")
    ap.add_argument("--doc", metavar="MD", help="rewrite the diagnostics block of this markdown page")
    ap.add_argument("--from", dest="src", metavar="JSON", help="with --doc: take the numbers from this JSON file")
    a = ap.parse_args(argv)
    if a.workdir:
        d = world_diagnostics(a.workdir, subgrid=a.subgrid)
    elif a.src:
        d = json.loads(Path(a.src).read_text())
    else:
        ap.error("give a world folder or --from JSON")
    text = json.dumps(d, indent=1, ensure_ascii=False) + "\n"
    if a.json:
        Path(a.json).write_text(text, encoding="utf-8")
    elif not a.doc:
        sys.stdout.write(text)
    if a.doc:
        changed = update_doc(a.doc, d)
        print(f"{a.doc}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
