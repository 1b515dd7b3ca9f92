"""``sm1km train --config run.yaml``: the downscaling model, cross-validated, with its card.

Calls :func:`sm1km.stages.train.train` under the store's run lock; prints ``{name: url}`` as JSON. A model
up to date with its inputs is kept (nothing written); ``--overwrite`` retrains it.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    from sm1km.stages.train import DEFAULT_THREADS, GBT_MAX_ROUNDS, RF_PARAMS, TARGET_KINDS

    add_config_argument(p)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"XGBoost training threads (default {DEFAULT_THREADS}; fixed for reproducible files)")
    p.add_argument("--rf-trees", type=int, default=RF_PARAMS["num_parallel_tree"], help="trees of the random forest")
    p.add_argument("--gbt-max-rounds", type=int, default=GBT_MAX_ROUNDS, help="upper bound of boosting rounds")
    p.add_argument("--target", choices=("auto", *TARGET_KINDS), default="auto",
                   help="sm: learn the station value (as published); residual: learn station minus fused 25 km; "
                        "auto (default): the better under station-grouped CV")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain even when the stored model is up to date with its inputs (by default a model "
                        "trained from the same data, settings and code is kept and nothing is written)")


@locked_cli("train")
def run(args) -> int:
    import json

    from sm1km.stages.train import train

    cfg = load_config(args)
    urls = train(cfg, n_threads=args.threads, rf_trees=args.rf_trees, gbt_max_rounds=args.gbt_max_rounds,
                 target=args.target, overwrite=args.overwrite)
    print(json.dumps(urls, indent=2))
    return 0
