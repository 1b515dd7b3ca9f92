"""``sm1km run --config run.yaml [--stages a,b,...] [--dry-run]``: every stage of a config in order (resumable).

Calls :meth:`sm1km.pipeline.Pipeline.run` under the store's run lock; prints ``{stage: what it
wrote}`` as JSON. The Kubernetes DaskJob runner calls this verb with ``DASK_SCHEDULER_ADDRESS`` set.
``--dry-run`` computes nothing: templates at full size under a scratch root, every unit planned,
the ledgers scanned (:func:`sm1km.stages.dryrun.dry_run`); prints the plan and its ``stats``.
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, add_dry_run_arguments, load_config, locked_cli, with_lock_arguments


@with_lock_arguments
def add_arguments(p) -> None:
    from sm1km.pipeline import DEFAULT_STAGES, STAGES

    add_config_argument(p)
    p.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                   help=f"comma-separated stages to run, in order (default: {','.join(DEFAULT_STAGES)}; "
                        f"available: {','.join(STAGES)})")
    add_dry_run_arguments(p)


@locked_cli("run")
def run(args) -> int:
    import json

    from sm1km.errors import ConfigError
    from sm1km.pipeline import STAGES, Pipeline

    cfg = load_config(args)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError("--stages", f"unknown stage(s) {unknown}.", f"choose from {', '.join(STAGES)}.")
    outputs = Pipeline(cfg).run(stages=stages, dry_run=args.dry_run, dry_run_root=args.dry_run_root,
                                keep_templates=args.keep_templates)
    if args.dry_run:
        print(json.dumps({**outputs, "stats": outputs.stats}, indent=2, default=str))
        return 0
    print(json.dumps(outputs, indent=2, default=str))
    return 0
