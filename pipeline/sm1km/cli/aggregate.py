"""``sm1km aggregate --config run.yaml``: monthly means of the 1 km master (resumable).

Calls :func:`sm1km.stages.aggregate.aggregate` under the store's run lock; prints
``{name: url, "stats": ...}`` as JSON.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    from sm1km.stages.aggregate import MIN_VALID_FRACTION

    add_config_argument(p)
    p.add_argument("--min-valid-fraction", type=float, default=MIN_VALID_FRACTION,
                   help="least fraction of a month's calendar days with valid values for a monthly mean "
                        f"(default {MIN_VALID_FRACTION})")
    p.add_argument("--max-in-flight", type=int, default=None, help="tasks submitted at a time")


@locked_cli("aggregate")
def run(args) -> int:
    import json

    from sm1km.stages.aggregate import aggregate

    cfg = load_config(args)
    out = aggregate(cfg, min_valid_fraction=args.min_valid_fraction, max_in_flight=args.max_in_flight)
    print(json.dumps({**out, "stats": out.stats}, indent=2))
    return 0
