"""How many rounds does the uncertainty (quantile) model need? Station-grouped CV of the quantile
booster for a few (rounds, learning rate) settings: coverage of the 16–84 % interval on held-out
stations (target 0.68), pinball loss, and the prediction cost per row (the uncertainty model was
two thirds of a downscale task with its former fixed 200 rounds, docs/performance.md).
``sm1km train`` now picks the rounds the same way (``train.choose_uncertainty_rounds``); this
benchmark also varies the learning rate and measures the prediction rate.

The residuals are the honest ones ``train`` uses: station-grouped out-of-fold residuals of the GBT
model (residual target), on the collocated table of a run's stores.

    python benchmarks/uncertainty_rounds.py --config <run.yaml> --out benchmarks/results/uncertainty_rounds.json

``sm1km bench --workdir W`` leaves such a run (``W/runs/4x/run.yaml`` after a bench of the small preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def run(config: str, settings, k: int = 5, seed: int = 42) -> dict:
    import xgboost as xgb

    from sm1km.config import RunConfig
    from sm1km.core.cv import cross_validate, group_kfold
    from sm1km.core.features import FEATURE_NAMES
    from sm1km.stages import train
    from sm1km.stages.collocate import collocate_stores
    from sm1km.storage.model import QUANTILES

    cfg = RunConfig.from_yaml(config)
    table, _ = collocate_stores(cfg)
    X = train.feature_matrix(table)
    y = table["y"].to_numpy(np.float64)
    st = table["station"].to_numpy()
    tr = train.Trainer("gbt", seed, 1, target="residual")
    _, preds = cross_validate(table, X, tr.fit_predict, k=k, seed=seed, schemes=("station_grouped",))
    resid = y - preds["station_grouped"]
    ok = np.isfinite(resid)
    X, resid, st = X[ok], resid[ok], st[ok]
    folds = group_kfold(st, k, seed + 1)  # other folds than the residuals': a fresh station split
    alphas = np.array(QUANTILES)
    out = {"world": cfg.name, "period": [str(cfg.period.start), str(cfg.period.end)], "rows": int(len(resid)), "stations": int(len(np.unique(st))), "folds": k,
           "quantiles": list(QUANTILES), "settings": {}}
    for rounds, lr in settings:
        params = dict(train.UNCERTAINTY_PARAMS, learning_rate=lr, quantile_alpha=alphas, seed=seed, nthread=1)
        q = np.full((len(resid), len(alphas)), np.nan)
        for f in np.unique(folds):
            te = folds == f
            d = xgb.DMatrix(X[~te], label=resid[~te], feature_names=list(FEATURE_NAMES), nthread=1)
            b = xgb.train(params, d, num_boost_round=rounds)
            q[te] = b.inplace_predict(X[te]).reshape(int(te.sum()), -1)
        inside = (resid >= q[:, 0]) & (resid <= q[:, -1])  # as train.band_coverage, per row
        per_station = [float(np.mean(inside[st == s])) for s in np.unique(st)]
        # prediction cost of the final-size model on many rows (the downscale's hot path)
        d = xgb.DMatrix(X, label=resid, feature_names=list(FEATURE_NAMES), nthread=1)
        b = xgb.train(params, d, num_boost_round=rounds)
        big = np.repeat(X, max(1, 400_000 // len(X)), axis=0).astype(np.float32)
        b.set_param({"nthread": 1})
        b.inplace_predict(big[:1000])
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            b.inplace_predict(big)
            times.append(time.perf_counter() - t0)
        out["settings"][f"{rounds}x{lr}"] = {
            "rounds": rounds, "learning_rate": lr, "trees": rounds * len(alphas),
            "coverage_heldout": round(float(np.mean(inside)), 4),
            "coverage_per_station_median": round(float(np.median(per_station)), 4),
            "pinball_heldout": round(train.pinball_loss(resid, q), 6),
            "median_half_range": round(float(np.median((q[:, -1] - q[:, 0]) / 2)), 5),
            "predict_rows_per_s_1_thread": round(len(big) / float(np.median(times))),
        }
        print(f"{rounds} rounds lr {lr}: {out['settings'][f'{rounds}x{lr}']}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--out", default="uncertainty_rounds.json")
    p.add_argument("--settings", default="200x0.05,100x0.1,50x0.2,100x0.05",
                   help="rounds x learning rate, comma separated")
    args = p.parse_args(argv)
    settings = [(int(r), float(lr)) for r, lr in (s.split("x") for s in args.settings.split(","))]
    out = run(args.config, settings)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["settings"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
