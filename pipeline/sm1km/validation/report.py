"""The validation report a scientist can read: ``<root>/report/index.html`` + PNG figures, and the
headline numbers the CLI prints (from ``metrics.json``, which :mod:`sm1km.validation.validate`
writes first).
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from sm1km.config import RunConfig
from sm1km.redact import plain_label
from sm1km.storage import store

PUBLISHED = {
    "reference": "Zheng, Jia & Zhao (2023), Sci. Data 10:139, doi:10.1038/s41597-023-01991-w",
    "r": 0.89,
    "ubrmse": 0.045,
    "n_stations": 2346,
    "cv": "cross-validation, design not stated (usually random K-fold)",
}
CV_SCHEMES = ("random_kfold", "station_grouped", "network_out", "cell_grouped", "spatial_block", "year_out")


def write_report(cfg: RunConfig, so, metrics: dict, series, per_station, card) -> list[str]:
    """Draw the figures, render ``index.html`` and put both into ``<root>/report/``; returns the names."""
    report_url = cfg.store.url("report")
    with tempfile.TemporaryDirectory() as tmp:
        figures = _figures(cfg, so, metrics, series, per_station, card, tmp)
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
            f.write(render_html(cfg, metrics, figures))
        fs, path = store.filesystem(report_url, so)
        fs.makedirs(path, exist_ok=True)
        names = sorted(os.listdir(tmp))
        for name in names:
            fs.put_file(os.path.join(tmp, name), f"{path}/{name}")
    return names


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
            ax.set_ylabel("m³/m³")
            ax.set_title(plain_label(name), parse_math=False)  # a "$" in a station name is text
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
    nested = model.get("nested")
    if isinstance(nested, dict):
        rows.append(("1 km model, nested CV (outer folds: the honest score)", "station_grouped (nested)",
                     nested.get("n_stations"), f"{_fmt(nested.get('r_pooled'))} / {_fmt(nested.get('r_median'))}",
                     f"{_fmt(nested.get('ubrmse_pooled'))} / {_fmt(nested.get('ubrmse_median'))}"))
    for name, b in (model.get("baselines") or {}).items():
        if isinstance(b, dict) and name != "fused_25km":
            rows.append((f"raw {name} at the training station-days", "—", b.get("n_stations"),
                         f"{_fmt(b.get('r_pooled'))} / {_fmt(b.get('r_median'))}",
                         f"{_fmt(b.get('ubrmse_pooled'))} / {_fmt(b.get('ubrmse_median'))}"))
    for scheme in CV_SCHEMES:
        m = model.get(scheme)
        if isinstance(m, dict):
            rows.append(("1 km model, chosen candidate (CV, pooled / median)", scheme, m.get("n_stations"),
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
    parts.append("</table><p>The nested row is the honest number: the algorithm, target and uncertainty model "
                 "were chosen inside each outer fold without seeing it. The per-design rows score the candidate "
                 "chosen on all folds (slightly optimistic); leave-network-out and 25 km-cell-grouped CV keep "
                 "neighbouring stations off both sides of a fold; random K-fold over samples is what papers "
                 "usually print and is optimistic (Han et al. 2023).</p>")
    sel = (metrics.get("model") or {}).get("selection") or {}
    if sel.get("candidates"):
        parts.append("<h2>Model choice</h2><p>" + esc(str(sel.get("reason", ""))) + "</p><table><tr><th>candidate</th>"
                     "<th>ubRMSE pooled (station-grouped)</th><th>fold noise (se)</th>"
                     "<th>prediction cost (node visits/row)</th><th>relative cost</th></tr>")
        for name, c in sel["candidates"].items():
            mark = " (chosen)" if name == sel.get("chosen") else ""
            parts.append(f"<tr><td>{esc(name + mark)}</td><td>{_fmt(c.get('ubrmse_pooled'), 4)}</td>"
                         f"<td>{_fmt(c.get('noise_se'), 4)}</td><td>{_fmt(c.get('prediction_cost'), 0)}</td>"
                         f"<td>{_fmt(c.get('relative_prediction_cost'), 2)}</td></tr>")
        parts.append("</table><p>Rule: " + esc(str(sel.get("rule", ""))) + "</p>")
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


def headline(m: dict) -> str:
    """The numbers a person wants first, one per line."""
    lines = []
    model = m.get("model") or {}
    sg = model.get("station_grouped") or {}
    nested = model.get("nested") or {}
    if nested:
        lines.append(f"nested station-grouped CV (outer folds) at {nested.get('n_stations')} stations: "
                     f"R {_fmt(nested.get('r_pooled'))} pooled / {_fmt(nested.get('r_median'))} median, ubRMSE "
                     f"{_fmt(nested.get('ubrmse_pooled'))} pooled / {_fmt(nested.get('ubrmse_median'))} median m³/m³  "
                     f"[published: R {PUBLISHED['r']}, ubRMSE {PUBLISHED['ubrmse']}]")
        others = [(lab, model.get(key) or {}) for lab, key in (("leave-network-out", "network_out"),
                                                               ("25 km-cell-grouped", "cell_grouped"))]
        txt = "; ".join(f"{lab} R {_fmt(v.get('r_pooled'))}, ubRMSE {_fmt(v.get('ubrmse_pooled'))}"
                        for lab, v in others if v)
        if txt:
            lines.append(f"{txt} (pooled)")
    sel = model.get("selection") or {}
    if sel.get("chosen"):
        lines.append(f"model: {sel['chosen']} — {str(sel.get('reason', '')).split(' (station-grouped pooled')[0]}")
    if sg and not nested:
        lines.append(f"station-grouped CV at {sg.get('n_stations')} stations: R {_fmt(sg.get('r_pooled'))} pooled / "
                     f"{_fmt(sg.get('r_median'))} median, ubRMSE {_fmt(sg.get('ubrmse_pooled'))} pooled / "
                     f"{_fmt(sg.get('ubrmse_median'))} median m³/m³  "
                     f"[published: R {PUBLISHED['r']}, ubRMSE {PUBLISHED['ubrmse']}]")
    if sg:
        rk = model.get("random_kfold") or {}
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


__all__ = ["write_report", "render_html", "summary_rows", "headline", "PUBLISHED", "CV_SCHEMES"]
