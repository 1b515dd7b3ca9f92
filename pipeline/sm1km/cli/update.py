"""``sm1km update --config run.yaml [--until YYYY-MM-DD]``: bring every product up to date (daily job).

Calls :meth:`sm1km.pipeline.Pipeline.update` under the store's run lock: ingest -> fuse -> downscale
-> aggregate -> export -> catalog for the days not yet in the master (and whatever a revised input
made stale), with the stored model pinned (never retrained). A second update in a row is a no-op and
says so. Prints ``{stage: what it wrote, "stats": ...}`` as JSON. The chart's CronJob runs this verb.
``--dry-run``: the same plan without computing (``sm1km run --dry-run``).
"""

from __future__ import annotations

from sm1km.cli._common import add_config_argument, add_dry_run_arguments, load_config, locked_cli, with_lock_arguments


def _day(text: str):
    import argparse
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD day: {text!r}") from exc


@with_lock_arguments
def add_arguments(p) -> None:
    add_config_argument(p)
    p.add_argument("--until", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="last day to bring the products to (default: period.end of the config)")
    add_dry_run_arguments(p)


@locked_cli("update")
def run(args) -> int:
    import json

    from sm1km.pipeline import Pipeline

    cfg = load_config(args)
    out = Pipeline(cfg).update(until=args.until, dry_run=args.dry_run, dry_run_root=args.dry_run_root,
                               keep_templates=args.keep_templates)
    print(json.dumps({**out, "stats": out.stats}, indent=2, default=str))
    return 0
