"""``sm1km validate``: metrics of every product against stations (and the synthetic truth), and a
report a scientist can read: ``<root>/report/metrics.json`` + ``index.html`` + PNG figures.

metrics.json contract (other tools read it; extend, don't rename): ``fusion``, ``model``,
``stations``, ``truth`` (synthetic only), ``published``, ``outputs``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sm1km.storage import store
from sm1km.config import RunConfig
from sm1km.core.grid import FineGrid, coarse_col_of_lon, coarse_row_of_lat
from sm1km.runtime.client import add_config_argument, load_config

log = logging.getLogger(__name__)

PUBLISHED = {
    "reference": "Zheng, Jia & Zhao (2023), Sci. Data 10:139, doi:10.1038/s41597-023-01991-w",
    "r": 0.89,
    "ubrmse": 0.045,
    "n_stations": 2346,
    "cv": "cross-validation, design not stated (usually random K-fold)",
}
CV_SCHEMES = ("random_kfold", "station_grouped", "spatial_block", "year_out")


# ------------------------------------------------------------------------------------- pure core
def station_metrics(obs: np.ndarray, est: np.ndarray, min_n: int = 5) -> dict[str, float]:
    """Per-station metrics (columns = stations) → median over stations + pooled, pytesmo definitions."""
    from sm1km.core.metrics import metric_dict

    per = [metric_dict(est[:, k], obs[:, k]) for k in range(obs.shape[1])]
    ok = [m for m in per if m["n"] >= min_n and np.isfinite(m["r"])]
    pooled = metric_dict(est.ravel(), obs.ravel())
    return {
        "n_stations": len(ok),
        "n_samples": int(pooled["n"]),
        "r_median": float(np.median([m["r"] for m in ok])) if ok else float("nan"),
        "ubrmse_median": float(np.median([m["ubrmse"] for m in ok])) if ok else float("nan"),
        "bias_median": float(np.median([m["bias"] for m in ok])) if ok else float("nan"),
        "rmse_median": float(np.median([m["rmse"] for m in ok])) if ok else float("nan"),
        "r_pooled": pooled["r"],
        "ubrmse_pooled": pooled["ubrmse"],
        "bias_pooled": pooled["bias"],
        "rmse_pooled": pooled["rmse"],
    }, per


# ------------------------------------------------------------------------------------- extraction
def _station_table(cfg: RunConfig, so) -> xr.Dataset | None:
    url = cfg.store.url("inputs", "stations.zarr")
    if not store.exists(url, so):
        log.warning("no station table at %s: station validation skipped", url)
        return None
    ds = store.open_dataset(url, so).load()
    t0, t1 = pd.Timestamp(cfg.period.start), pd.Timestamp(cfg.period.end)
    return ds.sel(time=slice(t0, t1))


def _in_region(cfg: RunConfig, lat, lon) -> np.ndarray:
    b = cfg.coarse_region.bbox
    return (lat > b.south) & (lat < b.north) & (lon > b.west) & (lon < b.east)


def products_at_stations(cfg: RunConfig, stations: xr.Dataset, so) -> dict[str, np.ndarray]:
    """(time, station) arrays of station obs, the 1 km master, the fused 25 km cube, raw ERA5 and CCI."""
    reg, g = cfg.coarse_region, FineGrid(cfg.grid.factor)
    lat, lon = stations["lat"].values, stations["lon"].values
    frow = g.row_of_lat(lat) - reg.row0 * g.factor
    fcol = g.col_of_lon(lon) - reg.col0 * g.factor
    crow = coarse_row_of_lat(lat) - reg.row0
    ccol = coarse_col_of_lon(lon) - reg.col0
    times = stations.time.values
    out = {"obs": stations["sm"].transpose("time", "station").values.astype("float64")}

    def pick(url, var, rows, cols):
        if not store.exists(url, so):
            return None
        ds = store.open_dataset(url, so)
        if var not in ds:
            return None
        da = ds[var].isel(lat=xr.DataArray(rows, dims="station"), lon=xr.DataArray(cols, dims="station"))
        da = da.reindex(time=times)
        return da.transpose("time", "station").values.astype("float64")

    out["master_1km"] = pick(cfg.store.url("master.zarr"), "sm", frow, fcol)
    out["fused_25km"] = pick(cfg.store.url("fused.zarr"), "sm", crow, ccol)
    out["source_flag"] = pick(cfg.store.url("fused.zarr"), "source_flag", crow, ccol)
    out["era5"] = pick(cfg.store.url("inputs", "era5.zarr"), "swvl1", crow, ccol)
    out["cci"] = pick(cfg.store.url("inputs", "cci.zarr"), "sm", crow, ccol)
    return out


# ------------------------------------------------------------------------------------- stage
def validate(cfg: RunConfig, client=None, run_withheld: bool = True) -> dict[str, Any]:
    """Compute all metrics sections, draw the figures, write the report; returns report URLs."""
    from sm1km.storage.metrics_json import read_metrics_json, update_metrics_json

    so = cfg.store.storage_options()
    metrics = read_metrics_json(cfg)

    # fusion: the withheld-observation experiment (run once; fuse --withhold may have done it)
    if run_withheld and "withheld" not in metrics.get("fusion", {}):
        try:
            from sm1km.stages.fuse import withheld_experiment

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
    stations = _station_table(cfg, so)
    per_station = None
    series = None
    if stations is not None and stations.sizes.get("station", 0):
        inreg = _in_region(cfg, stations["lat"].values, stations["lon"].values)
        if not inreg.all():
            log.warning("%d station(s) outside the region are not validated: %s", int((~inreg).sum()),
                        ", ".join(map(str, stations.station.values[~inreg][:10])))
        stations = stations.isel(station=np.flatnonzero(inreg))
        series = products_at_stations(cfg, stations, so)
        section: dict[str, Any] = {}
        if series["master_1km"] is not None:
            summary, per = station_metrics(series["obs"], series["master_1km"])
            section.update(summary)
            per_station = pd.DataFrame(per, index=stations.station.values)
            per_station["network"] = stations["network"].values
            per_station["lat"], per_station["lon"] = stations["lat"].values, stations["lon"].values
            section["networks"] = {}
            for net, idx in per_station.groupby("network").indices.items():
                s, _ = station_metrics(series["obs"][:, idx], series["master_1km"][:, idx])
                section["networks"][str(net)] = s
        section["baselines"] = {}
        for name in ("fused_25km", "era5", "cci"):
            if series[name] is not None:
                section["baselines"][name], _ = station_metrics(series["obs"], series[name])
        update_metrics_json(cfg, "stations", section)

    # truth (synthetic world only)
    if cfg.inputs.truth:
        try:
            from sm1km.stages.downscale import truth_metrics

            update_metrics_json(cfg, "truth", truth_metrics(cfg, client=client))
        except Exception as exc:
            log.warning("truth metrics failed: %s", exc)

    update_metrics_json(cfg, "published", PUBLISHED)
    update_metrics_json(cfg, "outputs", _outputs(cfg, so))
    metrics = read_metrics_json(cfg)

    report_url = cfg.store.url("report")
    with tempfile.TemporaryDirectory() as tmp:
        figures = _figures(cfg, so, metrics, series, per_station, card, tmp)
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
            f.write(render_html(cfg, metrics, figures))
        fs, path = store.filesystem(report_url, so)
        for name in sorted(os.listdir(tmp)):
            fs.put_file(os.path.join(tmp, name), f"{path}/{name}")
    log.info("report written to %s/index.html", report_url)
    return {"metrics": store.join(report_url, "metrics.json"), "report": store.join(report_url, "index.html")}


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
    for fmt, pattern in (("geotiff", "**/*.tif"), ("hdf5", "**/*.h5")):
        fs, path = store.filesystem(cfg.store.url("exports"), so)
        found = sorted(fs.glob(f"{path}/{pattern}")) if fs.exists(path) else []
        prefix = cfg.store.url("exports")
        out[fmt] = [prefix + p[len(path):] for p in found]
    out["model"] = cfg.model_path
    out["model_card"] = cfg.model_path.rsplit(".", 1)[0] + ".json"
    return out


# ------------------------------------------------------------------------------------- figures
def _figures(cfg, so, metrics, series, per_station, card, outdir) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: list[tuple[str, str]] = []

    def save(fig, name, caption):
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        fig.savefig(os.path.join(outdir, name), dpi=90)
        plt.close(fig)
        figs.append((name, caption))

    if series is not None and series.get("master_1km") is not None:
        panels = [(k, lbl) for k, lbl in (("master_1km", "1 km product"), ("fused_25km", "fused 25 km"),
                                           ("era5", "ERA5 (regridded)"), ("cci", "CCI (observed days)"))
                  if series.get(k) is not None]
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        for ax, (k, lbl) in zip(axes[0], panels):
            ok = np.isfinite(series["obs"]) & np.isfinite(series[k])
            ax.scatter(series["obs"][ok], series[k][ok], s=3, alpha=0.3)
            lim = [0, max(0.5, np.nanmax(series["obs"]) * 1.05 if ok.any() else 0.5)]
            ax.plot(lim, lim, "k--", lw=0.8)
            ax.set(xlim=lim, ylim=lim, xlabel="station (m³/m³)", ylabel=f"{lbl} (m³/m³)", title=lbl)
        save(fig, "scatter.png", "Station daily means against each product at the same stations and days.")

        obs = series["obs"]
        order = np.argsort(-np.isfinite(obs).sum(axis=0))[:3]
        times = pd.DatetimeIndex(_station_times(cfg, so))
        fig, axes = plt.subplots(len(order), 1, figsize=(10, 2.6 * len(order)), squeeze=False)
        for ax, k in zip(axes[:, 0], order):
            if series.get("source_flag") is not None:
                flag = series["source_flag"][:, k]
                for t, fl in zip(times, flag):
                    if fl in (2, 3):
                        ax.axvspan(t - pd.Timedelta("12h"), t + pd.Timedelta("12h"),
                                   color="orange" if fl == 2 else "red", alpha=0.12, lw=0)
            ax.plot(times, obs[:, k], "k.", ms=3, label="station")
            ax.plot(times, series["master_1km"][:, k], "-", lw=1.2, label="1 km")
            if series.get("fused_25km") is not None:
                ax.plot(times, series["fused_25km"][:, k], "-", lw=1, alpha=0.8, label="fused 25 km")
            name = per_station.index[k] if per_station is not None else str(k)
            ax.set(ylabel="m³/m³", title=str(name))
            ax.legend(loc="upper right", fontsize=7, ncol=3)
        save(fig, "timeseries.png", "Time series at three stations; shading = 25 km value filled from ERA5 "
             "(orange: own-pixel rescaling, red: fallback).")

    if per_station is not None and len(per_station):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        axes[0].hist(per_station["r"].dropna(), bins=20)
        axes[0].axvline(PUBLISHED["r"], color="r", ls="--", label="published R")
        axes[0].set(xlabel="per-station R", ylabel="stations")
        axes[0].legend()
        axes[1].hist(per_station["ubrmse"].dropna(), bins=20)
        axes[1].axvline(PUBLISHED["ubrmse"], color="r", ls="--", label="published ubRMSE")
        axes[1].set(xlabel="per-station ubRMSE (m³/m³)")
        axes[1].legend()
        save(fig, "station_hist.png", "Distribution of per-station R and ubRMSE of the 1 km product.")

        fig, ax = plt.subplots(figsize=(5.5, 5))
        sc = ax.scatter(per_station["lon"], per_station["lat"], c=per_station["r"], cmap="viridis",
                        vmin=0, vmax=1, s=40, edgecolor="k")
        b = cfg.coarse_region.bbox
        ax.set(xlim=(b.west, b.east), ylim=(b.south, b.north), xlabel="lon", ylabel="lat", title="per-station R")
        fig.colorbar(sc, ax=ax, label="R")
        save(fig, "station_map.png", "Per-station R of the 1 km product.")

    day_fig = _day_map(cfg, so, plt)
    if day_fig is not None:
        save(day_fig, "day_map.png", "One day at 25 km (fused) and at 1 km (downscaled) side by side"
             " (and the synthetic truth where available).")

    card = card or {}
    imp = card.get("feature_importance_gain") or card.get("feature_importance") or card.get("feature_importances")
    if imp:
        items = sorted(imp.items(), key=lambda kv: kv[1])
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set(xlabel="importance (gain)", title="feature importance")
        save(fig, "importance.png", "Feature importance of the downscaling model.")
    return figs


def _station_times(cfg, so):
    ds = store.open_dataset(cfg.store.url("inputs", "stations.zarr"), so)
    return ds.sel(time=slice(pd.Timestamp(cfg.period.start), pd.Timestamp(cfg.period.end))).time.values


def _day_map(cfg, so, plt, max_px: int = 800):
    murl, furl = cfg.store.url("master.zarr"), cfg.store.url("fused.zarr")
    if not (store.exists(murl, so) and store.exists(furl, so)):
        return None
    master, fused = store.open_dataset(murl, so), store.open_dataset(furl, so)
    day = master.time.values[len(master.time) // 2]
    step = max(1, int(np.ceil(max(master.sizes["lat"], master.sizes["lon"]) / max_px)))
    fine = master.sm.sel(time=day).isel(lat=slice(None, None, step), lon=slice(None, None, step)).load()
    coarse = fused.sm.sel(time=day).load()
    panels = [("fused 25 km", coarse), ("downscaled 1 km", fine)]
    if cfg.inputs.truth and store.exists(cfg.inputs.truth, so):
        truth = store.open_dataset(cfg.inputs.truth, so)
        if day in truth.time.values:
            panels.append(("truth 1 km", truth.sm.sel(time=day).isel(lat=slice(None, None, step),
                                                                    lon=slice(None, None, step)).load()))
    vmin = float(np.nanpercentile(fine, 2)) if np.isfinite(fine).any() else 0
    vmax = float(np.nanpercentile(fine, 98)) if np.isfinite(fine).any() else 0.5
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4.6), squeeze=False,
                             layout="constrained")
    for ax, (title, da) in zip(axes[0], panels):
        im = ax.pcolormesh(da.lon, da.lat, da.values, vmin=vmin, vmax=vmax, cmap="YlGnBu", shading="auto")
        ax.set(title=f"{title} — {pd.Timestamp(day):%Y-%m-%d}", xlabel="lon", ylabel="lat", aspect="equal")
    fig.colorbar(im, ax=axes[0].tolist(), label="m³/m³", shrink=0.8)
    return fig


# ------------------------------------------------------------------------------------- HTML
def _fmt(v, nd=3):
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def summary_rows(metrics: dict) -> list[tuple[str, str, Any, Any, Any]]:
    """(what, scheme, n_stations, R, ubRMSE) rows: ours vs baselines vs the published numbers."""
    rows = []
    model = metrics.get("model", {})
    for scheme in CV_SCHEMES:
        m = model.get(scheme)
        if isinstance(m, dict):
            rows.append(("1 km model (CV, pooled / median)", scheme, m.get("n_stations"),
                         f"{_fmt(m.get('r_pooled'))} / {_fmt(m.get('r_median'))}",
                         f"{_fmt(m.get('ubrmse_pooled'))} / {_fmt(m.get('ubrmse_median'))}"))
            b = m.get("baseline_25km") or (model.get("baseline_25km") or {}).get(scheme)
            if isinstance(b, dict):
                rows.append(("fused 25 km at the same stations", scheme, b.get("n_stations"),
                             f"{_fmt(b.get('r_pooled'))} / {_fmt(b.get('r_median'))}",
                             f"{_fmt(b.get('ubrmse_pooled'))} / {_fmt(b.get('ubrmse_median'))}"))
    st = metrics.get("stations", {})
    if st.get("n_stations"):
        rows.append(("1 km product vs all stations (in-sample)", "—", st.get("n_stations"),
                     f"{_fmt(st.get('r_pooled'))} / {_fmt(st.get('r_median'))}",
                     f"{_fmt(st.get('ubrmse_pooled'))} / {_fmt(st.get('ubrmse_median'))}"))
    for name, b in (st.get("baselines") or {}).items():
        rows.append((f"{name} vs the same stations", "—", b.get("n_stations"),
                     f"{_fmt(b.get('r_pooled'))} / {_fmt(b.get('r_median'))}",
                     f"{_fmt(b.get('ubrmse_pooled'))} / {_fmt(b.get('ubrmse_median'))}"))
    pub = metrics.get("published", PUBLISHED)
    rows.append(("published product (Zheng et al. 2023)", pub.get("cv", "CV"), pub.get("n_stations"),
                 _fmt(pub.get("r")), _fmt(pub.get("ubrmse"))))
    return rows


def render_html(cfg: RunConfig, metrics: dict, figures: list[tuple[str, str]]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sm1km validation — {esc(cfg.name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;font-size:14px}"
             "th{background:#eee}figure{margin:1.5em 0}img{max-width:100%}code{background:#f4f4f4}</style></head><body>",
             f"<h1>sm1km validation report — {esc(cfg.name)}</h1>",
             f"<p>Region {esc(str(cfg.coarse_region.bbox.as_tuple()))}, period {cfg.period.start} – {cfg.period.end}, "
             f"grid factor {cfg.grid.factor} (1/{4 * cfg.grid.factor}°).</p>",
             "<h2>Summary</h2><table><tr><th>what</th><th>scheme</th><th>stations</th><th>R</th>"
             "<th>ubRMSE (m³/m³)</th></tr>"]
    for what, scheme, n, r, u in summary_rows(metrics):
        parts.append(f"<tr><td>{esc(str(what))}</td><td>{esc(str(scheme))}</td><td>{esc(_fmt(n))}</td>"
                     f"<td>{esc(str(r))}</td><td>{esc(str(u))}</td></tr>")
    parts.append("</table><p>Station-grouped CV is the honest number; random K-fold over samples is what papers "
                 "usually print and is optimistic (Han et al. 2023).</p>")
    fusion = metrics.get("fusion", {})
    if fusion.get("withheld"):
        parts.append("<h2>Fusion: withheld CCI observations</h2><table><tr><th>estimate</th><th>n</th><th>R</th>"
                     "<th>ubRMSE</th><th>bias</th><th>RMSE</th><th>vs truth: ubRMSE</th></tr>")
        for name, m in fusion["withheld"].items():
            if not isinstance(m, dict):
                continue
            vt = (fusion.get("vs_truth") or {}).get(name) or {}
            parts.append(f"<tr><td>{esc(name)}</td><td>{_fmt(m.get('n'))}</td><td>{_fmt(m.get('r'))}</td>"
                         f"<td>{_fmt(m.get('ubrmse'))}</td><td>{_fmt(m.get('bias'))}</td><td>{_fmt(m.get('rmse'))}</td>"
                         f"<td>{_fmt(vt.get('ubrmse'))}</td></tr>")
        parts.append("</table>")
    truth = metrics.get("truth", {})
    if truth:
        parts.append("<h2>Against the synthetic 1 km truth</h2><table><tr><th>product</th><th>R</th><th>ubRMSE</th>"
                     "<th>bias</th><th>spatial anomaly R</th></tr>")
        for name in ("downscaled", "baseline_25km"):
            m = truth.get(name) or {}
            parts.append(f"<tr><td>{esc(name)}</td><td>{_fmt(m.get('r'))}</td><td>{_fmt(m.get('ubrmse'))}</td>"
                         f"<td>{_fmt(m.get('bias'))}</td><td>{_fmt(m.get('spatial_anomaly_r'))}</td></tr>")
        parts.append("</table>")
    for name, caption in figures:
        parts.append(f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("<h2>Files</h2><pre>" + esc(json.dumps(metrics.get("outputs", {}), indent=1)) + "</pre>")
    parts.append("<p>All numbers: <a href='metrics.json'>metrics.json</a>.</p></body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--no-withheld", action="store_true", help="skip the withheld-observation fusion experiment")


def run_cli(args) -> int:
    cfg = load_config(args)
    out = validate(cfg, run_withheld=not args.no_withheld)
    from sm1km.storage.metrics_json import read_metrics_json

    m = read_metrics_json(cfg)
    print(f"report: {out['report']}")
    print(headline(m))
    return 0


def headline(m: dict) -> str:
    """The numbers a person wants first, one per line."""
    lines = []
    sg = (m.get("model") or {}).get("station_grouped") or {}
    if sg:
        lines.append(f"station-grouped CV at {sg.get('n_stations')} stations: R {_fmt(sg.get('r_pooled'))} pooled / "
                     f"{_fmt(sg.get('r_median'))} median, ubRMSE {_fmt(sg.get('ubrmse_pooled'))} pooled / "
                     f"{_fmt(sg.get('ubrmse_median'))} median m³/m³  "
                     f"[published: R {PUBLISHED['r']}, ubRMSE {PUBLISHED['ubrmse']}]")
        rk = (m.get("model") or {}).get("random_kfold") or {}
        if rk:
            lines.append(f"random K-fold (optimistic, as papers print): R {_fmt(rk.get('r_pooled'))}, "
                         f"ubRMSE {_fmt(rk.get('ubrmse_pooled'))} pooled")
    t = m.get("truth") or {}
    if t.get("downscaled"):
        lines.append(f"vs 1 km truth: ubRMSE {_fmt(t['downscaled'].get('ubrmse'))} (1 km) vs "
                     f"{_fmt((t.get('baseline_25km') or {}).get('ubrmse'))} (25 km baseline); spatial anomaly R "
                     f"{_fmt(t['downscaled'].get('spatial_anomaly_r'))}")
    f = (m.get("fusion") or {}).get("withheld") or {}
    if f.get("fused"):
        lines.append(f"fusion at withheld CCI obs: ubRMSE {_fmt(f['fused'].get('ubrmse'))} (fused) vs "
                     f"{_fmt((f.get('era5') or {}).get('ubrmse'))} (ERA5), "
                     f"{_fmt((f.get('climatology') or {}).get('ubrmse'))} (climatology)")
    return "\n".join(lines)
