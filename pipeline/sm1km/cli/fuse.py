"""``sm1km fuse --config run.yaml``: the gap-free 25 km cube, or the withheld-observation experiment.

Calls :func:`sm1km.stages.fuse.fuse` (prints ``{name: url}`` as JSON) or, with ``--withhold``,
:func:`sm1km.validation.withheld.withheld_experiment` (prints its table), under the store's run lock.
"""

from __future__ import annotations

import sys

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    from sm1km.core.fusion import METHODS

    add_config_argument(p)
    p.add_argument("--method", choices=METHODS, default=None,
                   help="matching method (default: fusion.method of the config)")
    p.add_argument("--withhold", type=float, default=None, metavar="FRACTION",
                   help="instead of writing fused.zarr, run the withheld-observation experiment hiding this "
                        "fraction of CCI observations (e.g. 0.2); results go to report/metrics.json")
    p.add_argument("--overwrite", action="store_true", help="discard an existing fused.zarr and its ledger")


@locked_cli("fuse")
def run(args) -> int:
    import json

    from sm1km.stages.fuse import fuse
    from sm1km.validation.withheld import withheld_experiment

    cfg = load_config(args)
    if args.withhold is not None:
        if args.method:
            cfg = cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update={"method": args.method})})
        res = withheld_experiment(cfg, fraction=args.withhold)
        rows = [f"{'estimate':<14} {'n':>9} {'r':>7} {'ubRMSE':>8} {'bias':>8} {'RMSE':>8}"]
        for k, v in res["withheld"].items():
            rows.append(f"{k:<14} {v['n']:>9d} {v['r']:>7.3f} {v['ubrmse']:>8.4f} {v['bias']:>8.4f} {v['rmse']:>8.4f}")
        sys.stdout.write("withheld CCI observations (reference = the hidden CCI values):\n" + "\n".join(rows) + "\n")
        sys.stdout.write(f"default method: {res['default_method']}; best by ubRMSE: {res['best_method']}; "
                         f"written to {res['metrics_json']}\n")
        return 0
    out = fuse(cfg, method=args.method, overwrite=args.overwrite)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0
