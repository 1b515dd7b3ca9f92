"""``sm1km downscale --config run.yaml``: the 1 km master, shard by shard (resumable).

Calls :func:`sm1km.stages.downscale.downscale` (and, with ``--truth-metrics``,
:func:`sm1km.validation.truth.write_truth_metrics`) on one dask client under the store's run lock;
prints ``{name: url, "stats": ...}`` as JSON.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="tasks submitted at a time (default: 2 x cluster threads)")
    p.add_argument("--truth-metrics", action="store_true",
                   help="afterwards, score the master against the synthetic truth (metrics.json 'truth')")


@locked_cli("downscale")
def run(args) -> int:
    import json

    from sm1km.runtime.client import stage_client
    from sm1km.stages.downscale import downscale
    from sm1km.validation.truth import write_truth_metrics

    cfg = load_config(args)
    with stage_client(cfg) as client:
        out = downscale(cfg, client, max_in_flight=args.max_in_flight)
        result = {**out, "stats": out.stats}
        if args.truth_metrics:
            result["metrics"] = write_truth_metrics(cfg, client)
    print(json.dumps(result, indent=2))
    return 0
