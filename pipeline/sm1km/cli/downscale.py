"""``sm1km downscale``: the command line of :func:`sm1km.stages.downscale.downscale`.

Here and not in the stage module because ``--truth-metrics`` runs ``sm1km.validation.truth``,
a tier above the stages (text of ``add_arguments`` / ``run_cli`` unchanged from the stage module).
"""

from __future__ import annotations

from sm1km.runtime.client import add_config_argument, load_config, locked_cli, stage_client, with_lock_arguments
from sm1km.stages.downscale import downscale
from sm1km.validation.truth import write_truth_metrics


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="tasks submitted at a time (default: 2 x cluster threads)")
    p.add_argument("--truth-metrics", action="store_true",
                   help="afterwards, score the master against the synthetic truth (metrics.json 'truth')")


@locked_cli("downscale")
def run_cli(args) -> int:
    import json

    cfg = load_config(args)
    with stage_client(cfg) as client:
        out = downscale(cfg, client, max_in_flight=args.max_in_flight)
        result = {**out, "stats": out.stats}
        if args.truth_metrics:
            result["metrics"] = write_truth_metrics(cfg, client)
    print(json.dumps(result, indent=2))
    return 0
