"""The demo-world scores quoted in the docs, generated from a committed copy of the demo's metrics.json.

House rule: numbers in the docs come from generated results, never copied by hand. ``sm1km demo``
writes ``<workdir>/store/report/metrics.json``; :func:`capture` turns it into the committed
``docs/demo-metrics.json`` (machine-specific parts dropped: the ``outputs`` file list and every
absolute path; a ``source`` block names the world and code versions the numbers belong to), and
:func:`render_block` renders the marked blocks of ``docs/model.md`` and ``docs/validation.md``
from it. A block sits between ``<!-- BEGIN generated:NAME ... -->`` and ``<!-- END generated:NAME -->``;
:func:`update_docs` rewrites only those; ``tests/test_doc_numbers.py`` checks that the pages equal
the rendering of the committed JSON (fast, no demo run).

Regenerate after a change to the world, the model selection or the metrics::

    sm1km demo --workdir W
    python -m sm1km.validation.docnums --capture W/store/report/metrics.json --json docs/demo-metrics.json
    python -m sm1km.validation.docnums --json docs/demo-metrics.json --docs docs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sm1km.validation.report import headline

JSON_PATH = "docs/demo-metrics.json"
#: block name -> the page (relative to the repository root) that holds it
BLOCKS = {
    "demo-targets": "docs/model.md",
    "demo-selection": "docs/model.md",
    "demo-designs": "docs/model.md",
    "demo-headline": "docs/validation.md",
}


def _begin(name: str) -> str:
    return (f"<!-- BEGIN generated:{name} (python -m sm1km.validation.docnums from {JSON_PATH}; "
            "do not edit) -->")


def _end(name: str) -> str:
    return f"<!-- END generated:{name} -->"


def _f(v, nd: int = 3) -> str:
    if v is None:
        return "–"
    s = f"{v:.{nd}f}"
    if s.startswith("-") and float(s) == 0:  # no "−0.000"
        s = s[1:]
    return s.replace("-", "−") if s.startswith("-") else s


# ----------------------------------------------------------------------------------- capture
def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not (isinstance(v, str) and _is_path(v))}
    if isinstance(x, list):
        return [_strip(v) for v in x if not (isinstance(v, str) and _is_path(v))]
    return x


def _is_path(s: str) -> bool:
    return s.startswith("/") or "://" in s or (len(s) > 2 and s[1] == ":" and s[2] in "\\/")


def capture(metrics: dict) -> dict:
    """The committed copy of a demo's metrics.json: no file list, no absolute paths, plus ``source``."""
    from sm1km.config import SeedsConfig
    from sm1km.stages.train import TRAIN_VERSION
    from sm1km.synth import preset
    from sm1km.synth.generate import WORLD_FORMAT_VERSION

    out = _strip({k: v for k, v in metrics.items() if k != "outputs"})
    p = preset("demo")
    out["source"] = {"command": "sm1km demo", "preset": "demo", "synth_seed": SeedsConfig().synth,
                     "n_days": p.n_days, "world_format": WORLD_FORMAT_VERSION, "train_version": TRAIN_VERSION}
    return out


# ----------------------------------------------------------------------------------- blocks
def _targets(d: dict) -> list[str]:
    c = d["model"]["selection"]["candidates"]
    names = ["rf/sm", "rf/residual", "gbt/sm", "gbt/residual"]
    best = min((n for n in names if n in c), key=lambda n: c[n]["ubrmse_pooled"])
    cells = [(f"**{_f(c[n]['ubrmse_pooled'], 4)}**" if n == best else _f(c[n]["ubrmse_pooled"], 4))
             if n in c else "–" for n in names]
    st = d["model"].get("station_grouped") or {}
    return ["| world | rf / sm | rf / residual | gbt / sm | gbt / residual |",
            "|---|---|---|---|---|",
            f"| synthetic demo world ({st.get('n_stations')} stations, {d['source']['n_days']} days) | "
            + " | ".join(cells) + " |"]


def _selection(d: dict) -> list[str]:
    m = d["model"]
    sel = m["selection"]
    c = sel["candidates"]
    best, chosen = sel.get("best"), sel.get("chosen")
    cheapest = min(c, key=lambda n: c[n]["prediction_cost"])
    lines = ["| candidate | ubRMSE pooled | per-fold ubRMSE | margin to best | paired se | cost | relative cost |",
             "|---|---|---|---|---|---|---|"]
    for n in sorted(c, key=lambda n: c[n]["ubrmse_pooled"]):
        v = c[n]
        u = f"**{_f(v['ubrmse_pooled'], 4)}** (best)" if n == best else _f(v["ubrmse_pooled"], 4)
        folds = " ".join(_f(x, 3) for x in v.get("ubrmse_per_fold", []))
        if n == best:
            folds += f" (se {_f(v.get('noise_se'), 4)})"
        cost = f"{v['prediction_cost']:.0f}"
        cost = f"**{cost}**" if n == cheapest else cost
        name = f"**{n}** (chosen)" if n == chosen else n
        lines.append(f"| {name} | {u} | {folds} | {_f(v.get('margin_to_best'), 4)} | {_f(v.get('paired_se'), 4)} | "
                     f"{cost} | {v.get('relative_prediction_cost', 0):.1f} |")
    reason = str(sel.get("reason", "")).split(" (station-grouped pooled")[0]
    choices = ", ".join(str(x.get("choice")) for x in (m.get("nested") or {}).get("choices", []))
    lines += ["", f"`auto` chose **{chosen}**: \"{reason}\"."]
    if choices:
        lines.append(f"Inside the outer folds the rule chose {choices}.")
    return lines


_DESIGNS = [("nested", "**nested** (outer folds, station-grouped)"), ("random_kfold", "random_kfold"),
            ("station_grouped", "station_grouped"), ("network_out", "network_out ({n_groups} networks)"),
            ("cell_grouped", "cell_grouped ({n_groups} cells)"), ("spatial_block", "spatial_block ({block_deg:g}°)"),
            ("year_out", "year_out (held out: {held_out})")]


def _row(label: str, s: dict) -> str:
    return (f"| {label} | {_f(s.get('r_pooled'))} | {_f(s.get('r_median'))} | {_f(s.get('ubrmse_pooled'))} | "
            f"{_f(s.get('ubrmse_median'))} | {_f(s.get('bias_median'))} |")


def _designs(d: dict) -> list[str]:
    m = d["model"]
    lines = ["| design (chosen candidate) | R pooled | R median | ubRMSE pooled | ubRMSE median | bias median |",
             "|---|---|---|---|---|---|"]
    for key, label in _DESIGNS:
        s = m.get(key)
        if s:
            lines.append(_row(label.format_map({k: s.get(k) for k in ("n_groups", "block_deg", "held_out")}), s))
    b = m.get("baselines") or {}
    for key, label in (("fused_25km", "fused 25 km at the same station-days"),
                       ("era5", "raw ERA5 at the same station-days"),
                       ("cci", "raw CCI (its {n_samples:,} observed station-days)")):
        if b.get(key):
            lines.append(_row(label.format(n_samples=b[key].get("n_samples", 0)), b[key]))
    t = d.get("truth") or {}
    if t.get("downscaled"):
        lines += ["", "| against the 1 km truth (all land pixel-days) | R | ubRMSE | bias | spatial anomaly R |",
                  "|---|---|---|---|---|"]
        for key, label in (("downscaled", "downscaled 1 km"), ("baseline_25km", "25 km baseline")):
            s = t.get(key) or {}
            lines.append(f"| {label} | {_f(s.get('r'))} | {_f(s.get('ubrmse'))} | {_f(s.get('bias'))} | "
                         f"{_f(s.get('spatial_anomaly_r'))} |")
    unc = (m.get("nested") or {}).get("uncertainty") or {}
    if unc.get("coverage") is not None:
        lines += ["", f"Nested 16–84 % coverage of the uncertainty band at held-out stations: {_f(unc['coverage'])} "
                      "(nominal 0.68)."]
    return lines


def _headline(d: dict) -> list[str]:
    return ["```", headline(d), "```"]


_RENDER = {"demo-targets": _targets, "demo-selection": _selection, "demo-designs": _designs,
           "demo-headline": _headline}


def render_block(name: str, d: dict) -> str:
    """The marked block ``name`` (markers included) rendered from the committed demo JSON ``d``."""
    s = d["source"]
    caption = (f"*Generated from `{JSON_PATH}`: `{s['command']}`, preset `{s['preset']}`, seed {s['synth_seed']}, "
               f"world format {s['world_format']}, train version {s['train_version']}.*")
    return "\n".join([_begin(name), caption, "", *_RENDER[name](d), _end(name)])


def _span(text: str, name: str) -> tuple[int, int]:
    i = text.find(f"<!-- BEGIN generated:{name} ")
    j = text.find(_end(name), max(i, 0))
    return (i, j + len(_end(name))) if i >= 0 and j >= 0 else (-1, -1)


def doc_block(doc: str | Path, name: str) -> str:
    """The marked block ``name`` of ``doc`` as it stands ('' when absent)."""
    text = Path(doc).read_text(encoding="utf-8")
    i, j = _span(text, name)
    return text[i:j] if i >= 0 else ""


def update_doc(doc: str | Path, name: str, d: dict) -> bool:
    """Rewrite block ``name`` of ``doc`` from ``d``; True when the file changed."""
    p = Path(doc)
    text = p.read_text(encoding="utf-8")
    i, j = _span(text, name)
    if i < 0:
        raise ValueError(f"{p} has no block generated:{name}")
    new = text[:i] + render_block(name, d) + text[j:]
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


def update_docs(root: str | Path, d: dict) -> list[str]:
    """Rewrite every block of :data:`BLOCKS` under the repository ``root``; the names that changed."""
    return [n for n, page in BLOCKS.items() if update_doc(Path(root) / page, n, d)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sm1km.validation.docnums",
                                 description="Render the demo-score blocks of the docs from the committed demo JSON.")
    ap.add_argument("--capture", metavar="METRICS", help="a demo's store/report/metrics.json to copy into --json")
    ap.add_argument("--json", default=JSON_PATH, help=f"the committed demo JSON (default {JSON_PATH})")
    ap.add_argument("--docs", metavar="ROOT", help="rewrite the blocks of the pages under this repository root "
                                                   "(the folder holding docs/)")
    a = ap.parse_args(argv)
    if a.capture:
        d = capture(json.loads(Path(a.capture).read_text()))
        Path(a.json).write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")
    d = json.loads(Path(a.json).read_text())
    if a.docs:
        root = Path(a.docs)
        root = root.parent if root.name == "docs" else root
        changed = update_docs(root, d)
        print("rewritten: " + (", ".join(changed) or "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
